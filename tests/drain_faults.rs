//! The drain on its failure paths (issue 9): a newer trip during a drain,
//! the drain thread dying, the "drain incomplete" record, an ambiguous
//! send, and a restarted engine that must cancel what the crashed one left
//! at a venue that outlived it. (A late gateway acknowledgement is in
//! `drain_behaviour.rs`.)

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use killswitch::control::{
    ControlBlock, DrainPhase, DrainSnapshot, IncompleteWriter, Mode, Operator, ResetRequest,
    ScopeKind, Source, TripRequest, Tripper,
};
use killswitch::drain::{Drain, DrainConfig, WaitError};
use killswitch::gateway::{Gateway, GatewayConfig};
use killswitch::journal::{self, JournalConfig, JournalWriter};
use killswitch::order::{OrderId, OrderState, Side};
use killswitch::registry::{RecoveredOrder, Registry};
use killswitch::venue::sim::{FlowConfig, SimConfig, SimVenue, WireMessage};
use killswitch::venue::Venue;

const WAIT: Duration = Duration::from_secs(20);

fn quiet(name: &str, seed: u64, mass_cancel: bool) -> SimConfig {
    let mut c = SimConfig::new(name, 2, seed);
    c.flow = FlowConfig::off();
    c.mass_cancel = mass_cancel;
    c
}

fn rest(r: &Rig, venue: u16, n: usize) -> Vec<OrderId> {
    let ids: Vec<OrderId> = (0..n)
        .map(|i| {
            submit(
                &r.sender,
                &intent(venue, 0, Side::Buy, 50 + i as i64 % 7, 1),
            )
        })
        .collect();
    wait_state(&r.registry, &ids, OrderState::Live);
    ids
}

fn reset_now(operator: &Operator) -> Result<(), killswitch::control::ControlError> {
    operator
        .reset(&ResetRequest {
            source: Source::Cli,
            reason: "test".into(),
            force: false,
            expected_generation: None,
        })
        .map(|_| ())
}

/// A scoped kill of venue B, which ignores cancels: the drain waits on B
/// until its deadline. A global KILL lands meanwhile: venue A's orders are
/// cancelled at once, while B's are still waiting, and the report lists
/// the escalation. Before issue 9 the drain never looked at the state word
/// again: A's orders stayed live until B's deadline had passed.
#[test]
fn a_global_kill_during_a_stuck_scoped_drain_is_acted_on_at_once() {
    let r = rig(
        vec![quiet("SIM-A", 1, true), quiet("SIM-B", 2, false)],
        DrainConfig {
            cancel_deadline: Duration::from_secs(60),
            ..DrainConfig::emergency()
        },
        None,
    );
    r.block.register_name(ScopeKind::Venue, "SIM-A").unwrap();
    r.block.register_name(ScopeKind::Venue, "SIM-B").unwrap();
    let a = rest(&r, 0, 10);
    let b = rest(&r, 1, 10);
    r.sims[1].set_ignore_cancels(true);
    r.operator
        .trip(&TripRequest {
            mode: Mode::Kill,
            scopes: vec![(ScopeKind::Venue, "SIM-B".into())],
            source: Source::Cli,
            reason: "venue B stale".into(),
        })
        .unwrap();
    wait_state(&r.registry, &b, OrderState::PendingCancel);
    for id in &a {
        assert_eq!(r.registry.get(*id).unwrap().state, OrderState::Live);
    }

    let g2 = r
        .tripper
        .trip_global(Mode::Kill, Source::Cli, "firm-wide kill")
        .transition
        .current()
        .generation();
    wait_state(&r.registry, &a, OrderState::Canceled);
    // B's orders are still waiting for their own deadline: the global kill
    // did not wait for it.
    for id in &b {
        assert_eq!(
            r.registry.get(*id).unwrap().state,
            OrderState::PendingCancel
        );
    }
    let s = DrainSnapshot::read(&r.block);
    assert_eq!(s.generation, g2, "the status follows the newest generation");
    assert!(s.escalated && s.phase == DrainPhase::Cancelling, "{s:?}");
    assert_eq!(s.open_at_snapshot, 20);
    assert_eq!(cancels_in_log(&r.sims[0]), (0, 1), "one mass cancel for A");

    // Let B answer (cancel-on-disconnect, then the session comes back).
    r.sims[1].set_cancel_on_disconnect(true);
    r.sims[1].disconnect();
    wait_for("SIM-B's session dropped", WAIT, || {
        r.sims[1].stats().cancelled_on_disconnect == 10
    });
    r.sims[1].reconnect();
    let out = r.drain.wait_outcome(WAIT).expect("drain finished");
    assert!(out.is_clean(), "{out}");
    assert_eq!((out.generation, out.last_generation), (g2 - 1, g2));
    assert!(out.global);
    assert_eq!(out.escalations.len(), 1, "{out}");
    let e = out.escalations[0];
    assert_eq!((e.generation, e.open_at_snapshot), (g2, 10));
    assert!(e.t_first_cancel >= e.t_gateway_ack && e.t_gateway_ack >= e.t_seen);
    assert!(e.trip_to_first_cancel_ns().is_some());
    assert_eq!(out.canceled.len(), 20);
    assert_eq!(
        r.sims[0].stats().our_resting + r.sims[1].stats().our_resting,
        0
    );
}

