use std::time::{Duration, Instant};

use super::*;
use crate::clock::mono_ns;
use crate::order::{Qty, ScopeTags, Side};
use crate::venue::{CancelRejectReason, RejectReason};

fn quiet(seed: u64) -> (SimVenue, SimHandle) {
    let mut cfg = SimConfig::new("SIM", 2, seed);
    cfg.flow = FlowConfig::off();
    SimVenue::new(cfg)
}

fn new_order(id: u64, instrument: u16, side: Side, px: i64, lots: i64) -> NewOrder {
    NewOrder {
        id: OrderId(id),
        tags: ScopeTags {
            instrument,
            ..Default::default()
        },
        side,
        price: Price::from_units(px),
        qty: Qty::from_lots(lots),
    }
}

fn poll_all(v: &mut SimVenue) -> Vec<VenueEvent> {
    let mut out = Vec::new();
    v.poll(&mut out);
    out
}

#[test]
fn order_rests_then_a_participant_fills_it_partially() {
    let (mut v, h) = quiet(1);
    v.send(&new_order(1, 0, Side::Buy, 100, 5)).unwrap();
    assert_eq!(poll_all(&mut v), vec![VenueEvent::Acked { id: OrderId(1) }]);
    let ticket = h.inject(0, Side::Sell, Price::from_units(99), Qty::from_lots(2));
    let ev = poll_all(&mut v);
    assert!(h.injected_processed() > ticket);
    assert_eq!(
        ev,
        vec![VenueEvent::Fill {
            id: OrderId(1),
            qty: Qty::from_lots(2),
            price: Price::from_units(100),
            leaves: Qty::from_lots(3),
        }]
    );
    assert_eq!(h.stats().our_resting, 1);
    v.cancel(OrderId(1)).unwrap();
    v.cancel(OrderId(1)).unwrap();
    assert_eq!(
        poll_all(&mut v),
        vec![
            VenueEvent::Canceled { id: OrderId(1) },
            // The second cancel comes after the first: too late.
            VenueEvent::CancelRejected {
                id: OrderId(1),
                reason: CancelRejectReason::TooLate
            }
        ]
    );
    v.request_positions().unwrap();
    assert_eq!(
        poll_all(&mut v),
        vec![
            VenueEvent::Position {
                instrument: 0,
                account: 0,
                qty: Qty::from_lots(2)
            },
            VenueEvent::PositionsEnd
        ]
    );
    let log = h.log();
    assert_eq!(log.len(), 4);
    assert!(matches!(log[0].msg, WireMessage::New(o) if o.id == OrderId(1)));
    assert!(log
        .windows(2)
        .all(|w| w[0].seq + 1 == w[1].seq && w[0].mono_ns <= w[1].mono_ns));
}

#[test]
fn our_aggressive_order_takes_liquidity_across_levels() {
    let (mut v, _h) = quiet(2);
    v.send(&new_order(1, 1, Side::Sell, 101, 1)).unwrap();
    v.send(&new_order(2, 1, Side::Sell, 102, 1)).unwrap();
    v.send(&new_order(3, 1, Side::Buy, 102, 3)).unwrap();
    let fills: Vec<(u64, i64, i64)> = poll_all(&mut v)
        .into_iter()
        .filter_map(|e| match e {
            VenueEvent::Fill {
                id, price, leaves, ..
            } => Some((
                id.0,
                price.0 / crate::order::PRICE_SCALE,
                leaves.0 / crate::order::QTY_SCALE,
            )),
            _ => None,
        })
        .collect();
    // Order 3 trades with 1 at 101 then 2 at 102 (self-trades are reported on both sides).
    assert_eq!(
        fills,
        vec![(1, 101, 0), (3, 101, 2), (2, 102, 0), (3, 102, 1)]
    );
}

