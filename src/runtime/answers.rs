//! Answers back to the strategy that sent the order: every refusal on the
//! gateway's re-check, every venue reject, ack, fill, cancel, cancel reject,
//! duplicate-id or unknown-venue drop, ambiguous send and `CancelUnknown`.
//!
//! They are routed from the registry's event sink: every change the
//! registry applies (from the gateway thread, or from the drain thread for
//! `CancelUnknown`) and every refusal the gateway hands it passes through
//! [`AnswerSink::record`] under the registry's lock, in the order the
//! registry applied them. That lock makes the sink the single producer of
//! each strategy's answer ring (an `rtrb` SPSC ring; the strategy's
//! [`StrategyHandle`](super::StrategyHandle) is the consumer).
//!
//! # Invariants
//! * The sink never blocks: a full answer ring drops the answer and counts
//!   it in the strategy's `lost` counter, which its handle reports
//!   ([`AnswersLost`]); the registry (and `StrategyHandle::order`) still
//!   has the order's state.
//! * A strategy's route is taken into the table under the registry's lock
//!   at the next event after it was registered; nothing routed before that
//!   can be for its orders (it had no handle to send them with).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::control::layout::STRATEGIES;
use crate::order::{OrderEvent, OrderId, OrderState, Price, Qty, ScopeIndex};
use crate::registry::{EventSink, RecordedEvent, Refusal};
use crate::venue::{RejectReason, VenueError};

/// One answer about one of a strategy's orders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The venue accepted the order: it is working.
    Accepted {
        /// The order.
        id: OrderId,
    },
    /// An execution.
    Filled {
        /// The order.
        id: OrderId,
        /// Quantity executed now.
        qty: Qty,
        /// At this price.
        price: Price,
        /// True when the order is now completely filled.
        complete: bool,
    },
    /// Cancelled: by the strategy's cancel or replace, the drain, a mass
    /// cancel, or the venue on its own (cancel-on-disconnect).
    Canceled {
        /// The order.
        id: OrderId,
    },
    /// The venue refused the new order, or it could not be written at all
    /// (`reason` [`RejectReason::NotSent`], `not_written` says why).
    Rejected {
        /// The order.
        id: OrderId,
        /// The venue's reason.
        reason: RejectReason,
        /// For an order that was never written: the session's error.
        not_written: Option<VenueError>,
    },
    /// The gateway refused the order before any write: the switch tripped
    /// between the strategy's gate check and the write (the gateway's
    /// re-check, the no-escape rule), or the id was a duplicate, or the
    /// venue unknown.
    Refused {
        /// The order.
        id: OrderId,
        /// Why.
        why: Refusal,
    },
    /// The gateway refused a cancel (or the cancel half of a replace): the
    /// order is not open, not this strategy's, or the session could not
    /// write the cancel.
    CancelRefused {
        /// The order.
        id: OrderId,
        /// Why.
        why: Refusal,
    },
    /// The venue refused a cancel (usually: a fill crossed it).
    CancelRejected {
        /// The order.
        id: OrderId,
    },
    /// The write failed part-way: the venue may be working the order. It
    /// stays `SendUnknown`; a kill cancels it by id or reports it.
    SendUnknown {
        /// The order.
        id: OrderId,
    },
    /// The drain's deadline passed with no answer to its cancel: the order
    /// is `CancelUnknown` (may still be live at the venue; reconcile).
    CancelUnknown {
        /// The order.
        id: OrderId,
    },
}

impl Answer {
    /// The order the answer is about.
    pub fn id(&self) -> OrderId {
        match *self {
            Answer::Accepted { id }
            | Answer::Filled { id, .. }
            | Answer::Canceled { id }
            | Answer::Rejected { id, .. }
            | Answer::Refused { id, .. }
            | Answer::CancelRefused { id, .. }
            | Answer::CancelRejected { id }
            | Answer::SendUnknown { id }
            | Answer::CancelUnknown { id } => id,
        }
    }
}

/// Answers were dropped because the strategy's answer ring was full: the
/// strategy fell behind reading them. The registry still holds every
/// order's state (`StrategyHandle::order`, `open_orders`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{lost} answer(s) dropped: the answer ring was full (read answers more often, or give the runtime a larger answer_ring); the registry still has every order's state")]
pub struct AnswersLost {
    /// Answers dropped since the last time this was reported.
    pub lost: u64,
}

/// One strategy's end of its answer ring, on the producing side.
pub(crate) struct Route {
    pub(crate) tx: rtrb::Producer<Answer>,
    pub(crate) lost: Arc<AtomicU64>,
}

/// Routes registered by `Runtime::strategy`, waiting to be taken in by the
/// sink (which owns the producers).
#[derive(Default)]
pub(crate) struct RouteTable {
    pending: Mutex<Vec<(ScopeIndex, Route)>>,
    any_pending: AtomicBool,
}

impl RouteTable {
    pub(crate) fn add(&self, strategy: ScopeIndex, route: Route) {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        p.push((strategy, route));
        self.any_pending.store(true, Ordering::Release);
    }
}

