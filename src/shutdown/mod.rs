//! The planned shutdown: the runbook's thirteen steps ("PLANNED SHUTDOWN -
//! FULL PROCEDURE") as ordered phases, each timed and reported, run by
//! [`Runtime::planned_shutdown`](crate::runtime::Runtime::planned_shutdown)
//! so any engine built on the runtime has it.
//!
//! | # | phase | what it does |
//! |--:|-------|--------------|
//! | 1 | announce | engine status `SHUTTING_DOWN_SOON` with the time and reason (the block's announcement, `killswitch status`); the engine's notification hook; waits until the announced time |
//! | 2 | lock | the block's deployment/configuration lock: a new engine start (and a configuration reload) is refused while it is set |
//! | 3 | reduce limits | optional: a reduced position limit (percentage of the plan's base limit, or of the largest position now) that the gate's slow path enforces |
//! | 4 | disable strategies | status `SHUTTING_DOWN`; strategies are told to stop and the switch goes to REDUCE_ONLY, so nothing that adds risk leaves even from a strategy that ignores its stop; the strategies table (strategy, status, last signal) |
//! | 5 | cancel / flatten | option A (flatten): cancel every order, then flatten (conservative or aggressive, see [`flatten`]); option B (keep positions): cancel the aggressive orders, keep the passive ones ([`AggressiveRule`]); or cancel everything and keep positions |
//! | 6 | wait for orders | until no order is open (kept passive orders excepted) or the wait (60 s) ends; the stragglers are reported by id and marked `CancelUnknown` locally ("force cancel local") |
//! | 7 | reconcile | every venue's positions ([`Venue::request_positions`](crate::venue::Venue::request_positions)) against the internal ones; a mismatch is recorded in the block and blocks `reset` until acknowledged |
//! | 8 | checkpoint | a complete checkpoint (trading state, configuration, strategy states, log tail) with CRC-64, verified; the alternate directory if the primary fails |
//! | 9 | stop market data | the engine's hook (unsubscribe, close feeds) |
//! | 10 | disconnect venues | explicit cancels were sent in 5; log out of every session |
//! | 11 | stop services | the components in the runbook's order, each with its timeout then forced ([`component`]); then the runtime's own threads |
//! | 12 | verify | no open order but the kept passive ones, the checkpoint valid, the components stopped |
//! | 13 | report | the report is final; status `OFFLINE` |
//!
//! The library has no JSON: the report is plain data (`serde` behind the
//! feature) that the engine writes out; [`ShutdownHooks::on_phase`] is
//! called as each phase starts and ends, with the report so far.

pub mod component;
pub mod flatten;
pub mod reconcile;
pub mod words;

use std::path::PathBuf;
use std::time::Duration;

use crate::order::{OrderId, Price, Qty, ScopeIndex, Side};

pub use component::{stop_in_order, Component, ComponentStatus, ComponentStop, StopOrder};
pub use flatten::{FlattenBook, FlattenConfig, FlattenKind, FlattenResult};
pub use reconcile::{reconcile, ReconcileRow, RowStatus, VenueAnswer};
pub use words::FlattenMode;

/// The thirteen phases, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum Phase {
    /// 1. Announce.
    Announce = 1,
    /// 2. Lock deployments and configuration.
    Lock = 2,
    /// 3. Reduce position limits.
    ReduceLimits = 3,
    /// 4. Disable strategies.
    DisableStrategies = 4,
    /// 5. Cancel or flatten.
    CancelOrFlatten = 5,
    /// 6. Wait for orders.
    WaitForOrders = 6,
    /// 7. Reconcile positions.
    Reconcile = 7,
    /// 8. Complete checkpoint, verified.
    Checkpoint = 8,
    /// 9. Stop market data.
    StopMarketData = 9,
    /// 10. Disconnect venues.
    DisconnectVenues = 10,
    /// 11. Stop services.
    StopServices = 11,
    /// 12. Verify.
    Verify = 12,
    /// 13. Report; status OFFLINE.
    Report = 13,
}

