//! Session takeover by a designated backup at `ks-venue` (`8014=Y`), over
//! real sockets to the venue process; the venue's audit log is the witness.

mod support;

use std::time::{Duration, Instant};

use killswitch::order::{OrderId, Price, Qty, ScopeTags, Side};
use killswitch::venue::{NewOrder, Venue, VenueEvent};
use killswitch_tools::fix::client::{FixVenue, FixVenueConfig};
use killswitch_tools::fix::messages::{self, NewOrderFields};
use killswitch_tools::fix::TAG_BACKUP_TAKEOVER;
use killswitch_tools::venue_server::audit::AuditEntry;
use support::venue::{events, RawSession, Received, VenueProc};

const T: &str = "20260101-00:00:00.000";

fn new_order(s: &mut RawSession, cl: &str) {
    s.send(&messages::new_order_single(&NewOrderFields {
        cl_ord_id: cl,
        account: "ACC",
        symbol: "I0",
        side: Side::Buy,
        qty: Qty::from_lots(1).0,
        price: 90 * killswitch::order::PRICE_SCALE,
        transact_time: T,
    }));
}

/// ExecutionReports for `cl` with ExecType `exec_type`.
fn reports<'a>(got: &'a [Received], cl: &str, exec_type: &str) -> Vec<&'a Received> {
    got.iter()
        .filter(|m| m.msg_type == "8" && m.field(11) == Some(cl) && m.field(150) == Some(exec_type))
        .collect()
}

/// Connects as `comp` and logs on as its designated backup.
fn takeover_logon(venue: &VenueProc, comp: &str) -> (RawSession, Vec<Received>) {
    let mut s = RawSession::connect(venue.addr("SIM"), comp, "SIM");
    let mut logon = messages::logon(30, true, true);
    logon.str(TAG_BACKUP_TAKEOVER, "Y");
    s.send(&logon);
    let got = s.read_until(Duration::from_secs(10), |m| {
        m.msg_type == "A" || m.msg_type == "5"
    });
    (s, got)
}

/// A primary with five resting orders.
fn primary_with_orders(venue: &VenueProc, comp: &str) -> RawSession {
    let mut p = RawSession::logon(venue.addr("SIM"), comp, "SIM");
    for k in 1..=5 {
        new_order(&mut p, &format!("A{k}"));
    }
    let got = p.read_until(Duration::from_secs(10), |m| m.field(11) == Some("A5"));
    for k in 1..=5 {
        assert_eq!(reports(&got, &format!("A{k}"), "0").len(), 1, "{got:?}");
    }
    p
}

fn event<'a>(log: &'a [AuditEntry], comp: &str, name: &str) -> &'a AuditEntry {
    events(log, comp, name)
        .first()
        .copied()
        .unwrap_or_else(|| panic!("no {name} event for {comp}: {log:#?}"))
}

