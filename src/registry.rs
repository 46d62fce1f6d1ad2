//! The order registry: every order the gateway wrote (or is about to write)
//! to a venue, its state, and the positions its fills add up to.
//!
//! The gateway [`register`](Registry::register)s an order *before* it writes
//! it; the drain snapshots [`open_orders`](Registry::open_orders) after the
//! gateway acknowledged a kill generation. Venue answers go through
//! [`order::transition`](crate::order::transition): an answer that cannot
//! happen in the order's state is counted and kept for the report, never
//! applied and never a panic, because it came from outside the process.
//!
//! Every change is handed to the registry's [`EventSink`] under the same
//! lock that applies it, so a journal sees order events in exactly the
//! order the registry applied them.
//!
//! Money is fixed-point: positions are [`Qty`] sums of fills, per
//! (venue, instrument) and per (venue, instrument, account).
//!
//! # Invariants
//! * One `Mutex` guards everything; the gateway holds it for one batch of
//!   events or one order, the drain for one snapshot or one status poll.
//!   The lock is never held across a venue call.
//! * An order id is registered at most once; `open` holds exactly the ids
//!   whose state [`is_open`](OrderState::is_open).
//! * A fill is applied to the position whatever the order's state (the venue
//!   is the authority on executions); only its effect on the state is
//!   checked.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::clock::mono_ns;
use crate::order::{
    transition, IllegalTransition, OrderEvent, OrderId, OrderState, Price, Qty, ScopeIndex,
    ScopeTags, Side,
};
use crate::venue::{MassCancelScope, NewOrder, VenueEvent};

/// One order as the registry knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderRecord {
    /// Id.
    pub id: OrderId,
    /// Scope tags (venue, strategy, instrument, account).
    pub tags: ScopeTags,
    /// Side.
    pub side: Side,
    /// Limit price.
    pub price: Price,
    /// Ordered quantity.
    pub qty: Qty,
    /// Quantity filled so far.
    pub filled: Qty,
    /// State.
    pub state: OrderState,
    /// Number of fills applied.
    pub fills: u32,
    /// When it was registered (`CLOCK_MONOTONIC` ns).
    pub registered_mono_ns: u64,
}

/// An order event as handed to an [`EventSink`] (what a journal records).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordedEvent {
    /// Registered, about to be written to its venue.
    NewOrder(OrderRecord),
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

/// What the registry refused or found odd in venue data, for the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anomaly {
    /// An event that the state machine refuses in the order's state.
    Illegal {
        /// Order.
        id: OrderId,
        /// The refused edge.
        edge: IllegalTransition,
    },
    /// An event about an id we never registered.
    UnknownOrder {
        /// The id the venue sent.
        id: OrderId,
    },
    /// A fill of zero or negative quantity (not applied).
    InvalidFill {
        /// Order.
        id: OrderId,
    },
    /// A fill beyond the ordered quantity (applied to the position).
    Overfill {
        /// Order.
        id: OrderId,
    },
}

/// Counters of everything the registry refused or noticed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegistryCounters {
    /// Orders registered.
    pub registered: u64,
    /// Events refused by the state machine.
    pub illegal_transitions: u64,
    /// Events about unknown ids.
    pub unknown_order_events: u64,
    /// Cancel answers for orders already terminal (a normal race, not an error).
    pub stale_cancel_answers: u64,
    /// Fills with a non-positive quantity.
    pub invalid_fills: u64,
    /// Fills beyond the ordered quantity.
    pub overfills: u64,
    /// Fills applied.
    pub fills: u64,
}

/// Why an order could not be registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The id is already in the registry.
    #[error("order id {0} is already registered: order ids must be unique per engine run (seed the generator from the journal)")]
    DuplicateId(OrderId),
}

const MAX_ANOMALIES: usize = 256;

struct Inner {
    orders: HashMap<OrderId, OrderRecord>,
    open: HashSet<OrderId>,
    positions: HashMap<(ScopeIndex, ScopeIndex, ScopeIndex), Qty>,
    counters: RegistryCounters,
    anomalies: Vec<Anomaly>,
    sink: Box<dyn EventSink>,
    closed: Arc<AtomicU64>,
}

