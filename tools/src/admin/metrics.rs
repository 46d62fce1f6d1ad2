//! `/metrics`: what the runbook's "MONITORING DURING SHUTDOWN" asks to
//! watch, in the OpenMetrics / Prometheus text format, encoded by the
//! `prometheus-client` crate from one [`EngineView`] per scrape.
//!
//! Names (all prefixed `killswitch_`) and the alert rules built on them are
//! listed in the README ("Metrics").

use std::sync::atomic::AtomicU64;

use killswitch::control::telemetry::EngineStatus;
use killswitch::control::{DrainPhase, Mode};
use killswitch::order::{PRICE_SCALE, QTY_SCALE};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::view::EngineView;

/// The runbook's reject-rate threshold (5 %).
pub const REJECT_RATE_ALERT: f64 = 0.05;
/// The runbook's open-orders alert: above zero this long during a shutdown.
pub const OPEN_ORDERS_STUCK_ALERT_S: f64 = 60.0;

/// Settings of the alerts computed here.
#[derive(Clone, Copy, Debug, Default)]
pub struct AlertConfig {
    /// Loss (currency units, positive) past which `killswitch_pnl_loss_alert` is 1.
    pub loss_alert: Option<f64>,
}

/// Counters of the endpoint itself.
#[derive(Debug, Default)]
pub struct EndpointCounters {
    /// Requests answered, by class.
    pub ok: AtomicU64,
    /// 4xx answers.
    pub client_errors: AtomicU64,
    /// 401 answers.
    pub unauthorized: AtomicU64,
    /// Audit entries not written because of the per-second limit.
    pub audit_suppressed: AtomicU64,
}

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

struct Out(Registry);

impl Out {
    // prometheus-client ends every help text with a period itself.
    fn gauge(&mut self, name: &str, help: &str, v: f64) {
        let g = FloatGauge::default();
        g.set(v);
        self.0.register(name, help.trim_end_matches('.'), g);
    }
    fn counter(&mut self, name: &str, help: &str, v: u64) {
        let c: Counter = Counter::default();
        c.inc_by(v);
        self.0.register(name, help.trim_end_matches('.'), c);
    }
    fn family(&mut self, name: &str, help: &str, rows: Vec<(Labels, f64)>) {
        let f = Family::<Labels, FloatGauge>::default();
        for (l, v) in rows {
            f.get_or_create(&l).set(v);
        }
        self.0.register(name, help.trim_end_matches('.'), f);
    }
}

fn secs(ns: Option<u64>) -> f64 {
    ns.map_or(f64::NAN, |n| n as f64 / 1e9)
}

fn money(units: i64) -> f64 {
    units as f64 / PRICE_SCALE as f64
}

fn age_s(read_wall_ns: u64, t: u64) -> f64 {
    if t == 0 {
        f64::NAN
    } else {
        read_wall_ns.saturating_sub(t) as f64 / 1e9
    }
}

const PHASES: [DrainPhase; 7] = [
    DrainPhase::Idle,
    DrainPhase::AwaitingGatewayAck,
    DrainPhase::GatewayAckLate,
    DrainPhase::Cancelling,
    DrainPhase::Checkpointing,
    DrainPhase::Done,
    DrainPhase::Failed,
];

fn phase_name(p: DrainPhase) -> &'static str {
    match p {
        DrainPhase::Idle => "idle",
        DrainPhase::AwaitingGatewayAck => "awaiting-gateway-ack",
        DrainPhase::GatewayAckLate => "gateway-ack-late",
        DrainPhase::Cancelling => "cancelling",
        DrainPhase::Checkpointing => "checkpointing",
        DrainPhase::Done => "done",
        DrainPhase::Failed => "failed",
    }
}