/// While the primary is connected, a plain second logon is still refused;
/// the backup's takeover logon is accepted (answered with 8014=Y, numbers
/// reset), the primary is logged out and cut off **without** its orders
/// being cancelled; the backup adopts three of the five by status
/// requests, trades on the session (a new order), and when the grace
/// period ends exactly the two it did not adopt are cancelled and reported
/// to it; the other three and its new order still rest.
#[test]
fn a_backup_takes_over_a_live_session_and_adopts_what_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let venue = VenueProc::start(
        dir.path(),
        &["SIM"],
        &["--instruments", "I0", "--takeover-grace-ms", "1500"],
    );
    let mut primary = primary_with_orders(&venue, "FIRM");

    // Not marked as a takeover: refused, as before.
    let mut intruder = RawSession::connect(venue.addr("SIM"), "FIRM", "SIM");
    intruder.send(&messages::logon(30, true, true));
    let got = intruder.read_until(Duration::from_secs(10), |m| m.msg_type == "5");
    assert!(
        got.last()
            .and_then(|m| m.field(58))
            .is_some_and(|t| t.contains("already logged on")),
        "{got:?}"
    );

    let (mut backup, got) = takeover_logon(&venue, "FIRM");
    let answer = got.last().unwrap();
    assert_eq!(answer.msg_type, "A", "{got:?}");
    assert_eq!(answer.field(TAG_BACKUP_TAKEOVER), Some("Y"));
    assert_eq!(answer.field(34), Some("1"), "numbers start again");

    let got = primary.read_until(Duration::from_secs(10), |_| false);
    assert!(
        got.iter()
            .any(|m| m.msg_type == "5" && m.field(58).is_some_and(|t| t.contains("taken over"))),
        "the primary is told: {got:?}"
    );

    for k in 1..=3 {
        backup.send(&messages::order_status_request(
            &format!("A{k}"),
            Side::Buy,
            "I0",
            &format!("adopt-{k}"),
        ));
    }
    new_order(&mut backup, "B1");
    // Reports come for the three adopted (status, 150=I), for B1 (new),
    // then, at the end of the grace period, cancels for A4 and A5.
    let got = backup.read_until(Duration::from_secs(20), |m| {
        m.field(11) == Some("A5") && m.field(150) == Some("4")
    });
    for k in 1..=3 {
        assert_eq!(
            reports(&got, &format!("A{k}"), "I").len(),
            1,
            "A{k}: {got:?}"
        );
        assert!(
            reports(&got, &format!("A{k}"), "4").is_empty(),
            "A{k} adopted: {got:?}"
        );
    }
    assert_eq!(reports(&got, "B1", "0").len(), 1, "{got:?}");
    assert_eq!(reports(&got, "A4", "4").len(), 1, "{got:?}");
    assert_eq!(reports(&got, "A5", "4").len(), 1, "{got:?}");
    assert!(
        reports(&got, "A4", "4")[0]
            .field(58)
            .is_some_and(|t| t.contains("not adopted")),
        "{got:?}"
    );

    let log = venue.wait_audit("SIM", "grace expiry", |log| {
        !events(log, "FIRM", "takeover-grace-expired").is_empty()
    });
    let t = event(&log, "FIRM", "takeover");
    assert_eq!(t.orders, Some(5), "{t:?}");
    let expired = event(&log, "FIRM", "takeover-grace-expired");
    assert_eq!(expired.orders, Some(2), "{expired:?}");
    assert_eq!(expired.resting, Some(4), "A1..A3 and B1 rest: {expired:?}");
    assert!(
        events(&log, "FIRM", "cancel-on-disconnect").is_empty(),
        "the primary's disconnect cancelled nothing"
    );
}

/// A primary that logs out announcing a backup (8014=Y in its Logout)
/// keeps its orders past its disconnect: a backup logging on within the
/// grace period adopts all five, and nothing is cancelled. Without a
/// backup, the orders are cancelled when the grace period ends, as
/// cancel-on-disconnect would have.
#[test]
fn a_logout_announcing_a_backup_holds_the_orders_for_the_grace_period_only() {
    let dir = tempfile::tempdir().unwrap();
    let venue = VenueProc::start(
        dir.path(),
        &["SIM"],
        &["--instruments", "I0", "--takeover-grace-ms", "1500"],
    );
    for (comp, backup_comes) in [("HANDED", true), ("ABANDONED", false)] {
        let mut primary = primary_with_orders(&venue, comp);
        let mut logout = messages::logout("handing over");
        logout.str(TAG_BACKUP_TAKEOVER, "Y");
        primary.send(&logout);
        let got = primary.read_until(Duration::from_secs(10), |m| m.msg_type == "5");
        assert!(
            got.last()
                .and_then(|m| m.field(58))
                .is_some_and(|t| t.contains("held for the designated backup")),
            "{got:?}"
        );
        drop(primary);
        if backup_comes {
            let (mut backup, got) = takeover_logon(&venue, comp);
            assert_eq!(got.last().unwrap().msg_type, "A", "{got:?}");
            for k in 1..=5 {
                backup.send(&messages::order_status_request(
                    &format!("A{k}"),
                    Side::Buy,
                    "I0",
                    &format!("adopt-{k}"),
                ));
            }
            let got = backup.read_until(Duration::from_secs(10), |m| m.field(11) == Some("A5"));
            for k in 1..=5 {
                assert_eq!(reports(&got, &format!("A{k}"), "I").len(), 1, "{got:?}");
            }
            let log = venue.wait_audit("SIM", "grace expiry", |log| {
                !events(log, comp, "takeover-grace-expired").is_empty()
            });
            let expired = event(&log, comp, "takeover-grace-expired");
            assert_eq!(expired.orders, Some(0), "{expired:?}");
            assert_eq!(expired.resting, Some(5), "{expired:?}");
            assert!(events(&log, comp, "cancel-on-disconnect").is_empty());
            drop(backup);
        } else {
            let log = venue.wait_audit("SIM", "held orders cancelled", |log| {
                !events(log, comp, "cancel-on-disconnect").is_empty()
            });
            let hold = event(&log, comp, "takeover-hold");
            let cod = event(&log, comp, "cancel-on-disconnect");
            assert_eq!(cod.orders, Some(5), "{cod:?}");
            assert!(
                cod.detail.as_deref().is_some_and(|d| d.contains("grace")),
                "{cod:?}"
            );
            // Held, not cancelled at once: at least most of the grace
            // period passed (the venue's own clock; 1500 ms configured).
            assert!(
                cod.mono_ns - hold.mono_ns >= 1_000_000_000,
                "cancelled {} ms after the hold",
                (cod.mono_ns - hold.mono_ns) / 1_000_000
            );
        }
    }
}

