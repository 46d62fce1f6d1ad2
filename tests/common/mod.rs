//! A small engine for integration tests: control block, registry, gateway
//! over simulated venues, drain. Every wait has a deadline.

#![allow(dead_code)] // each test file uses a different part of the rig

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use killswitch::backoff::{Backoff, BackoffConfig};
use killswitch::control::{ControlBlock, Operator, Tripper};
use killswitch::drain::{CheckpointHook, Drain, DrainConfig, DrainHandle};
use killswitch::gateway::{Gateway, GatewayConfig, GatewayHandle, OrderSender};
use killswitch::journal::record::OrderEventRecord;
use killswitch::journal::JournalWriter;
use killswitch::order::{
    OrderEvent, OrderId, OrderIntent, OrderState, Price, Qty, ScopeTags, Side,
};
use killswitch::registry::{EventSink, RecordedEvent, Registry};
use killswitch::runtime::{Answer, StrategyHandle};
use killswitch::venue::sim::{SimConfig, SimHandle, SimVenue, WireMessage};
use killswitch::venue::{MassCancelScope, NewOrder, Venue, VenueError, VenueEvent};

pub struct Rig {
    pub dir: tempfile::TempDir,
    pub block: Arc<ControlBlock>,
    pub tripper: Tripper,
    pub operator: Operator,
    pub registry: Arc<Registry>,
    pub gateway: GatewayHandle,
    pub drain: DrainHandle,
    pub sender: OrderSender,
    pub sims: Vec<SimHandle>,
}

/// Builds an engine with one simulated venue per config (venue tag = index).
pub fn rig(
    venues: Vec<SimConfig>,
    drain_cfg: DrainConfig,
    checkpoint: Option<CheckpointHook>,
) -> Rig {
    rig_with(venues, GatewayConfig::default(), drain_cfg, checkpoint)
}

/// [`rig`] with gateway settings.
pub fn rig_with(
    venues: Vec<SimConfig>,
    gateway_cfg: GatewayConfig,
    drain_cfg: DrainConfig,
    checkpoint: Option<CheckpointHook>,
) -> Rig {
    // /dev/shm when there is one: the control block is created with an
    // fsync, which costs milliseconds on a disk.
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .expect("tempdir");
    let block = Arc::new(ControlBlock::create(dir.path(), "rig").expect("control block"));
    let registry = Arc::new(Registry::new());
    let mut sessions: Vec<(u16, Box<dyn Venue>)> = Vec::new();
    let mut sims = Vec::new();
    for (i, cfg) in venues.into_iter().enumerate() {
        let (v, h) = SimVenue::new(cfg);
        sessions.push((i as u16, Box::new(v)));
        sims.push(h);
    }
    let mut gateway =
        Gateway::spawn(block.clone(), registry.clone(), sessions, gateway_cfg).expect("gateway");
    let link = gateway.take_drain_link().expect("link");
    let drain = Drain::spawn(link, drain_cfg, checkpoint).expect("drain");
    let sender = gateway.order_sender();
    Rig {
        dir,
        tripper: Tripper::new(block.clone()),
        operator: Operator::new(block.clone()),
        block,
        registry,
        gateway,
        drain,
        sender,
        sims,
    }
}

pub fn intent(venue: u16, strategy: u16, side: Side, px: i64, lots: i64) -> OrderIntent {
    OrderIntent {
        tags: ScopeTags {
            venue,
            strategy,
            ..Default::default()
        },
        side,
        qty: Qty::from_lots(lots),
        price: Price::from_units(px),
        position: Qty::ZERO,
    }
}

/// Submits, retrying while the ring is full, up to a deadline.
pub fn submit(sender: &OrderSender, i: &OrderIntent) -> OrderId {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match sender.submit(i) {
            Ok(id) => return id,
            Err(e) => {
                assert!(Instant::now() < deadline, "submit failed: {e}");
                std::thread::yield_now();
            }
        }
    }
}

/// Waits until `cond` holds, failing the test after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    let mut b = Backoff::new(BackoffConfig::default());
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        b.snooze();
    }
}

/// Waits until every id is in `state`.
pub fn wait_state(registry: &Registry, ids: &[OrderId], state: OrderState) {
    wait_for(
        &format!("{} orders {state:?}", ids.len()),
        Duration::from_secs(10),
        || {
            ids.iter()
                .all(|id| registry.get(*id).map(|r| r.state) == Some(state))
        },
    );
}

pub fn cancels_in_log(sim: &SimHandle) -> (usize, usize) {
    let log = sim.log();
    let single = log
        .iter()
        .filter(|e| matches!(e.msg, WireMessage::Cancel(_)))
        .count();
    let mass = log
        .iter()
        .filter(|e| matches!(e.msg, WireMessage::MassCancel(_)))
        .count();
    (single, mass)
}

/// A simulated venue shared by two engine lifetimes: the venue object
/// outlives the first engine's gateway, as an exchange outlives a crashed
/// engine. Each gateway gets a clone (a new "session" on the same venue).
#[derive(Clone)]
pub struct SharedVenue {
    name: String,
    venue: Arc<Mutex<SimVenue>>,
}

