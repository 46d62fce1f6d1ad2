//! Venue sessions: the messages the gateway writes to an exchange and the
//! answers it reads back.
//!
//! [`Venue`] is message-shaped on purpose: every call writes one request and
//! returns as soon as it is "on the wire" (`Ok`) or could not be written
//! (`Err`); every answer — acks, fills, cancels, rejects, position reports,
//! market data — comes back later through [`Venue::poll`]. That is how a FIX
//! or binary order-entry session behaves, and it lets the simulated venue
//! move behind a loopback TCP socket without changing the gateway.
//!
//! Only the gateway thread holds a `Venue` (`&mut self` everywhere), so a
//! session never needs a lock.

pub mod sim;

use std::fmt;

use crate::order::{OrderId, Price, Qty, ScopeIndex, ScopeTags, Side};

/// A new limit order as written to a venue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewOrder {
    /// Our id (the venue echoes it, like FIX `ClOrdID`).
    pub id: OrderId,
    /// Scope tags; `tags.venue` picks the session, `tags.instrument` the book.
    pub tags: ScopeTags,
    /// Buy or sell.
    pub side: Side,
    /// Limit price.
    pub price: Price,
    /// Quantity, positive.
    pub qty: Qty,
}

/// Which of our orders a mass cancel covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MassCancelScope {
    /// Every order of this session.
    All,
    /// Every order of this session on one instrument.
    Instrument(ScopeIndex),
}

/// Why a venue rejected a new order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// The venue's own risk or throttle check refused it.
    VenueRisk,
    /// The instrument is not traded here.
    UnknownInstrument,
    /// Quantity or price is zero or negative.
    InvalidOrder,
    /// The id is already in use at the venue.
    DuplicateId,
    /// We could not write it: the session is down (a local reject).
    NotSent,
}

/// Why a venue refused a cancel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelRejectReason {
    /// The venue never saw such an order.
    UnknownOrder,
    /// Too late to cancel: the order is no longer working (it filled, or
    /// was cancelled meanwhile). Usually a fill is on its way or has arrived.
    TooLate,
}

/// One answer from a venue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VenueEvent {
    /// A new order is accepted and working.
    Acked {
        /// Our id.
        id: OrderId,
    },
    /// An execution against one of our orders.
    Fill {
        /// Our id.
        id: OrderId,
        /// Executed quantity (positive).
        qty: Qty,
        /// Execution price.
        price: Price,
        /// Quantity the venue says is still working after this fill.
        leaves: Qty,
    },
    /// The order is cancelled (on our request, a mass cancel, or unsolicited).
    Canceled {
        /// Our id.
        id: OrderId,
    },
    /// The new order was refused.
    Rejected {
        /// Our id.
        id: OrderId,
        /// Why.
        reason: RejectReason,
    },
    /// A cancel was refused (usually: too late, a fill is on its way).
    CancelRejected {
        /// Our id.
        id: OrderId,
        /// Why.
        reason: CancelRejectReason,
    },
    /// One line of a position report (answer to [`Venue::request_positions`]).
    Position {
        /// Instrument.
        instrument: ScopeIndex,
        /// Account.
        account: ScopeIndex,
        /// Signed position the venue holds for us.
        qty: Qty,
    },
    /// End of a position report.
    PositionsEnd,
    /// Top of book of a subscribed instrument.
    TopOfBook {
        /// Instrument.
        instrument: ScopeIndex,
        /// Best bid, if any.
        bid: Option<Price>,
        /// Best ask, if any.
        ask: Option<Price>,
    },
    /// The session went down; nothing more arrives until it is back.
    Disconnected,
    /// The session is back; queued answers follow.
    Reconnected,
}

impl VenueEvent {
    /// The order the event is about, if any.
    pub fn order_id(&self) -> Option<OrderId> {
        match *self {
            VenueEvent::Acked { id }
            | VenueEvent::Fill { id, .. }
            | VenueEvent::Canceled { id }
            | VenueEvent::Rejected { id, .. }
            | VenueEvent::CancelRejected { id, .. } => Some(id),
            _ => None,
        }
    }
}

/// A request could not be written to the venue, or may have been written
/// only in part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VenueError {
    /// The session is down; reconnect, or rely on cancel-on-disconnect.
    /// Nothing was written.
    Disconnected,
    /// We logged out of this session. Nothing was written.
    LoggedOut,
    /// The venue has no such request (e.g. mass cancel); use the single form.
    /// Nothing was written.
    Unsupported(&'static str),
    /// The write failed after some bytes may have left (a socket error in the
    /// middle of a message): the venue may or may not have the request. For a
    /// new order this is an *ambiguous send*, never a reject: the order may be
    /// working, so the drain must cancel it by id or report it.
    Ambiguous,
}

