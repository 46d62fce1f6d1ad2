//! Recovery starts from the newest snapshot (issue 16, item 1): the state
//! rebuilt from the newest quick checkpoint plus the records after it is the
//! state a full replay from the first record gives; the snapshot is found
//! in the last segment or through the snapshot-index record every new
//! segment starts with; damage after the snapshot is refused, damage before
//! it is not read (a full `rebuild`, as `journal inspect` does, still
//! reports it).

mod journal_support;

use std::path::Path;

use journal_support::seg_path;
use killswitch::journal::record::OrderEventRecord;
use killswitch::journal::{
    rebuild, rebuild_from_snapshot, scan, JournalConfig, JournalError, JournalWriter, TradingState,
};
use killswitch::order::{OrderEvent, OrderId, Price, Qty, ScopeTags, Side};

/// Writes `orders` orders through new -> acked -> (every third filled, every
/// third cancelled, the rest left open), a quick checkpoint of the mirror
/// every `snapshot_every` orders (never when 0), and `tail` more orders
/// after the last one. Returns the mirror: what the journal must rebuild to.
fn write(dir: &Path, orders: u64, snapshot_every: u64, tail: u64) -> TradingState {
    let (mut w, _) = JournalWriter::open(dir, JournalConfig::small_for_tests()).unwrap();
    let mut mirror = TradingState::default();
    let append = |w: &mut JournalWriter, m: &mut TradingState, r: &OrderEventRecord| {
        let a = w.append(r).unwrap();
        m.apply_order_event(a.seq, r).unwrap();
    };
    for i in 1..=orders + tail {
        let tags = ScopeTags {
            venue: (i % 3) as u16,
            strategy: 1,
            instrument: (i % 5) as u16,
            account: (i % 2) as u16,
        };
        let side = if i % 2 == 0 { Side::Buy } else { Side::Sell };
        let new = OrderEventRecord::new_order(
            OrderId(i),
            tags,
            side,
            Price::from_units(100 + (i % 7) as i64),
            Qty::from_lots(2),
        );
        append(&mut w, &mut mirror, &new);
        append(&mut w, &mut mirror, &new.with_event(OrderEvent::Acked));
        match i % 3 {
            0 => append(
                &mut w,
                &mut mirror,
                &new.with_fill(Qty::from_lots(2), Price::from_units(101), true),
            ),
            1 => {
                append(&mut w, &mut mirror, &new.with_event(OrderEvent::CancelSent));
                append(&mut w, &mut mirror, &new.with_event(OrderEvent::Canceled));
            }
            _ => {}
        }
        if snapshot_every > 0 && i <= orders && i % snapshot_every == 0 {
            w.quick_checkpoint(&mirror).unwrap();
        }
    }
    mirror
}

fn same_state(a: &TradingState, b: &TradingState, what: &str) {
    assert_eq!(a.open_orders, b.open_orders, "{what}: open orders");
    assert_eq!(a.positions, b.positions, "{what}: positions");
    assert_eq!(a.max_order_id, b.max_order_id, "{what}: highest order id");
    assert_eq!(a.last_trip, b.last_trip, "{what}: last trip");
}

#[test]
fn the_state_from_the_newest_snapshot_is_the_state_of_a_full_replay() {
    // (orders, snapshot every, orders after the last snapshot): the newest
    // snapshot in the last segment, in an earlier one (found through the
    // index records), and no snapshot at all (a full replay).
    for (orders, every, tail) in [(3000, 700, 40), (3000, 3000, 2000), (2000, 0, 0)] {
        let d = tempfile::tempdir().unwrap();
        let mirror = write(d.path(), orders, every, tail);
        assert!(
            seg_path(d.path(), 4).exists(),
            "the test needs several segments"
        );
        let full = rebuild(d.path()).unwrap();
        let fast = rebuild_from_snapshot(d.path()).unwrap();
        let what = format!("{orders} orders, snapshot every {every}, {tail} after");
        same_state(&full.state, &mirror, &format!("{what}: full replay"));
        same_state(&fast.state, &mirror, &format!("{what}: from the snapshot"));
        assert!(full.issues.is_empty() && fast.issues.is_empty(), "{what}");
        assert!(full.from_snapshot.is_none());
        match every {
            0 => assert!(fast.from_snapshot.is_none(), "{what}"),
            _ => {
                let at = fast.from_snapshot.expect("started at a snapshot");
                // It started at the newest snapshot, reading far fewer records.
                let mut newest = 0;
                scan(d.path(), true, |v| {
                    if v.rtype == Some(killswitch::journal::record::RecordType::Snapshot) {
                        newest = v.seq;
                    }
                })
                .unwrap();
                assert_eq!(at.seq, newest, "{what}");
                assert!(fast.scan.records < full.scan.records / 2, "{what}");
            }
        }
    }
}

#[test]
fn a_writer_reopening_keeps_naming_the_newest_snapshot() {
    let d = tempfile::tempdir().unwrap();
    let mut mirror = write(d.path(), 1000, 1000, 0);
    // A new writer (an engine restart) learns where that snapshot is and
    // names it at the start of the segments it goes on to fill.
    let (mut w, _) = JournalWriter::open(d.path(), JournalConfig::small_for_tests()).unwrap();
    assert!(w.last_snapshot().is_some());
    for i in 5000..7000u64 {
        let r = OrderEventRecord::new_order(
            OrderId(i),
            ScopeTags::default(),
            Side::Buy,
            Price::from_units(1),
            Qty::from_lots(1),
        );
        let a = w.append(&r).unwrap();
        mirror.apply_order_event(a.seq, &r).unwrap();
    }
    drop(w);
    let fast = rebuild_from_snapshot(d.path()).unwrap();
    assert!(fast.from_snapshot.is_some());
    same_state(&fast.state, &mirror, "after a restart");
}

#[test]
fn damage_after_the_snapshot_is_refused_and_damage_before_it_is_not_read() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), 3000, 2500, 800);
    let at = rebuild_from_snapshot(d.path())
        .unwrap()
        .from_snapshot
        .unwrap();
    assert!(at.segment > 1);
    // Damage in segment 1, before the snapshot: the fast rebuild does not
    // read it; the full one (journal inspect) reports it.
    let p1 = seg_path(d.path(), 1);
    let mut b = std::fs::read(&p1).unwrap();
    b[200] ^= 0x08;
    std::fs::write(&p1, &b).unwrap();
    assert!(rebuild_from_snapshot(d.path()).is_ok());
    assert!(!rebuild(d.path()).unwrap().scan.needs_operator().is_empty());
    b[200] ^= 0x08;
    std::fs::write(&p1, &b).unwrap();
    // Damage after the snapshot, with valid records after it: refused.
    let p = seg_path(d.path(), at.segment);
    let mut b = std::fs::read(&p).unwrap();
    let o = at.offset as usize + 4096;
    b[o] ^= 0x08;
    std::fs::write(&p, &b).unwrap();
    match rebuild_from_snapshot(d.path()) {
        Err(JournalError::NeedsRecovery { .. }) => {}
        other => panic!("expected NeedsRecovery, got {:?}", other.map(|r| r.scan)),
    }
}
