//! The hot-path gate: may this order go out?
//!
//! [`Gate::check`] is what a strategy (or the gateway) calls before every new
//! order. When nothing is tripped it costs one `Acquire` load of the state
//! word and one compare: no allocation, no lock, no syscall. Only when a mode
//! or a scope is in force does it take the cold path, which reads the scope
//! levels for the order's four tags; and only when a reduced position limit
//! is in force (the state word's `LIMITED` bit, set by a planned shutdown's
//! "reduce position limits") does the cold path also check the order's
//! resulting position against the limit.
//!
//! The gate alone cannot close the race between "checked" and "written to
//! the venue"; the gateway re-checks the state word before every send and
//! publishes the generation it obeys (see `DESIGN.md`, the no-escape protocol).

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::control::state::{StateWord, GATE_MASK};
use crate::control::{ControlBlock, Mode, ScopeKind};
use crate::order::{OrderIntent, Qty, ScopeTags};

/// Why the gate said no.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The mode in force (global or from a scope) forbids the order.
    Mode {
        /// The mode that applied.
        mode: Mode,
        /// The scope it came from, `None` for the global mode.
        scope: Option<ScopeKind>,
        /// State-word generation the decision was made on.
        generation: u64,
    },
    /// The order would take the position beyond the reduced position limit
    /// in force (a planned shutdown's "reduce position limits").
    PositionLimit {
        /// The limit, absolute position.
        limit: crate::order::Qty,
        /// State-word generation the decision was made on.
        generation: u64,
    },
}

/// The gate's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "an unchecked verdict lets orders through a tripped switch"]
pub enum Verdict {
    /// Send it.
    Allow,
    /// Do not send it.
    Reject(Rejection),
}

impl Verdict {
    /// True for `Allow`.
    #[inline]
    pub fn is_allow(self) -> bool {
        matches!(self, Verdict::Allow)
    }
}

/// The read-only handle on a control block's state word: it can only say
/// whether an order may go out. `Clone + Send + Sync`; any thread, one per
/// strategy thread is fine (all of them read the same cache line). It
/// cannot trip, reset or reach the block's other fields: a strategy thread
/// holds this (or a [`crate::runtime::StrategyHandle`], which checks with
/// one) and nothing more.
#[derive(Clone)]
pub struct Gate {
    state: NonNull<AtomicU64>,
    block: Arc<ControlBlock>,
}

// SAFETY: `state` points into the mapping kept alive by `block` (an Arc), and
// is only ever used for atomic loads, which are safe from any thread.
unsafe impl Send for Gate {}
// SAFETY: as above; `&Gate` only performs atomic loads.
unsafe impl Sync for Gate {}

impl Gate {
    /// A gate on `block`'s state word.
    pub fn new(block: Arc<ControlBlock>) -> Gate {
        let state = NonNull::from(block.state_atomic());
        Gate { state, block }
    }

    /// The shared state word itself (crate-private: read only, by the
    /// senders' protocol).
    #[inline]
    pub(crate) fn state_word(&self) -> &AtomicU64 {
        // SAFETY: valid for the Gate's lifetime (the Arc keeps the mapping)
        // and only ever accessed atomically.
        unsafe { self.state.as_ref() }
    }

    /// The state word now (Acquire).
    #[inline]
    pub fn state(&self) -> StateWord {
        // SAFETY: see the Send/Sync justification: valid for the Gate's
        // lifetime and accessed atomically.
        StateWord(unsafe { self.state.as_ref() }.load(Ordering::Acquire))
    }

    /// Decides on one order. The common case is one load and one compare.
    #[inline]
    pub fn check(&self, intent: &OrderIntent) -> Verdict {
        self.check_word(self.state(), intent)
    }

    /// Decides on one order against a state word the caller loaded (the
    /// gateway's admit step decides on the load it made after its
    /// acknowledgement). The scope levels are read now.
    #[inline]
    pub(crate) fn check_word(&self, word: StateWord, intent: &OrderIntent) -> Verdict {
        if word.0 & GATE_MASK == 0 {
            return Verdict::Allow;
        }
        self.check_tripped(word, intent)
    }

