//! The reference engine's `[limits]` and `[rules]` sections: pre-trade
//! limits ([`killswitch::limits`]) and automatic trips
//! ([`killswitch::rules`]). Every key is optional; an absent key switches
//! that limit or rule off. Money is in currency units, quantities in lots.
//!
//! ```toml
//! [limits]
//! price_collar_bps = 500            # 5 % around the instrument's reference price
//! max_order_qty = 10                # lots
//! max_order_value = 100000          # price x qty, currency units
//! max_messages_per_second = 5000    # per strategy: new orders, replaces, cancels
//! duplicate_window_ms = 0           # same instrument/side/price/qty within this
//! execution_throttle = { fills = 500, window_ms = 1000 }   # halts the strategy
//!
//! [rules]
//! interval_ms = 10
//! trailing_loss = { max_loss = 5000, mode = "kill" }
//! absolute_loss = { max_loss = 10000 }                       # mode: kill
//! reject_rate = { max_percent = 5.0, window_ms = 10000, min_answers = 20 }  # halt-new
//! order_rate = { max_per_second = 20000 }                    # halt-new
//! position_limit = { max_lots = 500 }                        # instrument reduce-only
//! venue_heartbeat = { stale_after_ms = 2000 }                # venue halt-new
//! ```

use std::time::Duration;

use killswitch::control::Mode;
use killswitch::limits::{ExecutionThrottle, LimitConfig};
use killswitch::order::{Price, Qty, PRICE_SCALE};
use killswitch::rules::{
    HeartbeatRule, LossRule, OrderRateRule, PositionRule, RejectRateRule, RuleConfig,
};
use serde::{Deserialize, Serialize};

/// `[limits]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    /// Price collar around the reference price, basis points.
    pub price_collar_bps: Option<u32>,
    /// Largest order, lots.
    pub max_order_qty: Option<i64>,
    /// Largest order value (price x qty), currency units.
    pub max_order_value: Option<f64>,
    /// Messages per sliding second, per strategy.
    pub max_messages_per_second: Option<u32>,
    /// Duplicate-order window, ms (0 or absent: off).
    pub duplicate_window_ms: Option<u64>,
    /// Repeated-execution throttle.
    pub execution_throttle: Option<ThrottleSection>,
}

/// `execution_throttle = { fills, window_ms }`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleSection {
    /// Fills that halt the strategy...
    pub fills: u32,
    /// ...within this many ms.
    pub window_ms: u64,
}

/// `[rules]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RulesSection {
    /// Evaluation interval, ms.
    pub interval_ms: u64,
    /// Drawdown from the day's peak P&L.
    pub trailing_loss: Option<LossSection>,
    /// Loss since the start of the day.
    pub absolute_loss: Option<LossSection>,
    /// Reject rate over a window.
    pub reject_rate: Option<RejectRateSection>,
    /// New orders per second, engine-wide.
    pub order_rate: Option<OrderRateSection>,
    /// Net position per instrument.
    pub position_limit: Option<PositionSection>,
    /// Venue heartbeat silence.
    pub venue_heartbeat: Option<HeartbeatSection>,
}

impl Default for RulesSection {
    fn default() -> Self {
        RulesSection {
            interval_ms: 10,
            trailing_loss: None,
            absolute_loss: None,
            reject_rate: None,
            order_rate: None,
            position_limit: None,
            venue_heartbeat: None,
        }
    }
}

/// A loss rule.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossSection {
    /// Currency units.
    pub max_loss: f64,
    /// Mode tripped (default kill).
    pub mode: Option<String>,
}

/// The reject-rate rule.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectRateSection {
    /// Percent of answered new orders.
    pub max_percent: f64,
    /// Window, ms (default 10,000).
    pub window_ms: Option<u64>,
    /// Answers needed to judge (default 20).
    pub min_answers: Option<u32>,
    /// Mode tripped (default halt-new).
    pub mode: Option<String>,
}

/// The order-rate rule.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderRateSection {
    /// New orders per second, all strategies.
    pub max_per_second: u32,
    /// Mode tripped (default halt-new).
    pub mode: Option<String>,
}

/// The position-limit rule.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PositionSection {
    /// Net lots per instrument.
    pub max_lots: i64,
    /// Mode tripped on the instrument (default reduce-only).
    pub mode: Option<String>,
}

/// The venue-heartbeat rule.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatSection {
    /// Silence that trips, ms.
    pub stale_after_ms: u64,
    /// Mode tripped on the venue (default halt-new).
    pub mode: Option<String>,
}

fn mode(field: &str, text: &Option<String>, default: Mode) -> Result<Mode, String> {
    let Some(t) = text else {
        return Ok(default);
    };
    [Mode::ReduceOnly, Mode::HaltNew, Mode::Kill]
        .into_iter()
        .find(|m| m.as_str().eq_ignore_ascii_case(t))
        .ok_or_else(|| {
            format!("{field}.mode = {t:?}: expected \"reduce-only\", \"halt-new\" or \"kill\"")
        })
}

fn money(field: &str, v: f64) -> Result<Price, String> {
    let scaled = v * PRICE_SCALE as f64;
    if !scaled.is_finite() || scaled <= 0.0 || scaled >= i64::MAX as f64 {
        return Err(format!("{field} = {v}: expected a positive amount"));
    }
    Ok(Price(scaled.round() as i64))
}

