//! The simulated exchange itself: books, synthetic flow and fault knobs,
//! serving any number of order-entry sessions.
//!
//! A session is one firm identity's view of the venue: its own orders (ids
//! are per session: two engines may both number from 1), positions,
//! subscriptions and answer queue. The in-process [`super::SimVenue`] is one
//! session of an exchange of its own; the `ks-venue` server (in the tools
//! package) opens one per FIX identity. No networking here: the library
//! stays lean.
//!
//! Answers are queued per session with a due time (the latency knob) and
//! taken with [`Exchange::take_due`]; whoever owns the exchange decides when
//! a session can receive them (connected or not).
//!
//! # Invariants
//! * An order is resting in a book iff it is in its session's `resting` map.
//! * Every order a session sent has a [`OrderFate`] from the moment it was
//!   accepted or rejected, so an order-status request always has an answer.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::book::{Book, Owner, Trade};
use super::flow::{FlowConfig, Rng};
use super::handle::{Shared, SimHandle};
use super::{SimConfig, SimInstrument};
use crate::clock::mono_ns;
use crate::order::{OrderId, Price, Qty, ScopeIndex, Side};
use crate::venue::{CancelRejectReason, MassCancelScope, NewOrder, RejectReason, VenueEvent};

/// Index of a session within one exchange.
pub type SessionId = u32;

/// What became of an order a session sent (the venue's side of the story).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderFate {
    /// Resting in the book (possibly partially filled).
    Working,
    /// Completely filled.
    Filled,
    /// Cancelled (on request, by a mass cancel, on disconnect or by a timer).
    Canceled,
    /// Refused on arrival.
    Rejected(RejectReason),
}

/// One answer queued for a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// An order event, a position line, market data.
    Event(VenueEvent),
    /// The answer to an order-status request: the order's fate when the
    /// request arrived (`None`: never seen). Queued behind the events
    /// before it, so it never overtakes a fill.
    Status {
        /// The order asked about.
        id: OrderId,
        /// Its fate then.
        fate: Option<OrderFate>,
    },
}

/// What a single cancel did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The order was resting and is now cancelled.
    Canceled,
    /// The ignore-cancels knob swallowed it: no answer.
    Ignored,
    /// Refused: the order is no longer working (filled or cancelled).
    TooLate,
    /// Refused: the venue never saw that order.
    Unknown,
}

struct Market {
    spec: SimInstrument,
    book: Book,
    mid: i64,
    participants: VecDeque<u64>,
}

#[derive(Default)]
struct Session {
    outbound: VecDeque<(u64, Answer)>,
    resting: FxHashMap<OrderId, ScopeIndex>,
    fates: FxHashMap<OrderId, OrderFate>,
    positions: HashMap<(ScopeIndex, ScopeIndex), i64>,
    /// Subscribed instruments and the top last published to this session.
    subscriptions: BTreeMap<ScopeIndex, (Option<i64>, Option<i64>)>,
}

