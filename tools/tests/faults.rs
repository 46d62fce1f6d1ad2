//! The engine and `killswitch` on the failure paths of issue 9, as real
//! processes: a drain thread that dies, an engine killed in the middle of
//! its drain (reset refused, `emergency` says what happened, a restart
//! cancels or reports what it left), and `emergency` against a restarted
//! engine that is latched and has nothing left to do.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use killswitch::control::{ControlBlock, DrainPhase, DrainSnapshot, GatewaySnapshot, Mode};
use serde_json::Value;
use support::{ks, run, wait_for, KILLSWITCH};

/// Engines use several threads; this machine has two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A small engine: one venue, one market maker resting `open` orders.
fn config(work: &Path, name: &str, extra_drain: &str, venue: &str, open: usize) -> String {
    format!(
        r#"name = "{name}"
control_dir = {dir:?}
journal_dir = {journal:?}
report_path = {report:?}
heartbeat_us = 500

[drain]
{extra_drain}

[[venues]]
name = "SIM-A"
instruments = ["BTC/USD"]
flow_interval_us = 0
{venue}

[[strategies]]
name = "mm"
venue = "SIM-A"
instrument = "BTC/USD"
open_orders = {open}
"#,
        dir = work,
        journal = work.join("journal"),
        report = work.join(format!("{name}-report.json")),
    )
}

fn start(work: &Path, name: &str, toml: &str, tag: &str) -> (Child, ControlBlock) {
    let path = work.join(format!("{tag}.toml"));
    std::fs::write(&path, toml).unwrap();
    let child = Command::new(KILLSWITCH)
        .arg("engine")
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.join(format!("{tag}.log"))).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut block = None;
    assert!(
        wait_for(Duration::from_secs(30), || {
            block = ControlBlock::open(work, name)
                .ok()
                .filter(|b| b.owner().pid == pid && b.owner().alive);
            block.is_some()
        }),
        "engine attached; log:\n{}",
        log(work, tag)
    );
    (child, block.unwrap())
}

fn log(work: &Path, tag: &str) -> String {
    std::fs::read_to_string(work.join(format!("{tag}.log"))).unwrap_or_default()
}

fn wait_exit(child: &mut Child, deadline: Duration) -> std::process::ExitStatus {
    let mut status = None;
    assert!(
        wait_for(deadline, || {
            status = child.try_wait().unwrap();
            status.is_some()
        }),
        "engine pid {} did not exit",
        child.id()
    );
    status.unwrap()
}

fn resting(block: &ControlBlock, n: u64) {
    assert!(
        wait_for(Duration::from_secs(30), || GatewaySnapshot::read(block)
            .open_orders
            >= n),
        "{n} orders resting"
    );
}

/// The drain thread dies (its checkpoint hook panics, fault injection):
/// the engine notices, keeps the switch at KILL, records it in the control
/// block, reports it and exits 14; `emergency` escalates (exit 10) instead
/// of calling it drained; reset is refused.
#[test]
fn an_engine_whose_drain_thread_dies_reports_it_and_exits_non_zero() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let toml = config(w, "dies", "inject_checkpoint_panic = true", "", 200);
    let (mut engine, block) = start(w, "dies", &toml, "dies");
    resting(&block, 200);
    let mut em = ks(w, "dies");
    em.args(["emergency", "--json", "--reason", "drain death test"]);
    let out = run(em);
    let status = wait_exit(&mut engine, Duration::from_secs(30));
    let text = log(w, "dies");
    assert_eq!(status.code(), Some(14), "{text}");
    assert!(text.contains("DRAIN THREAD DIED"), "{text}");
    assert_eq!(out.code(), 10, "{}\n{}", out.stdout(), out.stderr());
    let report: Value = serde_json::from_str(&out.stdout()).unwrap();
    assert!(
        report["verdict"]
            .as_str()
            .unwrap()
            .contains("WITHOUT CONFIRMING"),
        "{report}"
    );
    let engine_report: Value =
        serde_json::from_slice(&std::fs::read(w.join("dies-report.json")).unwrap()).unwrap();
    assert_eq!(engine_report["exit_code"], 14);
    assert!(engine_report["drain_died"]
        .as_str()
        .unwrap()
        .contains("injected fault"));
    assert_eq!(block.state().mode(), Mode::Kill);
    assert!(block.drain_incomplete().is_some(), "on record");
    let mut reset = ks(w, "dies");
    reset.args(["reset", "--confirm", "--reason", "try"]);
    run(reset).expect_code(1);
}

