//! [`OpenOrders`]: the open orders of a [`super::TradingState`], kept dense
//! and already encoded.
//!
//! A quick checkpoint writes every open order in the snapshot record's
//! 48-byte layout. Walking a `BTreeMap` of 10,000 orders and encoding each
//! one took 78 µs on the development VM, against 50 µs for a plain copy of
//! the same 480 KB: the walk, not the copy, was the cost of the emergency
//! checkpoint. So the set keeps, beside each order, its encoded record in one
//! contiguous array, updated on every event (one 48-byte store); the
//! checkpoint is then a single copy of that array.
//!
//! Orders are found through a hash map from id to slot; removal moves the
//! last order into the freed slot (`swap_remove`), so both arrays stay dense.
//! Iteration order is therefore not the id order: use
//! [`OpenOrders::sorted`] where a listing is shown to a person. Two sets are
//! equal when they hold the same orders, whatever their slots.

use std::fmt;

use std::collections::hash_map::Entry;

use rustc_hash::FxHashMap;

use crate::order::{OrderId, OrderState, Price, Qty};

use super::super::record::{get_side, get_tags, Cursor, DecodeError};
use super::OrderEntry;

/// Bytes of one order in the snapshot record.
pub(crate) const ORDER_LEN: usize = 48;

/// The open orders of a trading state, by id, with their snapshot encoding
/// kept ready (see the module documentation).
#[derive(Clone, Default)]
pub struct OpenOrders {
    slot_of: FxHashMap<OrderId, u32>,
    entries: Vec<OrderEntry>,
    encoded: Vec<[u8; ORDER_LEN]>,
}

impl OpenOrders {
    /// An empty set.
    pub fn new() -> OpenOrders {
        OpenOrders::default()
    }

    /// Number of open orders.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no order is open.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The order with this id, if open.
    pub fn get(&self, id: &OrderId) -> Option<&OrderEntry> {
        self.slot_of.get(id).map(|&i| &self.entries[i as usize])
    }

    /// True when the order is open.
    pub fn contains_key(&self, id: &OrderId) -> bool {
        self.slot_of.contains_key(id)
    }

    /// Adds or replaces the order `entry.id`; returns the order it replaced.
    pub fn insert(&mut self, entry: OrderEntry) -> Option<OrderEntry> {
        match self.slot_of.entry(entry.id) {
            Entry::Occupied(slot) => {
                let i = *slot.get() as usize;
                self.encoded[i] = encode(&entry);
                Some(std::mem::replace(&mut self.entries[i], entry))
            }
            Entry::Vacant(slot) => {
                slot.insert(next_slot(&self.entries));
                self.encoded.push(encode(&entry));
                self.entries.push(entry);
                None
            }
        }
    }

    /// Adds a new order; `Err` (and nothing changed) when the id is open.
    /// One hash of the id: the journal mirror runs this for every new order.
    pub(crate) fn insert_new(&mut self, entry: OrderEntry) -> Result<(), ()> {
        let Entry::Vacant(slot) = self.slot_of.entry(entry.id) else {
            return Err(());
        };
        slot.insert(next_slot(&self.entries));
        self.encoded.push(encode(&entry));
        self.entries.push(entry);
        Ok(())
    }

    /// Changes the open order `id` through `f` and re-encodes it; the order
    /// is removed when `f` leaves it in a terminal state. `None` when the
    /// order is not open, else what `f` returned.
    pub(crate) fn update<R>(
        &mut self,
        id: &OrderId,
        f: impl FnOnce(&mut OrderEntry) -> R,
    ) -> Option<R> {
        let i = *self.slot_of.get(id)? as usize;
        let r = f(&mut self.entries[i]);
        // The map finds the order by this id: `f` changes its state, not it.
        debug_assert_eq!(self.entries[i].id, *id, "an update changed the order's id");
        if self.entries[i].state.is_terminal() {
            self.remove_slot(i);
        } else {
            self.encoded[i] = encode(&self.entries[i]);
        }
        Some(r)
    }

    /// Removes the order `id`; returns it if it was open.
    pub fn remove(&mut self, id: &OrderId) -> Option<OrderEntry> {
        let i = *self.slot_of.get(id)? as usize;
        Some(self.remove_slot(i))
    }

