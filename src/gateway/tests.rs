use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use super::*;
use crate::control::{Mode, ScopeKind, Source, TripRequest};
use crate::order::{OrderState, Price, Qty, ScopeTags, Side};
use crate::venue::sim::{FlowConfig, SimConfig, SimHandle, SimVenue, WireMessage};

struct Rig {
    _dir: tempfile::TempDir,
    block: Arc<ControlBlock>,
    registry: Arc<Registry>,
    core: GatewayCore,
    sender: OrderSender,
    sim: SimHandle,
}

fn rig(mass_cancel: bool, order_ring: usize) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let block = Arc::new(ControlBlock::create(dir.path(), "gw").unwrap());
    let registry = Arc::new(Registry::new());
    let mut cfg = SimConfig::new("SIM", 2, 7);
    cfg.flow = FlowConfig::off();
    cfg.mass_cancel = mass_cancel;
    let (venue, sim) = SimVenue::new(cfg);
    let gcfg = GatewayConfig {
        order_ring,
        ..GatewayConfig::default()
    };
    let core = GatewayCore::new(
        block.clone(),
        registry.clone(),
        vec![(0, Box::new(venue) as Box<dyn Venue>)],
        &gcfg,
    )
    .unwrap();
    let sender = core.order_sender(Arc::new(AtomicU64::new(1)));
    Rig {
        _dir: dir,
        block,
        registry,
        core,
        sender,
        sim,
    }
}

fn intent(strategy: u16, side: Side, position: i64) -> OrderIntent {
    OrderIntent {
        tags: ScopeTags {
            strategy,
            ..Default::default()
        },
        side,
        qty: Qty::from_lots(1),
        price: Price::from_units(90),
        position: Qty::from_lots(position),
    }
}

fn new_orders_in_log(sim: &SimHandle) -> Vec<OrderId> {
    sim.log()
        .iter()
        .filter_map(|e| match e.msg {
            WireMessage::New(o) => Some(o.id),
            _ => None,
        })
        .collect()
}

#[test]
fn orders_are_registered_and_sent_and_answers_applied() {
    let mut r = rig(true, 16);
    let a = r.sender.submit(&intent(0, Side::Buy, 0)).unwrap();
    let b = r.sender.submit(&intent(0, Side::Buy, 0)).unwrap();
    r.core.turn();
    r.core.turn();
    assert_eq!(new_orders_in_log(&r.sim), vec![a, b]);
    assert_eq!(r.registry.get(a).unwrap().state, OrderState::Live);
    assert_eq!(
        r.block.gateway_status().orders_sent.load(Ordering::Relaxed),
        2
    );
}

#[test]
fn an_order_that_passed_the_gate_is_refused_after_the_trip() {
    let mut r = rig(true, 16);
    let queued = r.sender.submit(&intent(0, Side::Buy, 0)).unwrap();
    let t = r.block.trip_global(Mode::Kill, Source::Api, "test");
    let g = t.transition.current().generation();
    assert_eq!(r.core.acked_generation(), 0);
    r.core.turn();
    assert_eq!(r.core.acked_generation(), g);
    assert_eq!(
        r.block
            .gateway_status()
            .acked_generation
            .load(Ordering::Acquire),
        g
    );
    assert!(
        new_orders_in_log(&r.sim).is_empty(),
        "nothing reached the venue"
    );
    assert!(r.registry.get(queued).is_none(), "never registered");
    assert_eq!(read_stats(&r.block, &r.core.counters).refused_on_recheck, 1);
    assert!(matches!(
        r.sender.submit(&intent(0, Side::Buy, 0)),
        Err(SubmitError::Refused(_))
    ));
}

#[test]
fn scoped_kill_refuses_only_its_strategy_on_recheck() {
    let mut r = rig(true, 16);
    let mm = r.block.register_name(ScopeKind::Strategy, "mm").unwrap();
    let arb = r.block.register_name(ScopeKind::Strategy, "arb").unwrap();
    let to_mm = r.sender.submit(&intent(mm, Side::Buy, 0)).unwrap();
    let to_arb = r.sender.submit(&intent(arb, Side::Buy, 0)).unwrap();
    r.block
        .trip(&TripRequest {
            mode: Mode::Kill,
            scopes: vec![(ScopeKind::Strategy, "mm".into())],
            source: Source::Api,
            reason: "mm misbehaves".into(),
        })
        .unwrap();
    r.core.turn();
    assert_eq!(new_orders_in_log(&r.sim), vec![to_arb]);
    assert!(r.registry.get(to_mm).is_none());
}

