//! The `killswitch checkpoint` and `killswitch journal` commands, run as the
//! real binary in temporary directories.

use std::path::Path;
use std::process::{Command, Output};

use killswitch::control::{Mode, Source};
use killswitch::journal::record::{
    BlobRecord, LogRecord, OrderEventRecord, RecordType, SwitchRecord,
};
use killswitch::journal::{JournalConfig, JournalWriter};
use killswitch::order::{OrderEvent, OrderId, Price, Qty, ScopeTags, Side};

fn ks(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_killswitch"))
        .args(args)
        .output()
        .unwrap();
    eprintln!(
        "$ killswitch {}\nexit {:?}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A journal with 3 orders (one filled), a trip, config, strategy state and logs.
fn sample_journal(dir: &Path) {
    let (mut w, _) = JournalWriter::open(dir, JournalConfig::small_for_tests()).unwrap();
    let tags = ScopeTags {
        venue: 1,
        strategy: 1,
        instrument: 2,
        account: 0,
    };
    for id in 1..=3 {
        let o = OrderEventRecord::new_order(
            OrderId(id),
            tags,
            Side::Buy,
            Price::from_units(100),
            Qty::from_lots(1),
        );
        w.append(&o).unwrap();
        w.append(&o.with_event(OrderEvent::Acked)).unwrap();
        if id == 2 {
            w.append(&o.with_fill(Qty::from_lots(1), Price::from_units(100), true))
                .unwrap();
        }
    }
    w.append(&BlobRecord {
        rtype: RecordType::Config,
        name: "engine",
        data: b"max_loss=1",
    })
    .unwrap();
    w.append(&BlobRecord {
        rtype: RecordType::StrategyState,
        name: "mm",
        data: b"inv=1",
    })
    .unwrap();
    w.append(&LogRecord {
        level: 2,
        wall_ns: killswitch::clock::wall_ns(),
        text: "venue slow",
    })
    .unwrap();
    w.append(&SwitchRecord {
        reset: false,
        mode: Mode::Kill,
        source: Source::Cli,
        scope: None,
        forced: false,
        generation: 2,
        wall_ns: killswitch::clock::wall_ns(),
        reason: "drill".into(),
    })
    .unwrap();
}

#[test]
fn complete_checkpoint_then_validate_then_detect_damage() {
    let d = tempfile::tempdir().unwrap();
    let j = d.path().join("journal");
    let ck = d.path().join("checkpoints");
    std::fs::create_dir(&ck).unwrap();
    sample_journal(&j);
    let o = ks(&[
        "checkpoint",
        "create",
        "--level",
        "complete",
        "--verify",
        "--journal",
        j.to_str().unwrap(),
        "--path",
        ck.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    assert!(out.contains("Verifying checkpoint... OK"), "{out}");
    assert!(out.contains("CRC-64/XZ"), "{out}");
    let latest = ck.join("latest.ckpt");
    let target = std::fs::read_link(&latest).unwrap();
    assert!(
        target.to_string_lossy().starts_with("shutdown_"),
        "{target:?}"
    );

    let o = ks(&["checkpoint", "validate", latest.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    assert!(out.starts_with("Checkpoint valid ✓"), "{out}");
    assert!(
        out.contains("trading-state") && out.contains("log-tail"),
        "{out}"
    );

    let cp = killswitch::checkpoint::read(&latest).unwrap();
    assert_eq!(cp.state.open_orders.len(), 2);
    assert_eq!(cp.state.tripped().unwrap().reason, "drill");
    assert_eq!(cp.config[0].1, b"max_loss=1");
    assert!(cp.log_tail.contains("venue slow"));

    // Damage the trading-state section: exit 1, the section named.
    let file = ck.join(&target);
    let sec = cp.summary.sections[0].clone();
    let mut b = std::fs::read(&file).unwrap();
    b[sec.offset as usize + 1] ^= 0xff;
    std::fs::write(&file, &b).unwrap();
    let o = ks(&["checkpoint", "validate", latest.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        out.contains("INVALID") && out.contains("section trading-state"),
        "{out}"
    );
    assert!(out.contains(&format!("offset {}", sec.offset)), "{out}");
}

#[test]
fn explicit_file_path_and_missing_file() {
    let d = tempfile::tempdir().unwrap();
    let j = d.path().join("journal");
    sample_journal(&j);
    let file = d.path().join("checkpoint_emergency.ckpt");
    let o = ks(&[
        "checkpoint",
        "create",
        "--journal",
        j.to_str().unwrap(),
        "--path",
        file.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert!(killswitch::checkpoint::validate(&file).is_ok());
    let o = ks(&[
        "checkpoint",
        "validate",
        d.path().join("nope.ckpt").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(4));
}

#[test]
fn quick_checkpoint_appends_a_snapshot_and_refuses_while_a_writer_runs() {
    let d = tempfile::tempdir().unwrap();
    let j = d.path().join("journal");
    sample_journal(&j);
    let o = ks(&[
        "checkpoint",
        "create",
        "--level",
        "quick",
        "--verify",
        "--journal",
        j.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("2 open orders"), "{}", stdout(&o));
    let r = killswitch::journal::rebuild(&j).unwrap();
    assert_eq!(r.snapshots, 1);
    assert!(r.last_durable.is_some());

    let (_w, _) = JournalWriter::open(&j, JournalConfig::small_for_tests()).unwrap();
    let o = ks(&[
        "checkpoint",
        "create",
        "--level",
        "quick",
        "--journal",
        j.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
}

#[test]
fn inspect_shows_a_torn_tail_and_recover_cuts_it() {
    let d = tempfile::tempdir().unwrap();
    let j = d.path().join("journal");
    sample_journal(&j);
    let seg = j.join("journal-0000000001.seg");
    // Tear the last record: clear the end of its payload's CRC coverage.
    let rep = killswitch::journal::scan(&j, true, |_| {}).unwrap();
    let end = rep.segments[0].valid_end as usize;
    let mut b = std::fs::read(&seg).unwrap();
    b[end - 10] ^= 0x55;
    std::fs::write(&seg, &b).unwrap();

    let o = ks(&["journal", "inspect", j.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    assert!(
        out.contains("torn tail:") && out.contains("CRC-32C mismatch"),
        "{out}"
    );
    assert!(out.contains("order-event"), "{out}");

    let o = ks(&["journal", "inspect", "--json", j.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["scan"]["dropped"].as_array().unwrap().len(), 1);

    let o = ks(&["journal", "recover", j.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("cut "), "{}", stdout(&o));
    let o = ks(&["journal", "recover", j.to_str().unwrap()]);
    assert!(stdout(&o).contains("clean"), "{}", stdout(&o));
}

#[test]
fn a_damaged_segment_header_stops_inspect_and_the_engine_until_recovered() {
    let d = tempfile::tempdir().unwrap();
    let j = d.path().join("journal");
    sample_journal(&j);
    let seg = j.join("journal-0000000001.seg");
    let mut b = std::fs::read(&seg).unwrap();
    b[44] ^= 0x01; // a reserved header byte
    std::fs::write(&seg, &b).unwrap();

    let o = ks(&["journal", "inspect", j.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3));
    let out = stdout(&o);
    assert!(
        out.contains("DAMAGED") && out.contains("NOT start"),
        "{out}"
    );

    // The engine refuses to start on it (exit 3) and changes nothing.
    let cfg = d.path().join("engine.toml");
    std::fs::write(
        &cfg,
        format!(
            "name = \"hdr\"\ncontrol_dir = {:?}\njournal_dir = {:?}\ntrade_for_ms = 1\n",
            d.path(),
            j
        ),
    )
    .unwrap();
    let o = ks(&["engine", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("damaged beyond a torn tail") && err.contains("journal recover"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&seg).unwrap(),
        b,
        "refusal changed the segment"
    );

    // Recover rewrites the header and keeps every record.
    let o = ks(&["journal", "recover", j.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        stdout(&o).contains("rewrote the damaged header"),
        "{}",
        stdout(&o)
    );
    let o = ks(&["journal", "inspect", "--json", j.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["state"]["open_orders"].as_array().unwrap().len(), 2);
}
