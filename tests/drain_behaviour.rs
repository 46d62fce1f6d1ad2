//! The drain end to end over the simulated venue: mass cancel, single
//! cancels, scoped kills, a venue that ignores cancels, fills racing
//! cancels, a gateway that never acknowledges, and the checkpoint hook.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use killswitch::control::{
    ControlBlock, DrainPhase, DrainSnapshot, Mode, ResetRequest, ScopeKind, Source, TripRequest,
    Tripper,
};
use killswitch::drain::{Drain, DrainConfig, DrainError, UnknownReason};
use killswitch::gateway::{GatewayConfig, GatewayCore};
use killswitch::order::{OrderId, OrderState, Price, Qty, Side};
use killswitch::registry::Registry;
use killswitch::venue::sim::{FlowConfig, SimConfig, SimVenue};
use killswitch::venue::Venue;

const WAIT: Duration = Duration::from_secs(20);

fn quiet_venue(seed: u64, mass_cancel: bool) -> SimConfig {
    let mut c = SimConfig::new("SIM", 2, seed);
    c.flow = FlowConfig::off();
    c.mass_cancel = mass_cancel;
    c
}

fn short(deadline_ms: u64) -> DrainConfig {
    DrainConfig {
        cancel_deadline: Duration::from_millis(deadline_ms),
        ..DrainConfig::emergency()
    }
}

/// Rests `n` buy orders far below the market on `venue` for `strategy`.
fn rest(r: &Rig, venue: u16, strategy: u16, n: usize) -> Vec<OrderId> {
    let ids: Vec<OrderId> = (0..n)
        .map(|i| {
            submit(
                &r.sender,
                &intent(venue, strategy, Side::Buy, 50 + i as i64 % 7, 1),
            )
        })
        .collect();
    wait_state(&r.registry, &ids, OrderState::Live);
    ids
}

#[test]
fn global_kill_uses_mass_cancel_and_publishes_status() {
    let seqs = Arc::new(Mutex::new(Vec::new()));
    let seen = seqs.clone();
    let hook = Box::new(move |o: &killswitch::drain::DrainOutcome| {
        seen.lock().unwrap().push(o.canceled.len());
        Ok(4242)
    });
    let r = rig(
        vec![quiet_venue(1, true)],
        DrainConfig::emergency(),
        Some(hook),
    );
    let ids = rest(&r, 0, 0, 20);
    r.tripper.trip_global(Mode::Kill, Source::Api, "test");
    let out = r.drain.wait_outcome(WAIT).expect("drain finished");
    assert!(out.is_clean(), "{out}");
    assert_eq!(out.open_at_snapshot, 20);
    let mut canceled = out.canceled.clone();
    canceled.sort();
    assert_eq!(canceled, ids);
    assert_eq!(out.mass_cancels, 1);
    assert_eq!(
        cancels_in_log(&r.sims[0]),
        (0, 1),
        "one mass cancel, no singles"
    );
    assert_eq!(*seqs.lock().unwrap(), vec![20], "hook saw the cancel phase");
    let s = DrainSnapshot::read(&r.block);
    assert_eq!(s.phase, DrainPhase::Done);
    assert_eq!(s.open_at_snapshot, 20);
    assert_eq!(s.orders_confirmed, 20);
    assert_eq!(s.orders_unknown, 0);
    assert_eq!(s.checkpoint_seq, 4242);
    assert!(s.t_trip > 0 && s.t_trip <= s.t_trip_seen);
    assert!(s.t_trip_seen <= s.t_gateway_ack && s.t_gateway_ack <= s.t_first_cancel);
    assert!(s.t_first_cancel <= s.t_last_ack && s.t_last_ack <= s.t_checkpoint);
    assert!(s.t_checkpoint <= s.t_done);
    assert_eq!(r.registry.open_count(), 0);
}

#[test]
fn without_mass_cancel_every_order_gets_a_single_cancel() {
    let r = rig(vec![quiet_venue(2, false)], DrainConfig::emergency(), None);
    let ids = rest(&r, 0, 0, 30);
    r.tripper.trip_global(Mode::Kill, Source::Api, "test");
    let out = r.drain.wait_outcome(WAIT).expect("drain finished");
    assert!(out.is_clean(), "{out}");
    assert_eq!(out.canceled.len(), ids.len());
    assert_eq!(out.mass_cancels, 0);
    assert_eq!(cancels_in_log(&r.sims[0]), (30, 0));
}

