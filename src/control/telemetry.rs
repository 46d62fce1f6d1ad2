//! Engine telemetry: what only the engine knows (its status, open orders
//! per strategy and venue, positions, P&L, reject rate, the strategies and
//! connections tables, a planned shutdown's announcement), published into
//! the control block so that `killswitch status`, `killswitch serve`
//! (`/api/status`, `/metrics`) and `killswitch watch` can show it from
//! another process, even while the engine is stopped or gone.
//!
//! * The engine's **supervisor thread** holds the one [`TelemetryWriter`]
//!   and calls it a few times a second with figures it already has; the
//!   order path never touches the region (it costs the gate nothing).
//! * Readers take a [`TelemetrySnapshot`]: plain data, `serde` behind the
//!   `serde` feature, names resolved from the block's name tables.
//!
//! Who writes what (the API is meant to stay put as more writers arrive):
//! the engine status and the announcement
//! ([`TelemetryWriter::set_engine_status`], [`TelemetryWriter::announce_shutdown`]),
//! the engine-wide figures ([`TelemetryWriter::publish_engine`]), one row
//! per strategy and per venue by scope index
//! ([`TelemetryWriter::publish_strategy`], [`TelemetryWriter::publish_venue`])
//! and the positions table ([`TelemetryWriter::publish_positions`]).
//!
//! # Invariants
//! * One writer per block (the engine's supervisor): rows are written
//!   under per-row seqlocks (`seq` odd while a row is written, even when
//!   complete, as in the audit ring), so a reader never keeps a torn row;
//!   two writers on one row would garble it (readers range-check every
//!   field, so never undefined behaviour or a panic).
//! * A row whose `seq` is 0 was never published and is not shown.
//! * Readers never block the writer: they retry a row that changed under
//!   them a bounded number of times and then skip it.

use std::collections::VecDeque;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Arc;

use super::audit::{load_bytes, store_bytes, truncate_utf8};
use super::layout::{
    AnnouncementSlot, EngineTelemetry, StrategySlot, ANNOUNCE_REASON_BYTES, TELEMETRY_POSITIONS,
    TELEMETRY_STRATEGIES, TELEMETRY_VENUES,
};
use super::{ControlBlock, ScopeKind};
use crate::clock::{mono_ns, wall_ns};

/// What the engine as a whole is doing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "SCREAMING_SNAKE_CASE"))]
#[repr(u8)]
pub enum EngineStatus {
    /// Never published (or a value this build does not know).
    #[default]
    Unknown = 0,
    /// Starting up (journal recovery, venues, recovery drain).
    Starting = 1,
    /// Trading.
    Running = 2,
    /// Started into a latched KILL: up, but not trading until a reset.
    Latched = 3,
    /// A planned shutdown is announced (see the announcement).
    ShuttingDownSoon = 4,
    /// A planned shutdown is running.
    ShuttingDown = 5,
    /// A KILL is being drained (emergency).
    Draining = 6,
    /// Stopped cleanly.
    Offline = 7,
    /// Stopped on a failure (drain failed, drain thread died, …).
    Failed = 8,
}

impl EngineStatus {
    /// Decodes a stored value; unknown values read as `Unknown`.
    pub fn from_u64(v: u64) -> EngineStatus {
        match v {
            1 => EngineStatus::Starting,
            2 => EngineStatus::Running,
            3 => EngineStatus::Latched,
            4 => EngineStatus::ShuttingDownSoon,
            5 => EngineStatus::ShuttingDown,
            6 => EngineStatus::Draining,
            7 => EngineStatus::Offline,
            8 => EngineStatus::Failed,
            _ => EngineStatus::Unknown,
        }
    }

    /// Every status, for metric label sets.
    pub const ALL: [EngineStatus; 9] = [
        EngineStatus::Unknown,
        EngineStatus::Starting,
        EngineStatus::Running,
        EngineStatus::Latched,
        EngineStatus::ShuttingDownSoon,
        EngineStatus::ShuttingDown,
        EngineStatus::Draining,
        EngineStatus::Offline,
        EngineStatus::Failed,
    ];

    /// The runbook's spelling (`SHUTTING_DOWN`).
    pub fn as_str(self) -> &'static str {
        match self {
            EngineStatus::Unknown => "UNKNOWN",
            EngineStatus::Starting => "STARTING",
            EngineStatus::Running => "RUNNING",
            EngineStatus::Latched => "LATCHED",
            EngineStatus::ShuttingDownSoon => "SHUTTING_DOWN_SOON",
            EngineStatus::ShuttingDown => "SHUTTING_DOWN",
            EngineStatus::Draining => "DRAINING",
            EngineStatus::Offline => "OFFLINE",
            EngineStatus::Failed => "FAILED",
        }
    }

    /// True while a shutdown or a drain is under way: the dashboard's
    /// "SHUTDOWN IN PROGRESS" view, and the open-orders alert's window.
    pub fn is_shutting_down(self) -> bool {
        matches!(self, EngineStatus::ShuttingDown | EngineStatus::Draining)
    }
}

