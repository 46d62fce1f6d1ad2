//! The two rings into the gateway and their producer ends: strategies'
//! [`OrderSender`] (many producers, crossbeam `ArrayQueue`) and the drain's
//! [`CancelSender`] (one producer, `rtrb`), plus what the drain receives
//! from the gateway ([`DrainLink`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam::queue::ArrayQueue;

use super::CancelRequest;
use crate::backoff::Backoff;
use crate::control::ControlBlock;
use crate::gate::{Gate, Rejection, Verdict};
use crate::order::{OrderId, OrderIntent, ScopeIndex};
use crate::registry::Registry;
use crate::venue::NewOrder;

/// Why [`OrderSender::submit`] (or `cancel`, `replace`) did not enqueue a
/// request. Nothing was enqueued in any case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The gate refused it (the switch is tripped for this order).
    #[error("order refused by the kill switch: {0:?}")]
    Refused(Rejection),
    /// The ring is full: back-pressure; retry later (nothing was enqueued).
    #[error("gateway order ring is full: the gateway is behind; retry or slow down")]
    RingFull,
    /// A pre-trade limit refused it ([`crate::limits`]).
    #[error("order refused by a pre-trade limit: {0}")]
    Limit(crate::limits::LimitBreach),
}

/// Why a replace was not enqueued. Nothing was enqueued in any case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplaceError {
    /// The gate refused the replacement, or the ring is full.
    #[error(transparent)]
    Submit(#[from] SubmitError),
    /// The order is not open (filled, cancelled, rejected, unknown) or was
    /// never registered: nothing to replace, and no new order is sent in
    /// its place.
    #[error("order {0} is not open: nothing to replace")]
    NotOpen(OrderId),
    /// The order belongs to another strategy.
    #[error("order {0} belongs to another strategy")]
    NotYours(OrderId),
}

/// What a strategy asks the gateway for, through its ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StrategyRequest {
    /// A new order (gate-checked on the strategy's side, re-checked by the
    /// gateway's admit step).
    New(NewOrder),
    /// Cancel one of the strategy's orders (always allowed: it reduces risk).
    Cancel {
        /// The order.
        id: OrderId,
        /// The strategy that asks (a strategy cancels only its own orders).
        strategy: ScopeIndex,
    },
    /// Cancel `old` and send `new` in its place: `new` goes through the
    /// admit step like any new order, and only if it is admitted is `old`
    /// cancelled (a refused replace leaves the old order as it was).
    Replace {
        /// The order replaced.
        old: OrderId,
        /// Its replacement (a new id).
        new: NewOrder,
    },
    /// Ask every venue session for its positions (the planned shutdown's
    /// reconciliation); answers go to the gateway's position reports.
    RequestPositions,
    /// Log out of every venue session (the planned shutdown's disconnect).
    LogoutAll,
    /// Hand every venue session over to a designated backup
    /// ([`crate::venue::Venue::hand_over`]) and give the lease back: the
    /// rolling restart's failover. Needs a lease. Acted on only if the
    /// gateway takes `request` before its asker withdraws it
    /// ([`super::handover`]).
    HandOver {
        /// The request's id in the hand-over request word.
        request: u64,
    },
}

/// What strategies hold to send orders; cheap to clone. With the
/// [`Runtime`](crate::runtime::Runtime), a strategy holds a
/// [`StrategyHandle`](crate::runtime::StrategyHandle) instead (this plus its
/// answers); an `OrderSender` alone gets no answers back. Any thread.
#[derive(Clone)]
pub struct OrderSender {
    pub(crate) ring: Arc<ArrayQueue<StrategyRequest>>,
    pub(crate) gate: Gate,
    pub(crate) next_id: Arc<AtomicU64>,
}

impl OrderSender {
    /// Checks `intent` with the gate, gives it an id and enqueues it for the
    /// gateway. Never blocks: a full ring returns [`SubmitError::RingFull`].
    #[inline]
    pub fn submit(&self, intent: &OrderIntent) -> Result<OrderId, SubmitError> {
        if let Verdict::Reject(r) = self.gate.check(intent) {
            return Err(SubmitError::Refused(r));
        }
        if self.ring.is_full() {
            return Err(SubmitError::RingFull);
        }
        let id = OrderId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let order = NewOrder {
            id,
            tags: intent.tags,
            side: intent.side,
            price: intent.price,
            qty: intent.qty,
        };
        // Another producer may have filled the ring since the check.
        self.ring
            .push(StrategyRequest::New(order))
            .map(|()| id)
            .map_err(|_| SubmitError::RingFull)
    }

    /// Asks the gateway to cancel order `id` of strategy `strategy` (the
    /// strategy tag it was sent with). Not gate-checked: a cancel only
    /// reduces risk, so it goes out whatever the switch says.
    pub fn cancel(&self, id: OrderId, strategy: ScopeIndex) -> Result<(), SubmitError> {
        self.ring
            .push(StrategyRequest::Cancel { id, strategy })
            .map_err(|_| SubmitError::RingFull)
    }

