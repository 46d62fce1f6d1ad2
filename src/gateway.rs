//! The gateway: the one thread that writes to venue sessions.
//!
//! Strategies hand it new orders, cancels of their own orders and replaces
//! through a bounded ring ([`OrderSender`]; with the runtime, a
//! [`StrategyHandle`](crate::runtime::StrategyHandle)); refusals it makes
//! (re-check, duplicate id, unknown venue, a cancel of an order not open
//! or not the strategy's) go to the registry's sink, which answers the
//! strategy. The drain hands it cancels through a ring of its own
//! ([`CancelSender`]), which the gateway empties first on every turn and
//! again before each new order, so a cancel never waits behind a backlog of
//! new orders. The gateway polls every venue for answers and applies them to
//! the [`Registry`].
//!
//! **The no-escape rule:** *no new order is written to a venue after the
//! gateway has acknowledged a kill generation, and every order written
//! before that is in the registry the drain snapshots.*
//!
//! How the code keeps it (DESIGN.md, "the no-escape protocol", way 1), in
//! one function, [`admit::admit`], that the loom model calls too:
//! 1. Before deciding on each new order the gateway loads the state word
//!    (Acquire). If its generation is newer than the one it acknowledged, it
//!    first publishes it in the control block's `acked_generation` (Release).
//! 2. It then re-checks the order with the gate on a load of the state
//!    word made after that one (so it sees the acknowledged generation or a
//!    newer one), reading the scope levels for scoped trips. Modes only escalate until a reset, so after the gateway
//!    acknowledged a KILL generation every later check refuses.
//! 3. An allowed order is [`Registry::register`]ed *before* it is written to
//!    the venue. Registration happens-before the next `acked_generation`
//!    store in this thread, so a drain that loads `acked_generation >= g`
//!    (Acquire) and then snapshots the registry sees every order written
//!    before the acknowledgement.
//!
//! # Invariants
//! * Only the gateway thread calls [`Venue`] methods (it owns the sessions).
//! * One gateway per block: the role is claimed in the block by
//!   compare-and-swap when the gateway is made, and given back when it is
//!   dropped; a second live claimant is refused.
//! * `acked_generation` only grows (`fetch_max`), and is raised only after
//!   a load of the state word that returned that generation. Its time, `acked_mono_ns`,
//!   is stored *before* it ([`publish_ack`]), so whoever reads the
//!   generation (Acquire) and then the time gets that acknowledgement's
//!   time or a later one, never an older one.
//! * A new order is registered before its venue write. A write that failed
//!   with nothing sent rejects it locally ([`Registry::send_failed`]); a
//!   write that failed part-way ([`VenueError::Ambiguous`]) leaves it
//!   `SendUnknown` ([`Registry::send_ambiguous`]), which the drain cancels
//!   or reports: an ambiguous send is never a reject.
//! * While the registry holds orders recovered from an earlier run that the
//!   drain has not dealt with yet ([`Registry::recovery_pending`]), no new
//!   order is taken from the ring: they wait (the ring pushes back).
//! * Under a lease ([`Gateway::spawn_leased`]), every turn that may write
//!   is bracketed by the lease's turn marker and each new order's admit
//!   step checks the epoch ([`admit::admit_leased`]); once a newer epoch is
//!   seen the gateway is fenced for good: no write, acknowledgement,
//!   counter or logout from it again (see [`crate::control::lease`]).
//! * The failover's hand-over is done only for a request the gateway took
//!   from its asker with one compare-and-swap before the asker's deadline
//!   withdrew it ([`handover`]): a withdrawn request is dropped unread.
//!   Once fenced (handed over, or a newer epoch), the gateway still empties
//!   the strategies' ring, refusing every order ([`Refusal::Fenced`]),
//!   and writes nothing to a venue or the block.
//! * A cancel request is never dropped silently: the drain's push retries
//!   while the ring is full, up to the cancel deadline, and an order whose
//!   cancel could not be enqueued by then is reported `CancelNotEnqueued`;
//!   the gateway empties that ring before taking new orders.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::queue::ArrayQueue;

use crate::backoff::{Backoff, BackoffConfig};
use crate::clock::mono_ns;
use crate::control::layout::VENUES;
use crate::control::state::AtomicWord;
use crate::control::{ControlBlock, ControlError, GatewayRole, Lease, StateWord};
use crate::gate::{Gate, Verdict};
use crate::order::{OrderId, OrderIntent, ScopeIndex, ScopeTags};
use crate::registry::{Refusal, Registry};
use crate::venue::{MassCancelScope, NewOrder, Venue, VenueError, VenueEvent};
use admit::AdmitWords;