/// A venue started with `--takeover-grace-ms 0` refuses a takeover logon
/// (and the session's orders stay with the primary); a takeover of a
/// session that never existed is refused too.
#[test]
fn takeovers_can_be_refused() {
    let dir = tempfile::tempdir().unwrap();
    let venue = VenueProc::start(
        dir.path(),
        &["SIM"],
        &["--instruments", "I0", "--takeover-grace-ms", "0"],
    );
    let _primary = primary_with_orders(&venue, "FIRM");
    let (_b, got) = takeover_logon(&venue, "FIRM");
    assert!(
        got.last()
            .and_then(|m| m.field(58))
            .is_some_and(|t| t.contains("not offered")),
        "{got:?}"
    );
    let (_c, got) = takeover_logon(&venue, "NOBODY");
    assert!(
        got.last()
            .and_then(|m| m.field(58))
            .is_some_and(|t| t.contains("no session NOBODY")),
        "{got:?}"
    );
    let log = venue.audit("SIM");
    assert!(events(&log, "FIRM", "takeover").is_empty());
    assert!(
        events(&log, "FIRM", "disconnect").is_empty(),
        "the primary stays"
    );
}

fn fix_config(venue: &VenueProc, comp: &str, takeover: bool) -> FixVenueConfig {
    let mut cfg = FixVenueConfig::new("SIM", venue.addr("SIM"), comp, "SIM");
    cfg.symbols = vec![(0, "I0".to_string())];
    cfg.heartbeat = Duration::from_secs(2);
    cfg.takeover = takeover;
    cfg
}

/// Polls `v` until `pred` holds on the events so far (deadline 30 s).
fn poll_until(
    v: &mut FixVenue,
    what: &str,
    mut pred: impl FnMut(&[VenueEvent]) -> bool,
) -> Vec<VenueEvent> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while !pred(&seen) {
        assert!(
            Instant::now() < deadline,
            "{what}: not within 30 s; events {seen:?}; last error: {}",
            v.last_error()
        );
        v.poll(&mut seen);
        std::thread::sleep(Duration::from_micros(200));
    }
    seen
}

fn resting_buy(id: u64) -> NewOrder {
    NewOrder {
        id: OrderId(id),
        tags: ScopeTags::default(),
        side: Side::Buy,
        price: Price::from_units(90),
        qty: Qty::from_lots(2),
    }
}

