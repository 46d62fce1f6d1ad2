//! Reset, and what must be true before one: the switch can only be cleared
//! from the generation the operator saw, and never while a drain is
//! unfinished, whoever died.
//!
//! * [`ControlBlock::reset`] takes the file lock, checks the blockers, then
//!   clears the word with one compare-and-swap from the expected generation
//!   ([`state::reset_word`]): a lock-free trip (signal handler, watchdog,
//!   risk system) that lands between the check and the reset is not erased,
//!   the reset is refused and says what changed.
//! * The "drain incomplete" record ([`DrainIncomplete`], in the drain
//!   status of the block) is written when a drain starts and cleared only
//!   by a drain that ends `Done` with no unknown order, or by a forced
//!   reset. It lives in the shared file, so an engine killed with SIGKILL
//!   in the middle of its drain still blocks the reset; `killswitch
//!   emergency` writes its own finding there after escalating.
//!
//! # Invariants
//! * A reset never changes the word unless its generation is the expected
//!   one; scope levels are cleared only after the word's CAS succeeded (a
//!   refused reset leaves every level as it was).
//! * The record is set while `incomplete_meta != 0`; `incomplete_meta` is
//!   stored last (Release) when written and first when cleared.

use std::sync::atomic::Ordering;

use super::audit::{self, Actor, AuditKind, Role};
use super::layout::{IncompleteWriter, INCOMPLETE_NO_SNAPSHOT};
use super::state::{self, Transition};
use super::{ControlBlock, ControlError, DrainPhase, Result, ScopeKind, Source, TripOutcome};
use crate::clock::{mono_ns, wall_ns};

/// A reset request.
#[derive(Clone, Debug)]
pub struct ResetRequest {
    /// Who asks.
    pub source: Source,
    /// Why.
    pub reason: String,
    /// Reset even though preconditions fail (recorded).
    pub force: bool,
    /// The state-word generation the operator saw and means to clear. If the
    /// word has moved on (a trip landed since), the reset is refused and
    /// says what changed. `None`: the generation read under the file lock
    /// at the reset (a trip that lands after that read is still refused,
    /// never erased).
    pub expected_generation: Option<u64>,
}

/// The persistent "drain incomplete" record: a drain that did not finish
/// cleanly, or what `emergency` found after it had to kill the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct DrainIncomplete {
    /// Generation of the drain the record is about.
    pub generation: u64,
    /// Open orders in scope at the snapshot (with `no_snapshot`: the
    /// engine's last published count of open orders).
    pub open: u64,
    /// Orders confirmed terminal.
    pub confirmed: u64,
    /// Orders not confirmed: unknown, or unconfirmed when the engine died.
    pub unknown: u64,
    /// Who wrote it.
    pub writer: IncompleteWriter,
    /// True when no snapshot was taken (the gateway never acknowledged).
    pub no_snapshot: bool,
    /// Pid of the writer.
    pub pid: u32,
    /// Start time of the writer in clock ticks since boot (0: unknown).
    pub writer_start_ticks: u64,
    /// When it was written, Unix ns.
    pub wall_ns: u64,
}

impl DrainIncomplete {
    /// The `incomplete_meta` word for this record (never 0).
    pub fn meta(&self) -> u64 {
        self.writer as u64
            | if self.no_snapshot {
                INCOMPLETE_NO_SNAPSHOT
            } else {
                0
            }
            | (self.pid as u64) << 32
    }

    /// True when this record was written by the process `pid` started at
    /// `start_ticks` (a reused pid is not the writer).
    pub fn written_by(&self, pid: u32, start_ticks: u64) -> bool {
        self.pid == pid && (self.writer_start_ticks == 0 || self.writer_start_ticks == start_ticks)
    }
}

impl std::fmt::Display for DrainIncomplete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let who = match self.writer {
            IncompleteWriter::Drain => "the engine's drain",
            IncompleteWriter::Emergency => "`killswitch emergency` after escalating",
            IncompleteWriter::Engine => "the engine (its drain thread died)",
        };
        write!(
            f,
            "the drain of generation {} did not finish cleanly (recorded by {who}, pid {}, at {}): {} {}, {} confirmed, {} not confirmed (may still be live at a venue)",
            self.generation,
            self.pid,
            crate::clock::format_wall(self.wall_ns),
            self.open,
            if self.no_snapshot {
                "open by the engine's last count (no snapshot was taken)"
            } else {
                "open at the snapshot"
            },
            self.confirmed,
            self.unknown
        )
    }
}

