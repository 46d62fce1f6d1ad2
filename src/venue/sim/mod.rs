//! A simulated exchange session: real price-time-priority books, other
//! participants trading against us, and fault knobs.
//!
//! * One [`book::Book`] per instrument. Our orders match against resting
//!   liquidity (ours or other participants') at the resting price, and rest
//!   what is left; fills and partial fills come back as `Fill` events with
//!   the venue's leaves quantity.
//! * A seeded synthetic flow ([`flow::FlowConfig`]) of other participants'
//!   orders arrives as wall time passes (advanced at every call into the
//!   venue): passive orders around a drifting mid, some aggressive ones
//!   that take our resting orders. Orders can also be injected through the
//!   [`SimHandle`] for deterministic scenarios.
//! * Every request the venue accepted is logged with a `CLOCK_MONOTONIC`
//!   timestamp and a sequence number ([`SimHandle::log`]), so a test proves
//!   what reached the exchange and when.
//! * Answers are delivered in order (one session, like one TCP stream) after
//!   the configured latency. Fault knobs: latency, reject rate, dropped
//!   cancel acks, ignored cancels, disconnect with optional
//!   cancel-on-disconnect (answers are held while disconnected and
//!   delivered after the reconnect, like a FIX resend).
//!
//! It runs in-process behind [`Venue`]; the trait is message-shaped so the
//! same engine can later talk to it over loopback TCP.

pub(crate) mod book;
pub(crate) mod flow;
mod handle;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::clock::mono_ns;
use crate::order::{OrderId, Price, Qty, ScopeIndex, Side};
use crate::venue::{
    CancelRejectReason, MassCancelScope, NewOrder, RejectReason, Venue, VenueError, VenueEvent,
};
use book::{Book, Owner, Trade};
pub use flow::FlowConfig;
pub(crate) use flow::Rng;
use handle::Shared;
pub use handle::{LogEntry, SimHandle, SimStats, WireMessage};

/// An instrument traded on the simulated venue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimInstrument {
    /// Its scope index (the `instrument` tag of our orders).
    pub index: ScopeIndex,
    /// Starting mid price.
    pub mid: Price,
    /// Tick size.
    pub tick: Price,
}

/// Configuration of a simulated venue.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Name for reports.
    pub name: String,
    /// Instruments listed.
    pub instruments: Vec<SimInstrument>,
    /// Seed of the synthetic flow and of the fault dice.
    pub seed: u64,
    /// Synthetic flow.
    pub flow: FlowConfig,
    /// Whether the venue offers mass cancel.
    pub mass_cancel: bool,
    /// Initial answer latency.
    pub event_latency: Duration,
    /// Initial reject rate, ppm.
    pub reject_ppm: u32,
    /// Initial cancel-on-disconnect setting.
    pub cancel_on_disconnect: bool,
}

impl SimConfig {
    /// A venue listing `instruments` instruments (indices 0..n, mid 100,
    /// tick 0.01), default flow, mass cancel on, no latency, no rejects.
    pub fn new(name: &str, instruments: u16, seed: u64) -> SimConfig {
        SimConfig {
            name: name.to_string(),
            instruments: (0..instruments)
                .map(|i| SimInstrument {
                    index: i,
                    mid: Price::from_units(100),
                    tick: Price(crate::order::PRICE_SCALE / 100),
                })
                .collect(),
            seed,
            flow: FlowConfig::default(),
            mass_cancel: true,
            event_latency: Duration::ZERO,
            reject_ppm: 0,
            cancel_on_disconnect: false,
        }
    }
}

struct Market {
    spec: SimInstrument,
    book: Book,
    mid: i64,
    participants: VecDeque<u64>,
    last_top: (Option<i64>, Option<i64>),
    subscribed: bool,
}

/// The simulated venue session; give it to the gateway, keep the [`SimHandle`].
pub struct SimVenue {
    name: String,
    markets: BTreeMap<ScopeIndex, Market>,
    /// Instrument of each of our resting orders (Fx: ids are ours, and the
    /// venue's own bookkeeping should not dominate what runs on the
    /// gateway thread in benchmarks).
    resting: FxHashMap<OrderId, ScopeIndex>,
    seen_ids: FxHashSet<OrderId>,
    positions: HashMap<(ScopeIndex, ScopeIndex), i64>,
    outbound: VecDeque<(u64, VenueEvent)>,
    urgent: Vec<VenueEvent>,
    rng: Rng,
    flow: FlowConfig,
    next_flow_ns: u64,
    next_participant: u64,
    mass_cancel: bool,
    connected: bool,
    logged_out: bool,
    log_seq: u64,
    trades: Vec<Trade>,
    shared: Arc<Shared>,
}

