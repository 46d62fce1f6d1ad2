//! Automatic trips: rules that watch what the engine does and pull the
//! cord themselves, with graded warnings before they do (Nasdaq's kill
//! switch warns at 50, 75, 90 and 95 % of a limit).
//!
//! A rule trips when its value goes *above* its limit:
//!
//! | rule | what it measures | trips by default |
//! |---|---|---|
//! | `trailing-loss` | drawdown: the day's peak P&L minus the P&L now | global KILL |
//! | `absolute-loss` | loss: minus the P&L now | global KILL |
//! | `reject-rate` | rejected / answered new orders over a window | global HALT_NEW |
//! | `order-rate` | new orders of the engine in the last second | global HALT_NEW |
//! | `position-limit` | net position per instrument (all venues and accounts) | that instrument REDUCE_ONLY |
//! | `venue-heartbeat` | time since a venue's last heartbeat | that venue HALT_NEW |
//! | `execution-throttle` | fills of one strategy within a window ([`crate::limits::ExecutionThrottle`]) | that strategy HALT_NEW |
//!
//! None of this is on the order path. The runtime's supervisor thread
//! evaluates a [`RuleBook`] every [`RuleConfig::interval`] on an
//! [`Observation`] it builds from the registry (activity, positions), the
//! journal's cash with the [`ReferencePrices`](crate::limits::ReferencePrices)
//! as marks (P&L), and the [`VenueHeartbeats`] the engine's venue adapters
//! beat. Each trip goes through the control block with
//! [`Source::Auto`](crate::control::Source::Auto), so only the risk role
//! may reset it, and its audit reason names the rule and the values; each
//! warning is an audit entry of kind
//! [`AuditKind::Warning`](crate::control::AuditKind::Warning) and a
//! gauge in the block's telemetry ([`RuleGauge`], read by `killswitch
//! serve`'s `/metrics`).
//!
//! # Invariants
//! * A warning grade is recorded once per crossing: after a rule's use of
//!   its limit falls 5 points below the grade recorded, that grade (and the
//!   ones above it) may be recorded again.
//! * A rule trips once per key (rule and scope) and then stays latched
//!   until the supervisor sees the switch clear (a reset): a condition that
//!   still holds after a reset trips again at the next evaluation.
//! * Counters (orders, rejects, fills) are sampled at each evaluation: a
//!   count "within a window" runs from the newest sample at or before the
//!   window's start, so it may include events up to one interval older
//!   (it errs towards tripping early, never late).
//! * The P&L rules measure from the P&L at the first evaluation (the start
//!   of the engine's day); with no P&L (no journal, or a position without a
//!   reference price) they do not judge (their gauge stays at 0).

use std::collections::VecDeque;
use std::time::Duration;

use rustc_hash::FxHashMap;

use crate::control::{ControlBlock, Mode, ScopeKind};
use crate::limits::ExecutionThrottle;
use crate::order::{Price, Qty, ScopeIndex};

mod config;
mod gauge;
mod heartbeats;
pub use config::{
    HeartbeatRule, LossRule, OrderRateRule, PositionRule, RejectRateRule, RuleConfig,
};
pub(crate) use gauge::publish_gauges;
pub use gauge::{read_gauges, RuleGauge};
pub use heartbeats::VenueHeartbeats;

/// The automatic rules, in the order of their gauges in the control block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Rule {
    /// Drawdown from the day's peak P&L.
    TrailingLoss = 0,
    /// Loss since the start of the day.
    AbsoluteLoss = 1,
    /// Rejected share of answered new orders over a window.
    RejectRate = 2,
    /// New orders per second, engine-wide.
    OrderRate = 3,
    /// Net position per instrument.
    PositionLimit = 4,
    /// Silence of a venue's heartbeat.
    VenueHeartbeat = 5,
    /// Fills of one strategy within a window.
    ExecutionThrottle = 6,
}