    fn remove_slot(&mut self, i: usize) -> OrderEntry {
        let gone = self.entries.swap_remove(i);
        self.encoded.swap_remove(i);
        self.slot_of.remove(&gone.id);
        if let Some(moved) = self.entries.get(i) {
            self.slot_of.insert(moved.id, i as u32);
        }
        gone
    }

    /// Removes every order.
    pub fn clear(&mut self) {
        self.slot_of.clear();
        self.entries.clear();
        self.encoded.clear();
    }

    /// The open orders, in slot order (not id order).
    pub fn values(&self) -> std::slice::Iter<'_, OrderEntry> {
        self.entries.iter()
    }

    /// The open orders' ids, in slot order.
    pub fn keys(&self) -> impl Iterator<Item = OrderId> + '_ {
        self.entries.iter().map(|o| o.id)
    }

    /// The open orders by ascending id: for listings a person reads.
    pub fn sorted(&self) -> Vec<OrderEntry> {
        let mut v = self.entries.clone();
        v.sort_unstable_by_key(|o| o.id);
        v
    }

    /// The open orders, by value, in slot order.
    pub fn into_values(self) -> Vec<OrderEntry> {
        self.entries
    }

    /// Every open order in the snapshot record's layout, back to back: what
    /// a quick checkpoint copies.
    pub(crate) fn encoded(&self) -> &[u8] {
        self.encoded.as_flattened()
    }

    /// Reads `n` orders in the snapshot layout from `c`.
    pub(crate) fn decode_from(c: &mut Cursor<'_>, n: usize) -> Result<OpenOrders, DecodeError> {
        let mut out = OpenOrders::default();
        out.slot_of.reserve(n);
        out.entries.reserve(n);
        out.encoded.reserve(n);
        for _ in 0..n {
            let id = OrderId(c.u64("order.id")?);
            let tags = get_tags(c)?;
            let side = get_side(c)?;
            let sv = c.u8("order.state")?;
            let state = OrderState::from_u8(sv)
                .ok_or_else(|| c.err("order.state", format!("unknown order state {sv} (0..=9)")))?;
            c.bytes(6, "order.reserved")?;
            let e = OrderEntry {
                id,
                tags,
                side,
                state,
                price: Price(c.i64("order.price")?),
                qty: Qty(c.i64("order.qty")?),
                filled: Qty(c.i64("order.filled")?),
            };
            if out.insert_new(e).is_err() {
                return Err(c.err("order.id", format!("order {id} appears twice")));
            }
        }
        Ok(out)
    }
}

/// The slot the next pushed order takes.
fn next_slot(entries: &[OrderEntry]) -> u32 {
    u32::try_from(entries.len()).expect("over 4 billion open orders")
}

/// One order in the snapshot record's 48-byte layout: id u64, tags 4×u16,
/// side u8, state u8, 6 reserved, price i64, qty i64, filled i64.
fn encode(o: &OrderEntry) -> [u8; ORDER_LEN] {
    let mut b = [0u8; ORDER_LEN];
    b[0..8].copy_from_slice(&o.id.0.to_le_bytes());
    b[8..10].copy_from_slice(&o.tags.venue.to_le_bytes());
    b[10..12].copy_from_slice(&o.tags.strategy.to_le_bytes());
    b[12..14].copy_from_slice(&o.tags.instrument.to_le_bytes());
    b[14..16].copy_from_slice(&o.tags.account.to_le_bytes());
    b[16] = o.side as u8;
    b[17] = o.state as u8;
    b[24..32].copy_from_slice(&o.price.0.to_le_bytes());
    b[32..40].copy_from_slice(&o.qty.0.to_le_bytes());
    b[40..48].copy_from_slice(&o.filled.0.to_le_bytes());
    b
}

/// Same orders, whatever their slots.
impl PartialEq for OpenOrders {
    fn eq(&self, other: &OpenOrders) -> bool {
        self.len() == other.len() && self.values().all(|o| other.get(&o.id) == Some(o))
    }
}

impl Eq for OpenOrders {}