impl SimVenue {
    /// A venue and the handle that controls it.
    pub fn new(cfg: SimConfig) -> (SimVenue, SimHandle) {
        let shared = Arc::new(Shared::default());
        shared
            .event_latency_ns
            .store(cfg.event_latency.as_nanos() as u64, Ordering::Relaxed);
        shared.reject_ppm.store(cfg.reject_ppm, Ordering::Relaxed);
        shared
            .cancel_on_disconnect
            .store(cfg.cancel_on_disconnect, Ordering::Relaxed);
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
                        last_top: (None, None),
                        subscribed: false,
                    },
                )
            })
            .collect();
        let venue = SimVenue {
            name: cfg.name,
            markets,
            resting: FxHashMap::default(),
            seen_ids: FxHashSet::default(),
            positions: HashMap::new(),
            outbound: VecDeque::new(),
            urgent: Vec::new(),
            rng: Rng::new(cfg.seed),
            flow: cfg.flow,
            next_flow_ns: mono_ns(),
            next_participant: 1,
            mass_cancel: cfg.mass_cancel,
            connected: true,
            logged_out: false,
            log_seq: 0,
            trades: Vec::new(),
            shared: shared.clone(),
        };
        (venue, SimHandle { shared })
    }

    fn emit(&mut self, ev: VenueEvent) {
        let due = mono_ns() + self.shared.event_latency_ns.load(Ordering::Relaxed);
        self.outbound.push_back((due, ev));
    }

    /// Checks the session before a request: applies a disconnect or a
    /// reconnect asked through the handle, then refuses if down.
    fn session(&mut self) -> Result<(), VenueError> {
        // A stuck session (fault knob): the write blocks the caller, as a
        // full TCP send buffer would, until the knob is cleared.
        while flag(&self.shared.hang_writes) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        self.sync_connection();
        if self.logged_out {
            Err(VenueError::LoggedOut)
        } else if !self.connected {
            Err(VenueError::Disconnected)
        } else {
            Ok(())
        }
    }

    fn sync_connection(&mut self) {
        let down = self.shared.disconnected.load(Ordering::Acquire);
        if down && self.connected {
            self.connected = false;
            self.urgent.push(VenueEvent::Disconnected);
            if self.shared.cancel_on_disconnect.load(Ordering::Relaxed) {
                let ids: Vec<OrderId> = self.resting.keys().copied().collect();
                for id in ids {
                    if self.cancel_resting(id) {
                        bump(&self.shared.cancelled_on_disconnect);
                        self.emit(VenueEvent::Canceled { id });
                    }
                }
            }
        } else if !down && !self.connected {
            self.connected = true;
            self.urgent.push(VenueEvent::Reconnected);
        }
    }

    fn log(&mut self, msg: WireMessage) {
        let entry = LogEntry {
            seq: self.log_seq,
            mono_ns: mono_ns(),
            msg,
        };
        self.log_seq += 1;
        self.shared
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(entry);
    }

    fn cancel_resting(&mut self, id: OrderId) -> bool {
        let Some(instrument) = self.resting.remove(&id) else {
            return false;
        };
        let ok = self
            .markets
            .get_mut(&instrument)
            .and_then(|m| m.book.cancel_ours(id))
            .is_some();
        self.shared
            .our_resting
            .store(self.resting.len() as u64, Ordering::Relaxed);
        ok
    }

    /// Answers a successful cancel, unless the drop knob eats the answer.
    fn answer_cancel(&mut self, id: OrderId) {
        let ppm = self.shared.drop_cancel_ack_ppm.load(Ordering::Relaxed);
        if self.rng.chance_ppm(ppm) {
            bump(&self.shared.dropped_cancel_acks);
        } else {
            self.emit(VenueEvent::Canceled { id });
        }
    }

    /// Matches an order in `instrument`'s book and reports our side of the trades.
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
        if let (Owner::Ours { id, .. }, true) = (owner, rested > 0) {
            self.resting.insert(id, instrument);
        }
        for t in &trades {
            let passive_side = match side {
                Side::Buy => Side::Sell,
                Side::Sell => Side::Buy,
            };
            for (who, leaves, s) in [
                (t.resting, t.resting_leaves, passive_side),
                (t.aggressor, t.aggressor_leaves, side),
            ] {
                if let Owner::Ours { id, account } = who {
                    bump(&self.shared.our_trades);
                    if leaves == 0 {
                        self.resting.remove(&id);
                    }
                    let p = self.positions.entry((instrument, account)).or_insert(0);
                    *p = p.saturating_add(s.sign() * t.qty);
                    self.emit(VenueEvent::Fill {
                        id,
                        qty: Qty(t.qty),
                        price: Price(t.price),
                        leaves: Qty(leaves),
                    });
                }
            }
        }
        self.trades = trades;
        self.shared
            .our_resting
            .store(self.resting.len() as u64, Ordering::Relaxed);
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
        for (i, m) in self.markets.iter_mut() {
            let top = (m.book.best_bid(), m.book.best_ask());
            if m.subscribed && top != m.last_top {
                m.last_top = top;
                tops.push(VenueEvent::TopOfBook {
                    instrument: *i,
                    bid: top.0.map(Price),
                    ask: top.1.map(Price),
                });
            }
        }
        for t in tops {
            self.emit(t);
        }
    }
}

