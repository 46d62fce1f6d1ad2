use super::*;
use crate::control::{Mode, ScopeKind, Source};
use crate::order::{OrderEvent, OrderId, Price, Qty};

fn roundtrip<T: Encode>(v: &T) -> Vec<u8> {
    let mut buf = Vec::new();
    v.encode(&mut buf);
    assert_eq!(buf.len(), v.encoded_len());
    buf
}

#[test]
fn order_events_roundtrip_every_action() {
    let tags = ScopeTags {
        venue: 1,
        strategy: 2,
        instrument: 3,
        account: 4,
    };
    let base = OrderEventRecord::new_order(
        OrderId(77),
        tags,
        Side::Sell,
        Price::from_units(101),
        Qty::from_lots(5),
    );
    let events = [
        base,
        base.with_event(OrderEvent::Acked),
        base.with_fill(Qty::from_lots(2), Price::from_units(100), false),
        base.with_fill(Qty::from_lots(3), Price::from_units(99), true),
        base.with_event(OrderEvent::CancelSent),
        base.with_event(OrderEvent::Canceled),
        base.with_event(OrderEvent::Rejected),
        base.with_event(OrderEvent::CancelRejected {
            partially_filled: true,
        }),
        base.with_event(OrderEvent::CancelRejected {
            partially_filled: false,
        }),
        base.with_event(OrderEvent::CancelTimeout),
        base.with_event(OrderEvent::SendAmbiguous),
    ];
    for e in events {
        let buf = roundtrip(&e);
        assert_eq!(OrderEventRecord::decode(&buf).unwrap(), e);
    }
    let mut bad = roundtrip(&base);
    bad[16] = 10;
    let err = OrderEventRecord::decode(&bad).unwrap_err();
    assert_eq!((err.field, err.offset), ("action", 16));
    assert!(OrderEventRecord::decode(&bad[..40]).is_err());
}

#[test]
fn switch_records_roundtrip_and_reject_bad_fields() {
    let t = SwitchRecord {
        reset: false,
        mode: Mode::Kill,
        source: Source::Signal,
        scope: Some((ScopeKind::Venue, 3)),
        forced: false,
        generation: 9,
        wall_ns: 123,
        reason: "loss limit é".into(),
    };
    let buf = roundtrip(&t);
    assert_eq!(SwitchRecord::decode(&buf, false).unwrap(), t);
    let mut bad = buf.clone();
    bad[1] = 0;
    assert_eq!(
        SwitchRecord::decode(&bad, false).unwrap_err().field,
        "source"
    );
    let mut bad = buf;
    bad[6] = 200; // reason_len beyond the payload
    assert_eq!(
        SwitchRecord::decode(&bad, false).unwrap_err().field,
        "reason"
    );
    let long = SwitchRecord {
        reason: "x".repeat(1000),
        ..t
    };
    assert_eq!(roundtrip(&long).len(), 24 + MAX_REASON);
}

#[test]
fn blobs_logs_and_marks_roundtrip() {
    let b = BlobRecord {
        rtype: RecordType::StrategyState,
        name: "mm-1",
        data: b"\x00\x01state",
    };
    assert_eq!(BlobRecord::decode(&roundtrip(&b), b.rtype).unwrap(), b);
    let l = LogRecord {
        level: 2,
        wall_ns: 5,
        text: "venue slow",
    };
    assert_eq!(LogRecord::decode(&roundtrip(&l)).unwrap(), l);
    let d = DurableRecord {
        up_to_seq: 4,
        wall_ns: 5,
        msync_ns: 6,
    };
    assert_eq!(DurableRecord::decode(&roundtrip(&d)).unwrap(), d);
    for t in RecordType::ALL {
        assert_eq!(RecordType::from_u16(t as u16), Some(t));
    }
    assert_eq!(RecordType::from_u16(0), None);
    assert_eq!(RecordType::from_u16(12), None);
    let i = SnapshotIndexRecord {
        segment: 3,
        offset: 4096,
        seq: 77,
    };
    assert_eq!(SnapshotIndexRecord::decode(&roundtrip(&i)).unwrap(), i);
    assert_eq!(record_len(0), 32);
    assert_eq!(record_len(1), 40);
    assert_eq!(record_len(56), 88);
}
