//! The venues' heartbeats the `venue-heartbeat` rule reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::control::layout::VENUES;
use crate::order::ScopeIndex;

/// When each venue last gave a sign of life (a FIX heartbeat, any
/// message): the engine's venue adapters (or its main loop) call
/// [`beat`](VenueHeartbeats::beat), the `venue-heartbeat` rule reads it.
/// Cheap to clone; any thread; one relaxed store per beat.
#[derive(Clone)]
pub struct VenueHeartbeats {
    last_mono_ns: Arc<[AtomicU64]>,
}

impl Default for VenueHeartbeats {
    fn default() -> Self {
        VenueHeartbeats {
            last_mono_ns: (0..VENUES).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl std::fmt::Debug for VenueHeartbeats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VenueHeartbeats").finish_non_exhaustive()
    }
}

impl VenueHeartbeats {
    /// Venue `venue` (scope index) is alive now.
    #[inline]
    pub fn beat(&self, venue: ScopeIndex) {
        self.beat_at(venue, crate::clock::mono_ns());
    }

    /// Venue `venue` was alive at `mono_ns` (`CLOCK_MONOTONIC`).
    pub fn beat_at(&self, venue: ScopeIndex, mono_ns: u64) {
        if let Some(w) = self.last_mono_ns.get(venue as usize) {
            w.fetch_max(mono_ns.max(1), Ordering::Relaxed);
        }
    }

    /// The last beat of `venue`, `None` if it never beat.
    pub fn last(&self, venue: ScopeIndex) -> Option<u64> {
        let t = self
            .last_mono_ns
            .get(venue as usize)?
            .load(Ordering::Relaxed);
        (t != 0).then_some(t)
    }

    /// Every venue that has beaten: (index, last beat).
    pub fn all(&self) -> Vec<(ScopeIndex, u64)> {
        (0..self.last_mono_ns.len())
            .filter_map(|i| self.last(i as ScopeIndex).map(|t| (i as ScopeIndex, t)))
            .collect()
    }
}
