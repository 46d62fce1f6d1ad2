//! The planned shutdown's words in the control block (layout 2.1): the
//! deployment/configuration lock and the unacknowledged reconciliation
//! mismatch (the header's `change_flags`), the request `killswitch
//! shutdown` writes and the engine's progress (the engine telemetry
//! record's spare words), and the reduced position limit the gate reads.
//!
//! # Invariants
//! * The lock and the mismatch flag are set and cleared with atomic
//!   read-modify-writes of one word; a reader sees either the old or the
//!   new flags, never a torn value.
//! * A request is taken with a compare-and-swap from the value the asker
//!   read: two commands cannot both think they started a shutdown; a new
//!   request is refused while the engine's progress shows one running.
//! * The position limit is stored before the state word's `LIMITED` bit is
//!   set (and the bit cleared before the limit is zeroed), so a gate that
//!   sees the bit reads the limit it was set with.

use std::sync::atomic::Ordering;

use crate::clock::wall_ns;
use crate::control::state::limit_word;
use crate::control::ControlBlock;
use crate::order::Qty;

/// `change_flags` bit: deployments and configuration changes are locked
/// (a new engine start and a configuration reload are refused).
pub const CHANGE_LOCKED: u64 = 1;
/// `change_flags` bit: the last reconciliation found a mismatch nobody has
/// acknowledged yet (`killswitch reconcile --ack`); reset is refused.
pub const RECONCILE_MISMATCH: u64 = 1 << 1;

/// The deployment/configuration lock as read from the block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChangeFlags {
    /// Deployments and configuration changes are locked.
    pub locked: bool,
    /// A reconciliation mismatch waits for acknowledgement.
    pub reconcile_mismatch: bool,
    /// Pid of the process that set the lock (0 when unknown).
    pub locked_by_pid: u32,
}

/// Reads the header's `change_flags`.
pub fn change_flags(block: &ControlBlock) -> ChangeFlags {
    let v = block.layout().header.change_flags.load(Ordering::Acquire);
    ChangeFlags {
        locked: v & CHANGE_LOCKED != 0,
        reconcile_mismatch: v & RECONCILE_MISMATCH != 0,
        locked_by_pid: (v >> 32) as u32,
    }
}

/// Locks (or unlocks) deployments and configuration changes, recording this
/// process as the locker. Returns the flags as they were.
pub fn set_change_lock(block: &ControlBlock, locked: bool) -> ChangeFlags {
    let word = &block.layout().header.change_flags;
    let pid = u64::from(std::process::id()) << 32;
    let before = word
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
            Some(if locked {
                (v & 0xffff_ffff) | CHANGE_LOCKED | pid
            } else {
                v & 0xffff_ffff & !CHANGE_LOCKED
            })
        })
        .unwrap_or_else(|v| v);
    ChangeFlags {
        locked: before & CHANGE_LOCKED != 0,
        reconcile_mismatch: before & RECONCILE_MISMATCH != 0,
        locked_by_pid: (before >> 32) as u32,
    }
}

/// Records that a reconciliation found a mismatch (`true`) or acknowledges
/// it (`false`, what `killswitch reconcile --ack` does). Returns whether a
/// mismatch was recorded before.
pub fn set_reconcile_mismatch(block: &ControlBlock, mismatch: bool) -> bool {
    let word = &block.layout().header.change_flags;
    let before = if mismatch {
        word.fetch_or(RECONCILE_MISMATCH, Ordering::AcqRel)
    } else {
        word.fetch_and(!RECONCILE_MISMATCH, Ordering::AcqRel)
    };
    before & RECONCILE_MISMATCH != 0
}

/// Puts a reduced position limit in force (`Some`) or lifts it (`None`):
/// the limit word first, then the state word's `LIMITED` bit (a generation
/// change the gateway acknowledges like any other).
pub fn set_position_limit(block: &ControlBlock, limit: Option<Qty>) {
    let word = &block.layout().telemetry.engine.position_limit;
    match limit {
        Some(q) => {
            word.store(q.0.max(0) as u64, Ordering::Release);
            limit_word(block.state_atomic(), true);
        }
        None => {
            limit_word(block.state_atomic(), false);
            word.store(0, Ordering::Release);
        }
    }
}

/// The reduced position limit in force, if any.
pub fn position_limit(block: &ControlBlock) -> Option<Qty> {
    block.state().limited().then(|| {
        Qty(block
            .layout()
            .telemetry
            .engine
            .position_limit
            .load(Ordering::Acquire) as i64)
    })
}

/// How positions are flattened (the runbook's "POSITION FLATTENING
/// STRATEGY").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum FlattenMode {
    /// Keep positions (runbook option B: maintenance off-hours).
    #[default]
    None,
    /// Limit at mid for the conservative wait, then market for the rest.
    Conservative,
    /// Market orders at once.
    Aggressive,
}

