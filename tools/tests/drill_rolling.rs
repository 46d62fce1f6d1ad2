//! `killswitch drill --scenario rolling-restart` as a process test: the
//! drill starts the venues, the active and its standby, fails over and
//! back (the old active restarting as the standby by itself each time),
//! ends with `killswitch emergency`, and judges from the venues' audit
//! logs. This test reads its JSON report and checks the facts behind the
//! verdict, not just the word PASS.

mod support;

use std::process::Command;

use serde_json::Value;
use support::{passing_drill, run, KILLSWITCH};

#[test]
fn the_rolling_restart_drill_passes_with_nothing_lost_or_doubled() {
    let mut c = Command::new(KILLSWITCH);
    c.args([
        "drill",
        "--scenario",
        "rolling-restart",
        "--trade-for",
        "1s",
        "--json",
    ]);
    let (v, out) = passing_drill(c, "rolling-restart drill");
    assert!(out.stderr().contains("VERDICT: PASS"), "{}", out.stderr());
    let checks = v["checks"].as_array().unwrap();
    assert!(checks.iter().all(|c| c["ok"].as_bool() == Some(true)));
    let failovers = v["failovers"].as_array().unwrap();
    assert_eq!(failovers.len(), 2, "{v}");
    let (a, b) = (&failovers[0], &failovers[1]);
    assert_eq!(a["what"], "failover");
    assert_eq!(b["what"], "failback");
    // The failback went back to the first engine, restarted as the standby.
    assert_eq!(a["from_pid"], b["to_pid"], "{v}");
    assert_eq!(a["to_pid"], b["from_pid"], "{v}");
    for f in failovers {
        assert!(f["working_at_takeover"].as_u64().unwrap() > 0, "{f}");
        assert_eq!(f["not_adopted"].as_array().unwrap().len(), 0, "{f}");
        assert_eq!(f["new_orders_in_between"].as_u64(), Some(0), "{f}");
        assert_eq!(
            f["old_active_orders_sent"].as_u64().unwrap(),
            f["venue_orders_before_hand_over"].as_u64().unwrap(),
            "{f}"
        );
        assert!(f["gap_ns"].as_u64().unwrap() > 0, "{f}");
        let timeline: Vec<&str> = f["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for phase in [
            "stop new orders",
            "lease released",
            "caught up",
            "lease taken",
        ] {
            assert!(
                timeline.iter().any(|l| l.contains(phase)),
                "{phase} in {timeline:?}"
            );
        }
        eprintln!(
            "{}: gap in order flow at the venues {:.3} ms",
            f["what"],
            f["gap_ns"].as_u64().unwrap() as f64 / 1e6
        );
    }
    assert!(v["new_orders_total"].as_u64().unwrap() > 1000, "{v}");
    assert_eq!(v["engine"]["exit_code"].as_i64(), Some(0));
}

#[test]
fn the_rolling_restart_drill_refuses_in_process_venues() {
    let mut c = Command::new(KILLSWITCH);
    c.args([
        "drill",
        "--scenario",
        "rolling-restart",
        "--venues",
        "in-process",
    ]);
    let out = run(c);
    out.expect_code(2);
    assert!(
        out.stderr().contains("over the wire only"),
        "{}",
        out.stderr()
    );
}