/// The drain thread dies (its checkpoint hook panics): `try_outcome` and
/// `wait_outcome` say so instead of "no outcome yet", and the drain's
/// record stays in the control block, so reset is refused. Before issue 9
/// a dead drain read as `None`, the same as "still working".
#[test]
fn a_dead_drain_thread_is_reported_not_mistaken_for_no_outcome_yet() {
    let hook = Box::new(
        |_: &killswitch::drain::DrainOutcome| -> Result<u64, String> {
            panic!("injected: checkpoint hook panics")
        },
    );
    let r = rig(
        vec![quiet("SIM", 3, true)],
        DrainConfig::emergency(),
        Some(hook),
    );
    rest(&r, 0, 4);
    r.tripper.trip_global(Mode::Kill, Source::Api, "test");
    let died = match r.drain.wait_outcome(WAIT) {
        Err(WaitError::Died(d)) => d,
        other => panic!("expected the drain's death, got {other:?}"),
    };
    assert!(
        died.why.contains("injected: checkpoint hook panics"),
        "{died}"
    );
    assert_eq!(
        r.drain.try_outcome(),
        Err(died.clone()),
        "and it stays dead"
    );
    let rec = r.block.drain_incomplete().expect("the record stays set");
    assert_eq!(
        (rec.writer, rec.generation, rec.open),
        (IncompleteWriter::Drain, 1, 4)
    );
    let e = reset_now(&r.operator).unwrap_err();
    assert!(e.to_string().contains("did not finish cleanly"), "{e}");
}

/// The record is written when a drain starts (so a SIGKILL in the middle
/// leaves it behind), holds the counts, and is cleared by a drain that
/// ends clean; with unknown orders it stays, and reset is refused with the
/// counts although no engine is attached to this block.
#[test]
fn the_drain_keeps_its_record_until_it_ends_clean() {
    let r = rig(
        vec![quiet("SIM-A", 4, true), quiet("SIM-B", 5, false)],
        DrainConfig {
            cancel_deadline: Duration::from_millis(400),
            ..DrainConfig::emergency()
        },
        None,
    );
    rest(&r, 0, 3);
    rest(&r, 1, 5);
    r.sims[1].set_ignore_cancels(true);
    r.tripper.trip_global(Mode::Kill, Source::Api, "first");
    wait_for("record with the snapshot's count", WAIT, || {
        r.block.drain_incomplete().is_some_and(|rec| rec.open == 8)
    });
    assert!(!r.block.owner().alive, "no engine attached to this block");
    assert!(
        reset_now(&r.operator).is_err(),
        "refused while the drain runs"
    );
    let out = r.drain.wait_outcome(WAIT).expect("drain finished");
    assert_eq!(out.unknown.len(), 5);
    let rec = r
        .block
        .drain_incomplete()
        .expect("unknown orders: record stays");
    assert_eq!((rec.open, rec.confirmed, rec.unknown), (8, 3, 5));
    let e = reset_now(&r.operator).unwrap_err().to_string();
    assert!(
        e.contains("8 open at the snapshot") && e.contains("5 not confirmed"),
        "{e}"
    );
    r.operator
        .reset(&ResetRequest {
            source: Source::Cli,
            reason: "reconciled with SIM-B".into(),
            force: true,
            expected_generation: None,
        })
        .unwrap();
    assert!(r.block.drain_incomplete().is_none());

    // A clean drain clears its own record.
    r.sims[1].set_ignore_cancels(false);
    rest(&r, 0, 2);
    r.tripper.trip_global(Mode::Kill, Source::Api, "second");
    let out = r.drain.wait_outcome(WAIT).expect("drain finished");
    assert!(out.is_clean(), "{out}");
    assert!(
        r.block.drain_incomplete().is_none(),
        "cleared by a clean drain"
    );
    reset_now(&r.operator).unwrap();
}