impl FlattenMode {
    /// Name used by the CLI and the report.
    pub fn as_str(self) -> &'static str {
        match self {
            FlattenMode::None => "none",
            FlattenMode::Conservative => "conservative",
            FlattenMode::Aggressive => "aggressive",
        }
    }

    /// Parses the CLI spelling.
    pub fn parse(s: &str) -> Option<FlattenMode> {
        match s {
            "none" => Some(FlattenMode::None),
            "conservative" => Some(FlattenMode::Conservative),
            "aggressive" => Some(FlattenMode::Aggressive),
            _ => None,
        }
    }

    fn code(self) -> u64 {
        match self {
            FlattenMode::None => 0,
            FlattenMode::Conservative => 1,
            FlattenMode::Aggressive => 2,
        }
    }

    fn from_code(v: u64) -> FlattenMode {
        match v {
            1 => FlattenMode::Conservative,
            2 => FlattenMode::Aggressive,
            _ => FlattenMode::None,
        }
    }
}

/// A planned shutdown asked of the engine through the block (what
/// `killswitch shutdown` writes; the reason travels beside the block, see
/// the CLI).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShutdownRequest {
    /// Non-zero id of the request; the engine's progress carries it back.
    pub nonce: u16,
    /// Flattening.
    pub flatten: FlattenMode,
    /// Keep passive orders (cancel only aggressive ones).
    pub keep_passive: bool,
    /// Reduce position limits by this percentage (0 = do not).
    pub reduce_limits_pct: u8,
    /// Pid of the asker.
    pub pid: u32,
    /// When the shutdown starts, Unix ns (0 = now).
    pub at_wall_ns: u64,
}

impl ShutdownRequest {
    fn encode(&self) -> u64 {
        u64::from(self.nonce)
            | self.flatten.code() << 16
            | u64::from(self.keep_passive) << 18
            | u64::from(self.reduce_limits_pct) << 24
            | u64::from(self.pid) << 32
    }

    fn decode(v: u64, at_wall_ns: u64) -> Option<ShutdownRequest> {
        let nonce = v as u16;
        (nonce != 0).then_some(ShutdownRequest {
            nonce,
            flatten: FlattenMode::from_code((v >> 16) & 3),
            keep_passive: (v >> 18) & 1 == 1,
            reduce_limits_pct: ((v >> 24) as u8).min(100),
            pid: (v >> 32) as u32,
            at_wall_ns,
        })
    }
}

/// Why a request was not written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestRefused {
    /// The engine is running a planned shutdown already (its nonce).
    InProgress(u16),
    /// Another command wrote a request between our read and our write.
    Raced,
}

impl std::fmt::Display for RequestRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestRefused::InProgress(n) => write!(
                f,
                "a planned shutdown (request {n}) is already running: follow it with `killswitch status`"
            ),
            RequestRefused::Raced => f.write_str(
                "another shutdown request was written at the same moment: check `killswitch status` and retry",
            ),
        }
    }
}

/// Writes a shutdown request (the nonce is chosen here and returned in the
/// request). Refused while one runs.
pub fn request_shutdown(
    block: &ControlBlock,
    mut req: ShutdownRequest,
) -> Result<ShutdownRequest, RequestRefused> {
    let e = &block.layout().telemetry.engine;
    let progress = progress(block);
    if let Some(p) = progress {
        if p.state == PhaseState::Running {
            return Err(RequestRefused::InProgress(p.nonce));
        }
    }
    let cur = e.shutdown_request.load(Ordering::Acquire);
    let mut nonce = (cur as u16).wrapping_add(1);
    if nonce == 0 {
        nonce = 1;
    }
    req.nonce = nonce;
    req.pid = std::process::id();
    // The start time first: the engine reads it after seeing the request.
    e.shutdown_request_at_wall_ns
        .store(req.at_wall_ns, Ordering::Release);
    e.shutdown_request
        .compare_exchange(cur, req.encode(), Ordering::AcqRel, Ordering::Acquire)
        .map(|_| req)
        .map_err(|_| RequestRefused::Raced)
}

/// The request in the block, if any (the engine compares its nonce with the
/// last it handled).
pub fn read_request(block: &ControlBlock) -> Option<ShutdownRequest> {
    let e = &block.layout().telemetry.engine;
    let v = e.shutdown_request.load(Ordering::Acquire);
    ShutdownRequest::decode(v, e.shutdown_request_at_wall_ns.load(Ordering::Acquire))
}

/// Where a phase is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum PhaseState {
    /// The phase is running.
    Running,
    /// The whole shutdown finished (the phase is the last one run).
    Finished,
}

