//! Position flattening (the runbook's "POSITION FLATTENING STRATEGY"):
//! the book-keeping that decides what to send and never overshoots.
//!
//! * **Conservative**: a limit order at the mid for each position, left
//!   for the conservative wait (5 s by default), the rest cancelled, then
//!   market orders for what remains. The [`Venue`](crate::venue::Venue)
//!   trait has no time-in-force, so the runbook's "IOC at mid" is a limit
//!   at mid that the flattener cancels when the wait ends: the same
//!   exposure, for a few seconds longer than a true IOC.
//! * **Aggressive**: market orders at once. The venue trait has limit
//!   orders only, so a "market" order is a limit priced through the mid
//!   by the collar ([`FlattenConfig::market_collar_bps`], 5 % by default):
//!   it takes whatever liquidity the book has within the collar.
//! * **Escalation** ("Positions Not Flattening"): conservative ->
//!   aggressive -> whatever still remains is reported, by key.
//!
//! # Invariants
//! * For every key, the reducing quantity outstanding (sent, not yet
//!   filled, cancelled or refused) plus any new order never exceeds the
//!   absolute position: a fill of everything outstanding can bring the
//!   position to zero, never past it. The gateway enforces the same
//!   from its side (REDUCE_ONLY counts the open reducing orders; see
//!   [`Registry::position_net_of_open_reducing`](crate::registry::Registry::position_net_of_open_reducing)).
//! * Slippage is measured against the mid each key had when flattening
//!   started: a cost is positive.

use std::time::Duration;

use crate::order::{OrderId, Price, Qty, ScopeIndex, Side, QTY_SCALE};

/// (venue, instrument, account).
pub type PositionKey = (ScopeIndex, ScopeIndex, ScopeIndex);

/// Flattening settings.
#[derive(Clone, Debug)]
pub struct FlattenConfig {
    /// How long the conservative limit-at-mid orders may work (default 5 s).
    pub conservative_wait: Duration,
    /// How long the market orders may work before what remains is
    /// reported (default 5 s).
    pub market_wait: Duration,
    /// How far through the mid a "market" order is priced, basis points
    /// (default 500 = 5 %).
    pub market_collar_bps: u32,
    /// Alert when the flattening's slippage cost exceeds this (price units,
    /// 1/`PRICE_SCALE`); `None` never.
    pub loss_alert: Option<i64>,
}

impl Default for FlattenConfig {
    fn default() -> Self {
        FlattenConfig {
            conservative_wait: Duration::from_secs(5),
            market_wait: Duration::from_secs(5),
            market_collar_bps: 500,
            loss_alert: None,
        }
    }
}

/// Which kind of order the flattener sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum FlattenKind {
    /// Limit at the mid.
    AtMid,
    /// "Market": through the mid by the collar.
    Market,
}

/// An order the flattener wants sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlattenOrder {
    /// The position it reduces.
    pub key: PositionKey,
    /// Reducing side.
    pub side: Side,
    /// Quantity (never more than the position less what is outstanding).
    pub qty: Qty,
    /// Limit price.
    pub price: Price,
    /// At mid or market.
    pub kind: FlattenKind,
}

#[derive(Clone, Debug)]
struct Entry {
    key: PositionKey,
    start: Qty,
    position: Qty,
    mid: Option<Price>,
    outstanding: Qty,
    /// Cost against the start mid, price units (i128 to keep qty×price exact).
    slippage: i128,
    filled: Qty,
}

#[derive(Clone, Copy, Debug)]
struct Sent {
    id: OrderId,
    entry: usize,
    leaves: Qty,
}

/// What one key came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlattenResult {
    /// (venue, instrument, account).
    pub key: PositionKey,
    /// Position when flattening started.
    pub start: Qty,
    /// Position now.
    pub remaining: Qty,
    /// Quantity filled by the flattener.
    pub filled: Qty,
    /// Mid when flattening started (`None`: no market data, no order sent).
    pub mid_at_start: Option<Price>,
    /// Slippage cost against that mid, price units (cost > 0).
    pub slippage: i64,
}

/// The flattener's book: positions, outstanding reducing quantity, fills.
#[derive(Clone, Debug, Default)]
pub struct FlattenBook {
    entries: Vec<Entry>,
    sent: Vec<Sent>,
}

fn reducing_side(position: Qty) -> Side {
    if position.0 > 0 {
        Side::Sell
    } else {
        Side::Buy
    }
}

