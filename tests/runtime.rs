//! The runtime builder as an engine uses it: strategy handles (submit,
//! cancel, replace, answers for every outcome), supervise (open-order
//! counts, trip journaling, a kill drained, a dead drain thread), the
//! ordered stop, restart with recovered orders, the snapshot policy, and
//! the gateway role refusing a second runtime on the same block.
//!
//! Signal handlers are process-wide, so these in-process tests leave them
//! out; `tools/tests/custom_venue.rs` runs an engine with them.

mod common;

use std::time::Duration;

use common::{answers_until, buy, wait_for, SharedVenue};
use killswitch::control::{ControlBlock, GatewaySnapshot, Mode, Operator, Source, TripRequest};
use killswitch::journal::JournalConfig;
use killswitch::order::{OrderId, OrderState, Price, Qty, ScopeTags, Side};
use killswitch::registry::Refusal;
use killswitch::runtime::{
    exit, Answer, RecoveredOrders, Runtime, RuntimeError, SnapshotPolicy, StopReason,
    StrategyHandle, SuperviseOptions,
};
use killswitch::venue::sim::{FlowConfig, SimConfig, SimVenue, WireMessage};
use killswitch::venue::RejectReason;

const WAIT: Duration = Duration::from_secs(20);

fn quiet(name: &str) -> SimConfig {
    let mut c = SimConfig::new(name, 2, 7);
    c.flow = FlowConfig::off();
    c
}

fn shm() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .unwrap()
}

#[test]
fn every_outcome_of_an_order_reaches_the_strategy_that_sent_it() {
    let dir = shm();
    let (venue, sim) = SimVenue::new(quiet("SIM"));
    let rt = Runtime::builder(dir.path(), "answers")
        .venue("SIM", venue)
        .start()
        .unwrap();
    let mut mm = rt.strategy("mm").unwrap();
    let mut other = rt.strategy("other").unwrap();
    assert!(matches!(
        rt.strategy("mm"),
        Err(RuntimeError::StrategyTaken(_))
    ));
    let tags = mm.tags("SIM", "BTC/USD", "desk-1").unwrap();

    // Ack, then a cancel.
    let a = mm.submit(&buy(tags, 90)).unwrap();
    answers_until(&mut mm, |x| *x == Answer::Accepted { id: a });
    mm.cancel(a).unwrap();
    answers_until(&mut mm, |x| *x == Answer::Canceled { id: a });

    // Replace: a new id on the wire, the old one cancelled.
    let b = mm.submit(&buy(tags, 91)).unwrap();
    answers_until(&mut mm, |x| *x == Answer::Accepted { id: b });
    let c = mm
        .replace(b, Price::from_units(92), Qty::from_lots(2))
        .unwrap();
    assert_ne!(b, c);
    let seen = answers_until(&mut mm, |x| *x == Answer::Accepted { id: c });
    assert!(seen.contains(&Answer::Canceled { id: b }), "{seen:?}");
    let rec = rt.order(c).unwrap();
    assert_eq!(
        (rec.price, rec.qty),
        (Price::from_units(92), Qty::from_lots(2))
    );

    // Another strategy's order, and an order no longer open.
    other.cancel(c).unwrap();
    answers_until(&mut other, |x| {
        *x == Answer::CancelRefused {
            id: c,
            why: Refusal::NotYours,
        }
    });
    mm.cancel(a).unwrap();
    answers_until(&mut mm, |x| {
        *x == Answer::CancelRefused {
            id: a,
            why: Refusal::NotOpen,
        }
    });

    // A venue the gateway has no session for: dropped, and said so.
    let nowhere = mm.tags("NOWHERE", "BTC/USD", "desk-1").unwrap();
    let d = mm.submit(&buy(nowhere, 90)).unwrap();
    answers_until(&mut mm, |x| {
        *x == Answer::Refused {
            id: d,
            why: Refusal::UnknownVenue,
        }
    });

    // The venue's own reject.
    sim.set_reject_ppm(1_000_000);
    let e = mm.submit(&buy(tags, 90)).unwrap();
    answers_until(
        &mut mm,
        |x| matches!(x, Answer::Rejected { id, reason: RejectReason::VenueRisk, not_written: None } if *id == e),
    );
    sim.set_reject_ppm(0);

    // A fill: a crossing order from the venue's other side.
    let f = mm.submit(&buy(tags, 100)).unwrap();
    answers_until(&mut mm, |x| *x == Answer::Accepted { id: f });
    sim.inject(
        tags.instrument,
        Side::Sell,
        Price::from_units(100),
        Qty::from_lots(1),
    );
    answers_until(
        &mut mm,
        |x| matches!(x, Answer::Filled { id, complete: true, .. } if *id == f),
    );

    // A kill: the strategy's gate refuses at once, and the drain's cancel
    // of the resting order comes back as an answer too.
    rt.tripper()
        .trip_global(Mode::Kill, Source::Api, "test: kill");
    assert!(matches!(
        mm.submit(&buy(tags, 90)),
        Err(killswitch::gateway::SubmitError::Refused(_))
    ));
    answers_until(&mut mm, |x| *x == Answer::Canceled { id: c });
    // Nothing reached the venue for the refused submit.
    assert!(!sim
        .log()
        .iter()
        .any(|l| matches!(l.msg, WireMessage::New(o) if o.id.0 > f.0)));
}

