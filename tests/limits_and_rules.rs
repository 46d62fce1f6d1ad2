//! Pre-trade limits and automatic trips through the runtime, against the
//! simulated venue: every refusal reaches the strategy as a verdict and
//! never the venue; every automatic rule is driven into its condition by
//! the venue (fills, rejects) or by the market (reference prices), trips
//! with source `auto` and says which rule fired with which values; graded
//! warnings are audited once per grade.
//!
//! Each test runs the supervisor on the test thread and the strategy on
//! another, and waits on events with deadlines (no timing asserts).

mod common;

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::wait_for;
use killswitch::control::{AuditEntry, AuditKind, Mode, ScopeKind, Source};
use killswitch::gate::Rejection;
use killswitch::gateway::SubmitError;
use killswitch::journal::JournalConfig;
use killswitch::limits::{ExecutionThrottle, LimitBreach, LimitConfig};
use killswitch::order::{OrderId, OrderIntent, Price, Qty, ScopeTags, Side};
use killswitch::rules::{
    HeartbeatRule, LossRule, OrderRateRule, PositionRule, RejectRateRule, Rule, RuleConfig,
};
use killswitch::runtime::{
    Answer, Flow, Runtime, RuntimeBuilder, StrategyHandle, SuperviseOptions,
};
use killswitch::venue::sim::{FlowConfig, SimConfig, SimHandle, SimVenue, WireMessage};

const WAIT: Duration = Duration::from_secs(30);

fn shm() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .unwrap()
}

fn order(tags: ScopeTags, side: Side, px: i64, lots: i64) -> OrderIntent {
    OrderIntent {
        tags,
        side,
        qty: Qty::from_lots(lots),
        price: Price::from_units(px),
        position: Qty::ZERO,
    }
}

/// A runtime on one quiet simulated venue "SIM" (instrument 0 is the
/// first name registered, "BTC/USD").
fn engine(
    dir: &tempfile::TempDir,
    configure: impl FnOnce(RuntimeBuilder) -> RuntimeBuilder,
    reject_ppm: u32,
) -> (Runtime, SimHandle) {
    let mut c = SimConfig::new("SIM", 2, 7);
    c.flow = FlowConfig::off();
    c.reject_ppm = reject_ppm;
    let (venue, sim) = SimVenue::new(c);
    let b = Runtime::builder(dir.path(), "rules").venue("SIM", venue);
    (configure(b).start().unwrap(), sim)
}

/// Supervises `rt` on this thread until `strategy` has finished (or the
/// deadline), then returns what it returned.
fn supervise_until<T: Send + 'static>(rt: &mut Runtime, strategy: JoinHandle<T>) -> T {
    let end = Instant::now() + WAIT;
    rt.supervise_with(
        SuperviseOptions {
            beat: Duration::from_millis(1),
            stop_after_kill: false,
        },
        |_| {
            if strategy.is_finished() || Instant::now() >= end {
                Flow::Stop
            } else {
                Flow::Continue
            }
        },
    );
    strategy.join().expect("strategy thread")
}

