use std::sync::{Arc, Mutex};

use super::*;
use crate::venue::{CancelRejectReason, VenueError};

fn order(id: u64, venue: u16, instrument: u16, side: Side, lots: i64) -> NewOrder {
    NewOrder {
        id: OrderId(id),
        tags: ScopeTags {
            venue,
            instrument,
            ..Default::default()
        },
        side,
        price: Price::from_units(100),
        qty: Qty::from_lots(lots),
    }
}

fn fill(id: u64, lots: i64) -> VenueEvent {
    VenueEvent::Fill {
        id: OrderId(id),
        qty: Qty::from_lots(lots),
        price: Price::from_units(100),
        leaves: Qty::ZERO,
    }
}

#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<RecordedEvent>>>);
impl EventSink for Collect {
    fn record(&mut self, event: &RecordedEvent) {
        self.0.lock().unwrap().push(*event);
    }
}

#[test]
fn fills_update_state_and_positions_exactly() {
    let r = Registry::new();
    r.register(&order(1, 0, 7, Side::Buy, 10)).unwrap();
    r.register(&order(2, 0, 7, Side::Sell, 3)).unwrap();
    r.apply_venue_events(&[VenueEvent::Acked { id: OrderId(1) }, fill(1, 4), fill(2, 3)]);
    assert_eq!(
        r.get(OrderId(1)).unwrap().state,
        OrderState::PartiallyFilled
    );
    assert_eq!(r.get(OrderId(1)).unwrap().filled, Qty::from_lots(4));
    assert_eq!(r.get(OrderId(2)).unwrap().state, OrderState::Filled);
    assert_eq!(r.position(0, 7), Qty::from_lots(1));
    assert_eq!(r.account_position(0, 7, 0), Qty::from_lots(1));
    assert_eq!(r.position(0, 8), Qty::ZERO);
    assert_eq!(r.open_count(), 1);
    r.apply_venue_events(&[fill(1, 6)]);
    assert_eq!(r.get(OrderId(1)).unwrap().state, OrderState::Filled);
    assert_eq!(r.position(0, 7), Qty::from_lots(7));
    assert_eq!(r.open_count(), 0);
    assert_eq!(r.counters().fills, 3);
}

#[test]
fn fill_racing_a_cancel_is_applied_then_cancel_confirms() {
    let r = Registry::new();
    r.register(&order(1, 0, 0, Side::Buy, 10)).unwrap();
    r.apply_venue_events(&[VenueEvent::Acked { id: OrderId(1) }]);
    assert_eq!(r.cancel_sent(OrderId(1)), Some(0));
    r.apply_venue_events(&[fill(1, 2), VenueEvent::Canceled { id: OrderId(1) }]);
    let rec = r.get(OrderId(1)).unwrap();
    assert_eq!(rec.state, OrderState::Canceled);
    assert_eq!(rec.filled, Qty::from_lots(2));
    assert_eq!(r.position(0, 0), Qty::from_lots(2));
    // A full fill racing the cancel: the venue then refuses the cancel.
    r.register(&order(2, 0, 0, Side::Sell, 5)).unwrap();
    assert!(r.cancel_sent(OrderId(2)).is_some());
    r.apply_venue_events(&[
        fill(2, 5),
        VenueEvent::CancelRejected {
            id: OrderId(2),
            reason: CancelRejectReason::UnknownOrder,
        },
    ]);
    assert_eq!(r.get(OrderId(2)).unwrap().state, OrderState::Filled);
    assert_eq!(r.counters().stale_cancel_answers, 1);
    assert_eq!(r.counters().illegal_transitions, 0);
    assert_eq!(
        r.cancel_sent(OrderId(2)),
        None,
        "no cancel for a filled order"
    );
}

