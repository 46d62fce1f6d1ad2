//! Session takeover by a designated backup at `ks-venue` (`8014=Y`), over
//! real sockets to the venue process; the venue's audit log is the witness.

mod support;

use std::time::Duration;

use killswitch::order::{Qty, Side};
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
