//! The library's gateway and drain over the wire: a venue that drops the
//! session in the middle of a drain leaves the orders `CancelUnknown`; the
//! reconnect brings every answer the venue produced meanwhile (the fills
//! that raced the cancels, and the cancels), and they are applied.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use killswitch::control::{ControlBlock, Mode, Source};
use killswitch::drain::{Drain, DrainConfig};
use killswitch::gateway::{Gateway, GatewayConfig};
use killswitch::order::{OrderIntent, OrderState, Price, Qty, ScopeTags, Side};
use killswitch::registry::Registry;
use killswitch::venue::Venue;
use killswitch_tools::fix::client::{FixVenue, FixVenueConfig};
use killswitch_tools::venue_server::audit::working_orders;
use support::venue::{events, RawSession, VenueProc};

fn wait(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !cond() {
        assert!(Instant::now() < end, "{what}: not within {deadline:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn venue_drops_mid_drain_then_the_reconnect_reconciles_fills_and_cancels() {
    let dir = tempfile::tempdir().unwrap();
    let venue = VenueProc::start(
        dir.path(),
        &["SIM-A"],
        &["--instruments", "I0", "--cancel-on-disconnect", "off"],
    );
    let addr = venue.addr("SIM-A");
    let mut cfg = FixVenueConfig::new("SIM-A", addr, "ENGINE", "SIM-A");
    cfg.symbols = vec![(0, "I0".into())];
    cfg.dead_man = None;
    // The session comes back well after the drain's deadline.
    cfg.reconnect_min = Duration::from_secs(3);
    cfg.reconnect_max = Duration::from_secs(3);
    let mut fix = FixVenue::new(cfg);
    fix.connect(Duration::from_secs(30)).expect("logon");

    let block = Arc::new(ControlBlock::create(dir.path(), "wire").unwrap());
    let registry = Arc::new(Registry::new());
    let mut gateway = Gateway::spawn(
        block.clone(),
        registry.clone(),
        vec![(0, Box::new(fix) as Box<dyn Venue>)],
        GatewayConfig::default(),
    )
    .unwrap();
    let drain = Drain::spawn(
        block.clone(),
        gateway.take_drain_link().unwrap(),
        DrainConfig {
            cancel_deadline: Duration::from_millis(500),
            ..DrainConfig::emergency()
        },
        None,
    )
    .unwrap();
    let sender = gateway.order_sender();
    let ids: Vec<_> = (0..10)
        .map(|_| {
            sender
                .submit(&OrderIntent {
                    tags: ScopeTags::default(),
                    side: Side::Buy,
                    qty: Qty::from_lots(1),
                    price: Price::from_units(90),
                    position: Qty::ZERO,
                })
                .unwrap()
        })
        .collect();
    wait("acks", Duration::from_secs(30), || {
        ids.iter()
            .all(|id| registry.get(*id).map(|o| o.state) == Some(OrderState::Live))
    });

    // At the venue: answers now take 2 s; another participant fills our
    // three oldest buys (their reports are held back by the latency); the
    // next message of the engine's session drops the connection.
    let mut control = RawSession::logon(addr, "KS-CONTROL", "SIM-A");
    control.control("latency_us", "2000000");
    control.control("inject", "I0,sell,90,3");
    control.control("disconnect_after", "1");

    block.trip_global(Mode::Kill, Source::Api, "wire test: venue drops mid-drain");
    let outcome = drain
        .wait_outcome(Duration::from_secs(30))
        .expect("drain outcome");
    assert_eq!(
        outcome.open_at_snapshot, 10,
        "the fills were not known yet: {outcome:?}"
    );
    assert_eq!(outcome.mass_cancels, 1);
    assert_eq!(
        outcome.unknown.len(),
        10,
        "the session dropped: nothing confirmed by the deadline"
    );
    assert!(ids
        .iter()
        .all(|id| registry.get(*id).map(|o| o.state) == Some(OrderState::CancelUnknown)));

    // The gateway's session reconnects by itself; the venue resends.
    wait(
        "reconciliation after the reconnect",
        Duration::from_secs(60),
        || {
            registry.open_count() == 0
                && ids
                    .iter()
                    .all(|id| registry.get(*id).is_some_and(|o| o.state.is_terminal()))
        },
    );
    let state = |id| registry.get(id).map(|o| o.state);
    assert_eq!(
        ids[..3].iter().map(|id| state(*id)).collect::<Vec<_>>(),
        vec![Some(OrderState::Filled); 3],
        "fills that raced the cancels are applied"
    );
    assert_eq!(
        ids[3..].iter().map(|id| state(*id)).collect::<Vec<_>>(),
        vec![Some(OrderState::Canceled); 7]
    );
    assert_eq!(registry.position(0, 0), Qty::from_lots(3));
    let c = registry.counters();
    assert_eq!(
        (c.illegal_transitions, c.unknown_order_events, c.overfills),
        (0, 0, 0),
        "{c:?}"
    );

    let log = venue.audit("SIM-A");
    assert!(
        working_orders(&log, "ENGINE").is_empty(),
        "nothing rests at the venue"
    );
    assert_eq!(events(&log, "ENGINE", "fault-disconnect").len(), 1);
    assert!(
        !events(&log, "ENGINE", "resend").is_empty(),
        "answers came back by a resend"
    );
    assert_eq!(events(&log, "ENGINE", "logon").len(), 2);
    let stats = gateway.shutdown().unwrap();
    assert!(stats.disconnects >= 1);
    drain.shutdown().unwrap();
}
