use super::*;

const MS: u64 = 1_000_000;

fn obs(now_ms: u64) -> Observation {
    Observation {
        now_ns: 1_000 * MS + now_ms * MS,
        switch_clear: true,
        ..Observation::default()
    }
}

fn warns(actions: &[RuleAction]) -> Vec<(Rule, u8)> {
    actions
        .iter()
        .filter_map(|a| match a {
            RuleAction::Warn { rule, grade, .. } => Some((*rule, *grade)),
            _ => None,
        })
        .collect()
}

type Scope = Option<(ScopeKind, ScopeIndex)>;

fn trips(actions: &[RuleAction]) -> Vec<(Rule, Scope, Mode, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            RuleAction::Trip {
                rule,
                scope,
                mode,
                reason,
            } => Some((*rule, *scope, *mode, reason.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn absolute_loss_warns_once_per_grade_then_trips_once() {
    let mut book = RuleBook::new(
        RuleConfig {
            absolute_loss: Some(LossRule {
                max_loss: Price::from_units(100),
                mode: Mode::Kill,
            }),
            ..RuleConfig::default()
        },
        None,
    );
    let at = |book: &mut RuleBook, t, pnl: i64| {
        book.evaluate(&Observation {
            pnl: Some(Price::from_units(pnl).0),
            ..obs(t)
        })
    };
    // The first P&L is the day's start.
    assert!(at(&mut book, 0, 1_000).is_empty());
    assert!(at(&mut book, 1, 960).is_empty()); // 40 %
    assert_eq!(warns(&at(&mut book, 2, 950)), [(Rule::AbsoluteLoss, 50)]);
    assert!(at(&mut book, 3, 940).is_empty()); // still 60 %: once
                                               // A jump past two grades records the highest only.
    assert_eq!(warns(&at(&mut book, 4, 909)), [(Rule::AbsoluteLoss, 90)]);
    assert_eq!(book.gauges()[Rule::AbsoluteLoss as usize].grade, 90);
    assert_eq!(warns(&at(&mut book, 5, 905)), [(Rule::AbsoluteLoss, 95)]);
    // Back under 85 % re-arms 90 and 95, not 75.
    assert!(at(&mut book, 6, 921).is_empty()); // 79 %
    assert_eq!(warns(&at(&mut book, 7, 909)), [(Rule::AbsoluteLoss, 90)]);
    let t = trips(&at(&mut book, 8, 899));
    assert_eq!(t.len(), 1);
    assert_eq!(
        (t[0].0, t[0].1, t[0].2),
        (Rule::AbsoluteLoss, None, Mode::Kill)
    );
    assert!(
        t[0].3.contains("absolute-loss") && t[0].3.contains("loss 101"),
        "{}",
        t[0].3
    );
    // Latched while the switch is tripped; a reset re-arms it.
    let tripped = Observation {
        pnl: Some(Price::from_units(850).0),
        switch_clear: false,
        ..obs(9)
    };
    assert!(book.evaluate(&tripped).is_empty());
    assert!(book.gauges()[Rule::AbsoluteLoss as usize].tripped);
    assert_eq!(trips(&at(&mut book, 10, 850)).len(), 1);
    assert_eq!(book.warnings(), 4);
}

#[test]
fn trailing_loss_measures_from_the_peak() {
    let mut book = RuleBook::new(
        RuleConfig {
            trailing_loss: Some(LossRule {
                max_loss: Price::from_units(50),
                mode: Mode::HaltNew,
            }),
            ..RuleConfig::default()
        },
        None,
    );
    let mut at = |t, pnl: i64| {
        book.evaluate(&Observation {
            pnl: Some(Price::from_units(pnl).0),
            ..obs(t)
        })
    };
    assert!(at(0, 0).is_empty());
    assert!(at(1, 200).is_empty()); // the peak
    assert_eq!(warns(&at(2, 170)), [(Rule::TrailingLoss, 50)]); // 30 of 50
    let t = trips(&at(3, 149));
    assert_eq!(
        t.len(),
        1,
        "a drawdown of 51 from the peak of 200 trips while P&L is +149"
    );
    assert_eq!(t[0].2, Mode::HaltNew);
    assert!(t[0].3.contains("peak 200"), "{}", t[0].3);
    // No P&L: no judgement.
    assert!(book_without_pnl_is_silent());
}

fn book_without_pnl_is_silent() -> bool {
    let mut book = RuleBook::new(
        RuleConfig {
            absolute_loss: Some(LossRule {
                max_loss: Price::from_units(1),
                mode: Mode::Kill,
            }),
            ..RuleConfig::default()
        },
        None,
    );
    (0..3).all(|t| book.evaluate(&obs(t)).is_empty())
}

#[test]
fn reject_rate_over_its_window_with_a_minimum_of_answers() {
    let mut book = RuleBook::new(
        RuleConfig {
            reject_rate: Some(RejectRateRule {
                max_ppm: 100_000, // 10 %
                window: Duration::from_secs(1),
                min_answers: 20,
                mode: Mode::HaltNew,
            }),
            ..RuleConfig::default()
        },
        None,
    );
    let mut at = |t, acked, rejected| {
        book.evaluate(&Observation {
            orders_sent: acked + rejected,
            orders_acked: acked,
            orders_rejected: rejected,
            ..obs(t)
        })
    };
    assert!(at(0, 0, 0).is_empty());
    // 5 of 10 rejected: too few answers to judge.
    assert!(at(100, 5, 5).is_empty());
    // 5 of 100 rejected = 5 %: the 50 % grade.
    assert_eq!(warns(&at(200, 95, 5)), [(Rule::RejectRate, 50)]);
    // 12 of 100 = 12 %: trips.
    let t = trips(&at(300, 95, 12));
    assert_eq!(t.len(), 1);
    assert!(t[0].3.contains("12 of 107"), "{}", t[0].3);
    // Two seconds later only the last window counts: 0 rejects of 500.
    let quiet = at(2_400, 600, 12);
    assert!(quiet.is_empty());
    assert_eq!(book.gauges()[Rule::RejectRate as usize].usage_ppm, 0);
}

#[test]
fn order_rate_counts_the_last_second() {
    let mut book = RuleBook::new(
        RuleConfig {
            order_rate: Some(OrderRateRule {
                max_per_second: 100,
                mode: Mode::HaltNew,
            }),
            ..RuleConfig::default()
        },
        None,
    );
    let mut at = |t, sent| {
        book.evaluate(&Observation {
            orders_sent: sent,
            ..obs(t)
        })
    };
    assert!(at(0, 1_000).is_empty()); // history before the rules started
    assert!(at(500, 1_040).is_empty());
    assert_eq!(warns(&at(900, 1_080)), [(Rule::OrderRate, 75)]);
    // At 1.4 s the newest sample at or before 0.4 s is the one at 0: 100
    // orders is at the limit, 101 above it.
    assert!(trips(&at(1_400, 1_100)).is_empty());
    assert!(trips(&at(1_450, 1_101)).len() == 1);
}

#[test]
fn position_heartbeat_and_throttle_trip_their_scope() {
    let mut book = RuleBook::new(
        RuleConfig {
            position_limit: Some(PositionRule {
                max_position: Qty::from_lots(10),
                mode: Mode::ReduceOnly,
            }),
            venue_heartbeat: Some(HeartbeatRule {
                stale_after: Duration::from_millis(200),
                mode: Mode::HaltNew,
            }),
            ..RuleConfig::default()
        },
        Some(ExecutionThrottle {
            fills: 5,
            window: Duration::from_millis(100),
        }),
    );
    let base = obs(0).now_ns;
    let o = |t: u64, pos: i64, beat_ms: u64, fills: u64| Observation {
        positions: vec![(3, Qty::from_lots(-pos)), (4, Qty::from_lots(1))],
        venue_heartbeats: vec![(2, base + beat_ms * MS)],
        strategy_fills: vec![(7, fills)],
        ..obs(t)
    };
    assert!(book.evaluate(&o(0, 4, 0, 0)).is_empty());
    let a = book.evaluate(&o(120, 8, 0, 3));
    // Position 8 of 10 (80 %), heartbeat 120 of 200 ms (60 %), 3 of 5 fills.
    assert_eq!(
        warns(&a),
        [
            (Rule::PositionLimit, 75),
            (Rule::VenueHeartbeat, 50),
            (Rule::ExecutionThrottle, 50)
        ]
    );
    let a = book.evaluate(&o(210, 11, 0, 9));
    let t = trips(&a);
    assert_eq!(t.len(), 3, "{a:?}");
    assert_eq!(t[0].1, Some((ScopeKind::Instrument, 3)));
    assert_eq!(t[0].2, Mode::ReduceOnly);
    assert_eq!(t[1].1, Some((ScopeKind::Venue, 2)));
    assert_eq!(t[2].1, Some((ScopeKind::Strategy, 7)));
    assert_eq!(t[2].2, Mode::HaltNew);
    // Counted at the evaluations' resolution: the newest sample at or
    // before the window's start is the base (here the one at 0).
    assert!(t[2].3.contains("9 fills within 100 ms"), "{}", t[2].3);
    // The other instrument stayed quiet.
    assert!(!a.iter().any(|x| matches!(
        x,
        RuleAction::Warn {
            scope: Some((ScopeKind::Instrument, 4)),
            ..
        }
    )));
}