/// Waits for an answer matching `pred`.
fn answer(h: &mut StrategyHandle, mut pred: impl FnMut(&Answer) -> bool) {
    let end = Instant::now() + WAIT;
    loop {
        match h.try_answer() {
            Ok(Some(a)) if pred(&a) => return,
            Ok(_) => {
                assert!(Instant::now() < end, "no matching answer");
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(lost) => panic!("{lost}"),
        }
    }
}

/// Rests `lots` one-lot buys at 100 and has another participant sell into
/// them: `lots` fills, a position of +`lots` at 100.
fn buy_filled(h: &mut StrategyHandle, sim: &SimHandle, tags: ScopeTags, lots: i64) {
    let mut ids: Vec<OrderId> = Vec::new();
    for _ in 0..lots {
        let id = h.submit(&order(tags, Side::Buy, 100, 1)).unwrap();
        answer(h, |a| *a == Answer::Accepted { id });
        ids.push(id);
    }
    for &id in &ids {
        sim.inject(
            tags.instrument,
            Side::Sell,
            Price::from_units(100),
            Qty::from_lots(1),
        );
        answer(
            h,
            |a| matches!(a, Answer::Filled { id: f, complete: true, .. } if *f == id),
        );
    }
}

fn auto_trips(block: &killswitch::control::ControlBlock) -> Vec<AuditEntry> {
    block
        .audit()
        .into_iter()
        .filter(|e| e.kind == AuditKind::Trip && e.source == Source::Auto)
        .collect()
}

fn warnings(block: &killswitch::control::ControlBlock) -> Vec<AuditEntry> {
    block
        .audit()
        .into_iter()
        .filter(|e| e.kind == AuditKind::Warning)
        .collect()
}

/// Submits until the gate refuses (deadline): returns the refusal.
fn submit_until_refused(h: &StrategyHandle, tags: ScopeTags, side: Side) -> Rejection {
    let end = Instant::now() + WAIT;
    let mut px = 50;
    loop {
        match h.submit(&order(tags, side, px, 1)) {
            Err(SubmitError::Refused(r)) => return r,
            Ok(_) | Err(SubmitError::RingFull) => {}
            Err(e) => panic!("unexpected {e}"),
        }
        px = if px >= 150 { 50 } else { px + 1 };
        assert!(Instant::now() < end, "never refused");
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// The strategy was refused by a global HaltNew, and the block's audit
/// holds exactly one automatic trip, whose reason says each of `says`.
fn halted_by_one_rule(
    refusal: &Rejection,
    block: &killswitch::control::ControlBlock,
    says: &[&str],
) {
    assert!(
        matches!(
            refusal,
            Rejection::Mode {
                mode: Mode::HaltNew,
                scope: None,
                ..
            }
        ),
        "{refusal:?}"
    );
    let trips = auto_trips(block);
    assert_eq!(trips.len(), 1, "{trips:?}");
    for s in says {
        assert!(trips[0].reason.contains(s), "{}", trips[0].reason);
    }
}

#[test]
fn pre_trade_limits_refuse_with_a_verdict_and_nothing_reaches_the_venue() {
    let dir = shm();
    let limits = LimitConfig {
        price_collar_bps: Some(1_000), // 10 %
        max_order_qty: Some(Qty::from_lots(5)),
        max_order_value: Some(Price::from_units(400)),
        max_messages_per_second: Some(40),
        duplicate_window: Some(Duration::from_secs(600)),
        execution_throttle: None,
    };
    let (rt, sim) = engine(&dir, |b| b.limits(limits), 0);
    let mut mm = rt.strategy("mm").unwrap();
    let tags = mm.tags("SIM", "BTC/USD", "desk-1").unwrap();
    // No reference price yet: the collar fails closed.
    assert_eq!(
        mm.submit(&order(tags, Side::Buy, 100, 1)),
        Err(SubmitError::Limit(LimitBreach::NoReferencePrice {
            instrument: tags.instrument
        }))
    );
    rt.reference_prices()
        .set(tags.instrument, Price::from_units(100));
    let refused = |r: Result<OrderId, SubmitError>| match r {
        Err(SubmitError::Limit(b)) => b,
        other => panic!("expected a limit breach, got {other:?}"),
    };
    assert!(matches!(
        refused(mm.submit(&order(tags, Side::Buy, 111, 1))),
        LimitBreach::PriceCollar { .. }
    ));
    assert!(matches!(
        refused(mm.submit(&order(tags, Side::Buy, 100, 6))),
        LimitBreach::OrderQty { .. }
    ));
    let value = refused(mm.submit(&order(tags, Side::Buy, 100, 5)));
    assert!(matches!(value, LimitBreach::OrderValue { .. }));
    assert!(value.to_string().contains("order value 500"), "{value}");

    let first = mm.submit(&order(tags, Side::Buy, 99, 1)).unwrap();
    answer(&mut mm, |a| *a == Answer::Accepted { id: first });
    assert_eq!(
        mm.submit(&order(tags, Side::Buy, 99, 1)),
        Err(SubmitError::Limit(LimitBreach::Duplicate {
            window: Duration::from_secs(600)
        }))
    );
    // A replace is checked too: the same order as one just sent is a duplicate.
    assert!(matches!(
        mm.replace(first, Price::from_units(99), Qty::from_lots(1)),
        Err(killswitch::gateway::ReplaceError::Submit(
            SubmitError::Limit(LimitBreach::Duplicate { .. })
        ))
    ));
    // Distinct orders until the message rate refuses one.
    let mut sent = vec![first];
    let mut rate_refusals = 0;
    for lots in 1..=3 {
        for px in 91..=109 {
            if (px, lots) == (99, 1) {
                continue; // the first order
            }
            match mm.submit(&order(tags, Side::Buy, px, lots)) {
                Ok(id) => sent.push(id),
                Err(SubmitError::Limit(LimitBreach::MessageRate { max_per_second: 40 })) => {
                    rate_refusals += 1
                }
                other => panic!("{other:?}"),
            }
        }
    }
    assert!(
        rate_refusals > 0,
        "57 orders in a tight loop, 40 per second allowed"
    );
    assert_eq!(sent.len() - 1 + rate_refusals, 56);
    // A cancel is never refused, even with the window full.
    mm.cancel(first).unwrap();
    answer(&mut mm, |a| *a == Answer::Canceled { id: first });

    // The venue saw exactly the orders handed on, none of the refused.
    wait_for("the venue to see every order handed on", WAIT, || {
        sim.log()
            .iter()
            .filter(|e| matches!(e.msg, WireMessage::New(_)))
            .count()
            >= sent.len()
    });
    let mut news: Vec<OrderId> = sim
        .log()
        .iter()
        .filter_map(|e| match e.msg {
            WireMessage::New(o) => Some(o.id),
            _ => None,
        })
        .collect();
    news.sort_unstable();
    sent.sort_unstable();
    assert_eq!(news, sent);
}

#[test]
fn repeated_executions_halt_the_strategy_through_the_block() {
    let dir = shm();
    let limits = LimitConfig {
        execution_throttle: Some(ExecutionThrottle {
            fills: 3,
            window: Duration::from_secs(600),
        }),
        ..LimitConfig::default()
    };
    let (mut rt, sim) = engine(&dir, |b| b.limits(limits), 0);
    let mut hot = rt.strategy("hot").unwrap();
    let calm = rt.strategy("calm").unwrap();
    let monitor = rt.monitor();
    let strategy = std::thread::spawn(move || {
        let tags = hot.tags("SIM", "BTC/USD", "desk-1").unwrap();
        buy_filled(&mut hot, &sim, tags, 4);
        let refusal = submit_until_refused(&hot, tags, Side::Buy);
        // The other strategy still trades: the halt is scoped.
        let calm_tags = calm.tags("SIM", "BTC/USD", "desk-1").unwrap();
        let calm_ok = calm.submit(&order(calm_tags, Side::Sell, 120, 1)).is_ok();
        (refusal, calm_ok, hot.strategy_index())
    });
    let (refusal, calm_ok, hot_index) = supervise_until(&mut rt, strategy);
    assert!(
        matches!(
            refusal,
            Rejection::Mode {
                mode: Mode::HaltNew,
                scope: Some(ScopeKind::Strategy),
                ..
            }
        ),
        "{refusal:?}"
    );
    assert!(calm_ok);
    let trips = auto_trips(monitor.block());
    assert_eq!(trips.len(), 1, "{trips:?}");
    assert_eq!(trips[0].scope, Some((ScopeKind::Strategy, hot_index)));
    assert!(
        trips[0]
            .reason
            .contains("execution-throttle strategy hot: 4 fills"),
        "{}",
        trips[0].reason
    );
    let g = rt.rule_gauges()[Rule::ExecutionThrottle as usize];
    assert!(g.configured && g.tripped, "{g:?}");
}

#[test]
fn absolute_loss_warns_at_each_grade_then_kills() {
    let dir = shm();
    let jdir = dir.path().join("journal");
    let rules = RuleConfig {
        absolute_loss: Some(LossRule {
            max_loss: Price::from_units(100),
            mode: Mode::Kill,
        }),
        interval: Duration::from_millis(2),
        ..RuleConfig::default()
    };
    let (mut rt, sim) = engine(
        &dir,
        |b| b.rules(rules).journal(&jdir, JournalConfig::default()),
        0,
    );
    let mut mm = rt.strategy("mm").unwrap();
    let refs = rt.reference_prices();
    let monitor = rt.monitor();
    let strategy = std::thread::spawn(move || {
        let tags = mm.tags("SIM", "BTC/USD", "desk-1").unwrap();
        refs.set(tags.instrument, Price::from_units(100));
        // Long 10 at 100: each unit the price falls loses 10.
        buy_filled(&mut mm, &sim, tags, 10);
        let block = monitor.block();
        // 40 %: nothing; 60 %: the 50 % grade; 80 %: 75 %; 96 %: 95 %.
        for (px, warnings_then) in [(96.0, 0), (94.0, 1), (92.0, 2), (90.4, 3)] {
            refs.set(tags.instrument, Price((px * 1e8) as i64));
            wait_for("the warning count", WAIT, || {
                warnings(block).len() >= warnings_then
            });
        }
        refs.set(tags.instrument, Price::from_units(89));
        wait_for("the automatic KILL", WAIT, || {
            block.state().mode() == Mode::Kill
        });
        drop(mm);
    });
    supervise_until(&mut rt, strategy);
    let block = rt.monitor();
    let w = warnings(block.block());
    let grades: Vec<&str> = w
        .iter()
        .map(|e| {
            [
                "(warning 50 %)",
                "(warning 75 %)",
                "(warning 90 %)",
                "(warning 95 %)",
            ]
            .into_iter()
            .find(|g| e.reason.contains(g))
            .unwrap_or("?")
        })
        .collect();
    assert_eq!(
        grades,
        ["(warning 50 %)", "(warning 75 %)", "(warning 95 %)"],
        "{w:#?}"
    );
    assert!(w
        .iter()
        .all(|e| e.source == Source::Auto && e.mode == Mode::Kill));
    // The gauge in the block, as `killswitch serve` reads it.
    let g = killswitch::rules::read_gauges(block.block())[Rule::AbsoluteLoss as usize];
    assert!(
        g.configured && g.tripped && g.usage_ppm > 1_000_000,
        "{g:?}"
    );
    let trips = auto_trips(block.block());
    assert_eq!(trips.len(), 1, "{trips:?}");
    assert_eq!((trips[0].mode, trips[0].scope), (Mode::Kill, None));
    assert!(
        trips[0]
            .reason
            .contains("absolute-loss: loss 110 (P&L -110), limit 100"),
        "{}",
        trips[0].reason
    );
}

#[test]
fn trailing_loss_trips_on_a_drawdown_while_still_in_profit() {
    let dir = shm();
    let jdir = dir.path().join("journal");
    let rules = RuleConfig {
        trailing_loss: Some(LossRule {
            max_loss: Price::from_units(50),
            mode: Mode::HaltNew,
        }),
        interval: Duration::from_millis(2),
        ..RuleConfig::default()
    };
    let (mut rt, sim) = engine(
        &dir,
        |b| b.rules(rules).journal(&jdir, JournalConfig::default()),
        0,
    );
    let mut mm = rt.strategy("mm").unwrap();
    let refs = rt.reference_prices();
    let monitor = rt.monitor();
    let strategy = std::thread::spawn(move || {
        let tags = mm.tags("SIM", "BTC/USD", "desk-1").unwrap();
        refs.set(tags.instrument, Price::from_units(100));
        // The day's P&L counts from the rules' first look (flat, P&L 0): on
        // a loaded machine `supervise` may start after this thread has
        // bought and raised the price, and the day would start at +100
        // ("drawdown 60 from peak 0"). Their gauges appear with that look.
        let end = Instant::now() + WAIT;
        while !killswitch::rules::read_gauges(monitor.block())[Rule::TrailingLoss as usize]
            .configured
        {
            assert!(Instant::now() < end, "the rules never looked");
            std::thread::sleep(Duration::from_millis(1));
        }
        buy_filled(&mut mm, &sim, tags, 10);
        // Up 100 (the peak), then down to +70: a drawdown of 30, the 50 %
        // warning, which proves the rules saw the peak (on a loaded machine
        // they may miss a short-lived peak: then go up again).
        let end = Instant::now() + WAIT;
        loop {
            refs.set(tags.instrument, Price::from_units(110));
            std::thread::sleep(Duration::from_millis(20));
            refs.set(tags.instrument, Price::from_units(107));
            let seen = Instant::now() + Duration::from_secs(1);
            while Instant::now() < seen && warnings(monitor.block()).is_empty() {
                std::thread::sleep(Duration::from_millis(1));
            }
            if !warnings(monitor.block()).is_empty() {
                break;
            }
            assert!(Instant::now() < end, "the rules never saw the peak");
        }
        // ...then to +40: a drawdown of 60.
        refs.set(tags.instrument, Price::from_units(104));
        submit_until_refused(&mm, tags, Side::Buy)
    });
    let refusal = supervise_until(&mut rt, strategy);
    halted_by_one_rule(
        &refusal,
        rt.block(),
        &["trailing-loss: drawdown 60 from peak 100 (P&L 40)"],
    );
}

#[test]
fn a_rejecting_venue_trips_the_reject_rate_rule() {
    let dir = shm();
    let rules = RuleConfig {
        reject_rate: Some(RejectRateRule {
            max_ppm: 50_000,
            window: Duration::from_secs(600),
            min_answers: 10,
            mode: Mode::HaltNew,
        }),
        ..RuleConfig::default()
    };
    let (mut rt, _sim) = engine(&dir, |b| b.rules(rules), 1_000_000);
    let mm = rt.strategy("mm").unwrap();
    let strategy = std::thread::spawn(move || {
        let tags = mm.tags("SIM", "BTC/USD", "desk-1").unwrap();
        submit_until_refused(&mm, tags, Side::Buy)
    });
    let refusal = supervise_until(&mut rt, strategy);
    halted_by_one_rule(
        &refusal,
        rt.block(),
        &["reject-rate", "100.00 %, limit 5.00 %"],
    );
}

#[test]
fn an_order_burst_trips_the_order_rate_rule() {
    let dir = shm();
    let rules = RuleConfig {
        order_rate: Some(OrderRateRule {
            max_per_second: 50,
            mode: Mode::HaltNew,
        }),
        ..RuleConfig::default()
    };
    let (mut rt, _sim) = engine(&dir, |b| b.rules(rules), 0);
    let mm = rt.strategy("mm").unwrap();
    let strategy = std::thread::spawn(move || {
        let tags = mm.tags("SIM", "BTC/USD", "desk-1").unwrap();
        submit_until_refused(&mm, tags, Side::Buy)
    });
    let refusal = supervise_until(&mut rt, strategy);
    halted_by_one_rule(&refusal, rt.block(), &["order-rate"]);
}

#[test]
fn fills_past_the_position_limit_make_the_instrument_reduce_only() {
    let dir = shm();
    let rules = RuleConfig {
        position_limit: Some(PositionRule {
            max_position: Qty::from_lots(3),
            mode: Mode::ReduceOnly,
        }),
        ..RuleConfig::default()
    };
    let (mut rt, sim) = engine(&dir, |b| b.rules(rules), 0);
    let mut mm = rt.strategy("mm").unwrap();
    let strategy = std::thread::spawn(move || {
        let tags = mm.tags("SIM", "BTC/USD", "desk-1").unwrap();
        buy_filled(&mut mm, &sim, tags, 4);
        let refusal = submit_until_refused(&mm, tags, Side::Buy);
        // Selling part of the long still goes out.
        let mut sell = order(tags, Side::Sell, 101, 1);
        sell.position = Qty::from_lots(4);
        (refusal, mm.submit(&sell).is_ok(), tags.instrument)
    });
    let (refusal, sell_ok, instrument) = supervise_until(&mut rt, strategy);
    assert!(matches!(
        refusal,
        Rejection::Mode {
            mode: Mode::ReduceOnly,
            scope: Some(ScopeKind::Instrument),
            ..
        }
    ));
    assert!(sell_ok);
    let trips = auto_trips(rt.block());
    assert_eq!(trips.len(), 1, "{trips:?}");
    assert_eq!(trips[0].scope, Some((ScopeKind::Instrument, instrument)));
    assert!(
        trips[0]
            .reason
            .contains("position-limit instrument BTC/USD: position 4 of limit 3"),
        "{}",
        trips[0].reason
    );
}

#[test]
fn a_silent_venue_trips_the_heartbeat_rule_for_that_venue() {
    let dir = shm();
    let rules = RuleConfig {
        venue_heartbeat: Some(HeartbeatRule {
            stale_after: Duration::from_millis(300),
            mode: Mode::HaltNew,
        }),
        ..RuleConfig::default()
    };
    let (mut rt, sim) = engine(&dir, |b| b.rules(rules), 0);
    let mm = rt.strategy("mm").unwrap();
    let beats = rt.venue_heartbeats();
    let strategy = std::thread::spawn(move || {
        let tags = mm.tags("SIM", "BTC/USD", "desk-1").unwrap();
        // The adapter's side: beat while the session is up, then the
        // session drops and the beats stop.
        for _ in 0..20 {
            beats.beat(tags.venue);
            std::thread::sleep(Duration::from_millis(5));
        }
        sim.disconnect();
        (submit_until_refused(&mm, tags, Side::Buy), tags.venue)
    });
    let (refusal, venue) = supervise_until(&mut rt, strategy);
    assert!(matches!(
        refusal,
        Rejection::Mode {
            mode: Mode::HaltNew,
            scope: Some(ScopeKind::Venue),
            ..
        }
    ));
    let trips = auto_trips(rt.block());
    assert_eq!(trips.len(), 1, "{trips:?}");
    assert_eq!(trips[0].scope, Some((ScopeKind::Venue, venue)));
    assert!(
        trips[0]
            .reason
            .contains("venue-heartbeat venue SIM: no heartbeat for"),
        "{}",
        trips[0].reason
    );
}
