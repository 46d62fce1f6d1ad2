use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::*;
use crate::control::{ControlBlock, ScopeKind};

fn block(name: &str) -> (tempfile::TempDir, Arc<ControlBlock>) {
    let d = tempfile::tempdir().unwrap();
    let b = Arc::new(ControlBlock::create(d.path(), name).unwrap());
    (d, b)
}

#[test]
fn a_fresh_block_shows_no_telemetry() {
    let (_d, b) = block("fresh");
    let t = TelemetrySnapshot::read(&b);
    assert_eq!(t, TelemetrySnapshot::default());
}

#[test]
fn published_rows_read_back_with_names() {
    let (_d, b) = block("rows");
    let mm = b.register_name(ScopeKind::Strategy, "mm_btc").unwrap();
    let sim = b.register_name(ScopeKind::Venue, "SIM-A").unwrap();
    let btc = b.register_name(ScopeKind::Instrument, "BTC/USD").unwrap();
    let acct = b.register_name(ScopeKind::Account, "desk1").unwrap();
    let mut w = TelemetryWriter::new(b.clone());
    w.set_engine_status(EngineStatus::Running);
    w.publish_strategy(
        mm,
        &StrategyFigures {
            status: Some(StrategyStatus::Running),
            last_signal_wall_ns: 42,
            open_orders: 7,
            orders_sent: 10,
            orders_acked: 8,
            orders_rejected: 2,
            fills: 1,
        },
    );
    w.publish_venue(
        sim,
        &VenueFigures {
            order_entry: ConnState::Up,
            market_data: ConnState::None,
            state: VenueState::Trading,
            last_heartbeat_wall_ns: 99,
            open_orders: 7,
            orders_sent: 10,
            orders_acked: 8,
            orders_rejected: 2,
            fills: 1,
        },
    );
    w.publish_positions(&[PositionFigures {
        venue: sim,
        instrument: btc,
        account: acct,
        qty: -5,
        mark_price: 100,
        pnl: -3,
    }]);
    w.publish_engine(&EngineFigures {
        open_orders: 7,
        positions_open: 1,
        orders_sent: 10,
        orders_acked: 8,
        orders_rejected: 2,
        fills: 1,
        pnl: -3,
        flatten_slippage: 0,
    });
    let t = TelemetrySnapshot::read(&b);
    let e = t.engine.unwrap();
    assert_eq!(e.status, EngineStatus::Running);
    assert_eq!(e.open_orders, 7);
    assert_eq!(e.active_strategies, 1);
    assert_eq!(e.reject_rate_ppm, 200_000);
    assert_eq!(e.pnl, -3);
    assert_eq!(e.pnl_peak, -3);
    assert!(e.open_orders_nonzero_since_wall_ns > 0);
    assert_eq!(t.strategies.len(), 1);
    assert_eq!(t.strategies[0].name, "mm_btc");
    assert_eq!(t.strategies[0].status, StrategyStatus::Running);
    assert_eq!(t.venues[0].name, "SIM-A");
    assert_eq!(t.venues[0].order_entry, ConnState::Up);
    assert_eq!(t.venues[0].reject_rate_ppm, 200_000);
    assert_eq!(t.positions[0].instrument, "BTC/USD");
    assert_eq!(t.positions[0].figures.qty, -5);
    assert!(t.announcement.is_none());

    // Orders gone: the "above zero since" clock stops.
    w.publish_engine(&EngineFigures::default());
    let e = TelemetrySnapshot::read(&b).engine.unwrap();
    assert_eq!(e.open_orders_nonzero_since_wall_ns, 0);
    assert_eq!(e.pnl_peak, 0, "the peak follows the P&L up");
}

#[test]
fn announcement_sets_shutting_down_soon_and_can_be_withdrawn() {
    let (_d, b) = block("announce");
    let mut w = TelemetryWriter::new(b.clone());
    w.set_engine_status(EngineStatus::Running);
    w.announce_shutdown(1_800_000_000_000_000_000, "end of day maintenance");
    let t = TelemetrySnapshot::read(&b);
    assert_eq!(t.engine.unwrap().status, EngineStatus::ShuttingDownSoon);
    let a = t.announcement.unwrap();
    assert_eq!(a.reason, "end of day maintenance");
    assert_eq!(a.shutdown_at_wall_ns, 1_800_000_000_000_000_000);
    w.clear_announcement();
    assert!(TelemetrySnapshot::read(&b).announcement.is_none());
}

#[test]
fn rows_past_the_tables_are_ignored_or_counted() {
    let (_d, b) = block("bounds");
    let mut w = TelemetryWriter::new(b.clone());
    w.publish_strategy(u16::MAX, &StrategyFigures::default());
    w.publish_venue(64, &VenueFigures::default());
    let rows = vec![PositionFigures::default(); TELEMETRY_POSITIONS + 5];
    w.publish_positions(&rows);
    let t = TelemetrySnapshot::read(&b);
    assert!(t.strategies.is_empty() && t.venues.is_empty());
    assert_eq!(t.positions.len(), TELEMETRY_POSITIONS);
    assert_eq!(t.positions_overflow, 5);
}

/// A writer publishes rows whose every field holds the same counter while
/// readers copy them: a reader must never keep a row mixing two
/// publications. Counts torn rows and requires zero.
#[test]
fn readers_never_keep_a_torn_row() {
    let (_d, b) = block("torn");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (b, stop) = (b.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut w = TelemetryWriter::new(b);
            let mut n = 1u64;
            while !stop.load(Ordering::Relaxed) {
                w.publish_strategy(
                    3,
                    &StrategyFigures {
                        status: Some(StrategyStatus::Running),
                        last_signal_wall_ns: n,
                        open_orders: n,
                        orders_sent: n,
                        orders_acked: n,
                        orders_rejected: n,
                        fills: n,
                    },
                );
                let rows: Vec<PositionFigures> = (0..40)
                    .map(|_| PositionFigures {
                        qty: n as i64,
                        mark_price: n as i64,
                        pnl: n as i64,
                        ..PositionFigures::default()
                    })
                    .collect();
                w.publish_positions(&rows);
                n += 1;
            }
            n
        })
    };
    let mut torn = 0u64;
    let mut seen = 0u64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(300);
    while std::time::Instant::now() < deadline {
        let t = TelemetrySnapshot::read(&b);
        for s in &t.strategies {
            seen += 1;
            let n = s.last_signal_wall_ns;
            if [
                s.open_orders,
                s.orders_sent,
                s.orders_acked,
                s.orders_rejected,
                s.fills,
            ]
            .iter()
            .any(|&v| v != n)
            {
                torn += 1;
            }
        }
        if let Some(first) = t.positions.first() {
            seen += 1;
            let n = first.figures.qty;
            if t.positions.len() != 40
                || t.positions
                    .iter()
                    .any(|p| p.figures.qty != n || p.figures.mark_price != n || p.figures.pnl != n)
            {
                torn += 1;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let published = writer.join().unwrap();
    assert!(
        published > 1 && seen > 0,
        "published {published}, read {seen}"
    );
    assert_eq!(torn, 0, "{torn} torn rows of {seen} read");
}
