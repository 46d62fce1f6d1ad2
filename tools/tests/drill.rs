//! The drill's scenarios as real processes: `killswitch drill` starts the
//! reference engine, trips it from outside and checks the outcome; these
//! tests read its JSON report and check the facts behind each verdict.
//! Drills run one at a time: each starts an engine with several threads,
//! and this machine has two cores. Most run over the wire (the default:
//! venues as `killswitch venue` processes, facts read from their audit
//! logs); a few keep the in-process venues (`--venues in-process`), whose
//! faults the wire cannot show (a dropped session that stays down).

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use killswitch::control::{ControlBlock, DrainPhase, DrainSnapshot, GatewaySnapshot, Mode, Source};
use serde_json::Value;
use support::{ks, passing_drill, run, wait_for, KILLSWITCH};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Venues over the wire (the drill's default).
const WIRE: &str = "wire";
/// The engine's built-in venues.
const IN_PROCESS: &str = "in-process";

fn drill(scenario: &str, method: &str, venues: &str, work: Option<&std::path::Path>) -> Value {
    let mut c = Command::new(KILLSWITCH);
    c.args([
        "drill",
        "--scenario",
        scenario,
        "--method",
        method,
        "--venues",
        venues,
        "--trade-for",
        "1s",
        "--min-open",
        "2000",
        "--json",
    ]);
    if let Some(w) = work {
        c.arg("--work-dir").arg(w);
    }
    passing_drill(c, &format!("drill {scenario}")).0
}

/// The signals `killswitch emergency` sent to the engine, in order.
fn signals_sent(v: &Value) -> Vec<&str> {
    v["emergency"]["signals_sent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

fn verification(v: &Value) -> &Value {
    &v["engine"]["verification"]
}

/// What the venues' audit logs say (over the wire).
fn wire(v: &Value) -> &Value {
    &v["wire"]
}

/// The venues' own logs: nothing after the kill acknowledgement mark (found
/// in every venue's log), nothing working at the drain's end that the
/// engine did not report, nothing left resting after the stop.
fn assert_venues_agree(v: &Value) {
    let w = wire(v);
    assert_eq!(w["new_orders_after_ack"], 0, "{w}");
    assert_eq!(w["unaccounted_at_drain_end"], 0, "{w}");
    assert_eq!(w["resting_at_end"], 0, "{w}");
    for venue in w["venues"].as_array().unwrap() {
        assert!(venue["ack_mark_line"].as_u64().is_some(), "{venue}");
        assert!(venue["new_orders_total"].as_u64().unwrap() > 0, "{venue}");
    }
}

#[test]
fn normal_emergency_drains_everything_and_the_journal_agrees() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let v = drill("normal", "cli", WIRE, None);
    let ver = verification(&v);
    assert_eq!(ver["orders_unaccounted"], 0);
    assert_eq!(ver["orders_unknown"], 0);
    assert_venues_agree(&v);
    assert!(wire(&v)["new_orders_total"].as_u64().unwrap() >= 2000);
    assert_eq!(v["wire"]["venues"].as_array().unwrap().len(), 2);
    let drain = v["engine"]["drains"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert!(
        drain["open_at_snapshot"].as_u64().unwrap() >= 2000,
        "{drain}"
    );
    assert!(drain["checkpoint_seq"].as_u64().is_some());
    assert_eq!(v["emergency_exit"], 0);
    assert_eq!(v["engine"]["exit_code"], 0);
    assert!(v["checkpoint"].as_str().unwrap().ends_with(".ckpt"));
    // `emergency` put the gateway's own acknowledgement time on its
    // timeline (published before the acknowledged generation), not the
    // moment it happened to look.
    let t_trip = drain["timings_ns"][0].as_u64().unwrap();
    let ack = ver["ack_mono_ns"].as_u64().unwrap();
    let step = v["emergency"]["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["what"]
                .as_str()
                .unwrap()
                .starts_with("gateway acknowledged")
        })
        .unwrap()
        .clone();
    assert_eq!(step["at_ns"].as_u64().unwrap(), ack - t_trip, "{step}");
    // The "nothing after the ack" window held real attempts: every strategy
    // was refused by the gate after the drain before the engine stopped it.
    let strategies = v["engine"]["strategies"].as_array().unwrap();
    assert_eq!(strategies.len(), 4);
    for s in strategies {
        assert!(s["refused_after_drain"].as_u64().unwrap() > 0, "{s}");
    }
    let check = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["name"]
                .as_str()
                .unwrap()
                .starts_with("no new order reached")
        })
        .unwrap();
    assert!(
        check["detail"]
            .as_str()
            .unwrap()
            .contains("refused by the gate after the drain"),
        "{check}"
    );
}