impl SharedVenue {
    pub fn new(cfg: SimConfig) -> (SharedVenue, SimHandle) {
        let name = cfg.name.clone();
        let (v, h) = SimVenue::new(cfg);
        (
            SharedVenue {
                name,
                venue: Arc::new(Mutex::new(v)),
            },
            h,
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimVenue> {
        self.venue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Venue for SharedVenue {
    fn name(&self) -> &str {
        &self.name
    }
    fn send(&mut self, order: &NewOrder) -> Result<(), VenueError> {
        self.lock().send(order)
    }
    fn cancel(&mut self, id: OrderId) -> Result<(), VenueError> {
        self.lock().cancel(id)
    }
    fn poll(&mut self, out: &mut Vec<VenueEvent>) {
        self.lock().poll(out)
    }
    fn supports_mass_cancel(&self) -> bool {
        self.lock().supports_mass_cancel()
    }
    fn mass_cancel(&mut self, scope: MassCancelScope) -> Result<(), VenueError> {
        self.lock().mass_cancel(scope)
    }
}

/// A session whose writes of the chosen orders fail part-way: the venue
/// gets the order (it rests there), but the write reports
/// [`VenueError::Ambiguous`] and the venue's acknowledgement is lost with
/// the broken write, as when a socket errors in the middle of a message.
pub struct AmbiguousVenue {
    pub inner: SimVenue,
    pub ambiguous: Arc<Mutex<Vec<OrderId>>>,
    lost_acks: Vec<OrderId>,
}

impl AmbiguousVenue {
    pub fn new(inner: SimVenue, ambiguous: Arc<Mutex<Vec<OrderId>>>) -> AmbiguousVenue {
        AmbiguousVenue {
            inner,
            ambiguous,
            lost_acks: Vec::new(),
        }
    }
}

impl Venue for AmbiguousVenue {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn send(&mut self, order: &NewOrder) -> Result<(), VenueError> {
        self.inner.send(order)?;
        if self.ambiguous.lock().unwrap().contains(&order.id) {
            self.lost_acks.push(order.id);
            return Err(VenueError::Ambiguous);
        }
        Ok(())
    }
    fn cancel(&mut self, id: OrderId) -> Result<(), VenueError> {
        self.inner.cancel(id)
    }
    fn poll(&mut self, out: &mut Vec<VenueEvent>) {
        let start = out.len();
        self.inner.poll(out);
        let lost = &self.lost_acks;
        let mut i = start;
        while i < out.len() {
            if matches!(out[i], VenueEvent::Acked { id } if lost.contains(&id)) {
                out.remove(i);
            } else {
                i += 1;
            }
        }
    }
    fn supports_mass_cancel(&self) -> bool {
        self.inner.supports_mass_cancel()
    }
    fn mass_cancel(&mut self, scope: MassCancelScope) -> Result<(), VenueError> {
        self.inner.mass_cancel(scope)
    }
}

/// Journals the registry's order events, as an engine's journal sink does
/// (the reference engine's is in `tools/`): what a restarted engine
/// rebuilds its open orders from.
pub struct JournalRecorder {
    pub journal: Arc<Mutex<JournalWriter>>,
    orders: std::collections::HashMap<OrderId, (OrderEventRecord, Qty)>,
}

impl JournalRecorder {
    pub fn new(journal: Arc<Mutex<JournalWriter>>) -> JournalRecorder {
        JournalRecorder {
            journal,
            orders: Default::default(),
        }
    }

    fn append(&self, rec: &OrderEventRecord) {
        self.journal
            .lock()
            .unwrap()
            .append(rec)
            .expect("journal append");
    }
}

impl EventSink for JournalRecorder {
    fn record(&mut self, event: &RecordedEvent) {
        match *event {
            RecordedEvent::NewOrder(o) => {
                let rec = OrderEventRecord::new_order(o.id, o.tags, o.side, o.price, o.qty);
                self.orders.insert(o.id, (rec, Qty::ZERO));
                self.append(&rec);
            }
            RecordedEvent::Recovered(o) => {
                let rec = OrderEventRecord::new_order(o.id, o.tags, o.side, o.price, o.qty);
                self.orders.insert(o.id, (rec, o.filled));
            }
            RecordedEvent::SendFailed { id, .. } => {
                if let Some((rec, _)) = self.orders.remove(&id) {
                    self.append(&rec.with_event(OrderEvent::Rejected));
                }
            }
            RecordedEvent::Fill { id, qty, price, .. } => {
                if let Some((rec, filled)) = self.orders.get_mut(&id) {
                    filled.0 += qty.0;
                    let r = rec.with_fill(qty, price, filled.0 >= rec.qty.0);
                    self.append(&r);
                }
            }
            RecordedEvent::Order {
                event: OrderEvent::Fill { .. },
                ..
            }
            | RecordedEvent::MassCancelSent { .. }
            | RecordedEvent::VenueRejected { .. }
            | RecordedEvent::Refused { .. } => {}
            RecordedEvent::Order {
                id, event, state, ..
            } => {
                if let Some((rec, _)) = self.orders.get(&id).copied() {
                    self.append(&rec.with_event(event));
                    if state.is_terminal() {
                        self.orders.remove(&id);
                    }
                }
            }
        }
    }
}

/// A one-lot buy at `px` units with these tags.
pub fn buy(tags: ScopeTags, px: i64) -> OrderIntent {
    OrderIntent {
        tags,
        side: Side::Buy,
        qty: Qty::from_lots(1),
        price: Price::from_units(px),
        position: Qty::ZERO,
    }
}

/// Reads answers until `pred` has matched one, within the deadline;
/// returns every answer read.
pub fn answers_until(h: &mut StrategyHandle, mut pred: impl FnMut(&Answer) -> bool) -> Vec<Answer> {
    let end = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        match h.try_answer() {
            Ok(Some(a)) => {
                let done = pred(&a);
                seen.push(a);
                if done {
                    return seen;
                }
            }
            Ok(None) => {
                assert!(Instant::now() < end, "no matching answer; saw {seen:?}");
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(lost) => panic!("{lost}"),
        }
    }
}