impl ControlBlock {
    /// Clears every mode and scope, from the generation the operator saw.
    ///
    /// Refused (and recorded as a refused reset) when the word is no longer
    /// at `expected_generation`, and, unless forced, while the drain
    /// reports orders in an unknown state, while a drain runs, or while a
    /// "drain incomplete" record is set. A forced reset clears the unknown
    /// count and the record, and is recorded as forced. A reset of a switch
    /// that is not tripped changes nothing and is recorded as a no-op.
    ///
    /// This is the seam for later preconditions (unreconciled positions).
    pub(crate) fn reset(&self, req: &ResetRequest) -> Result<TripOutcome> {
        self.reset_as(req, Actor::ANONYMOUS)
    }

    /// [`ControlBlock::reset`] by an actor who proved a role. While a risk
    /// hold is in force (a trip since the last risk-role reset was made by
    /// the risk role or by an automatic rule: [`ControlBlock::risk_hold`])
    /// only [`Role::Risk`] may reset; anyone else is refused and recorded,
    /// `--force` or not. The audit entry records role and identity.
    pub(crate) fn reset_as(&self, req: &ResetRequest, actor: Actor<'_>) -> Result<TripOutcome> {
        let _lock = self.lock()?;
        // Read before the state word: a risk trip counts itself before it
        // changes the word, so a reset that sees its change sees its count.
        let risk_trips = self.layout().header.risk_trips.load(Ordering::Acquire);
        let held = risk_trips
            > self
                .layout()
                .header
                .risk_trips_reset
                .load(Ordering::Acquire);
        let seen = self.state();
        let expected = req.expected_generation.unwrap_or(seen.generation());
        // The mode the reset clears (read before the word changes).
        let cleared = seen.mode();
        let record = |kind, generation, flags, reason: &str| {
            audit::write(
                self.layout(),
                &audit::AuditWrite {
                    kind,
                    mode: cleared,
                    source: req.source,
                    scope: None,
                    generation,
                    reason,
                    flags,
                    actor,
                    mono_ns: mono_ns(),
                    wall_ns: wall_ns(),
                },
            )
        };
        if seen.generation() != expected {
            record(AuditKind::ResetRefused, seen.generation(), 0, &req.reason);
            return Err(self.stale(expected, seen));
        }
        if held && seen.is_active() && actor.role != Some(Role::Risk) {
            record(AuditKind::ResetRefused, seen.generation(), 0, &req.reason);
            return Err(ControlError::ResetNeedsRole {
                needed: Role::Risk,
                had: actor
                    .role
                    .map_or("no role".to_string(), |r| format!("the {r} role")),
            });
        }
        let blockers = self.reset_blockers();
        if !seen.is_active() && (blockers.is_empty() || !req.force) {
            // Nothing tripped: nothing to clear. Recorded as what it is,
            // never as a reset.
            let ticket = record(AuditKind::ResetNoop, seen.generation(), 0, &req.reason);
            return Ok(TripOutcome {
                transition: Transition::Unchanged(seen),
                ticket,
            });
        }
        if !blockers.is_empty() && !req.force {
            record(AuditKind::ResetRefused, seen.generation(), 0, &req.reason);
            return Err(ControlError::ResetRefused {
                why: blockers.join("; "),
            });
        }
        // The word first, by CAS from the generation checked above: a
        // lock-free trip that landed since is refused, not erased. Scope
        // levels after: once SCOPED is clear no gate reads them, and a
        // scoped trip cannot start while we hold the lock.
        let transition = match state::reset_word(self.state_atomic(), expected) {
            // (Unchanged only for a forced reset of an untripped switch
            // that clears a record or unknown orders.)
            Ok(t) => t,
            Err(now) => {
                record(AuditKind::ResetRefused, now.generation(), 0, &req.reason);
                return Err(self.stale(expected, now));
            }
        };
        let levels = &self.layout().levels;
        for kind in ScopeKind::ALL {
            for l in kind.levels(levels) {
                l.store(0, Ordering::Release);
            }
        }
        if actor.role == Some(Role::Risk) {
            // Every risk trip counted before the word was read is cleared;
            // one counted since stays in force (fetch_max: never lower).
            self.layout()
                .header
                .risk_trips_reset
                .fetch_max(risk_trips, Ordering::AcqRel);
        }
        let forced = !blockers.is_empty();
        if forced {
            // The operator has taken responsibility for the unknown orders
            // and the unfinished drain.
            let d = self.drain_status();
            d.orders_unknown.store(0, Ordering::Release);
            d.incomplete_meta.store(0, Ordering::Release);
        }
        let ticket = record(
            AuditKind::Reset,
            transition.current().generation(),
            if forced { audit::FLAG_FORCED } else { 0 },
            &req.reason,
        );
        Ok(TripOutcome { transition, ticket })
    }