#[test]
fn bad_venue_data_is_counted_not_applied() {
    let r = Registry::new();
    r.register(&order(1, 0, 0, Side::Buy, 1)).unwrap();
    r.apply_venue_events(&[
        fill(1, 1),
        VenueEvent::Acked { id: OrderId(1) }, // ack after filled: illegal
        VenueEvent::Canceled { id: OrderId(99) }, // never registered
        VenueEvent::Fill {
            id: OrderId(1),
            qty: Qty(-5),
            price: Price(1),
            leaves: Qty::ZERO,
        },
    ]);
    let c = r.counters();
    assert_eq!(c.illegal_transitions, 1);
    assert_eq!(c.unknown_order_events, 1);
    assert_eq!(c.invalid_fills, 1);
    assert_eq!(r.get(OrderId(1)).unwrap().state, OrderState::Filled);
    assert_eq!(
        r.position(0, 0),
        Qty::from_lots(1),
        "invalid fill not applied"
    );
    let a = r.anomalies();
    assert_eq!(a.len(), 3);
    assert!(matches!(a[0], Anomaly::Illegal { id: OrderId(1), .. }));
    assert_eq!(a[1], Anomaly::UnknownOrder { id: OrderId(99) });
    assert_eq!(
        r.register(&order(1, 0, 0, Side::Buy, 1)),
        Err(RegistryError::DuplicateId(OrderId(1)))
    );
}

#[test]
fn snapshot_filters_by_scope_and_mass_cancel_marks_only_its_venue() {
    let r = Registry::new();
    for id in 1..=6 {
        r.register(&order(id, (id % 2) as u16, (id % 3) as u16, Side::Buy, 1))
            .unwrap();
    }
    let mut venue1 = r.open_orders(|o| o.tags.venue == 1);
    venue1.sort_by_key(|o| o.id);
    assert_eq!(
        venue1.iter().map(|o| o.id.0).collect::<Vec<_>>(),
        vec![1, 3, 5]
    );
    assert_eq!(r.mass_cancel_sent(1, MassCancelScope::Instrument(0)), 1);
    assert_eq!(r.get(OrderId(3)).unwrap().state, OrderState::PendingCancel);
    assert_eq!(r.mass_cancel_sent(1, MassCancelScope::All), 3);
    assert_eq!(r.get(OrderId(2)).unwrap().state, OrderState::PendingNew);
    assert_eq!(r.open_orders(|_| true).len(), 6);
}

#[test]
fn force_cancel_unknown_covers_pending_and_refused_cancels() {
    let r = Registry::new();
    for id in 1..=3 {
        r.register(&order(id, 0, 0, Side::Buy, 2)).unwrap();
    }
    r.apply_venue_events(&[VenueEvent::Acked { id: OrderId(2) }, fill(3, 2)]);
    assert_eq!(r.cancel_sent(OrderId(1)), Some(0));
    assert_eq!(
        r.force_cancel_unknown(OrderId(1)),
        Some(OrderState::PendingCancel)
    );
    assert_eq!(r.force_cancel_unknown(OrderId(2)), Some(OrderState::Live));
    assert_eq!(
        r.force_cancel_unknown(OrderId(3)),
        None,
        "filled stays filled"
    );
    assert_eq!(r.get(OrderId(1)).unwrap().state, OrderState::CancelUnknown);
    assert_eq!(r.get(OrderId(2)).unwrap().state, OrderState::CancelUnknown);
    assert_eq!(r.open_count(), 0, "unknown is not open");
    // A late answer still resolves an unknown order.
    r.apply_venue_events(&[VenueEvent::Canceled { id: OrderId(1) }]);
    assert_eq!(r.get(OrderId(1)).unwrap().state, OrderState::Canceled);
}

#[test]
fn sink_sees_every_event_in_order() {
    let sink = Collect::default();
    let r = Registry::with_sink(Box::new(sink.clone()));
    r.register(&order(1, 0, 0, Side::Sell, 2)).unwrap();
    r.apply_venue_events(&[VenueEvent::Acked { id: OrderId(1) }, fill(1, 1)]);
    r.cancel_sent(OrderId(1));
    r.apply_venue_events(&[VenueEvent::Canceled { id: OrderId(1) }]);
    r.register(&order(2, 0, 0, Side::Sell, 2)).unwrap();
    r.send_failed(OrderId(2), VenueError::Disconnected);
    let ev = sink.0.lock().unwrap().clone();
    let kinds: Vec<String> = ev
        .iter()
        .map(|e| match e {
            RecordedEvent::NewOrder(o) => format!("new {}", o.id.0),
            RecordedEvent::Recovered(o) => format!("recovered {}", o.id.0),
            RecordedEvent::SendFailed { id, .. } => format!("send-failed {}", id.0),
            RecordedEvent::Order { id, state, .. } => format!("{} {state:?}", id.0),
            RecordedEvent::Fill { id, position, .. } => format!("fill {} {position}", id.0),
            RecordedEvent::MassCancelSent { .. } => "mass".into(),
            RecordedEvent::VenueRejected { id, .. } => format!("venue-rejected {}", id.0),
            RecordedEvent::Refused { id, .. } => format!("refused {}", id.0),
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            "new 1",
            "1 Live",
            "fill 1 -1",
            "1 PartiallyFilled",
            "1 PendingCancel",
            "1 Canceled",
            "new 2",
            "send-failed 2",
            "2 Rejected"
        ]
    );
}