#[test]
fn scoped_kill_cancels_only_its_scope_and_never_mass_cancels() {
    let r = rig(vec![quiet_venue(3, true)], DrainConfig::emergency(), None);
    let mm = r.block.register_name(ScopeKind::Strategy, "mm").unwrap();
    let arb = r.block.register_name(ScopeKind::Strategy, "arb").unwrap();
    let killed = rest(&r, 0, mm, 5);
    let kept = rest(&r, 0, arb, 5);
    r.operator
        .trip(&TripRequest {
            mode: Mode::Kill,
            scopes: vec![(ScopeKind::Strategy, "mm".into())],
            source: Source::Cli,
            reason: "mm".into(),
        })
        .unwrap();
    let out = r.drain.wait_outcome(WAIT).expect("drain finished");
    assert!(out.is_clean() && !out.global, "{out}");
    let mut c = out.canceled.clone();
    c.sort();
    assert_eq!(c, killed);
    assert_eq!(
        cancels_in_log(&r.sims[0]),
        (5, 0),
        "mass cancel would hit arb"
    );
    for id in &kept {
        assert_eq!(r.registry.get(*id).unwrap().state, OrderState::Live);
    }
    // arb still trades after the scoped kill.
    let later = submit(&r.sender, &intent(0, arb, Side::Buy, 50, 1));
    wait_state(&r.registry, &[later], OrderState::Live);
}

#[test]
fn venue_ignoring_cancels_ends_in_cancel_unknown_by_the_deadline() {
    let r = rig(vec![quiet_venue(4, true)], short(300), None);
    let ids = rest(&r, 0, 0, 8);
    r.sims[0].set_ignore_cancels(true);
    r.tripper.trip_global(Mode::Kill, Source::Api, "test");
    let out = r.drain.wait_outcome(WAIT).expect("drain never hangs");
    assert_eq!(out.unknown.len(), 8, "{out}");
    assert!(out.unknown.iter().all(
        |u| u.reason == UnknownReason::NoAnswer && u.state_before == OrderState::PendingCancel
    ));
    assert_eq!(out.resent, 8, "one re-send per order at half the deadline");
    // First round: one mass cancel; re-send: one single cancel each. The
    // gateway writes the re-sent cancels on its own thread, which a loaded
    // machine may run after the drain reports.
    wait_for("the re-sent cancels at the venue", WAIT, || {
        cancels_in_log(&r.sims[0]).0 >= 8
    });
    assert_eq!(cancels_in_log(&r.sims[0]), (8, 1));
    for id in &ids {
        assert_eq!(
            r.registry.get(*id).unwrap().state,
            OrderState::CancelUnknown
        );
    }
    let spent = out.timings.t_last_ack - out.timings.t_trip_seen;
    assert!(spent >= 300_000_000, "unknown only after the deadline");
    let s = DrainSnapshot::read(&r.block);
    assert_eq!(s.orders_unknown, 8);
    assert_eq!(s.phase, DrainPhase::Done);
    let refused = r.operator.reset(&ResetRequest {
        source: Source::Cli,
        reason: "try".into(),
        force: false,
        expected_generation: None,
    });
    assert!(refused.is_err(), "reset refused while orders are unknown");
}

#[test]
fn dropped_cancel_acks_end_in_cancel_unknown() {
    let r = rig(vec![quiet_venue(5, false)], short(200), None);
    let ids = rest(&r, 0, 0, 4);
    r.sims[0].set_drop_cancel_ack_ppm(1_000_000);
    r.tripper.trip_global(Mode::Kill, Source::Api, "test");
    let out = r.drain.wait_outcome(WAIT).expect("drain finished");
    // The venue cancelled them (first round) but never said so; the re-send
    // is refused as "unknown order", which moves them back to Live.
    assert_eq!(out.unknown.len(), 4, "{out}");
    assert!(out
        .unknown
        .iter()
        .all(|u| u.reason == UnknownReason::CancelRefused && u.state_before == OrderState::Live));
    assert_eq!(r.sims[0].stats().our_resting, 0);
    assert_eq!(r.sims[0].stats().dropped_cancel_acks, 4);
    for id in &ids {
        assert_eq!(
            r.registry.get(*id).unwrap().state,
            OrderState::CancelUnknown
        );
    }
}

#[test]
fn fills_racing_cancels_are_applied_not_lost() {
    let mut cfg = quiet_venue(6, true);
    // Long enough that the fills are still in flight after the trip, the
    // drain's wake-up, the gateway's ack and the snapshot, even on a loaded
    // machine; well under the drain's 5 s cancel deadline.
    cfg.event_latency = Duration::from_millis(500);
    let r = rig(vec![cfg], DrainConfig::emergency(), None);
    let full = submit(&r.sender, &intent(0, 0, Side::Buy, 100, 2));
    let part = submit(&r.sender, &intent(0, 0, Side::Buy, 99, 5));
    wait_state(&r.registry, &[full, part], OrderState::Live);
    // A seller takes all of `full` and 3 of `part`; the fills are on the
    // wire (500 ms) when the kill lands.
    let t = r.sims[0].inject(0, Side::Sell, Price::from_units(99), Qty::from_lots(5));
    wait_for("injected order matched", WAIT, || {
        r.sims[0].injected_processed() > t
    });
    assert_eq!(
        r.registry.get(full).unwrap().fills,
        0,
        "fill still in flight"
    );
    r.tripper.trip_global(Mode::Kill, Source::Api, "test");
    let out = r.drain.wait_outcome(WAIT).expect("drain finished");
    assert!(out.is_clean(), "{out}");
    assert_eq!(out.filled, vec![full]);
    assert_eq!(out.canceled, vec![part]);
    let mut fills = out.fills_during_drain.clone();
    fills.sort_by_key(|f| f.id);
    assert_eq!(fills.len(), 2);
    assert_eq!((fills[0].id, fills[0].qty), (full, Qty::from_lots(2)));
    assert_eq!((fills[1].id, fills[1].qty), (part, Qty::from_lots(3)));
    assert_eq!(r.registry.position(0, 0), Qty::from_lots(5));
    let p = r.registry.get(part).unwrap();
    assert_eq!(
        (p.state, p.filled),
        (OrderState::Canceled, Qty::from_lots(3))
    );
    assert_eq!(DrainSnapshot::read(&r.block).fills_during_drain, 2);
    let c = r.registry.counters();
    assert_eq!(c.illegal_transitions, 0);
}

