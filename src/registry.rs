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
//! order the registry applied them; the sink may buffer them and write a
//! whole lock hold's at its end ([`EventSink::flush`], still under the lock).
//!
//! Money is fixed-point: positions are [`Qty`] sums of fills, per
//! (venue, instrument) and per (venue, instrument, account).
//!
//! Storage is laid out for the drain: records live in a slab (`Vec`, in
//! registration order) found by id through an `FxHashMap` (ids are ours and
//! sequential, so a one-multiply hash is enough and no adversary chooses
//! them), and the open orders are a dense list of slab slots, so a snapshot
//! or a mass-cancel marking walks contiguous memory instead of hashing each
//! id twice.
//!
//! # Invariants
//! * One `Mutex` guards everything; the gateway holds it for one batch of
//!   events or one order, the drain for one snapshot or one status poll.
//!   The lock is never held across a venue call.
//! * An order id is registered at most once; `open` holds exactly the slots
//!   whose state [`is_open`](OrderState::is_open), `open_pos[slot]` is the
//!   slot's place in `open` (or `NOT_OPEN`), and `open_by_venue` counts
//!   `open` per venue.
//! * A fill is applied to the position whatever the order's state (the venue
//!   is the authority on executions); only its effect on the state is
//!   checked.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rustc_hash::FxHashMap;

use crate::clock::mono_ns;
use crate::order::{
    transition, OrderEvent, OrderId, OrderState, Price, Qty, ScopeIndex, ScopeTags, Side,
};
use crate::venue::{MassCancelScope, NewOrder, VenueError, VenueEvent};

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

const MAX_ANOMALIES: usize = 256;

const NOT_OPEN: u32 = u32::MAX;

struct Inner {
    /// Every order ever registered, in registration order (the slab).
    orders: Vec<OrderRecord>,
    /// Id -> slot in `orders`.
    slot_of: FxHashMap<OrderId, u32>,
    /// Slots of the open orders, unordered.
    open: Vec<u32>,
    /// Per slot: its index in `open`, or `NOT_OPEN`.
    open_pos: Vec<u32>,
    /// Open orders per venue index.
    open_by_venue: Vec<u32>,
    /// Order activity per venue index and per strategy index, for the
    /// engine's telemetry (a counter bump under the lock already held).
    venue_activity: Vec<ScopeActivity>,
    strategy_activity: Vec<ScopeActivity>,
    /// Scratch list of slots (reused: no allocation per mass cancel).
    scratch: Vec<u32>,
    positions: HashMap<(ScopeIndex, ScopeIndex, ScopeIndex), Qty>,
    counters: RegistryCounters,
    anomalies: Vec<Anomaly>,
    sink: Box<dyn EventSink>,
    closed: Arc<AtomicU64>,
    /// Closes applied under the current lock, published when it is released
    /// (one atomic add per batch, not one per order: the drain polls that
    /// cache line).
    closed_unpublished: u64,
}

/// The registry's lock; publishes the closes made under it on release.
struct Locked<'a>(MutexGuard<'a, Inner>);

impl std::ops::Deref for Locked<'_> {
    type Target = Inner;
    #[inline]
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl std::ops::DerefMut for Locked<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut Inner {
        &mut self.0
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // Runs before the mutex guard (a field) is dropped: still locked.
        let g = &mut *self.0;
        // The sink writes what it buffered under this hold first: the
        // drain, woken by the count below, checkpoints the journal.
        g.sink.flush();
        if g.closed_unpublished != 0 {
            g.closed
                .fetch_add(std::mem::take(&mut g.closed_unpublished), Ordering::Release);
        }
    }
}