/// The drill makes its own control block: a `--dir` / `--name` given to it
/// is refused (it was silently ignored before).
#[test]
fn the_drill_refuses_dir_and_name_it_would_not_use() {
    let mut c = Command::new(KILLSWITCH);
    c.args(["--dir", "/tmp", "drill"]);
    let out = run(c);
    out.expect_code(2);
    assert!(out.stderr().contains("--work-dir"), "{}", out.stderr());
    let mut c = Command::new(KILLSWITCH);
    c.args(["drill", "--name", "prod"]);
    let out = run(c);
    out.expect_code(2);
    assert!(
        out.stderr().contains("--name does not apply"),
        "{}",
        out.stderr()
    );
}

#[test]
fn sigusr1_trips_from_inside_the_handler() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let v = drill("normal", "signal", IN_PROCESS, None);
    let first = &v["emergency"]["timeline"][0]["what"];
    assert!(
        first.as_str().unwrap().contains("by signal"),
        "the trip in force came from the signal handler: {first}"
    );
    let ver = verification(&v);
    assert_eq!(ver["new_orders_after_ack"], 0);
    assert!(ver["new_orders_total"].as_u64().unwrap() >= 2000);
    assert!(v["wire"].is_null(), "in-process: no venue processes");
}

#[test]
fn stuck_cancels_end_in_cancel_unknown_reported_by_id() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let v = drill("stuck-cancels", "cli", WIRE, None);
    let unknown = verification(&v)["orders_unknown"].as_u64().unwrap();
    assert!(unknown > 0);
    // The venue's own log: the orders it still had working when the drain
    // gave up are exactly among those reported, and its cancel-on-disconnect
    // removed them when the engine left.
    let sim_b = &wire(&v)["venues"][1];
    assert!(
        sim_b["working_at_drain_end"].as_u64().unwrap() > 0,
        "{sim_b}"
    );
    assert_eq!(wire(&v)["unaccounted_at_drain_end"], 0);
    assert_eq!(wire(&v)["resting_at_end"], 0);
    let drain = v["engine"]["drains"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    // Each order still CancelUnknown at the end is listed by id. (The list
    // may hold a few more: the venue ignores cancels but not trades, so an
    // order reported unknown at the deadline can fill afterwards, and the
    // registry applies that late answer.)
    let listed: std::collections::HashSet<u64> = drain["unknown"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            u.as_str().unwrap().split_whitespace().next().unwrap()[1..]
                .parse()
                .unwrap()
        })
        .collect();
    let still: Vec<u64> = v["engine"]["orders_not_terminal"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o[1] == "CancelUnknown")
        .map(|o| o[0].as_u64().unwrap())
        .collect();
    assert_eq!(still.len() as u64, unknown);
    let missing: Vec<&u64> = still.iter().filter(|id| !listed.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "each one listed: {} missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(v["emergency_exit"], 11, "emergency says orders are unknown");
    assert_eq!(v["engine"]["exit_code"], 11);
}

#[test]
fn a_stopped_engine_is_continued_and_drains() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let v = drill("sigstop", "cli", WIRE, None);
    assert_eq!(signals_sent(&v), ["SIGCONT"]);
    assert_eq!(verification(&v)["orders_unaccounted"], 0);
    assert_venues_agree(&v);
}