impl Phase {
    /// Every phase, in order.
    pub const ALL: [Phase; 13] = [
        Phase::Announce,
        Phase::Lock,
        Phase::ReduceLimits,
        Phase::DisableStrategies,
        Phase::CancelOrFlatten,
        Phase::WaitForOrders,
        Phase::Reconcile,
        Phase::Checkpoint,
        Phase::StopMarketData,
        Phase::DisconnectVenues,
        Phase::StopServices,
        Phase::Verify,
        Phase::Report,
    ];

    /// The phase number (1..=13).
    pub fn number(self) -> u8 {
        self as u8
    }

    /// The phase of a number.
    pub fn from_number(n: u8) -> Option<Phase> {
        Phase::ALL.get(usize::from(n).checked_sub(1)?).copied()
    }

    /// What the phase is, as the command prints it.
    pub fn title(self) -> &'static str {
        match self {
            Phase::Announce => "Announcing shutdown",
            Phase::Lock => "Locking deployments and configuration",
            Phase::ReduceLimits => "Reducing position limits",
            Phase::DisableStrategies => "Disabling strategies",
            Phase::CancelOrFlatten => "Cancelling orders / flattening positions",
            Phase::WaitForOrders => "Waiting for order completion",
            Phase::Reconcile => "Reconciling positions",
            Phase::Checkpoint => "Saving complete checkpoint",
            Phase::StopMarketData => "Stopping market data",
            Phase::DisconnectVenues => "Disconnecting venues",
            Phase::StopServices => "Stopping services",
            Phase::Verify => "Verifying shutdown",
            Phase::Report => "Post-shutdown report",
        }
    }
}

/// How a phase ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum PhaseResult {
    /// Still running.
    Running,
    /// Done.
    Done,
    /// Not asked for (e.g. no limit reduction).
    Skipped,
    /// Done, with something to look at (the text).
    Warning(String),
    /// Failed (the text); the shutdown went on.
    Failed(String),
}

/// One phase in the report.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PhaseRecord {
    /// Which.
    pub phase: Phase,
    /// When it started, Unix ns.
    pub started_wall_ns: u64,
    /// How long it took, µs (0 while running).
    pub micros: u64,
    /// Of which waiting for the venues (configured waits), µs: the
    /// announcement lead, the conservative and market waits, the order
    /// wait, the reconciliation wait, the components' stop.
    pub waited_micros: u64,
    /// Result.
    pub result: PhaseResult,
    /// What it did, one line.
    pub detail: String,
}

/// Which open orders are "aggressive" (cancelled under option B) and
/// which "passive" (kept, they provide liquidity).
#[derive(Clone, Debug)]
pub struct AggressiveRule {
    /// An order priced within this distance of the mid, or through it, is
    /// aggressive (a buy at or above `mid - within`, a sell at or below
    /// `mid + within`). Default: 0 (at or through the mid).
    pub within: Price,
    /// Strategies whose orders are always aggressive (takers).
    pub strategies: Vec<ScopeIndex>,
}

impl Default for AggressiveRule {
    fn default() -> Self {
        AggressiveRule {
            within: Price(0),
            strategies: Vec::new(),
        }
    }
}

impl AggressiveRule {
    /// True when an order (side, price, strategy) is aggressive against
    /// `mid`; without a mid every order counts as aggressive (cancel when
    /// in doubt).
    pub fn is_aggressive(
        &self,
        side: Side,
        price: Price,
        strategy: ScopeIndex,
        mid: Option<Price>,
    ) -> bool {
        if self.strategies.contains(&strategy) {
            return true;
        }
        let Some(mid) = mid else { return true };
        match side {
            Side::Buy => price.0 >= mid.0.saturating_sub(self.within.0),
            Side::Sell => price.0 <= mid.0.saturating_add(self.within.0),
        }
    }
}

