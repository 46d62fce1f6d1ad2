//! The lease on a real control block: acquire (waiting for a lapse, then
//! for the predecessor's last turn), renew from the gateway's loop,
//! release on drop, and what `current()` shows.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    enter_sends, epoch_of, exit_sends, marker_pid, pid_of, predecessor_busy, predecessor_done,
    release, renew, still_held, try_acquire, Acquired, Claimant, LeaseWords, Refused,
};
use crate::backoff::{Backoff, BackoffConfig};
use crate::clock::mono_ns;
use crate::control::{proc_start_ticks, proc_state, ControlBlock};

/// How an engine holds the active role ([`crate::runtime::RuntimeBuilder::lease`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// How long the lease lasts without a renewal. The gateway renews it
    /// every quarter of this from its loop, so a gateway stalled (stopped,
    /// stuck in a venue call) for longer loses it to a waiting taker.
    pub ttl: Duration,
    /// How long `acquire` waits for a live holder's lease to lapse before
    /// it refuses.
    pub acquire_wait: Duration,
    /// How long `acquire`, having raised the epoch, waits for the
    /// predecessor's turn in progress (it may be writing to a venue) to
    /// end, or for the predecessor to die, before it refuses to start.
    pub fence_wait: Duration,
}

impl Default for LeaseConfig {
    /// A 1 s lease; wait 5 s for it, 10 s for the predecessor's last turn.
    fn default() -> Self {
        LeaseConfig {
            ttl: Duration::from_secs(1),
            acquire_wait: Duration::from_secs(5),
            fence_wait: Duration::from_secs(10),
        }
    }
}

/// Why the lease was not acquired. Nothing was sent; the message says what
/// to do.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// A live holder kept renewing it for the whole wait.
    #[error("{path}: the active-role lease is held by live pid {pid} (epoch {epoch}), which kept renewing it for {waited:?}: stop that engine first (or wait for its lease to lapse: raise LeaseConfig::acquire_wait)")]
    Held {
        /// The control file.
        path: PathBuf,
        /// The holder.
        pid: u32,
        /// Its epoch.
        epoch: u64,
        /// How long we waited.
        waited: Duration,
    },
    /// The epoch counter is used up.
    #[error("{path}: the lease epoch reached its limit (2^32 - 1 acquisitions): stop every engine on this block and recreate the control file (killswitch remove)")]
    EpochExhausted {
        /// The control file.
        path: PathBuf,
    },
    /// We hold the new epoch, but the predecessor is still inside a turn
    /// that may write to a venue (it is stopped, or stuck in a write).
    #[error("{path}: took the lease (epoch {epoch}) from pid {pid}, but pid {pid} is still inside a turn that may write to a venue after {waited:?} (process state {state}): not sending beside it. Continue it (SIGCONT) or kill it (SIGKILL), then start again; the lease has been given back")]
    PredecessorInSend {
        /// The control file.
        path: PathBuf,
        /// The epoch we took (and gave back).
        epoch: u64,
        /// The predecessor.
        pid: u32,
        /// Its scheduler state (`T` = stopped).
        state: char,
        /// How long we waited.
        waited: Duration,
    },
}

/// The lease as its holder's threads share it: the epoch held, and whether
/// the gateway has seen a newer one. `Send + Sync`.
#[derive(Debug)]
pub struct LeaseState {
    word: u64,
    /// The newer `lease_holder` word the gateway saw, 0 while not fenced.
    fenced_by: AtomicU64,
}

impl LeaseState {
    /// The epoch this process holds (or held, when fenced).
    pub fn epoch(&self) -> u64 {
        epoch_of(self.word)
    }

    /// `Some(newer epoch)` once this process's gateway has seen a newer
    /// epoch and stopped writing to venues for good.
    pub fn fenced_by(&self) -> Option<u64> {
        match self.fenced_by.load(Ordering::Acquire) {
            0 => None,
            w => Some(epoch_of(w)),
        }
    }

    /// True once this holder gave the lease back while holding it (the
    /// failover's hand-over): its fence is its own epoch with pid 0, a
    /// word only its own release writes (a taker always raises the epoch,
    /// and each epoch has one holder). A holder fenced by a taker says
    /// false.
    pub fn handed_back(&self) -> bool {
        self.fenced_by.load(Ordering::Acquire) == epoch_of(self.word) << 32
    }

    fn fence(&self, seen: u64) {
        // A released word (our own epoch, pid 0) still means "not ours".
        let _ =
            self.fenced_by
                .compare_exchange(0, seen.max(1), Ordering::AcqRel, Ordering::Relaxed);
    }
}

