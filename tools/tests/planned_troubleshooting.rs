//! The planned shutdown's troubleshooting paths as real processes, through
//! the real commands: positions that will not flatten (a venue gone dry),
//! a full checkpoint directory (the alternate path, reported), the
//! notification command receiving the events, and `killswitch status`
//! during and after a planned shutdown (step, lock, announcement,
//! reconciliation mismatch).

mod support;

use std::path::Path;
use std::process::Command;

use killswitch::control::ControlBlock;
use killswitch::shutdown::words;
use serde_json::Value;
use support::planned::{config, engine_log, shutdown_report, start, start_with, LONG};
use support::{ks, run, wait_for, KILLSWITCH};

/// The runbook's "positions not flattening": SIM-B's other participants
/// withdraw their liquidity (the venue process's fault knob: resting orders
/// pulled, no flow), so its positions cannot flatten; the planned shutdown
/// escalates from conservative to aggressive, then reports what remains,
/// and ends with that as its one finding.
#[test]
fn positions_that_will_not_flatten_escalate_then_are_reported_as_remaining() {
    let d = tempfile::tempdir().unwrap();
    let mut c = Command::new(KILLSWITCH);
    c.args([
        "drill",
        "--planned",
        "--scenario",
        "no-liquidity",
        "--trade-for",
        "1s",
        "--min-open",
        "2000",
        "--json",
        "--work-dir",
    ])
    .arg(d.path().join("work"))
    .arg("--report")
    .arg(d.path().join("report.json"));
    let out = run(c);
    out.expect_code(0);
    let v: Value = serde_json::from_slice(&out.output.stdout).unwrap();
    assert_eq!(v["pass"], true, "{:#}", v["checks"]);
    let r = &v["shutdown_report"];
    assert_eq!(v["shutdown_exit"], 5, "{r:#}");
    assert!(
        v["engine_exit"].as_str().unwrap().contains("16"),
        "{}",
        v["engine_exit"]
    );
    assert_eq!(
        r["outcome_bits"].as_u64().unwrap(),
        words::OUTCOME_NOT_FLAT,
        "{r:#}"
    );
    assert_eq!(r["flatten_escalated"], true, "{r:#}");
    let fr = r["flatten_results"].as_array().unwrap();
    let dry: Vec<&Value> = fr.iter().filter(|f| f["venue"] == "SIM-B").collect();
    assert!(!dry.is_empty(), "{r:#}");
    for f in &dry {
        // Nothing filled: what remains is what there was.
        assert_ne!(f["remaining"].as_f64(), Some(0.0), "{r:#}");
        assert_eq!(f["remaining"], f["start"], "{r:#}");
    }
    for f in fr.iter().filter(|f| f["venue"] != "SIM-B") {
        assert_eq!(f["remaining"].as_f64(), Some(0.0), "{r:#}");
    }
    // Reported: step 5's warning names them, and the venue agrees on them.
    let step5 = &r["phases"][4];
    assert_eq!(step5["result"], "warning", "{r:#}");
    assert!(
        step5["note"]
            .as_str()
            .unwrap()
            .contains("positions not flattened: SIM-B/"),
        "{step5:#}"
    );
    let rows = r["reconcile"].as_array().unwrap();
    assert!(
        rows.iter()
            .any(|row| row["venue"] == "SIM-B" && row["status"] == "OK"),
        "{r:#}"
    );
    // The switch is not reset-blocked by it (the venue agrees), and the
    // post-shutdown validation passes.
    assert_eq!(v["verify_exit"], 0);
}

/// True where an unprivileged user and mount namespace can be made
/// (`unshare -rm`): the engine then runs with a tmpfs of its own over the
/// checkpoint directory, private to it and gone with it.
fn private_mounts() -> bool {
    Command::new("unshare")
        .args(["-rm", "true"])
        .status()
        .is_ok_and(|s| s.success())
}