#[test]
fn open_list_matches_the_states_through_closes_and_reopens() {
    // The dense open list is patched by swap_remove on every close: check it
    // against a plain filter of every order, and the per-venue counts, after
    // closes in an order that moves entries around.
    let r = Registry::new();
    for id in 1..=40u64 {
        r.register(&order(id, (id % 3) as u16, 1, Side::Buy, 2))
            .unwrap();
    }
    let mut events = Vec::new();
    for id in (1..=40u64).filter(|id| id % 4 == 1 || id % 7 == 0) {
        events.push(VenueEvent::Acked { id: OrderId(id) });
        events.push(VenueEvent::Canceled { id: OrderId(id) });
    }
    events.push(VenueEvent::Acked { id: OrderId(2) });
    events.push(fill(2, 2));
    r.apply_venue_events(&events);
    // A cancel unknown that later resolves leaves and re-enters nothing twice.
    assert_eq!(
        r.force_cancel_unknown(OrderId(3)),
        Some(OrderState::PendingNew)
    );
    r.apply_venue_events(&[VenueEvent::Canceled { id: OrderId(3) }]);
    assert_eq!(r.mass_cancel_sent(1, MassCancelScope::All), {
        let all = r.all_orders();
        all.iter()
            .filter(|o| o.tags.venue == 1 && o.state.is_open())
            .count() as u32
    });
    let all = r.all_orders();
    let mut want: Vec<OrderId> = all
        .iter()
        .filter(|o| o.state.is_open())
        .map(|o| o.id)
        .collect();
    let mut got: Vec<OrderId> = r.open_orders(|_| true).iter().map(|o| o.id).collect();
    want.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, want);
    assert_eq!(r.open_count(), want.len());
    for venue in 0..4u16 {
        let n = all
            .iter()
            .filter(|o| o.tags.venue == venue && o.state.is_open())
            .count();
        assert_eq!(r.read(|v| v.open_on_venue(venue)), n, "venue {venue}");
    }
    // Every snapshot copy equals the stored record.
    for o in r.open_orders(|_| true) {
        assert_eq!(r.get(o.id), Some(o));
    }
}

#[test]
fn batch_cancel_sent_answers_per_order() {
    let r = Registry::new();
    r.register(&order(1, 2, 1, Side::Buy, 1)).unwrap();
    r.register(&order(2, 3, 1, Side::Buy, 1)).unwrap();
    r.apply_venue_events(&[VenueEvent::Acked { id: OrderId(2) }, fill(2, 1)]);
    let mut venues = vec![Some(9)];
    r.cancels_sent(&[OrderId(1), OrderId(2), OrderId(77)], &mut venues);
    assert_eq!(venues, vec![Some(2), None, None]);
    assert_eq!(r.get(OrderId(1)).unwrap().state, OrderState::PendingCancel);
}

