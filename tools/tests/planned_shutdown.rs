//! The planned shutdown as real processes: the reference engine
//! (`killswitch engine`) trading on its simulated venues, `killswitch
//! shutdown` asking for the runbook's thirteen steps through the control
//! block and following them, `killswitch verify-shutdown` after; the
//! troubleshooting paths (a venue that ignores cancels, a service that
//! ignores its stop); SIGTERM running the same planned shutdown and a
//! second SIGTERM escalating to the emergency drain; `killswitch drill
//! --planned`. More troubleshooting paths: `planned_troubleshooting.rs`.

mod support;

use std::path::Path;
use std::process::Command;

use killswitch::control::{ControlBlock, Mode, Source};
use killswitch::shutdown::words::{self, PhaseState};
use serde_json::Value;
use support::planned::{config, engine_log, shutdown_report, start, LONG};
use support::{ks, run, wait_for, KILLSWITCH};

#[test]
fn shutdown_runs_every_step_then_verify_shutdown_passes() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "eod");
    let mut engine = start(d.path(), &cfg);
    let mut cmd = ks(d.path(), "eod");
    cmd.args([
        "shutdown",
        "--reason",
        "Maintenance",
        "--reduce-limits",
        "50",
    ]);
    let out = run(cmd);
    let log = engine_log(d.path(), "eod");
    out.expect_code(0);
    let text = out.stdout();
    // Every step, in order, each with its time.
    let mut from = 0;
    for n in 1..=13 {
        let needle = format!("] Step {n}: ");
        let at = text[from..]
            .find(&needle)
            .and_then(|i| text[from + i..].find(" ... Done").map(|j| from + i + j))
            .unwrap_or_else(|| panic!("step {n} not done in order:\n{text}\n--- engine\n{log}"));
        from = at;
    }
    assert!(
        text.contains("Planned shutdown complete: status OFFLINE"),
        "{text}"
    );
    assert_eq!(
        engine.wait_exit(),
        Some(0),
        "{}",
        engine_log(d.path(), "eod")
    );

    let r = shutdown_report(d.path(), "eod");
    assert_eq!(r["clean"], true, "{r:#}");
    assert_eq!(r["reason"], "Maintenance");
    assert_eq!(r["phases"].as_array().unwrap().len(), 13);
    assert!(r["cancelled"].as_u64().unwrap() > 0, "{r:#}");
    assert!(r["stragglers"].as_array().unwrap().is_empty());
    assert!(r["position_limit"].is_number(), "{r:#}");
    // The venues answered the position request: every row checked and OK.
    for row in r["reconcile"].as_array().unwrap() {
        assert_eq!(row["status"], "OK", "{r:#}");
    }
    // The strategies table: every strategy disabled.
    let strategies = r["strategies"].as_array().unwrap();
    assert_eq!(strategies.len(), cfg.strategies.len(), "{r:#}");
    assert!(
        strategies.iter().all(|s| s["status"] == "DISABLED"),
        "{r:#}"
    );
    // The complete checkpoint carries the configuration, the strategy
    // states and the log tail, and its CRC matches the report's.
    let path = r["checkpoint"]["path"].as_str().unwrap();
    let ck = killswitch::checkpoint::read(Path::new(path)).unwrap();
    assert_eq!(
        format!("0x{:016x}", ck.summary.file_crc64),
        r["checkpoint"]["crc64"]
    );
    assert!(
        !ck.config.is_empty() && !ck.strategies.is_empty(),
        "{:?}",
        ck.summary
    );
    assert!(ck.log_tail.contains("planned shutdown"), "{}", ck.log_tail);
    // The block: OFFLINE, finished, unlocked.
    let b = ControlBlock::open(d.path(), "eod").unwrap();
    let p = words::progress(&b).unwrap();
    assert_eq!((p.phase, p.state), (13, PhaseState::Finished));
    assert!(!words::change_flags(&b).locked);
    assert_eq!(
        killswitch::control::telemetry::TelemetrySnapshot::read(&b)
            .engine
            .unwrap()
            .status,
        killswitch::control::telemetry::EngineStatus::Offline
    );

    let mut verify = ks(d.path(), "eod");
    verify.args(["verify-shutdown", "--log"]);
    verify.arg(d.path().join("engine-eod.log"));
    let v = run(verify);
    v.expect_code(0);
    assert_eq!(v.stdout().matches('✓').count(), 5, "{}", v.stdout());
}