/// The registry; share it as `Arc<Registry>` between gateway and drain.
pub struct Registry {
    inner: Mutex<Inner>,
    /// Orders that left the open states, ever: lets the drain poll without
    /// taking the lock until something changed.
    closed: Arc<AtomicU64>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.lock();
        f.debug_struct("Registry")
            .field("orders", &g.orders.len())
            .field("open", &g.open.len())
            .field("counters", &g.counters)
            .finish()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

/// A read-only view of the registry under its lock, for
/// [`Registry::read`].
pub struct RegistryView<'a> {
    inner: &'a Inner,
}

impl RegistryView<'_> {
    /// One order.
    pub fn get(&self, id: OrderId) -> Option<&OrderRecord> {
        self.inner.orders.get(&id)
    }

    /// Number of open orders.
    pub fn open_count(&self) -> usize {
        self.inner.open.len()
    }
}

impl Registry {
    /// An empty registry that records to no sink.
    pub fn new() -> Registry {
        Registry::with_sink(Box::new(NoopSink))
    }

    /// An empty registry that hands every event to `sink`.
    pub fn with_sink(sink: Box<dyn EventSink>) -> Registry {
        let closed = Arc::new(AtomicU64::new(0));
        Registry {
            closed: closed.clone(),
            inner: Mutex::new(Inner {
                orders: HashMap::new(),
                open: HashSet::new(),
                positions: HashMap::new(),
                counters: RegistryCounters::default(),
                anomalies: Vec::new(),
                sink,
                closed,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock must not stop the drain:
        // the data is a set of independent records, still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a new order as `PendingNew`; the gateway calls it before the write.
    pub fn register(&self, order: &NewOrder) -> Result<(), RegistryError> {
        let mut g = self.lock();
        if g.orders.contains_key(&order.id) {
            return Err(RegistryError::DuplicateId(order.id));
        }
        let rec = OrderRecord {
            id: order.id,
            tags: order.tags,
            side: order.side,
            price: order.price,
            qty: order.qty,
            filled: Qty::ZERO,
            state: OrderState::PendingNew,
            fills: 0,
            registered_mono_ns: mono_ns(),
        };
        g.orders.insert(order.id, rec);
        g.open.insert(order.id);
        g.counters.registered += 1;
        g.sink.record(&RecordedEvent::NewOrder(rec));
        Ok(())
    }

    /// The write of a registered order failed: it is rejected locally.
    pub fn send_failed(&self, id: OrderId) {
        let mut g = self.lock();
        g.sink.record(&RecordedEvent::SendFailed { id });
        g.apply_event(id, OrderEvent::Rejected);
    }

    /// Applies venue answers from session `venue` (one lock for the batch).
    pub fn apply_venue_events(&self, events: &[VenueEvent]) {
        let mut g = self.lock();
        for ev in events {
            g.apply_venue_event(ev);
        }
    }

    /// Marks a cancel as written and returns the order's venue. Returns
    /// `None` (and changes nothing) when the order is unknown or already
    /// terminal, so the gateway does not send a pointless cancel.
    pub fn cancel_sent(&self, id: OrderId) -> Option<ScopeIndex> {
        let mut g = self.lock();
        let venue = match g.orders.get(&id) {
            Some(r) if r.state.is_open() || r.state == OrderState::CancelUnknown => r.tags.venue,
            _ => return None,
        };
        g.apply_event(id, OrderEvent::CancelSent);
        Some(venue)
    }

    /// Marks every open order a mass cancel covers as cancel-sent; returns
    /// how many.
    pub fn mass_cancel_sent(&self, venue: ScopeIndex, scope: MassCancelScope) -> u32 {
        let mut g = self.lock();
        let ids: Vec<OrderId> = g
            .open
            .iter()
            .filter(|id| {
                g.orders.get(id).is_some_and(|r| {
                    r.tags.venue == venue
                        && match scope {
                            MassCancelScope::All => true,
                            MassCancelScope::Instrument(i) => r.tags.instrument == i,
                        }
                })
            })
            .copied()
            .collect();
        let n = ids.len() as u32;
        g.sink.record(&RecordedEvent::MassCancelSent {
            venue,
            scope,
            orders: n,
        });
        for id in ids {
            g.apply_event(id, OrderEvent::CancelSent);
        }
        n
    }

    /// "Force cancel local" (the runbook): the drain's deadline passed with
    /// the order still not terminal. It becomes `CancelUnknown`; a cancel we
    /// wrote and the venue refused still counts as "cancel sent". Returns
    /// the state it was in, or `None` when it is already terminal/unknown.
    pub fn force_cancel_unknown(&self, id: OrderId) -> Option<OrderState> {
        let mut g = self.lock();
        let before = g.orders.get(&id)?.state;
        if !before.is_open() {
            return None;
        }
        if before != OrderState::PendingCancel {
            g.apply_event(id, OrderEvent::CancelSent);
        }
        g.apply_event(id, OrderEvent::CancelTimeout);
        Some(before)
    }

    /// How many times an order left the open states (Acquire). Unchanged
    /// means no open order became terminal or unknown since the last look.
    #[inline]
    pub fn closed_count(&self) -> u64 {
        self.closed.load(Ordering::Acquire)
    }

    /// Copies of the open orders for which `in_scope` is true, unordered.
    pub fn open_orders(&self, mut in_scope: impl FnMut(&OrderRecord) -> bool) -> Vec<OrderRecord> {
        let g = self.lock();
        g.open
            .iter()
            .filter_map(|id| g.orders.get(id))
            .filter(|r| in_scope(r))
            .copied()
            .collect()
    }

    /// Runs `f` on a view of the registry under its lock.
    pub fn read<R>(&self, f: impl FnOnce(&RegistryView<'_>) -> R) -> R {
        let g = self.lock();
        f(&RegistryView { inner: &g })
    }

    /// One order.
    pub fn get(&self, id: OrderId) -> Option<OrderRecord> {
        self.lock().orders.get(&id).copied()
    }

    /// Every order ever registered (sorted by id), for reports and tests.
    pub fn all_orders(&self) -> Vec<OrderRecord> {
        let g = self.lock();
        let mut v: Vec<OrderRecord> = g.orders.values().copied().collect();
        v.sort_unstable_by_key(|r| r.id);
        v
    }

    /// Number of open orders.
    pub fn open_count(&self) -> usize {
        self.lock().open.len()
    }

    /// Position in one instrument on one venue, all accounts.
    pub fn position(&self, venue: ScopeIndex, instrument: ScopeIndex) -> Qty {
        let g = self.lock();
        Qty(g
            .positions
            .iter()
            .filter(|((v, i, _), _)| *v == venue && *i == instrument)
            .map(|(_, q)| q.0)
            .fold(0i64, i64::saturating_add))
    }

    /// Position of one account in one instrument on one venue.
    pub fn account_position(
        &self,
        venue: ScopeIndex,
        instrument: ScopeIndex,
        account: ScopeIndex,
    ) -> Qty {
        let g = self.lock();
        g.positions
            .get(&(venue, instrument, account))
            .copied()
            .unwrap_or(Qty::ZERO)
    }

    /// Every non-zero position: ((venue, instrument, account), qty), sorted.
    pub fn positions(&self) -> Vec<((ScopeIndex, ScopeIndex, ScopeIndex), Qty)> {
        let g = self.lock();
        let mut v: Vec<_> = g
            .positions
            .iter()
            .filter(|(_, q)| q.0 != 0)
            .map(|(k, q)| (*k, *q))
            .collect();
        v.sort_unstable();
        v
    }

    /// Counters.
    pub fn counters(&self) -> RegistryCounters {
        self.lock().counters
    }

    /// The first anomalies seen (bounded), for the report.
    pub fn anomalies(&self) -> Vec<Anomaly> {
        self.lock().anomalies.clone()
    }
}

impl Inner {
    fn anomaly(&mut self, a: Anomaly) {
        if self.anomalies.len() < MAX_ANOMALIES {
            self.anomalies.push(a);
        }
    }

    /// Applies one state-machine event; refuses (and reports) illegal ones.
    fn apply_event(&mut self, id: OrderId, event: OrderEvent) -> bool {
        let Some(rec) = self.orders.get_mut(&id) else {
            self.counters.unknown_order_events += 1;
            self.anomaly(Anomaly::UnknownOrder { id });
            return false;
        };
        match transition(rec.state, event) {
            Ok(next) => {
                let was_open = rec.state.is_open();
                rec.state = next;
                if was_open && !next.is_open() {
                    self.open.remove(&id);
                    self.closed.fetch_add(1, Ordering::Release);
                } else if !was_open && next.is_open() {
                    self.open.insert(id);
                }
                self.sink.record(&RecordedEvent::Order {
                    id,
                    event,
                    state: next,
                });
                true
            }
            Err(edge) => {
                let cancel_answer = matches!(
                    event,
                    OrderEvent::Canceled | OrderEvent::CancelRejected { .. }
                );
                if cancel_answer && edge.state.is_terminal() {
                    // Our cancel crossed a fill or an earlier cancel: normal.
                    self.counters.stale_cancel_answers += 1;
                } else {
                    self.counters.illegal_transitions += 1;
                    self.anomaly(Anomaly::Illegal { id, edge });
                }
                false
            }
        }
    }

    fn apply_venue_event(&mut self, ev: &VenueEvent) {
        match *ev {
            VenueEvent::Acked { id } => {
                self.apply_event(id, OrderEvent::Acked);
            }
            VenueEvent::Fill { id, qty, price, .. } => self.apply_fill(id, qty, price),
            VenueEvent::Canceled { id } => {
                self.apply_event(id, OrderEvent::Canceled);
            }
            VenueEvent::Rejected { id, .. } => {
                self.apply_event(id, OrderEvent::Rejected);
            }
            VenueEvent::CancelRejected { id, .. } => {
                let partially_filled = self.orders.get(&id).is_some_and(|r| r.filled.0 > 0);
                self.apply_event(id, OrderEvent::CancelRejected { partially_filled });
            }
            // Not order events: the gateway handles them.
            VenueEvent::Position { .. }
            | VenueEvent::PositionsEnd
            | VenueEvent::TopOfBook { .. }
            | VenueEvent::Disconnected
            | VenueEvent::Reconnected => {}
        }
    }

    fn apply_fill(&mut self, id: OrderId, qty: Qty, price: Price) {
        let Some(rec) = self.orders.get_mut(&id) else {
            self.counters.unknown_order_events += 1;
            self.anomaly(Anomaly::UnknownOrder { id });
            return;
        };
        if qty.0 <= 0 {
            self.counters.invalid_fills += 1;
            self.anomaly(Anomaly::InvalidFill { id });
            return;
        }
        let ordered = rec.qty.0;
        let filled = rec.filled.0.saturating_add(qty.0);
        let overfill = filled > ordered;
        rec.filled = Qty(filled);
        rec.fills = rec.fills.saturating_add(1);
        let (side, tags) = (rec.side, rec.tags);
        self.counters.fills += 1;
        if overfill {
            self.counters.overfills += 1;
            self.anomaly(Anomaly::Overfill { id });
        }
        let key = (tags.venue, tags.instrument, tags.account);
        let pos = self.positions.entry(key).or_insert(Qty::ZERO);
        pos.0 = pos.0.saturating_add(side.sign().saturating_mul(qty.0));
        let position = *pos;
        self.sink.record(&RecordedEvent::Fill {
            id,
            side,
            qty,
            price,
            position,
        });
        self.apply_event(
            id,
            OrderEvent::Fill {
                complete: filled >= ordered,
            },
        );
    }
}

#[cfg(test)]
mod tests;