pub mod admit;
pub mod handover;
mod positions;
mod rings;
mod stats;
use handover::HandOverDesk;
pub use positions::{PositionReport, PositionReports};
pub(crate) use rings::StrategyRequest;
pub use rings::{CancelSender, DrainLink, OrderSender, ReplaceError, SubmitError, VenueInfo};
pub use stats::GatewayStats;
use stats::{read_stats, Counters};

/// Single cancels marked in the registry under one lock.
const CANCEL_BATCH: usize = 256;

/// What a fenced gateway's cancel write reports (nothing was written).
const FENCED_WRITE: &str =
    "writes from a fenced gateway: a newer lease epoch holds the active role";

/// Publishes the gateway's acknowledgement of `generation`, made at
/// `mono_ns`: the time first, then the generation with Release. A reader
/// that loads the generation with Acquire and then the time sees this time
/// (or a later acknowledgement's), never the one before it; stored the
/// other way round, `killswitch emergency` could read the old time and fall
/// back to its own clock (a loom model checks the order).
///
/// The generation is raised with `fetch_max`, never stored: a gateway that
/// started with an older view (or a stale copy of it) can never lower what
/// the drain waits on. One gateway per block holds the role (claimed by
/// compare-and-swap in the block), so the time beside it is its own.
#[inline]
pub fn publish_ack<W: AtomicWord + ?Sized>(
    acked_generation: &W,
    acked_mono_ns: &W,
    generation: u64,
    mono_ns: u64,
) {
    acked_mono_ns.store_word(mono_ns, Ordering::Relaxed);
    acked_generation.fetch_max_word(generation, Ordering::Release);
}

/// Why a gateway did not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The block's gateway role is held by another live gateway (or the
    /// block could not be read); the message says what to do.
    #[error(transparent)]
    Role(#[from] ControlError),
    /// The gateway thread could not be started.
    #[error("cannot start the gateway thread: {0}; check the process's thread limit (ulimit -u)")]
    Thread(#[source] io::Error),
    /// The real-time scheduling asked for ([`GatewayConfig::realtime`]) was
    /// refused; the message says what the host needs.
    #[error(transparent)]
    Realtime(#[from] crate::realtime::RealtimeError),
}

/// Gateway settings.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Capacity of the strategies' new-order ring.
    pub order_ring: usize,
    /// Capacity of the drain's cancel ring.
    pub cancel_ring: usize,
    /// Core to pin the gateway thread to; `None` leaves it unpinned.
    pub core: Option<usize>,
    /// How the thread waits when idle.
    pub backoff: BackoffConfig,
    /// First order id handed out (seed it from the journal on restart).
    pub first_order_id: u64,
    /// New orders written per turn before venues are polled again.
    pub orders_per_turn: usize,
    /// Log out of every venue when the gateway stops.
    pub logout_on_shutdown: bool,
    /// `SCHED_FIFO` priority (1..=99) for the gateway thread; `None` keeps
    /// the normal policy. Refused with [`GatewayError::Realtime`] (and no
    /// thread) where the system does not allow it. Give it a back-off that
    /// sleeps (the default) unless the thread has a core of its own: a
    /// real-time thread that never sleeps keeps every normal thread off its
    /// core.
    pub realtime: Option<u8>,
    /// Fault injection (feature `fault-injection` only): decide each new
    /// order on the state word loaded at the top of the turn instead of a
    /// load made after the acknowledgement (see [`admit`]). Breaks the
    /// no-escape rule on purpose; the stress test must catch it.
    #[cfg(feature = "fault-injection")]
    pub fault_stale_admit: bool,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            order_ring: 4096,
            cancel_ring: 16_384,
            core: None,
            backoff: BackoffConfig::default(),
            first_order_id: 1,
            orders_per_turn: 64,
            logout_on_shutdown: false,
            realtime: None,
            #[cfg(feature = "fault-injection")]
            fault_stale_admit: false,
        }
    }
}

/// A request from the drain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelRequest {
    /// Cancel one order.
    Cancel(OrderId),
    /// Mass-cancel on one venue (falls back to single cancels of the
    /// registry's open orders there if the venue has no mass cancel).
    MassCancel {
        /// Venue index.
        venue: ScopeIndex,
        /// What to cancel.
        scope: MassCancelScope,
    },
}

struct Session {
    index: ScopeIndex,
    venue: Box<dyn Venue>,
}

