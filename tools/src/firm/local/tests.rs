//! Unit tests of the local side of the relay: holding, tripping and
//! releasing control blocks for the firm.

use super::*;

fn target(mode: Mode) -> Target {
    Target {
        mode: Some(mode),
        why: "firm rev 1: test".into(),
        keys_seen: BTreeMap::new(),
    }
}

#[test]
fn trips_every_block_retrips_after_a_local_reset_and_releases_only_its_own_trips() {
    let d = tempfile::tempdir().unwrap();
    for n in ["a", "b"] {
        ControlBlock::create(d.path(), n).unwrap();
    }
    let mut blocks = LocalBlocks::new(BlockSelection {
        dir: d.path().into(),
        engines: vec![],
        access: Default::default(),
    });
    assert_eq!(blocks.scan().len(), 2);
    let log = blocks.apply(&target(Mode::Kill), true);
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(blocks.count_at_least(Mode::Kill), 2);
    // Applying again changes nothing.
    assert!(blocks.apply(&target(Mode::Kill), true).is_empty());
    let acks = blocks.acks("h", &[], &target(Mode::Kill));
    assert!(acks.iter().all(|a| a.confirmed), "{acks:?}");

    // A local reset while the firm stays tripped: tripped again.
    let a = Operator::open(d.path(), "a", Default::default()).unwrap();
    a.reset(&ResetRequest {
        source: Source::Cli,
        reason: "local".into(),
        force: false,
        expected_generation: None,
    })
    .unwrap();
    assert_eq!(blocks.apply(&target(Mode::Kill), true).len(), 1);
    assert_eq!(a.state().mode(), Mode::Kill);

    // Someone else also trips b: the firm reset releases a, not b.
    let b = Operator::open(d.path(), "b", Default::default()).unwrap();
    b.trip_global(Mode::Kill, Source::Cli, "desk head");
    // A stale view never releases.
    assert!(blocks.apply(&target(Mode::Normal), false).is_empty());
    assert_eq!(a.state().mode(), Mode::Kill);
    let log = blocks.apply(&target(Mode::Normal), true);
    assert_eq!(a.state().mode(), Mode::Normal, "{log:?}");
    assert_eq!(b.state().mode(), Mode::Kill);
    assert!(log.iter().any(|l| l.contains("desk head")), "{log:?}");
    let acks = blocks.acks("h", &[], &target(Mode::Normal));
    let ack_b = acks.iter().find(|a| a.engine == "b").unwrap();
    assert!(ack_b.note.contains("reset it locally"), "{ack_b:?}");
}

#[test]
fn a_block_whose_drain_left_orders_unknown_is_not_released() {
    let d = tempfile::tempdir().unwrap();
    let b = ControlBlock::create(d.path(), "e").unwrap();
    let mut blocks = LocalBlocks::new(BlockSelection {
        dir: d.path().into(),
        engines: vec![],
        access: Default::default(),
    });
    blocks.scan();
    blocks.apply(&target(Mode::Kill), true);
    // As a drain leaves it: 3 orders CancelUnknown (the drain status's
    // `orders_unknown`, file offset 384 + 40), written into the file.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(b.path())
            .unwrap();
        f.write_all_at(&3u64.to_le_bytes(), 424).unwrap();
    }
    let audit_len = b.audit().len();
    let log = blocks.apply(&target(Mode::Normal), true);
    assert_eq!(b.state().mode(), Mode::Kill, "{log:?}");
    assert!(log.iter().any(|l| l.contains("CancelUnknown")), "{log:?}");
    // Asked again every tick, but no refused reset fills the audit ring.
    for _ in 0..10 {
        blocks.apply(&target(Mode::Normal), true);
    }
    assert_eq!(b.audit().len(), audit_len);
    let ack = &blocks.acks("h", &[], &target(Mode::Normal))[0];
    assert!(
        !ack.confirmed && ack.note.contains("CancelUnknown"),
        "{ack:?}"
    );
}

#[test]
fn named_engines_are_created_so_the_trip_waits_for_them() {
    let d = tempfile::tempdir().unwrap();
    let mut blocks = LocalBlocks::new(BlockSelection {
        dir: d.path().into(),
        engines: vec!["later".into()],
        access: Default::default(),
    });
    blocks.scan();
    blocks.apply(&target(Mode::Kill), true);
    let b = ControlBlock::open(d.path(), "later").unwrap();
    assert_eq!(b.state().mode(), Mode::Kill);
    assert_eq!(b.last_trip().unwrap().source, Source::Firm);
}

#[test]
fn a_damaged_file_is_reported_once_and_skipped() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("killswitch.junk"), b"not a block").unwrap();
    ControlBlock::create(d.path(), "ok").unwrap();
    let mut blocks = LocalBlocks::new(BlockSelection {
        dir: d.path().into(),
        engines: vec![],
        access: Default::default(),
    });
    let log = blocks.scan();
    assert!(log.iter().any(|l| l.contains("junk")), "{log:?}");
    assert_eq!(blocks.len(), 1);
    assert!(!blocks.scan().iter().any(|l| l.contains("junk")));
}