/// What the planned shutdown does (the `killswitch shutdown` options).
#[derive(Clone, Debug)]
pub struct ShutdownPlan {
    /// Why (announced, reported).
    pub reason: String,
    /// When the shutdown proper starts, Unix ns (0: now). Phase 1 waits
    /// until then, status `SHUTTING_DOWN_SOON`.
    pub start_at_wall_ns: u64,
    /// Flatten positions (option A) or keep them.
    pub flatten: FlattenMode,
    /// When keeping positions: cancel only the aggressive orders and keep
    /// the passive ones (option B); otherwise cancel every order.
    pub keep_passive: bool,
    /// Which orders are aggressive.
    pub aggressive: AggressiveRule,
    /// Reduce position limits by this percentage (phase 3); `None` skips it.
    pub reduce_limits_pct: Option<u8>,
    /// The base position limit the percentage applies to; `None`: the
    /// largest absolute position when phase 3 runs.
    pub position_limit: Option<Qty>,
    /// Flattening settings.
    pub flatten_cfg: FlattenConfig,
    /// Phase 6's wait (default 60 s).
    pub order_wait: Duration,
    /// How long to wait for the venues' position reports (default 5 s).
    pub reconcile_wait: Duration,
    /// Each component's graceful stop (default 30 s).
    pub component_timeout: Duration,
    /// Complete checkpoint directory; `None` skips phase 8 (reported).
    pub checkpoint_dir: Option<PathBuf>,
    /// Where the checkpoint goes if the primary directory fails.
    pub checkpoint_alternate_dir: Option<PathBuf>,
    /// The id the engine publishes its progress under (the request's
    /// nonce; the engine picks one for a signal).
    pub nonce: u16,
}

impl Default for ShutdownPlan {
    fn default() -> Self {
        ShutdownPlan {
            reason: "planned shutdown".into(),
            start_at_wall_ns: 0,
            flatten: FlattenMode::None,
            keep_passive: false,
            aggressive: AggressiveRule::default(),
            reduce_limits_pct: None,
            position_limit: None,
            flatten_cfg: FlattenConfig::default(),
            order_wait: Duration::from_secs(60),
            reconcile_wait: Duration::from_secs(5),
            component_timeout: Duration::from_secs(30),
            checkpoint_dir: None,
            checkpoint_alternate_dir: None,
            nonce: 0,
        }
    }
}

/// The strategies table (runbook step 4).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct StrategyRow {
    /// Strategy name.
    pub name: String,
    /// `DISABLED` once it dropped its handle, `STOPPING` before.
    pub status: String,
    /// Its last new order (signal), Unix ns; 0 when none.
    pub last_signal_wall_ns: u64,
}

/// The checkpoint of phase 8.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CheckpointInfo {
    /// Its path.
    pub path: PathBuf,
    /// Whole-file CRC-64/XZ.
    pub crc64: u64,
    /// Size.
    pub bytes: u64,
    /// Read back and every CRC checked.
    pub verified: bool,
    /// Set when the primary directory failed and the alternate was used
    /// (the primary's error).
    pub alternate_because: Option<String>,
}

/// What the engine adds to the complete checkpoint (runbook step 8).
#[derive(Clone, Debug, Default)]
pub struct CheckpointExtras {
    /// Configuration entries (name, bytes).
    pub config: Vec<(String, Vec<u8>)>,
    /// Strategy states (strategy name, bytes).
    pub strategies: Vec<(String, Vec<u8>)>,
    /// Log lines of the last hour.
    pub log_tail: String,
}

/// The post-shutdown report (runbook step 13).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlannedShutdownReport {
    /// The request's id.
    pub nonce: u16,
    /// Why.
    pub reason: String,
    /// Flattening asked for.
    pub flatten: String,
    /// Option B asked for.
    pub keep_passive: bool,
    /// Limit reduction asked for, %.
    pub reduce_limits_pct: Option<u8>,
    /// Start, Unix ns.
    pub started_wall_ns: u64,
    /// End, Unix ns (0 while running).
    pub finished_wall_ns: u64,
    /// The phases run so far.
    pub phases: Vec<PhaseRecord>,
    /// The strategies table.
    pub strategies: Vec<StrategyRow>,
    /// The reduced limit put in force, if any.
    pub position_limit: Option<Qty>,
    /// Orders cancelled in phase 5.
    pub cancelled: Vec<OrderId>,
    /// Passive orders kept (option B).
    pub kept_passive: Vec<OrderId>,
    /// Flattening, per position.
    pub flatten_results: Vec<FlattenResult>,
    /// Flattening went from conservative to aggressive.
    pub flatten_escalated: bool,
    /// Slippage cost of flattening against the mid at its start, price units.
    pub slippage: i64,
    /// The loss alert threshold was exceeded.
    pub loss_alert: bool,
    /// Orders still open when the wait ended, by id.
    pub stragglers: Vec<OrderId>,
    /// Of those, marked `CancelUnknown` locally after the wait.
    pub forced_cancel_local: Vec<OrderId>,
    /// The reconciliation table.
    pub reconcile: Vec<ReconcileRow>,
    /// Final positions: ((venue, instrument, account), qty).
    pub final_positions: Vec<((ScopeIndex, ScopeIndex, ScopeIndex), Qty)>,
    /// P&L of the run at the mids (price units); `None` without mids.
    pub pnl: Option<i64>,
    /// The complete checkpoint.
    pub checkpoint: Option<CheckpointInfo>,
    /// How the components stopped.
    pub components: Vec<ComponentStop>,
    /// Things to look at.
    pub warnings: Vec<String>,
    /// `words::OUTCOME_*` bits.
    pub outcome: u64,
}

