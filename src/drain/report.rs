//! The drain's final report: what was cancelled, filled, rejected, what is
//! unknown and why, and when each step happened.

use std::fmt;
use std::time::Duration;

use crate::order::{OrderId, OrderState, Qty, ScopeIndex};

/// Why an order ended the drain in `CancelUnknown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnknownReason {
    /// A cancel was sent (and re-sent) and no answer came by the deadline.
    NoAnswer,
    /// The venue refused the cancel and the order was still open at the deadline.
    CancelRefused,
    /// The cancel ring stayed full until the deadline: no cancel was enqueued.
    CancelNotEnqueued,
}

/// An order the drain could not get confirmed: it may still be live at the
/// venue. The runbook's "orders not canceling": check the venue, then
/// reconcile before any reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownOrder {
    /// Order.
    pub id: OrderId,
    /// Its venue.
    pub venue: ScopeIndex,
    /// State when the deadline passed.
    pub state_before: OrderState,
    /// Why.
    pub reason: UnknownReason,
}

/// Fills of one order applied while the drain ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrainFill {
    /// Order.
    pub id: OrderId,
    /// Number of fills.
    pub fills: u32,
    /// Quantity filled.
    pub qty: Qty,
}

/// Why a drain failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DrainError {
    /// The gateway did not acknowledge a kill generation by the deadline: it
    /// may be stuck in a venue write. The drain published the failure (so an
    /// operator or `killswitch emergency` escalates) and kept waiting; with
    /// `acked_after` set, the acknowledgement came that late and the drain
    /// then snapshotted and cancelled as usual.
    GatewayAckLate {
        /// The generation.
        generation: u64,
        /// The deadline it missed.
        deadline: Duration,
        /// How long after the drain saw the generation the acknowledgement
        /// came; `None` when it never came (the drain was stopped first).
        acked_after: Option<Duration>,
    },
    /// The drain was told to stop (the engine is shutting down) while it
    /// still waited for the gateway's acknowledgement of `generation`:
    /// nothing in that generation's scope was snapshotted or cancelled.
    StoppedBeforeAck {
        /// The generation.
        generation: u64,
    },
    /// The checkpoint hook failed; the cancels themselves completed.
    CheckpointFailed(String),
}

impl fmt::Display for DrainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DrainError::GatewayAckLate {
                generation,
                deadline,
                acked_after: Some(after),
            } => write!(
                f,
                "gateway acknowledged kill generation {generation} only after {after:?} (deadline {deadline:?}): the drain waited, then snapshotted and cancelled; find out why the gateway stalled"
            ),
            DrainError::GatewayAckLate {
                generation,
                deadline,
                acked_after: None,
            } => write!(
                f,
                "gateway never acknowledged kill generation {generation} (deadline {deadline:?}): no snapshot of its scope was taken; stop the engine process and rely on cancel-on-disconnect, then reconcile"
            ),
            DrainError::StoppedBeforeAck { generation } => write!(
                f,
                "the drain was stopped while waiting for the gateway to acknowledge kill generation {generation}: its scope was not cancelled; reconcile with the venues"
            ),
            DrainError::CheckpointFailed(e) => write!(f, "quick checkpoint failed: {e}"),
        }
    }
}

/// The drain thread is gone (it panicked, or ended without a report): no
/// trip will be drained any more. Fatal for an engine: trip KILL, report,
/// exit non-zero.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrainDied {
    /// What is known of why.
    pub why: String,
}

impl fmt::Display for DrainDied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: no trip will be drained any more; open orders must be cancelled from outside (stop the engine, rely on cancel-on-disconnect, reconcile)",
            self.why
        )
    }
}

/// Why [`DrainHandle::wait_outcome`](super::DrainHandle::wait_outcome)
/// returned without a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WaitError {
    /// No drain finished within the time given.
    Timeout(Duration),
    /// The drain thread is gone.
    Died(DrainDied),
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitError::Timeout(d) => write!(f, "no drain finished within {d:?}"),
            WaitError::Died(d) => d.fmt(f),
        }
    }
}