/// The engine's progress as published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The request being served (the engine's own id for a signal).
    pub nonce: u16,
    /// Phase number, 1..=13 (see [`super::Phase`]).
    pub phase: u8,
    /// Running or finished.
    pub state: PhaseState,
    /// When the phase started, Unix ns.
    pub phase_since_wall_ns: u64,
    /// The outcome bits (`OUTCOME_*`), once finished.
    pub outcome: u64,
}

/// Outcome bit: every step completed with nothing left over.
pub const OUTCOME_CLEAN: u64 = 1;
/// Outcome bit: orders were still open at the end of the wait (stragglers).
pub const OUTCOME_STRAGGLERS: u64 = 1 << 1;
/// Outcome bit: positions remained after flattening.
pub const OUTCOME_NOT_FLAT: u64 = 1 << 2;
/// Outcome bit: reconciliation found a mismatch.
pub const OUTCOME_RECONCILE_MISMATCH: u64 = 1 << 3;
/// Outcome bit: a component had to be forced.
pub const OUTCOME_FORCED: u64 = 1 << 4;
/// Outcome bit: the checkpoint failed, or went to the alternate path.
pub const OUTCOME_CHECKPOINT_PROBLEM: u64 = 1 << 5;
/// Outcome bit: the shutdown was abandoned for an emergency (second signal).
pub const OUTCOME_ESCALATED: u64 = 1 << 6;

/// Publishes the engine's progress (the engine only).
pub fn publish_progress(block: &ControlBlock, nonce: u16, phase: u8, state: PhaseState) {
    let e = &block.layout().telemetry.engine;
    if state == PhaseState::Running {
        e.shutdown_outcome.store(0, Ordering::Release);
        e.shutdown_phase_since_wall_ns
            .store(wall_ns(), Ordering::Release);
    }
    let s = match state {
        PhaseState::Running => 1u64,
        PhaseState::Finished => 2,
    };
    e.shutdown_progress.store(
        u64::from(nonce) | u64::from(phase) << 16 | s << 24,
        Ordering::Release,
    );
}

/// Publishes the finished shutdown's outcome bits, then the finished state.
pub fn publish_finished(block: &ControlBlock, nonce: u16, phase: u8, outcome: u64) {
    let e = &block.layout().telemetry.engine;
    e.shutdown_outcome.store(outcome, Ordering::Release);
    publish_progress(block, nonce, phase, PhaseState::Finished);
}

/// The engine's progress, if a planned shutdown ever ran on this block.
pub fn progress(block: &ControlBlock) -> Option<Progress> {
    let e = &block.layout().telemetry.engine;
    let v = e.shutdown_progress.load(Ordering::Acquire);
    let state = match (v >> 24) & 0xff {
        1 => PhaseState::Running,
        2 => PhaseState::Finished,
        _ => return None,
    };
    Some(Progress {
        nonce: v as u16,
        phase: (v >> 16) as u8,
        state,
        phase_since_wall_ns: e.shutdown_phase_since_wall_ns.load(Ordering::Acquire),
        outcome: e.shutdown_outcome.load(Ordering::Acquire),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_and_is_refused_while_running() {
        let dir = tempfile::tempdir().unwrap();
        let b = ControlBlock::create(dir.path(), "words").unwrap();
        assert_eq!(read_request(&b), None);
        let asked = ShutdownRequest {
            nonce: 0,
            flatten: FlattenMode::Conservative,
            keep_passive: true,
            reduce_limits_pct: 50,
            pid: 0,
            at_wall_ns: 42,
        };
        let r = request_shutdown(&b, asked).unwrap();
        assert_eq!(r.nonce, 1);
        assert_eq!(read_request(&b), Some(r));
        publish_progress(&b, r.nonce, 3, PhaseState::Running);
        assert_eq!(
            request_shutdown(&b, asked),
            Err(RequestRefused::InProgress(1))
        );
        publish_finished(&b, r.nonce, 13, OUTCOME_CLEAN);
        let p = progress(&b).unwrap();
        assert_eq!(
            (p.phase, p.state, p.outcome),
            (13, PhaseState::Finished, OUTCOME_CLEAN)
        );
        assert_eq!(request_shutdown(&b, asked).unwrap().nonce, 2);
    }

    #[test]
    fn lock_and_mismatch_flags_are_independent() {
        let dir = tempfile::tempdir().unwrap();
        let b = ControlBlock::create(dir.path(), "flags").unwrap();
        assert!(!change_flags(&b).locked);
        set_change_lock(&b, true);
        assert!(!set_reconcile_mismatch(&b, true));
        let f = change_flags(&b);
        assert!(f.locked && f.reconcile_mismatch);
        assert_eq!(f.locked_by_pid, std::process::id());
        set_change_lock(&b, false);
        let f = change_flags(&b);
        assert!(!f.locked && f.reconcile_mismatch);
        assert!(set_reconcile_mismatch(&b, false));
        assert!(!change_flags(&b).reconcile_mismatch);
    }
}
