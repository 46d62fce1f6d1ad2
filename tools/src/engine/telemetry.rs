//! The reference engine's telemetry: what its main loop publishes into the
//! control block's telemetry region ([`killswitch::control::telemetry`])
//! for `killswitch status`, `serve` and `watch`.
//!
//! One call per loop turn (`Publisher::publish`); it publishes at most
//! every [`PUBLISH_INTERVAL`] and reads only what the engine already keeps:
//! the registry's activity counters (one short lock), the journal's
//! positions and cash (one short lock), the strategies' progress atomics
//! and the simulated venues' fault settings. Nothing here is on the order
//! path.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use killswitch::clock::wall_ns;
use killswitch::control::telemetry::{
    ConnState, EngineFigures, EngineStatus, PositionFigures, StrategyFigures, StrategyStatus,
    TelemetryWriter, VenueFigures, VenueState,
};
use killswitch::control::{Mode, ScopeKind};
use killswitch::order::QTY_SCALE;
use killswitch::runtime::Monitor;

use super::{strategy, EngineConfig, EngineReport, Sim, StrategyProgress, StrategyStats};

/// What the engine holds that the telemetry reads, borrowed for one call
/// (the runtime itself is read through the [`Monitor`]).
pub(super) struct View<'a> {
    pub cfg: &'a EngineConfig,
    pub progress: &'a [Arc<StrategyProgress>],
    pub strategies: &'a [std::thread::JoinHandle<StrategyStats>],
    pub sims: &'a [Sim],
    pub wires: &'a [super::wire::Wire],
    /// The engine is stopping its strategies (a finished one is stopped,
    /// not failed).
    pub stopping: bool,
}

/// How often the loop's call actually publishes.
pub const PUBLISH_INTERVAL: Duration = Duration::from_millis(50);

/// Publishes the reference engine's telemetry.
pub struct Publisher {
    writer: TelemetryWriter,
    monitor: Monitor,
    last: Option<Instant>,
    /// Per strategy: (signals counted at the last change, when it changed).
    signals: Vec<(u64, u64)>,
    started: Instant,
    /// The rows last published, to mark them stopped / closed at the end.
    strategy_rows: Vec<(u16, StrategyFigures)>,
    venue_rows: Vec<(u16, VenueFigures)>,
    engine_figures: EngineFigures,
}

impl Publisher {
    /// A publisher for an engine with `strategies` strategies, started at
    /// `started`; sets the status (`STARTING` until the first publication
    /// says more).
    pub fn new(monitor: Monitor, strategies: usize, started: Instant) -> Publisher {
        let mut writer = monitor.telemetry_writer();
        writer.set_engine_status(EngineStatus::Starting);
        Publisher {
            writer,
            monitor,
            last: None,
            signals: vec![(0, 0); strategies],
            started,
            strategy_rows: Vec::new(),
            venue_rows: Vec::new(),
            engine_figures: EngineFigures::default(),
        }
    }

    /// Called once per loop turn: publishes when the interval has passed.
    /// `armed`: the engine trades (not latched from an earlier run);
    /// `draining`: a global KILL is being drained.
    pub(super) fn publish(&mut self, engine: &View<'_>, armed: bool, draining: bool) {
        if self.last.is_some_and(|t| t.elapsed() < PUBLISH_INTERVAL) {
            return;
        }
        self.publish_now(engine, armed, draining);
    }