/// The gateway's state and one turn of its loop, usable without a thread
/// (tests drive it step by step); [`Gateway::spawn`] runs it on a thread.
/// It holds the block's gateway role while it lives; only the thread that
/// runs its turns may hold it (it owns the venue sessions).
pub struct GatewayCore {
    block: Arc<ControlBlock>,
    _role: GatewayRole,
    gate: Gate,
    registry: Arc<Registry>,
    sessions: Vec<Session>,
    by_venue: Vec<Option<usize>>,
    orders: Arc<ArrayQueue<StrategyRequest>>,
    cancels: rtrb::Consumer<CancelRequest>,
    cancel_producer: Option<rtrb::Producer<CancelRequest>>,
    acked: u64,
    /// The state word as the top of this turn observed it.
    turn_word: StateWord,
    /// Fault switch of the admit step (always false without the feature).
    stale_admit: bool,
    orders_sent: u64,
    cancels_sent: u64,
    orders_per_turn: usize,
    events: Vec<VenueEvent>,
    cancel_batch: Vec<OrderId>,
    cancel_venues: Vec<Option<ScopeIndex>>,
    counters: Arc<Counters>,
    /// Position reports (planned shutdown); sessions with a pending request.
    reports: PositionReports,
    reports_pending: Vec<bool>,
    /// The active-role lease, when the engine runs under one.
    lease: Option<Lease>,
    /// The failover's hand-over request word and answer.
    hand_overs: Arc<HandOverDesk>,
}

impl GatewayCore {
    /// A gateway over `venues` (each with its venue scope index). Claims
    /// the block's gateway role: refused while another live gateway holds it.
    pub fn new(
        block: Arc<ControlBlock>,
        registry: Arc<Registry>,
        venues: Vec<(ScopeIndex, Box<dyn Venue>)>,
        cfg: &GatewayConfig,
    ) -> Result<GatewayCore, ControlError> {
        GatewayCore::new_leased(block, registry, venues, cfg, None)
    }

    /// [`GatewayCore::new`] under an acquired active-role lease: the
    /// gateway role is taken over from a live claimant only if that is
    /// the lease's predecessor (fenced by our epoch); every writing turn
    /// and every admit step then checks the epoch.
    pub fn new_leased(
        block: Arc<ControlBlock>,
        registry: Arc<Registry>,
        venues: Vec<(ScopeIndex, Box<dyn Venue>)>,
        cfg: &GatewayConfig,
        lease: Option<Lease>,
    ) -> Result<GatewayCore, ControlError> {
        let role = match &lease {
            None => GatewayRole::claim(block.clone())?,
            Some(l) => GatewayRole::claim_from_fenced(block.clone(), l.predecessor())?,
        };
        let mut by_venue = vec![None; VENUES];
        let sessions: Vec<Session> = venues
            .into_iter()
            .map(|(index, venue)| Session { index, venue })
            .collect();
        for (i, s) in sessions.iter().enumerate() {
            if let Some(slot) = by_venue.get_mut(s.index as usize) {
                *slot = Some(i);
            }
        }
        let gs = block.gateway_status();
        let acked = gs.acked_generation.load(Ordering::Acquire);
        let (orders_sent, cancels_sent) = (
            gs.orders_sent.load(Ordering::Relaxed),
            gs.cancels_sent.load(Ordering::Relaxed),
        );
        let (cancel_producer, cancels) = rtrb::RingBuffer::new(cfg.cancel_ring.max(1));
        Ok(GatewayCore {
            gate: Gate::new(block.clone()),
            block,
            _role: role,
            turn_word: StateWord(0),
            #[cfg(feature = "fault-injection")]
            stale_admit: cfg.fault_stale_admit,
            #[cfg(not(feature = "fault-injection"))]
            stale_admit: false,
            registry,
            sessions,
            by_venue,
            orders: Arc::new(ArrayQueue::new(cfg.order_ring.max(1))),
            cancels,
            cancel_producer: Some(cancel_producer),
            acked,
            orders_sent,
            cancels_sent,
            orders_per_turn: cfg.orders_per_turn.max(1),
            events: Vec::with_capacity(256),
            cancel_batch: Vec::with_capacity(CANCEL_BATCH),
            cancel_venues: Vec::with_capacity(CANCEL_BATCH),
            counters: Arc::new(Counters::default()),
            reports: PositionReports::default(),
            reports_pending: Vec::new(),
            lease,
            hand_overs: Arc::new(HandOverDesk::default()),
        })
    }

