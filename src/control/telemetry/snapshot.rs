//! The reading side of the telemetry region: a [`TelemetrySnapshot`] of
//! plain data, rows read under their seqlocks, names resolved from the
//! block's name tables.

use std::sync::atomic::{AtomicU64, Ordering};

use super::super::audit::load_bytes;
use super::super::layout::{
    ANNOUNCE_REASON_BYTES, TELEMETRY_POSITIONS, TELEMETRY_STRATEGIES, TELEMETRY_VENUES,
};
use super::super::{ControlBlock, ScopeKind};
use super::*;

/// The engine-wide record as read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct EngineTelemetrySnapshot {
    /// Status.
    pub status: EngineStatus,
    /// Since when, Unix ns.
    pub status_since_wall_ns: u64,
    /// Publications so far (0: only the status was ever set).
    pub publish_count: u64,
    /// Last publication, Unix ns.
    pub publish_wall_ns: u64,
    /// Last publication, `CLOCK_MONOTONIC` ns (compare with `mono_ns()`).
    pub publish_mono_ns: u64,
    /// Open orders.
    pub open_orders: u64,
    /// Since when open orders have been above zero, Unix ns (0: none open).
    pub open_orders_nonzero_since_wall_ns: u64,
    /// Positions that are not flat.
    pub positions_open: u64,
    /// Strategies running.
    pub active_strategies: u64,
    /// New orders written.
    pub orders_sent: u64,
    /// Accepted.
    pub orders_acked: u64,
    /// Rejected.
    pub orders_rejected: u64,
    /// Fills.
    pub fills: u64,
    /// Reject rate over the window, ppm.
    pub reject_rate_ppm: u64,
    /// The window, ms.
    pub reject_window_ms: u64,
    /// P&L, units of 1/`PRICE_SCALE`.
    pub pnl: i64,
    /// Highest P&L this run.
    pub pnl_peak: i64,
    /// Flattening slippage (cost > 0).
    pub flatten_slippage: i64,
}

/// The shutdown announcement as read.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Announcement {
    /// When the shutdown starts, Unix ns.
    pub shutdown_at_wall_ns: u64,
    /// When it was announced, Unix ns.
    pub announced_wall_ns: u64,
    /// Why.
    pub reason: String,
}

/// One row of the strategies table.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct StrategyRow {
    /// Scope index.
    pub index: u16,
    /// Name (from the name table; `#<index>` if unregistered).
    pub name: String,
    /// Status.
    pub status: StrategyStatus,
    /// Last signal, Unix ns (0: none).
    pub last_signal_wall_ns: u64,
    /// Open orders.
    pub open_orders: u64,
    /// New orders written.
    pub orders_sent: u64,
    /// Accepted.
    pub orders_acked: u64,
    /// Rejected.
    pub orders_rejected: u64,
    /// Fills.
    pub fills: u64,
}

/// One row of the connections table.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct VenueRow {
    /// Scope index.
    pub index: u16,
    /// Name.
    pub name: String,
    /// Order-entry session.
    pub order_entry: ConnState,
    /// Market-data feed.
    pub market_data: ConnState,
    /// Our trading state there.
    pub state: VenueState,
    /// When the states last changed, Unix ns.
    pub state_since_wall_ns: u64,
    /// Last sign of life, Unix ns (0: none).
    pub last_heartbeat_wall_ns: u64,
    /// Open orders.
    pub open_orders: u64,
    /// New orders written.
    pub orders_sent: u64,
    /// Accepted.
    pub orders_acked: u64,
    /// Rejected.
    pub orders_rejected: u64,
    /// Fills.
    pub fills: u64,
    /// Reject rate over the engine's window, ppm.
    pub reject_rate_ppm: u64,
}

/// One row of the positions table, with names.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PositionRow {
    /// Venue name.
    pub venue: String,
    /// Instrument name.
    pub instrument: String,
    /// Account name.
    pub account: String,
    /// The indices and figures as published.
    pub figures: PositionFigures,
}

/// A consistent copy of the telemetry region (each row consistent in
/// itself; rows are published one by one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TelemetrySnapshot {
    /// The engine-wide record; `None` if the engine never published.
    pub engine: Option<EngineTelemetrySnapshot>,
    /// The planned shutdown's announcement, if one is in force.
    pub announcement: Option<Announcement>,
    /// Strategies table, by scope index.
    pub strategies: Vec<StrategyRow>,
    /// Connections table, by scope index.
    pub venues: Vec<VenueRow>,
    /// Positions table.
    pub positions: Vec<PositionRow>,
    /// Positions the engine had that the table could not hold.
    pub positions_overflow: u64,
}