/// "Checkpoint directory full": the engine's checkpoint directory is a
/// 64 KiB tmpfs filled to its last byte before the engine starts (writes
/// there fail with ENOSPC, as on a full disk), mounted in a mount namespace
/// of the engine's own (`unshare -rm`: no root needed, nothing left mounted
/// if the test dies). Where namespaces are not allowed, a regular file
/// stands where the directory should be (the write fails, for another
/// reason): the same path is taken, and the test says which it ran. The
/// alternate path is the default one, the system temp directory (TMPDIR,
/// pointed into the test's directory). The notification command (`cat >>
/// FILE`) is run with each event as a JSON line on its stdin.
#[test]
fn a_full_checkpoint_directory_sends_the_checkpoint_to_the_alternate_path_reported() {
    let d = tempfile::tempdir().unwrap();
    let full = d.path().join("checkpoints-full");
    let tmp = d.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let notified = d.path().join("notify.jsonl");
    let mut cfg = config(d.path(), "full");
    cfg.shutdown.checkpoint_dir = Some(full.clone());
    cfg.shutdown.alternate_checkpoint_dir = None;
    cfg.shutdown.notify_command = Some(format!("cat >> '{}'", notified.display()));
    let namespaces = private_mounts();
    if namespaces {
        std::fs::create_dir(&full).unwrap();
    } else {
        eprintln!("NOTE: no user namespaces here: a file in place of the checkpoint directory stands in for a full one");
        std::fs::write(&full, b"not a directory").unwrap();
    }
    let mut engine = start_with(d.path(), &cfg, |config| {
        let mut c = if namespaces {
            let mut c = Command::new("unshare");
            c.args([
                "-rm",
                "sh",
                "-c",
                "mount -t tmpfs -o size=64k tmpfs \"$1\" && { cat /dev/zero > \"$1/filler\" 2>/dev/null; exec \"$2\" engine --config \"$3\"; }",
                "sh",
            ])
            .arg(&full)
            .arg(KILLSWITCH)
            .arg(config);
            c
        } else {
            let mut c = Command::new(KILLSWITCH);
            c.arg("engine").arg("--config").arg(config);
            c
        };
        c.env("TMPDIR", &tmp);
        c
    });
    let mut cmd = ks(d.path(), "full");
    cmd.args(["shutdown", "--reason", "maintenance"]);
    let out = run(cmd);
    out.expect_code(5);
    let text = out.stdout();
    let log = engine_log(d.path(), "full");
    // The step line says it, with the primary's error.
    let step8 = text
        .lines()
        .skip_while(|l| !l.contains("Step 8: Saving complete checkpoint ... Done with warning"))
        .take(2)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(step8.contains(&tmp.display().to_string()), "{text}\n{log}");
    assert!(
        step8.contains("WARNING: primary checkpoint directory failed")
            && step8.contains("written to the alternate path"),
        "{step8}"
    );
    if namespaces {
        assert!(step8.contains("No space left on device"), "{step8}");
    }
    assert_eq!(engine.wait_exit(), Some(16), "{log}");
    // The JSON report says it, and the checkpoint there is whole.
    let r = shutdown_report(d.path(), "full");
    assert_eq!(
        r["outcome_bits"].as_u64().unwrap(),
        words::OUTCOME_CHECKPOINT_PROBLEM,
        "{r:#}"
    );
    let c = &r["checkpoint"];
    let path = Path::new(c["path"].as_str().unwrap());
    assert!(path.starts_with(&tmp), "{c:#}");
    let because = c["alternate_because"].as_str().unwrap();
    assert!(because.contains(&full.display().to_string()), "{because}");
    let ck = killswitch::checkpoint::read(path).unwrap();
    assert_eq!(format!("0x{:016x}", ck.summary.file_crc64), c["crc64"]);
    assert!(!ck.config.is_empty() && ck.log_tail.contains("planned shutdown"));
    // verify-shutdown follows the report to the alternate path.
    let mut v = ks(d.path(), "full");
    v.arg("verify-shutdown");
    run(v).expect_code(0);

    // The notification command got both events, as JSON on its stdin.
    assert!(
        wait_for(LONG, || std::fs::read_to_string(&notified)
            .is_ok_and(|t| t.lines().count() >= 2)),
        "notify command output: {:?}\n{log}",
        std::fs::read_to_string(&notified)
    );
    let events: Vec<Value> = std::fs::read_to_string(&notified)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        ["shutdown-announced", "shutdown-complete"],
        "{events:?}"
    );
    for e in &events {
        assert_eq!(e["engine"], "full");
        assert_eq!(e["reason"], "maintenance");
        assert_eq!(e["nonce"], r["nonce"]);
        assert!(e["wall_ns"].as_u64().unwrap() > 0);
    }
}

