//! What the registry hands to its [`EventSink`] (a journal): one
//! [`RecordedEvent`] per change, in the order the registry applied them.

use super::OrderRecord;
use crate::gate::Rejection;
use crate::order::{OrderEvent, OrderId, OrderState, Price, Qty, ScopeIndex, ScopeTags, Side};
use crate::venue::{MassCancelScope, RejectReason, VenueError};

/// An order event as handed to an [`EventSink`] (what a journal records).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordedEvent {
    /// Registered, about to be written to its venue.
    NewOrder(OrderRecord),
    /// Adopted from an earlier run's journal in state `Recovered` (already
    /// in the journal: a sink records its later events, not a new order).
    Recovered(OrderRecord),
    /// The write failed with nothing sent; the order is rejected locally
    /// (an `Order` event with `Rejected` follows).
    SendFailed {
        /// Order.
        id: OrderId,
        /// Its tags.
        tags: ScopeTags,
        /// What the venue session said.
        error: VenueError,
    },
    /// The venue rejected a new order (an `Order` event with `Rejected`
    /// follows).
    VenueRejected {
        /// Order.
        id: OrderId,
        /// Its tags.
        tags: ScopeTags,
        /// Why.
        reason: RejectReason,
    },
    /// The gateway refused a request without writing anything; nothing in
    /// the registry changed.
    Refused {
        /// The order (for a new order: the id it was given).
        id: OrderId,
        /// Tags of the strategy that asked.
        tags: ScopeTags,
        /// Why.
        why: Refusal,
    },
    /// An order answer applied to the registry (ack, fill, cancel, reject,
    /// cancel reject) or a cancel we wrote (`OrderEvent::CancelSent`), or the
    /// drain's deadline (`OrderEvent::CancelTimeout`).
    Order {
        /// Order.
        id: OrderId,
        /// Its tags.
        tags: ScopeTags,
        /// What happened.
        event: OrderEvent,
        /// State after it.
        state: OrderState,
        /// The order's record after it (what a journal writes the event
        /// with: side, price, quantity), so a sink keeps no copy of every
        /// open order of its own.
        order: OrderRecord,
    },
    /// A fill, with the position it leaves (also reported as `Order`).
    Fill {
        /// Order.
        id: OrderId,
        /// Its tags.
        tags: ScopeTags,
        /// Side of the order.
        side: Side,
        /// Executed quantity.
        qty: Qty,
        /// Execution price.
        price: Price,
        /// Position of (venue, instrument, account) after the fill.
        position: Qty,
        /// The order's record with this fill counted (`filled`, `fills`)
        /// but its `state` still the one before the fill: the state event
        /// that follows says where the fill took it. A fill on an order
        /// already terminal (it crossed our cancel) moves the position but
        /// no order state.
        order: OrderRecord,
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

/// Why the gateway refused a request without writing anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The gateway's re-check of the state word refused the new order: the
    /// switch tripped between the strategy's gate check and the write.
    Recheck(Rejection),
    /// A new order reused an id already registered.
    DuplicateId,
    /// A new order named a venue the gateway has no session for.
    UnknownVenue,
    /// A cancel (or the cancel half of a replace) for an order that is not
    /// open: already filled, cancelled, rejected or unknown.
    NotOpen,
    /// A cancel or replace for an order another strategy sent.
    NotYours,
    /// The venue session refused to write a cancel (nothing was sent).
    CancelNotWritten(VenueError),
    /// The gateway no longer holds the active-role lease: a newer epoch
    /// took it (another engine is the active now), or this engine handed
    /// it over ([`crate::runtime::Runtime::hand_over`]). Nothing was
    /// written, and this engine writes nothing more.
    Fenced {
        /// The epoch this engine held.
        epoch: u64,
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

    /// The registry is about to release its lock: every event recorded
    /// since the last flush belongs to one hold of it (a batch of venue
    /// answers, a mass cancel, one order). A sink may buffer events in
    /// [`record`](EventSink::record) and write them here, all at once;
    /// this is still under the registry lock, so the sink's output keeps
    /// the registry's order and nothing outside the registry sees the
    /// change before it is written (a new order is journaled before the
    /// gateway writes it; the drain counts a close only after it).
    fn flush(&mut self) {}
}

/// An [`EventSink`] that records nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopSink;

impl EventSink for NoopSink {}