/// A strategy's status, as the strategies table shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
#[repr(u8)]
pub enum StrategyStatus {
    /// Never published.
    Unknown = 0,
    /// Sending orders.
    Running = 1,
    /// The gate refuses its orders (switch tripped for it).
    Halted = 2,
    /// Disabled on purpose (planned shutdown, operator).
    Disabled = 3,
    /// Its thread ended.
    Stopped = 4,
    /// Its thread failed (panicked).
    Failed = 5,
}

impl StrategyStatus {
    /// Decodes a stored value.
    pub fn from_u64(v: u64) -> StrategyStatus {
        match v {
            1 => StrategyStatus::Running,
            2 => StrategyStatus::Halted,
            3 => StrategyStatus::Disabled,
            4 => StrategyStatus::Stopped,
            5 => StrategyStatus::Failed,
            _ => StrategyStatus::Unknown,
        }
    }

    /// Name used in tables and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyStatus::Unknown => "unknown",
            StrategyStatus::Running => "running",
            StrategyStatus::Halted => "halted",
            StrategyStatus::Disabled => "disabled",
            StrategyStatus::Stopped => "stopped",
            StrategyStatus::Failed => "failed",
        }
    }
}

/// State of one connection (order entry or market data) to a venue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
#[repr(u8)]
pub enum ConnState {
    /// Not published.
    Unknown = 0,
    /// This venue has no such connection (e.g. no market data feed).
    None = 1,
    /// Connecting or logging on.
    Connecting = 2,
    /// Up.
    Up = 3,
    /// Closing (logout sent, draining).
    Closing = 4,
    /// Closed on purpose.
    Closed = 5,
    /// Lost (dropped, heartbeats missed).
    Down = 6,
}

impl ConnState {
    /// Decodes a stored byte.
    pub fn from_u8(v: u8) -> ConnState {
        match v {
            1 => ConnState::None,
            2 => ConnState::Connecting,
            3 => ConnState::Up,
            4 => ConnState::Closing,
            5 => ConnState::Closed,
            6 => ConnState::Down,
            _ => ConnState::Unknown,
        }
    }

    /// Name used in tables and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnState::Unknown => "unknown",
            ConnState::None => "none",
            ConnState::Connecting => "connecting",
            ConnState::Up => "up",
            ConnState::Closing => "closing",
            ConnState::Closed => "closed",
            ConnState::Down => "down",
        }
    }
}

/// Our trading state at a venue (the connections table's "state").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
#[repr(u8)]
pub enum VenueState {
    /// Not published.
    Unknown = 0,
    /// Trading.
    Trading = 1,
    /// The switch stops new orders here.
    Halted = 2,
    /// Cancelling our orders here (drain, shutdown).
    Draining = 3,
    /// Done with this venue (logged out).
    Closed = 4,
    /// The session is broken (a write hangs, the link dropped).
    Failed = 5,
}

impl VenueState {
    /// Decodes a stored byte.
    pub fn from_u8(v: u8) -> VenueState {
        match v {
            1 => VenueState::Trading,
            2 => VenueState::Halted,
            3 => VenueState::Draining,
            4 => VenueState::Closed,
            5 => VenueState::Failed,
            _ => VenueState::Unknown,
        }
    }

    /// Name used in tables and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            VenueState::Unknown => "unknown",
            VenueState::Trading => "trading",
            VenueState::Halted => "halted",
            VenueState::Draining => "draining",
            VenueState::Closed => "closed",
            VenueState::Failed => "failed",
        }
    }
}

/// Engine-wide figures for [`TelemetryWriter::publish_engine`]. Money in
/// units of 1/`PRICE_SCALE`; counters cumulative since the engine started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineFigures {
    /// Open orders, all venues.
    pub open_orders: u64,
    /// Positions that are not flat.
    pub positions_open: u64,
    /// New orders written to venues.
    pub orders_sent: u64,
    /// Accepted by a venue.
    pub orders_acked: u64,
    /// Rejected (by a venue, or a write that failed).
    pub orders_rejected: u64,
    /// Fills.
    pub fills: u64,
    /// P&L at the engine's marks.
    pub pnl: i64,
    /// Slippage of the flattening so far against the mid at its start
    /// (a cost is positive); 0 when not flattening.
    pub flatten_slippage: i64,
}