impl fmt::Display for VenueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VenueError::Disconnected => {
                f.write_str("venue session is disconnected: nothing was written; reconnect or check cancel-on-disconnect")
            }
            VenueError::LoggedOut => f.write_str("venue session is logged out: nothing was written"),
            VenueError::Unsupported(what) => {
                write!(f, "the venue does not support {what}: use the single-order form")
            }
            VenueError::Ambiguous => f.write_str(
                "the write failed part-way: the venue may have the request; treat the order as possibly working",
            ),
        }
    }
}

impl std::error::Error for VenueError {}

/// One order-entry session with a venue. See the module docs.
///
/// A minimal adapter implements `name`, `send`, `cancel` and `poll`; the
/// other methods have defaults for venues (or adapters) without them: no
/// mass cancel (the drain then cancels order by order), no position or
/// order-status queries, no market data, and a logout that only stops
/// further requests on the gateway's side.
pub trait Venue: Send {
    /// Name for reports.
    fn name(&self) -> &str;
    /// Writes a new order.
    fn send(&mut self, order: &NewOrder) -> Result<(), VenueError>;
    /// Writes a cancel for one order.
    fn cancel(&mut self, id: OrderId) -> Result<(), VenueError>;
    /// Appends every answer that has arrived to `out`; never blocks.
    fn poll(&mut self, out: &mut Vec<VenueEvent>);
    /// True when [`Venue::mass_cancel`] is available.
    fn supports_mass_cancel(&self) -> bool {
        false
    }
    /// Writes a mass cancel; the venue answers with one `Canceled` per order.
    fn mass_cancel(&mut self, scope: MassCancelScope) -> Result<(), VenueError> {
        let _ = scope;
        Err(VenueError::Unsupported("mass cancel"))
    }
    /// Asks for our positions; answered by `Position` events then `PositionsEnd`.
    fn request_positions(&mut self) -> Result<(), VenueError> {
        Err(VenueError::Unsupported("position requests"))
    }
    /// Asks for the state of one order (reconciliation); answered by the
    /// event that describes its state now (`Acked` for a working order,
    /// `Canceled`, `Rejected`, or `CancelRejected` with
    /// [`CancelRejectReason::UnknownOrder`] for an order the venue does not
    /// know), plus any fills not reported yet.
    fn request_order_status(&mut self, id: OrderId) -> Result<(), VenueError> {
        let _ = id;
        Err(VenueError::Unsupported("order status requests"))
    }
    /// Subscribes to top-of-book of an instrument.
    fn subscribe(&mut self, instrument: ScopeIndex) -> Result<(), VenueError> {
        let _ = instrument;
        Err(VenueError::Unsupported("market data"))
    }
    /// Stops a subscription.
    fn unsubscribe(&mut self, instrument: ScopeIndex) -> Result<(), VenueError> {
        let _ = instrument;
        Err(VenueError::Unsupported("market data"))
    }
    /// Ends the session; later requests fail with `LoggedOut`.
    fn logout(&mut self) -> Result<(), VenueError> {
        Ok(())
    }
    /// Hands the session over to a designated backup of the same firm
    /// identity (a rolling restart's failover): ends it **without**
    /// cancelling, asking the venue to hold the resting orders for the
    /// backup, which adopts them. Later requests fail with `LoggedOut`.
    /// A venue that offers no such takeover says `Unsupported` (and the
    /// failover must not go on: its orders would be cancelled, or orphaned).
    fn hand_over(&mut self) -> Result<(), VenueError> {
        Err(VenueError::Unsupported("hand over to a designated backup"))
    }
    /// True when [`Venue::hand_over`] is implemented (the venue holds the
    /// session's orders for a designated backup). Asked once when the
    /// runtime starts: [`crate::runtime::Runtime::hand_over`] refuses a
    /// failover up front when any session says false, because a hand-over
    /// cannot be taken back once other sessions have handed over. The
    /// default says false, as the default `hand_over` refuses.
    fn offers_hand_over(&self) -> bool {
        false
    }
    /// The gateway has just acknowledged kill-switch `generation` (it is
    /// published; from here on the gateway writes no order the state word
    /// refuses). Called on the gateway thread before any other request of
    /// this session, so an adapter can leave a mark in its own stream: a
    /// session over a socket that queues one (FIX: a TestRequest naming the
    /// generation) lets the venue's log show exactly which orders it
    /// received before the acknowledgement and which after, whatever the
    /// transit time. Must not block; the default does nothing.
    fn kill_acknowledged(&mut self, generation: u64) {
        let _ = generation;
    }
}
