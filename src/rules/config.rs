//! What an engine configures: which automatic rules run, their limits and
//! the modes they trip (see the table in [`crate::rules`]).

use std::time::Duration;

use crate::control::Mode;
use crate::order::{Price, Qty};

/// A loss rule: a limit in [`Price`] units (1/`PRICE_SCALE` of the
/// currency) and the mode it trips (globally).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LossRule {
    /// The loss (or drawdown) that trips, positive.
    pub max_loss: Price,
    /// Mode tripped (default KILL).
    pub mode: Mode,
}

/// The reject-rate rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RejectRateRule {
    /// Rejected / (accepted + rejected) that trips, parts per million
    /// (the runbook's alert is 5 %: 50,000).
    pub max_ppm: u32,
    /// Over this window.
    pub window: Duration,
    /// Judged only once this many new orders were answered in the window
    /// (one reject of one order is not a rate).
    pub min_answers: u32,
    /// Mode tripped globally (default HALT_NEW).
    pub mode: Mode,
}

/// The order-rate rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderRateRule {
    /// New orders (all strategies) in any second that trips.
    pub max_per_second: u32,
    /// Mode tripped globally (default HALT_NEW).
    pub mode: Mode,
}

/// The position-limit rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PositionRule {
    /// Net position per instrument (long or short, all venues and
    /// accounts) that trips.
    pub max_position: Qty,
    /// Mode tripped on that instrument's scope (default REDUCE_ONLY: the
    /// position may only shrink).
    pub mode: Mode,
}

/// The venue-heartbeat rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeartbeatRule {
    /// A venue whose last heartbeat is older than this trips. Only venues
    /// that have beaten at least once are judged.
    pub stale_after: Duration,
    /// Mode tripped on that venue's scope (default HALT_NEW).
    pub mode: Mode,
}

/// Which automatic rules an engine runs; `None` switches one off. The
/// execution throttle is configured with the pre-trade limits
/// ([`crate::limits::LimitConfig::execution_throttle`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleConfig {
    /// How often the supervisor evaluates the rules (default 10 ms).
    pub interval: Duration,
    /// Drawdown from the day's peak P&L.
    pub trailing_loss: Option<LossRule>,
    /// Loss since the start of the day.
    pub absolute_loss: Option<LossRule>,
    /// Reject rate over a window.
    pub reject_rate: Option<RejectRateRule>,
    /// Orders per second, engine-wide.
    pub order_rate: Option<OrderRateRule>,
    /// Net position per instrument.
    pub position_limit: Option<PositionRule>,
    /// Venue heartbeat silence.
    pub venue_heartbeat: Option<HeartbeatRule>,
}

impl Default for RuleConfig {
    fn default() -> Self {
        RuleConfig {
            interval: Duration::from_millis(10),
            trailing_loss: None,
            absolute_loss: None,
            reject_rate: None,
            order_rate: None,
            position_limit: None,
            venue_heartbeat: None,
        }
    }
}

impl RuleConfig {
    /// True when any rule is configured.
    pub fn any(&self) -> bool {
        self.trailing_loss.is_some()
            || self.absolute_loss.is_some()
            || self.reject_rate.is_some()
            || self.order_rate.is_some()
            || self.position_limit.is_some()
            || self.venue_heartbeat.is_some()
    }

    /// Checks the values make sense; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        let mode = |name: &str, m: Mode| {
            if m == Mode::Normal {
                Err(format!(
                    "rules.{name}.mode must be reduce-only, halt-new or kill"
                ))
            } else {
                Ok(())
            }
        };
        if self.interval.is_zero() {
            return Err("rules.interval must be longer than zero".into());
        }
        for (name, r) in [
            ("trailing_loss", self.trailing_loss),
            ("absolute_loss", self.absolute_loss),
        ] {
            if let Some(r) = r {
                if r.max_loss.0 <= 0 {
                    return Err(format!("rules.{name}.max_loss must be positive"));
                }
                mode(name, r.mode)?;
            }
        }
        if let Some(r) = self.reject_rate {
            if r.max_ppm == 0 || r.max_ppm > 1_000_000 || r.window.is_zero() {
                return Err(
                    "rules.reject_rate needs max_ppm in 1..=1000000 and a window > 0".into(),
                );
            }
            mode("reject_rate", r.mode)?;
        }
        if let Some(r) = self.order_rate {
            if r.max_per_second == 0 {
                return Err("rules.order_rate.max_per_second must be at least 1".into());
            }
            mode("order_rate", r.mode)?;
        }
        if let Some(r) = self.position_limit {
            if r.max_position.0 <= 0 {
                return Err("rules.position_limit.max_position must be positive".into());
            }
            mode("position_limit", r.mode)?;
        }
        if let Some(r) = self.venue_heartbeat {
            if r.stale_after.is_zero() {
                return Err("rules.venue_heartbeat.stale_after must be longer than zero".into());
            }
            mode("venue_heartbeat", r.mode)?;
        }
        Ok(())
    }
}