/// One strategy's row for [`TelemetryWriter::publish_strategy`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StrategyFigures {
    /// Status.
    pub status: Option<StrategyStatus>,
    /// Last trading signal (order decision), Unix ns; 0 = none yet.
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

/// One venue's row for [`TelemetryWriter::publish_venue`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VenueFigures {
    /// Order-entry session.
    pub order_entry: ConnState,
    /// Market-data feed.
    pub market_data: ConnState,
    /// Our trading state there.
    pub state: VenueState,
    /// Last sign of life of the session, Unix ns; 0 = none.
    pub last_heartbeat_wall_ns: u64,
    /// Open orders there.
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

impl Default for VenueFigures {
    fn default() -> Self {
        VenueFigures {
            order_entry: ConnState::Unknown,
            market_data: ConnState::Unknown,
            state: VenueState::Unknown,
            last_heartbeat_wall_ns: 0,
            open_orders: 0,
            orders_sent: 0,
            orders_acked: 0,
            orders_rejected: 0,
            fills: 0,
        }
    }
}

/// One row of the positions table for [`TelemetryWriter::publish_positions`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PositionFigures {
    /// Venue scope index.
    pub venue: u16,
    /// Instrument scope index.
    pub instrument: u16,
    /// Account scope index.
    pub account: u16,
    /// Signed quantity, units of 1/`QTY_SCALE`.
    pub qty: i64,
    /// Mark price, units of 1/`PRICE_SCALE`.
    pub mark_price: i64,
    /// P&L at the mark, units of 1/`PRICE_SCALE`.
    pub pnl: i64,
}

/// Default window of the published reject rate.
pub const REJECT_WINDOW_MS: u64 = 60_000;

/// Writes the telemetry region. Held by the engine's supervisor thread
/// (one per block); each call is a handful of atomic stores.
#[must_use = "the writer publishes nothing until its methods are called"]
pub struct TelemetryWriter {
    block: Arc<ControlBlock>,
    status: EngineStatus,
    pnl_peak: Option<i64>,
    nonzero_since: u64,
    /// (mono ns, accepted, rejected) samples for the engine's window.
    samples: VecDeque<(u64, u64, u64)>,
    /// The same per venue.
    venue_samples: Vec<VecDeque<(u64, u64, u64)>>,
    venue_states: Vec<u64>,
    window_ns: u64,
}

impl std::fmt::Debug for TelemetryWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryWriter")
            .field("block", &self.block.path())
            .field("status", &self.status)
            .finish()
    }
}

/// Seqlock write of one row: `seq` odd, the stores, `seq` even.
fn write_row(seq: &AtomicU64, fill: impl FnOnce()) {
    let s = seq.load(Ordering::Relaxed);
    let odd = if s % 2 == 0 { s + 1 } else { s + 2 };
    seq.store(odd, Ordering::Relaxed);
    // Orders the odd `seq` before the field stores, for readers.
    fence(Ordering::Release);
    fill();
    seq.store(odd + 1, Ordering::Release);
}

/// Seqlock read of one row: `None` when never written or when it kept
/// changing under the reader.
fn read_row<T>(seq: &AtomicU64, read: impl Fn() -> T) -> Option<T> {
    for _ in 0..64 {
        let s1 = seq.load(Ordering::Acquire);
        if s1 == 0 {
            return None;
        }
        if s1 % 2 == 1 {
            std::hint::spin_loop();
            continue;
        }
        let v = read();
        // Orders the field loads before the re-check of `seq`.
        fence(Ordering::Acquire);
        if seq.load(Ordering::Relaxed) == s1 {
            return Some(v);
        }
    }
    None
}

fn rate_ppm(samples: &VecDeque<(u64, u64, u64)>, acked: u64, rejected: u64) -> u64 {
    let (_, a0, r0) = samples.front().copied().unwrap_or((0, 0, 0));
    let (a, r) = (acked.saturating_sub(a0), rejected.saturating_sub(r0));
    r.saturating_mul(1_000_000).checked_div(a + r).unwrap_or(0)
}

fn push_sample(samples: &mut VecDeque<(u64, u64, u64)>, now: u64, window: u64, a: u64, r: u64) {
    // Keep the newest sample at or before the window's start as the base,
    // so the rate covers the whole window once it has filled.
    while samples.len() >= 2 && now.saturating_sub(samples[1].0) >= window {
        samples.pop_front();
    }
    if samples
        .back()
        .is_none_or(|s| now.saturating_sub(s.0) >= window / 64)
    {
        samples.push_back((now, a, r));
    }
}