impl Rule {
    /// Every rule, in gauge order.
    pub const ALL: [Rule; 7] = [
        Rule::TrailingLoss,
        Rule::AbsoluteLoss,
        Rule::RejectRate,
        Rule::OrderRate,
        Rule::PositionLimit,
        Rule::VenueHeartbeat,
        Rule::ExecutionThrottle,
    ];

    /// Its name in audit reasons, configuration and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::TrailingLoss => "trailing-loss",
            Rule::AbsoluteLoss => "absolute-loss",
            Rule::RejectRate => "reject-rate",
            Rule::OrderRate => "order-rate",
            Rule::PositionLimit => "position-limit",
            Rule::VenueHeartbeat => "venue-heartbeat",
            Rule::ExecutionThrottle => "execution-throttle",
        }
    }
}

/// The warning grades, percent of a limit.
pub const GRADES: [u8; 4] = [50, 75, 90, 95];

/// What the rules see at one evaluation. Counters are totals since the
/// runtime started; the book keeps their history.
#[derive(Clone, Debug, Default)]
pub struct Observation {
    /// `CLOCK_MONOTONIC` ns.
    pub now_ns: u64,
    /// P&L now ([`Price`] units), `None` when unknown.
    pub pnl: Option<i64>,
    /// New orders registered (all venues).
    pub orders_sent: u64,
    /// New orders accepted by venues.
    pub orders_acked: u64,
    /// New orders rejected.
    pub orders_rejected: u64,
    /// Net position per instrument scope index.
    pub positions: Vec<(ScopeIndex, Qty)>,
    /// Venues that have beaten: (index, last beat `CLOCK_MONOTONIC` ns).
    pub venue_heartbeats: Vec<(ScopeIndex, u64)>,
    /// Fills per strategy scope index (totals).
    pub strategy_fills: Vec<(ScopeIndex, u64)>,
    /// Nothing is tripped (no global mode, no scope): latched rules re-arm.
    pub switch_clear: bool,
}

/// What a rule wants done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleAction {
    /// Record a warning (audit kind `Warning`).
    Warn {
        /// The rule.
        rule: Rule,
        /// The scope it is about (`None`: the engine).
        scope: Option<(ScopeKind, ScopeIndex)>,
        /// The grade crossed, percent.
        grade: u8,
        /// The mode the rule trips to.
        mode: Mode,
        /// The audit reason (rule, grade, values).
        reason: String,
    },
    /// Trip (source `auto`).
    Trip {
        /// The rule.
        rule: Rule,
        /// The scope to trip (`None`: global).
        scope: Option<(ScopeKind, ScopeIndex)>,
        /// The mode.
        mode: Mode,
        /// The audit reason (rule and values).
        reason: String,
    },
}

#[derive(Clone, Copy, Debug, Default)]
struct KeyState {
    /// Highest grade recorded (percent), 0 for none.
    grade: u8,
    /// Tripped, until the switch is seen clear.
    latched: bool,
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    t: u64,
    sent: u64,
    acked: u64,
    rejected: u64,
}

/// The rules' state between evaluations (peak P&L, counter history,
/// warning grades, latches). Lives on the supervisor thread.
#[derive(Debug)]
pub struct RuleBook {
    cfg: RuleConfig,
    throttle: Option<ExecutionThrottle>,
    pnl_start: Option<i64>,
    pnl_peak: i64,
    samples: VecDeque<Sample>,
    fills: FxHashMap<ScopeIndex, VecDeque<(u64, u64)>>,
    keys: FxHashMap<(Rule, ScopeIndex), KeyState>,
    /// Per rule, this evaluation: highest use of the limit (ppm) and the
    /// highest grade held by any of its keys.
    gauges: [RuleGauge; 7],
    warnings: u64,
}

/// Use of a limit in parts per million, rounded up: 1,000,000 is at the
/// limit, and anything above the limit is above 1,000,000 (a rule trips
/// when its value *exceeds* its limit).
fn usage_ppm(value: i128, limit: i128) -> u64 {
    if limit <= 0 || value <= 0 {
        return 0;
    }
    let scaled = value.saturating_mul(1_000_000);
    let ceil = scaled / limit + i128::from(scaled % limit != 0);
    ceil.min(u32::MAX as i128) as u64
}

