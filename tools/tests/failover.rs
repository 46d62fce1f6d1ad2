//! The rolling restart as real processes: two reference engines (an
//! active holding the lease, a hot standby following its journal) trading
//! with a `ks-venue` process; `killswitch failover`, the old active
//! restarting itself as the standby (`[failover] restart_as_standby`, the
//! same pid re-executed with `--standby`), `killswitch failback` with no
//! restart by hand, then a KILL. The venue's audit log is the witness.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use killswitch::journal::rebuild;
use killswitch_tools::fix::parse_fixed;
use killswitch_tools::venue_server::audit::{working_orders, AuditEntry};
use support::pair::{config, new_orders, wait_orders, work_and_venue, Engine, FIRM};
use support::venue::events;
use support::{ks, run};

fn failover_cmd(work: &Path, what: &str) -> String {
    let mut c = ks(work, "pair");
    c.args([what, "--timeout", "60s"]);
    let out = run(c);
    out.expect_code(0);
    out.stdout()
}

/// The longest pause between two consecutive new orders at the venue
/// around `at` (the last before it, the first after it), ns.
fn gap_around(log: &[AuditEntry], at: u64) -> u64 {
    let d = new_orders(log);
    let before = d
        .iter()
        .filter(|e| e.mono_ns <= at)
        .map(|e| e.mono_ns)
        .max();
    let after = d.iter().filter(|e| e.mono_ns > at).map(|e| e.mono_ns).min();
    match (before, after) {
        (Some(b), Some(a)) => a - b,
        _ => 0,
    }
}

/// The report an engine wrote when it handed epoch `epoch` over (kept
/// beside its report: the standby it restarts as writes its own there).
fn handover_report(work: &Path, label: &str, epoch: u64) -> serde_json::Value {
    let p = work.join(format!("{label}.handover-{epoch}.json"));
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

fn timeline(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("failover: "))
        .map(str::to_string)
        .collect()
}

