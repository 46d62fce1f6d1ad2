use super::*;
use crate::order::ScopeTags;

const MS: u64 = 1_000_000;

fn order(instrument: ScopeIndex, side: Side, price: i64, lots: i64) -> OrderIntent {
    OrderIntent {
        tags: ScopeTags {
            instrument,
            ..ScopeTags::default()
        },
        side,
        qty: Qty::from_lots(lots),
        price: Price::from_units(price),
        position: Qty::ZERO,
    }
}

fn check(cfg: LimitConfig) -> (PreTradeCheck, ReferencePrices) {
    cfg.validate().unwrap();
    let refs = ReferencePrices::new();
    (PreTradeCheck::new(cfg, refs.clone()), refs)
}

#[test]
fn price_collar_refuses_outside_the_band_and_without_a_reference() {
    let (mut c, refs) = check(LimitConfig {
        price_collar_bps: Some(500), // 5 %
        ..LimitConfig::default()
    });
    // No reference yet: fail closed.
    assert_eq!(
        c.check(&order(3, Side::Buy, 100, 1), 0),
        Err(LimitBreach::NoReferencePrice { instrument: 3 })
    );
    refs.set(3, Price::from_units(100));
    for inside in [95, 100, 105] {
        assert_eq!(
            c.check(&order(3, Side::Buy, inside, 1), 0),
            Ok(()),
            "{inside}"
        );
    }
    for outside in [94, 106, 1000] {
        let r = c.check(&order(3, Side::Sell, outside, 1), 0);
        assert_eq!(
            r,
            Err(LimitBreach::PriceCollar {
                price: Price::from_units(outside),
                reference: Price::from_units(100),
                collar_bps: 500
            })
        );
        assert!(r.unwrap_err().to_string().contains("500 bp collar"));
    }
    // The reference moves at runtime; other instruments are separate.
    refs.set(3, Price::from_units(200));
    assert!(c.check(&order(3, Side::Buy, 100, 1), 0).is_err());
    assert!(c.check(&order(3, Side::Buy, 205, 1), 0).is_ok());
    assert!(c.check(&order(4, Side::Buy, 200, 1), 0).is_err());
    refs.clear(3);
    assert!(c.check(&order(3, Side::Buy, 200, 1), 0).is_err());
    // An index outside the table has no reference: refused.
    assert!(c.check(&order(u16::MAX, Side::Buy, 200, 1), 0).is_err());
}

#[test]
fn maximum_quantity_and_value() {
    let (mut c, _) = check(LimitConfig {
        max_order_qty: Some(Qty::from_lots(10)),
        max_order_value: Some(Price::from_units(5_000)),
        ..LimitConfig::default()
    });
    assert!(c.check(&order(1, Side::Buy, 100, 10), 0).is_ok());
    assert_eq!(
        c.check(&order(1, Side::Buy, 1, 11), 0),
        Err(LimitBreach::OrderQty {
            qty: Qty::from_lots(11),
            max: Qty::from_lots(10)
        })
    );
    // 10 lots at 500 = 5,000: at the limit, allowed; at 501, refused.
    assert!(c.check(&order(1, Side::Sell, 500, 10), 0).is_ok());
    let r = c.check(&order(1, Side::Sell, 501, 10), 0).unwrap_err();
    assert_eq!(
        r,
        LimitBreach::OrderValue {
            value: 5_010 * crate::order::PRICE_SCALE as i128,
            max: Price::from_units(5_000)
        }
    );
    assert!(r.to_string().contains("5010"), "{r}");
}

#[test]
fn message_rate_is_a_sliding_second_and_cancels_count_but_pass() {
    let (mut c, _) = check(LimitConfig {
        max_messages_per_second: Some(5),
        ..LimitConfig::default()
    });
    assert!(c.needs_clock());
    let mut refused = 0;
    // 4 orders and 1 cancel in the first 100 ms fill the window.
    for i in 0..4 {
        let o = order(1, Side::Buy, 100 + i, 1);
        c.check(&o, i as u64 * 10 * MS).unwrap();
        c.record_new(&o, i as u64 * 10 * MS);
    }
    c.record_cancel(50 * MS);
    for t in [60 * MS, 500 * MS, 999 * MS] {
        if c.check(&order(1, Side::Buy, 1, 1), t)
            == Err(LimitBreach::MessageRate { max_per_second: 5 })
        {
            refused += 1;
        }
    }
    assert_eq!(refused, 3);
    // One second after the first order, one slot frees.
    let o = order(1, Side::Buy, 1, 1);
    assert!(c.check(&o, 1_000 * MS).is_ok());
    c.record_new(&o, 1_000 * MS);
    assert!(c.check(&order(1, Side::Buy, 2, 1), 1_000 * MS).is_err());
    // Two seconds later everything has left the window.
    assert!(c.check(&order(1, Side::Buy, 2, 1), 3_000 * MS).is_ok());
}

#[test]
fn duplicates_within_the_window_are_refused() {
    let window = Duration::from_millis(100);
    let (mut c, _) = check(LimitConfig {
        duplicate_window: Some(window),
        ..LimitConfig::default()
    });
    let o = order(7, Side::Buy, 100, 2);
    c.check(&o, 0).unwrap();
    c.record_new(&o, 0);
    assert_eq!(c.check(&o, 50 * MS), Err(LimitBreach::Duplicate { window }));
    // Any difference is a different order.
    for other in [
        order(8, Side::Buy, 100, 2),
        order(7, Side::Sell, 100, 2),
        order(7, Side::Buy, 101, 2),
        order(7, Side::Buy, 100, 3),
    ] {
        assert!(c.check(&other, 50 * MS).is_ok(), "{other:?}");
    }
    // After the window, the same order is new again.
    assert!(c.check(&o, 100 * MS).is_ok());
    c.record_new(&o, 100 * MS);
    assert!(c.check(&o, 150 * MS).is_err());
    assert!(c.check(&o, 200 * MS).is_ok());
}

#[test]
fn nothing_configured_checks_nothing_and_bad_values_are_named() {
    let cfg = LimitConfig::default();
    assert!(!cfg.checks_orders());
    let (mut c, _) = check(cfg);
    assert!(!c.needs_clock());
    assert!(c
        .check(
            &order(1, Side::Buy, i64::MAX / crate::order::PRICE_SCALE, 1),
            0
        )
        .is_ok());
    for (bad, field) in [
        (
            LimitConfig {
                max_messages_per_second: Some(0),
                ..LimitConfig::default()
            },
            "max_messages_per_second",
        ),
        (
            LimitConfig {
                max_order_qty: Some(Qty::ZERO),
                ..LimitConfig::default()
            },
            "max_order_qty",
        ),
        (
            LimitConfig {
                execution_throttle: Some(ExecutionThrottle {
                    fills: 0,
                    window: Duration::from_secs(1),
                }),
                ..LimitConfig::default()
            },
            "execution_throttle",
        ),
    ] {
        assert!(bad.validate().unwrap_err().contains(field), "{field}");
    }
}