    /// The mode in force for an order with these tags under `word`: the
    /// global mode, raised by its scopes' levels when the word is scoped
    /// (and which scope raised it).
    fn effective_mode(&self, word: StateWord, t: ScopeTags) -> (Mode, Option<ScopeKind>) {
        let mut mode = word.mode();
        let mut from_scope = None;
        if word.scoped() {
            for (kind, idx) in [
                (ScopeKind::Venue, t.venue),
                (ScopeKind::Strategy, t.strategy),
                (ScopeKind::Instrument, t.instrument),
                (ScopeKind::Account, t.account),
            ] {
                // Out-of-range tags read as Kill: fail closed.
                let m = self.block.scope_level(kind, idx);
                if m > mode {
                    mode = m;
                    from_scope = Some(kind);
                }
            }
        }
        (mode, from_scope)
    }

    /// The position the gate decides an order with these tags on, under
    /// `word`, as the gateway and the senders read it from the registry:
    /// none while nothing is in force; under REDUCE_ONLY for this order
    /// (globally or by one of its scopes) the position net of the open
    /// reducing orders, so several together never flip it (a scan of the
    /// open orders, paid only then); otherwise the plain position (the
    /// reduced position limit).
    pub(crate) fn position_to_decide(
        &self,
        word: StateWord,
        t: ScopeTags,
        registry: &crate::registry::Registry,
    ) -> Qty {
        if word.0 & GATE_MASK == 0 {
            return Qty::ZERO;
        }
        if self.effective_mode(word, t).0 == Mode::ReduceOnly {
            registry.position_net_of_open_reducing(t.venue, t.instrument, t.account)
        } else {
            registry.account_position(t.venue, t.instrument, t.account)
        }
    }

    #[cold]
    #[inline(never)]
    fn check_tripped(&self, word: StateWord, intent: &OrderIntent) -> Verdict {
        let (mode, from_scope) = self.effective_mode(word, intent.tags);
        let allowed = match mode {
            Mode::Normal => true,
            Mode::ReduceOnly => intent.reduces_position(),
            Mode::HaltNew | Mode::Kill => false,
        };
        if allowed && word.limited() {
            return self.check_limit(word, intent);
        }
        if allowed {
            Verdict::Allow
        } else {
            Verdict::Reject(Rejection::Mode {
                mode,
                scope: from_scope,
                generation: word.generation(),
            })
        }
    }
}