impl FlattenBook {
    /// A book over the positions to flatten (flat ones are ignored), each
    /// with its mid now (`None`: the key is reported, nothing is sent).
    pub fn new(positions: impl IntoIterator<Item = (PositionKey, Qty, Option<Price>)>) -> Self {
        let entries = positions
            .into_iter()
            .filter(|(_, q, _)| q.0 != 0)
            .map(|(key, position, mid)| Entry {
                key,
                start: position,
                position,
                mid,
                outstanding: Qty::ZERO,
                slippage: 0,
                filled: Qty::ZERO,
            })
            .collect();
        FlattenBook {
            entries,
            sent: Vec::new(),
        }
    }

    /// The orders to send now: for each key with a mid, the absolute
    /// position less what is outstanding (nothing when that is zero).
    pub fn next_orders(&self, kind: FlattenKind, cfg: &FlattenConfig) -> Vec<FlattenOrder> {
        let mut out = Vec::new();
        for e in &self.entries {
            let Some(mid) = e.mid else { continue };
            let qty = Qty(e.position.0.abs().saturating_sub(e.outstanding.0).max(0));
            if qty.0 == 0 {
                continue;
            }
            let side = reducing_side(e.position);
            let collar = (i128::from(mid.0) * i128::from(cfg.market_collar_bps) / 10_000) as i64;
            let price = match (kind, side) {
                (FlattenKind::AtMid, _) => mid,
                (FlattenKind::Market, Side::Sell) => Price((mid.0 - collar).max(1)),
                (FlattenKind::Market, Side::Buy) => Price(mid.0.saturating_add(collar)),
            };
            out.push(FlattenOrder {
                key: e.key,
                side,
                qty,
                price,
                kind,
            });
        }
        out
    }

    fn entry(&self, key: PositionKey) -> Option<usize> {
        self.entries.iter().position(|e| e.key == key)
    }

    /// Records an order sent for `order` (it is outstanding until filled,
    /// cancelled or refused). Returns false (and records nothing) if it
    /// would break the no-overshoot invariant.
    pub fn sent(&mut self, id: OrderId, order: &FlattenOrder) -> bool {
        let Some(i) = self.entry(order.key) else {
            return false;
        };
        let e = &mut self.entries[i];
        if order.side != reducing_side(e.position)
            || e.outstanding.0.saturating_add(order.qty.0) > e.position.0.abs()
        {
            return false;
        }
        e.outstanding = Qty(e.outstanding.0 + order.qty.0);
        self.sent.push(Sent {
            id,
            entry: i,
            leaves: order.qty,
        });
        true
    }

    /// A fill of one of the flattener's orders.
    pub fn filled(&mut self, id: OrderId, qty: Qty, price: Price) {
        let Some(s) = self.sent.iter_mut().find(|s| s.id == id) else {
            return;
        };
        let q = qty.0.min(s.leaves.0).max(0);
        s.leaves = Qty(s.leaves.0 - q);
        let e = &mut self.entries[s.entry];
        e.outstanding = Qty((e.outstanding.0 - q).max(0));
        e.filled = Qty(e.filled.0 + q);
        let sell = e.position.0 > 0;
        e.position = Qty(if sell {
            e.position.0 - q
        } else {
            e.position.0 + q
        });
        if let Some(mid) = e.mid {
            // Selling below the mid, or buying above it, costs.
            let diff = if sell {
                mid.0 - price.0
            } else {
                price.0 - mid.0
            };
            e.slippage += i128::from(diff) * i128::from(q) / i128::from(QTY_SCALE);
        }
    }

    /// One of the flattener's orders ended (cancelled, rejected, refused):
    /// its unfilled rest is no longer outstanding.
    pub fn closed(&mut self, id: OrderId) {
        let Some(pos) = self.sent.iter().position(|s| s.id == id) else {
            return;
        };
        let s = self.sent.swap_remove(pos);
        let e = &mut self.entries[s.entry];
        e.outstanding = Qty((e.outstanding.0 - s.leaves.0).max(0));
    }

    /// Ids of the flattener's orders still outstanding (to cancel at the
    /// end of a wait).
    pub fn outstanding_ids(&self) -> Vec<OrderId> {
        self.sent
            .iter()
            .filter(|s| s.leaves.0 > 0)
            .map(|s| s.id)
            .collect()
    }

