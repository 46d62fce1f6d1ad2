//! A small engine for integration tests: control block, registry, gateway
//! over simulated venues, drain. Every wait has a deadline.

#![allow(dead_code)] // each test file uses a different part of the rig

use std::sync::Arc;
use std::time::{Duration, Instant};

use killswitch::backoff::{Backoff, BackoffConfig};
use killswitch::control::ControlBlock;
use killswitch::drain::{CheckpointHook, Drain, DrainConfig, DrainHandle};
use killswitch::gateway::{Gateway, GatewayConfig, GatewayHandle, OrderSender};
use killswitch::order::{OrderId, OrderIntent, OrderState, Price, Qty, ScopeTags, Side};
use killswitch::registry::Registry;
use killswitch::venue::sim::{SimConfig, SimHandle, SimVenue, WireMessage};
use killswitch::venue::Venue;

pub struct Rig {
    pub dir: tempfile::TempDir,
    pub block: Arc<ControlBlock>,
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
    let drain = Drain::spawn(block.clone(), link, drain_cfg, checkpoint).expect("drain");
    let sender = gateway.order_sender();
    Rig {
        dir,
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