/// The registry's sink: the engine's own sink (the journal) first, then
/// the answer routing.
pub(crate) struct AnswerSink {
    inner: Box<dyn EventSink>,
    table: Arc<RouteTable>,
    routes: Vec<Option<Route>>,
    /// A fill waiting for the state event that says whether it completed
    /// the order (the registry records the two back to back).
    pending_fill: Option<(ScopeIndex, Answer)>,
}

impl AnswerSink {
    pub(crate) fn new(inner: Box<dyn EventSink>, table: Arc<RouteTable>) -> AnswerSink {
        AnswerSink {
            inner,
            table,
            routes: (0..STRATEGIES).map(|_| None).collect(),
            pending_fill: None,
        }
    }

    fn take_new_routes(&mut self) {
        // A plain load first: this runs for every event, and a new route
        // is rare (a swap is a locked instruction each time).
        if !self.table.any_pending.load(Ordering::Acquire)
            || !self.table.any_pending.swap(false, Ordering::AcqRel)
        {
            return;
        }
        let mut p = self.table.pending.lock().unwrap_or_else(|p| p.into_inner());
        for (strategy, route) in p.drain(..) {
            if let Some(slot) = self.routes.get_mut(strategy as usize) {
                *slot = Some(route);
            }
        }
    }

    fn route(&mut self, strategy: ScopeIndex, answer: Answer) {
        let Some(slot) = self.routes.get_mut(strategy as usize) else {
            return;
        };
        let Some(route) = slot.as_mut() else {
            return;
        };
        if route.tx.push(answer).is_err() {
            if route.tx.is_abandoned() {
                // The handle is gone: nobody will read this strategy's answers.
                *slot = None;
            } else {
                route.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The answer an event means for the strategy tagged on it, if any.
fn answer_for(event: &RecordedEvent) -> Option<(ScopeIndex, Answer)> {
    Some(match *event {
        RecordedEvent::Order {
            id,
            tags,
            event,
            state,
            ..
        } => {
            let answer = match event {
                OrderEvent::Acked => Answer::Accepted { id },
                OrderEvent::Canceled => Answer::Canceled { id },
                OrderEvent::CancelRejected { .. } => Answer::CancelRejected { id },
                OrderEvent::SendAmbiguous => Answer::SendUnknown { id },
                OrderEvent::CancelTimeout if state == OrderState::CancelUnknown => {
                    Answer::CancelUnknown { id }
                }
                // Fills come with their quantities (below); rejects with
                // their reason (below); cancels sent need no answer.
                _ => return None,
            };
            (tags.strategy, answer)
        }
        RecordedEvent::Fill {
            id,
            tags,
            qty,
            price,
            ..
        } => (
            tags.strategy,
            Answer::Filled {
                id,
                qty,
                price,
                complete: false,
            },
        ),
        RecordedEvent::VenueRejected { id, tags, reason } => (
            tags.strategy,
            Answer::Rejected {
                id,
                reason,
                not_written: None,
            },
        ),
        RecordedEvent::SendFailed { id, tags, error } => (
            tags.strategy,
            Answer::Rejected {
                id,
                reason: RejectReason::NotSent,
                not_written: Some(error),
            },
        ),
        RecordedEvent::Refused { id, tags, why } => (
            tags.strategy,
            match why {
                Refusal::Recheck(_)
                | Refusal::DuplicateId
                | Refusal::UnknownVenue
                | Refusal::Fenced { .. } => Answer::Refused { id, why },
                Refusal::NotOpen | Refusal::NotYours | Refusal::CancelNotWritten(_) => {
                    Answer::CancelRefused { id, why }
                }
            },
        ),
        RecordedEvent::NewOrder(_)
        | RecordedEvent::Recovered(_)
        | RecordedEvent::MassCancelSent { .. } => return None,
    })
}

impl EventSink for AnswerSink {
    fn flush(&mut self) {
        self.inner.flush();
    }

    fn record(&mut self, event: &RecordedEvent) {
        self.inner.record(event);
        self.take_new_routes();
        // A fill is routed with the state event that follows it (which
        // says whether it completed the order), so the strategy gets one
        // answer per fill. If no state event follows (a fill the order's
        // state could not take), it goes out with the next event.
        let pending = self.pending_fill.take();
        if let (
            Some((strategy, Answer::Filled { id, qty, price, .. })),
            RecordedEvent::Order {
                id: of,
                event: OrderEvent::Fill { complete },
                ..
            },
        ) = (pending, event)
        {
            if id == *of {
                let filled = Answer::Filled {
                    id,
                    qty,
                    price,
                    complete: *complete,
                };
                self.route(strategy, filled);
                return;
            }
        }
        if let Some((strategy, answer)) = pending {
            self.route(strategy, answer);
        }
        match (event, answer_for(event)) {
            (RecordedEvent::Fill { .. }, Some(fill)) => self.pending_fill = Some(fill),
            (_, Some((strategy, answer))) => self.route(strategy, answer),
            (_, None) => {}
        }
    }
}