impl TelemetrySnapshot {
    /// Reads the telemetry region of `block`.
    pub fn read(block: &ControlBlock) -> TelemetrySnapshot {
        let t = &block.layout().telemetry;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let e = &t.engine;
        let engine = read_row(&e.seq, || EngineTelemetrySnapshot {
            status: EngineStatus::from_u64(l(&e.status)),
            status_since_wall_ns: l(&e.status_since_wall_ns),
            publish_count: l(&e.publish_count),
            publish_wall_ns: l(&e.publish_wall_ns),
            publish_mono_ns: l(&e.publish_mono_ns),
            open_orders: l(&e.open_orders),
            open_orders_nonzero_since_wall_ns: l(&e.open_orders_nonzero_since_wall_ns),
            positions_open: l(&e.positions_open),
            active_strategies: l(&e.active_strategies),
            orders_sent: l(&e.orders_sent),
            orders_acked: l(&e.orders_acked),
            orders_rejected: l(&e.orders_rejected),
            fills: l(&e.fills),
            reject_rate_ppm: l(&e.reject_rate_ppm).min(1_000_000),
            reject_window_ms: l(&e.reject_window_ms),
            pnl: l(&e.pnl) as i64,
            pnl_peak: l(&e.pnl_peak) as i64,
            flatten_slippage: l(&e.flatten_slippage) as i64,
        });
        let a = &t.announcement;
        let announcement = read_row(&a.seq, || {
            let len = (l(&a.reason_len) as usize).min(ANNOUNCE_REASON_BYTES);
            let mut buf = [0u8; ANNOUNCE_REASON_BYTES];
            load_bytes(&a.reason, &mut buf);
            Announcement {
                shutdown_at_wall_ns: l(&a.shutdown_at_wall_ns),
                announced_wall_ns: l(&a.announced_wall_ns),
                reason: String::from_utf8_lossy(&buf[..len]).into_owned(),
            }
        })
        .filter(|a| a.shutdown_at_wall_ns != 0);
        let strategies = t
            .strategies
            .iter()
            .enumerate()
            .take(TELEMETRY_STRATEGIES)
            .filter_map(|(i, s)| {
                read_row(&s.seq, || StrategyRow {
                    index: i as u16,
                    name: String::new(),
                    status: StrategyStatus::from_u64(l(&s.status)),
                    last_signal_wall_ns: l(&s.last_signal_wall_ns),
                    open_orders: l(&s.open_orders),
                    orders_sent: l(&s.orders_sent),
                    orders_acked: l(&s.orders_acked),
                    orders_rejected: l(&s.orders_rejected),
                    fills: l(&s.fills),
                })
            })
            .map(|mut r| {
                r.name = block.scope_label(ScopeKind::Strategy, r.index);
                r
            })
            .collect();
        let venues = t
            .venues
            .iter()
            .enumerate()
            .take(TELEMETRY_VENUES)
            .filter_map(|(i, v)| {
                read_row(&v.seq, || {
                    let s = l(&v.states);
                    VenueRow {
                        index: i as u16,
                        name: String::new(),
                        order_entry: ConnState::from_u8(s as u8),
                        market_data: ConnState::from_u8((s >> 8) as u8),
                        state: VenueState::from_u8((s >> 16) as u8),
                        state_since_wall_ns: l(&v.state_since_wall_ns),
                        last_heartbeat_wall_ns: l(&v.last_heartbeat_wall_ns),
                        open_orders: l(&v.open_orders),
                        orders_sent: l(&v.orders_sent),
                        orders_acked: l(&v.orders_acked),
                        orders_rejected: l(&v.orders_rejected),
                        fills: l(&v.fills),
                        reject_rate_ppm: l(&v.reject_rate_ppm).min(1_000_000),
                    }
                })
            })
            .map(|mut r| {
                r.name = block.scope_label(ScopeKind::Venue, r.index);
                r
            })
            .collect();
        let p = &t.positions;
        let (figures, overflow) = read_row(&p.seq, || {
            let n = (l(&p.count) as usize).min(TELEMETRY_POSITIONS);
            let rows: Vec<PositionFigures> = p.rows[..n]
                .iter()
                .map(|r| {
                    let key = l(&r.key);
                    PositionFigures {
                        venue: key as u16,
                        instrument: (key >> 16) as u16,
                        account: (key >> 32) as u16,
                        qty: l(&r.qty) as i64,
                        mark_price: l(&r.mark_price) as i64,
                        pnl: l(&r.pnl) as i64,
                    }
                })
                .collect();
            (rows, l(&p.overflow))
        })
        .unwrap_or_default();
        let positions = figures
            .into_iter()
            .map(|f| PositionRow {
                venue: block.scope_label(ScopeKind::Venue, f.venue),
                instrument: block.scope_label(ScopeKind::Instrument, f.instrument),
                account: block.scope_label(ScopeKind::Account, f.account),
                figures: f,
            })
            .collect();
        TelemetrySnapshot {
            engine,
            announcement,
            strategies,
            venues,
            positions,
            positions_overflow: overflow,
        }
    }
}