/// Lists the orders by id, so two equal sets print alike.
impl fmt::Debug for OpenOrders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.sorted().into_iter().map(|o| (o.id, o)))
            .finish()
    }
}

impl std::ops::Index<&OrderId> for OpenOrders {
    type Output = OrderEntry;

    /// The open order `id`; panics when it is not open (like a map's index).
    fn index(&self, id: &OrderId) -> &OrderEntry {
        self.get(id)
            .unwrap_or_else(|| panic!("order {id} is not open"))
    }
}

impl<'a> IntoIterator for &'a OpenOrders {
    type Item = &'a OrderEntry;
    type IntoIter = std::slice::Iter<'a, OrderEntry>;

    fn into_iter(self) -> Self::IntoIter {
        self.values()
    }
}

/// Later orders with an id already present replace earlier ones.
impl FromIterator<OrderEntry> for OpenOrders {
    fn from_iter<I: IntoIterator<Item = OrderEntry>>(iter: I) -> OpenOrders {
        let mut out = OpenOrders::default();
        for e in iter {
            out.insert(e);
        }
        out
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for OpenOrders {
    /// A list by ascending id.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.sorted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order::{ScopeTags, Side};

    fn entry(id: u64, state: OrderState) -> OrderEntry {
        OrderEntry {
            id: OrderId(id),
            tags: ScopeTags {
                venue: 1,
                strategy: 2,
                instrument: 3,
                account: 4,
            },
            side: Side::Sell,
            price: Price(100 + id as i64),
            qty: Qty(10),
            filled: Qty(0),
            state,
        }
    }

    /// The set against a BTreeMap model over a random sequence of inserts,
    /// updates and removals: same orders, and the encoded array is exactly
    /// the encoding of the orders in slot order, after every step.
    #[test]
    fn matches_a_map_and_keeps_its_encoding_in_step() {
        let mut set = OpenOrders::new();
        let mut model = std::collections::BTreeMap::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for step in 0..5000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let id = OrderId(x % 300);
            match x % 4 {
                0 | 1 => {
                    let e = entry(id.0, OrderState::Live);
                    assert_eq!(set.insert(e), model.insert(id, e), "step {step}");
                }
                2 => {
                    let r = set.update(&id, |o| {
                        o.filled = Qty(o.filled.0 + 1);
                        if o.filled.0 % 3 == 0 {
                            o.state = OrderState::Filled;
                        }
                        o.filled
                    });
                    let m = model.get_mut(&id).map(|o: &mut OrderEntry| {
                        o.filled = Qty(o.filled.0 + 1);
                        o.filled
                    });
                    assert_eq!(r, m, "step {step}");
                    if m.is_some_and(|f| f.0 % 3 == 0) {
                        model.remove(&id);
                    }
                }
                _ => assert_eq!(set.remove(&id), model.remove(&id), "step {step}"),
            }
            assert_eq!(set.len(), model.len());
            assert!(set.values().all(|o| model.get(&o.id) == Some(o)));
            let want: Vec<u8> = set.values().flat_map(encode).collect();
            assert_eq!(set.encoded(), &want[..], "step {step}");
        }
        assert_eq!(
            set.sorted(),
            model.values().copied().collect::<Vec<_>>(),
            "sorted listing"
        );
    }

    #[test]
    fn equality_ignores_slots() {
        let a: OpenOrders = (1..=5).map(|i| entry(i, OrderState::Live)).collect();
        let b: OpenOrders = (1..=5).rev().map(|i| entry(i, OrderState::Live)).collect();
        assert_eq!(a, b);
        let mut c = b.clone();
        c.update(&OrderId(3), |o| o.filled = Qty(1));
        assert_ne!(a, c);
    }

    #[test]
    fn duplicate_new_order_changes_nothing() {
        let mut a: OpenOrders = (1..=3).map(|i| entry(i, OrderState::Live)).collect();
        let before = a.clone();
        let mut dup = entry(2, OrderState::PendingNew);
        dup.qty = Qty(99);
        assert!(a.insert_new(dup).is_err());
        assert_eq!(a, before);
        assert_eq!(a.encoded(), before.encoded());
    }
}
