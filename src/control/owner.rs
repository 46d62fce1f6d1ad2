//! Which engine owns a block, whether it is alive, and its heartbeat.

use std::fs;
use std::sync::atomic::Ordering;

use super::{ControlBlock, ControlError, OwnerInfo, Result};
use crate::clock::mono_ns;

impl ControlBlock {
    /// Marks the calling process as the engine that owns this block. Fails
    /// while another live process owns it; takes over from a dead owner.
    pub(crate) fn attach_owner(&self) -> Result<()> {
        self.attach_owner_replacing(0)
    }

    /// [`ControlBlock::attach_owner`], also replacing a live owner whose
    /// pid is `fenced` (0: none).
    pub(crate) fn attach_owner_replacing(&self, fenced: u32) -> Result<()> {
        let h = &self.layout().header;
        let me = std::process::id() as u64;
        let my_ticks = proc_start_ticks(me as u32).unwrap_or(0);
        let _lock = self.lock()?;
        let owner = self.owner();
        if owner.alive && owner.pid as u64 != me && (fenced == 0 || owner.pid != fenced) {
            return Err(ControlError::OwnedByLiveProcess {
                path: self.path.clone(),
                pid: owner.pid,
            });
        }
        h.owner_start_ticks.store(my_ticks, Ordering::Relaxed);
        h.owner_pid.store(me, Ordering::Release);
        self.heartbeat();
        Ok(())
    }

    /// Clears the owner if it is the calling process.
    pub(crate) fn detach_owner(&self) {
        let me = std::process::id() as u64;
        let _ = self.layout().header.owner_pid.compare_exchange(
            me,
            0,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }

    /// The owning engine's pid as recorded (0: none), without looking at
    /// `/proc`: cheap enough for a poll loop; [`ControlBlock::owner`] says
    /// whether it lives.
    pub fn owner_pid(&self) -> u32 {
        self.layout().header.owner_pid.load(Ordering::Acquire) as u32
    }

    /// The owning engine and whether it is alive.
    pub fn owner(&self) -> OwnerInfo {
        let h = &self.layout().header;
        let pid = h.owner_pid.load(Ordering::Acquire) as u32;
        if pid == 0 {
            return OwnerInfo {
                pid,
                alive: false,
                start_ticks: 0,
            };
        }
        let want = h.owner_start_ticks.load(Ordering::Relaxed);
        let alive = match proc_start_ticks(pid) {
            Some(t) => want == 0 || t == want,
            None => false,
        };
        OwnerInfo {
            pid,
            alive,
            start_ticks: want,
        }
    }

    /// Writes the engine's heartbeat (`CLOCK_MONOTONIC` now).
    #[inline]
    pub(crate) fn heartbeat(&self) {
        let h = &self.layout().header;
        h.heartbeat_mono_ns.store(mono_ns(), Ordering::Release);
        h.heartbeat_count.fetch_add(1, Ordering::Relaxed);
    }

    /// Nanoseconds since the last heartbeat, `None` if there never was one.
    pub fn heartbeat_age_ns(&self) -> Option<u64> {
        let t = self
            .layout()
            .header
            .heartbeat_mono_ns
            .load(Ordering::Acquire);
        (t != 0).then(|| mono_ns().saturating_sub(t))
    }
}

/// Fields 3 onwards of `/proc/<pid>/stat` (state, ppid, …). The command
/// name (field 2) may contain spaces and parentheses: the rest follows the
/// last ')'.
fn proc_stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Scheduler state of a process (`R`, `S`, `D`, `T` stopped, `Z` zombie…),
/// `None` if it does not exist.
pub fn proc_state(pid: u32) -> Option<char> {
    proc_stat_fields(pid)?.first()?.chars().next()
}

/// Start time of a process in clock ticks since boot (`/proc/<pid>/stat`
/// field 22), `None` if it does not exist or is a zombie.
pub fn proc_start_ticks(pid: u32) -> Option<u64> {
    let fields = proc_stat_fields(pid)?;
    if matches!(fields.first().map(String::as_str), Some("Z" | "X")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}