fn rest(h: &mut StrategyHandle, tags: ScopeTags, n: usize) -> Vec<OrderId> {
    let ids: Vec<OrderId> = (0..n)
        .map(|i| h.submit(&buy(tags, 80 + (i % 10) as i64)).unwrap())
        .collect();
    let mut left: std::collections::HashSet<OrderId> = ids.iter().copied().collect();
    answers_until(h, |a| {
        if let Answer::Accepted { id } = a {
            left.remove(id);
        }
        left.is_empty()
    });
    ids
}

#[test]
fn supervise_counts_open_orders_journals_the_trip_drains_and_stops_in_order() {
    let dir = shm();
    let jdir = tempfile::tempdir().unwrap();
    let (venue, sim) = SimVenue::new(quiet("SIM"));
    let mut rt = Runtime::builder(dir.path(), "supervise")
        .venue("SIM", venue)
        .journal(jdir.path(), JournalConfig::small_for_tests())
        .start()
        .unwrap();
    let mut mm = rt.strategy("mm").unwrap();
    let tags = mm.tags("SIM", "BTC/USD", "desk-1").unwrap();
    let ids = rest(&mut mm, tags, 20);
    let block = ControlBlock::open(dir.path(), "supervise").unwrap();
    let operator = Operator::new(std::sync::Arc::new(block));
    let token = rt.trip_token();
    let trip = std::thread::spawn(move || {
        // The supervisor publishes the open-order count: wait for it, then kill.
        wait_for("open orders published", WAIT, || {
            GatewaySnapshot::read(operator.block()).open_orders == 20
        });
        operator
            .trip(&TripRequest {
                mode: Mode::Kill,
                scopes: vec![],
                source: Source::Cli,
                reason: "test: supervise".into(),
            })
            .unwrap();
    });
    let supervised = rt.supervise(SuperviseOptions::default());
    trip.join().unwrap();
    assert!(token.is_killed());
    assert_eq!(supervised.stopped, StopReason::KillDrained);
    let kill = supervised.kill_drain().expect("the kill's drain");
    assert_eq!(kill.open_at_snapshot, 20);
    assert_eq!(kill.canceled.len(), 20, "{kill}");
    assert!(kill.checkpoint_seq.is_some());
    assert_eq!(supervised.exit_code(), exit::OK);
    for id in &ids {
        assert_eq!(rt.order(*id).unwrap().state, OrderState::Canceled);
    }
    assert_eq!(sim.stats().our_resting, 0);

    // The strategy still holds its handle: shutdown waits, then says so.
    let stopped = rt.shutdown_with(Duration::from_millis(50));
    assert_eq!(stopped.strategies_still_running, vec!["mm".to_string()]);
    assert!(stopped.gateway.is_ok() && stopped.drain.is_ok());
    assert!(matches!(stopped.durable, Some(Ok(_))));
    drop(mm);
    drop(rt);
    // The journal holds the trip (journaled from the audit ring) and the
    // drain's checkpoint, and no order open.
    let rebuilt = killswitch::journal::rebuild(jdir.path()).unwrap();
    assert!(rebuilt.state.open_orders.is_empty());
    let trip = rebuilt.state.last_trip.expect("trip journaled");
    assert_eq!(trip.mode, Mode::Kill);
    assert_eq!(trip.reason, "test: supervise");
}