    /// Asks the gateway for every venue's positions (see
    /// [`super::PositionReports`]).
    pub(crate) fn request_positions(&self) -> Result<(), SubmitError> {
        self.ring
            .push(StrategyRequest::RequestPositions)
            .map_err(|_| SubmitError::RingFull)
    }

    /// Asks the gateway to hand every session over and release its lease.
    pub(crate) fn hand_over(&self, request: u64) -> Result<(), SubmitError> {
        self.ring
            .push(StrategyRequest::HandOver { request })
            .map_err(|_| SubmitError::RingFull)
    }

    /// Asks the gateway to log out of every venue session.
    pub(crate) fn logout_all(&self) -> Result<(), SubmitError> {
        self.ring
            .push(StrategyRequest::LogoutAll)
            .map_err(|_| SubmitError::RingFull)
    }

    /// Asks the gateway to replace order `old` with `intent` (a new id,
    /// returned). The replacement is a new order on the wire: gate-checked
    /// here and re-checked by the gateway's admit step like any other, so
    /// a replace never gets past a tripped switch; the old order is
    /// cancelled only once the new one is admitted.
    pub fn replace(&self, old: OrderId, intent: &OrderIntent) -> Result<OrderId, SubmitError> {
        if let Verdict::Reject(r) = self.gate.check(intent) {
            return Err(SubmitError::Refused(r));
        }
        let id = OrderId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let new = NewOrder {
            id,
            tags: intent.tags,
            side: intent.side,
            price: intent.price,
            qty: intent.qty,
        };
        self.ring
            .push(StrategyRequest::Replace { old, new })
            .map(|()| id)
            .map_err(|_| SubmitError::RingFull)
    }

    /// The gate this sender checks with.
    pub fn gate(&self) -> &Gate {
        &self.gate
    }
}

/// The drain's end of its cancel ring: an `rtrb` single-producer ring
/// (chosen by `benches/ring.rs`), so the type system allows exactly one
/// drain. `#[must_use]`: dropping it leaves nobody able to cancel through
/// the gateway. Held by the drain thread only.
#[must_use = "the drain needs this to send cancels"]
pub struct CancelSender {
    pub(super) ring: rtrb::Producer<CancelRequest>,
}

impl CancelSender {
    /// Enqueues a request; `Err` gives it back when the ring is full.
    #[inline]
    pub fn try_push(&mut self, req: CancelRequest) -> Result<(), CancelRequest> {
        self.ring
            .push(req)
            .map_err(|rtrb::PushError::Full(back)| back)
    }

    /// Enqueues a request, spinning with back-off while the ring is full, up
    /// to `deadline`; `Err` gives it back only if the deadline passed.
    pub fn push_until(
        &mut self,
        mut req: CancelRequest,
        deadline: Instant,
        backoff: &mut Backoff,
    ) -> Result<(), CancelRequest> {
        loop {
            match self.try_push(req) {
                Ok(()) => return Ok(()),
                Err(back) => {
                    if Instant::now() >= deadline {
                        return Err(back);
                    }
                    req = back;
                    backoff.snooze();
                }
            }
        }
    }
}

/// One venue session as the drain needs to know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VenueInfo {
    /// Scope index (the `venue` tag).
    pub index: ScopeIndex,
    /// Name.
    pub name: String,
    /// Whether it offers mass cancel.
    pub mass_cancel: bool,
}

/// Everything the drain needs from the gateway, and the gateway's block:
/// taken once from [`GatewayHandle::take_drain_link`](super::GatewayHandle::take_drain_link)
/// and given whole to [`Drain::spawn`](crate::drain::Drain::spawn), so a
/// drain can only wait on the acknowledgement of the gateway whose cancel
/// ring and registry it uses. Held by the thread that starts the drain,
/// then by the drain thread.
#[must_use = "the drain needs this to cancel anything"]
pub struct DrainLink {
    /// The block whose gateway made this link.
    pub(crate) block: Arc<ControlBlock>,
    /// The cancel ring.
    pub(crate) cancels: CancelSender,
    /// The registry the gateway writes.
    pub(crate) registry: Arc<Registry>,
    /// The venue sessions.
    pub(crate) venues: Vec<VenueInfo>,
    /// Threads that write to venues themselves (the runtime's send
    /// guards): the drain also waits for them before it snapshots.
    pub(crate) senders: Option<Arc<crate::senders::SenderSet>>,
}

impl DrainLink {
    /// The venue sessions the gateway holds, as the drain knows them.
    pub fn venues(&self) -> &[VenueInfo] {
        &self.venues
    }
}
