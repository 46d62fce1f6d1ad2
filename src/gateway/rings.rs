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

/// Why [`OrderSender::submit`] did not enqueue an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The gate refused it (the switch is tripped for this order).
    #[error("order refused by the kill switch: {0:?}")]
    Refused(Rejection),
    /// The ring is full: back-pressure; retry later (nothing was enqueued).
    #[error("gateway order ring is full: the gateway is behind; retry or slow down")]
    RingFull,
}

/// What strategies hold to send orders; cheap to clone, one per thread.
#[derive(Clone)]
pub struct OrderSender {
    pub(super) ring: Arc<ArrayQueue<NewOrder>>,
    pub(super) gate: Gate,
    pub(super) next_id: Arc<AtomicU64>,
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
            .push(order)
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
/// the gateway.
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
}

impl DrainLink {
    /// The venue sessions the gateway holds, as the drain knows them.
    pub fn venues(&self) -> &[VenueInfo] {
        &self.venues
    }
}