/// Orders flow through a failover and a failback: the venue received no
/// ClOrdID twice (duplicated 0); every order resting when a standby took
/// over was adopted (0 cancelled at the end of either grace period) and
/// nothing was cancelled on a disconnect during the hand-overs; after the
/// final KILL nothing of the firm is left working at the venue (lost 0:
/// the engine holding the orders knew every one); no new order reached the
/// venue between an active's hand-over and its successor's takeover (the
/// old active sent nothing after it handed over); the positions the
/// journal ends with equal those the venue's fills make. The gap in order
/// flow around each takeover is printed (measured, never asserted).
#[test]
fn orders_flow_through_a_failover_and_a_failback_with_nothing_lost_or_doubled() {
    // Generous grace: a promotion starts a whole runtime (journal open,
    // rebuild), slow in a debug build on a loaded machine.
    let (work, venue) = work_and_venue(15_000);
    let w = work.path();
    std::fs::write(w.join("engine.toml"), config(w, venue.addr("SIM"))).unwrap();
    let mut a = Engine::spawn(w, "a1", false);
    let block = a.holding_lease(w);
    let n = wait_orders(&venue, 0, 150, "the active trades");
    let mut b = Engine::spawn(w, "b1", true);
    b.following(&block, "standby following");
    let n = wait_orders(&venue, n, 100, "trading with a standby");

    // Failover: a -> b.
    let out = failover_cmd(w, "failover");
    assert!(out.contains(&format!("active pid {}", b.pid())), "{out}");
    // The old active restarts by itself as the standby of the new active
    // (`[failover] restart_as_standby`, on by default): the same process,
    // re-executed with --standby.
    let a_standby = a.following(&block, "the old active restarted as the standby");
    let handed = handover_report(w, "a1", 1);
    assert_eq!(handed["exit_code"].as_i64(), Some(0), "{handed}");
    assert!(
        handed["verdict"]
            .as_str()
            .unwrap()
            .contains("restarting as its standby"),
        "{handed}"
    );
    let n = wait_orders(&venue, n, 150, "the new active trades");
    assert!(a_standby > 0);

    // Failback: b -> a, without any restart by hand; b in turn restarts as
    // the standby.
    let out = failover_cmd(w, "failback");
    assert!(out.contains(&format!("active pid {}", a.pid())), "{out}");
    b.following(&block, "the new active restarted as the standby");
    let handed = handover_report(w, "b1", 2);
    assert_eq!(handed["exit_code"].as_i64(), Some(0), "{handed}");
    wait_orders(&venue, n, 150, "trading after the failback");

    let mut trip = ks(w, "pair");
    trip.args(["trip", "--reason", "end of the rolling restart test"]);
    run(trip).expect_code(0);
    let (code, report) = a.wait();
    assert_eq!(code, 0, "a (active again): {report}\n{}", a.log());
    // The standby does not stop on a KILL (it sends nothing): SIGTERM.
    b.signal(nix::sys::signal::Signal::SIGTERM);
    let (code, report) = b.wait();
    assert_eq!(code, 0, "b (standby): {report}\n{}", b.log());
    assert_eq!(report["role"].as_str(), Some("standby"), "{report}");
    assert_eq!(report["orders_sent"].as_u64(), Some(0), "{report}");

    // The drain cancelled what the engine knew; an order no engine knew
    // (lost) would still rest until the last grace period ends, and be
    // cancelled by the venue then: wait for it, then look.
    venue.wait_audit("SIM", "both grace periods over", |log| {
        events(log, FIRM, "takeover-grace-expired").len() >= 2
    });
    let log = venue.wait_audit("SIM", "nothing of the firm working", |log| {
        working_orders(log, FIRM).is_empty()
    });
    // Duplicated 0.
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for d in new_orders(&log) {
        *seen.entry(d.field(11).unwrap_or("")).or_default() += 1;
    }
    let dup: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(dup.is_empty(), "ClOrdIDs received twice: {dup:?}");
    // Lost 0: every resting order adopted at both takeovers.
    let takeovers = events(&log, FIRM, "takeover");
    assert_eq!(takeovers.len(), 2, "{takeovers:?}");
    for t in &takeovers {
        assert!(
            t.orders.unwrap_or(0) > 0,
            "orders were resting to adopt: {t:?}"
        );
    }
    for e in events(&log, FIRM, "takeover-grace-expired") {
        assert_eq!(e.orders, Some(0), "orders not adopted: {e:?}");
    }
    let cod: Vec<_> = events(&log, FIRM, "cancel-on-disconnect")
        .into_iter()
        .filter(|e| e.orders.unwrap_or(0) > 0)
        .collect();
    assert!(cod.is_empty(), "cancelled on a disconnect: {cod:?}");
    // Nothing between a hand-over and the takeover that follows it.
    let holds = events(&log, FIRM, "takeover-hold");
    assert_eq!(holds.len(), 2, "{holds:?}");
    for (h, t) in holds.iter().zip(&takeovers) {
        let between = new_orders(&log)
            .iter()
            .filter(|d| d.mono_ns > h.mono_ns && d.mono_ns < t.mono_ns)
            .count();
        assert_eq!(
            between, 0,
            "orders after the hand-over, before the takeover"
        );
    }
    // Positions: the journal's equal the venue's fills.
    let rebuilt = rebuild(&w.join("journal")).unwrap();
    let mut journal_qty: BTreeMap<u16, i64> = BTreeMap::new();
    for (k, p) in &rebuilt.state.positions {
        *journal_qty.entry(k.instrument).or_default() += p.qty.0;
    }
    let mut venue_qty = 0i64;
    let mut fills = 0;
    for e in log.iter().filter(|e| {
        e.session == FIRM
            && e.dir == "out"
            && e.msg_type.as_deref() == Some("8")
            && e.field(150) == Some("F")
    }) {
        let q = parse_fixed(e.field(32).unwrap_or("0").as_bytes()).unwrap();
        venue_qty += if e.field(54) == Some("1") { q } else { -q };
        fills += 1;
    }
    assert!(fills > 0, "the test needs fills");
    assert_eq!(
        journal_qty.values().sum::<i64>(),
        venue_qty,
        "journal positions {journal_qty:?} vs the venue's {fills} fills"
    );

    for (label, t) in ["failover", "failback"].iter().zip(&takeovers) {
        eprintln!(
            "{label}: longest pause between two new orders at the venue around the takeover: {:.3} ms",
            gap_around(&log, t.mono_ns) as f64 / 1e6
        );
    }
    let d = new_orders(&log);
    let longest = d
        .windows(2)
        .map(|p| p[1].mono_ns - p[0].mono_ns)
        .max()
        .unwrap_or(0);
    eprintln!(
        "{} new orders at the venue, longest pause in the whole run {:.3} ms; {fills} fills",
        d.len(),
        longest as f64 / 1e6
    );
    for (label, e) in [("a1", &a), ("b1", &b)] {
        for l in timeline(&e.log()) {
            eprintln!("{label}: {l}");
        }
    }
}
