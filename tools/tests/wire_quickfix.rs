//! An independent FIX peer: QuickFIX (the reference C++ engine, through its
//! Python binding) drives `ks-venue` as an initiator with its FIX 4.4 data
//! dictionary validating every message the venue sends. Our reading of the
//! protocol is checked by someone else's, both ways: QuickFIX rejects any
//! venue message that breaks its dictionary (it would send a 35=3), and the
//! venue rejects any QuickFIX message it cannot read.
//!
//! Needs `python3` with QuickFIX installed:
//! `python3 -m pip install --only-binary=:all: quickfix-ssl==1.15.1.post4`
//! (CI does this in `.ci/run`).

mod support;

use std::process::Command;

use serde_json::Value;
use support::venue::VenueProc;

const INSTALL: &str = "python3 -m pip install --only-binary=:all: quickfix-ssl==1.15.1.post4";

#[test]
fn quickfix_trades_with_ks_venue_and_finds_nothing_to_reject() {
    let probe = Command::new("python3")
        .args(["-c", "import quickfix"])
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "the independent FIX peer needs QuickFIX for Python: {INSTALL}\n{}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("the independent FIX peer needs python3 ({e}); then: {INSTALL}"),
    }
    let dir = tempfile::tempdir().unwrap();
    let venue = VenueProc::start(dir.path(), &["SIM-Q"], &["--instruments", "I0,I1"]);
    let addr = venue.addr("SIM-Q");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peer/quickfix_peer.py");
    let peer_dir = dir.path().join("quickfix");
    std::fs::create_dir_all(&peer_dir).unwrap();
    let out = Command::new("python3")
        .arg(script)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .arg("SIM-Q")
        .arg(&peer_dir)
        .output()
        .expect("run the QuickFIX peer");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "QuickFIX peer failed:\n{stdout}\n{stderr}"
    );
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("peer report is not JSON ({e}):\n{stdout}\n{stderr}"));
    let steps = report["steps"].as_object().expect("steps");
    for step in [
        "logon",
        "new",
        "cancel",
        "trade",
        "too_late",
        "status",
        "mass_cancel",
        "market_data",
        "logout",
    ] {
        assert_eq!(
            steps.get(step),
            Some(&Value::Bool(true)),
            "step {step} failed: {report:#}"
        );
    }
    assert_eq!(
        report["rejects_sent"].as_array().map(Vec::len),
        Some(0),
        "QuickFIX rejected messages of the venue: {report:#}"
    );
    let log = venue.audit("SIM-Q");
    let from_venue = |t: &str| {
        log.iter()
            .filter(|e| e.session == "QFPEER" && e.dir == "out" && e.msg_type.as_deref() == Some(t))
            .count()
    };
    assert_eq!(
        (from_venue("3"), from_venue("j")),
        (0, 0),
        "the venue rejected QuickFIX's messages"
    );
    let accepted: Vec<&str> = log
        .iter()
        .filter(|e| e.session == "QFPEER" && e.dir == "in")
        .filter_map(|e| e.msg_type.as_deref())
        .collect();
    for t in ["A", "D", "F", "H", "q", "V", "5"] {
        assert!(
            accepted.contains(&t),
            "the venue accepted no {t} from QuickFIX: {accepted:?}"
        );
    }
}