#[test]
fn a_stuck_engine_is_terminated_then_killed_and_the_journal_survives() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let v = drill("stuck", "cli", WIRE, None);
    let sent = signals_sent(&v);
    assert_eq!(sent, ["SIGTERM", "SIGKILL"]);
    assert_eq!(v["emergency_exit"], 10);
    assert!(v["engine"].is_null(), "a killed engine writes no report");
    assert!(v["engine_exit"].as_str().unwrap().contains("SIGKILL"));
    // SIGKILLed with thousands resting: the venues' cancel-on-disconnect
    // cancelled every one (their own logs say so).
    let w = wire(&v);
    assert_eq!(w["resting_at_end"], 0, "{w}");
    let by_venue: u64 = w["venues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["cancelled_on_disconnect"].as_u64().unwrap())
        .sum();
    // (Not "every one of the 2,000 the registry had open": orders still in
    // the engine's write buffer at the SIGSTOP never reached a venue.)
    assert!(by_venue > 0, "{w}");
}

#[test]
fn a_gateway_stuck_in_a_venue_write_is_escalated_to_sigkill() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let v = drill("gateway-hang", "cli", WIRE, None);
    // SIM-A hangs in-process; SIM-B is over the wire and the venue cancels
    // our orders when the killed engine's connection drops.
    assert_eq!(wire(&v)["venues"].as_array().unwrap().len(), 1);
    assert_eq!(wire(&v)["resting_at_end"], 0);
    let sent = signals_sent(&v);
    assert_eq!(
        sent,
        ["SIGTERM", "SIGKILL"],
        "a process blocked in its gateway ignores SIGTERM"
    );
    assert_eq!(v["emergency_exit"], 10);
    assert!(
        v["emergency"]["orders_unconfirmed"].as_u64().unwrap() > 0,
        "unconfirmed orders are counted, not hidden"
    );
    assert!(v["emergency"]["verdict"]
        .as_str()
        .unwrap()
        .starts_with("ESCALATED"));
}

#[test]
fn a_dropped_venue_session_leaves_its_orders_reported_unknown() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let v = drill("venue-disconnect", "cli", IN_PROCESS, None);
    assert!(verification(&v)["orders_unknown"].as_u64().unwrap() > 0);
    let venues = v["engine"]["venues"].as_array().unwrap();
    assert!(venues
        .iter()
        .any(|x| x["cancelled_on_disconnect"].as_u64().unwrap() > 0));
}

#[test]
fn a_panicking_strategy_trips_the_switch_itself() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let v = drill("strategy-panic", "cli", WIRE, None);
    let first = v["emergency"]["timeline"][0]["what"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        first.contains("by panic") && first.contains("injected fault"),
        "{first}"
    );
    assert_eq!(verification(&v)["orders_unaccounted"], 0);
}

/// Over the wire the dropped session comes back: the venue cancelled its
/// orders when it dropped (cancel-on-disconnect) and the resend brings those
/// cancels; what may have been lost in transit is reported, not hidden.
#[test]
fn a_dropped_session_over_the_wire_reconnects_and_reconciles() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let v = drill("venue-disconnect", "cli", WIRE, None);
    // Orders in the write buffer when the session dropped may never have
    // reached the venue: reported CancelUnknown (the venue's log, checked
    // below, shows none of them working), never called cancelled.
    assert_eq!(verification(&v)["orders_unaccounted"], 0);
    let sim_b = v["engine"]["venues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "SIM-B")
        .unwrap()
        .clone();
    assert!(sim_b["wire"]["logons"].as_u64().unwrap() >= 2, "{sim_b}");
    let venue_b = &wire(&v)["venues"][1];
    assert!(
        venue_b["cancelled_on_disconnect"].as_u64().unwrap() > 0,
        "{venue_b}"
    );
    assert_venues_agree(&v);
}