#[test]
fn rejects_mass_cancel_and_ignored_cancels() {
    let (mut v, h) = quiet(3);
    h.set_reject_ppm(1_000_000);
    v.send(&new_order(1, 0, Side::Buy, 100, 1)).unwrap();
    h.set_reject_ppm(0);
    v.send(&new_order(1, 0, Side::Buy, 100, 1)).unwrap();
    v.send(&new_order(2, 9, Side::Buy, 100, 1)).unwrap();
    let ev = poll_all(&mut v);
    assert_eq!(
        ev,
        vec![
            VenueEvent::Rejected {
                id: OrderId(1),
                reason: RejectReason::VenueRisk
            },
            VenueEvent::Rejected {
                id: OrderId(1),
                reason: RejectReason::DuplicateId
            },
            VenueEvent::Rejected {
                id: OrderId(2),
                reason: RejectReason::UnknownInstrument
            },
        ]
    );
    for id in 10..13 {
        v.send(&new_order(id, (id % 2) as u16, Side::Buy, 90, 1))
            .unwrap();
    }
    poll_all(&mut v);
    h.set_ignore_cancels(true);
    v.cancel(OrderId(10)).unwrap();
    v.mass_cancel(MassCancelScope::All).unwrap();
    assert!(poll_all(&mut v).is_empty(), "ignored cancels get no answer");
    assert_eq!(h.stats().ignored_cancels, 2);
    h.set_ignore_cancels(false);
    v.mass_cancel(MassCancelScope::Instrument(0)).unwrap();
    assert_eq!(
        poll_all(&mut v),
        vec![
            VenueEvent::Canceled { id: OrderId(10) },
            VenueEvent::Canceled { id: OrderId(12) }
        ]
    );
    h.set_drop_cancel_ack_ppm(1_000_000);
    v.cancel(OrderId(11)).unwrap();
    assert!(poll_all(&mut v).is_empty(), "cancel ack dropped");
    assert_eq!(h.stats().our_resting, 0, "but the order is gone");
    assert_eq!(h.stats().dropped_cancel_acks, 1);
}

#[test]
fn disconnect_with_cancel_on_disconnect_and_latency() {
    let (mut v, h) = quiet(4);
    h.set_cancel_on_disconnect(true);
    v.send(&new_order(1, 0, Side::Buy, 100, 1)).unwrap();
    poll_all(&mut v);
    h.disconnect();
    assert_eq!(
        v.send(&new_order(2, 0, Side::Buy, 100, 1)),
        Err(VenueError::Disconnected)
    );
    assert_eq!(poll_all(&mut v), vec![VenueEvent::Disconnected]);
    assert_eq!(h.stats().cancelled_on_disconnect, 1);
    h.reconnect();
    assert_eq!(
        poll_all(&mut v),
        vec![
            VenueEvent::Reconnected,
            VenueEvent::Canceled { id: OrderId(1) }
        ]
    );
    assert_eq!(h.log().len(), 1, "the refused send never reached the venue");
    h.set_event_latency(Duration::from_secs(3600));
    v.send(&new_order(3, 0, Side::Buy, 100, 1)).unwrap();
    assert!(poll_all(&mut v).is_empty(), "answer held back by latency");
    v.logout().unwrap();
    assert_eq!(v.cancel(OrderId(3)), Err(VenueError::LoggedOut));
}

#[test]
fn synthetic_flow_trades_with_our_resting_orders() {
    let mut cfg = SimConfig::new("SIM", 1, 42);
    cfg.flow.interval_ns = 1_000;
    let (mut v, h) = SimVenue::new(cfg);
    h.set_event_latency(Duration::ZERO);
    v.subscribe(0).unwrap();
    // Rest a buy and a sell one tick from the starting mid.
    let tick = crate::order::PRICE_SCALE / 100;
    let mut o = new_order(1, 0, Side::Buy, 100, 50);
    o.price = Price(o.price.0 - tick);
    v.send(&o).unwrap();
    let mut o = new_order(2, 0, Side::Sell, 100, 50);
    o.price = Price(o.price.0 + tick);
    v.send(&o).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut fills, mut tops) = (0, 0);
    while fills < 2 && Instant::now() < deadline {
        for e in poll_all(&mut v) {
            match e {
                VenueEvent::Fill { .. } => fills += 1,
                VenueEvent::TopOfBook { .. } => tops += 1,
                _ => {}
            }
        }
        std::thread::yield_now();
    }
    assert!(
        fills >= 2,
        "participants should trade with us, got {fills} fills"
    );
    assert!(tops > 0, "subscribed top-of-book updates");
    assert!(h.stats().participant_orders > 0);
}