    /// True when every key is flat.
    pub fn is_flat(&self) -> bool {
        self.entries.iter().all(|e| e.position.0 == 0)
    }

    /// Total slippage cost so far, price units.
    pub fn slippage(&self) -> i64 {
        self.entries
            .iter()
            .map(|e| e.slippage)
            .sum::<i128>()
            .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    }

    /// Per key, what flattening came to.
    pub fn results(&self) -> Vec<FlattenResult> {
        self.entries
            .iter()
            .map(|e| FlattenResult {
                key: e.key,
                start: e.start,
                remaining: e.position,
                filled: e.filled,
                mid_at_start: e.mid,
                slippage: e.slippage.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order::PRICE_SCALE;

    const K: PositionKey = (0, 1, 0);

    #[test]
    fn never_sends_more_than_the_position_less_what_is_outstanding() {
        let cfg = FlattenConfig::default();
        let mid = Price(100 * PRICE_SCALE);
        let mut b = FlattenBook::new([(K, Qty::from_lots(8), Some(mid))]);
        let o = b.next_orders(FlattenKind::AtMid, &cfg);
        assert_eq!(o.len(), 1);
        assert_eq!(
            (o[0].side, o[0].qty, o[0].price),
            (Side::Sell, Qty::from_lots(8), mid)
        );
        assert!(b.sent(OrderId(1), &o[0]));
        // Everything is outstanding: nothing more, and a second order of
        // any size is refused by the book.
        assert!(b.next_orders(FlattenKind::Market, &cfg).is_empty());
        let extra = FlattenOrder {
            qty: Qty::from_lots(1),
            ..o[0]
        };
        assert!(!b.sent(OrderId(2), &extra));
        // Part fills at 99: 3 lots sold 1.0 below mid = cost 3.0.
        b.filled(OrderId(1), Qty::from_lots(3), Price(99 * PRICE_SCALE));
        assert_eq!(b.slippage(), 3 * PRICE_SCALE);
        assert!(b.next_orders(FlattenKind::Market, &cfg).is_empty());
        // The rest is cancelled: 5 remain, a market order for 5 through the collar.
        b.closed(OrderId(1));
        let m = b.next_orders(FlattenKind::Market, &cfg);
        assert_eq!(m[0].qty, Qty::from_lots(5));
        assert_eq!(m[0].price, Price(95 * PRICE_SCALE));
        assert!(b.sent(OrderId(3), &m[0]));
        b.filled(OrderId(3), Qty::from_lots(5), Price(100 * PRICE_SCALE));
        assert!(b.is_flat());
        assert_eq!(b.results()[0].remaining, Qty::ZERO);
    }

    #[test]
    fn random_fills_and_cancels_never_flip_a_position() {
        let cfg = FlattenConfig::default();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut violations = 0;
        for round in 0..500 {
            let start = (next() % 1000) as i64 - 500;
            if start == 0 {
                continue;
            }
            let mut b = FlattenBook::new([(K, Qty::from_lots(start), Some(Price(PRICE_SCALE)))]);
            let mut id = 0;
            for _ in 0..50 {
                let kind = if round % 2 == 0 {
                    FlattenKind::AtMid
                } else {
                    FlattenKind::Market
                };
                for o in b.next_orders(kind, &cfg) {
                    // Send only part sometimes: several orders outstanding.
                    let part = Qty((o.qty.0 / 2).max(QTY_SCALE));
                    id += 1;
                    let o = FlattenOrder {
                        qty: part.min(o.qty),
                        ..o
                    };
                    assert!(b.sent(OrderId(id), &o));
                }
                for s in b.outstanding_ids() {
                    match next() % 3 {
                        0 => b.filled(
                            s,
                            Qty::from_lots((next() % 50) as i64 + 1),
                            Price(PRICE_SCALE),
                        ),
                        1 => b.closed(s),
                        _ => {}
                    }
                }
                let r = &b.results()[0];
                if r.remaining.0.signum() * start.signum() < 0 {
                    violations += 1;
                }
            }
        }
        assert_eq!(violations, 0);
    }

    #[test]
    fn a_key_without_a_mid_is_reported_not_traded() {
        let b = FlattenBook::new([(K, Qty::from_lots(-4), None), ((0, 2, 0), Qty::ZERO, None)]);
        assert!(b
            .next_orders(FlattenKind::Market, &FlattenConfig::default())
            .is_empty());
        let r = b.results();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].remaining, Qty::from_lots(-4));
    }
}
