//! What the registry hands to its [`EventSink`] (a journal): one
//! [`RecordedEvent`] per change, in the order the registry applied them.

use super::OrderRecord;
use crate::order::{OrderEvent, OrderId, OrderState, Price, Qty, ScopeIndex, Side};
use crate::venue::MassCancelScope;

/// An order event as handed to an [`EventSink`] (what a journal records).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordedEvent {
    /// Registered, about to be written to its venue.
    NewOrder(OrderRecord),
    /// Adopted from an earlier run's journal in state `Recovered` (already
    /// in the journal: a sink records its later events, not a new order).
    Recovered(OrderRecord),
    /// The write failed; the order is rejected locally.
    SendFailed {
        /// Order.
        id: OrderId,
    },
    /// An order answer applied to the registry (ack, fill, cancel, reject,
    /// cancel reject) or a cancel we wrote (`OrderEvent::CancelSent`), or the
    /// drain's deadline (`OrderEvent::CancelTimeout`).
    Order {
        /// Order.
        id: OrderId,
        /// What happened.
        event: OrderEvent,
        /// State after it.
        state: OrderState,
    },
    /// A fill, with the position it leaves (also reported as `Order`).
    Fill {
        /// Order.
        id: OrderId,
        /// Side of the order.
        side: Side,
        /// Executed quantity.
        qty: Qty,
        /// Execution price.
        price: Price,
        /// Position of (venue, instrument, account) after the fill.
        position: Qty,
    },
    /// A mass cancel was written to a venue.
    MassCancelSent {
        /// Venue.
        venue: ScopeIndex,
        /// What it covers.
        scope: MassCancelScope,
        /// Our open orders it covers.
        orders: u32,
    },
}

/// Receives every order event the registry applies. The default methods do
/// nothing; the journal implements it. Called with the registry lock held:
/// keep it short (an append to a memory map), never block.
pub trait EventSink: Send {
    /// One event, in the order the registry applied it.
    fn record(&mut self, event: &RecordedEvent) {
        let _ = event;
    }
}

/// An [`EventSink`] that records nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopSink;

impl EventSink for NoopSink {}