/// The exchange; see the module docs.
pub struct Exchange {
    markets: BTreeMap<ScopeIndex, Market>,
    sessions: Vec<Session>,
    rng: Rng,
    flow: FlowConfig,
    next_flow_ns: u64,
    next_participant: u64,
    mass_cancel: bool,
    trades: Vec<Trade>,
    shared: Arc<Shared>,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Exchange {
    /// An exchange with no session yet, and the handle on its knobs.
    pub fn new(cfg: &SimConfig) -> (Exchange, SimHandle) {
        let shared = Arc::new(Shared::default());
        shared
            .event_latency_ns
            .store(cfg.event_latency.as_nanos() as u64, Ordering::Relaxed);
        shared.reject_ppm.store(cfg.reject_ppm, Ordering::Relaxed);
        shared
            .cancel_on_disconnect
            .store(cfg.cancel_on_disconnect, Ordering::Relaxed);
        shared.mass_cancel.store(cfg.mass_cancel, Ordering::Relaxed);
        let markets = cfg
            .instruments
            .iter()
            .map(|s| {
                (
                    s.index,
                    Market {
                        spec: *s,
                        book: Book::new(),
                        mid: s.mid.0,
                        participants: VecDeque::new(),
                    },
                )
            })
            .collect();
        let exchange = Exchange {
            markets,
            sessions: Vec::new(),
            rng: Rng::new(cfg.seed),
            flow: cfg.flow,
            next_flow_ns: mono_ns(),
            next_participant: 1,
            mass_cancel: cfg.mass_cancel,
            trades: Vec::new(),
            shared: shared.clone(),
        };
        (exchange, SimHandle { shared })
    }

    /// The knobs, counters and log shared with the handle.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Opens a new session (a firm identity) and returns its id.
    pub fn open_session(&mut self) -> SessionId {
        self.sessions.push(Session::default());
        (self.sessions.len() - 1) as SessionId
    }

    /// True when `instrument` is listed.
    pub fn lists(&self, instrument: ScopeIndex) -> bool {
        self.markets.contains_key(&instrument)
    }

    /// Whether mass cancel is offered now (config, or the handle's knob).
    pub fn supports_mass_cancel(&self) -> bool {
        self.mass_cancel && self.shared.mass_cancel.load(Ordering::Relaxed)
    }

    /// Orders of `session` resting in the books now.
    pub fn resting_count(&self, session: SessionId) -> usize {
        self.sessions
            .get(session as usize)
            .map_or(0, |s| s.resting.len())
    }

    /// Orders of `session` resting now, sorted.
    pub fn resting_orders(&self, session: SessionId) -> Vec<OrderId> {
        let mut ids: Vec<OrderId> = self
            .sessions
            .get(session as usize)
            .map(|s| s.resting.keys().copied().collect())
            .unwrap_or_default();
        ids.sort_unstable();
        ids
    }

    /// What became of one order of `session`; `None` if never seen.
    pub fn fate(&self, session: SessionId, id: OrderId) -> Option<OrderFate> {
        self.sessions
            .get(session as usize)
            .and_then(|s| s.fates.get(&id).copied())
    }

    fn session_mut(&mut self, session: SessionId) -> Option<&mut Session> {
        self.sessions.get_mut(session as usize)
    }

    fn emit(&mut self, session: SessionId, ev: VenueEvent) {
        self.answer(session, Answer::Event(ev));
    }

    fn answer(&mut self, session: SessionId, a: Answer) {
        let due = mono_ns() + self.shared.event_latency_ns.load(Ordering::Relaxed);
        if let Some(s) = self.session_mut(session) {
            s.outbound.push_back((due, a));
        }
    }

    /// Moves the answers of `session` that are due by `now` into `out`.
    pub fn take_due(&mut self, session: SessionId, now: u64, out: &mut Vec<Answer>) {
        let Some(s) = self.session_mut(session) else {
            return;
        };
        while let Some((due, _)) = s.outbound.front() {
            if *due > now {
                break;
            }
            if let Some((_, ev)) = s.outbound.pop_front() {
                out.push(ev);
            }
        }
    }

    /// Moves every queued answer of `session` into `out`, due or not (a
    /// venue flushing a session before it logs it out).
    pub fn take_all(&mut self, session: SessionId, out: &mut Vec<Answer>) {
        if let Some(s) = self.session_mut(session) {
            out.extend(s.outbound.drain(..).map(|(_, a)| a));
        }
    }

    fn publish_resting(&self) {
        let n: usize = self.sessions.iter().map(|s| s.resting.len()).sum();
        self.shared.our_resting.store(n as u64, Ordering::Relaxed);
    }

    /// A new order from `session`: validated, acked or rejected, matched,
    /// and what is left rests.
    pub fn new_order(&mut self, session: SessionId, order: &NewOrder) {
        let id = order.id;
        let seen = self
            .sessions
            .get(session as usize)
            .is_none_or(|s| s.fates.contains_key(&id));
        let reject = if seen {
            Some(RejectReason::DuplicateId)
        } else if order.qty.0 <= 0 || order.price.0 <= 0 {
            Some(RejectReason::InvalidOrder)
        } else if !self.markets.contains_key(&order.tags.instrument) {
            Some(RejectReason::UnknownInstrument)
        } else if self
            .rng
            .chance_ppm(self.shared.reject_ppm.load(Ordering::Relaxed))
        {
            Some(RejectReason::VenueRisk)
        } else {
            None
        };
        if let Some(reason) = reject {
            bump(&self.shared.rejects);
            if let Some(s) = self.session_mut(session) {
                // A duplicate keeps the fate of the order that owns the id.
                s.fates.entry(id).or_insert(OrderFate::Rejected(reason));
            }
            self.emit(session, VenueEvent::Rejected { id, reason });
            return;
        }
        if let Some(s) = self.session_mut(session) {
            s.fates.insert(id, OrderFate::Working);
        }
        self.emit(session, VenueEvent::Acked { id });
        let owner = Owner::Ours {
            session,
            id,
            account: order.tags.account,
        };
        self.match_order(
            order.tags.instrument,
            owner,
            order.side,
            order.price.0,
            order.qty.0,
        );
    }

    fn cancel_resting(&mut self, session: SessionId, id: OrderId) -> bool {
        let Some(s) = self.sessions.get_mut(session as usize) else {
            return false;
        };
        let Some(instrument) = s.resting.remove(&id) else {
            return false;
        };
        s.fates.insert(id, OrderFate::Canceled);
        let ok = self
            .markets
            .get_mut(&instrument)
            .and_then(|m| m.book.cancel_ours(session, id))
            .is_some();
        self.publish_resting();
        ok
    }

    /// Answers a successful cancel, unless the drop knob eats the answer.
    fn answer_cancel(&mut self, session: SessionId, id: OrderId) {
        let ppm = self.shared.drop_cancel_ack_ppm.load(Ordering::Relaxed);
        if self.rng.chance_ppm(ppm) {
            bump(&self.shared.dropped_cancel_acks);
        } else {
            self.emit(session, VenueEvent::Canceled { id });
        }
    }

    /// A single cancel from `session`.
    pub fn cancel(&mut self, session: SessionId, id: OrderId) -> CancelOutcome {
        if self.shared.ignore_cancels.load(Ordering::Relaxed) {
            bump(&self.shared.ignored_cancels);
            return CancelOutcome::Ignored;
        }
        if self.cancel_resting(session, id) {
            self.answer_cancel(session, id);
            return CancelOutcome::Canceled;
        }
        let (outcome, reason) = match self.fate(session, id) {
            Some(_) => (CancelOutcome::TooLate, CancelRejectReason::TooLate),
            None => (CancelOutcome::Unknown, CancelRejectReason::UnknownOrder),
        };
        self.emit(session, VenueEvent::CancelRejected { id, reason });
        outcome
    }

    /// A mass cancel from `session`: `None` when the venue does not offer
    /// it, else the orders it cancelled, sorted (each answered `Canceled`
    /// unless the drop knob eats the answer).
    pub fn mass_cancel(
        &mut self,
        session: SessionId,
        scope: MassCancelScope,
    ) -> Option<Vec<OrderId>> {
        if !self.supports_mass_cancel() {
            return None;
        }
        if self.shared.ignore_cancels.load(Ordering::Relaxed) {
            bump(&self.shared.ignored_cancels);
            return Some(Vec::new());
        }
        let mut ids: Vec<OrderId> = self
            .sessions
            .get(session as usize)
            .map(|s| {
                s.resting
                    .iter()
                    .filter(|(_, i)| match scope {
                        MassCancelScope::All => true,
                        MassCancelScope::Instrument(want) => **i == want,
                    })
                    .map(|(id, _)| *id)
                    .collect()
            })
            .unwrap_or_default();
        ids.sort_unstable();
        ids.retain(|&id| {
            let done = self.cancel_resting(session, id);
            if done {
                self.answer_cancel(session, id);
            }
            done
        });
        Some(ids)
    }

    /// Cancels every resting order of `session` on the venue's own account
    /// (cancel-on-disconnect, a dead-man timer); each is answered
    /// `Canceled`, never dropped or ignored (no fault knob applies).
    /// Returns the ids, sorted.
    pub fn cancel_all(&mut self, session: SessionId) -> Vec<OrderId> {
        let ids = self.resting_orders(session);
        let mut done = Vec::with_capacity(ids.len());
        for id in ids {
            if self.cancel_resting(session, id) {
                self.emit(session, VenueEvent::Canceled { id });
                done.push(id);
            }
        }
        done
    }

    /// Queues the answer to an order-status request ([`Answer::Status`]).
    pub fn order_status(&mut self, session: SessionId, id: OrderId) {
        let fate = self.fate(session, id);
        self.answer(session, Answer::Status { id, fate });
    }

    /// Answers a position request: one `Position` per (instrument, account)
    /// the session has traded, then `PositionsEnd`.
    pub fn positions(&mut self, session: SessionId) {
        let mut lines: Vec<_> = self
            .sessions
            .get(session as usize)
            .map(|s| s.positions.iter().map(|(k, v)| (*k, *v)).collect())
            .unwrap_or_default();
        lines.sort_unstable();
        for ((instrument, account), qty) in lines {
            self.emit(
                session,
                VenueEvent::Position {
                    instrument,
                    account,
                    qty: Qty(qty),
                },
            );
        }
        self.emit(session, VenueEvent::PositionsEnd);
    }

    /// Starts top-of-book updates of `instrument` for `session`; false if
    /// the instrument is not listed.
    pub fn subscribe(&mut self, session: SessionId, instrument: ScopeIndex) -> bool {
        if !self.markets.contains_key(&instrument) {
            return false;
        }
        if let Some(s) = self.session_mut(session) {
            s.subscriptions.insert(instrument, (None, None));
        }
        true
    }

    /// Stops top-of-book updates of `instrument` for `session`.
    pub fn unsubscribe(&mut self, session: SessionId, instrument: ScopeIndex) {
        if let Some(s) = self.session_mut(session) {
            s.subscriptions.remove(&instrument);
        }
    }

    /// Matches an order in `instrument`'s book and reports each session's
    /// side of the trades.
    fn match_order(
        &mut self,
        instrument: ScopeIndex,
        owner: Owner,
        side: Side,
        price: i64,
        qty: i64,
    ) {
        let mut trades = std::mem::take(&mut self.trades);
        trades.clear();
        let rested = match self.markets.get_mut(&instrument) {
            Some(m) => m.book.submit(owner, side, price, qty, &mut trades),
            None => 0,
        };
        if let (Owner::Ours { session, id, .. }, true) = (owner, rested > 0) {
            if let Some(s) = self.session_mut(session) {
                s.resting.insert(id, instrument);
            }
        }
        let passive_side = match side {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        };
        for t in &trades {
            for (who, leaves, s) in [
                (t.resting, t.resting_leaves, passive_side),
                (t.aggressor, t.aggressor_leaves, side),
            ] {
                if let Owner::Ours {
                    session,
                    id,
                    account,
                } = who
                {
                    bump(&self.shared.our_trades);
                    if let Some(sess) = self.session_mut(session) {
                        if leaves == 0 {
                            sess.resting.remove(&id);
                            sess.fates.insert(id, OrderFate::Filled);
                        }
                        let p = sess.positions.entry((instrument, account)).or_insert(0);
                        *p = p.saturating_add(s.sign() * t.qty);
                    }
                    self.emit(
                        session,
                        VenueEvent::Fill {
                            id,
                            qty: Qty(t.qty),
                            price: Price(t.price),
                            leaves: Qty(leaves),
                        },
                    );
                }
            }
        }
        self.trades = trades;
        self.publish_resting();
    }

    fn participant_order(&mut self, instrument: ScopeIndex, side: Side, price: i64, qty: i64) {
        let pid = self.next_participant;
        self.next_participant += 1;
        bump(&self.shared.participant_orders);
        self.match_order(instrument, Owner::Other(pid), side, price, qty);
        if let Some(m) = self.markets.get_mut(&instrument) {
            m.participants.push_back(pid);
            // The oldest participant orders leave the book (a no-op for
            // those that already traded away).
            while m.participants.len() > self.flow.max_resting {
                match m.participants.pop_front() {
                    Some(old) => {
                        m.book.cancel_other(old);
                    }
                    None => break,
                }
            }
        }
    }

    /// Advances the exchange to `now`: injected orders, synthetic flow
    /// (or, with the liquidity withdrawn, the participants' orders pulled
    /// and no flow), then top-of-book updates for subscribers.
    pub fn run(&mut self, now: u64) {
        self.run_injected();
        if self.shared.liquidity_withdrawn.load(Ordering::Acquire) {
            self.withdraw_participants();
            // The flow resumes from when the liquidity comes back, not
            // with a burst of the arrivals it skipped.
            self.next_flow_ns = now;
        } else {
            self.run_flow(now);
        }
        self.publish_tops();
    }

    /// Cancels every participant order resting in the books (a no-op once
    /// they are gone: the queue of resting participants is empty).
    fn withdraw_participants(&mut self) {
        for m in self.markets.values_mut() {
            while let Some(pid) = m.participants.pop_front() {
                m.book.cancel_other(pid);
            }
        }
    }

    /// Advances the synthetic flow to `now`.
    fn run_flow(&mut self, now: u64) {
        if self.flow.interval_ns == 0 || self.markets.is_empty() {
            return;
        }
        let mut n = 0;
        while self.next_flow_ns <= now {
            if n >= self.flow.max_arrivals_per_poll {
                self.next_flow_ns = now + self.flow.interval_ns;
                break;
            }
            n += 1;
            self.next_flow_ns += self.flow.interval_ns;
            let pick = self.rng.below(self.markets.len() as u64) as usize;
            let Some(&instrument) = self.markets.keys().nth(pick) else {
                return;
            };
            let (mid, tick) = match self.markets.get_mut(&instrument) {
                Some(m) => {
                    // Random walk of the mid, one tick at a time.
                    match self.rng.below(8) {
                        0 => m.mid += m.spec.tick.0,
                        1 => m.mid = (m.mid - m.spec.tick.0).max(m.spec.tick.0),
                        _ => {}
                    }
                    (m.mid, m.spec.tick.0.max(1))
                }
                None => continue,
            };
            let side = if self.rng.below(2) == 0 {
                Side::Buy
            } else {
                Side::Sell
            };
            let aggressive = self.rng.chance_ppm(self.flow.aggressive_ppm);
            let away = 1 + self.rng.below(self.flow.max_ticks_away.max(1) as u64) as i64;
            // Passive orders rest on their side of the mid; aggressive ones
            // reach as far to the other side.
            let sign = if aggressive { 1 } else { -1 } * side.sign();
            let price = (mid + sign * away * tick).max(tick);
            let lots = 1 + self.rng.below(self.flow.max_lots.max(1) as u64) as i64;
            self.participant_order(instrument, side, price, lots * crate::order::QTY_SCALE);
        }
    }

    fn run_injected(&mut self) {
        let shared = self.shared.clone();
        let mut q = shared.injected.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(inj) = q.pop_front() {
            self.participant_order(inj.instrument, inj.side, inj.price.0, inj.qty.0);
            shared.injected_done.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn publish_tops(&mut self) {
        let mut tops = Vec::new();
        for (session, s) in self.sessions.iter_mut().enumerate() {
            for (instrument, last) in s.subscriptions.iter_mut() {
                let Some(m) = self.markets.get(instrument) else {
                    continue;
                };
                let top = (m.book.best_bid(), m.book.best_ask());
                if top != *last {
                    *last = top;
                    tops.push((
                        session as SessionId,
                        VenueEvent::TopOfBook {
                            instrument: *instrument,
                            bid: top.0.map(Price),
                            ask: top.1.map(Price),
                        },
                    ));
                }
            }
        }
        for (session, t) in tops {
            self.emit(session, t);
        }
    }
}
