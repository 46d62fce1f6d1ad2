//! The planned shutdown in the library (`Runtime::planned_shutdown`) over
//! a simulated venue: every phase in order, conservative flattening that
//! escalates to market, option B (passive orders kept, aggressive ones
//! cancelled), a venue that ignores cancels (stragglers, force cancel
//! local), a component that ignores its stop (forced), the reconciliation
//! asked of the venue, the complete checkpoint verified; REDUCE_ONLY
//! counting the open reducing orders; the deployment lock refusing a
//! start; a reconciliation mismatch blocking reset.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::wait_for;
use killswitch::control::telemetry::{EngineStatus, TelemetrySnapshot};
use killswitch::control::{ControlBlock, Mode, Operator, ResetRequest, Source};
use killswitch::journal::JournalConfig;
use killswitch::order::{OrderIntent, OrderState, Price, Qty, ScopeIndex, ScopeTags, Side};
use killswitch::registry::Refusal;
use killswitch::runtime::{Answer, Runtime, StrategyHandle};
use killswitch::shutdown::words::{self, PhaseState};
use killswitch::shutdown::{
    Component, ComponentStatus, FlattenConfig, FlattenMode, Phase, PhaseResult, ShutdownHooks,
    ShutdownPlan, StopOrder,
};
use killswitch::venue::sim::{FlowConfig, SimConfig, SimHandle, SimVenue, WireMessage};

const WAIT: Duration = Duration::from_secs(20);

fn quiet() -> SimConfig {
    let mut c = SimConfig::new("SIM", 2, 7);
    c.flow = FlowConfig::off();
    c
}

fn shm() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .unwrap()
}

fn order(tags: ScopeTags, side: Side, px: i64, lots: i64, position: i64) -> OrderIntent {
    OrderIntent {
        tags,
        side,
        qty: Qty::from_lots(lots),
        price: Price::from_units(px),
        position: Qty::from_lots(position),
    }
}