/// SIGKILL in the middle of a drain (the venue ignores cancels, so the
/// drain is still waiting): reset is refused with the counts although the
/// engine is dead; `emergency` says the engine died mid-drain (not "no
/// engine was running") and exits 10. After a forced reset, a restarted
/// engine adopts the orders the journal shows open and drains them before
/// trading (here the fresh simulated venue does not know them: they end
/// `CancelUnknown`, by id, and block the next reset again).
#[test]
fn an_engine_killed_mid_drain_blocks_reset_and_its_restart_drains_what_it_left() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let toml = config(
        w,
        "kill9",
        "cancel_deadline_ms = 60000",
        "ignore_cancels = true",
        300,
    );
    let (mut engine, block) = start(w, "kill9", &toml, "first");
    resting(&block, 300);
    let mut trip = ks(w, "kill9");
    trip.args(["trip", "--reason", "stop it"]);
    run(trip).expect_code(0);
    assert!(
        wait_for(Duration::from_secs(20), || {
            let d = DrainSnapshot::read(&block);
            d.phase == DrainPhase::Cancelling && d.open_at_snapshot >= 300
        }),
        "the drain is waiting on the venue"
    );
    engine.kill().unwrap();
    engine.wait().unwrap();
    assert!(!block.owner().alive);

    let mut reset = ks(w, "kill9");
    reset.args(["reset", "--confirm", "--reason", "too early"]);
    let out = run(reset);
    out.expect_code(1);
    assert!(
        out.stderr().contains("did not finish cleanly")
            && out.stderr().contains("open at the snapshot"),
        "{}",
        out.stderr()
    );
    assert_eq!(block.state().mode(), Mode::Kill);
    let mut st = ks(w, "kill9");
    st.args(["status", "--json"]);
    let out = run(st);
    out.expect_code(0);
    let status: Value = serde_json::from_str(&out.stdout()).unwrap();
    assert!(
        status["drain_incomplete"]["open"].as_u64().unwrap() >= 300,
        "{status}"
    );
    assert!(!status["reset_blockers"].as_array().unwrap().is_empty());

    let mut em = ks(w, "kill9");
    em.args(["emergency", "--reason", "follow up"]);
    let out = run(em);
    out.expect_code(10);
    assert!(
        out.stdout().contains("DIED MID-DRAIN") && !out.stdout().contains("no engine was running"),
        "{}\n{}",
        out.stdout(),
        out.stderr()
    );
    let rec = block.drain_incomplete().expect("record");
    assert!(rec.unknown >= 300, "{rec:?}");

    // Reconciled by hand (here: nothing to check), then forced.
    let mut reset = ks(w, "kill9");
    reset.args(["reset", "--confirm", "--force", "--reason", "reconciled"]);
    run(reset).expect_code(0);
    assert!(block.drain_incomplete().is_none());

    // The restart: the journal shows the orders open; the engine drains
    // them before any new order.
    let toml = config(w, "kill9", "cancel_deadline_ms = 300", "", 50);
    let (mut engine, block) = start(w, "kill9", &toml, "second");
    assert!(
        // The whole line: stderr is unbuffered, so a reader can catch
        // the line between the writes of its pieces.
        wait_for(Duration::from_secs(20), || log(w, "second")
            .contains("dealt with before any new order")),
        "{}",
        log(w, "second")
    );
    let text = log(w, "second");
    assert!(text.contains("dealt with before any new order"), "{text}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(engine.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_exit(&mut engine, Duration::from_secs(30));
    let report: Value =
        serde_json::from_slice(&std::fs::read(w.join("kill9-report.json")).unwrap()).unwrap();
    let recovery = &report["recovery_drain"];
    assert!(recovery["recovery"].as_bool().unwrap(), "{report}");
    assert!(
        recovery["open_at_snapshot"].as_u64().unwrap() >= 300,
        "{recovery}"
    );
    // A fresh simulated venue does not know them: reported by id, never
    // called cancelled.
    assert_eq!(
        recovery["unknown"].as_array().unwrap().len() as u64,
        recovery["open_at_snapshot"].as_u64().unwrap(),
        "{recovery}"
    );
    assert_eq!(
        status.code(),
        Some(11),
        "orders unknown: {}",
        log(w, "second")
    );
    assert!(DrainSnapshot::read(&block).orders_unknown >= 300);
    // The journal says what the engine said: none of them left "open".
    let mut inspect = Command::new(KILLSWITCH);
    inspect
        .args(["journal", "inspect", "--json"])
        .arg(w.join("journal"));
    let out = run(inspect);
    let j: Value = serde_json::from_str(&out.stdout()).unwrap();
    let open = j["state"]["open_orders"].as_array().unwrap();
    assert!(open.len() >= 300, "{}", open.len());
    assert!(
        open.iter().all(|o| o["state"] == "cancel-unknown"),
        "{:?}",
        open.iter()
            .map(|o| o["state"].to_string())
            .collect::<std::collections::BTreeSet<_>>()
    );
}

/// `emergency` against an engine restarted after the trip, latched (its
/// gate refuses every order), whose drain of the trip's generation is
/// done: reported, exit 0, no SIGTERM.
#[test]
fn emergency_leaves_a_restarted_latched_and_drained_engine_alone() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let toml = config(w, "latch", "", "", 100);
    let (mut engine, block) = start(w, "latch", &toml, "first");
    resting(&block, 100);
    let mut em = ks(w, "latch");
    em.args(["emergency", "--reason", "first stop"]);
    run(em).expect_code(0);
    assert_eq!(
        wait_exit(&mut engine, Duration::from_secs(30)).code(),
        Some(0)
    );
    let g = block.state().generation();
    let first_done = DrainSnapshot::read(&block).t_done;
    // /proc gives process start times in clock ticks (10 ms): let the
    // restart be one, as an operator's would be, not within the same tick.
    std::thread::sleep(Duration::from_millis(50));

    let (mut engine, block) = start(w, "latch", &toml, "second");
    assert!(
        wait_for(Duration::from_secs(20), || {
            let d = DrainSnapshot::read(&block);
            d.generation == g && d.phase == DrainPhase::Done && d.t_done > first_done
        }),
        "the restarted engine drained the latched generation"
    );
    let mut em = ks(w, "latch");
    em.args(["emergency", "--json", "--reason", "again"]);
    let out = run(em);
    out.expect_code(0);
    let report: Value = serde_json::from_str(&out.stdout()).unwrap();
    assert_eq!(
        report["signals_sent"].as_array().unwrap().len(),
        0,
        "{report}"
    );
    assert!(
        report["verdict"].as_str().unwrap().contains("latched"),
        "{report}"
    );
    assert!(engine.try_wait().unwrap().is_none(), "left running");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(engine.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_exit(&mut engine, Duration::from_secs(30));
}
