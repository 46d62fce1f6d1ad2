//! The gateway's counters: the ones it keeps in memory ([`Counters`]) and
//! the copy it hands out ([`GatewayStats`]), with the control block's
//! published counts.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::control::ControlBlock;

/// Counters the gateway keeps besides the control block's.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) refused_on_recheck: AtomicU64,
    pub(super) unknown_venue: AtomicU64,
    pub(super) send_errors: AtomicU64,
    pub(super) send_ambiguous: AtomicU64,
    pub(super) cancel_errors: AtomicU64,
    pub(super) cancels_skipped: AtomicU64,
    pub(super) events_applied: AtomicU64,
    pub(super) disconnects: AtomicU64,
    pub(super) turns: AtomicU64,
}

/// A copy of the gateway's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GatewayStats {
    /// New orders written to venues.
    pub orders_sent: u64,
    /// Cancels and mass cancels written.
    pub cancels_sent: u64,
    /// Orders that passed the strategy's gate check but were refused by the
    /// gateway's re-check (the switch tripped in between).
    pub refused_on_recheck: u64,
    /// Orders for a venue the gateway has no session for.
    pub unknown_venue: u64,
    /// Venue writes of new orders that failed with nothing sent (rejected locally).
    pub send_errors: u64,
    /// Venue writes of new orders that failed part-way (`SendUnknown`: the
    /// drain cancels or reports them).
    pub send_ambiguous: u64,
    /// Venue writes of cancels that failed.
    pub cancel_errors: u64,
    /// Cancel requests for orders already terminal (not sent).
    pub cancels_skipped: u64,
    /// Venue events applied to the registry.
    pub events_applied: u64,
    /// Disconnect events seen.
    pub disconnects: u64,
    /// Loop turns.
    pub turns: u64,
}

pub(super) fn read_stats(block: &ControlBlock, c: &Counters) -> GatewayStats {
    let gs = block.gateway_status();
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    GatewayStats {
        orders_sent: l(&gs.orders_sent),
        cancels_sent: l(&gs.cancels_sent),
        refused_on_recheck: l(&c.refused_on_recheck),
        unknown_venue: l(&c.unknown_venue),
        send_errors: l(&c.send_errors),
        send_ambiguous: l(&c.send_ambiguous),
        cancel_errors: l(&c.cancel_errors),
        cancels_skipped: l(&c.cancels_skipped),
        events_applied: l(&c.events_applied),
        disconnects: l(&c.disconnects),
        turns: l(&c.turns),
    }
}