    /// Publishes now, whatever the interval: the last figures before the
    /// engine stops.
    pub(super) fn publish_now(&mut self, engine: &View<'_>, armed: bool, draining: bool) {
        self.last = Some(Instant::now());
        let now = wall_ns();
        let block = self.monitor.block();
        let word = block.state();
        let global = word.mode();
        let status = match (armed, draining) {
            (_, true) => EngineStatus::Draining,
            (false, _) => EngineStatus::Latched,
            (true, false) => EngineStatus::Running,
        };
        // A planned shutdown (a later writer) owns its statuses.
        if !matches!(
            self.writer.engine_status(),
            EngineStatus::ShuttingDownSoon | EngineStatus::ShuttingDown
        ) {
            self.writer.set_engine_status(status);
        }

        let (venues, strategies) = self.monitor.activity();
        let level = |kind, i: u16| {
            if word.scoped() {
                block.scope_level(kind, i).max(global)
            } else {
                global
            }
        };
        self.strategy_rows.clear();
        self.venue_rows.clear();
        for (n, (s, handle)) in engine
            .cfg
            .strategies
            .iter()
            .zip(engine.strategies)
            .enumerate()
        {
            let Some(index) = block.lookup_name(ScopeKind::Strategy, &s.name) else {
                continue;
            };
            let p = &engine.progress[n];
            let count = p.signals.load(Ordering::Relaxed);
            if count != self.signals[n].0 {
                self.signals[n] = (count, now);
            }
            let a = strategies.get(index as usize).copied().unwrap_or_default();
            let status = if handle.is_finished() {
                if engine.stopping {
                    StrategyStatus::Stopped
                } else {
                    StrategyStatus::Failed
                }
            } else if level(ScopeKind::Strategy, index) >= Mode::HaltNew {
                StrategyStatus::Halted
            } else {
                StrategyStatus::Running
            };
            let row = StrategyFigures {
                status: Some(status),
                last_signal_wall_ns: self.signals[n].1,
                open_orders: a.open,
                orders_sent: a.sent,
                orders_acked: a.acked,
                orders_rejected: a.rejected,
                fills: a.fills,
            };
            self.writer.publish_strategy(index, &row);
            self.strategy_rows.push((index, row));
        }

        let elapsed = self.started.elapsed();
        for sim in engine.sims {
            let Some(index) = block.lookup_name(ScopeKind::Venue, &sim.name) else {
                continue;
            };
            let a = venues.get(index as usize).copied().unwrap_or_default();
            let down = sim.disconnect_after.is_some_and(|d| elapsed >= d);
            let hung = sim.hang_after.is_some_and(|d| elapsed >= d);
            let state = if hung {
                VenueState::Failed
            } else if draining {
                VenueState::Draining
            } else if level(ScopeKind::Venue, index) >= Mode::HaltNew {
                VenueState::Halted
            } else {
                VenueState::Trading
            };
            let row = VenueFigures {
                order_entry: if down { ConnState::Down } else { ConnState::Up },
                // The simulated venues run in the engine's process and
                // the reference strategies quote around a fixed mid:
                // there is no market-data feed to show.
                market_data: ConnState::None,
                state,
                // In-process: "alive" is the engine seeing the session
                // up at this publication.
                last_heartbeat_wall_ns: if down { 0 } else { now },
                open_orders: a.open,
                orders_sent: a.sent,
                orders_acked: a.acked,
                orders_rejected: a.rejected,
                fills: a.fills,
            };
            self.writer.publish_venue(index, &row);
            self.venue_rows.push((index, row));
        }
        for w in engine.wires {
            let Some(index) = block.lookup_name(ScopeKind::Venue, &w.name) else {
                continue;
            };
            let a = venues.get(index as usize).copied().unwrap_or_default();
            let order_entry = w.order_entry();
            let state = if order_entry == ConnState::Closed {
                VenueState::Closed
            } else if order_entry != ConnState::Up {
                VenueState::Failed
            } else if draining {
                VenueState::Draining
            } else if level(ScopeKind::Venue, index) >= Mode::HaltNew {
                VenueState::Halted
            } else {
                VenueState::Trading
            };
            let row = VenueFigures {
                order_entry,
                // Top of book arrives on the order-entry session (one FIX
                // session per venue): it is up when that session is and
                // snapshots came.
                market_data: w.market_data(),
                state,
                // The last bytes the venue sent: its heartbeats at the
                // least, every HeartBtInt.
                last_heartbeat_wall_ns: w.last_heard_wall_ns(),
                open_orders: a.open,
                orders_sent: a.sent,
                orders_acked: a.acked,
                orders_rejected: a.rejected,
                fills: a.fills,
            };
            self.writer.publish_venue(index, &row);
            self.venue_rows.push((index, row));
        }

        // Positions and P&L from the journal's mirror (fills' cash flows),
        // marked at the simulated venues' reference mid.
        let mark = strategy::MID.0;
        let positions: Vec<PositionFigures> = self
            .monitor
            .journal_positions()
            .into_iter()
            .filter(|(_, p)| p.qty.0 != 0 || p.cash != 0)
            .map(|(k, p)| PositionFigures {
                venue: k.venue,
                instrument: k.instrument,
                account: k.account,
                qty: p.qty.0,
                mark_price: mark,
                pnl: ((p.cash + p.qty.0 as i128 * mark as i128) / QTY_SCALE as i128)
                    .clamp(i64::MIN as i128, i64::MAX as i128) as i64,
            })
            .collect();
        self.writer.publish_positions(&positions);
        let sum = |f: fn(&killswitch::registry::ScopeActivity) -> u64| venues.iter().map(f).sum();
        self.engine_figures = EngineFigures {
            open_orders: self.monitor.open_orders() as u64,
            positions_open: positions.iter().filter(|p| p.qty != 0).count() as u64,
            orders_sent: sum(|a| a.sent),
            orders_acked: sum(|a| a.acked),
            orders_rejected: sum(|a| a.rejected),
            fills: sum(|a| a.fills),
            pnl: positions
                .iter()
                .map(|p| p.pnl)
                .fold(0i64, i64::saturating_add),
            flatten_slippage: 0,
        };
        self.writer.publish_engine(&self.engine_figures);
    }

    /// The engine has stopped: `OFFLINE` when it exits 0, else `FAILED`.
    pub(super) fn finished(&mut self, report: &EngineReport) {
        for (index, mut row) in std::mem::take(&mut self.strategy_rows) {
            if row.status != Some(StrategyStatus::Failed) {
                row.status = Some(StrategyStatus::Stopped);
            }
            self.writer.publish_strategy(index, &row);
        }
        for (index, mut row) in std::mem::take(&mut self.venue_rows) {
            row.order_entry = ConnState::Closed;
            row.state = VenueState::Closed;
            self.writer.publish_venue(index, &row);
        }
        // Recounts the active strategies (none now).
        self.writer.publish_engine(&self.engine_figures);
        self.writer.set_engine_status(if report.exit_code == 0 {
            EngineStatus::Offline
        } else {
            EngineStatus::Failed
        });
    }
}
