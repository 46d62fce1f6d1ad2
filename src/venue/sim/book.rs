//! A price-time-priority limit order book for one instrument.
//!
//! Each side is a `BTreeMap` from price to a level; a level is a `BTreeMap`
//! from arrival sequence to the resting order, so the first entry of the
//! best level is the oldest order at the best price (time priority), and a
//! cancel anywhere in the book is `O(log n)`. Trades happen at the resting
//! order's price. Prices and quantities are the crate's fixed-point integers.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use super::exchange::SessionId;
use crate::order::{OrderId, ScopeIndex, Side};

/// Who owns a resting or incoming order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// An order of one of the exchange's sessions (ours).
    Ours {
        /// The session that sent it (ids are unique per session only).
        session: SessionId,
        /// Its id.
        id: OrderId,
        /// Account tag, for the venue's positions.
        account: ScopeIndex,
    },
    /// Another participant (synthetic flow).
    Other(u64),
}

#[derive(Clone, Copy, Debug)]
struct Resting {
    owner: Owner,
    qty: i64,
}

/// One execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trade {
    /// Owner of the resting order.
    pub resting: Owner,
    /// Quantity left on the resting order after the trade.
    pub resting_leaves: i64,
    /// Owner of the incoming order.
    pub aggressor: Owner,
    /// Quantity left on the incoming order after the trade.
    pub aggressor_leaves: i64,
    /// Executed quantity.
    pub qty: i64,
    /// Execution price (the resting order's).
    pub price: i64,
}

type Level = BTreeMap<u64, Resting>;

/// Where a resting order sits.
#[derive(Clone, Copy, Debug)]
struct Slot {
    side: Side,
    price: i64,
    seq: u64,
}

/// The book; see the module docs.
#[derive(Debug, Default)]
pub struct Book {
    bids: BTreeMap<i64, Level>,
    asks: BTreeMap<i64, Level>,
    ours: FxHashMap<(SessionId, OrderId), Slot>,
    others: FxHashMap<u64, Slot>,
    next_seq: u64,
}

impl Book {
    /// An empty book.
    pub fn new() -> Book {
        Book::default()
    }

    /// Best bid price.
    pub fn best_bid(&self) -> Option<i64> {
        self.bids.keys().next_back().copied()
    }

    /// Best ask price.
    pub fn best_ask(&self) -> Option<i64> {
        self.asks.keys().next().copied()
    }