/// The registry; share it as `Arc<Registry>` between gateway and drain.
/// `Send + Sync` (one mutex inside). Its writing methods are the gateway's
/// and the drain's; with the [`Runtime`](crate::runtime::Runtime) a
/// strategy reads it only through its
/// [`StrategyHandle`](crate::runtime::StrategyHandle).
pub struct Registry {
    inner: Mutex<Inner>,
    /// Orders that left the open states, ever: lets the drain poll without
    /// taking the lock until something changed.
    closed: Arc<AtomicU64>,
    /// Set by [`Registry::adopt_recovered`] until the drain has dealt with
    /// the recovered orders; the gateway writes no new order meanwhile.
    recovery_pending: AtomicBool,
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
        self.inner.get(id)
    }

    /// Number of open orders.
    pub fn open_count(&self) -> usize {
        self.inner.open.len()
    }

    /// Number of open orders on one venue.
    pub fn open_on_venue(&self, venue: ScopeIndex) -> usize {
        self.inner
            .open_by_venue
            .get(venue as usize)
            .map_or(0, |&n| n as usize)
    }

    /// Copies of the open orders for which `in_scope` is true, unordered.
    pub fn open_orders(&self, in_scope: impl FnMut(&OrderRecord) -> bool) -> Vec<OrderRecord> {
        self.inner.open_orders(in_scope)
    }

    /// One chunk of a snapshot taken in several lock holds: looks at up to
    /// `max` open orders, walking the registry's dense list of open orders
    /// downward from `*cursor` (exclusive; clamped to the number open), and
    /// appends those `in_scope` to `out`; `*cursor` is left where the walk
    /// stopped (0: every order was looked at).
    ///
    /// Resuming in a later lock hold visits every order that stayed open
    /// throughout, at least once: an order leaves the list by swap-removal,
    /// which moves the last entry into the hole, so an entry below the
    /// cursor (not yet visited) only ever moves further down, never past
    /// the cursor. An entry already visited can be moved below it and
    /// visited again: callers drop repeats by id. Orders opened meanwhile
    /// are appended at the end and are not visited unless the list shrank
    /// below the cursor (a drain's snapshot wants only orders opened before
    /// the gateway refused new ones in its scope, which is the case).
    pub fn open_orders_below(
        &self,
        cursor: &mut usize,
        max: usize,
        mut in_scope: impl FnMut(&OrderRecord) -> bool,
        out: &mut Vec<OrderRecord>,
    ) {
        let open = &self.inner.open;
        let end = (*cursor).min(open.len());
        let start = end.saturating_sub(max);
        out.extend(
            open[start..end]
                .iter()
                .rev()
                .map(|&slot| &self.inner.orders[slot as usize])
                .filter(|r| in_scope(r))
                .copied(),
        );
        *cursor = start;
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
            recovery_pending: AtomicBool::new(false),
            closed: closed.clone(),
            inner: Mutex::new(Inner {
                orders: Vec::new(),
                slot_of: FxHashMap::default(),
                open: Vec::new(),
                open_pos: Vec::new(),
                open_by_venue: Vec::new(),
                venue_activity: Vec::new(),
                strategy_activity: Vec::new(),
                scratch: Vec::new(),
                positions: HashMap::new(),
                counters: RegistryCounters::default(),
                anomalies: Vec::new(),
                sink,
                closed,
                closed_unpublished: 0,
            }),
        }
    }

    fn lock(&self) -> Locked<'_> {
        // A panic elsewhere while holding the lock must not stop the drain:
        // the data is a set of independent records, still usable.
        Locked(self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Records a new order as `PendingNew`; the gateway calls it before the write.
    pub fn register(&self, order: &NewOrder) -> Result<(), RegistryError> {
        let mut g = self.lock();
        if g.slot_of.contains_key(&order.id) {
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
        let slot = g.orders.len() as u32;
        g.orders.push(rec);
        g.open_pos.push(NOT_OPEN);
        g.slot_of.insert(order.id, slot);
        g.add_open(slot);
        g.counters.registered += 1;
        g.activity(order.tags, |a| a.sent += 1);
        g.sink.record(&RecordedEvent::NewOrder(rec));
        Ok(())
    }

    /// The write of a registered order failed and nothing left (the venue
    /// cannot have it): it is rejected locally.
    pub fn send_failed(&self, id: OrderId, error: VenueError) {
        let mut g = self.lock();
        if let Some(tags) = g.get(id).map(|r| r.tags) {
            g.sink
                .record(&RecordedEvent::SendFailed { id, tags, error });
        }
        g.apply_event(id, OrderEvent::Rejected);
    }

    /// The gateway refused a request without writing anything: handed to
    /// the sink (which tells the strategy), nothing else changes.
    pub(crate) fn refused(&self, id: OrderId, tags: ScopeTags, why: Refusal) {
        self.lock()
            .sink
            .record(&RecordedEvent::Refused { id, tags, why });
    }

    /// The write of a registered order failed part-way: the venue may have
    /// it. It becomes `SendUnknown`, which the drain includes, never a
    /// local reject.
    pub fn send_ambiguous(&self, id: OrderId) {
        let mut g = self.lock();
        g.apply_event(id, OrderEvent::SendAmbiguous);
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
        g.cancel_sent(id)
    }

    /// [`cancel_sent`](Registry::cancel_sent) for a batch of orders under one
    /// lock: `venues[i]` is set to the answer for `ids[i]` (`venues` is
    /// cleared first).
    pub fn cancels_sent(&self, ids: &[OrderId], venues: &mut Vec<Option<ScopeIndex>>) {
        venues.clear();
        let mut g = self.lock();
        venues.extend(ids.iter().map(|&id| g.cancel_sent(id)));
    }

    /// Marks every open order a mass cancel covers as cancel-sent; returns
    /// how many.
    pub fn mass_cancel_sent(&self, venue: ScopeIndex, scope: MassCancelScope) -> u32 {
        let mut g = self.lock();
        let g = &mut *g;
        let mut slots = std::mem::take(&mut g.scratch);
        slots.clear();
        slots.extend(g.open.iter().copied().filter(|&slot| {
            let r = &g.orders[slot as usize];
            r.tags.venue == venue
                && match scope {
                    MassCancelScope::All => true,
                    MassCancelScope::Instrument(i) => r.tags.instrument == i,
                }
        }));
        let n = slots.len() as u32;
        g.sink.record(&RecordedEvent::MassCancelSent {
            venue,
            scope,
            orders: n,
        });
        for &slot in &slots {
            g.apply_at(slot, OrderEvent::CancelSent);
        }
        g.scratch = slots;
        n
    }

    /// "Force cancel local" (the runbook): the drain's deadline passed with
    /// the order still not terminal. It becomes `CancelUnknown`; a cancel we
    /// wrote and the venue refused still counts as "cancel sent". Returns
    /// the state it was in, or `None` when it is already terminal/unknown.
    pub fn force_cancel_unknown(&self, id: OrderId) -> Option<OrderState> {
        let mut g = self.lock();
        let before = g.get(id)?.state;
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
    pub fn open_orders(&self, in_scope: impl FnMut(&OrderRecord) -> bool) -> Vec<OrderRecord> {
        self.lock().open_orders(in_scope)
    }

    /// Runs `f` on a view of the registry under its lock.
    pub fn read<R>(&self, f: impl FnOnce(&RegistryView<'_>) -> R) -> R {
        let g = self.lock();
        f(&RegistryView { inner: &g })
    }

    /// One order.
    pub fn get(&self, id: OrderId) -> Option<OrderRecord> {
        self.lock().get(id).copied()
    }

    /// Every order ever registered (sorted by id), for reports and tests.
    pub fn all_orders(&self) -> Vec<OrderRecord> {
        let g = self.lock();
        let mut v: Vec<OrderRecord> = g.orders.clone();
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

    /// The position of one account in one instrument on one venue as a
    /// reduce-only check must see it: the filled position less what the
    /// open orders that reduce it may still fill (their leaves). Several
    /// reducing orders together can then never flip the position. A scan
    /// of the open orders under the lock: REDUCE_ONLY's slow path only.
    pub fn position_net_of_open_reducing(
        &self,
        venue: ScopeIndex,
        instrument: ScopeIndex,
        account: ScopeIndex,
    ) -> Qty {
        let g = self.lock();
        let p = g
            .positions
            .get(&(venue, instrument, account))
            .copied()
            .unwrap_or(Qty::ZERO)
            .0;
        if p == 0 {
            return Qty::ZERO;
        }
        let reducing_side = if p > 0 { Side::Sell } else { Side::Buy };
        let mut outstanding = 0i64;
        for &slot in &g.open {
            let o = &g.orders[slot as usize];
            if o.side == reducing_side
                && o.tags.venue == venue
                && o.tags.instrument == instrument
                && o.tags.account == account
            {
                outstanding = outstanding.saturating_add((o.qty.0 - o.filled.0).max(0));
            }
        }
        if p > 0 {
            Qty(p.saturating_sub(outstanding).max(0))
        } else {
            Qty(p.saturating_add(outstanding).min(0))
        }
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

    /// Order activity per venue index and per strategy index (open,
    /// sent, accepted, rejected, fills): what the engine publishes as
    /// telemetry. Indices never used are zero or past the end.
    pub fn activity(&self) -> (Vec<ScopeActivity>, Vec<ScopeActivity>) {
        let g = self.lock();
        (g.venue_activity.clone(), g.strategy_activity.clone())
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
    #[inline]
    fn get(&self, id: OrderId) -> Option<&OrderRecord> {
        let slot = *self.slot_of.get(&id)?;
        self.orders.get(slot as usize)
    }

    fn open_orders(&self, mut in_scope: impl FnMut(&OrderRecord) -> bool) -> Vec<OrderRecord> {
        let mut v = Vec::with_capacity(self.open.len());
        v.extend(
            self.open
                .iter()
                .map(|&slot| &self.orders[slot as usize])
                .filter(|r| in_scope(r))
                .copied(),
        );
        v
    }

    fn add_open(&mut self, slot: u32) {
        self.open_pos[slot as usize] = self.open.len() as u32;
        self.open.push(slot);
        let venue = self.orders[slot as usize].tags.venue as usize;
        if self.open_by_venue.len() <= venue {
            self.open_by_venue.resize(venue + 1, 0);
        }
        self.open_by_venue[venue] += 1;
        let tags = self.orders[slot as usize].tags;
        self.activity(tags, |a| a.open += 1);
    }

    fn remove_open(&mut self, slot: u32) {
        let pos = std::mem::replace(&mut self.open_pos[slot as usize], NOT_OPEN);
        if pos == NOT_OPEN {
            return;
        }
        self.open.swap_remove(pos as usize);
        if let Some(&moved) = self.open.get(pos as usize) {
            self.open_pos[moved as usize] = pos;
        }
        let venue = self.orders[slot as usize].tags.venue as usize;
        self.open_by_venue[venue] -= 1;
        let tags = self.orders[slot as usize].tags;
        self.activity(tags, |a| a.open = a.open.saturating_sub(1));
    }

    fn cancel_sent(&mut self, id: OrderId) -> Option<ScopeIndex> {
        let slot = *self.slot_of.get(&id)?;
        let r = &self.orders[slot as usize];
        if !(r.state.is_open() || r.state == OrderState::CancelUnknown) {
            return None;
        }
        let venue = r.tags.venue;
        self.apply_at(slot, OrderEvent::CancelSent);
        Some(venue)
    }

    fn anomaly(&mut self, a: Anomaly) {
        if self.anomalies.len() < MAX_ANOMALIES {
            self.anomalies.push(a);
        }
    }

    /// Applies one state-machine event; refuses (and reports) illegal ones.
    fn apply_event(&mut self, id: OrderId, event: OrderEvent) -> bool {
        let Some(&slot) = self.slot_of.get(&id) else {
            self.counters.unknown_order_events += 1;
            self.anomaly(Anomaly::UnknownOrder { id });
            return false;
        };
        self.apply_at(slot, event)
    }

    /// [`apply_event`](Inner::apply_event) on a known slot.
    fn apply_at(&mut self, slot: u32, event: OrderEvent) -> bool {
        let rec = &mut self.orders[slot as usize];
        let id = rec.id;
        match transition(rec.state, event) {
            Ok(next) => {
                let was_open = rec.state.is_open();
                let tags = rec.tags;
                rec.state = next;
                if event == OrderEvent::Acked {
                    self.activity(tags, |a| a.acked += 1);
                } else if next == OrderState::Rejected {
                    self.activity(tags, |a| a.rejected += 1);
                }
                if was_open && !next.is_open() {
                    self.remove_open(slot);
                    self.closed_unpublished += 1;
                } else if !was_open && next.is_open() {
                    self.add_open(slot);
                }
                let order = self.orders[slot as usize];
                self.sink.record(&RecordedEvent::Order {
                    id,
                    tags,
                    event,
                    state: next,
                    order,
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
            VenueEvent::Rejected { id, reason } => {
                if let Some(tags) = self.get(id).map(|r| r.tags) {
                    self.sink
                        .record(&RecordedEvent::VenueRejected { id, tags, reason });
                }
                self.apply_event(id, OrderEvent::Rejected);
            }
            VenueEvent::CancelRejected { id, .. } => {
                let partially_filled = self.get(id).is_some_and(|r| r.filled.0 > 0);
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
        let Some(rec) = self
            .slot_of
            .get(&id)
            .and_then(|&slot| self.orders.get_mut(slot as usize))
        else {
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
        let (side, tags, order) = (rec.side, rec.tags, *rec);
        self.counters.fills += 1;
        self.activity(tags, |a| a.fills += 1);
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
            tags,
            side,
            qty,
            price,
            position,
            order,
        });
        self.apply_event(
            id,
            OrderEvent::Fill {
                complete: filled >= ordered,
            },
        );
    }
}

mod activity;
mod anomaly;
mod recovery;
pub use activity::ScopeActivity;
mod sink;
pub use anomaly::{Anomaly, RegistryCounters, RegistryError};
pub use recovery::RecoveredOrder;
pub use sink::{EventSink, NoopSink, RecordedEvent, Refusal};

#[cfg(test)]
mod tests;