/// A write that failed part-way (the venue got the order, the write said
/// `Ambiguous`, the venue's ack was lost with it) is `SendUnknown`, which
/// the drain cancels by id: nothing of ours is left at the venue. Before
/// issue 9 the gateway rejected it locally, the drain never saw it, and it
/// stayed live at the venue.
#[test]
fn an_ambiguous_send_is_cancelled_by_the_drain_not_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let block = Arc::new(ControlBlock::create(dir.path(), "amb").unwrap());
    let registry = Arc::new(Registry::new());
    let (sim, handle) = SimVenue::new(quiet("SIM", 6, false));
    let ambiguous = Arc::new(Mutex::new(vec![OrderId(2)]));
    let venue = AmbiguousVenue::new(sim, ambiguous);
    let mut gateway = Gateway::spawn(
        block.clone(),
        registry.clone(),
        vec![(0, Box::new(venue) as Box<dyn Venue>)],
        GatewayConfig::default(),
    )
    .unwrap();
    let drain = Drain::spawn(
        gateway.take_drain_link().unwrap(),
        DrainConfig::emergency(),
        None,
    )
    .unwrap();
    let sender = gateway.order_sender();
    let ids: Vec<OrderId> = (0..3)
        .map(|_| submit(&sender, &intent(0, 0, Side::Buy, 50, 1)))
        .collect();
    assert_eq!(ids[1], OrderId(2));
    wait_state(&registry, &[ids[0], ids[2]], OrderState::Live);
    wait_state(&registry, &[ids[1]], OrderState::SendUnknown);
    assert_eq!(handle.stats().our_resting, 3, "the venue has all three");
    assert_eq!(gateway.stats().send_ambiguous, 1);

    Tripper::new(block.clone()).trip_global(Mode::Kill, Source::Api, "test");
    let out = drain.wait_outcome(WAIT).expect("drain finished");
    assert!(out.is_clean(), "{out}");
    assert_eq!(out.open_at_snapshot, 3);
    assert!(out.canceled.contains(&OrderId(2)), "{out}");
    assert_eq!(
        handle.stats().our_resting,
        0,
        "none of ours left at the venue"
    );
    let cancels: Vec<OrderId> = handle
        .log()
        .iter()
        .filter_map(|e| match e.msg {
            WireMessage::Cancel(id) => Some(id),
            _ => None,
        })
        .collect();
    assert!(
        cancels.contains(&OrderId(2)),
        "cancelled by id: {cancels:?}"
    );
}

/// One engine lifetime over `venues` (shared with the next lifetime), its
/// journal in `journal_dir`, its registry adopting `recovered` first.
struct Lifetime {
    registry: Arc<Registry>,
    gateway: killswitch::gateway::GatewayHandle,
    journal: Arc<Mutex<JournalWriter>>,
}

fn lifetime(
    block: &Arc<ControlBlock>,
    venues: &[SharedVenue],
    journal_dir: &std::path::Path,
    first_order_id: u64,
    recovered: Vec<RecoveredOrder>,
) -> Lifetime {
    let (writer, _) = JournalWriter::open(journal_dir, JournalConfig::small_for_tests()).unwrap();
    let journal = Arc::new(Mutex::new(writer));
    let registry = Arc::new(Registry::with_sink(Box::new(JournalRecorder::new(
        journal.clone(),
    ))));
    registry.adopt_recovered(recovered).unwrap();
    let sessions: Vec<(u16, Box<dyn Venue>)> = venues
        .iter()
        .enumerate()
        .map(|(i, v)| (i as u16, Box::new(v.clone()) as Box<dyn Venue>))
        .collect();
    let gateway = Gateway::spawn(
        block.clone(),
        registry.clone(),
        sessions,
        GatewayConfig {
            first_order_id,
            ..GatewayConfig::default()
        },
    )
    .unwrap();
    Lifetime {
        registry,
        gateway,
        journal,
    }
}

