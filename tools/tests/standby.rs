//! The hot standby as a real process: `killswitch engine --standby`
//! follows the journal of an active engine trading with a `ks-venue`
//! process, publishes its lag in the control block (`killswitch status`
//! shows it, with the lease), and sends nothing.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use killswitch::control::{ControlBlock, GatewaySnapshot};
use killswitch::journal::rebuild;
use support::venue::VenueProc;
use support::{ks, run, wait_for, KILLSWITCH};

/// One venue over the wire; a market maker refilling 150 resting orders
/// and a momentum strategy crossing the spread (fills, so the market maker
/// keeps sending and positions move).
fn config(dir: &std::path::Path, addr: std::net::SocketAddr) -> String {
    format!(
        r#"name = "pair"
control_dir = {dir:?}
journal_dir = {journal:?}
lease_ttl_ms = 1000

[[venues]]
name = "SIM"
instruments = ["I0"]
connect = "{addr}"
cancel_on_disconnect = false
dead_man_ms = 0

[[strategies]]
name = "mm"
venue = "SIM"
instrument = "I0"
open_orders = 150

[[strategies]]
name = "momo"
kind = "momentum"
venue = "SIM"
instrument = "I0"
interval_us = 2000
"#,
        journal = dir.join("journal"),
    )
}

fn spawn(args: &[&str], cfg: &std::path::Path, log: std::path::PathBuf) -> Child {
    Command::new(KILLSWITCH)
        .arg("engine")
        .arg("--config")
        .arg(cfg)
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn log(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The standby follows a trading active live (its applied sequence rises
/// while the active's order count rises), `status` shows the lease (holder
/// = the active, epoch 1) and the standby's lag, the active is SIGKILLed,
/// and the standby, caught up to the journal's last record, holds exactly
/// the open orders, positions and highest order id a rebuild of the
/// journal gives. The venue saw one logon and one connection: the
/// active's. The standby's report says it sent 0 orders.
#[test]
fn the_standby_follows_a_trading_active_reports_its_lag_and_sends_nothing() {
    let work = tempfile::tempdir().unwrap();
    let venue = VenueProc::start(
        work.path(),
        &["SIM"],
        &[
            "--instruments",
            "I0",
            "--cancel-on-disconnect",
            "off",
            "--flow-interval-us",
            "500",
        ],
    );
    let cfg = work.path().join("engine.toml");
    std::fs::write(&cfg, config(work.path(), venue.addr("SIM"))).unwrap();
    let active_log = work.path().join("active.log");
    let standby_log = work.path().join("standby.log");
    let report = work.path().join("standby.json");
    let mut active = spawn(&[], &cfg, active_log.clone());
    let active_pid = active.id();
    let mut block = None;
    assert!(
        wait_for(Duration::from_secs(60), || {
            block = ControlBlock::open(work.path(), "pair")
                .ok()
                .filter(|b| b.owner().pid == active_pid);
            block.is_some()
        }),
        "active attached; log:\n{}",
        log(&active_log)
    );
    let block = block.unwrap();
    let mut standby = spawn(
        &["--standby", "--report", report.to_str().unwrap()],
        &cfg,
        standby_log.clone(),
    );
    let standby_pid = standby.id();

    // Live: while the active keeps sending, the standby's applied
    // sequence keeps rising.
    let sent = || GatewaySnapshot::read(&block).orders_sent;
    let applied = || {
        block
            .standby()
            .filter(|s| s.pid == standby_pid)
            .map_or(0, |s| s.applied_seq)
    };
    assert!(
        wait_for(Duration::from_secs(60), || applied() > 0 && sent() > 200),
        "standby applying while the active trades; standby log:\n{}\nactive log:\n{}",
        log(&standby_log),
        log(&active_log)
    );
    let (sent0, applied0) = (sent(), applied());
    assert!(
        wait_for(Duration::from_secs(60), || sent() > sent0 + 200
            && applied() > applied0 + 200),
        "both still moving: sent {} -> {}, applied {} -> {}",
        sent0,
        sent(),
        applied0,
        applied()
    );

    // `killswitch status` shows the lease and the standby.
    let mut text = String::new();
    assert!(
        wait_for(Duration::from_secs(30), || {
            let mut c = ks(work.path(), "pair");
            c.arg("status");
            text = run(c).stdout();
            text.contains(&format!(
                "lease       epoch 1, holder pid {active_pid} alive"
            )) && text.contains(&format!(
                "standby     pid {standby_pid} alive: applied to journal seq"
            ))
        }),
        "status:\n{text}"
    );
    let lag_line = text
        .lines()
        .find(|l| l.starts_with("standby"))
        .unwrap()
        .to_string();
    let mut c = ks(work.path(), "pair");
    c.args(["status", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&run(c).stdout()).unwrap();
    assert_eq!(json["lease"]["holder"], active_pid);
    assert_eq!(json["standby"]["pid"], standby_pid);

    // The active dies mid-flow; the standby catches up to the last record.
    active.kill().unwrap();
    active.wait().unwrap();
    let rebuilt = rebuild(&work.path().join("journal")).unwrap();
    let last = rebuilt.state.last_seq;
    assert!(
        wait_for(Duration::from_secs(60), || applied() == last),
        "standby caught up to seq {last}: at {}",
        applied()
    );
    let caught_up = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(standby_pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = standby.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "standby log:\n{}",
        log(&standby_log)
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["role"], "standby");
    assert_eq!(r["orders_sent"], 0);
    assert_eq!(r["last_seq"], last);
    assert_eq!(r["issues"].as_array().unwrap().len(), 0, "{r}");
    assert_eq!(r["max_order_id"], rebuilt.state.max_order_id.0);
    let open = r["open_orders"].as_object().unwrap();
    assert!(
        open.len() >= 100,
        "the active died with orders open: {}",
        open.len()
    );
    assert_eq!(open.len(), rebuilt.state.open_orders.len());
    for o in &rebuilt.state.open_orders {
        let id = o.id;
        let mine = &open[&id.0.to_string()];
        assert_eq!(mine["qty"], o.qty.0, "order {id}");
        assert_eq!(mine["filled"], o.filled.0, "order {id}");
    }
    let positions = r["positions"].as_object().unwrap();
    assert_eq!(positions.len(), rebuilt.state.positions.len());
    for (k, p) in &rebuilt.state.positions {
        let key = format!("{}/{}/{}", k.venue, k.instrument, k.account);
        assert_eq!(positions[&key], p.qty.0, "position {key}");
    }

    // The venue's own log: one connection, one logon, both the active's.
    let audit = venue.audit("SIM");
    let logons: Vec<_> = audit
        .iter()
        .filter(|e| e.dir == "event" && e.event.as_deref() == Some("logon"))
        .collect();
    assert_eq!(logons.len(), 1, "{logons:?}");
    let connects = audit
        .iter()
        .filter(|e| e.dir == "event" && e.event.as_deref() == Some("connect"))
        .count();
    assert_eq!(connects, 1);
    let orders_in = audit
        .iter()
        .filter(|e| e.dir == "in" && e.msg_type.as_deref() == Some("D"))
        .count();
    assert!(orders_in > 400, "the active traded: {orders_in} orders");
    eprintln!(
        "standby: {} records applied, max lag {} ns; last status line: {lag_line}; caught up {:?} before its stop",
        r["records_applied"],
        r["max_lag_ns"],
        caught_up.elapsed()
    );
}
