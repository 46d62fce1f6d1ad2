//! Automatic trips and pre-trade limits in the reference engine, as real
//! processes: `killswitch engine --config` with `[rules]` or `[limits]`
//! in its TOML, its simulated venue driven into the condition by the
//! venue's own fault settings (rejects, a dropped session); the test reads
//! the control block the engine shares, as `killswitch status` would.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use killswitch::control::{AuditEntry, AuditKind, ControlBlock, Mode, ScopeKind, Source};
use killswitch::rules::{read_gauges, Rule};
use support::{ks, run, wait_for, KILLSWITCH};

const LONG: Duration = Duration::from_secs(60);

/// A child process killed (and reaped) when the test ends, pass or fail.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One venue "SIM" listing BTC/USD, one market maker on it, and `extra`.
fn config(dir: &Path, name: &str, venue_extra: &str, extra: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "name = \"{name}\"\ncontrol_dir = \"{d}\"\njournal_dir = \"{d}/{name}-journal\"\nreport_path = \"{d}/{name}-report.json\"\n{extra}\n\
             [[venues]]\nname = \"SIM\"\ninstruments = [\"BTC/USD\"]\n{venue_extra}\n\
             [[strategies]]\nname = \"mm\"\nvenue = \"SIM\"\ninstrument = \"BTC/USD\"\nopen_orders = 200\n",
            d = dir.display()
        ),
    )
    .unwrap();
    path
}

fn start(dir: &Path, name: &str, config: &Path) -> Proc {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    Proc(
        Command::new(KILLSWITCH)
            .arg("engine")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

fn log(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
}

/// Waits for an automatic trip in the engine's block; returns it.
fn wait_auto_trip(dir: &Path, name: &str) -> (ControlBlock, AuditEntry) {
    let mut found = None;
    let ok = wait_for(LONG, || {
        found = ControlBlock::open(dir, name).ok().and_then(|b| {
            let t = b
                .audit()
                .into_iter()
                .find(|e| e.kind == AuditKind::Trip && e.source == Source::Auto)?;
            Some((b, t))
        });
        found.is_some()
    });
    assert!(ok, "no automatic trip; engine log:\n{}", log(dir, name));
    found.unwrap()
}

#[test]
fn a_rejecting_venue_trips_the_engines_reject_rate_rule() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A third of the orders rejected against a limit of 20 %.
    let cfg = config(
        d,
        "rej",
        "reject_ppm = 330000",
        "[rules]\nreject_rate = { max_percent = 20.0, window_ms = 600000, min_answers = 50 }\n",
    );
    let _engine = start(d, "rej", &cfg);
    let (block, trip) = wait_auto_trip(d, "rej");
    assert_eq!((trip.mode, trip.scope), (Mode::HaltNew, None));
    assert!(
        trip.reason.contains("auto rule reject-rate"),
        "{}",
        trip.reason
    );
    let g = read_gauges(&block)[Rule::RejectRate as usize];
    assert!(g.configured && g.tripped, "{g:?}");
    // The gauge as the operator sees it, through the CLI.
    let status = run({
        let mut c = ks(d, "rej");
        c.args(["status", "--json"]);
        c
    });
    assert!(
        status.stdout().contains("\"rule\": \"reject-rate\"")
            || status.stdout().contains("\"rule\":\"reject-rate\""),
        "{}",
        status.stdout()
    );
    // The gauges as `/metrics` renders them.
    let metrics = killswitch_tools::admin::metrics::render(
        &killswitch_tools::admin::view::EngineView::read(&block),
        &Default::default(),
        &Default::default(),
    );
    for line in [
        "killswitch_rule_tripped{rule=\"reject-rate\"} 1",
        "killswitch_rule_warning_grade_percent{rule=\"reject-rate\"} 100",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    // Only the risk role may undo an automatic trip.
    let reset = run({
        let mut c = ks(d, "rej");
        c.args(["reset", "--confirm", "--reason", "trader tries"]);
        c
    });
    assert_ne!(reset.code(), 0, "{}", reset.stderr());
    assert_eq!(block.state().mode(), Mode::HaltNew);
}

#[test]
fn a_dropped_venue_session_trips_the_heartbeat_rule_for_that_venue() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = config(
        d,
        "hb",
        "disconnect_after_ms = 1500",
        "[rules]\nvenue_heartbeat = { stale_after_ms = 500 }\n",
    );
    let _engine = start(d, "hb", &cfg);
    let (block, trip) = wait_auto_trip(d, "hb");
    let venue = block.lookup_name(ScopeKind::Venue, "SIM").unwrap();
    assert_eq!(
        (trip.mode, trip.scope),
        (Mode::HaltNew, Some((ScopeKind::Venue, venue)))
    );
    assert!(
        trip.reason
            .contains("venue-heartbeat venue SIM: no heartbeat for"),
        "{}",
        trip.reason
    );
    // It warned before it tripped (50 % of 500 ms of silence comes first).
    let warned = block
        .audit()
        .into_iter()
        .filter(|e| e.kind == AuditKind::Warning && e.reason.contains("venue-heartbeat"))
        .count();
    assert!(warned >= 1, "{:#?}", block.audit());
}

#[test]
fn the_engines_pre_trade_limits_refuse_orders_that_break_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The market maker sends 2 lots; at most 1 is allowed: every order is
    // refused by the limit, none reaches the venue.
    let cfg = config(
        d,
        "lim",
        "",
        "trade_for_ms = 1500\n[limits]\nmax_order_qty = 1\nprice_collar_bps = 500\n",
    );
    let cfg_text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("open_orders = 200\n", "open_orders = 200\nlots = 2\n");
    std::fs::write(&cfg, cfg_text).unwrap();
    let mut engine = start(d, "lim", &cfg);
    let mut status = None;
    assert!(
        wait_for(LONG, || {
            status = engine.0.try_wait().unwrap();
            status.is_some()
        }),
        "engine did not stop; log:\n{}",
        log(d, "lim")
    );
    assert_eq!(status.unwrap().code(), Some(0), "{}", log(d, "lim"));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("lim-report.json")).unwrap()).unwrap();
    let s = &report["strategies"][0];
    assert!(s["refused_by_limits"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(s["submitted"].as_u64(), Some(0), "{s}");
}