fn bump(counter: &std::sync::atomic::AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn flag(b: &AtomicBool) -> bool {
    b.load(Ordering::Relaxed)
}

impl Venue for SimVenue {
    fn name(&self) -> &str {
        &self.name
    }

    fn send(&mut self, order: &NewOrder) -> Result<(), VenueError> {
        self.session()?;
        self.log(WireMessage::New(*order));
        let id = order.id;
        let reject = if !self.seen_ids.insert(id) {
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
            self.emit(VenueEvent::Rejected { id, reason });
            return Ok(());
        }
        self.emit(VenueEvent::Acked { id });
        let owner = Owner::Ours {
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
        Ok(())
    }

    fn cancel(&mut self, id: OrderId) -> Result<(), VenueError> {
        self.session()?;
        self.log(WireMessage::Cancel(id));
        if flag(&self.shared.ignore_cancels) {
            bump(&self.shared.ignored_cancels);
        } else if self.cancel_resting(id) {
            self.answer_cancel(id);
        } else {
            self.emit(VenueEvent::CancelRejected {
                id,
                reason: CancelRejectReason::UnknownOrder,
            });
        }
        Ok(())
    }

    fn supports_mass_cancel(&self) -> bool {
        self.mass_cancel
    }

    fn mass_cancel(&mut self, scope: MassCancelScope) -> Result<(), VenueError> {
        if !self.mass_cancel {
            return Err(VenueError::Unsupported("mass cancel"));
        }
        self.session()?;
        self.log(WireMessage::MassCancel(scope));
        if flag(&self.shared.ignore_cancels) {
            bump(&self.shared.ignored_cancels);
            return Ok(());
        }
        let mut ids: Vec<OrderId> = self
            .resting
            .iter()
            .filter(|(_, i)| match scope {
                MassCancelScope::All => true,
                MassCancelScope::Instrument(want) => **i == want,
            })
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        for id in ids {
            if self.cancel_resting(id) {
                self.answer_cancel(id);
            }
        }
        Ok(())
    }

    fn request_positions(&mut self) -> Result<(), VenueError> {
        self.session()?;
        self.log(WireMessage::PositionRequest);
        let mut lines: Vec<_> = self.positions.iter().map(|(k, v)| (*k, *v)).collect();
        lines.sort_unstable();
        for ((instrument, account), qty) in lines {
            self.emit(VenueEvent::Position {
                instrument,
                account,
                qty: Qty(qty),
            });
        }
        self.emit(VenueEvent::PositionsEnd);
        Ok(())
    }

    fn subscribe(&mut self, instrument: ScopeIndex) -> Result<(), VenueError> {
        self.session()?;
        self.log(WireMessage::Subscribe(instrument));
        if let Some(m) = self.markets.get_mut(&instrument) {
            m.subscribed = true;
            m.last_top = (None, None);
        }
        Ok(())
    }

    fn unsubscribe(&mut self, instrument: ScopeIndex) -> Result<(), VenueError> {
        self.session()?;
        self.log(WireMessage::Unsubscribe(instrument));
        if let Some(m) = self.markets.get_mut(&instrument) {
            m.subscribed = false;
        }
        Ok(())
    }

    fn logout(&mut self) -> Result<(), VenueError> {
        self.session()?;
        self.log(WireMessage::Logout);
        self.logged_out = true;
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<VenueEvent>) {
        self.sync_connection();
        out.append(&mut self.urgent);
        if self.logged_out {
            return;
        }
        let now = mono_ns();
        self.run_injected();
        self.run_flow(now);
        self.publish_tops();
        if !self.connected {
            return;
        }
        // Answers produced above are due now too when there is no latency.
        let now = mono_ns();
        while let Some((due, _)) = self.outbound.front() {
            if *due > now {
                break;
            }
            if let Some((_, ev)) = self.outbound.pop_front() {
                out.push(ev);
            }
        }
    }
}

#[cfg(test)]
mod tests;
