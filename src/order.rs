//! Order value types shared by the gate, the registry, the drain and the journal.
//!
//! Money is never a float: prices and quantities are fixed-point integers with
//! [`PRICE_SCALE`] and [`QTY_SCALE`] units per whole currency unit / lot, so
//! positions add up exactly and a journal replays to the same numbers.
//!
//! Every order carries its [`ScopeTags`] (venue, strategy, instrument, account)
//! so that a scoped kill — "any or all orders, of any trader, desk, client or
//! algorithm, on any or all venues" (MiFID II RTS 6 Art. 12) — can be decided
//! for it without a lookup.

use std::fmt;

/// Fixed-point units per 1.0 of price (8 decimal places).
pub const PRICE_SCALE: i64 = 100_000_000;
/// Fixed-point units per 1.0 of quantity (8 decimal places).
pub const QTY_SCALE: i64 = 100_000_000;

/// An order id, unique within one engine run and across restarts (the engine
/// seeds it from the journal's last id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct OrderId(pub u64);

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Side of an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Side {
    /// Buy: a fill adds to the position.
    Buy = 0,
    /// Sell: a fill subtracts from the position.
    Sell = 1,
}

impl Side {
    /// Sign of a fill of this side on the position: +1 for buy, -1 for sell.
    #[inline]
    pub fn sign(self) -> i64 {
        match self {
            Side::Buy => 1,
            Side::Sell => -1,
        }
    }

    /// The side that reduces a position of the given sign (`None` when flat).
    pub fn reducing(position: Qty) -> Option<Side> {
        match position.0.signum() {
            1 => Some(Side::Sell),
            -1 => Some(Side::Buy),
            _ => None,
        }
    }

    /// Decodes the on-disk byte; `None` for an unknown value.
    pub fn from_u8(v: u8) -> Option<Side> {
        match v {
            0 => Some(Side::Buy),
            1 => Some(Side::Sell),
            _ => None,
        }
    }
}

/// Price in units of `1 / PRICE_SCALE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Price(pub i64);

impl Price {
    /// A price from whole currency units (for examples and tests).
    pub const fn from_units(units: i64) -> Price {
        Price(units * PRICE_SCALE)
    }
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fixed(f, self.0, PRICE_SCALE)
    }
}

/// Quantity (or signed position) in units of `1 / QTY_SCALE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Qty(pub i64);

impl Qty {
    /// Zero.
    pub const ZERO: Qty = Qty(0);

    /// A quantity of whole lots (for examples and tests).
    pub const fn from_lots(lots: i64) -> Qty {
        Qty(lots * QTY_SCALE)
    }

    /// Absolute value.
    pub fn abs(self) -> Qty {
        Qty(self.0.abs())
    }
}

impl fmt::Display for Qty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fixed(f, self.0, QTY_SCALE)
    }
}

fn fixed(f: &mut fmt::Formatter<'_>, v: i64, scale: i64) -> fmt::Result {
    let sign = if v < 0 { "-" } else { "" };
    let a = v.unsigned_abs();
    let s = scale as u64;
    let frac = a % s;
    if frac == 0 {
        write!(f, "{sign}{}", a / s)
    } else {
        let digits = format!("{frac:08}");
        write!(f, "{sign}{}.{}", a / s, digits.trim_end_matches('0'))
    }
}

/// Index of a name (venue, strategy, instrument or account) in the control
/// block's name tables; see [`crate::control::ScopeKind`].
pub type ScopeIndex = u16;

/// The four scope tags every order carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ScopeTags {
    /// Trading venue.
    pub venue: ScopeIndex,
    /// Strategy (the "algorithm" of RTS 6).
    pub strategy: ScopeIndex,
    /// Instrument.
    pub instrument: ScopeIndex,
    /// Account: trader, desk or client.
    pub account: ScopeIndex,
}

/// What a strategy asks to send; the gate decides on it before anything else
/// happens. `position` is the caller's current position in this instrument on
/// this venue, which REDUCE_ONLY needs to tell a reducing order from a new risk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderIntent {
    /// Scope tags (venue, strategy, instrument, account).
    pub tags: ScopeTags,
    /// Buy or sell.
    pub side: Side,
    /// Quantity, positive.
    pub qty: Qty,
    /// Limit price.
    pub price: Price,
    /// Current signed position of the account in this instrument and venue.
    pub position: Qty,
}

impl OrderIntent {
    /// True when a full fill of this order moves the position towards zero
    /// without crossing it: the only orders REDUCE_ONLY lets through.
    #[inline]
    pub fn reduces_position(&self) -> bool {
        let p = self.position.0;
        match self.side {
            Side::Sell => p > 0 && self.qty.0 > 0 && self.qty.0 <= p,
            Side::Buy => p < 0 && self.qty.0 > 0 && self.qty.0 <= -p,
        }
    }
}