    /// The refusal of a reset that named `expected` while the word is at
    /// `now`: says what changed, from the audit ring.
    fn stale(&self, expected: u64, now: state::StateWord) -> ControlError {
        let changes: Vec<String> = self
            .audit()
            .into_iter()
            .filter(|e| e.generation > expected && e.kind != AuditKind::ResetRefused)
            .map(|e| {
                format!(
                    "generation {}: {:?} {} by {} pid {} \"{}\"",
                    e.generation,
                    e.kind,
                    e.mode,
                    e.source.as_str(),
                    e.pid,
                    e.reason
                )
            })
            .collect();
        ControlError::ResetStale {
            expected,
            found: now.generation(),
            mode: now.mode(),
            changes: if changes.is_empty() {
                "(the audit ring no longer holds the change)".into()
            } else {
                changes.join("; ")
            },
        }
    }

    /// True while a reset needs the risk role: a trip since the last
    /// risk-role reset was made by the risk role or by an automatic rule.
    pub fn risk_hold(&self) -> bool {
        let h = &self.layout().header;
        h.risk_trips.load(Ordering::Acquire) > h.risk_trips_reset.load(Ordering::Acquire)
    }

    /// Records a request that did not authenticate (wrong or missing
    /// token): nothing changes; `reason` says what was asked and from where.
    pub(crate) fn record_unauthorized(&self, source: Source, reason: &str) -> u64 {
        audit::write(
            self.layout(),
            &audit::AuditWrite {
                kind: AuditKind::Unauthorized,
                mode: self.state().mode(),
                source,
                scope: None,
                generation: self.state().generation(),
                reason,
                flags: 0,
                actor: Actor::ANONYMOUS,
                mono_ns: mono_ns(),
                wall_ns: wall_ns(),
            },
        )
    }

    /// Reasons a reset would be refused now (empty when none).
    pub fn reset_blockers(&self) -> Vec<String> {
        let mut v = Vec::new();
        let d = self.drain_status();
        let phase = DrainPhase::from_u64(d.phase.load(Ordering::Acquire));
        if phase.is_running() && self.owner().alive {
            v.push(format!(
                "the engine's drain of generation {} is still running ({phase:?}): wait for it to finish",
                d.generation.load(Ordering::Acquire)
            ));
        }
        if let Some(rec) = self.drain_incomplete() {
            v.push(rec.to_string());
        }
        if crate::shutdown::words::change_flags(self).reconcile_mismatch {
            v.push(
                "the last planned shutdown's reconciliation found positions that differ from the venue's: check its report, then acknowledge with `killswitch reconcile --ack`"
                    .to_string(),
            );
        }
        let unknown = d.orders_unknown.load(Ordering::Acquire);
        if unknown > 0 {
            v.push(format!(
                "{unknown} order(s) are in CancelUnknown state after the last drain"
            ));
        }
        v
    }

    /// The "drain incomplete" record, if set.
    pub fn drain_incomplete(&self) -> Option<DrainIncomplete> {
        let d = self.drain_status();
        let meta = d.incomplete_meta.load(Ordering::Acquire);
        if meta == 0 {
            return None;
        }
        Some(DrainIncomplete {
            generation: d.incomplete_generation.load(Ordering::Acquire),
            open: d.incomplete_open.load(Ordering::Acquire),
            confirmed: d.incomplete_confirmed.load(Ordering::Acquire),
            unknown: d.incomplete_unknown.load(Ordering::Acquire),
            writer: IncompleteWriter::from_u8(meta as u8),
            no_snapshot: meta & INCOMPLETE_NO_SNAPSHOT != 0,
            pid: (meta >> 32) as u32,
            writer_start_ticks: d.incomplete_writer_start.load(Ordering::Acquire),
            wall_ns: d.incomplete_wall_ns.load(Ordering::Acquire),
        })
    }

    /// Writes the "drain incomplete" record (the fields, then the meta word
    /// with Release). Lock-free: the drain calls it when it starts.
    pub(crate) fn record_drain_incomplete(&self, rec: &DrainIncomplete) {
        let d = self.drain_status();
        d.incomplete_generation
            .store(rec.generation, Ordering::Relaxed);
        d.incomplete_open.store(rec.open, Ordering::Relaxed);
        d.incomplete_confirmed
            .store(rec.confirmed, Ordering::Relaxed);
        d.incomplete_unknown.store(rec.unknown, Ordering::Relaxed);
        d.incomplete_writer_start
            .store(rec.writer_start_ticks, Ordering::Relaxed);
        d.incomplete_wall_ns.store(rec.wall_ns, Ordering::Relaxed);
        d.incomplete_meta.store(rec.meta(), Ordering::Release);
    }

    /// Clears the record if it is still the one whose meta word is `meta`
    /// (a drain clears only its own record). Returns true when cleared.
    pub(crate) fn clear_drain_incomplete(&self, meta: u64) -> bool {
        self.drain_status()
            .incomplete_meta
            .compare_exchange(meta, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}