/// A gateway that stalls past the acknowledgement deadline: the drain
/// publishes the failure (phase `GatewayAckLate`, so `emergency`
/// escalates) and keeps waiting; when the gateway comes back and
/// acknowledges, the drain snapshots and cancels every order as usual.
/// Before issue 9 it gave up at the deadline with 0 cancels and never came
/// back to the generation, leaving every order live.
#[test]
fn a_late_gateway_ack_is_published_and_the_drain_still_cancels_everything() {
    let dir = tempfile::tempdir().unwrap();
    let block = Arc::new(ControlBlock::create(dir.path(), "stall").unwrap());
    let registry = Arc::new(Registry::new());
    let (venue, sim) = SimVenue::new(quiet_venue(7, true));
    // A gateway core driven by this thread: it acknowledges only when turned.
    let mut core = GatewayCore::new(
        block.clone(),
        registry.clone(),
        vec![(0, Box::new(venue) as Box<dyn Venue>)],
        &GatewayConfig::default(),
    )
    .unwrap();
    let sender = core.order_sender(Arc::new(std::sync::atomic::AtomicU64::new(1)));
    let ids: Vec<OrderId> = (0..6)
        .map(|i| submit(&sender, &intent(0, 0, Side::Buy, 50 + i, 1)))
        .collect();
    wait_for("orders resting", WAIT, || {
        core.turn();
        ids.iter()
            .all(|id| registry.get(*id).map(|r| r.state) == Some(OrderState::Live))
    });
    let cfg = DrainConfig {
        gateway_ack_deadline: Duration::from_millis(100),
        ..DrainConfig::emergency()
    };
    let drain = Drain::spawn(core.take_drain_link().unwrap(), cfg, None).unwrap();
    Tripper::new(block.clone()).trip_global(Mode::Kill, Source::Api, "test");
    // The gateway is stalled (not turned): the failure is published...
    wait_for("GatewayAckLate published", WAIT, || {
        DrainSnapshot::read(&block).phase == DrainPhase::GatewayAckLate
    });
    let s = DrainSnapshot::read(&block);
    assert!(s.gateway_ack_late && s.cancels_sent == 0, "{s:?}");
    // ...and the drain is still on it: no report, nothing given up.
    assert_eq!(drain.try_outcome(), Ok(None));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(drain.try_outcome(), Ok(None), "the drain keeps waiting");
    assert!(block.drain_incomplete().is_some(), "on record meanwhile");
    // The gateway comes back: the drain snapshots and cancels as usual.
    let mut out = None;
    wait_for("the drain's report", WAIT, || {
        core.turn();
        out = drain.try_outcome().unwrap();
        out.is_some()
    });
    let out = out.unwrap();
    let mut canceled = out.canceled.clone();
    canceled.sort();
    assert_eq!(canceled, ids, "{out}");
    assert_eq!(out.open_at_snapshot, 6);
    assert!(
        matches!(
            out.error,
            Some(DrainError::GatewayAckLate {
                generation: 1,
                acked_after: Some(_),
                ..
            })
        ),
        "{out}"
    );
    assert_eq!(sim.stats().our_resting, 0, "nothing left at the venue");
    let s = DrainSnapshot::read(&block);
    assert_eq!(
        s.phase,
        DrainPhase::Failed,
        "a missed deadline is a failure"
    );
    assert!(s.gateway_ack_late && s.orders_confirmed == 6);
    assert!(s.t_gateway_ack >= s.t_trip_seen + 100_000_000);
}

#[test]
fn a_failing_checkpoint_marks_the_drain_failed() {
    let hook = Box::new(|_: &killswitch::drain::DrainOutcome| Err("disk full".to_string()));
    let r = rig(
        vec![quiet_venue(8, true)],
        DrainConfig::emergency(),
        Some(hook),
    );
    rest(&r, 0, 0, 2);
    r.tripper.trip_global(Mode::Kill, Source::Api, "test");
    let out = r.drain.wait_outcome(WAIT).expect("drain finished");
    assert_eq!(out.canceled.len(), 2);
    assert_eq!(
        out.error,
        Some(DrainError::CheckpointFailed("disk full".into()))
    );
    assert_eq!(DrainSnapshot::read(&r.block).phase, DrainPhase::Failed);
}