#[test]
fn stuck_cancels_are_forced_locally_and_a_stubborn_service_is_forced_both_reported() {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = config(d.path(), "stuck");
    // "Orders Not Canceling": SIM-B ignores every cancel.
    cfg.venues[1].ignore_cancels = true;
    cfg.shutdown.order_wait_ms = 1000;
    // "Process Not Stopping": the risk service ignores its stop.
    cfg.shutdown.risk_service_ignores_stop = true;
    cfg.shutdown.component_timeout_ms = 500;
    let mut engine = start(d.path(), &cfg);
    let mut cmd = ks(d.path(), "stuck");
    cmd.args(["shutdown", "--reason", "maintenance"]);
    let out = run(cmd);
    out.expect_code(5);
    let text = out.stdout();
    assert!(text.contains("marked CancelUnknown locally"), "{text}");
    assert!(text.contains("risk-service"), "{text}");
    assert!(text.contains("WITH FINDINGS"), "{text}");
    assert_eq!(
        engine.wait_exit(),
        Some(16),
        "{}",
        engine_log(d.path(), "stuck")
    );
    let r = shutdown_report(d.path(), "stuck");
    let stragglers = r["stragglers"].as_array().unwrap();
    assert!(!stragglers.is_empty(), "{r:#}");
    assert_eq!(r["forced_cancel_local"], r["stragglers"]);
    let risk = r["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "risk-service")
        .unwrap();
    assert_eq!(risk["graceful"], false);
    assert!(
        risk["forced"].as_str().unwrap().contains("forced"),
        "{risk}"
    );
    // Every other step still ran: the checkpoint is there and valid.
    let path = r["checkpoint"]["path"].as_str().unwrap();
    killswitch::checkpoint::validate(Path::new(path)).unwrap();
}

#[test]
fn sigterm_runs_the_planned_shutdown_and_a_second_sigterm_escalates_to_emergency() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "term");
    let mut engine = start(d.path(), &cfg);
    engine.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(
        engine.wait_exit(),
        Some(0),
        "{}",
        engine_log(d.path(), "term")
    );
    let r = shutdown_report(d.path(), "term");
    assert_eq!(r["reason"], "signal SIGTERM");
    assert_eq!(r["clean"], true, "{r:#}");
    // The switch went to REDUCE_ONLY (strategies disabled), never KILL.
    let b = ControlBlock::open(d.path(), "term").unwrap();
    let t = b.last_trip().unwrap();
    assert_eq!((t.mode, t.source), (Mode::ReduceOnly, Source::Api));

    // Again, with cancels that never come back: the shutdown waits in
    // step 6, and a second SIGTERM escalates.
    let mut cfg = config(d.path(), "term2");
    cfg.venues[1].ignore_cancels = true;
    cfg.drain.cancel_deadline_ms = 1000;
    cfg.shutdown.order_wait_ms = 60_000;
    let mut engine = start(d.path(), &cfg);
    engine.signal(nix::sys::signal::Signal::SIGTERM);
    let b = ControlBlock::open(d.path(), "term2").unwrap();
    assert!(
        wait_for(LONG, || words::progress(&b).is_some_and(|p| p.phase == 6)),
        "never reached step 6:\n{}",
        engine_log(d.path(), "term2")
    );
    engine.signal(nix::sys::signal::Signal::SIGTERM);
    let code = engine.wait_exit();
    let t = b.last_trip().unwrap();
    assert_eq!(t.mode, Mode::Kill);
    assert_eq!(t.reason, "signal SIGTERM (repeated): emergency");
    let r = shutdown_report(d.path(), "term2");
    assert_ne!(
        r["outcome_bits"].as_u64().unwrap() & words::OUTCOME_ESCALATED,
        0,
        "{r:#}"
    );
    assert_ne!(code, Some(0), "{}", engine_log(d.path(), "term2"));
}