/// The restart case: SIGKILL with orders resting at venues that do
/// not cancel on disconnect; the restarted engine cancels (or reconciles as
/// filled) every one before its first new order, as the venues' logs show.
#[test]
fn a_crashed_engine_s_orders_are_cancelled_by_the_restart_before_it_trades() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let v = drill("crash-restart", "cli", WIRE, None);
    assert!(v["crashed_engine_exit"]
        .as_str()
        .unwrap()
        .contains("SIGKILL"));
    let w = wire(&v);
    let left = w["left_by_crashed_engine"].as_u64().unwrap();
    assert!(left >= 1000, "{w}");
    assert_eq!(w["closed_before_first_new_order"].as_u64().unwrap(), left);
    assert_venues_agree(&v);
    // The restart's recovery drain worked on the journal's open orders. Not
    // "at least `left`": the venues' flow goes on filling resting orders
    // between the crash and that drain's snapshot, and the restarted engine
    // learns those fills first (they are among the closed counted above).
    let recovery = &v["engine"]["recovery_drain"];
    assert!(
        recovery["open_at_snapshot"].as_u64().unwrap() > 0,
        "{recovery}"
    );
    assert_eq!(
        recovery["unknown"].as_array().unwrap().len(),
        0,
        "{recovery}"
    );
    assert_eq!(v["engine"]["exit_code"], 0);
}

/// After an emergency the switch stays latched: a restarted engine does not
/// trade until `reset --confirm`, then trades, then stops on SIGTERM.
#[test]
fn a_restarted_engine_stays_latched_until_reset() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let work = tempfile::tempdir().unwrap();
    // In-process: the restarted engine needs its venues, and the drill's
    // venue processes are gone with the drill.
    drill("normal", "cli", IN_PROCESS, Some(work.path()));
    let block = ControlBlock::open(work.path(), "drill").unwrap();
    assert_eq!(
        block.state().mode(),
        Mode::Kill,
        "latched after the emergency"
    );

    let g = block.state().generation();
    let first_done = DrainSnapshot::read(&block).t_done;
    // /proc gives process start times in clock ticks (10 ms): let the
    // restart be one, as an operator's would be, not within the same tick.
    std::thread::sleep(Duration::from_millis(50));

    let report = work.path().join("restart-report.json");
    let mut engine = Command::new(KILLSWITCH)
        .arg("engine")
        .arg("--config")
        .arg(work.path().join("engine.toml"))
        .arg("--report")
        .arg(&report)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = engine.id();
    // The engine's log, line by line as it comes, and whole at the end.
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let err = engine.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut all = String::new();
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            all.push_str(&l);
            all.push('\n');
            let _ = lines_tx.send(l);
        }
        all
    });
    // Before the reset: the engine has said it starts latched, and it has
    // drained the latched generation again (a reset is refused while a
    // drain runs). Either can come late on a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) if l.contains("LATCHED at KILL") => break,
            Ok(_) => {}
            Err(e) => panic!("the restarted engine never said it is latched: {e}"),
        }
    }
    assert!(
        wait_for(Duration::from_secs(60), || {
            let d = DrainSnapshot::read(&block);
            d.generation == g && d.phase == DrainPhase::Done && d.t_done > first_done
        }),
        "the restarted engine drained the latched generation"
    );
    assert_eq!(
        block.owner().pid,
        pid,
        "the restarted engine owns the block"
    );
    let sent_before = GatewaySnapshot::read(&block).orders_sent;
    // Strategies run and are refused by the gate: nothing may reach a venue.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        GatewaySnapshot::read(&block).orders_sent,
        sent_before,
        "latched: no order sent"
    );

    let mut reset = ks(work.path(), "drill");
    reset.args([
        "reset",
        "--confirm",
        "--reason",
        "root cause fixed, restart approved",
    ]);
    run(reset).expect_code(0);
    assert!(
        wait_for(Duration::from_secs(60), || GatewaySnapshot::read(&block)
            .orders_sent
            > sent_before + 100),
        "trading resumed after the reset"
    );

    // SIGTERM: the planned shutdown (the runbook's 13 steps): the switch
    // goes to REDUCE_ONLY while strategies stop and orders are cancelled,
    // never KILL; the engine exits when every step is done.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = {
        let mut s = None;
        assert!(wait_for(Duration::from_secs(20), || {
            s = engine.try_wait().unwrap();
            s.is_some()
        }));
        s.unwrap()
    };
    let stderr = log.join().unwrap();
    assert!(stderr.contains("LATCHED at KILL"), "{stderr}");
    assert!(stderr.contains("trading resumes"), "{stderr}");
    assert_eq!(status.code(), Some(0), "{stderr}");
    let t = block.last_trip().unwrap();
    assert_eq!(t.source, Source::Api);
    assert_eq!(t.mode, Mode::ReduceOnly);
    assert_eq!(t.reason, "planned shutdown: strategies disabled");
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["verification"]["new_orders_after_ack"], 0);
    assert_eq!(r["verification"]["orders_unaccounted"], 0);
    assert_eq!(r["signal_level"], "Planned");
    assert_eq!(r["planned_shutdown"]["finished"], true, "{r:#}");
    assert_eq!(r["planned_shutdown"]["reason"], "signal SIGTERM");
}

