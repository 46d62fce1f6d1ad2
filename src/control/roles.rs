//! The handles of a control block, one per role. The block's atomics are a
//! contract between processes, not an API: each user gets the handle for
//! what it may do, and the type says what that is.
//!
//! | role | handle | may | thread |
//! |---|---|---|---|
//! | strategy | [`Gate`](crate::gate::Gate) | read the state word | any; `Clone`, one per thread is fine |
//! | anything that may pull the cord | [`Tripper`] | trip (global: lock-free and async-signal-safe; scoped: takes the file lock) | any, signal handlers included (global trips only) |
//! | operator, risk system, admin endpoint | [`Operator`] | trip, reset (file lock, CAS from a named generation), status, audit, record an unconfirmed drain | any normal thread; never a signal handler |
//! | the engine process | [`EngineOwner`] | be the block's engine (pid, heartbeat) | the thread that starts and stops the engine |
//! | the gateway | claimed inside the block (see [`super::gateway_role`]) | acknowledge kill generations | the gateway thread only |
//!
//! A read-only copy of everything a monitor shows is [`super::Status`]
//! (plus [`super::DrainSnapshot`], [`super::GatewaySnapshot`]).

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{
    proc_start_ticks, Access, Actor, AuditEntry, ControlBlock, DrainIncomplete, DrainPhase,
    IncompleteWriter, Mode, ResetRequest, Result, Source, StateWord, Status, TripOutcome,
    TripRequest,
};
use crate::clock::wall_ns;

/// Trips the switch: nothing else. `Clone + Send + Sync`; hold one in any
/// thread that may need to stop trading (a risk check, a watchdog, a
/// strategy that detects its own runaway). [`Tripper::trip_global`] is
/// lock-free and async-signal-safe, so a signal handler may call it
/// (the crate's own handlers do the same); [`Tripper::trip`] with scopes
/// takes the block's file lock and must not be called from a handler.
#[derive(Clone, Debug)]
pub struct Tripper {
    block: Arc<ControlBlock>,
}

impl Tripper {
    /// A tripper on `block`.
    pub fn new(block: Arc<ControlBlock>) -> Tripper {
        Tripper { block }
    }

    /// Escalates the global mode to `mode` (idempotent, upwards only).
    /// Lock-free and async-signal-safe (a CAS loop and a seqlocked audit
    /// write); `reason` should be a static string in a signal handler.
    pub fn trip_global(&self, mode: Mode, source: Source, reason: &str) -> TripOutcome {
        self.block.trip_global(mode, source, reason)
    }

    /// Trips globally (no scopes) or the given scopes (venues, strategies,
    /// instruments, accounts), all or nothing. With scopes it registers the
    /// names and takes the file lock: not for a signal handler.
    pub fn trip(&self, req: &TripRequest) -> Result<TripOutcome> {
        self.block.trip(req)
    }

    /// [`Tripper::trip_global`] by an actor who proved a role: the audit
    /// records role and identity, and a trip by the risk role can then
    /// only be reset by the risk role. Async-signal-safe like
    /// `trip_global`.
    pub fn trip_global_as(
        &self,
        mode: Mode,
        source: Source,
        reason: &str,
        actor: Actor<'_>,
    ) -> TripOutcome {
        self.block.trip_global_as(mode, source, reason, actor)
    }

    /// [`Tripper::trip`] by an actor who proved a role.
    pub fn trip_as(&self, req: &TripRequest, actor: Actor<'_>) -> Result<TripOutcome> {
        self.block.trip_as(req, actor)
    }

    /// The state word now.
    pub fn state(&self) -> StateWord {
        self.block.state()
    }

    pub(crate) fn block(&self) -> &Arc<ControlBlock> {
        &self.block
    }
}

/// Scoped trips, reset, status and audit: what an operator (the CLI, the
/// admin endpoint, a risk system) does. `Clone + Send + Sync`; any normal
/// thread, never a signal handler (reset and scoped trips take the block's
/// file lock).
#[derive(Clone, Debug)]
pub struct Operator {
    block: Arc<ControlBlock>,
}

impl Operator {
    /// An operator on `block`.
    pub fn new(block: Arc<ControlBlock>) -> Operator {
        Operator { block }
    }

    /// Opens the block of engine `name` in `dir` (it must exist) for an
    /// operator.
    pub fn open(dir: &Path, name: &str, access: Access) -> Result<Operator> {
        Ok(Operator::new(Arc::new(ControlBlock::open_with(
            dir, name, access,
        )?)))
    }

    /// The block (read-only: its public methods only read, or register names).
    pub fn block(&self) -> &ControlBlock {
        &self.block
    }

    /// A tripper on the same block.
    pub fn tripper(&self) -> Tripper {
        Tripper::new(self.block.clone())
    }

    /// The state word now.
    pub fn state(&self) -> StateWord {
        self.block.state()
    }

    /// Escalates the global mode; see [`Tripper::trip_global`].
    pub fn trip_global(&self, mode: Mode, source: Source, reason: &str) -> TripOutcome {
        self.block.trip_global(mode, source, reason)
    }

    /// Trips globally or the given scopes; see [`Tripper::trip`].
    pub fn trip(&self, req: &TripRequest) -> Result<TripOutcome> {
        self.block.trip(req)
    }

    /// Escalates the global mode as an actor who proved a role; see
    /// [`Tripper::trip_global_as`].
    pub fn trip_global_as(
        &self,
        mode: Mode,
        source: Source,
        reason: &str,
        actor: Actor<'_>,
    ) -> TripOutcome {
        self.block.trip_global_as(mode, source, reason, actor)
    }