/// The engine's side (`FixVenue`): the primary rests five orders, one of
/// them is half filled by another participant while the primary does not
/// read (the fill is not in "its journal"), and the primary hands the
/// session over (Logout with 8014=Y, no cancels) and goes away. The backup
/// (`takeover = true`) adopts the five orders as the journal shows them
/// (nothing filled): on logon it asks their status, which adopts them at
/// the venue and brings the missing fill as a `Fill` event; nothing is
/// cancelled at the end of the grace period, and the backup can cancel
/// them itself.
#[test]
fn fix_venue_hands_over_and_the_backup_adopts_with_the_fill_it_missed() {
    let dir = tempfile::tempdir().unwrap();
    let venue = VenueProc::start(
        dir.path(),
        &["SIM"],
        &["--instruments", "I0", "--takeover-grace-ms", "1000"],
    );
    let mut primary = FixVenue::new(fix_config(&venue, "ENGINE", false));
    primary.connect(Duration::from_secs(30)).expect("logon");
    for id in 1..=5 {
        primary.send(&resting_buy(id)).unwrap();
    }
    poll_until(&mut primary, "acks", |ev| {
        ev.iter()
            .filter(|e| matches!(e, VenueEvent::Acked { .. }))
            .count()
            == 5
    });
    let mut control = RawSession::logon(venue.addr("SIM"), "KS-CONTROL", "SIM");
    control.control("inject", "I0,sell,90,1");
    primary.hand_over().unwrap();
    // The venue's Logout ends it (the fill report may come before it).
    let end = Instant::now() + Duration::from_secs(30);
    while primary.is_active() && Instant::now() < end {
        primary.poll(&mut Vec::new());
        std::thread::sleep(Duration::from_micros(200));
    }
    assert!(
        !primary.is_active(),
        "the venue's Logout ended the primary's session"
    );
    drop(primary);

    let mut backup = FixVenue::new(fix_config(&venue, "ENGINE", true));
    backup.adopt((1..=5).map(|id| (OrderId(id), Side::Buy, 0, Qty::from_lots(2).0, 0)));
    backup
        .connect(Duration::from_secs(30))
        .expect("takeover logon");
    let seen = poll_until(&mut backup, "the five statuses", |ev| {
        ev.iter()
            .filter(|e| matches!(e, VenueEvent::Acked { .. }))
            .count()
            == 5
    });
    let fills: Vec<_> = seen
        .iter()
        .filter(|e| matches!(e, VenueEvent::Fill { .. }))
        .collect();
    assert_eq!(
        fills,
        vec![&VenueEvent::Fill {
            id: OrderId(1),
            qty: Qty::from_lots(1),
            price: Price::from_units(90),
            leaves: Qty::from_lots(1),
        }],
        "{seen:?}"
    );
    let log = venue.wait_audit("SIM", "grace expiry", |log| {
        !events(log, "ENGINE", "takeover-grace-expired").is_empty()
    });
    assert!(!events(&log, "ENGINE", "takeover-hold").is_empty());
    assert_eq!(event(&log, "ENGINE", "takeover").orders, Some(5));
    let expired = event(&log, "ENGINE", "takeover-grace-expired");
    assert_eq!(expired.orders, Some(0), "all five adopted: {expired:?}");
    assert_eq!(expired.resting, Some(5));
    assert!(events(&log, "ENGINE", "cancel-on-disconnect").is_empty());
    for id in 1..=5 {
        backup.cancel(OrderId(id)).unwrap();
    }
    poll_until(&mut backup, "the backup's cancels", |ev| {
        ev.iter()
            .filter(|e| matches!(e, VenueEvent::Canceled { .. }))
            .count()
            == 5
    });
}

/// A primary that is not heard from (stopped: here, simply not polled)
/// is cut off by the backup's takeover; whatever it writes afterwards
/// never reaches the venue's books (the venue's log shows no order from
/// it after the takeover), and its orders are the backup's.
#[test]
fn a_stalled_primary_is_cut_off_by_the_takeover_and_its_late_orders_never_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let venue = VenueProc::start(
        dir.path(),
        &["SIM"],
        &["--instruments", "I0", "--takeover-grace-ms", "1000"],
    );
    let mut primary = FixVenue::new(fix_config(&venue, "ENGINE", false));
    primary.connect(Duration::from_secs(30)).expect("logon");
    for id in 1..=3 {
        primary.send(&resting_buy(id)).unwrap();
    }
    poll_until(&mut primary, "acks", |ev| {
        ev.iter()
            .filter(|e| matches!(e, VenueEvent::Acked { .. }))
            .count()
            == 3
    });
    let mut backup = FixVenue::new(fix_config(&venue, "ENGINE", true));
    backup.adopt((1..=3).map(|id| (OrderId(id), Side::Buy, 0, Qty::from_lots(2).0, 0)));
    backup
        .connect(Duration::from_secs(30))
        .expect("takeover logon");
    poll_until(&mut backup, "the three statuses", |ev| {
        ev.iter()
            .filter(|e| matches!(e, VenueEvent::Acked { .. }))
            .count()
            == 3
    });
    let took = venue.wait_audit("SIM", "takeover", |log| {
        !events(log, "ENGINE", "takeover").is_empty()
    });
    let at = event(&took, "ENGINE", "takeover").mono_ns;
    // The primary wakes up and sends, as if nothing happened.
    for id in 100..110 {
        let _ = primary.send(&resting_buy(id));
        let mut ev = Vec::new();
        primary.poll(&mut ev);
    }
    backup.send(&resting_buy(200)).unwrap();
    poll_until(&mut backup, "the backup's order", |ev| {
        ev.contains(&VenueEvent::Acked { id: OrderId(200) })
    });
    let log = venue.audit("SIM");
    let late: Vec<_> = log
        .iter()
        .filter(|e| {
            e.dir == "in"
                && e.msg_type.as_deref() == Some("D")
                && e.mono_ns > at
                && e.field(11) != Some("200")
        })
        .collect();
    assert!(
        late.is_empty(),
        "orders after the takeover not from the backup: {late:?}"
    );
    assert!(events(&log, "ENGINE", "cancel-on-disconnect").is_empty());
}