impl LimitsSection {
    /// The library's configuration; the error names the key.
    pub fn to_config(&self) -> Result<LimitConfig, String> {
        let cfg = LimitConfig {
            price_collar_bps: self.price_collar_bps,
            max_order_qty: self.max_order_qty.map(Qty::from_lots),
            max_order_value: self
                .max_order_value
                .map(|v| money("limits.max_order_value", v))
                .transpose()?,
            max_messages_per_second: self.max_messages_per_second,
            duplicate_window: self
                .duplicate_window_ms
                .filter(|&ms| ms > 0)
                .map(Duration::from_millis),
            execution_throttle: self.execution_throttle.map(|t| ExecutionThrottle {
                fills: t.fills,
                window: Duration::from_millis(t.window_ms),
            }),
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

impl RulesSection {
    /// The library's configuration; the error names the key.
    pub fn to_config(&self) -> Result<RuleConfig, String> {
        let loss = |name: &str, s: &Option<LossSection>| -> Result<Option<LossRule>, String> {
            s.as_ref()
                .map(|s| {
                    Ok(LossRule {
                        max_loss: money(&format!("rules.{name}.max_loss"), s.max_loss)?,
                        mode: mode(&format!("rules.{name}"), &s.mode, Mode::Kill)?,
                    })
                })
                .transpose()
        };
        let cfg = RuleConfig {
            interval: Duration::from_millis(self.interval_ms),
            trailing_loss: loss("trailing_loss", &self.trailing_loss)?,
            absolute_loss: loss("absolute_loss", &self.absolute_loss)?,
            reject_rate: self
                .reject_rate
                .as_ref()
                .map(|s| -> Result<RejectRateRule, String> {
                    if !(s.max_percent > 0.0 && s.max_percent <= 100.0) {
                        return Err(format!(
                            "rules.reject_rate.max_percent = {}: expected more than 0 and at most 100",
                            s.max_percent
                        ));
                    }
                    Ok(RejectRateRule {
                        max_ppm: (s.max_percent * 10_000.0).round() as u32,
                        window: Duration::from_millis(s.window_ms.unwrap_or(10_000)),
                        min_answers: s.min_answers.unwrap_or(20),
                        mode: mode("rules.reject_rate", &s.mode, Mode::HaltNew)?,
                    })
                })
                .transpose()?,
            order_rate: self
                .order_rate
                .as_ref()
                .map(|s| -> Result<OrderRateRule, String> {
                    Ok(OrderRateRule {
                        max_per_second: s.max_per_second,
                        mode: mode("rules.order_rate", &s.mode, Mode::HaltNew)?,
                    })
                })
                .transpose()?,
            position_limit: self
                .position_limit
                .as_ref()
                .map(|s| -> Result<PositionRule, String> {
                    Ok(PositionRule {
                        max_position: Qty::from_lots(s.max_lots),
                        mode: mode("rules.position_limit", &s.mode, Mode::ReduceOnly)?,
                    })
                })
                .transpose()?,
            venue_heartbeat: self
                .venue_heartbeat
                .as_ref()
                .map(|s| -> Result<HeartbeatRule, String> {
                    Ok(HeartbeatRule {
                        stale_after: Duration::from_millis(s.stale_after_ms),
                        mode: mode("rules.venue_heartbeat", &s.mode, Mode::HaltNew)?,
                    })
                })
                .transpose()?,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::super::EngineConfig;
    use super::*;

    #[test]
    fn the_documented_sections_parse_and_bad_values_name_their_key() {
        let text = r#"
[limits]
price_collar_bps = 500
max_order_qty = 10
max_order_value = 100000
max_messages_per_second = 5000
duplicate_window_ms = 0
execution_throttle = { fills = 500, window_ms = 1000 }

[rules]
interval_ms = 10
trailing_loss = { max_loss = 5000, mode = "kill" }
absolute_loss = { max_loss = 10000 }
reject_rate = { max_percent = 5.0, window_ms = 10000, min_answers = 20 }
order_rate = { max_per_second = 20000 }
position_limit = { max_lots = 500 }
venue_heartbeat = { stale_after_ms = 2000 }
"#;
        let c = EngineConfig::from_toml(text).unwrap();
        let l = c.limits.to_config().unwrap();
        assert_eq!(l.max_order_qty, Some(Qty::from_lots(10)));
        assert_eq!(l.max_order_value, Some(Price::from_units(100_000)));
        assert_eq!(l.duplicate_window, None);
        let r = c.rules.to_config().unwrap();
        assert_eq!(r.reject_rate.unwrap().max_ppm, 50_000);
        assert_eq!(r.absolute_loss.unwrap().mode, Mode::Kill);
        assert_eq!(r.position_limit.unwrap().mode, Mode::ReduceOnly);
        assert_eq!(r.venue_heartbeat.unwrap().mode, Mode::HaltNew);

        let bad = EngineConfig::from_toml(
            "[rules]\norder_rate = { max_per_second = 5, mode = \"stop\" }",
        )
        .unwrap();
        let e = bad.rules.to_config().unwrap_err();
        assert!(
            e.contains("rules.order_rate.mode") && e.contains("stop"),
            "{e}"
        );
        let bad = EngineConfig::from_toml("[limits]\nmax_order_value = -3").unwrap();
        assert!(bad
            .limits
            .to_config()
            .unwrap_err()
            .contains("limits.max_order_value"));
        let e = EngineConfig::from_toml("[rules]\nabsolute_los = { max_loss = 1 }").unwrap_err();
        assert!(e.contains("absolute_los"), "{e}");
    }
}