/// Encodes the metrics of `v`.
pub fn render(v: &EngineView, alerts: &AlertConfig, endpoint: &EndpointCounters) -> String {
    let s = &v.status;
    let t = &v.telemetry;
    let mut o = Out(Registry::with_prefix("killswitch"));
    let b = |x: bool| if x { 1.0 } else { 0.0 };

    // Process status.
    o.gauge(
        "engine_up",
        "1 while the engine process attached to the block is alive.",
        b(s.owner.alive),
    );
    o.gauge(
        "engine_heartbeat_age_seconds",
        "Seconds since the engine's last heartbeat (NaN: none).",
        s.heartbeat_age_ms.map_or(f64::NAN, |ms| ms / 1e3),
    );
    o.gauge(
        "telemetry_age_seconds",
        "Seconds since the engine last published its telemetry (NaN: never).",
        v.telemetry_age_ms.map_or(f64::NAN, |ms| ms / 1e3),
    );
    let status = t.engine.map_or(EngineStatus::Unknown, |e| e.status);
    o.family(
        "engine_status",
        "1 for the engine's current status (RUNNING, SHUTTING_DOWN_SOON, SHUTTING_DOWN, DRAINING, OFFLINE, ...).",
        EngineStatus::ALL
            .iter()
            .map(|st| (labels(&[("status", st.as_str())]), b(*st == status)))
            .collect(),
    );
    o.gauge(
        "engine_status_age_seconds",
        "Seconds in the current status.",
        t.engine
            .map_or(f64::NAN, |e| age_s(v.read_wall_ns, e.status_since_wall_ns)),
    );
    o.gauge(
        "shutdown_announced_start_seconds",
        "Unix time the announced planned shutdown starts (NaN: none announced).",
        t.announcement
            .as_ref()
            .map_or(f64::NAN, |a| a.shutdown_at_wall_ns as f64 / 1e9),
    );

    // The switch and the kill path.
    o.family(
        "mode",
        "1 for the global mode in force.",
        [Mode::Normal, Mode::ReduceOnly, Mode::HaltNew, Mode::Kill]
            .iter()
            .map(|m| (labels(&[("mode", m.as_str())]), b(*m == s.mode)))
            .collect(),
    );
    o.gauge(
        "scoped",
        "1 while some venue/strategy/instrument/account is tripped.",
        b(s.scoped),
    );
    o.gauge(
        "generation",
        "State-word generation (counts every trip and reset).",
        s.generation as f64,
    );
    o.gauge(
        "reset_needs_risk_role",
        "1 while a trip by the risk role or an automatic rule is in force: only risk may reset.",
        b(v.reset_needs_risk_role),
    );
    o.gauge(
        "gateway_acked_generation",
        "Generation the gateway has acknowledged (obeys).",
        s.gateway_acked_generation as f64,
    );
    o.gauge(
        "gateway_generations_behind",
        "Generation minus the gateway's acknowledged generation while an engine is attached.",
        if s.owner.pid != 0 {
            s.generation.saturating_sub(s.gateway_acked_generation) as f64
        } else {
            0.0
        },
    );
    let kp = &v.kill_path;
    o.gauge(
        "kill_trip_to_gateway_ack_seconds",
        "Last drain: trip -> gateway acknowledgement (NaN: not yet / none).",
        secs(kp.trip_to_gateway_ack_ns),
    );
    o.gauge(
        "kill_trip_to_last_cancel_ack_seconds",
        "Last drain: trip -> last open order confirmed or reported unknown.",
        secs(kp.trip_to_last_cancel_ack_ns),
    );
    let d = &s.drain;
    o.family(
        "drain_phase",
        "1 for the drain's current phase.",
        PHASES
            .iter()
            .map(|p| (labels(&[("phase", phase_name(*p))]), b(*p == d.phase)))
            .collect(),
    );
    o.gauge(
        "drain_generation",
        "Generation the drain works on.",
        d.generation as f64,
    );
    o.gauge(
        "drain_open_at_snapshot",
        "Orders in scope at the drain's snapshot.",
        d.open_at_snapshot as f64,
    );
    o.gauge(
        "drain_orders_confirmed",
        "Orders the drain saw confirmed terminal.",
        d.orders_confirmed as f64,
    );
    o.gauge(
        "drain_orders_unknown",
        "Orders left CancelUnknown (no answer by the deadline): reconcile them.",
        d.orders_unknown as f64,
    );
    o.gauge(
        "drain_incomplete",
        "1 while the 'drain incomplete' record is set (it blocks reset).",
        b(s.drain_incomplete.is_some()),
    );

    // Open orders.
    let e = t.engine.unwrap_or_default();
    o.gauge(
        "open_orders",
        "Open orders, all venues (target 0 during a shutdown).",
        e.open_orders as f64,
    );
    o.family(
        "open_orders_by_strategy",
        "Open orders per strategy.",
        t.strategies
            .iter()
            .map(|r| (labels(&[("strategy", &r.name)]), r.open_orders as f64))
            .collect(),
    );
    o.family(
        "open_orders_by_venue",
        "Open orders per venue.",
        t.venues
            .iter()
            .map(|r| (labels(&[("venue", &r.name)]), r.open_orders as f64))
            .collect(),
    );
    let stuck = v.open_orders_stuck_s();
    o.gauge(
        "shutdown_open_orders_stuck_seconds",
        "Seconds open orders have stayed above zero since the shutdown/drain under way began (0 otherwise).",
        stuck,
    );
    o.gauge(
        "shutdown_open_orders_stuck_alert",
        "1 when open orders have stayed above zero for more than 60 s during a shutdown (the runbook's alert).",
        b(stuck > OPEN_ORDERS_STUCK_ALERT_S),
    );

    // Positions and P&L.
    o.gauge(
        "positions_open",
        "Positions that are not flat.",
        e.positions_open as f64,
    );
    o.family(
        "position_lots",
        "Signed position per venue, instrument and account, in lots.",
        t.positions
            .iter()
            .map(|p| {
                (
                    labels(&[
                        ("venue", &p.venue),
                        ("instrument", &p.instrument),
                        ("account", &p.account),
                    ]),
                    p.figures.qty as f64 / QTY_SCALE as f64,
                )
            })
            .collect(),
    );
    o.gauge(
        "pnl",
        "P&L at the engine's marks, currency units.",
        money(e.pnl),
    );
    o.gauge("pnl_peak", "Highest P&L this run.", money(e.pnl_peak));
    o.gauge(
        "pnl_drawdown",
        "Peak P&L minus P&L (>= 0).",
        money(e.pnl_peak.saturating_sub(e.pnl)),
    );
    o.gauge(
        "flatten_slippage",
        "Slippage of the flattening against the mid at its start (a cost is positive).",
        money(e.flatten_slippage),
    );
    if let Some(limit) = alerts.loss_alert {
        o.gauge(
            "pnl_loss_alert_threshold",
            "Loss that raises killswitch_pnl_loss_alert.",
            limit,
        );
        o.gauge(
            "pnl_loss_alert",
            "1 when the loss (including flatten slippage) exceeds the threshold.",
            b(-(money(e.pnl) - money(e.flatten_slippage).max(0.0)) > limit),
        );
    }

    // Rejects.
    o.counter(
        "orders_sent",
        "New orders written to venues.",
        e.orders_sent,
    );
    o.counter(
        "orders_acked",
        "New orders accepted by venues.",
        e.orders_acked,
    );
    o.counter("orders_rejected", "New orders rejected.", e.orders_rejected);
    o.counter("fills", "Fills.", e.fills);
    let rate = e.reject_rate_ppm as f64 / 1e6;
    o.gauge(
        "reject_rate",
        "Rejected / (accepted + rejected) over the engine's window (ratio).",
        rate,
    );
    o.gauge(
        "reject_rate_window_seconds",
        "Window of killswitch_reject_rate.",
        e.reject_window_ms as f64 / 1e3,
    );
    o.gauge(
        "reject_rate_alert",
        "1 when the reject rate is above 5 % (the runbook: high rate indicates exchange issues).",
        b(rate > REJECT_RATE_ALERT),
    );
    o.family(
        "venue_reject_rate",
        "Reject rate per venue over the engine's window (ratio).",
        t.venues
            .iter()
            .map(|r| {
                (
                    labels(&[("venue", &r.name)]),
                    r.reject_rate_ppm as f64 / 1e6,
                )
            })
            .collect(),
    );

    // Components: strategies and connections.
    o.gauge(
        "active_strategies",
        "Strategies running.",
        e.active_strategies as f64,
    );
    o.family(
        "strategy_status",
        "1 for each strategy's status.",
        t.strategies
            .iter()
            .map(|r| {
                (
                    labels(&[("strategy", &r.name), ("status", r.status.as_str())]),
                    1.0,
                )
            })
            .collect(),
    );
    o.family(
        "strategy_last_signal_age_seconds",
        "Seconds since each strategy's last trading signal (NaN: none).",
        t.strategies
            .iter()
            .map(|r| {
                (
                    labels(&[("strategy", &r.name)]),
                    age_s(v.read_wall_ns, r.last_signal_wall_ns),
                )
            })
            .collect(),
    );
    o.family(
        "venue_connection_up",
        "1 while a venue connection (order-entry, market-data) is up.",
        t.venues
            .iter()
            .flat_map(|r| {
                [
                    ("order-entry", r.order_entry),
                    ("market-data", r.market_data),
                ]
                .map(|(c, st)| {
                    (
                        labels(&[
                            ("venue", &r.name),
                            ("connection", c),
                            ("state", st.as_str()),
                        ]),
                        b(st == killswitch::control::telemetry::ConnState::Up),
                    )
                })
            })
            .collect(),
    );
    o.family(
        "venue_heartbeat_age_seconds",
        "Seconds since each venue session's last sign of life (NaN: none).",
        t.venues
            .iter()
            .map(|r| {
                (
                    labels(&[("venue", &r.name)]),
                    age_s(v.read_wall_ns, r.last_heartbeat_wall_ns),
                )
            })
            .collect(),
    );

    // The automatic rules (configured ones only): graded warnings as gauges.
    let rule_rows = |f: fn(&killswitch::rules::RuleGauge) -> f64| -> Vec<(Labels, f64)> {
        v.rules
            .iter()
            .map(|r| (labels(&[("rule", r.rule)]), f(&r.gauge)))
            .collect()
    };
    o.family(
        "rule_limit_usage_ratio",
        "How close each automatic rule is to its limit (1 = at the limit; it trips above).",
        rule_rows(|g| g.usage_ppm as f64 / 1e6),
    );
    o.family(
        "rule_warning_grade_percent",
        "Warning grade each automatic rule holds: 0, 50, 75, 90, 95; 100 once tripped.",
        rule_rows(|g| g.grade as f64),
    );
    o.family(
        "rule_tripped",
        "1 while an automatic rule has tripped and awaits a reset.",
        rule_rows(|g| if g.tripped { 1.0 } else { 0.0 }),
    );

    // The endpoint itself.
    let l = |a: &AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    o.counter(
        "http_requests_ok",
        "Requests this endpoint answered 2xx.",
        l(&endpoint.ok),
    );
    o.counter(
        "http_requests_client_error",
        "Requests answered 4xx.",
        l(&endpoint.client_errors),
    );
    o.counter(
        "http_requests_unauthorized",
        "Requests answered 401 (wrong or missing token).",
        l(&endpoint.unauthorized),
    );
    o.counter(
        "http_audit_suppressed",
        "Audit entries (no-op trips, unauthorized requests) not written past one per second.",
        l(&endpoint.audit_suppressed),
    );

    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &o.0);
    out
}