impl std::error::Error for WaitError {}

/// A newer generation taken into a running drain because it put KILL on
/// more orders (e.g. a global kill while a scoped drain waited on a venue
/// that ignores cancels). `CLOCK_MONOTONIC` ns; 0 when it did not happen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Escalation {
    /// The generation.
    pub generation: u64,
    /// Its trip (from the audit record; 0 when overwritten).
    pub t_trip: u64,
    /// The drain saw it.
    pub t_seen: u64,
    /// The gateway's acknowledgement of it was seen.
    pub t_gateway_ack: u64,
    /// First cancel request enqueued for what it newly put in scope.
    pub t_first_cancel: u64,
    /// Open orders newly in scope at its snapshot.
    pub open_at_snapshot: usize,
}

impl Escalation {
    /// Its trip (or, without an audit record, when the drain saw it) to its
    /// first cancel enqueued, ns.
    pub fn trip_to_first_cancel_ns(&self) -> Option<u64> {
        let t0 = if self.t_trip != 0 {
            self.t_trip
        } else {
            self.t_seen
        };
        (self.t_first_cancel != 0).then(|| self.t_first_cancel.saturating_sub(t0))
    }
}

/// `CLOCK_MONOTONIC` ns of each step; 0 when it did not happen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrainTimings {
    /// The trip (from the audit record).
    pub t_trip: u64,
    /// The drain saw the new generation.
    pub t_trip_seen: u64,
    /// The gateway's acknowledgement was seen.
    pub t_gateway_ack: u64,
    /// First cancel request enqueued.
    pub t_first_cancel: u64,
    /// Last cancel request of the first round enqueued.
    pub t_last_cancel_enqueued: u64,
    /// Last order resolved (terminal or unknown).
    pub t_last_ack: u64,
    /// Checkpoint written.
    pub t_checkpoint: u64,
    /// Drain finished.
    pub t_done: u64,
}

/// The report of one drain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrainOutcome {
    /// State-word generation drained (the first one, that started it).
    pub generation: u64,
    /// Newest generation the drain looked at: every generation up to it
    /// that put KILL on more orders was taken in ([`Self::escalations`]).
    pub last_generation: u64,
    /// A global kill was in force by the end (false: scoped kills only).
    pub global: bool,
    /// The start-up drain of the orders an earlier run left open (no trip).
    pub recovery: bool,
    /// Open orders in scope at the snapshots (the first and the escalations').
    pub open_at_snapshot: usize,
    /// Confirmed cancelled.
    pub canceled: Vec<OrderId>,
    /// Filled before the cancel took effect.
    pub filled: Vec<OrderId>,
    /// Rejected by the venue (or locally) meanwhile.
    pub rejected: Vec<OrderId>,
    /// Not confirmed by the deadline, now `CancelUnknown`.
    pub unknown: Vec<UnknownOrder>,
    /// Fills applied during the drain, per order.
    pub fills_during_drain: Vec<DrainFill>,
    /// Cancel requests enqueued (a mass cancel counts once), re-sends included.
    pub cancel_requests: u64,
    /// Mass cancels among them.
    pub mass_cancels: u32,
    /// Single cancels re-sent at half the deadline.
    pub resent: u64,
    /// Journal sequence of the quick checkpoint.
    pub checkpoint_seq: Option<u64>,
    /// The first failure, if any.
    pub error: Option<DrainError>,
    /// Timestamps (of the first generation).
    pub timings: DrainTimings,
    /// Newer generations taken in while it ran, in order.
    pub escalations: Vec<Escalation>,
    /// Sending threads (send guards) the drain found inside a send after
    /// its barrier, and waited for before it snapshotted (summed over the
    /// generations it took in).
    pub senders_waited_for: usize,
}