/// An ambiguous send is never a reject: `SendUnknown`, open for the drain.
/// Recovered orders are open too, hold new orders until the recovery is
/// finished, and are adopted all or nothing.
#[test]
fn ambiguous_sends_and_recovered_orders_stay_open_for_the_drain() {
    let sink = Collect::default();
    let r = Registry::with_sink(Box::new(sink.clone()));
    r.register(&order(1, 0, 0, Side::Buy, 1)).unwrap();
    r.send_ambiguous(OrderId(1));
    assert_eq!(r.get(OrderId(1)).unwrap().state, OrderState::SendUnknown);
    assert_eq!(r.open_count(), 1);
    assert!(!r.recovery_pending());
    let rec = |id| RecoveredOrder {
        id: OrderId(id),
        tags: ScopeTags::default(),
        side: Side::Sell,
        price: Price::from_units(101),
        qty: Qty::from_lots(3),
        filled: Qty::from_lots(1),
    };
    assert_eq!(r.adopt_recovered([rec(7), rec(8)]).unwrap(), 2);
    assert!(r.recovery_pending());
    assert_eq!(r.open_count(), 3);
    assert_eq!(r.recovered_open().len(), 2);
    let o = r.get(OrderId(7)).unwrap();
    assert_eq!(
        (o.state, o.filled),
        (OrderState::Recovered, Qty::from_lots(1))
    );
    assert!(matches!(
        r.adopt_recovered([rec(9), rec(1)]),
        Err(RegistryError::DuplicateId(OrderId(1)))
    ));
    assert!(r.get(OrderId(9)).is_none(), "all or nothing");
    // The drain's cancel and the venue's answer settle them.
    assert_eq!(r.cancel_sent(OrderId(7)), Some(0));
    r.apply_venue_events(&[VenueEvent::Canceled { id: OrderId(7) }]);
    assert_eq!(
        r.force_cancel_unknown(OrderId(8)),
        Some(OrderState::Recovered)
    );
    assert_eq!(r.get(OrderId(8)).unwrap().state, OrderState::CancelUnknown);
    r.finish_recovery();
    assert!(!r.recovery_pending());
    let ev = sink.0.lock().unwrap().clone();
    assert!(ev.iter().any(|e| matches!(
        e,
        RecordedEvent::Order {
            id: OrderId(1),
            event: OrderEvent::SendAmbiguous,
            state: OrderState::SendUnknown,
            ..
        }
    )));
    assert!(ev
        .iter()
        .any(|e| matches!(e, RecordedEvent::Recovered(o) if o.id == OrderId(8))));
    assert_eq!(r.counters().illegal_transitions, 0);
}

/// The chunked snapshot's walk (`open_orders_below`), interleaved with
/// orders closing (swap-removal reorders the open list) and opening
/// between chunks: every order open from the start to the end of the walk
/// is visited, nothing closed before its chunk is copied as open, and a
/// repeat is the only extra (which callers drop by id). Counts violations
/// over many seeds and asserts zero.
#[test]
fn chunked_snapshot_visits_every_order_open_throughout() {
    let mut violations = 0u64;
    for seed in 0..200u64 {
        let r = Registry::new();
        let n = 300 + seed * 7;
        for id in 1..=n {
            r.register(&order(id, 0, 0, Side::Buy, 1)).unwrap();
            r.apply_venue_events(&[VenueEvent::Acked { id: OrderId(id) }]);
        }
        // xorshift: a deterministic mix of closes per chunk.
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut closed = std::collections::HashSet::new();
        let mut next_id = n + 1;
        let mut cursor = usize::MAX;
        let mut seen = Vec::new();
        let chunk = 1 + (seed % 37) as usize;
        loop {
            let mut got = Vec::new();
            r.read(|v| v.open_orders_below(&mut cursor, chunk, |_| true, &mut got));
            for o in &got {
                if closed.contains(&o.id.0) {
                    violations += 1; // copied as open after it closed
                }
            }
            seen.extend(got.iter().map(|o| o.id.0));
            if cursor == 0 {
                break;
            }
            // Between chunks: a few orders close (fills), one opens.
            for _ in 0..(next() % 4) {
                let id = 1 + next() % n;
                if closed.insert(id) {
                    r.apply_venue_events(&[fill(id, 1)]);
                }
            }
            r.register(&order(next_id, 0, 0, Side::Buy, 1)).unwrap();
            next_id += 1;
        }
        let seen: std::collections::HashSet<u64> = seen.into_iter().collect();
        for id in 1..=n {
            if !closed.contains(&id) && !seen.contains(&id) {
                violations += 1; // open throughout, never visited
            }
        }
    }
    assert_eq!(violations, 0);
}