/// Life-cycle state of an order, from our side of the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
#[repr(u8)]
pub enum OrderState {
    /// Written to the venue, not yet acknowledged.
    PendingNew = 0,
    /// Acknowledged and resting.
    Live = 1,
    /// Resting with part of its quantity filled.
    PartiallyFilled = 2,
    /// Cancel sent, no answer yet.
    PendingCancel = 3,
    /// Cancelled by the venue (terminal).
    Canceled = 4,
    /// Completely filled (terminal).
    Filled = 5,
    /// Rejected by the venue (terminal).
    Rejected = 6,
    /// Cancel sent, no answer by the deadline: the order may still be live at
    /// the venue. Visible, never silently treated as cancelled; late answers
    /// still move it to a terminal state.
    CancelUnknown = 7,
    /// Open in the journal of an earlier run of the engine (a restart after
    /// a crash): it may still be working at the venue. The drain cancels it
    /// (or reports it `CancelUnknown`) before any new order is sent.
    Recovered = 8,
    /// The write of the new order failed part-way
    /// ([`crate::venue::VenueError::Ambiguous`]): the venue may have it. An
    /// ambiguous send is never a reject; the drain cancels it by id or
    /// reports it.
    SendUnknown = 9,
}

impl OrderState {
    /// Canceled, Filled or Rejected: nothing more can happen to the order.
    #[inline]
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            OrderState::Canceled | OrderState::Filled | OrderState::Rejected
        )
    }

    /// May be working at the venue and is the drain's business (not
    /// terminal, not already reported unknown).
    #[inline]
    pub const fn is_open(self) -> bool {
        matches!(
            self,
            OrderState::PendingNew
                | OrderState::Live
                | OrderState::PartiallyFilled
                | OrderState::PendingCancel
                | OrderState::Recovered
                | OrderState::SendUnknown
        )
    }

    /// Decodes the on-disk byte.
    pub fn from_u8(v: u8) -> Option<OrderState> {
        use OrderState::*;
        Some(match v {
            0 => PendingNew,
            1 => Live,
            2 => PartiallyFilled,
            3 => PendingCancel,
            4 => Canceled,
            5 => Filled,
            6 => Rejected,
            7 => CancelUnknown,
            8 => Recovered,
            9 => SendUnknown,
            _ => return None,
        })
    }
}

/// Something that happens to an order; input of [`transition`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OrderEvent {
    /// The venue acknowledged the new order.
    Acked,
    /// A fill; `complete` when it fills the remaining quantity.
    Fill {
        /// True when nothing remains open after this fill.
        complete: bool,
    },
    /// We sent a cancel.
    CancelSent,
    /// The venue confirmed the cancel (or cancelled on its own, e.g. on disconnect).
    Canceled,
    /// The venue refused the cancel (too late: usually a fill is on its way).
    CancelRejected {
        /// True when part of the order has been filled.
        partially_filled: bool,
    },
    /// The venue rejected the new order.
    Rejected,
    /// The cancel deadline passed without an answer ("force cancel local").
    CancelTimeout,
    /// The write of the new order failed after bytes may have left: the
    /// venue may or may not have it.
    SendAmbiguous,
}

/// An event that cannot happen in the given state. It is reported, never
/// applied: a venue that sends it has a bug or we lost a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("illegal order transition: {event:?} in state {state:?}")]
pub struct IllegalTransition {
    /// State before.
    pub state: OrderState,
    /// The event.
    pub event: OrderEvent,
}

