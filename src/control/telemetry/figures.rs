//! The telemetry's vocabulary: the engine's, strategies' and venues'
//! states and the figures the engine publishes (the writer's input).

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

/// Engine-wide figures for [`TelemetryWriter::publish_engine`](super::TelemetryWriter::publish_engine). Money in
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

/// One strategy's row for [`TelemetryWriter::publish_strategy`](super::TelemetryWriter::publish_strategy).
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

/// One venue's row for [`TelemetryWriter::publish_venue`](super::TelemetryWriter::publish_venue).
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

/// One row of the positions table for [`TelemetryWriter::publish_positions`](super::TelemetryWriter::publish_positions).
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