/// An engine stops with orders resting (no kill), the venue outlives it;
/// the restarted runtime cancels every one of them before its first new
/// order reaches the venue, and its ids continue the journal's.
#[test]
fn a_restart_cancels_what_the_journal_shows_open_before_any_new_order() {
    let dir = shm();
    let jdir = tempfile::tempdir().unwrap();
    let (venue, sim) = SharedVenue::new(quiet("SIM"));
    let first_ids = {
        let rt = Runtime::builder(dir.path(), "restart")
            .venue("SIM", venue.clone())
            .journal(jdir.path(), JournalConfig::small_for_tests())
            .start()
            .unwrap();
        let mut mm = rt.strategy("mm").unwrap();
        let tags = mm.tags("SIM", "BTC/USD", "desk-1").unwrap();
        rest(&mut mm, tags, 12)
        // Dropped without a kill: the orders stay open at the venue.
    };
    assert_eq!(sim.stats().our_resting, 12);
    let log_before = sim.log_len();
    let rt = Runtime::builder(dir.path(), "restart")
        .venue("SIM", venue)
        .journal(jdir.path(), JournalConfig::small_for_tests())
        .on_recovered_orders(RecoveredOrders::CancelBeforeTrading)
        .start()
        .unwrap();
    assert_eq!(rt.recovered_orders(), 12);
    let rec = rt.recovery().expect("start-up recovery ran");
    assert!(rec.is_clean(), "{rec}");
    assert_eq!(rec.canceled.len(), 12);
    let mut mm = rt.strategy("mm").unwrap();
    let tags = mm.tags("SIM", "BTC/USD", "desk-1").unwrap();
    let new = mm.submit(&buy(tags, 70)).unwrap();
    assert!(new.0 > first_ids.iter().map(|i| i.0).max().unwrap());
    answers_until(&mut mm, |x| *x == Answer::Accepted { id: new });
    // From the venue's own log: every old order cancelled before the
    // first new order of the second run.
    let log = sim.log_from(log_before);
    let first_new = log
        .iter()
        .position(|l| matches!(l.msg, WireMessage::New(_)))
        .expect("the new order reached the venue");
    let before: Vec<_> = log[..first_new].iter().collect();
    assert!(
        before
            .iter()
            .any(|l| matches!(l.msg, WireMessage::MassCancel(_) | WireMessage::Cancel(_))),
        "cancels first: {before:?}"
    );
    assert_eq!(
        sim.stats().our_resting,
        1,
        "only the new order rests at the venue"
    );
}

#[test]
fn adopted_orders_stay_open_and_a_kill_cancels_them() {
    let dir = shm();
    let jdir = tempfile::tempdir().unwrap();
    let (venue, sim) = SharedVenue::new(quiet("SIM"));
    {
        let rt = Runtime::builder(dir.path(), "adopt")
            .venue("SIM", venue.clone())
            .journal(jdir.path(), JournalConfig::small_for_tests())
            .start()
            .unwrap();
        let mut mm = rt.strategy("mm").unwrap();
        let tags = mm.tags("SIM", "BTC/USD", "desk-1").unwrap();
        rest(&mut mm, tags, 5);
    }
    let mut rt = Runtime::builder(dir.path(), "adopt")
        .venue("SIM", venue)
        .journal(jdir.path(), JournalConfig::small_for_tests())
        .on_recovered_orders(RecoveredOrders::AdoptIntoRegistry)
        .start()
        .unwrap();
    assert!(rt.recovery().is_none());
    assert_eq!(rt.open_orders(), 5);
    assert_eq!(sim.stats().our_resting, 5);
    rt.tripper()
        .trip_global(Mode::Kill, Source::Api, "test: adopted");
    let s = rt.supervise(SuperviseOptions::default());
    let kill = s.kill_drain().unwrap();
    assert_eq!(kill.canceled.len(), 5, "{kill}");
    assert_eq!(sim.stats().our_resting, 0);
}