/// `killswitch status` while a planned shutdown runs (held in step 6 by a
/// venue that ignores cancels): the announcement, the step, the deployment
/// lock and who holds it; after it: finished, unlocked; and a
/// reconciliation mismatch awaiting `reconcile --ack` (recorded on the
/// block by the test, as step 7 records one: the next test produces a real
/// one), cleared by the acknowledgement.
#[test]
fn status_shows_the_announcement_the_step_the_lock_and_a_mismatch_awaiting_ack() {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = config(d.path(), "st");
    cfg.venues[1].ignore_cancels = true;
    // Long enough to look twice on a loaded machine; the shutdown then
    // goes on with the stragglers reported.
    cfg.shutdown.order_wait_ms = 15_000;
    let mut engine = start(d.path(), &cfg);
    let pid = engine.child.id();
    let mut cmd = ks(d.path(), "st");
    cmd.args(["shutdown", "--reason", "quarterly maintenance"]);
    let follower = cmd.stdout(std::process::Stdio::null()).spawn().unwrap();
    let b = ControlBlock::open(d.path(), "st").unwrap();
    assert!(
        wait_for(LONG, || words::progress(&b).is_some_and(|p| p.phase == 6)),
        "never reached step 6:\n{}",
        engine_log(d.path(), "st")
    );
    let mut s = ks(d.path(), "st");
    s.arg("status");
    let out = run(s);
    out.expect_code(0);
    let text = out.stdout();
    assert!(
        text.contains("announced   planned shutdown at ")
            && text.contains("\"quarterly maintenance\""),
        "{text}"
    );
    assert!(text.contains("status SHUTTING_DOWN"), "{text}");
    assert!(
        text.contains(
            "planned shutdown at step 6/13 \"Waiting for order completion\", running since"
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "deployments and configuration LOCKED by pid {pid}"
        )),
        "{text}"
    );
    let mut s = ks(d.path(), "st");
    s.args(["status", "--json"]);
    let j: Value = serde_json::from_slice(&run(s).output.stdout).unwrap();
    let p = &j["planned_shutdown"];
    assert_eq!(p["step"], 6, "{p:#}");
    assert_eq!(p["state"], "running");
    assert_eq!(p["locked"], true);
    assert_eq!(p["locked_by_pid"], pid);

    // It ends at the wait: the stragglers are forced locally, the steps
    // left run, the lock goes.
    engine.wait_exit();
    let mut follower = follower;
    let _ = follower.wait();
    let mut s = ks(d.path(), "st");
    s.arg("status");
    let text = run(s).stdout();
    assert!(text.contains("planned shutdown finished"), "{text}");
    assert!(!text.contains("LOCKED"), "{text}");
    assert!(!text.contains("MISMATCH"), "{text}");

    words::set_reconcile_mismatch(&b, true);
    let mut s = ks(d.path(), "st");
    s.arg("status");
    let text = run(s).stdout();
    assert!(
        text.contains("reconcile   MISMATCH") && text.contains("killswitch reconcile --ack"),
        "{text}"
    );
    let mut ack = ks(d.path(), "st");
    ack.args(["reconcile", "--ack"]);
    run(ack).expect_code(0);
    let mut s = ks(d.path(), "st");
    s.arg("status");
    let text = run(s).stdout();
    assert!(!text.contains("MISMATCH"), "{text}");
}

/// A real reconciliation mismatch, end to end: the first venue books 3 lots
/// for the engine's account that the engine is never told of (the
/// simulator's fault knob: a lost fill report, a bust, an adjustment by the
/// venue). The planned shutdown's step 7 asks the venue for its positions,
/// finds the difference, reports it (outcome bit, the reconcile table) and
/// leaves the flag on the block: `status` shows it, a reset is refused
/// until `reconcile --ack`, and then allowed.
#[test]
fn a_position_the_venue_booked_unseen_is_a_mismatch_that_blocks_reset_until_acknowledged() {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = config(d.path(), "rec");
    cfg.venues[0].unreported_position_lots = 3;
    let mut engine = start(d.path(), &cfg);
    let mut cmd = ks(d.path(), "rec");
    cmd.args(["shutdown", "--reason", "end of day"]);
    let out = run(cmd);
    out.expect_code(5);
    let text = out.stdout();
    assert!(text.contains("MISMATCH"), "{text}");
    engine.wait_exit();
    let r = shutdown_report(d.path(), "rec");
    assert_ne!(
        r["outcome_bits"].as_u64().unwrap() & words::OUTCOME_RECONCILE_MISMATCH,
        0,
        "{r:#}"
    );
    let venue = cfg.venues[0].name.as_str();
    let instrument = cfg.venues[0].instruments[0].as_str();
    let rows = r["reconcile"].as_array().unwrap();
    let bad: Vec<&Value> = rows
        .iter()
        .filter(|row| row["status"] == "MISMATCH")
        .collect();
    assert_eq!(bad.len(), 1, "{rows:#?}");
    assert_eq!(bad[0]["venue"], venue, "{rows:#?}");
    assert_eq!(bad[0]["instrument"], instrument, "{rows:#?}");
    // The venue holds 3 lots more than the engine knows of.
    let lots = |v: &Value| {
        v.as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .or(v.as_f64())
    };
    let (int, at) = (lots(&bad[0]["internal"]), lots(&bad[0]["at_venue"]));
    assert_eq!(at.zip(int).map(|(a, i)| a - i), Some(3.0), "{:#}", bad[0]);
    for row in rows.iter().filter(|row| row["status"] != "MISMATCH") {
        assert_eq!(row["status"], "OK", "{rows:#?}");
    }

    let b = ControlBlock::open(d.path(), "rec").unwrap();
    assert!(words::change_flags(&b).reconcile_mismatch);
    let mut s = ks(d.path(), "rec");
    s.arg("status");
    let text = run(s).stdout();
    assert!(text.contains("reconcile   MISMATCH"), "{text}");
    let mut reset = ks(d.path(), "rec");
    reset.args(["reset", "--confirm", "--reason", "next day"]);
    let refused = run(reset);
    assert_ne!(refused.code(), 0, "{}", refused.stdout());
    assert!(
        format!("{}{}", refused.stdout(), refused.stderr()).contains("reconcile --ack"),
        "{}{}",
        refused.stdout(),
        refused.stderr()
    );
    let mut ack = ks(d.path(), "rec");
    ack.args(["reconcile", "--ack"]);
    run(ack).expect_code(0);
    let mut reset = ks(d.path(), "rec");
    reset.args(["reset", "--confirm", "--reason", "next day"]);
    let out = run(reset);
    assert_eq!(out.code(), 0, "{}{}", out.stdout(), out.stderr());
}