    /// A sender for strategies; ids start at `first_id` for the first sender
    /// made (later senders share the same counter).
    pub fn order_sender(&self, next_id: Arc<AtomicU64>) -> OrderSender {
        OrderSender {
            ring: self.orders.clone(),
            gate: self.gate.clone(),
            next_id,
        }
    }

    /// The drain's link (cancel ring, registry, venue list); `None` after
    /// the first call: the cancel ring has one producer.
    pub fn take_drain_link(&mut self) -> Option<DrainLink> {
        let ring = self.cancel_producer.take()?;
        Some(DrainLink {
            block: self.block.clone(),
            cancels: CancelSender { ring },
            registry: self.registry.clone(),
            venues: self
                .sessions
                .iter()
                .map(|s| VenueInfo {
                    index: s.index,
                    name: s.venue.name().to_string(),
                    mass_cancel: s.venue.supports_mass_cancel(),
                })
                .collect(),
            senders: None,
        })
    }

    /// The shared words of the admit step.
    #[inline]
    fn words(&self) -> AdmitWords<'_, AtomicU64> {
        let gs = self.block.gateway_status();
        AdmitWords {
            state: self.block.state_atomic(),
            acked_generation: &gs.acked_generation,
            acked_mono_ns: &gs.acked_mono_ns,
        }
    }

    /// Loads the state word and acknowledges a new generation. Returns it.
    #[inline]
    fn observe(&mut self) -> StateWord {
        let mut acked = self.acked;
        let w = admit::observe(&self.words(), &mut acked, mono_ns);
        self.note_acked(acked);
        w
    }

    /// Records the acknowledged generation and, when it moved, tells every
    /// session ([`Venue::kill_acknowledged`]) before anything else is
    /// written to it.
    #[inline]
    fn note_acked(&mut self, acked: u64) {
        if acked != self.acked {
            self.acked = acked;
            for s in &mut self.sessions {
                s.venue.kill_acknowledged(acked);
            }
        }
    }

    /// One turn: acknowledge, cancels, venue answers, then a batch of new
    /// orders (re-checked one by one). Returns true when it did any work.
    /// Under a lease the turn runs inside the lease's turn marker, and not
    /// at all once fenced.
    pub fn turn(&mut self) -> bool {
        let Some(lease) = &mut self.lease else {
            return self.run_turn();
        };
        if !lease.enter_turn() {
            return self.refuse_fenced();
        }
        let work = self.run_turn();
        if let Some(lease) = &self.lease {
            lease.exit_turn();
        }
        work
    }

    /// The epoch this gateway holds and whether it is fenced, under a lease.
    pub fn lease_epoch(&self) -> Option<(u64, bool)> {
        self.lease.as_ref().map(|l| (l.epoch(), l.is_fenced()))
    }

    fn run_turn(&mut self) -> bool {
        let turns = self.counters.turns.fetch_add(1, Ordering::Relaxed);
        // The engine's heartbeat comes from here, the thread whose stall
        // matters: a gateway stuck in a venue call stops beating and the
        // watchdog trips. Every 64 turns: a clock read costs ~20 ns.
        if turns % 64 == 0 {
            self.block.heartbeat();
        }
        self.turn_word = self.observe();
        let mut work = self.run_cancels();
        if self.reports_pending.is_empty() {
            for s in &mut self.sessions {
                s.venue.poll(&mut self.events);
            }
        } else {
            self.poll_capturing_positions();
        }
        if !self.events.is_empty() {
            work = true;
            self.registry.apply_venue_events(&self.events);
            let n = self.events.len() as u64;
            let disconnects = self
                .events
                .iter()
                .filter(|e| matches!(e, VenueEvent::Disconnected))
                .count() as u64;
            self.counters.events_applied.fetch_add(n, Ordering::Relaxed);
            self.counters
                .disconnects
                .fetch_add(disconnects, Ordering::Relaxed);
            self.events.clear();
        }
        // Orders an earlier run left open come first: no new order is taken
        // until the drain has cancelled (or reported) them all.
        let orders_now = if self.registry.recovery_pending() {
            0
        } else {
            self.orders_per_turn
        };
        for _ in 0..orders_now {
            // Strict priority: a cancel that arrives mid-batch goes first.
            if !self.cancels.is_empty() {
                self.run_cancels();
            }
            let Some(request) = self.orders.pop() else {
                break;
            };
            work = true;
            match request {
                StrategyRequest::New(order) => {
                    if let Some(slot) = self.admit_new(&order) {
                        self.write_new(slot, &order);
                    }
                }
                StrategyRequest::Cancel { id, strategy } => self.strategy_cancel(id, strategy),
                StrategyRequest::Replace { old, new } => self.replace(old, &new),
                StrategyRequest::RequestPositions => self.request_positions(),
                StrategyRequest::LogoutAll => self.logout_all(),
                StrategyRequest::HandOver { request } => {
                    if self.hand_over(request) {
                        // Fenced now: what is left in the ring is refused
                        // by the next turns (`refuse_fenced`).
                        break;
                    }
                }
            }
        }
        self.publish_counts();
        work
    }

    fn publish_counts(&self) {
        let gs = self.block.gateway_status();
        gs.orders_sent.store(self.orders_sent, Ordering::Relaxed);
        gs.cancels_sent.store(self.cancels_sent, Ordering::Relaxed);
    }

    /// The admit step for one new order; `Some(session)` when it is
    /// registered and may be written, else the refusal is handed to the
    /// registry's sink (the strategy hears of it).
    fn admit_new(&mut self, order: &NewOrder) -> Option<usize> {
        let Some(slot) = self.slot(order.tags.venue) else {
            self.counters.unknown_venue.fetch_add(1, Ordering::Relaxed);
            self.registry
                .refused(order.id, order.tags, Refusal::UnknownVenue);
            return None;
        };
        // The admit step (see `admit`): acknowledge, decide on a load made
        // after the acknowledgement, register before the write.
        let (gate, registry) = (&self.gate, &self.registry);
        let mut acked = self.acked;
        let decide = |w: StateWord| {
            // REDUCE_ONLY decides on the registry's position, not the
            // strategy's belief.
            let position = gate.position_to_decide(w, order.tags, registry);
            let intent = OrderIntent {
                tags: order.tags,
                side: order.side,
                qty: order.qty,
                price: order.price,
                position,
            };
            match gate.check_word(w, &intent) {
                Verdict::Allow => Ok(()),
                Verdict::Reject(r) => Err(r),
            }
        };
        let register = || registry.register(order);
        let admitted = match &self.lease {
            None => admit::admit(
                &self.words(),
                &mut acked,
                mono_ns,
                self.turn_word,
                self.stale_admit,
                decide,
                register,
            ),
            Some(lease) => {
                let (holder, mine) = lease.fence_words();
                match admit::admit_leased(
                    holder,
                    mine,
                    &self.words(),
                    &mut acked,
                    mono_ns,
                    self.turn_word,
                    self.stale_admit,
                    decide,
                    register,
                ) {
                    Ok(admitted) => admitted,
                    Err(admit::Fenced) => {
                        lease.fenced();
                        self.registry.refused(
                            order.id,
                            order.tags,
                            Refusal::Fenced {
                                epoch: lease.epoch(),
                            },
                        );
                        return None;
                    }
                }
            }
        };
        self.note_acked(acked);
        match admitted {
            Ok(Ok(())) => Some(slot),
            Err(rejection) => {
                self.counters
                    .refused_on_recheck
                    .fetch_add(1, Ordering::Relaxed);
                self.registry
                    .refused(order.id, order.tags, Refusal::Recheck(rejection));
                None
            }
            Ok(Err(_duplicate)) => {
                self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
                self.registry
                    .refused(order.id, order.tags, Refusal::DuplicateId);
                None
            }
        }
    }

    /// Writes an admitted (registered) order to its venue session.
    fn write_new(&mut self, slot: usize, order: &NewOrder) {
        match self.sessions[slot].venue.send(order) {
            Ok(()) => self.orders_sent += 1,
            // Bytes may have left: the venue may be working it. Never a
            // local reject; the drain cancels it by id or reports it.
            Err(VenueError::Ambiguous) => {
                self.orders_sent += 1;
                self.counters.send_ambiguous.fetch_add(1, Ordering::Relaxed);
                self.registry.send_ambiguous(order.id);
            }
            Err(e) => {
                self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
                self.registry.send_failed(order.id, e);
            }
        }
    }

    /// A strategy's cancel of one of its own open orders.
    fn strategy_cancel(&mut self, id: OrderId, strategy: ScopeIndex) {
        if let Some(tags) = self.own_open_order(id, strategy) {
            if let Err(e) = self.cancel_one(id) {
                self.registry
                    .refused(id, tags, Refusal::CancelNotWritten(e));
            }
        }
    }

    /// The tags of `id` if it is open and `strategy`'s; otherwise the
    /// refusal is handed to the registry's sink and `None` returned.
    fn own_open_order(&self, id: OrderId, strategy: ScopeIndex) -> Option<ScopeTags> {
        let asker = ScopeTags {
            strategy,
            ..ScopeTags::default()
        };
        let refusal = match self.registry.get(id) {
            Some(r) if r.tags.strategy != strategy => Refusal::NotYours,
            Some(r) if r.state.is_open() => return Some(r.tags),
            _ => Refusal::NotOpen,
        };
        self.registry.refused(id, asker, refusal);
        None
    }

    /// Cancel `old`, send `new` in its place: `new` is admitted first (a
    /// refused replacement leaves `old` alone), then the cancel and the new
    /// order are written in that order.
    fn replace(&mut self, old: OrderId, new: &NewOrder) {
        if self.own_open_order(old, new.tags.strategy).is_none() {
            // Not replaced, so no new order either (a replace of an order
            // that just filled must not add a second one).
            return;
        }
        let Some(slot) = self.admit_new(new) else {
            return;
        };
        if let Err(e) = self.cancel_one(old) {
            self.registry
                .refused(old, new.tags, Refusal::CancelNotWritten(e));
        }
        self.write_new(slot, new);
    }

    fn slot(&self, venue: ScopeIndex) -> Option<usize> {
        self.by_venue.get(venue as usize).copied().flatten()
    }

    fn run_cancels(&mut self) -> bool {
        let mut any = false;
        loop {
            // Single cancels are marked in the registry a batch at a time
            // (one lock), then written one by one; requests keep their order.
            let mut batch = std::mem::take(&mut self.cancel_batch);
            batch.clear();
            let mut mass = None;
            while batch.len() < CANCEL_BATCH {
                match self.cancels.pop() {
                    Ok(CancelRequest::Cancel(id)) => batch.push(id),
                    Ok(CancelRequest::MassCancel { venue, scope }) => {
                        mass = Some((venue, scope));
                        break;
                    }
                    Err(_) => break,
                }
            }
            let done = batch.is_empty() && mass.is_none();
            any |= !done;
            self.cancel_batch(&batch);
            self.cancel_batch = batch;
            if let Some((venue, scope)) = mass {
                self.mass_cancel(venue, scope);
            }
            if done {
                return any;
            }
        }
    }

    fn cancel_batch(&mut self, ids: &[OrderId]) {
        if ids.is_empty() {
            return;
        }
        let mut venues = std::mem::take(&mut self.cancel_venues);
        self.registry.cancels_sent(ids, &mut venues);
        for (&id, venue) in ids.iter().zip(&venues) {
            // A failed write leaves the order PendingCancel: the drain
            // re-sends at half its deadline, then reports it.
            let _ = self.write_cancel(id, *venue);
        }
        self.cancel_venues = venues;
    }

    fn cancel_one(&mut self, id: OrderId) -> Result<(), VenueError> {
        let venue = self.registry.cancel_sent(id);
        self.write_cancel(id, venue)
    }

    /// Writes a cancel the registry has marked sent (`venue` is its answer).
    fn write_cancel(&mut self, id: OrderId, venue: Option<ScopeIndex>) -> Result<(), VenueError> {
        if !self.lease_still_ours() {
            return Err(VenueError::Unsupported(FENCED_WRITE));
        }
        let Some(venue) = venue else {
            self.counters
                .cancels_skipped
                .fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        let Some(slot) = self.slot(venue) else {
            self.counters.unknown_venue.fetch_add(1, Ordering::Relaxed);
            return Err(VenueError::Disconnected);
        };
        match self.sessions[slot].venue.cancel(id) {
            Ok(()) => {
                self.cancels_sent += 1;
                Ok(())
            }
            // The order stays PendingCancel: the drain re-sends or reports
            // it; a strategy's cancel hears of it.
            Err(e) => {
                self.counters.cancel_errors.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    fn mass_cancel(&mut self, venue: ScopeIndex, scope: MassCancelScope) {
        if !self.lease_still_ours() {
            self.counters.cancel_errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Some(slot) = self.slot(venue) else {
            self.counters.unknown_venue.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if !self.sessions[slot].venue.supports_mass_cancel() {
            let mut open = self.registry.open_orders(|o| {
                o.tags.venue == venue
                    && match scope {
                        MassCancelScope::All => true,
                        MassCancelScope::Instrument(i) => o.tags.instrument == i,
                    }
            });
            open.sort_unstable_by_key(|o| o.id);
            for o in open {
                let _ = self.cancel_one(o.id);
            }
            return;
        }
        // Written first, marked after: only this thread applies venue
        // answers, so none can reach the registry in between, and the drain
        // (which may hold the registry lock for its snapshot right now) does
        // not delay the message.
        let written = self.sessions[slot].venue.mass_cancel(scope);
        self.registry.mass_cancel_sent(venue, scope);
        match written {
            Ok(()) => self.cancels_sent += 1,
            Err(_) => {
                self.counters.cancel_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The generation this gateway has acknowledged.
    pub fn acked_generation(&self) -> u64 {
        self.acked
    }

    fn stats_handle(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// True without a lease, or while the epoch is still ours (`G3`
    /// before a cancel).
    #[inline]
    fn lease_still_ours(&self) -> bool {
        self.lease.as_ref().is_none_or(|l| l.still_ours())
    }

    fn logout_all(&mut self) {
        // A fenced gateway must not log out: the venue could cancel, on
        // disconnect, orders the new holder now looks after.
        if self
            .lease
            .as_ref()
            .is_some_and(|l| l.is_fenced() || !l.still_ours())
        {
            return;
        }
        for s in &mut self.sessions {
            let r = s.venue.logout();
            self.reports.logged_out(s.index, r);
        }
    }

    /// The position reports the planned shutdown asked for.
    pub fn position_reports(&self) -> PositionReports {
        self.reports.clone()
    }

    fn request_positions(&mut self) {
        self.reports_pending = vec![false; self.sessions.len()];
        for (i, s) in self.sessions.iter_mut().enumerate() {
            let r = s.venue.request_positions();
            self.reports_pending[i] = r.is_ok();
            self.reports.start(s.index, r);
        }
        if !self.reports_pending.contains(&true) {
            self.reports_pending.clear();
        }
    }

    /// `poll` of every session, handing the new events of a session with a
    /// pending position request to the reports.
    fn poll_capturing_positions(&mut self) {
        for (i, s) in self.sessions.iter_mut().enumerate() {
            let from = self.events.len();
            s.venue.poll(&mut self.events);
            if self.reports_pending.get(i).copied().unwrap_or(false)
                && self.events.len() > from
                && self.reports.capture(s.index, &self.events[from..])
            {
                self.reports_pending[i] = false;
            }
        }
        if !self.reports_pending.contains(&true) {
            self.reports_pending.clear();
        }
    }
}

/// Starts the gateway thread (the [`Runtime`](crate::runtime::Runtime)
/// does it for an engine built on it).
pub struct Gateway;

impl Gateway {
    /// Spawns the gateway thread over `venues`, writing to `registry`.
    pub fn spawn(
        block: Arc<ControlBlock>,
        registry: Arc<Registry>,
        venues: Vec<(ScopeIndex, Box<dyn Venue>)>,
        cfg: GatewayConfig,
    ) -> Result<GatewayHandle, GatewayError> {
        Gateway::spawn_leased(block, registry, venues, cfg, None)
    }

    /// [`Gateway::spawn`] under an acquired active-role lease (see
    /// [`GatewayCore::new_leased`]); the thread owns the lease from then on.
    pub fn spawn_leased(
        block: Arc<ControlBlock>,
        registry: Arc<Registry>,
        venues: Vec<(ScopeIndex, Box<dyn Venue>)>,
        cfg: GatewayConfig,
        lease: Option<Lease>,
    ) -> Result<GatewayHandle, GatewayError> {
        let mut core = GatewayCore::new_leased(block.clone(), registry, venues, &cfg, lease)?;
        let next_id = Arc::new(AtomicU64::new(cfg.first_order_id));
        let sender = core.order_sender(next_id);
        let link = core.take_drain_link();
        let counters = core.stats_handle();
        let reports = core.position_reports();
        let hand_overs = core.hand_overs.clone();
        let venue_indices: Vec<ScopeIndex> = core.sessions.iter().map(|s| s.index).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let died = Arc::new(OnceLock::new());
        let thread_died = died.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let cfg_realtime = cfg.realtime.is_some();
        let join = std::thread::Builder::new()
            .name("ks-gateway".into())
            .spawn(move || {
                if let Some(priority) = cfg.realtime {
                    if let Err(e) = crate::realtime::set_current_thread_fifo("gateway", priority) {
                        let _ = ready_tx.send(Err(e));
                        // The core drops here: the gateway role is given back.
                        return;
                    }
                }
                let _ = ready_tx.send(Ok(()));
                // A panic (in a venue adapter, most likely) is kept for
                // `GatewayHandle::check`; the thread then ends, and the role
                // is given back as the core drops.
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run(core, cfg, thread_stop)
                }));
                if let Err(payload) = ran {
                    let msg = payload
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "non-string panic payload".into());
                    let _ = thread_died.set(format!("the gateway thread panicked: {msg}"));
                }
            })
            .map_err(GatewayError::Thread)?;
        // A refused SCHED_FIFO is an error here, not a gateway silently at
        // normal priority.
        // Waited for only when a policy was asked for: otherwise waiting
        // for the new thread to be scheduled (milliseconds on a loaded
        // machine) would only delay the start (a promoted standby's first
        // order). The thread acts on whatever it finds when it runs.
        if let Some(Err(e)) = cfg_realtime.then(|| ready_rx.recv().ok()).flatten() {
            let _ = join.join();
            return Err(e.into());
        }
        Ok(GatewayHandle {
            block,
            sender,
            link,
            counters,
            reports,
            hand_overs,
            venue_indices,
            stop,
            died,
            join: Some(join),
        })
    }
}

fn run(mut core: GatewayCore, cfg: GatewayConfig, stop: Arc<AtomicBool>) {
    if let Some(id) = cfg.core {
        core_affinity::set_for_current(core_affinity::CoreId { id });
    }
    let mut backoff = Backoff::new(cfg.backoff);
    while !stop.load(Ordering::Acquire) {
        if core.turn() {
            backoff.reset();
        } else {
            backoff.snooze();
        }
    }
    // Last answers and cancels before leaving.
    core.turn();
    if cfg.logout_on_shutdown {
        core.logout_all();
    }
}

/// The running gateway. Dropping it stops and joins the thread. Held by the
/// thread that starts and stops the engine; strategies get
/// [`OrderSender`]s from it, never the handle.
pub struct GatewayHandle {
    block: Arc<ControlBlock>,
    sender: OrderSender,
    link: Option<DrainLink>,
    counters: Arc<Counters>,
    reports: PositionReports,
    hand_overs: Arc<HandOverDesk>,
    venue_indices: Vec<ScopeIndex>,
    stop: Arc<AtomicBool>,
    died: Arc<OnceLock<String>>,
    join: Option<JoinHandle<()>>,
}

impl GatewayHandle {
    /// `Err` with why when the gateway thread is gone without being told to
    /// stop (it panicked): from then on nothing acknowledges a kill and no
    /// cancel reaches a venue, a fatal condition for the engine.
    pub fn check(&self) -> Result<(), String> {
        if let Some(why) = self.died.get() {
            return Err(why.clone());
        }
        match &self.join {
            Some(j) if j.is_finished() && !self.stop.load(Ordering::Acquire) => {
                Err("the gateway thread ended without being told to stop".into())
            }
            _ => Ok(()),
        }
    }

    /// A sender for a strategy thread.
    pub fn order_sender(&self) -> OrderSender {
        self.sender.clone()
    }

    /// The drain's link; `None` after the first call (one drain per gateway).
    pub fn take_drain_link(&mut self) -> Option<DrainLink> {
        self.link.take()
    }

    /// Asks every venue session for its positions; the answers arrive in
    /// [`GatewayHandle::position_reports`].
    pub fn request_positions(&self) -> Result<(), SubmitError> {
        self.sender.request_positions()
    }

    /// Asks the gateway to log out of every venue session.
    pub fn logout_all(&self) -> Result<(), SubmitError> {
        self.sender.logout_all()
    }

    /// The venue scope indices of the sessions, in order.
    pub fn venue_indices(&self) -> Vec<ScopeIndex> {
        self.venue_indices.clone()
    }

    /// The venues' position reports (and logouts) so far.
    pub fn position_reports(&self) -> Vec<PositionReport> {
        self.reports.snapshot()
    }

    /// Counters.
    pub fn stats(&self) -> GatewayStats {
        read_stats(&self.block, &self.counters)
    }

    /// Waits until the gateway acknowledged `generation`; false on timeout.
    pub fn wait_acked(&self, generation: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let gs = self.block.gateway_status();
        let mut b = Backoff::new(BackoffConfig::default());
        while gs.acked_generation.load(Ordering::Acquire) < generation {
            if Instant::now() >= deadline {
                return false;
            }
            b.snooze();
        }
        true
    }

    /// Stops the thread (after one last turn) and joins it.
    pub fn shutdown(mut self) -> Result<GatewayStats, String> {
        self.stop_and_join()?;
        Ok(self.stats())
    }

    fn stop_and_join(&mut self) -> Result<(), String> {
        self.stop.store(true, Ordering::Release);
        match self.join.take() {
            Some(j) => j.join().map_err(|_| "gateway thread panicked".to_string()),
            None => Ok(()),
        }
    }
}

impl Drop for GatewayHandle {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

#[cfg(test)]
mod tests;
