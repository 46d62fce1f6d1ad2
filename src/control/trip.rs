//! Tripping the switch: globally (lock-free, async-signal-safe) or for
//! named scopes (under the file lock, all or nothing), each with its audit
//! record.

use std::sync::atomic::Ordering;

use super::audit::{self, Actor, AuditKind, Role, Source};
use super::names::{self, check_name, ScopeKind};
use super::state::{self, Mode, Transition};
use super::{ControlBlock, ControlError, Result};
use crate::clock::{mono_ns, wall_ns};

/// A trip request.
#[derive(Clone, Debug)]
pub struct TripRequest {
    /// Mode to escalate to.
    pub mode: Mode,
    /// Scopes to trip; empty for a global trip.
    pub scopes: Vec<(ScopeKind, String)>,
    /// Who asks.
    pub source: Source,
    /// Why (kept in the audit ring).
    pub reason: String,
}

/// What a trip did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TripOutcome {
    /// The state word change (or lack of it).
    pub transition: Transition,
    /// Audit ticket of the record.
    pub ticket: u64,
}

impl ControlBlock {
    /// Escalates the global mode without taking any lock: async-signal-safe
    /// (atomics, `getpid`, `getuid`, `clock_gettime` only), so a signal
    /// handler calls this directly. `reason` should be a static string there.
    pub(crate) fn trip_global(&self, mode: Mode, source: Source, reason: &str) -> TripOutcome {
        self.trip_global_as(mode, source, reason, Actor::ANONYMOUS)
    }

    /// [`ControlBlock::trip_global`] by an actor who proved a role: the
    /// audit entry records the role and identity, and a trip by the risk
    /// role (like one with [`Source::Auto`]) can then only be reset by the
    /// risk role. Async-signal-safe like `trip_global`.
    pub(crate) fn trip_global_as(
        &self,
        mode: Mode,
        source: Source,
        reason: &str,
        actor: Actor<'_>,
    ) -> TripOutcome {
        // The monotonic stamp is taken before the CAS, so "trip -> seen"
        // latencies measured against the record are never negative. The
        // wall-clock stamp (for humans) is taken after it: a clock read
        // (~25 ns in a VM) less between the call and the word every reader
        // watches (issue 16 item 6).
        let t_mono = mono_ns();
        self.note_risk_trip(source, actor);
        let transition = state::trip_word(self.state_atomic(), mode);
        let t_wall = wall_ns();
        let kind = match transition {
            Transition::Changed { .. } => AuditKind::Trip,
            Transition::Unchanged(_) => AuditKind::TripNoop,
        };
        let ticket = audit::write(
            self.layout(),
            &audit::AuditWrite {
                kind,
                mode,
                source,
                scope: None,
                generation: transition.current().generation(),
                reason,
                flags: 0,
                actor,
                mono_ns: t_mono,
                wall_ns: t_wall,
            },
        );
        TripOutcome { transition, ticket }
    }

    /// Counts a trip that only the risk role may reset (made with the risk
    /// role, or by an automatic rule), before the trip changes the word: a
    /// reset that looks after the change also sees the count.
    fn note_risk_trip(&self, source: Source, actor: Actor<'_>) {
        if source == Source::Auto || actor.role == Some(Role::Risk) {
            self.layout()
                .header
                .risk_trips
                .fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Trips globally (no scopes) or for the given scopes.
    pub(crate) fn trip(&self, req: &TripRequest) -> Result<TripOutcome> {
        self.trip_as(req, Actor::ANONYMOUS)
    }

    /// [`ControlBlock::trip`] by an actor who proved a role (see
    /// [`ControlBlock::trip_global_as`]).
    pub(crate) fn trip_as(&self, req: &TripRequest, actor: Actor<'_>) -> Result<TripOutcome> {
        if req.mode == Mode::Normal {
            return Err(ControlError::InvalidName {
                what: "mode",
                name: "normal (use reset)".into(),
            });
        }
        if req.scopes.is_empty() {
            return Ok(self.trip_global_as(req.mode, req.source, &req.reason, actor));
        }
        for (kind, name) in &req.scopes {
            check_name(kind.as_str(), name)?;
        }
        let _lock = self.lock()?;
        // All or nothing: every name must be known or have a free slot
        // before anything is written. A trip that failed part-way would
        // leave levels raised with no generation bump and no audit entry,
        // for a later unrelated trip (which sets SCOPED) to switch on.
        for kind in ScopeKind::ALL {
            let slots = kind.slots(self.layout());
            let mut new: Vec<&str> = req
                .scopes
                .iter()
                .filter(|(k, n)| *k == kind && names::lookup(slots, n).is_none())
                .map(|(_, n)| n.as_str())
                .collect();
            new.sort_unstable();
            new.dedup();
            let free = slots
                .iter()
                .filter(|s| s[0].load(Ordering::Acquire) & 0xff == 0)
                .count();
            if new.len() > free {
                return Err(ControlError::NamesFull {
                    path: self.path.clone(),
                    kind,
                    capacity: kind.capacity(),
                });
            }
        }
        // Cannot fail now: the slots are counted and we hold the lock that
        // every registration takes.
        let mut indices = Vec::with_capacity(req.scopes.len());
        for (kind, name) in &req.scopes {
            indices.push((*kind, self.register_locked(*kind, name)?));
        }
        let (t_mono, t_wall) = (mono_ns(), wall_ns());
        self.note_risk_trip(req.source, actor);
        let mut raised = Vec::with_capacity(req.scopes.len());
        for (kind, idx) in indices {
            let prev = kind.levels(&self.layout().levels)[idx as usize]
                .fetch_max(req.mode as u8, Ordering::AcqRel);
            raised.push((kind, idx, prev < req.mode as u8));
        }
        let any_raised = raised.iter().any(|r| r.2);
        let transition = if any_raised || !self.state().scoped() {
            state::scope_word(self.state_atomic())
        } else {
            Transition::Unchanged(self.state())
        };
        let mut ticket = 0;
        for (kind, idx, was_raised) in raised {
            ticket = audit::write(
                self.layout(),
                &audit::AuditWrite {
                    kind: if was_raised {
                        AuditKind::Trip
                    } else {
                        AuditKind::TripNoop
                    },
                    mode: req.mode,
                    source: req.source,
                    scope: Some((kind, idx)),
                    generation: transition.current().generation(),
                    reason: &req.reason,
                    flags: 0,
                    actor,
                    mono_ns: t_mono,
                    wall_ns: t_wall,
                },
            );
        }
        Ok(TripOutcome { transition, ticket })
    }
}