fn wait_answer(h: &mut StrategyHandle, mut pred: impl FnMut(&Answer) -> bool) -> Answer {
    let end = Instant::now() + WAIT;
    loop {
        match h.try_answer() {
            Ok(Some(a)) if pred(&a) => return a,
            Ok(_) => {
                assert!(Instant::now() < end, "no matching answer");
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(lost) => panic!("{lost}"),
        }
    }
}

/// Buys `lots` at 100 against an injected participant sell: a long position.
fn go_long(h: &mut StrategyHandle, sim: &SimHandle, tags: ScopeTags, lots: i64) {
    sim.inject(
        tags.instrument,
        Side::Sell,
        Price::from_units(100),
        Qty::from_lots(lots),
    );
    wait_for("injected", WAIT, || sim.injected_processed() >= 1);
    let id = h.submit(&order(tags, Side::Buy, 100, lots, 0)).unwrap();
    wait_answer(
        h,
        |a| matches!(a, Answer::Filled { id: i, complete: true, .. } if *i == id),
    );
}

struct Mid;
impl ShutdownHooks for Mid {
    fn mid(&mut self, _: ScopeIndex, _: ScopeIndex) -> Option<Price> {
        Some(Price::from_units(100))
    }
}

struct Service {
    name: &'static str,
    order: StopOrder,
    ignores_stop: bool,
    asked: bool,
}
impl Component for Service {
    fn name(&self) -> &str {
        self.name
    }
    fn stop_order(&self) -> StopOrder {
        self.order
    }
    fn request_stop(&mut self) {
        self.asked = true;
    }
    fn is_stopped(&mut self) -> bool {
        self.asked && !self.ignores_stop
    }
    fn force_stop(&mut self) -> String {
        "abandoned".into()
    }
    fn status(&self) -> ComponentStatus {
        ComponentStatus::Running
    }
}

struct WithComponents(Vec<Box<dyn Component>>);
impl ShutdownHooks for WithComponents {
    fn mid(&mut self, _: ScopeIndex, _: ScopeIndex) -> Option<Price> {
        Some(Price::from_units(100))
    }
    fn components(&mut self) -> Vec<Box<dyn Component>> {
        std::mem::take(&mut self.0)
    }
}

#[test]
fn conservative_flatten_escalates_to_market_and_every_phase_runs_in_order() {
    let dir = shm();
    let ckpt = tempfile::tempdir().unwrap();
    let jdir = tempfile::tempdir().unwrap();
    let (venue, sim) = SimVenue::new(quiet());
    let mut rt = Runtime::builder(dir.path(), "planned")
        .venue("SIM", venue)
        .journal(jdir.path(), JournalConfig::default())
        .start()
        .unwrap();
    let mut mm = rt.strategy("mm").unwrap();
    let tags = mm.tags("SIM", "BTC/USD", "desk-1").unwrap();
    go_long(&mut mm, &sim, tags, 5);
    // Liquidity for the flattener: 3 lots bid at the mid (the conservative
    // limit fills 3), 10 lots a unit below (only a market order reaches).
    sim.inject(
        tags.instrument,
        Side::Buy,
        Price::from_units(100),
        Qty::from_lots(3),
    );
    sim.inject(
        tags.instrument,
        Side::Buy,
        Price::from_units(99),
        Qty::from_lots(10),
    );
    wait_for("injected", WAIT, || sim.injected_processed() >= 3);
    // A resting order of the strategy: cancelled (option A cancels all).
    let resting = mm.submit(&order(tags, Side::Buy, 90, 1, 5)).unwrap();
    wait_answer(&mut mm, |a| *a == Answer::Accepted { id: resting });
    let stopper = std::thread::spawn(move || {
        // The strategy thread: stops when asked.
        while !mm.stop_requested() {
            std::thread::sleep(Duration::from_millis(1));
        }
    });

    let plan = ShutdownPlan {
        reason: "end of day".into(),
        flatten: FlattenMode::Conservative,
        reduce_limits_pct: Some(50),
        flatten_cfg: FlattenConfig {
            conservative_wait: Duration::from_millis(300),
            market_wait: Duration::from_secs(5),
            ..FlattenConfig::default()
        },
        order_wait: Duration::from_secs(10),
        checkpoint_dir: Some(ckpt.path().to_path_buf()),
        nonce: 7,
        ..ShutdownPlan::default()
    };
    let block = Arc::new(ControlBlock::open(dir.path(), "planned").unwrap());
    let report = rt.planned_shutdown(plan, &mut Mid);
    stopper.join().unwrap();

    let order_run: Vec<Phase> = report.phases.iter().map(|p| p.phase).collect();
    assert_eq!(order_run, Phase::ALL);
    for p in &report.phases {
        assert!(
            !matches!(p.result, PhaseResult::Failed(_) | PhaseResult::Running),
            "{p:?}"
        );
    }
    assert!(report.cancelled.contains(&resting));
    assert_eq!(rt.order(resting).unwrap().state, OrderState::Canceled);
    // 3 at the mid, 2 by the market order at 99: flat, escalated, a
    // slippage of 2 lots x 1.00.
    assert!(report.flatten_escalated);
    assert_eq!(report.flatten_results.len(), 1);
    assert_eq!(report.flatten_results[0].remaining, Qty::ZERO);
    assert_eq!(report.slippage, Price::from_units(2).0);
    assert!(
        report.final_positions.is_empty(),
        "{:?}",
        report.final_positions
    );
    // 50 % of the largest position (5 lots).
    assert_eq!(report.position_limit, Some(Qty(Qty::from_lots(5).0 / 2)));
    // The venue was asked for positions; nothing differs.
    assert!(sim
        .log()
        .iter()
        .any(|e| e.msg == WireMessage::PositionRequest));
    assert!(sim.log().iter().any(|e| e.msg == WireMessage::Logout));
    assert!(report
        .reconcile
        .iter()
        .all(|r| r.status == killswitch::shutdown::RowStatus::Ok));
    // The checkpoint is there and valid, with the CRC reported.
    let c = report.checkpoint.clone().expect("checkpoint");
    let summary = killswitch::checkpoint::validate(&c.path).unwrap();
    assert!(c.verified);
    assert_eq!(summary.file_crc64, c.crc64);
    assert!(report.stragglers.is_empty());
    assert!(report.is_clean(), "{report:?}");
    // The block says so: OFFLINE, finished, lock released, limit in force
    // until the next start.
    let t = TelemetrySnapshot::read(&block);
    assert_eq!(t.engine.unwrap().status, EngineStatus::Offline);
    assert_eq!(t.announcement.unwrap().reason, "end of day");
    let p = words::progress(&block).unwrap();
    assert_eq!((p.nonce, p.phase, p.state), (7, 13, PhaseState::Finished));
    assert_ne!(p.outcome & words::OUTCOME_CLEAN, 0);
    assert!(!words::change_flags(&block).locked);
}

#[test]
fn option_b_keeps_passive_orders_reports_stragglers_and_forces_a_stubborn_component() {
    let dir = shm();
    let (venue, sim) = SimVenue::new(quiet());
    let mut rt = Runtime::builder(dir.path(), "optb")
        .venue("SIM", venue)
        .start()
        .unwrap();
    let mut mm = rt.strategy("mm").unwrap();
    let tags = mm.tags("SIM", "BTC/USD", "desk-1").unwrap();
    let passive = mm.submit(&order(tags, Side::Buy, 95, 1, 0)).unwrap();
    let aggressive = mm.submit(&order(tags, Side::Buy, 101, 1, 0)).unwrap();
    wait_answer(&mut mm, |a| *a == Answer::Accepted { id: aggressive });
    // "Orders not canceling": the venue ignores every cancel from now on.
    sim.set_ignore_cancels(true);
    drop(mm);
    let hooks = &mut WithComponents(vec![
        Box::new(Service {
            name: "monitoring",
            order: StopOrder::Monitoring,
            ignores_stop: false,
            asked: false,
        }),
        Box::new(Service {
            name: "market-data",
            order: StopOrder::MarketData,
            ignores_stop: true,
            asked: false,
        }),
    ]);
    let plan = ShutdownPlan {
        keep_passive: true,
        order_wait: Duration::from_millis(300),
        component_timeout: Duration::from_millis(200),
        ..ShutdownPlan::default()
    };
    let report = rt.planned_shutdown(plan, hooks);
    assert_eq!(report.kept_passive, vec![passive]);
    assert_eq!(report.cancelled, vec![aggressive]);
    assert_eq!(report.stragglers, vec![aggressive]);
    assert_eq!(report.forced_cancel_local, vec![aggressive]);
    assert_eq!(
        rt.order(aggressive).unwrap().state,
        OrderState::CancelUnknown
    );
    assert!(rt.order(passive).unwrap().state.is_open());
    let names: Vec<(&str, bool)> = report
        .components
        .iter()
        .map(|c| (c.name.as_str(), c.graceful))
        .collect();
    assert_eq!(names, [("market-data", false), ("monitoring", true)]);
    assert_ne!(report.outcome & words::OUTCOME_STRAGGLERS, 0);
    assert_ne!(report.outcome & words::OUTCOME_FORCED, 0);
    assert!(!report.is_clean());
}

#[test]
fn reduce_only_counts_open_reducing_orders_so_several_never_flip_a_position() {
    let dir = shm();
    let (venue, sim) = SimVenue::new(quiet());
    let rt = Runtime::builder(dir.path(), "noflip")
        .venue("SIM", venue)
        .start()
        .unwrap();
    let mut mm = rt.strategy("mm").unwrap();
    let tags = mm.tags("SIM", "BTC/USD", "desk-1").unwrap();
    go_long(&mut mm, &sim, tags, 5);
    rt.operator()
        .trip_global(Mode::ReduceOnly, Source::Api, "wind down");
    // Nothing to trade against: the sells rest. 3 + 3 would flip a long 5.
    let first = mm.submit(&order(tags, Side::Sell, 110, 3, 5)).unwrap();
    wait_answer(&mut mm, |a| *a == Answer::Accepted { id: first });
    let second = mm.submit(&order(tags, Side::Sell, 110, 3, 5)).unwrap();
    let a = wait_answer(&mut mm, |a| a.id() == second);
    assert!(
        matches!(
            a,
            Answer::Refused {
                why: Refusal::Recheck(_),
                ..
            }
        ),
        "{a:?}"
    );
    let third = mm.submit(&order(tags, Side::Sell, 110, 2, 5)).unwrap();
    wait_answer(&mut mm, |a| *a == Answer::Accepted { id: third });
}

#[test]
fn a_locked_block_refuses_a_start_and_a_reconcile_mismatch_blocks_reset() {
    let dir = shm();
    let block = ControlBlock::create(dir.path(), "locked").unwrap();
    words::set_change_lock(&block, true);
    let (venue, _sim) = SimVenue::new(quiet());
    let err = Runtime::builder(dir.path(), "locked")
        .venue("SIM", venue)
        .start()
        .unwrap_err();
    assert!(err.message.contains("locked"), "{}", err.message);
    words::set_change_lock(&block, false);

    words::set_reconcile_mismatch(&block, true);
    let op = Operator::new(Arc::new(block));
    let t = op.trip_global(Mode::Kill, Source::Cli, "test");
    let refused = op
        .reset(&ResetRequest {
            source: Source::Cli,
            reason: "after the shutdown".into(),
            force: false,
            expected_generation: Some(t.transition.current().generation()),
        })
        .unwrap_err();
    assert!(refused.to_string().contains("reconcile --ack"), "{refused}");
    words::set_reconcile_mismatch(op.block(), false);
    op.reset(&ResetRequest {
        source: Source::Cli,
        reason: "acknowledged".into(),
        force: false,
        expected_generation: None,
    })
    .unwrap();
}