/// The active-role lease, held. The gateway owns it (renews it from its
/// loop, brackets its writing turns with it); dropping it gives the lease
/// back if it is still ours.
#[must_use = "dropping the lease gives it back at once"]
#[derive(Debug)]
pub struct Lease {
    block: Arc<ControlBlock>,
    acquired: Acquired,
    ttl_ns: u64,
    renew_at_ns: u64,
    turns: u32,
    state: Arc<LeaseState>,
}

fn words(block: &ControlBlock) -> LeaseWords<'_, AtomicU64> {
    let gs = block.gateway_status();
    LeaseWords {
        holder: &gs.lease_holder,
        holder_start: &gs.lease_holder_start,
        expiry: &gs.lease_expiry_mono_ns,
        in_send: &gs.lease_in_send,
    }
}

/// True when `pid` lives and, if `ticks` is known, started at that time.
fn holder_alive(pid: u32, ticks: Option<u32>) -> bool {
    match (proc_start_ticks(pid), ticks) {
        (None, _) => false,
        (Some(t), Some(want)) => t as u32 == want,
        (Some(_), None) => true,
    }
}

impl Lease {
    /// Acquires the active-role lease of `block` for this process: waits up
    /// to `cfg.acquire_wait` for a live holder's lease to lapse, raises the
    /// epoch, then waits up to `cfg.fence_wait` for the predecessor's turn
    /// in progress to end (see the module docs). Only then may this
    /// process write to a venue.
    pub fn acquire(block: Arc<ControlBlock>, cfg: LeaseConfig) -> Result<Lease, LeaseError> {
        let pid = std::process::id();
        let me = Claimant {
            pid,
            start_ticks: proc_start_ticks(pid).unwrap_or(0),
        };
        let ttl_ns = (cfg.ttl.as_nanos() as u64).max(1_000_000);
        let started = Instant::now();
        let mut wait = Backoff::new(BackoffConfig {
            max_sleep: Duration::from_millis(5),
            ..BackoffConfig::default()
        });
        let acquired = loop {
            match try_acquire(&words(&block), me, mono_ns(), ttl_ns, holder_alive) {
                Ok(a) => break a,
                Err(Refused::EpochExhausted) => {
                    return Err(LeaseError::EpochExhausted {
                        path: block.path().to_path_buf(),
                    })
                }
                Err(Refused::Held { pid, epoch, .. }) => {
                    if started.elapsed() >= cfg.acquire_wait {
                        return Err(LeaseError::Held {
                            path: block.path().to_path_buf(),
                            pid,
                            epoch,
                            waited: started.elapsed(),
                        });
                    }
                    wait.snooze();
                }
            }
        };
        let lease = Lease {
            block,
            acquired,
            ttl_ns,
            renew_at_ns: mono_ns() + ttl_ns / 4,
            turns: 0,
            state: Arc::new(LeaseState {
                word: acquired.word,
                fenced_by: AtomicU64::new(0),
            }),
        };
        lease.await_predecessor(cfg.fence_wait)?;
        Ok(lease)
    }

    /// `T2`: waits until the predecessor's turn in progress (if any) has
    /// ended, or the predecessor is dead.
    fn await_predecessor(&self, fence_wait: Duration) -> Result<(), LeaseError> {
        let w = words(&self.block);
        let Some(seen) = predecessor_busy(&w, self.acquired.word) else {
            return Ok(());
        };
        // Whose turn it is (the marker says; not necessarily the holder
        // we took the lease from, if a taker gave up in between).
        let pred = marker_pid(seen);
        let started = Instant::now();
        let mut wait = Backoff::new(BackoffConfig {
            max_sleep: Duration::from_millis(2),
            ..BackoffConfig::default()
        });
        loop {
            if predecessor_done(&w, seen) {
                return Ok(());
            }
            // A process that is gone writes nothing more. A zombie has
            // finished every system call; proc_start_ticks says None then.
            if pred == 0 || proc_start_ticks(pred).is_none() {
                return Ok(());
            }
            if started.elapsed() >= fence_wait {
                // Give the epoch back (pid 0) so an operator's next try
                // does not wait for our lease to lapse.
                release(&w, self.acquired.word);
                return Err(LeaseError::PredecessorInSend {
                    path: self.block.path().to_path_buf(),
                    epoch: self.acquired.epoch,
                    pid: pred,
                    state: proc_state(pred).unwrap_or('?'),
                    waited: started.elapsed(),
                });
            }
            wait.snooze();
        }
    }

    /// The epoch held.
    pub fn epoch(&self) -> u64 {
        self.acquired.epoch
    }

    /// The pid the lease was taken from (0: it was free).
    pub fn predecessor(&self) -> u32 {
        self.acquired.predecessor
    }

    /// The state shared with the runtime (epoch, fenced).
    pub fn state(&self) -> Arc<LeaseState> {
        self.state.clone()
    }

