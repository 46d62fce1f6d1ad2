//! Order activity per venue and per strategy (open, sent, accepted,
//! rejected, fills), counted under the registry's lock as events are
//! applied, so the engine's telemetry reads it in O(venues + strategies)
//! instead of walking the open orders.

use super::Inner;
use crate::order::ScopeTags;

/// Order activity of one venue or strategy since the registry was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScopeActivity {
    /// Open orders now.
    pub open: u64,
    /// New orders registered (the gateway registers before it writes).
    pub sent: u64,
    /// Accepted by the venue.
    pub acked: u64,
    /// Rejected (by the venue, or a write that failed).
    pub rejected: u64,
    /// Fills.
    pub fills: u64,
}

impl Inner {
    /// Applies `f` to the activity of the order's venue and strategy.
    #[inline]
    pub(super) fn activity(&mut self, tags: ScopeTags, f: impl Fn(&mut ScopeActivity)) {
        for (list, i) in [
            (&mut self.venue_activity, tags.venue),
            (&mut self.strategy_activity, tags.strategy),
        ] {
            let i = i as usize;
            if list.len() <= i {
                list.resize(i + 1, ScopeActivity::default());
            }
            f(&mut list[i]);
        }
    }
}