impl PlannedShutdownReport {
    /// True when every step completed with nothing left over.
    pub fn is_clean(&self) -> bool {
        self.outcome & words::OUTCOME_CLEAN != 0
    }

    /// Total of the phases' configured waits, µs.
    pub fn waited_micros(&self) -> u64 {
        self.phases.iter().map(|p| p.waited_micros).sum()
    }

    /// Total time of the phases, µs.
    pub fn total_micros(&self) -> u64 {
        self.phases.iter().map(|p| p.micros).sum()
    }
}

/// What the engine supplies to the planned shutdown. Every method has a
/// default, so an engine implements only what it has.
pub trait ShutdownHooks {
    /// The mid of `instrument` at `venue` now (flattening, slippage, the
    /// aggressive/passive split, P&L); `None` when unknown.
    fn mid(&mut self, venue: ScopeIndex, instrument: ScopeIndex) -> Option<Price> {
        let _ = (venue, instrument);
        None
    }
    /// A phase started or ended; `report` is the report so far. The engine
    /// logs it, writes its progress file, runs its notification command.
    fn on_phase(&mut self, record: &PhaseRecord, report: &PlannedShutdownReport) {
        let _ = (record, report);
    }
    /// What the complete checkpoint carries beside the trading state.
    fn checkpoint_extras(&mut self) -> CheckpointExtras {
        CheckpointExtras::default()
    }
    /// Phase 9: unsubscribe and close the market data feeds; returns what
    /// was done (the connections table), or an error.
    fn stop_market_data(&mut self) -> Result<String, String> {
        Ok("no market data feeds of the engine's own".into())
    }
    /// The components stopped in phase 11 (taken once).
    fn components(&mut self) -> Vec<Box<dyn Component>> {
        Vec::new()
    }
    /// True to abandon the planned shutdown for the emergency path (a
    /// second SIGTERM): checked between and inside the waits.
    fn escalate(&mut self) -> bool {
        false
    }
}

/// Hooks that supply nothing (an engine with no mids, no components).
#[derive(Debug, Default)]
pub struct NoHooks;

impl ShutdownHooks for NoHooks {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_number_in_runbook_order() {
        for (i, p) in Phase::ALL.iter().enumerate() {
            assert_eq!(usize::from(p.number()), i + 1);
            assert_eq!(Phase::from_number(p.number()), Some(*p));
        }
        assert_eq!(Phase::from_number(0), None);
        assert_eq!(Phase::from_number(14), None);
    }

    #[test]
    fn aggressive_is_at_or_through_the_mid_within_the_distance() {
        let mid = Some(Price(100));
        let r = AggressiveRule {
            within: Price(2),
            strategies: vec![7],
        };
        assert!(r.is_aggressive(Side::Buy, Price(98), 0, mid));
        assert!(!r.is_aggressive(Side::Buy, Price(97), 0, mid));
        assert!(r.is_aggressive(Side::Sell, Price(102), 0, mid));
        assert!(!r.is_aggressive(Side::Sell, Price(103), 0, mid));
        assert!(r.is_aggressive(Side::Sell, Price(500), 7, mid));
        assert!(r.is_aggressive(Side::Sell, Price(500), 0, None));
    }
}
