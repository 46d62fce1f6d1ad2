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

    #[test]
    fn fixed_point_prints_exactly() {
        assert_eq!(Price(6_500_012_345_678).to_string(), "65000.12345678");
        assert_eq!(Qty(-150_000_000).to_string(), "-1.5");
        assert_eq!(Qty::from_lots(3).to_string(), "3");
        assert_eq!(Side::reducing(Qty(-1)), Some(Side::Buy));
        assert_eq!(Side::reducing(Qty(0)), None);
    }
}