impl RuleBook {
    /// A book for `cfg` and the execution throttle (if any).
    pub fn new(cfg: RuleConfig, throttle: Option<ExecutionThrottle>) -> RuleBook {
        let mut gauges = [RuleGauge::default(); 7];
        for rule in Rule::ALL {
            gauges[rule as usize].configured = match rule {
                Rule::TrailingLoss => cfg.trailing_loss.is_some(),
                Rule::AbsoluteLoss => cfg.absolute_loss.is_some(),
                Rule::RejectRate => cfg.reject_rate.is_some(),
                Rule::OrderRate => cfg.order_rate.is_some(),
                Rule::PositionLimit => cfg.position_limit.is_some(),
                Rule::VenueHeartbeat => cfg.venue_heartbeat.is_some(),
                Rule::ExecutionThrottle => throttle.is_some(),
            };
        }
        RuleBook {
            cfg,
            throttle,
            pnl_start: None,
            pnl_peak: 0,
            samples: VecDeque::new(),
            fills: FxHashMap::default(),
            keys: FxHashMap::default(),
            gauges,
            warnings: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RuleConfig {
        &self.cfg
    }

    /// The gauges after the last evaluation, in [`Rule`] order.
    pub fn gauges(&self) -> [RuleGauge; 7] {
        self.gauges
    }

    /// Warnings recorded so far.
    pub fn warnings(&self) -> u64 {
        self.warnings
    }

    /// Evaluates every rule on `obs`; returns what to record and trip.
    /// Scopes are named by index in the reasons.
    pub fn evaluate(&mut self, obs: &Observation) -> Vec<RuleAction> {
        self.evaluate_named(obs, &|_, _| None)
    }

    /// [`evaluate`](Self::evaluate), naming scopes in the reasons with
    /// `name` (e.g. the control block's name tables).
    pub fn evaluate_named(
        &mut self,
        obs: &Observation,
        name: &dyn Fn(ScopeKind, ScopeIndex) -> Option<String>,
    ) -> Vec<RuleAction> {
        if obs.switch_clear {
            for k in self.keys.values_mut() {
                k.latched = false;
            }
        }
        for g in &mut self.gauges {
            g.usage_ppm = 0;
            g.grade = 0;
            g.tripped = false;
        }
        let mut out = Vec::new();
        self.losses(obs, name, &mut out);
        self.rates(obs, name, &mut out);
        if let Some(r) = self.cfg.position_limit {
            for &(instrument, qty) in &obs.positions {
                let u = usage_ppm(qty.0.unsigned_abs() as i128, r.max_position.0 as i128);
                let text = format!("position {qty} of limit {}", r.max_position);
                self.judge(
                    name,
                    Rule::PositionLimit,
                    Some((ScopeKind::Instrument, instrument)),
                    r.mode,
                    u,
                    &text,
                    &mut out,
                );
            }
        }
        if let Some(r) = self.cfg.venue_heartbeat {
            let limit = r.stale_after.as_nanos().min(i128::MAX as u128) as i128;
            for &(venue, last) in &obs.venue_heartbeats {
                let silence = obs.now_ns.saturating_sub(last);
                let u = usage_ppm(silence as i128, limit);
                let text = format!(
                    "no heartbeat for {} ms (limit {} ms)",
                    silence / 1_000_000,
                    r.stale_after.as_millis()
                );
                self.judge(
                    name,
                    Rule::VenueHeartbeat,
                    Some((ScopeKind::Venue, venue)),
                    r.mode,
                    u,
                    &text,
                    &mut out,
                );
            }
        }
        if let Some(t) = self.throttle {
            let window = t.window.as_nanos().min(u64::MAX as u128) as u64;
            for &(strategy, total) in &obs.strategy_fills {
                // A strategy seen for the first time has filled only since
                // the runtime started (the registry counts per run): its
                // history starts from zero, now (errs towards early).
                let hist = self
                    .fills
                    .entry(strategy)
                    .or_insert_with(|| VecDeque::from([(obs.now_ns, 0)]));
                hist.push_back((obs.now_ns, total));
                // Keep one sample at or before the window's start.
                while hist.len() > 1 && obs.now_ns.saturating_sub(hist[1].0) >= window {
                    hist.pop_front();
                }
                let base = hist.front().map_or(total, |s| s.1);
                let in_window = total.saturating_sub(base);
                let u = usage_ppm(in_window as i128, t.fills as i128);
                let text = format!(
                    "{in_window} fills within {} ms (limit {})",
                    t.window.as_millis(),
                    t.fills
                );
                self.judge(
                    name,
                    Rule::ExecutionThrottle,
                    Some((ScopeKind::Strategy, strategy)),
                    Mode::HaltNew,
                    u,
                    &text,
                    &mut out,
                );
            }
        }
        out
    }

    fn losses(
        &mut self,
        obs: &Observation,
        name: &dyn Fn(ScopeKind, ScopeIndex) -> Option<String>,
        out: &mut Vec<RuleAction>,
    ) {
        let Some(pnl) = obs.pnl else {
            return;
        };
        let start = *self.pnl_start.get_or_insert(pnl);
        let day = pnl.saturating_sub(start);
        self.pnl_peak = self.pnl_peak.max(day);
        if let Some(r) = self.cfg.trailing_loss {
            let drawdown = self.pnl_peak.saturating_sub(day);
            let text = format!(
                "drawdown {} from peak {} (P&L {}), limit {}",
                Price(drawdown),
                Price(self.pnl_peak),
                Price(day),
                r.max_loss
            );
            let u = usage_ppm(drawdown as i128, r.max_loss.0 as i128);
            self.judge(name, Rule::TrailingLoss, None, r.mode, u, &text, out);
        }
        if let Some(r) = self.cfg.absolute_loss {
            let loss = -(day as i128);
            let text = format!(
                "loss {} (P&L {}), limit {}",
                Price(-day),
                Price(day),
                r.max_loss
            );
            let u = usage_ppm(loss, r.max_loss.0 as i128);
            self.judge(name, Rule::AbsoluteLoss, None, r.mode, u, &text, out);
        }
    }

    fn rates(
        &mut self,
        obs: &Observation,
        name: &dyn Fn(ScopeKind, ScopeIndex) -> Option<String>,
        out: &mut Vec<RuleAction>,
    ) {
        let now = Sample {
            t: obs.now_ns,
            sent: obs.orders_sent,
            acked: obs.orders_acked,
            rejected: obs.orders_rejected,
        };
        self.samples.push_back(now);
        let keep = self
            .cfg
            .reject_rate
            .map_or(Duration::ZERO, |r| r.window)
            .max(Duration::from_secs(1))
            .as_nanos()
            .min(u64::MAX as u128) as u64;
        while self.samples.len() > 1 && obs.now_ns.saturating_sub(self.samples[1].t) >= keep {
            self.samples.pop_front();
        }
        // The newest sample at or before `now - window` (the oldest kept if
        // the history is shorter: a count over less than the window).
        let base = |samples: &VecDeque<Sample>, window: u64| {
            samples
                .iter()
                .rev()
                .find(|s| obs.now_ns.saturating_sub(s.t) >= window)
                .or(samples.front())
                .copied()
                .unwrap_or(now)
        };
        if let Some(r) = self.cfg.order_rate {
            let b = base(&self.samples, 1_000_000_000);
            let sent = now.sent.saturating_sub(b.sent);
            let text = format!(
                "{sent} new orders in the last second (limit {})",
                r.max_per_second
            );
            let u = usage_ppm(sent as i128, r.max_per_second as i128);
            self.judge(name, Rule::OrderRate, None, r.mode, u, &text, out);
        }
        if let Some(r) = self.cfg.reject_rate {
            let window = r.window.as_nanos().min(u64::MAX as u128) as u64;
            let b = base(&self.samples, window);
            let rejected = now.rejected.saturating_sub(b.rejected);
            let answered = rejected + now.acked.saturating_sub(b.acked);
            if answered >= r.min_answers.max(1) as u64 {
                let rate = rejected * 1_000_000 / answered;
                let text = format!(
                    "{rejected} of {answered} new orders rejected in {} ms ({}.{:02} %, limit {}.{:02} %)",
                    r.window.as_millis(),
                    rate / 10_000,
                    rate % 10_000 / 100,
                    r.max_ppm / 10_000,
                    r.max_ppm % 10_000 / 100
                );
                let u = usage_ppm(rate as i128, r.max_ppm as i128);
                self.judge(name, Rule::RejectRate, None, r.mode, u, &text, out);
            }
        }
    }

    /// Grades, latches and the gauge of one key.
    #[allow(clippy::too_many_arguments)] // one call per rule: a struct would only rename them
    fn judge(
        &mut self,
        name: &dyn Fn(ScopeKind, ScopeIndex) -> Option<String>,
        rule: Rule,
        scope: Option<(ScopeKind, ScopeIndex)>,
        mode: Mode,
        usage: u64,
        values: &str,
        out: &mut Vec<RuleAction>,
    ) {
        let key = (rule, scope.map_or(0, |s| s.1));
        let state = self.keys.entry(key).or_default();
        let pct = usage / 10_000;
        // Re-arm the grades this use has left by 5 points or more.
        if pct + 5 < state.grade as u64 {
            state.grade = GRADES
                .iter()
                .rev()
                .find(|&&g| g as u64 <= pct + 5)
                .copied()
                .unwrap_or(0);
        }
        let where_ = scope.map_or(String::new(), |(k, i)| match name(k, i) {
            Some(n) => format!(" {k} {n}"),
            None => format!(" {k} #{i}"),
        });
        if usage > 1_000_000 {
            if !state.latched {
                state.latched = true;
                state.grade = 100;
                out.push(RuleAction::Trip {
                    rule,
                    scope,
                    mode,
                    reason: format!("auto rule {}{where_}: {values}", rule.as_str()),
                });
            }
        } else if let Some(&g) = GRADES.iter().rev().find(|&&g| pct >= g as u64) {
            if g > state.grade {
                state.grade = g;
                self.warnings += 1;
                out.push(RuleAction::Warn {
                    rule,
                    scope,
                    grade: g,
                    mode,
                    reason: format!(
                        "rule {}{where_} at {pct} % of its limit (warning {g} %): {values}",
                        rule.as_str()
                    ),
                });
            }
        }
        let gauge = &mut self.gauges[rule as usize];
        gauge.usage_ppm = gauge.usage_ppm.max(usage.min(u32::MAX as u64) as u32);
        gauge.grade = gauge.grade.max(state.grade);
        gauge.tripped |= state.latched;
    }
}

/// Records a warning in `block`'s audit ring (kind `Warning`, source
/// `auto`); returns its ticket.
pub(crate) fn record_warning(
    block: &ControlBlock,
    mode: Mode,
    scope: Option<(ScopeKind, ScopeIndex)>,
    reason: &str,
) -> u64 {
    use crate::control::audit::{write, AuditWrite};
    use crate::control::{Actor, AuditKind, Source};
    write(
        block.layout(),
        &AuditWrite {
            kind: AuditKind::Warning,
            mode,
            source: Source::Auto,
            scope,
            generation: block.state().generation(),
            reason,
            flags: 0,
            actor: Actor::ANONYMOUS,
            mono_ns: crate::clock::mono_ns(),
            wall_ns: crate::clock::wall_ns(),
        },
    )
}

#[cfg(test)]
mod tests;