impl TelemetryWriter {
    /// A writer for `block`. Only one per block: the engine's supervisor.
    pub fn new(block: Arc<ControlBlock>) -> TelemetryWriter {
        TelemetryWriter {
            block,
            status: EngineStatus::Unknown,
            pnl_peak: None,
            nonzero_since: 0,
            // The counters start at zero with the engine: the first window's base.
            samples: VecDeque::from([(mono_ns(), 0, 0)]),
            venue_samples: Vec::new(),
            venue_states: Vec::new(),
            window_ns: REJECT_WINDOW_MS * 1_000_000,
        }
    }

    /// Sets the window over which reject rates are published (default 60 s).
    pub fn with_reject_window(mut self, window: std::time::Duration) -> TelemetryWriter {
        self.window_ns = (window.as_nanos() as u64).max(1_000_000);
        self
    }

    fn engine(&self) -> &EngineTelemetry {
        &self.block.layout().telemetry.engine
    }

    /// The status last set by this writer.
    pub fn engine_status(&self) -> EngineStatus {
        self.status
    }

    /// Sets the engine status; the "since" time changes only when the
    /// status does.
    pub fn set_engine_status(&mut self, status: EngineStatus) {
        if status == self.status {
            return;
        }
        self.status = status;
        let e = self.engine();
        write_row(&e.seq, || {
            e.status.store(status as u64, Ordering::Relaxed);
            e.status_since_wall_ns.store(wall_ns(), Ordering::Relaxed);
        });
    }

    /// Announces a planned shutdown at `shutdown_at_wall_ns` (Unix ns) for
    /// `reason` (kept up to 128 bytes) and sets the status
    /// `SHUTTING_DOWN_SOON`.
    pub fn announce_shutdown(&mut self, shutdown_at_wall_ns: u64, reason: &str) {
        let a = &self.block.layout().telemetry.announcement;
        write_announcement(a, shutdown_at_wall_ns, wall_ns(), reason);
        self.set_engine_status(EngineStatus::ShuttingDownSoon);
    }

    /// Withdraws the announcement (a cancelled shutdown); the status is
    /// the caller's to set.
    pub fn clear_announcement(&mut self) {
        let a = &self.block.layout().telemetry.announcement;
        write_announcement(a, 0, 0, "");
    }

    /// Publishes the engine-wide figures. Also derives the reject rate over
    /// the window, the P&L peak and since when open orders are above zero.
    pub fn publish_engine(&mut self, f: &EngineFigures) {
        let (now_mono, now_wall) = (mono_ns(), wall_ns());
        push_sample(
            &mut self.samples,
            now_mono,
            self.window_ns,
            f.orders_acked,
            f.orders_rejected,
        );
        let rate = rate_ppm(&self.samples, f.orders_acked, f.orders_rejected);
        let peak = self.pnl_peak.map_or(f.pnl, |p| p.max(f.pnl));
        self.pnl_peak = Some(peak);
        if f.open_orders == 0 {
            self.nonzero_since = 0;
        } else if self.nonzero_since == 0 {
            self.nonzero_since = now_wall;
        }
        let e = self.engine();
        let active = self
            .block
            .layout()
            .telemetry
            .strategies
            .iter()
            .filter(|s| {
                s.seq.load(Ordering::Relaxed) != 0
                    && s.status.load(Ordering::Relaxed) == StrategyStatus::Running as u64
            })
            .count() as u64;
        let (since, window) = (self.nonzero_since, self.window_ns / 1_000_000);
        let count = e.publish_count.load(Ordering::Relaxed) + 1;
        write_row(&e.seq, || {
            let st = |a: &AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
            st(&e.publish_count, count);
            st(&e.publish_wall_ns, now_wall);
            st(&e.publish_mono_ns, now_mono);
            st(&e.open_orders, f.open_orders);
            st(&e.open_orders_nonzero_since_wall_ns, since);
            st(&e.positions_open, f.positions_open);
            st(&e.active_strategies, active);
            st(&e.orders_sent, f.orders_sent);
            st(&e.orders_acked, f.orders_acked);
            st(&e.orders_rejected, f.orders_rejected);
            st(&e.fills, f.fills);
            st(&e.reject_rate_ppm, rate);
            st(&e.reject_window_ms, window);
            st(&e.pnl, f.pnl as u64);
            st(&e.pnl_peak, peak as u64);
            st(&e.flatten_slippage, f.flatten_slippage as u64);
        });
    }

