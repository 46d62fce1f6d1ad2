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
    /// The gateway did not acknowledge the kill generation in time: it may be
    /// stuck in a venue write; nothing was snapshotted or cancelled. Escalate
    /// (stop the process; rely on the venues' cancel-on-disconnect).
    GatewayAckTimeout {
        /// How long the drain waited.
        waited: Duration,
    },
    /// The checkpoint hook failed; the cancels themselves completed.
    CheckpointFailed(String),
}

impl fmt::Display for DrainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DrainError::GatewayAckTimeout { waited } => write!(
                f,
                "gateway did not acknowledge the kill within {waited:?}: no snapshot was taken; stop the engine process and rely on cancel-on-disconnect"
            ),
            DrainError::CheckpointFailed(e) => write!(f, "quick checkpoint failed: {e}"),
        }
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
    /// State-word generation drained.
    pub generation: u64,
    /// Global kill (true) or scoped (false).
    pub global: bool,
    /// Open orders in scope at the snapshot.
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
    /// Failure, if any.
    pub error: Option<DrainError>,
    /// Timestamps.
    pub timings: DrainTimings,
}

impl DrainOutcome {
    pub(crate) fn new(generation: u64, global: bool) -> DrainOutcome {
        DrainOutcome {
            generation,
            global,
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
            if self.global { "global kill" } else { "scoped kill" },
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