    /// Session orders resting in this book.
    pub fn our_orders(&self) -> impl Iterator<Item = (SessionId, OrderId)> + '_ {
        self.ours.keys().copied()
    }

    /// Number of resting orders of other participants.
    pub fn other_count(&self) -> usize {
        self.others.len()
    }

    /// Matches an incoming limit order against the opposite side, appending
    /// trades to `trades`; rests what is left. Returns the quantity rested.
    pub fn submit(
        &mut self,
        owner: Owner,
        side: Side,
        price: i64,
        qty: i64,
        trades: &mut Vec<Trade>,
    ) -> i64 {
        let mut left = qty;
        while left > 0 {
            let best = match side {
                Side::Buy => self.asks.first_key_value().map(|(p, _)| *p),
                Side::Sell => self.bids.last_key_value().map(|(p, _)| *p),
            };
            let Some(best) = best else { break };
            let crosses = match side {
                Side::Buy => best <= price,
                Side::Sell => best >= price,
            };
            if !crosses {
                break;
            }
            let opposite = match side {
                Side::Buy => &mut self.asks,
                Side::Sell => &mut self.bids,
            };
            let Some(level) = opposite.get_mut(&best) else {
                break;
            };
            let Some(mut first) = level.first_entry() else {
                opposite.remove(&best);
                continue;
            };
            let resting = first.get_mut();
            let q = resting.qty.min(left);
            resting.qty -= q;
            left -= q;
            let trade = Trade {
                resting: resting.owner,
                resting_leaves: resting.qty,
                aggressor: owner,
                aggressor_leaves: left,
                qty: q,
                price: best,
            };
            if resting.qty == 0 {
                let r = first.remove();
                match r.owner {
                    Owner::Ours { session, id, .. } => {
                        self.ours.remove(&(session, id));
                    }
                    Owner::Other(p) => {
                        self.others.remove(&p);
                    }
                }
                if level.is_empty() {
                    opposite.remove(&best);
                }
            }
            trades.push(trade);
        }
        if left > 0 {
            let seq = self.next_seq;
            self.next_seq += 1;
            let book_side = match side {
                Side::Buy => &mut self.bids,
                Side::Sell => &mut self.asks,
            };
            book_side
                .entry(price)
                .or_default()
                .insert(seq, Resting { owner, qty: left });
            let slot = Slot { side, price, seq };
            match owner {
                Owner::Ours { session, id, .. } => {
                    self.ours.insert((session, id), slot);
                }
                Owner::Other(p) => {
                    self.others.insert(p, slot);
                }
            }
        }
        left
    }

    fn remove_slot(&mut self, slot: Slot) -> Option<i64> {
        let side = match slot.side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        let level = side.get_mut(&slot.price)?;
        let r = level.remove(&slot.seq)?;
        if level.is_empty() {
            side.remove(&slot.price);
        }
        Some(r.qty)
    }

    /// Cancels a session's order; returns the quantity that was resting,
    /// or `None` when it is not in the book (filled, cancelled, never seen).
    pub fn cancel_ours(&mut self, session: SessionId, id: OrderId) -> Option<i64> {
        let slot = self.ours.remove(&(session, id))?;
        self.remove_slot(slot)
    }

    /// Cancels another participant's order; false when already gone.
    pub fn cancel_other(&mut self, participant_order: u64) -> bool {
        match self.others.remove(&participant_order) {
            Some(slot) => self.remove_slot(slot).is_some(),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(id: u64) -> Owner {
        Owner::Ours {
            session: 0,
            id: OrderId(id),
            account: 0,
        }
    }

    #[test]
    fn price_then_time_priority() {
        let mut b = Book::new();
        let mut t = Vec::new();
        b.submit(Owner::Other(1), Side::Sell, 101, 5, &mut t);
        b.submit(ours(1), Side::Sell, 100, 3, &mut t);
        b.submit(Owner::Other(2), Side::Sell, 100, 4, &mut t);
        assert!(t.is_empty());
        assert_eq!(b.best_ask(), Some(100));
        // A buy for 9 at 101: ours first (best price, earliest), then other 2
        // at 100, then 2 of other 1 at 101.
        let rested = b.submit(Owner::Other(3), Side::Buy, 101, 9, &mut t);
        assert_eq!(rested, 0);
        let got: Vec<(Owner, i64, i64, i64)> = t
            .iter()
            .map(|x| (x.resting, x.qty, x.price, x.resting_leaves))
            .collect();
        assert_eq!(
            got,
            vec![
                (ours(1), 3, 100, 0),
                (Owner::Other(2), 4, 100, 0),
                (Owner::Other(1), 2, 101, 3)
            ]
        );
        assert_eq!(t[2].aggressor_leaves, 0);
        assert_eq!(b.best_ask(), Some(101));
        assert_eq!(b.cancel_ours(0, OrderId(1)), None, "filled: gone");
    }

    #[test]
    fn partial_fill_rests_the_remainder_and_cancel_removes_it() {
        let mut b = Book::new();
        let mut t = Vec::new();
        b.submit(Owner::Other(1), Side::Buy, 99, 2, &mut t);
        let rested = b.submit(ours(7), Side::Sell, 99, 5, &mut t);
        assert_eq!(rested, 3);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].aggressor_leaves, 3);
        assert_eq!(b.best_bid(), None);
        assert_eq!(b.best_ask(), Some(99));
        assert_eq!(b.cancel_ours(0, OrderId(7)), Some(3));
        assert_eq!(b.best_ask(), None);
        assert!(b.our_orders().next().is_none());
        assert!(!b.cancel_other(1), "other 1 was filled");
    }
}
