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

use super::audit::{store_bytes, truncate_utf8};
use super::layout::{
    AnnouncementSlot, EngineTelemetry, StrategySlot, ANNOUNCE_REASON_BYTES, TELEMETRY_POSITIONS,
};
use super::ControlBlock;
use crate::clock::{mono_ns, wall_ns};

mod figures;
mod snapshot;

pub use figures::*;
pub use snapshot::*;

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
#[cfg(test)]
mod tests;
