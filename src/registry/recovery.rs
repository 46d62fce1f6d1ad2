//! Orders an earlier run left open: adopted into the registry at start-up
//! in state [`OrderState::Recovered`], which the drain includes, so a
//! restarted engine cancels them (or reports them `CancelUnknown` by id)
//! before any new order is written.
//!
//! The engine rebuilds the earlier run's open orders from its journal and
//! calls [`Registry::adopt_recovered`] before it starts the gateway; the
//! drain's start-up recovery ([`crate::drain`]) cancels them and then calls
//! [`Registry::finish_recovery`]; until then the gateway takes no new order
//! from its ring.

use std::sync::atomic::Ordering;

use super::{OrderRecord, RecordedEvent, Registry, RegistryError, NOT_OPEN};
use crate::clock::mono_ns;
use crate::journal::OrderEntry;
use crate::order::{OrderId, OrderState, Price, Qty, ScopeTags, Side};

/// An order an earlier run left open, as its journal knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecoveredOrder {
    /// Id.
    pub id: OrderId,
    /// Scope tags.
    pub tags: ScopeTags,
    /// Side.
    pub side: Side,
    /// Limit price.
    pub price: Price,
    /// Ordered quantity.
    pub qty: Qty,
    /// Quantity filled so far.
    pub filled: Qty,
}

impl From<&OrderEntry> for RecoveredOrder {
    fn from(e: &OrderEntry) -> RecoveredOrder {
        RecoveredOrder {
            id: e.id,
            tags: e.tags,
            side: e.side,
            price: e.price,
            qty: e.qty,
            filled: e.filled,
        }
    }
}

impl Registry {
    /// Adopts an earlier run's open orders (from its journal, including
    /// those it left `CancelUnknown`: they too may still be working) in
    /// state `Recovered`, and holds new orders at the gateway until the
    /// drain's start-up recovery is over. Returns how many were adopted;
    /// refuses (adopting nothing) an id already registered.
    pub fn adopt_recovered(
        &self,
        orders: impl IntoIterator<Item = RecoveredOrder>,
    ) -> Result<usize, RegistryError> {
        let orders: Vec<RecoveredOrder> = orders.into_iter().collect();
        let mut g = self.lock();
        if let Some(o) = orders.iter().find(|o| g.slot_of.contains_key(&o.id)) {
            return Err(RegistryError::DuplicateId(o.id));
        }
        let now = mono_ns();
        for o in &orders {
            let rec = OrderRecord {
                id: o.id,
                tags: o.tags,
                side: o.side,
                price: o.price,
                qty: o.qty,
                filled: o.filled,
                state: OrderState::Recovered,
                fills: 0,
                registered_mono_ns: now,
            };
            let slot = g.orders.len() as u32;
            g.orders.push(rec);
            g.open_pos.push(NOT_OPEN);
            g.slot_of.insert(o.id, slot);
            g.add_open(slot);
            g.sink.record(&RecordedEvent::Recovered(rec));
        }
        if !orders.is_empty() {
            self.recovery_pending.store(true, Ordering::Release);
        }
        Ok(orders.len())
    }

    /// True while adopted orders wait for the drain's start-up recovery:
    /// the gateway writes no new order meanwhile.
    #[inline]
    pub fn recovery_pending(&self) -> bool {
        self.recovery_pending.load(Ordering::Acquire)
    }

    /// The drain dealt with every recovered order (cancelled, or reported
    /// `CancelUnknown` by id): new orders may be written.
    pub fn finish_recovery(&self) {
        self.recovery_pending.store(false, Ordering::Release);
    }

    /// The orders still in state `Recovered`.
    pub fn recovered_open(&self) -> Vec<OrderRecord> {
        self.open_orders(|o| o.state == OrderState::Recovered)
    }
}