/// The order state machine. Returns the next state or refuses the edge.
pub fn transition(state: OrderState, event: OrderEvent) -> Result<OrderState, IllegalTransition> {
    use OrderEvent as E;
    use OrderState as S;
    let next = match (state, event) {
        (S::PendingNew, E::Acked) => S::Live,
        (S::PendingNew | S::Live | S::PartiallyFilled, E::Fill { complete: false }) => {
            S::PartiallyFilled
        }
        (
            S::PendingNew | S::Live | S::PartiallyFilled | S::PendingCancel | S::CancelUnknown,
            E::Fill { complete: true },
        ) => S::Filled,
        (S::PendingNew | S::Live | S::PartiallyFilled, E::CancelSent) => S::PendingCancel,
        (
            S::PendingNew | S::Live | S::PartiallyFilled | S::PendingCancel | S::CancelUnknown,
            E::Canceled,
        ) => S::Canceled,
        (S::PendingNew | S::PendingCancel | S::CancelUnknown, E::Rejected) => S::Rejected,
        (S::PendingNew, E::SendAmbiguous) => S::SendUnknown,
        // An order the venue may or may not have (recovered from an earlier
        // run, or an ambiguous send): any answer from the venue settles it,
        // and the drain may cancel it.
        (S::Recovered | S::SendUnknown, E::Acked) => S::Live,
        (S::Recovered | S::SendUnknown, E::Fill { complete: false }) => S::PartiallyFilled,
        (S::Recovered | S::SendUnknown, E::Fill { complete: true }) => S::Filled,
        (S::Recovered | S::SendUnknown, E::CancelSent) => S::PendingCancel,
        (S::Recovered | S::SendUnknown, E::Canceled) => S::Canceled,
        (S::Recovered | S::SendUnknown, E::Rejected) => S::Rejected,
        // An ack overtaken by our cancel: still waiting for the cancel's answer.
        (S::PendingCancel, E::Acked) => S::PendingCancel,
        (S::CancelUnknown, E::Acked) => S::CancelUnknown,
        // A partial fill racing the cancel is applied; the cancel is still pending.
        (S::PendingCancel, E::Fill { complete: false }) => S::PendingCancel,
        (S::CancelUnknown, E::Fill { complete: false }) => S::CancelUnknown,
        (S::PendingCancel | S::CancelUnknown, E::CancelRejected { partially_filled }) => {
            if partially_filled {
                S::PartiallyFilled
            } else {
                S::Live
            }
        }
        // A re-sent cancel keeps an unknown order unknown until answered.
        (S::PendingCancel, E::CancelSent) => S::PendingCancel,
        (S::CancelUnknown, E::CancelSent) => S::CancelUnknown,
        (S::PendingCancel, E::CancelTimeout) => S::CancelUnknown,
        // Another deadline without an answer (a restarted engine's drain of
        // an order an earlier run already reported unknown): still unknown.
        (S::CancelUnknown, E::CancelTimeout) => S::CancelUnknown,
        _ => return Err(IllegalTransition { state, event }),
    };
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(side: Side, qty: i64, position: i64) -> OrderIntent {
        OrderIntent {
            tags: ScopeTags::default(),
            side,
            qty: Qty::from_lots(qty),
            price: Price::from_units(100),
            position: Qty::from_lots(position),
        }
    }

    #[test]
    fn reducing_orders_are_recognised() {
        assert!(intent(Side::Sell, 5, 10).reduces_position());
        assert!(intent(Side::Sell, 10, 10).reduces_position());
        assert!(
            !intent(Side::Sell, 11, 10).reduces_position(),
            "crosses zero"
        );
        assert!(!intent(Side::Buy, 1, 10).reduces_position());
        assert!(intent(Side::Buy, 3, -3).reduces_position());
        assert!(
            !intent(Side::Buy, 1, 0).reduces_position(),
            "flat: any order adds risk"
        );
        assert!(
            !intent(Side::Sell, 0, 10).reduces_position(),
            "zero qty is not an order"
        );
    }

    const ALL_STATES: [OrderState; 10] = [
        OrderState::PendingNew,
        OrderState::Live,
        OrderState::PartiallyFilled,
        OrderState::PendingCancel,
        OrderState::Canceled,
        OrderState::Filled,
        OrderState::Rejected,
        OrderState::CancelUnknown,
        OrderState::Recovered,
        OrderState::SendUnknown,
    ];
    const ALL_EVENTS: [OrderEvent; 10] = [
        OrderEvent::Acked,
        OrderEvent::Fill { complete: false },
        OrderEvent::Fill { complete: true },
        OrderEvent::CancelSent,
        OrderEvent::Canceled,
        OrderEvent::CancelRejected {
            partially_filled: false,
        },
        OrderEvent::CancelRejected {
            partially_filled: true,
        },
        OrderEvent::Rejected,
        OrderEvent::CancelTimeout,
        OrderEvent::SendAmbiguous,
    ];

    /// The legal edges, written out independently of `transition`'s match.
    fn legal(s: OrderState, e: OrderEvent) -> Option<OrderState> {
        use OrderEvent as E;
        use OrderState as S;
        let table: &[(S, E, S)] = &[
            (S::PendingNew, E::Acked, S::Live),
            (
                S::PendingNew,
                E::Fill { complete: false },
                S::PartiallyFilled,
            ),
            (S::PendingNew, E::Fill { complete: true }, S::Filled),
            (S::PendingNew, E::CancelSent, S::PendingCancel),
            (S::PendingNew, E::Canceled, S::Canceled),
            (S::PendingNew, E::Rejected, S::Rejected),
            (S::Live, E::Fill { complete: false }, S::PartiallyFilled),
            (S::Live, E::Fill { complete: true }, S::Filled),
            (S::Live, E::CancelSent, S::PendingCancel),
            (S::Live, E::Canceled, S::Canceled),
            (
                S::PartiallyFilled,
                E::Fill { complete: false },
                S::PartiallyFilled,
            ),
            (S::PartiallyFilled, E::Fill { complete: true }, S::Filled),
            (S::PartiallyFilled, E::CancelSent, S::PendingCancel),
            (S::PartiallyFilled, E::Canceled, S::Canceled),
            (S::PendingCancel, E::Acked, S::PendingCancel),
            (
                S::PendingCancel,
                E::Fill { complete: false },
                S::PendingCancel,
            ),
            (S::PendingCancel, E::Fill { complete: true }, S::Filled),
            (S::PendingCancel, E::CancelSent, S::PendingCancel),
            (S::PendingCancel, E::Canceled, S::Canceled),
            (
                S::PendingCancel,
                E::CancelRejected {
                    partially_filled: false,
                },
                S::Live,
            ),
            (
                S::PendingCancel,
                E::CancelRejected {
                    partially_filled: true,
                },
                S::PartiallyFilled,
            ),
            (S::PendingCancel, E::Rejected, S::Rejected),
            (S::PendingCancel, E::CancelTimeout, S::CancelUnknown),
            (S::CancelUnknown, E::Acked, S::CancelUnknown),
            (
                S::CancelUnknown,
                E::Fill { complete: false },
                S::CancelUnknown,
            ),
            (S::CancelUnknown, E::Fill { complete: true }, S::Filled),
            (S::CancelUnknown, E::CancelSent, S::CancelUnknown),
            (S::CancelUnknown, E::Canceled, S::Canceled),
            (
                S::CancelUnknown,
                E::CancelRejected {
                    partially_filled: false,
                },
                S::Live,
            ),
            (
                S::CancelUnknown,
                E::CancelRejected {
                    partially_filled: true,
                },
                S::PartiallyFilled,
            ),
            (S::CancelUnknown, E::Rejected, S::Rejected),
            (S::CancelUnknown, E::CancelTimeout, S::CancelUnknown),
            (S::PendingNew, E::SendAmbiguous, S::SendUnknown),
            (S::Recovered, E::Acked, S::Live),
            (
                S::Recovered,
                E::Fill { complete: false },
                S::PartiallyFilled,
            ),
            (S::Recovered, E::Fill { complete: true }, S::Filled),
            (S::Recovered, E::CancelSent, S::PendingCancel),
            (S::Recovered, E::Canceled, S::Canceled),
            (S::Recovered, E::Rejected, S::Rejected),
            (S::SendUnknown, E::Acked, S::Live),
            (
                S::SendUnknown,
                E::Fill { complete: false },
                S::PartiallyFilled,
            ),
            (S::SendUnknown, E::Fill { complete: true }, S::Filled),
            (S::SendUnknown, E::CancelSent, S::PendingCancel),
            (S::SendUnknown, E::Canceled, S::Canceled),
            (S::SendUnknown, E::Rejected, S::Rejected),
        ];
        table
            .iter()
            .find(|(a, b, _)| *a == s && *b == e)
            .map(|t| t.2)
    }

    #[test]
    fn every_edge_is_legal_or_refused_as_the_table_says() {
        let mut illegal = 0;
        for s in ALL_STATES {
            for e in ALL_EVENTS {
                match (transition(s, e), legal(s, e)) {
                    (Ok(got), Some(want)) => assert_eq!(got, want, "{s:?} + {e:?}"),
                    (Err(err), None) => {
                        assert_eq!(err, IllegalTransition { state: s, event: e });
                        illegal += 1;
                    }
                    (got, want) => {
                        panic!("{s:?} + {e:?}: transition gave {got:?}, table says {want:?}")
                    }
                }
            }
        }
        // 10 states x 10 events = 100 edges, 45 legal: each illegal edge refused.
        assert_eq!(illegal, 100 - 45);
    }

    #[test]
    fn terminal_states_accept_nothing() {
        for s in [
            OrderState::Canceled,
            OrderState::Filled,
            OrderState::Rejected,
        ] {
            assert!(s.is_terminal() && !s.is_open());
            for e in ALL_EVENTS {
                assert!(transition(s, e).is_err(), "{s:?} + {e:?} must be refused");
            }
        }
        for (i, s) in ALL_STATES.iter().enumerate() {
            assert_eq!(OrderState::from_u8(i as u8), Some(*s));
        }
        assert_eq!(OrderState::from_u8(10), None);
        // The drain's business: every state that may be working at a venue.
        for s in [OrderState::Recovered, OrderState::SendUnknown] {
            assert!(s.is_open() && !s.is_terminal(), "{s:?}");
        }
    }

    #[test]
    fn fixed_point_prints_exactly() {
        assert_eq!(Price(6_500_012_345_678).to_string(), "65000.12345678");
        assert_eq!(Qty(-150_000_000).to_string(), "-1.5");
        assert_eq!(Qty::from_lots(3).to_string(), "3");
        assert_eq!(Side::reducing(Qty(-1)), Some(Side::Buy));
        assert_eq!(Side::reducing(Qty(0)), None);
    }
}