#[test]
fn dry_run_prints_the_plan_and_touches_nothing_and_bad_arguments_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "dry");
    let mut engine = start(d.path(), &cfg);
    let mut cmd = ks(d.path(), "dry");
    cmd.args([
        "shutdown",
        "--reason",
        "x",
        "--dry-run",
        "--flatten",
        "conservative",
    ]);
    let out = run(cmd);
    out.expect_code(0);
    assert!(
        out.stdout().contains("13. Post-shutdown report"),
        "{}",
        out.stdout()
    );
    let b = ControlBlock::open(d.path(), "dry").unwrap();
    assert_eq!(words::read_request(&b), None);
    assert!(b.owner().alive);
    for bad in [
        vec!["shutdown", "--reason", "x", "--at", "25:00"],
        vec!["shutdown", "--reason", "x", "--flatten", "fast"],
        vec!["shutdown", "--reason", "x", "--reduce-limits", "0"],
        vec![
            "shutdown",
            "--reason",
            "x",
            "--flatten",
            "aggressive",
            "--keep-passive",
        ],
    ] {
        let mut c = ks(d.path(), "dry");
        c.args(bad.iter());
        let o = run(c);
        assert_eq!(o.code(), 2, "{bad:?}: {}", o.stderr());
    }
    engine.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(
        engine.wait_exit(),
        Some(0),
        "{}",
        engine_log(d.path(), "dry")
    );
    // Nothing left: verify passes; and a second engine start is allowed
    // (the lock was released).
    let mut v = ks(d.path(), "dry");
    v.arg("verify-shutdown");
    run(v).expect_code(0);
}

#[test]
fn the_planned_drill_flattens_reconciles_checkpoints_and_verifies_over_the_wire() {
    let d = tempfile::tempdir().unwrap();
    let report = d.path().join("drill-report.json");
    let mut c = Command::new(KILLSWITCH);
    c.args([
        "drill",
        "--planned",
        "--trade-for",
        "1s",
        "--min-open",
        "2000",
        "--json",
        "--work-dir",
    ])
    .arg(d.path().join("work"))
    .arg("--report")
    .arg(&report);
    let out = run(c);
    out.expect_code(0);
    let v: Value = serde_json::from_slice(&out.output.stdout).unwrap();
    // The report file is the JSON printed.
    let file: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(file, v);
    assert_eq!(v["pass"], true, "{}", out.stderr());
    let checks = v["checks"].as_array().unwrap();
    assert!(checks.iter().all(|c| c["ok"] == true), "{checks:#?}");
    // The facts behind the verdict, from the engine's own report.
    let r = &v["shutdown_report"];
    assert_eq!(r["phases"].as_array().unwrap().len(), 13);
    assert_eq!(r["flatten"], "conservative");
    assert_eq!(v["shutdown_exit"], 0);
    assert_eq!(v["verify_exit"], 0);
    // Positions were open, and flattening closed every one of them.
    assert!(
        v["positions_open_at_request"].as_u64().unwrap() > 0,
        "{r:#}"
    );
    let fr = r["flatten_results"].as_array().unwrap();
    assert!(!fr.is_empty(), "{r:#}");
    for p in r["final_positions"].as_array().unwrap() {
        assert_eq!(p["qty"].as_f64(), Some(0.0), "{r:#}");
    }
    // The venues' own logs: nothing of ours left resting.
    assert_eq!(v["wire"]["resting_at_end"], 0, "{:#}", v["wire"]);
    assert!(v["verify_output"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l == "Shutdown verified ✓"));
    // Usage: the emergency drill's options do not go with --planned.
    let mut bad = Command::new(KILLSWITCH);
    bad.args(["drill", "--planned", "--scenario", "stuck-cancels"]);
    assert_eq!(run(bad).code(), 2);
    let mut bad = Command::new(KILLSWITCH);
    bad.args(["drill", "--flatten", "aggressive"]);
    assert_eq!(run(bad).code(), 2);
}

/// `verify-shutdown --report FILE` on a report from outside with the
/// checkpoint's keys missing: each check says what failed, no panic.
#[test]
fn verify_shutdown_reports_a_checkpoint_without_its_keys_as_a_failed_check() {
    let d = tempfile::tempdir().unwrap();
    let report = d.path().join("report.json");
    std::fs::write(&report, r#"{"checkpoint": {}}"#).unwrap();
    let mut v = ks(d.path(), "nobody");
    v.arg("verify-shutdown").arg("--report").arg(&report);
    let out = run(v);
    // Bits 1 (no engine process known) and 4 (checkpoint) failed.
    out.expect_code(32 + 1 + 4);
    assert!(out.stdout().contains("✗ checkpoint"), "{}", out.stdout());
    assert!(!out.stderr().contains("panicked"), "{}", out.stderr());
}