/// The dead-man's switch: a `SIGSTOP`ped engine stops heartbeating, the
/// watchdog (another process) trips KILL within its limit, and the engine,
/// once continued, drains on its own and exits cleanly.
#[test]
fn the_watchdog_trips_a_silent_engine() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("engine.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"wd\"\ncontrol_dir = {:?}\njournal_dir = {:?}\nreport_path = {:?}\n",
            work.path(),
            work.path().join("journal"),
            work.path().join("report.json")
        ),
    )
    .unwrap();
    let mut engine = Command::new(KILLSWITCH)
        .arg("engine")
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(engine.id() as i32);
    let block = {
        let mut b = None;
        assert!(wait_for(Duration::from_secs(60), || {
            b = ControlBlock::open(work.path(), "wd")
                .ok()
                .filter(|b| b.owner().pid == engine.id());
            b.is_some()
        }));
        b.unwrap()
    };
    // The heartbeat is the gateway's: it starts a little after the attach.
    assert!(
        wait_for(Duration::from_secs(60), || GatewaySnapshot::read(&block)
            .orders_sent
            > 0),
        "the engine's gateway is running"
    );
    let mut dog = ks(work.path(), "wd");
    // A silence limit a loaded CI machine cannot reach by scheduling delay
    // alone (threads of a busy 2-core box can wait hundreds of ms for a
    // core); a SIGSTOPped engine reaches it for sure.
    dog.args(["watchdog", "--max-silence", "2s", "--timeout", "30s"])
        .stdout(Stdio::piped());
    let dog = dog.spawn().unwrap();
    // Healthy for a while: the watchdog must not trip a beating engine.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        block.state().mode(),
        Mode::Normal,
        "tripped a healthy engine"
    );

    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || block.state().mode()
            == Mode::Kill),
        "watchdog tripped"
    );
    let out = dog.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && text.contains("TRIPPED KILL"),
        "{text}"
    );
    let t = block.last_trip().unwrap();
    assert_eq!(t.source, Source::Auto);
    assert!(t.reason.contains("heartbeat silent"), "{}", t.reason);

    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let mut status = None;
    assert!(wait_for(Duration::from_secs(20), || {
        status = engine.try_wait().unwrap();
        status.is_some()
    }));
    assert_eq!(status.unwrap().code(), Some(0));
    let r: Value =
        serde_json::from_slice(&std::fs::read(work.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(r["verification"]["new_orders_after_ack"], 0);
    assert_eq!(r["verification"]["orders_unaccounted"], 0);
}