impl Gate {
    /// The reduced position limit: an order that reduces the position
    /// passes; any other passes only if the position after a full fill
    /// stays within the limit.
    #[cold]
    fn check_limit(&self, word: StateWord, intent: &OrderIntent) -> Verdict {
        let raw = self
            .block
            .layout()
            .telemetry
            .engine
            .position_limit
            .load(Ordering::Acquire) as i64;
        let limit = crate::order::Qty(raw.max(0));
        if intent.reduces_position() {
            return Verdict::Allow;
        }
        let signed = match intent.side {
            crate::order::Side::Buy => intent.qty.0,
            crate::order::Side::Sell => -intent.qty.0,
        };
        let after = intent.position.0.saturating_add(signed);
        if after.unsigned_abs() <= limit.0.unsigned_abs() {
            Verdict::Allow
        } else {
            Verdict::Reject(Rejection::PositionLimit {
                limit,
                generation: word.generation(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{Source, TripRequest};
    use crate::order::{Price, Qty, ScopeTags, Side};

    fn block() -> (tempfile::TempDir, Arc<ControlBlock>) {
        let dir = tempfile::tempdir().unwrap();
        let b = ControlBlock::create(dir.path(), "gate").unwrap();
        (dir, Arc::new(b))
    }

    fn order(tags: ScopeTags, side: Side, qty: i64, position: i64) -> OrderIntent {
        OrderIntent {
            tags,
            side,
            qty: Qty::from_lots(qty),
            price: Price::from_units(10),
            position: Qty::from_lots(position),
        }
    }

    #[test]
    fn clear_switch_allows_and_kill_rejects() {
        let (_d, b) = block();
        let gate = Gate::new(b.clone());
        let o = order(ScopeTags::default(), Side::Buy, 1, 0);
        assert_eq!(gate.check(&o), Verdict::Allow);
        b.trip_global(Mode::Kill, Source::Api, "test");
        match gate.check(&o) {
            Verdict::Reject(Rejection::Mode {
                mode,
                scope,
                generation,
            }) => {
                assert_eq!(mode, Mode::Kill);
                assert_eq!(scope, None);
                assert_eq!(generation, 1);
            }
            v => panic!("expected reject, got {v:?}"),
        }
    }

    #[test]
    fn reduce_only_lets_reducing_orders_through() {
        let (_d, b) = block();
        let gate = Gate::new(b.clone());
        b.trip_global(Mode::ReduceOnly, Source::Api, "wind down");
        assert!(gate
            .check(&order(ScopeTags::default(), Side::Sell, 2, 5))
            .is_allow());
        assert!(!gate
            .check(&order(ScopeTags::default(), Side::Buy, 2, 5))
            .is_allow());
        assert!(!gate
            .check(&order(ScopeTags::default(), Side::Sell, 6, 5))
            .is_allow());
        b.trip_global(Mode::HaltNew, Source::Api, "halt");
        assert!(!gate
            .check(&order(ScopeTags::default(), Side::Sell, 2, 5))
            .is_allow());
    }

    #[test]
    fn reduced_position_limit_refuses_growth_beyond_it_only_while_set() {
        let (_d, b) = block();
        let gate = Gate::new(b.clone());
        let o = order(ScopeTags::default(), Side::Buy, 5, 8);
        assert!(gate.check(&o).is_allow());
        crate::shutdown::words::set_position_limit(&b, Some(Qty::from_lots(10)));
        assert!(matches!(
            gate.check(&o),
            Verdict::Reject(Rejection::PositionLimit { .. })
        ));
        // Up to the limit passes; reducing always passes; a flip beyond the
        // limit does not.
        assert!(gate
            .check(&order(ScopeTags::default(), Side::Buy, 2, 8))
            .is_allow());
        assert!(gate
            .check(&order(ScopeTags::default(), Side::Sell, 8, 8))
            .is_allow());
        assert!(!gate
            .check(&order(ScopeTags::default(), Side::Sell, 19, 8))
            .is_allow());
        // A mode still decides first.
        b.trip_global(Mode::HaltNew, Source::Api, "halt");
        assert!(matches!(
            gate.check(&order(ScopeTags::default(), Side::Buy, 1, 0)),
            Verdict::Reject(Rejection::Mode { .. })
        ));
        crate::shutdown::words::set_position_limit(&b, None);
        assert!(!b.state().limited());
    }

    #[test]
    fn scoped_trip_blocks_only_its_scope() {
        let (_d, b) = block();
        let gate = Gate::new(b.clone());
        let a = b.register_name(ScopeKind::Venue, "SIM-A").unwrap();
        let v2 = b.register_name(ScopeKind::Venue, "SIM-B").unwrap();
        let s = b.register_name(ScopeKind::Strategy, "mm").unwrap();
        b.trip(&TripRequest {
            mode: Mode::Kill,
            scopes: vec![(ScopeKind::Venue, "SIM-B".into())],
            source: Source::Cli,
            reason: "venue B misbehaving".into(),
        })
        .unwrap();
        let on_a = ScopeTags {
            venue: a,
            strategy: s,
            ..Default::default()
        };
        let on_b = ScopeTags {
            venue: v2,
            strategy: s,
            ..Default::default()
        };
        assert!(gate.check(&order(on_a, Side::Buy, 1, 0)).is_allow());
        assert_eq!(
            gate.check(&order(on_b, Side::Buy, 1, 0)),
            Verdict::Reject(Rejection::Mode {
                mode: Mode::Kill,
                scope: Some(ScopeKind::Venue),
                generation: 1
            })
        );
        // A tag outside the table fails closed.
        let bogus = ScopeTags {
            venue: 60_000,
            ..Default::default()
        };
        assert!(!gate.check(&order(bogus, Side::Buy, 1, 0)).is_allow());
    }
}