#[test]
fn the_snapshot_policy_checkpoints_on_the_supervisor_and_a_restart_starts_there() {
    let dir = shm();
    let jdir = tempfile::tempdir().unwrap();
    let (venue, _sim) = SimVenue::new(quiet("SIM"));
    let mut rt = Runtime::builder(dir.path(), "snap")
        .venue("SIM", venue)
        .journal(jdir.path(), JournalConfig::small_for_tests())
        .snapshot_policy(SnapshotPolicy::EveryRecords(20))
        .start()
        .unwrap();
    let mut mm = rt.strategy("mm").unwrap();
    let tags = mm.tags("SIM", "BTC/USD", "desk-1").unwrap();
    rest(&mut mm, tags, 30);
    let mut beats = 0;
    let s = rt.supervise_with(SuperviseOptions::default(), |_| {
        beats += 1;
        if beats > 20 {
            killswitch::runtime::Flow::Stop
        } else {
            killswitch::runtime::Flow::Continue
        }
    });
    assert_eq!(s.stopped, StopReason::Asked);
    assert!(!s.policy_snapshots.is_empty(), "{s:?}");
    drop(mm);
    drop(rt);
    let (w, _) =
        killswitch::journal::JournalWriter::open(jdir.path(), JournalConfig::small_for_tests())
            .unwrap();
    let snap = w.last_snapshot().expect("a snapshot");
    let rebuilt = killswitch::journal::rebuild_from(jdir.path(), Some(snap)).unwrap();
    assert_eq!(rebuilt.state.open_orders.len(), 30);
}

#[test]
fn a_second_runtime_on_the_same_block_is_refused_by_the_gateway_role() {
    let dir = shm();
    let (v1, _) = SimVenue::new(quiet("SIM"));
    let (v2, _) = SimVenue::new(quiet("SIM"));
    let _first = Runtime::builder(dir.path(), "role")
        .venue("SIM", v1)
        .start()
        .unwrap();
    let e = Runtime::builder(dir.path(), "role")
        .venue("SIM", v2)
        .start()
        .unwrap_err();
    assert_eq!(e.exit_code, exit::BAD_FILE, "{e}");
    assert!(e.message.contains("gateway role"), "{e}");
}

#[test]
fn a_dead_drain_thread_trips_records_and_exits_14() {
    let dir = shm();
    let (venue, _sim) = SimVenue::new(quiet("SIM"));
    let mut rt = Runtime::builder(dir.path(), "dies")
        .venue("SIM", venue)
        .before_checkpoint(|_| panic!("injected: the checkpoint step panics"))
        .start()
        .unwrap();
    let mut mm = rt.strategy("mm").unwrap();
    let tags = mm.tags("SIM", "BTC/USD", "desk-1").unwrap();
    rest(&mut mm, tags, 3);
    rt.tripper()
        .trip_global(Mode::Kill, Source::Api, "test: dies");
    let s = rt.supervise(SuperviseOptions::default());
    assert_eq!(s.stopped, StopReason::DrainDied);
    assert_eq!(s.exit_code(), exit::DRAIN_DIED);
    assert!(s.verdict().1.contains("injected"), "{}", s.verdict().1);
    let status = rt.status();
    assert_eq!(status.mode, Mode::Kill);
    assert!(status.drain_incomplete.is_some(), "recorded for reset");
}

/// A failover with a venue that cannot hand its session over (the
/// in-process simulator offers no takeover) is refused before anything
/// is asked of the gateway: the engine keeps the lease and keeps trading,
/// nothing is cancelled or orphaned.
#[test]
fn a_hand_over_is_refused_when_a_venue_cannot_hand_its_session_over() {
    let dir = shm();
    let (venue, _sim) = SimVenue::new(quiet("SIM"));
    let mut rt = Runtime::builder(dir.path(), "handover")
        .venue("SIM", venue)
        .lease(killswitch::control::LeaseConfig::default())
        .start()
        .unwrap();
    let err = rt.hand_over(Duration::from_secs(5)).unwrap_err();
    assert!(
        err.contains("SIM") && err.contains("offer no session hand-over"),
        "{err}"
    );
    let lease = rt.lease().expect("started with a lease");
    assert_eq!(lease.fenced_by(), None, "the lease is still ours");
    let h = rt.strategy("mm").unwrap();
    let tags = h.tags("SIM", "I0", "desk-1").unwrap();
    assert!(h.submit(&buy(tags, 100)).is_ok(), "still trading");
    rt.shutdown();
}