impl DrainOutcome {
    pub(crate) fn new(generation: u64, global: bool) -> DrainOutcome {
        DrainOutcome {
            generation,
            last_generation: generation,
            global,
            recovery: false,
            open_at_snapshot: 0,
            canceled: Vec::new(),
            filled: Vec::new(),
            rejected: Vec::new(),
            unknown: Vec::new(),
            fills_during_drain: Vec::new(),
            cancel_requests: 0,
            mass_cancels: 0,
            resent: 0,
            checkpoint_seq: None,
            error: None,
            timings: DrainTimings::default(),
            escalations: Vec::new(),
            senders_waited_for: 0,
        }
    }

    /// Records an order that left the open states.
    pub(crate) fn record_final(&mut self, id: OrderId, state: Option<OrderState>) {
        match state {
            Some(OrderState::Filled) => self.filled.push(id),
            Some(OrderState::Rejected) => self.rejected.push(id),
            // Canceled; CancelUnknown set by someone else cannot happen
            // (only the drain sets it), so it is counted as cancelled only
            // when it really is.
            Some(OrderState::Canceled) => self.canceled.push(id),
            _ => self.unknown.push(UnknownOrder {
                id,
                venue: 0,
                state_before: state.unwrap_or(OrderState::CancelUnknown),
                reason: UnknownReason::NoAnswer,
            }),
        }
    }

    /// Orders confirmed terminal.
    pub fn confirmed(&self) -> usize {
        self.canceled.len() + self.filled.len() + self.rejected.len()
    }

    /// True when every order in scope is terminal and nothing failed.
    pub fn is_clean(&self) -> bool {
        self.error.is_none() && self.unknown.is_empty()
    }

    /// Trip (or, without an audit record, trip seen) to first cancel enqueued, ns.
    pub fn trip_to_first_cancel_ns(&self) -> Option<u64> {
        let t0 = if self.timings.t_trip != 0 {
            self.timings.t_trip
        } else {
            self.timings.t_trip_seen
        };
        (self.timings.t_first_cancel != 0).then(|| self.timings.t_first_cancel.saturating_sub(t0))
    }
}

impl fmt::Display for DrainOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.timings;
        let since = |x: u64| {
            if x == 0 {
                "-".to_string()
            } else {
                crate::clock::format_duration_ns(x.saturating_sub(t.t_trip_seen))
            }
        };
        writeln!(
            f,
            "drain of generation {} ({}): {} open at snapshot, {} cancelled, {} filled, {} rejected, {} unknown",
            self.generation,
            if self.recovery {
                "start-up recovery of an earlier run's open orders"
            } else if self.global {
                "global kill"
            } else {
                "scoped kill"
            },
            self.open_at_snapshot,
            self.canceled.len(),
            self.filled.len(),
            self.rejected.len(),
            self.unknown.len()
        )?;
        writeln!(
            f,
            "  cancel requests {} (mass {}, re-sent {}), fills during drain {}",
            self.cancel_requests,
            self.mass_cancels,
            self.resent,
            self.fills_during_drain.len()
        )?;
        writeln!(
            f,
            "  since trip seen: gateway ack {}, first cancel {}, last answer {}, done {}",
            since(t.t_gateway_ack),
            since(t.t_first_cancel),
            since(t.t_last_ack),
            since(t.t_done)
        )?;
        for e in &self.escalations {
            writeln!(
                f,
                "  then generation {}: {} more open at its snapshot, first cancel {} after its trip",
                e.generation,
                e.open_at_snapshot,
                e.trip_to_first_cancel_ns()
                    .map(crate::clock::format_duration_ns)
                    .unwrap_or_else(|| "-".into())
            )?;
        }
        for u in &self.unknown {
            writeln!(
                f,
                "  UNKNOWN {} on venue {} (was {:?}): {:?}",
                u.id, u.venue, u.state_before, u.reason
            )?;
        }
        if let Some(e) = &self.error {
            writeln!(f, "  FAILED: {e}")?;
        }
        Ok(())
    }
}