    /// Pushes the expiry one `ttl` ahead. `Err(newer epoch)` when the
    /// lease is no longer ours (fenced: write nothing more).
    pub fn renew(&mut self) -> Result<(), u64> {
        let now = mono_ns();
        match renew(&words(&self.block), self.acquired.word, now, self.ttl_ns) {
            Ok(()) => {
                self.renew_at_ns = now + self.ttl_ns / 4;
                Ok(())
            }
            Err(seen) => {
                self.state.fence(seen);
                Err(epoch_of(seen))
            }
        }
    }

    /// Gives the lease back now (pid 0, epoch kept), if it is still ours.
    pub fn release(self) {
        drop(self);
    }

    /// Gives the lease back (pid 0, epoch kept) and fences this holder for
    /// good: the gateway that owns it writes nothing more. The failover's
    /// hand-over, from inside a gateway turn.
    pub(crate) fn release_fenced(&mut self) {
        release(&words(&self.block), self.acquired.word);
        // Our epoch with pid 0: "not ours" (never 0: the epoch is >= 1).
        self.state.fence(self.acquired.epoch << 32);
    }

    /// The gateway, at the top of each turn: renews when due (a clock
    /// read every 16 turns), then marks the turn busy and checks the epoch
    /// (`G1`, `G2`). False: fenced, write nothing (now and ever).
    #[inline]
    pub(crate) fn enter_turn(&mut self) -> bool {
        if self.state.fenced_by.load(Ordering::Relaxed) != 0 {
            return false;
        }
        self.turns = self.turns.wrapping_add(1);
        if self.turns % 16 == 0 && mono_ns() >= self.renew_at_ns && self.renew().is_err() {
            return false;
        }
        if enter_sends(&words(&self.block), self.acquired.word) {
            return true;
        }
        let seen = self
            .block
            .gateway_status()
            .lease_holder
            .load(Ordering::SeqCst);
        // The word may still be ours if only a newer epoch's in-send mark
        // stopped us; fence with an epoch above ours either way.
        self.state.fence(if seen == self.acquired.word {
            (self.acquired.epoch + 1) << 32
        } else {
            seen
        });
        false
    }

    /// The gateway, at the end of a turn entered with
    /// [`Lease::enter_turn`] (`G5`).
    #[inline]
    pub(crate) fn exit_turn(&self) {
        exit_sends(&words(&self.block), self.acquired.word);
    }

    /// `G3` without the admit step (before a cancel): the epoch is still
    /// ours. False fences.
    #[inline]
    pub(crate) fn still_ours(&self) -> bool {
        let holder = &self.block.gateway_status().lease_holder;
        if still_held(holder, self.acquired.word) {
            return true;
        }
        self.state.fence(holder.load(Ordering::SeqCst));
        false
    }

    /// The `lease_holder` word and our value of it, for the admit step.
    #[inline]
    pub(crate) fn fence_words(&self) -> (&AtomicU64, u64) {
        (
            &self.block.gateway_status().lease_holder,
            self.acquired.word,
        )
    }

    /// Records that the admit step saw a newer epoch.
    pub(crate) fn fenced(&self) {
        self.state.fence(
            self.block
                .gateway_status()
                .lease_holder
                .load(Ordering::SeqCst),
        );
    }

    /// True once fenced.
    pub(crate) fn is_fenced(&self) -> bool {
        self.state.fenced_by().is_some()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let w = words(&self.block);
        exit_sends(&w, self.acquired.word);
        release(&w, self.acquired.word);
    }
}

/// The lease as the block shows it ([`ControlBlock::lease`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct LeaseInfo {
    /// Current epoch (0: never acquired).
    pub epoch: u64,
    /// Holder pid, 0 when released or never held.
    pub holder: u32,
    /// True when the holder lives (and, when known, started at the
    /// recorded time).
    pub holder_alive: bool,
    /// Nanoseconds until it lapses; 0 when it has.
    pub lapses_in_ns: u64,
    /// The holder's gateway is inside a turn that may write to venues.
    pub in_send: bool,
}

impl ControlBlock {
    /// The active-role lease as it is now (`current()`).
    pub fn lease(&self) -> LeaseInfo {
        let w = words(self);
        let word = w.holder.load(Ordering::SeqCst);
        let start = w.holder_start.load(Ordering::Acquire);
        let expiry = w.expiry.load(Ordering::Acquire);
        let in_send = w.in_send.load(Ordering::Acquire);
        let (epoch, pid) = (epoch_of(word), pid_of(word));
        let ticks = (start as u32 as u64 == epoch & 0xffff_ffff).then_some((start >> 32) as u32);
        LeaseInfo {
            epoch,
            holder: pid,
            holder_alive: pid != 0 && holder_alive(pid, ticks),
            lapses_in_ns: expiry.saturating_sub(mono_ns()),
            in_send: in_send & 1 == 1 && epoch_of(in_send) == epoch,
        }
    }
}

#[cfg(test)]
mod tests;