/// A restarted engine cancels what the crashed one left working at venues
/// that outlived it, before its own first order reaches a venue: one venue
/// with mass cancel, one without (cancels by id). Checked from the venues'
/// own message logs, and the journal agrees afterwards. (No trip at all:
/// the first engine just died.)
#[test]
fn a_restarted_engine_cancels_what_the_crashed_one_left_before_its_first_order() {
    let dir = tempfile::tempdir().unwrap();
    let block = Arc::new(ControlBlock::create(dir.path(), "restart").unwrap());
    let jdir = dir.path().join("journal");
    let (va, ha) = SharedVenue::new(quiet("SIM-A", 7, true));
    let (vb, hb) = SharedVenue::new(quiet("SIM-B", 8, false));
    let venues = [va, vb];

    // Lifetime 1: rests orders on both venues, then "crashes" (dropped
    // without a trip, a drain or a logout).
    let first = lifetime(&block, &venues, &jdir, 1, Vec::new());
    let sender = first.gateway.order_sender();
    let left: Vec<OrderId> = (0..12)
        .map(|i| {
            submit(
                &sender,
                &intent((i % 2) as u16, 0, Side::Buy, 50 + i as i64, 1),
            )
        })
        .collect();
    wait_state(&first.registry, &left, OrderState::Live);
    first.journal.lock().unwrap().sync().unwrap();
    drop(sender);
    drop(first);
    assert_eq!(ha.stats().our_resting + hb.stats().our_resting, 12);

    // Lifetime 2: from the journal alone.
    let rebuilt = journal::rebuild(&jdir).unwrap();
    let open: Vec<RecoveredOrder> = rebuilt
        .state
        .open_orders
        .values()
        .map(RecoveredOrder::from)
        .collect();
    assert_eq!(open.len(), 12);
    let next_id = rebuilt.state.max_order_id.0 + 1;
    let mut second = lifetime(&block, &venues, &jdir, next_id, open);
    // A strategy that starts at once: its order must wait for the recovery.
    let sender = second.gateway.order_sender();
    let new_id = submit(&sender, &intent(0, 0, Side::Buy, 40, 1));
    assert!(new_id.0 >= next_id);
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        second.registry.get(new_id).is_none(),
        "the gateway holds new orders while recovered ones are open"
    );
    let drain = Drain::spawn(
        second.gateway.take_drain_link().unwrap(),
        DrainConfig::emergency(),
        None,
    )
    .unwrap();
    let rec = drain
        .wait_outcome(WAIT)
        .expect("start-up recovery finished");
    assert!(rec.recovery && rec.is_clean(), "{rec}");
    assert_eq!(rec.canceled.len(), 12, "{rec}");
    wait_state(&second.registry, &[new_id], OrderState::Live);

    // From the venues' own logs: every order the first engine left is
    // cancelled (mass cancel on A, by id on B) before the new order arrives.
    let log_a = ha.log();
    let new_at = log_a
        .iter()
        .find(|e| matches!(e.msg, WireMessage::New(o) if o.id == new_id))
        .expect("the new order reached SIM-A")
        .seq;
    let mass_at = log_a
        .iter()
        .find(|e| matches!(e.msg, WireMessage::MassCancel(_)))
        .expect("SIM-A got a mass cancel")
        .seq;
    assert!(
        mass_at < new_at,
        "mass cancel (seq {mass_at}) before the new order (seq {new_at})"
    );
    let log_b = hb.log();
    for id in left.iter().filter(|id| id.0 % 2 == 0) {
        // Odd ids went to SIM-A (venue 0 for i even: ids 1, 3, ...).
        assert!(
            log_b.iter().any(|e| e.msg == WireMessage::Cancel(*id)),
            "{id} cancelled by id on SIM-B"
        );
    }
    assert_eq!(hb.stats().our_resting, 0);
    assert_eq!(ha.stats().our_resting, 1, "only the new order rests");

    // The journal agrees: the recovered orders are closed there too.
    second.journal.lock().unwrap().sync().unwrap();
    drop(drain);
    drop(sender);
    let _ = second.gateway.take_drain_link();
    drop(second);
    let after = journal::rebuild(&jdir).unwrap();
    let still: Vec<_> = after.state.open_orders.keys().collect();
    assert_eq!(still, vec![new_id], "{:?}", after.issues);
    assert!(after.issues.is_empty(), "{:?}", after.issues);
}