#[test]
fn reduce_only_recheck_uses_the_registry_position() {
    let mut r = rig(true, 16);
    // The strategy claims a long position of 5; the registry knows it is flat.
    let sell = r.sender.submit(&intent(0, Side::Sell, 5)).unwrap();
    r.block
        .trip_global(Mode::ReduceOnly, Source::Api, "wind down");
    r.core.turn();
    assert!(r.registry.get(sell).is_none(), "flat: a sell adds risk");
    assert_eq!(read_stats(&r.block, &r.core.counters).refused_on_recheck, 1);
}

#[test]
fn cancels_jump_the_queue_of_new_orders() {
    let mut r = rig(true, 64);
    let first = r.sender.submit(&intent(0, Side::Buy, 0)).unwrap();
    r.core.turn();
    for _ in 0..50 {
        r.sender.submit(&intent(0, Side::Buy, 0)).unwrap();
    }
    let mut link = r.core.take_drain_link().unwrap();
    link.cancels.try_push(CancelRequest::Cancel(first)).unwrap();
    r.core.turn();
    let log = r.sim.log();
    assert!(
        matches!(log[1].msg, WireMessage::Cancel(id) if id == first),
        "the cancel is written before the 50 queued orders: {:?}",
        log[1]
    );
    assert_eq!(new_orders_in_log(&r.sim).len(), 51);
    r.core.turn();
    assert_eq!(r.registry.get(first).unwrap().state, OrderState::Canceled);
}

#[test]
fn full_ring_pushes_back_and_nothing_is_lost() {
    let mut r = rig(true, 4);
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(r.sender.submit(&intent(0, Side::Buy, 0)).unwrap());
    }
    assert_eq!(
        r.sender.submit(&intent(0, Side::Buy, 0)),
        Err(SubmitError::RingFull)
    );
    r.core.turn();
    ids.push(r.sender.submit(&intent(0, Side::Buy, 0)).unwrap());
    r.core.turn();
    assert_eq!(new_orders_in_log(&r.sim), ids);
}

#[test]
fn mass_cancel_falls_back_to_single_cancels() {
    let mut r = rig(false, 16);
    let a = r.sender.submit(&intent(0, Side::Buy, 0)).unwrap();
    let b = r.sender.submit(&intent(0, Side::Buy, 0)).unwrap();
    r.core.turn();
    let mut link = r.core.take_drain_link().unwrap();
    assert!(!link.venues[0].mass_cancel);
    link.cancels
        .try_push(CancelRequest::MassCancel {
            venue: 0,
            scope: MassCancelScope::All,
        })
        .unwrap();
    r.core.turn();
    r.core.turn();
    let cancels: Vec<OrderId> = r
        .sim
        .log()
        .iter()
        .filter_map(|e| match e.msg {
            WireMessage::Cancel(id) => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(cancels, vec![a, b]);
    assert_eq!(r.registry.get(b).unwrap().state, OrderState::Canceled);
}

/// A venue whose every write fails: part-way (`Ambiguous`) or before any
/// byte left (`Disconnected`).
struct FailingVenue(VenueError);

impl Venue for FailingVenue {
    fn name(&self) -> &str {
        "FAILING"
    }
    fn send(&mut self, _: &NewOrder) -> Result<(), VenueError> {
        Err(self.0)
    }
    fn cancel(&mut self, _: OrderId) -> Result<(), VenueError> {
        Err(self.0)
    }
    fn poll(&mut self, _: &mut Vec<VenueEvent>) {}
}

#[test]
fn an_ambiguous_send_is_send_unknown_and_a_failed_one_is_rejected_locally() {
    for (err, want) in [
        (VenueError::Ambiguous, OrderState::SendUnknown),
        (VenueError::Disconnected, OrderState::Rejected),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let block = Arc::new(ControlBlock::create(dir.path(), "gw").unwrap());
        let registry = Arc::new(Registry::new());
        let mut core = GatewayCore::new(
            block,
            registry.clone(),
            vec![(0, Box::new(FailingVenue(err)) as Box<dyn Venue>)],
            &GatewayConfig::default(),
        )
        .unwrap();
        let sender = core.order_sender(Arc::new(AtomicU64::new(1)));
        let id = sender.submit(&intent(0, Side::Buy, 0)).unwrap();
        core.turn();
        assert_eq!(registry.get(id).map(|o| o.state), Some(want), "{err:?}");
        let stats = read_stats(&core.block, &core.counters);
        assert_eq!(
            stats.send_ambiguous,
            u64::from(err == VenueError::Ambiguous)
        );
    }
}