    /// Publishes the row of the strategy with scope index `index`
    /// (ignored past the table).
    pub fn publish_strategy(&mut self, index: u16, f: &StrategyFigures) {
        let Some(s) = self.block.layout().telemetry.strategies.get(index as usize) else {
            return;
        };
        write_strategy(s, f);
    }

    /// Publishes the row of the venue with scope index `index` (ignored
    /// past the table); derives its reject rate over the window.
    pub fn publish_venue(&mut self, index: u16, f: &VenueFigures) {
        let i = index as usize;
        let Some(v) = self.block.layout().telemetry.venues.get(i) else {
            return;
        };
        if self.venue_samples.len() <= i {
            let start = self.samples.front().map_or(0, |s| s.0);
            self.venue_samples
                .resize_with(i + 1, || VecDeque::from([(start, 0, 0)]));
            self.venue_states.resize(i + 1, u64::MAX);
        }
        let now = mono_ns();
        push_sample(
            &mut self.venue_samples[i],
            now,
            self.window_ns,
            f.orders_acked,
            f.orders_rejected,
        );
        let rate = rate_ppm(&self.venue_samples[i], f.orders_acked, f.orders_rejected);
        let states = f.order_entry as u64 | (f.market_data as u64) << 8 | (f.state as u64) << 16;
        let changed = self.venue_states[i] != states;
        self.venue_states[i] = states;
        let since = wall_ns();
        write_row(&v.seq, || {
            let st = |a: &AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
            st(&v.states, states);
            if changed {
                st(&v.state_since_wall_ns, since);
            }
            st(&v.last_heartbeat_wall_ns, f.last_heartbeat_wall_ns);
            st(&v.open_orders, f.open_orders);
            st(&v.orders_sent, f.orders_sent);
            st(&v.orders_acked, f.orders_acked);
            st(&v.orders_rejected, f.orders_rejected);
            st(&v.fills, f.fills);
            st(&v.reject_rate_ppm, rate);
        });
    }

    /// Replaces the positions table (rows past its 256 are counted as
    /// overflow, not shown).
    pub fn publish_positions(&mut self, rows: &[PositionFigures]) {
        let t = &self.block.layout().telemetry.positions;
        let n = rows.len().min(TELEMETRY_POSITIONS);
        write_row(&t.seq, || {
            for (slot, p) in t.rows.iter().zip(&rows[..n]) {
                let key = p.venue as u64 | (p.instrument as u64) << 16 | (p.account as u64) << 32;
                slot.key.store(key, Ordering::Relaxed);
                slot.qty.store(p.qty as u64, Ordering::Relaxed);
                slot.mark_price
                    .store(p.mark_price as u64, Ordering::Relaxed);
                slot.pnl.store(p.pnl as u64, Ordering::Relaxed);
            }
            t.count.store(n as u64, Ordering::Relaxed);
            t.overflow.store((rows.len() - n) as u64, Ordering::Relaxed);
        });
    }
}

fn write_announcement(a: &AnnouncementSlot, at: u64, announced: u64, reason: &str) {
    let reason = truncate_utf8(reason, ANNOUNCE_REASON_BYTES).as_bytes();
    write_row(&a.seq, || {
        a.shutdown_at_wall_ns.store(at, Ordering::Relaxed);
        a.announced_wall_ns.store(announced, Ordering::Relaxed);
        a.reason_len.store(reason.len() as u64, Ordering::Relaxed);
        store_bytes(&a.reason, reason);
    });
}

fn write_strategy(s: &StrategySlot, f: &StrategyFigures) {
    write_row(&s.seq, || {
        let st = |a: &AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
        st(
            &s.status,
            f.status.unwrap_or(StrategyStatus::Unknown) as u64,
        );
        st(&s.last_signal_wall_ns, f.last_signal_wall_ns);
        st(&s.open_orders, f.open_orders);
        st(&s.orders_sent, f.orders_sent);
        st(&s.orders_acked, f.orders_acked);
        st(&s.orders_rejected, f.orders_rejected);
        st(&s.fills, f.fills);
    });
}

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
        let name = |kind, i: u16| block.name_at(kind, i).unwrap_or_else(|| format!("#{i}"));
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
                r.name = name(ScopeKind::Strategy, r.index);
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
                r.name = name(ScopeKind::Venue, r.index);
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
                venue: name(ScopeKind::Venue, f.venue),
                instrument: name(ScopeKind::Instrument, f.instrument),
                account: name(ScopeKind::Account, f.account),
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

#[cfg(test)]
mod tests;