    /// Trips as an actor who proved a role; see [`Tripper::trip_as`].
    pub fn trip_as(&self, req: &TripRequest, actor: Actor<'_>) -> Result<TripOutcome> {
        self.block.trip_as(req, actor)
    }

    /// Clears the switch, from the generation the operator saw; refused
    /// (and recorded as refused) when it moved on, and, unless forced,
    /// while a drain runs or left orders unconfirmed. See the crate README,
    /// "Reset".
    pub fn reset(&self, req: &ResetRequest) -> Result<TripOutcome> {
        self.block.reset(req)
    }

    /// [`Operator::reset`] by an actor who proved a role. While a risk hold
    /// is in force (a trip since the last risk-role reset was made by the
    /// risk role or by an automatic rule) only [`Role::Risk`](super::Role::Risk) may reset;
    /// anyone else is refused and recorded, forced or not. The audit entry
    /// records role and identity.
    pub fn reset_as(&self, req: &ResetRequest, actor: Actor<'_>) -> Result<TripOutcome> {
        self.block.reset_as(req, actor)
    }

    /// Records a refused request (wrong or missing token) in the audit
    /// ring without changing anything; returns the entry's ticket.
    pub fn record_unauthorized(&self, source: Source, reason: &str) -> u64 {
        self.block.record_unauthorized(source, reason)
    }

    /// Reasons a reset would be refused now (empty when none).
    pub fn reset_blockers(&self) -> Vec<String> {
        self.block.reset_blockers()
    }

    /// A read-only copy of everything `killswitch status` shows.
    pub fn status(&self) -> Status {
        Status::read(&self.block)
    }

    /// The audit ring, oldest first.
    pub fn audit(&self) -> Vec<AuditEntry> {
        self.block.audit()
    }

    /// Puts what an operator found after the engine is gone into the
    /// block's "drain incomplete" record (reset stays refused until forced).
    /// For `killswitch emergency` after it had to terminate or kill an
    /// engine in the middle of its drain. `rec.writer` must be
    /// [`IncompleteWriter::Emergency`]; another writer is refused, because
    /// only the engine speaks for its own drain.
    pub fn record_unconfirmed_drain(&self, rec: &DrainIncomplete) -> bool {
        if rec.writer != IncompleteWriter::Emergency {
            return false;
        }
        self.block.record_drain_incomplete(rec);
        true
    }
}

/// This process is the engine that owns the block: `killswitch status`
/// shows its pid and heartbeat, the watchdog watches it, and `emergency`
/// signals it. Dropping it detaches. Held by the thread that starts and
/// stops the engine (the [`Runtime`](crate::runtime::Runtime) holds one).
#[must_use = "dropping the owner detaches the engine from its block at once"]
#[derive(Debug)]
pub struct EngineOwner {
    block: Arc<ControlBlock>,
}

impl EngineOwner {
    /// Attaches the calling process as the engine of `block`. Fails while
    /// another live process owns it; takes over from a dead owner.
    pub fn attach(block: Arc<ControlBlock>) -> Result<EngineOwner> {
        block.attach_owner()?;
        Ok(EngineOwner { block })
    }

    /// Attaches under an active-role lease this process holds: like
    /// [`EngineOwner::attach`], but a live owner whose pid is `fenced`
    /// (the lease's predecessor, which writes nothing more) is replaced.
    pub fn attach_under_lease(block: Arc<ControlBlock>, fenced: u32) -> Result<EngineOwner> {
        block.attach_owner_replacing(fenced)?;
        Ok(EngineOwner { block })
    }

    /// Writes the engine's heartbeat now. The gateway also writes it every
    /// 64 turns of its loop (the thread whose stall matters).
    pub fn heartbeat(&self) {
        self.block.heartbeat();
    }

    /// Publishes how many orders are open in the engine's registry, for
    /// `status` and for `emergency` when no snapshot was taken.
    pub fn publish_open_orders(&self, open: u64) {
        self.block
            .gateway_status()
            .open_orders
            .store(open, Ordering::Release);
    }

    /// The engine's drain thread is gone: nothing cancels orders on a trip
    /// any more. Trips KILL (the gate closes; `emergency` and the watchdog
    /// see it) with `why` in the audit record, marks the drain `Failed`,
    /// and, unless a record is already there, puts a "drain incomplete"
    /// record (writer: the engine; `open` orders unconfirmed, no snapshot)
    /// in the block, so no reset goes through before someone reconciled.
    pub fn report_drain_died(&self, open: u64, why: &str) {
        self.block.trip_global(
            Mode::Kill,
            Source::Api,
            &format!("drain thread died: {why}"),
        );
        self.block
            .drain_status()
            .phase
            .store(DrainPhase::Failed as u64, Ordering::Release);
        if self.block.drain_incomplete().is_none() {
            let pid = std::process::id();
            self.block.record_drain_incomplete(&DrainIncomplete {
                generation: self.block.state().generation(),
                open,
                confirmed: 0,
                unknown: open,
                writer: IncompleteWriter::Engine,
                no_snapshot: true,
                pid,
                writer_start_ticks: proc_start_ticks(pid).unwrap_or(0),
                wall_ns: wall_ns(),
            });
        }
    }
}

impl Drop for EngineOwner {
    fn drop(&mut self) {
        self.block.detach_owner();
    }
}