#[test]
fn order_status_answers_with_the_state_at_the_venue() {
    let (mut v, h) = quiet(5);
    v.send(&new_order(1, 0, Side::Buy, 100, 1)).unwrap();
    v.send(&new_order(2, 0, Side::Buy, 100, 1)).unwrap();
    v.send(&new_order(3, 0, Side::Buy, -1, 1)).unwrap();
    poll_all(&mut v);
    v.cancel(OrderId(2)).unwrap();
    // Order 1 is filled by a participant before we ask.
    h.inject(0, Side::Sell, Price::from_units(100), Qty::from_lots(1));
    poll_all(&mut v);
    for id in [1, 2, 3, 4] {
        v.request_order_status(OrderId(id)).unwrap();
    }
    v.cancel(OrderId(1)).unwrap();
    assert_eq!(
        poll_all(&mut v),
        vec![
            VenueEvent::Canceled { id: OrderId(2) },
            VenueEvent::Rejected {
                id: OrderId(3),
                reason: RejectReason::InvalidOrder
            },
            VenueEvent::CancelRejected {
                id: OrderId(4),
                reason: CancelRejectReason::UnknownOrder
            },
            VenueEvent::CancelRejected {
                id: OrderId(1),
                reason: CancelRejectReason::TooLate
            },
        ],
        "filled order 1 gets no status line (its fill came first); a cancel of it is too late"
    );
    assert!(matches!(
        h.log().last().map(|e| e.msg),
        Some(WireMessage::Cancel(OrderId(1)))
    ));
}

#[test]
fn one_exchange_serves_sessions_with_overlapping_ids() {
    let mut cfg = SimConfig::new("SIM", 1, 6);
    cfg.flow = FlowConfig::off();
    let (mut ex, _h) = Exchange::new(&cfg);
    let (a, b) = (ex.open_session(), ex.open_session());
    // Both sessions use id 1; b's sell crosses a's buy.
    ex.new_order(a, &new_order(1, 0, Side::Buy, 100, 2));
    ex.new_order(b, &new_order(1, 0, Side::Sell, 100, 1));
    let (mut ea, mut eb) = (Vec::new(), Vec::new());
    ex.take_due(a, mono_ns(), &mut ea);
    ex.take_due(b, mono_ns(), &mut eb);
    let fill = |leaves| VenueEvent::Fill {
        id: OrderId(1),
        qty: Qty::from_lots(1),
        price: Price::from_units(100),
        leaves: Qty::from_lots(leaves),
    };
    let ack = Answer::Event(VenueEvent::Acked { id: OrderId(1) });
    assert_eq!(ea, vec![ack, Answer::Event(fill(1))]);
    assert_eq!(eb, vec![ack, Answer::Event(fill(0))]);
    assert_eq!(ex.resting_orders(a), vec![OrderId(1)]);
    assert_eq!(ex.fate(b, OrderId(1)), Some(OrderFate::Filled));
    // Cancel-all of b touches nothing of a.
    assert!(ex.cancel_all(b).is_empty());
    assert_eq!(ex.cancel_all(a), vec![OrderId(1)]);
    assert_eq!(ex.resting_count(a), 0);
}

#[test]
fn withdrawn_liquidity_empties_the_book_and_nothing_fills_until_it_returns() {
    let cfg = SimConfig::new("SIM", 1, 9);
    let (mut v, h) = SimVenue::new(cfg);
    v.subscribe(0).unwrap();
    // Let the flow build a two-sided book.
    let end = Instant::now() + Duration::from_secs(10);
    let mut top = (None, None);
    while !(top.0.is_some() && top.1.is_some()) && Instant::now() < end {
        for e in poll_all(&mut v) {
            if let VenueEvent::TopOfBook { bid, ask, .. } = e {
                top = (bid, ask);
            }
        }
    }
    assert!(top.0.is_some() && top.1.is_some(), "no two-sided book");
    h.set_liquidity_withdrawn(true);
    assert!(h.liquidity_withdrawn());
    let participants = h.stats().participant_orders;
    // The next poll pulls every participant order: the book is empty.
    let ev = poll_all(&mut v);
    assert!(
        ev.contains(&VenueEvent::TopOfBook {
            instrument: 0,
            bid: None,
            ask: None
        }),
        "{ev:?}"
    );
    // A buy far through the mid (a collared "market" order) finds nothing.
    v.send(&new_order(1, 0, Side::Buy, 110, 3)).unwrap();
    let deadline = Instant::now() + Duration::from_millis(50);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        seen.extend(poll_all(&mut v));
    }
    assert!(
        !seen.iter().any(|e| matches!(e, VenueEvent::Fill { .. })),
        "{seen:?}"
    );
    assert!(seen.contains(&VenueEvent::Acked { id: OrderId(1) }));
    assert_eq!(
        h.stats().participant_orders,
        participants,
        "flow kept going"
    );
    // Liquidity back: the flow resumes and the resting buy fills.
    h.set_liquidity_withdrawn(false);
    let end = Instant::now() + Duration::from_secs(10);
    let mut filled = false;
    while !filled && Instant::now() < end {
        filled = poll_all(&mut v)
            .iter()
            .any(|e| matches!(e, VenueEvent::Fill { id, .. } if *id == OrderId(1)));
    }
    assert!(filled, "no fill once the liquidity came back");
}
