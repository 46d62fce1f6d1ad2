//! The text of `killswitch watch`: one [`EngineView`] as lines, the same
//! for the terminal dashboard and for `--once --plain`. During a shutdown
//! or a drain it is the runbook's "SHUTDOWN IN PROGRESS" view.

use killswitch::clock::{format_duration_ns, format_wall};
use killswitch::control::telemetry::{ConnState, EngineStatus, StrategyStatus};
use killswitch::control::{AuditKind, Mode};
use killswitch::order::{PRICE_SCALE, QTY_SCALE};

use super::metrics::{OPEN_ORDERS_STUCK_ALERT_S, REJECT_RATE_ALERT};
use super::view::EngineView;

/// How a line should stand out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    /// Plain.
    Normal,
    /// A heading.
    Heading,
    /// Fine (✓).
    Good,
    /// Needs a look.
    Warn,
    /// An alert.
    Alert,
}

/// One line of the dashboard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DashLine {
    /// Its text.
    pub text: String,
    /// Its tone.
    pub tone: Tone,
}

const RULE: &str = "═══════════════════════════════════════════════════════════";

fn hms(wall_ns: u64) -> String {
    let s = format_wall(wall_ns);
    s.get(11..19).unwrap_or("--:--:--").to_string()
}

fn elapsed(ns: u64) -> String {
    let s = ns / 1_000_000_000;
    if s >= 3600 {
        format!("{}h {}m {}s", s / 3600, s % 3600 / 60, s % 60)
    } else if s >= 60 {
        format!("{}m {}s", s / 60, s % 60)
    } else {
        format!("{}s", s)
    }
}

fn money(units: i64) -> String {
    format!("{:.2}", units as f64 / PRICE_SCALE as f64)
}

struct Lines(Vec<DashLine>);

impl Lines {
    fn push(&mut self, tone: Tone, text: impl Into<String>) {
        self.0.push(DashLine {
            text: text.into(),
            tone,
        });
    }
}

/// The recent actions: audit entries and the drain's milestones, oldest
/// first, at most `max`.
fn recent_actions(v: &EngineView, max: usize) -> Vec<(u64, String)> {
    let mut out: Vec<(u64, String)> = v
        .recent_actions
        .iter()
        .map(|e| {
            let who = if e.identity.is_empty() {
                format!("{} pid {}", e.source.as_str(), e.pid)
            } else {
                format!(
                    "{} {} ({})",
                    e.source.as_str(),
                    e.identity,
                    e.role.map_or("no role", |r| r.as_str())
                )
            };
            let what = match e.kind {
                AuditKind::Trip => format!("TRIP {}", e.mode.as_str().to_uppercase()),
                AuditKind::TripNoop => "trip (no-op)".to_string(),
                AuditKind::Reset => format!("RESET{}", if e.forced { " (forced)" } else { "" }),
                AuditKind::ResetRefused => "reset REFUSED".to_string(),
                AuditKind::ResetNoop => "reset (no-op)".to_string(),
                AuditKind::Unauthorized => "UNAUTHORIZED request".to_string(),
                AuditKind::Warning => "warning".to_string(),
            };
            (e.wall_ns, format!("{what} by {who}: \"{}\"", e.reason))
        })
        .collect();
    let d = &v.status.drain;
    let wall = |t: u64| {
        v.read_wall_ns
            .saturating_sub(v.read_mono_ns.saturating_sub(t))
    };
    if d.t_trip != 0 {
        let since = |t: u64| format_duration_ns(t.saturating_sub(d.t_trip));
        let mut add = |t: u64, text: String| {
            if t != 0 {
                out.push((wall(t), text));
            }
        };
        add(
            d.t_gateway_ack,
            format!(
                "Gateway acknowledged generation {}: no new order reaches a venue (+{}) ✓",
                d.generation,
                since(d.t_gateway_ack)
            ),
        );
        add(
            d.t_first_cancel,
            format!(
                "Canceling open orders ({} pending) (+{})",
                d.open_at_snapshot,
                since(d.t_first_cancel)
            ),
        );
        add(
            d.t_last_ack,
            format!(
                "Cancel answers: {} confirmed, {} unknown (latest +{})",
                d.orders_confirmed,
                d.orders_unknown,
                since(d.t_last_ack)
            ),
        );
        add(
            d.t_checkpoint,
            format!(
                "Quick checkpoint written, journal seq {} (+{})",
                d.checkpoint_seq,
                since(d.t_checkpoint)
            ),
        );
        add(
            d.t_done,
            format!("Drain {:?} (+{})", d.phase, since(d.t_done)),
        );
    }
    out.sort_by_key(|(t, _)| *t);
    let keep = out.len().saturating_sub(max);
    out.drain(..keep);
    out
}

fn connections_summary(v: &EngineView) -> (String, Tone) {
    let venues = &v.telemetry.venues;
    if venues.is_empty() {
        return ("none published".into(), Tone::Warn);
    }
    let up = venues
        .iter()
        .filter(|r| r.order_entry == ConnState::Up)
        .count();
    let closing = venues
        .iter()
        .any(|r| matches!(r.order_entry, ConnState::Closing) || r.state.as_str() == "draining");
    let tone = if up == 0 { Tone::Good } else { Tone::Normal };
    (
        format!(
            "{up} connected{}",
            if closing { " (closing...)" } else { "" }
        ),
        tone,
    )
}

fn market_data_summary(v: &EngineView) -> (String, Tone) {
    let rows = &v.telemetry.venues;
    let up = rows
        .iter()
        .filter(|r| r.market_data == ConnState::Up)
        .count();
    if rows.iter().all(|r| r.market_data == ConnState::None) && !rows.is_empty() {
        ("no feed (none subscribed)".into(), Tone::Normal)
    } else if up == 0 {
        ("STOPPED ✓".into(), Tone::Good)
    } else {
        (format!("{up} feed(s) up"), Tone::Normal)
    }
}

/// The dashboard's lines for `v`.
pub fn lines(v: &EngineView) -> Vec<DashLine> {
    let mut l = Lines(Vec::new());
    let s = &v.status;
    let e = v.telemetry.engine;
    let status = e.map_or(EngineStatus::Unknown, |e| e.status);
    let open = e.map_or(0, |e| e.open_orders);
    let drained =
        s.drain.generation != 0 && matches!(status, EngineStatus::Offline | EngineStatus::Failed);
    if v.shutdown_in_progress() || drained {
        l.push(Tone::Heading, RULE);
        l.push(
            if drained { Tone::Good } else { Tone::Alert },
            if drained {
                "SHUTDOWN COMPLETE"
            } else {
                "SHUTDOWN IN PROGRESS"
            },
        );
        l.push(Tone::Heading, RULE);
        l.push(Tone::Normal, format!("Engine: {} ({})", s.engine, s.path));
        l.push(
            Tone::Normal,
            format!(
                "Status: {}{}",
                if status == EngineStatus::Unknown && s.drain.phase.is_running() {
                    "DRAINING".to_string()
                } else {
                    status.as_str().to_string()
                },
                if s.owner.alive {
                    format!("   (engine pid {} alive)", s.owner.pid)
                } else {
                    format!("   (engine pid {} not running)", s.owner.pid)
                }
            ),
        );
        if let Some(start) = v.shutdown_started_wall_ns().or_else(|| {
            (s.drain.t_trip != 0).then(|| {
                v.read_wall_ns
                    .saturating_sub(v.read_mono_ns.saturating_sub(s.drain.t_trip))
            })
        }) {
            l.push(Tone::Normal, format!("Started: {}", format_wall(start)));
            l.push(
                Tone::Normal,
                format!("Elapsed: {}", elapsed(v.read_wall_ns.saturating_sub(start))),
            );
        }
        l.push(Tone::Normal, "");
        let stuck = v.open_orders_stuck_s();
        l.push(
            if open == 0 {
                Tone::Good
            } else if stuck > OPEN_ORDERS_STUCK_ALERT_S {
                Tone::Alert
            } else {
                Tone::Warn
            },
            format!(
                "Open Orders:        {open:<6} → Target: 0{}",
                if open == 0 {
                    " ✓".to_string()
                } else if stuck > OPEN_ORDERS_STUCK_ALERT_S {
                    format!("   ALERT: above zero for {stuck:.0} s")
                } else {
                    String::new()
                }
            ),
        );
        let positions = e.map_or(0, |e| e.positions_open);
        l.push(
            if positions == 0 {
                Tone::Good
            } else {
                Tone::Normal
            },
            format!("Positions:          {positions:<6} → Target: 0 (if flattening)"),
        );
        let active = e.map_or(0, |e| e.active_strategies);
        l.push(
            if active == 0 { Tone::Good } else { Tone::Warn },
            format!(
                "Active Strategies:  {active:<6}{}",
                if active == 0 { "✓" } else { "" }
            ),
        );
        let (md, md_tone) = market_data_summary(v);
        l.push(md_tone, format!("Market Data:        {md}"));
        let (conn, conn_tone) = connections_summary(v);
        l.push(conn_tone, format!("Exchange Connections: {conn}"));
        let d = &s.drain;
        l.push(
            if d.orders_unknown > 0 {
                Tone::Alert
            } else {
                Tone::Normal
            },
            format!(
                "Drain: {:?}, generation {}: {} open at snapshot, {} confirmed, {} unknown{}",
                d.phase,
                d.generation,
                d.open_at_snapshot,
                d.orders_confirmed,
                d.orders_unknown,
                if d.gateway_ack_late {
                    " (GATEWAY ACK LATE)"
                } else {
                    ""
                }
            ),
        );
        l.push(Tone::Normal, "");
        l.push(Tone::Heading, "Recent Actions:");
        for (t, text) in recent_actions(v, 8) {
            l.push(Tone::Normal, format!("[{}] {text}", hms(t)));
        }
        l.push(Tone::Heading, RULE);
        return l.0;
    }

    // Normal view.
    let since = e.map_or(String::new(), |e| {
        if e.status_since_wall_ns == 0 {
            String::new()
        } else {
            format!(
                " since {} ({})",
                hms(e.status_since_wall_ns),
                elapsed(v.read_wall_ns.saturating_sub(e.status_since_wall_ns))
            )
        }
    });
    l.push(
        Tone::Heading,
        format!("ENGINE {}   {}{since}", s.engine, status.as_str()),
    );
    if let Some(a) = &v.telemetry.announcement {
        l.push(
            Tone::Warn,
            format!(
                "Planned shutdown at {}: \"{}\"",
                format_wall(a.shutdown_at_wall_ns),
                a.reason
            ),
        );
    }
    let switch = match (s.mode, s.scoped) {
        (Mode::Normal, false) => "NORMAL".to_string(),
        (Mode::Normal, true) => "SCOPED trips in force".to_string(),
        (m, sc) => format!(
            "{}{}",
            m.as_str().to_uppercase(),
            if sc { " + scoped" } else { "" }
        ),
    };
    l.push(
        if s.mode == Mode::Normal && !s.scoped {
            Tone::Good
        } else {
            Tone::Alert
        },
        format!(
            "Switch: {switch}   generation {}{}",
            s.generation,
            if v.reset_needs_risk_role {
                "   (reset needs the risk role)"
            } else {
                ""
            }
        ),
    );
    l.push(
        if s.owner.alive {
            Tone::Normal
        } else {
            Tone::Warn
        },
        format!(
            "Engine pid {} {}{}",
            s.owner.pid,
            if s.owner.alive {
                "alive"
            } else {
                "NOT RUNNING"
            },
            s.heartbeat_age_ms
                .map(|ms| format!(", heartbeat {ms:.1} ms ago"))
                .unwrap_or_default()
        ),
    );
    l.0.extend(telemetry_tables(v));
    l.push(Tone::Normal, "");
    l.push(Tone::Heading, "Recent actions:");
    for (t, text) in recent_actions(v, 5) {
        l.push(Tone::Normal, format!("[{}] {text}", hms(t)));
    }
    l.0
}

/// The engine's own figures and tables (engine status, open orders, P&L,
/// rejects, strategies, connections, positions): the part of the
/// dashboard that `killswitch status` prints too.
pub fn telemetry_tables(v: &EngineView) -> Vec<DashLine> {
    let mut l = Lines(Vec::new());
    let e = v.telemetry.engine;
    match e {
        None => l.push(
            Tone::Warn,
            "The engine has not published telemetry (not started, or an engine without it).",
        ),
        Some(e) => {
            let rate = e.reject_rate_ppm as f64 / 1e6;
            l.push(
                Tone::Normal,
                format!(
                    "Open orders: {}   Positions: {}   P&L: {} (peak {})",
                    e.open_orders,
                    e.positions_open,
                    money(e.pnl),
                    money(e.pnl_peak)
                ),
            );
            l.push(
                if rate > REJECT_RATE_ALERT {
                    Tone::Alert
                } else {
                    Tone::Normal
                },
                format!(
                    "Orders sent {}   accepted {}   rejected {}   reject rate {:.2} % over {} s{}",
                    e.orders_sent,
                    e.orders_acked,
                    e.orders_rejected,
                    rate * 100.0,
                    e.reject_window_ms / 1000,
                    if rate > REJECT_RATE_ALERT {
                        "   ALERT > 5 %"
                    } else {
                        ""
                    }
                ),
            );
        }
    }
    l.push(Tone::Normal, "");
    l.push(
        Tone::Heading,
        format!(
            "{:<20} {:<9} {:<12} {:>7} {:>9} {:>8}",
            "STRATEGY", "STATUS", "LAST SIGNAL", "OPEN", "SENT", "REJECTED"
        ),
    );
    for r in &v.telemetry.strategies {
        l.push(
            match r.status {
                StrategyStatus::Running => Tone::Normal,
                StrategyStatus::Failed => Tone::Alert,
                _ => Tone::Warn,
            },
            format!(
                "{:<20} {:<9} {:<12} {:>7} {:>9} {:>8}",
                r.name,
                r.status.as_str(),
                if r.last_signal_wall_ns == 0 {
                    "-".to_string()
                } else {
                    hms(r.last_signal_wall_ns)
                },
                r.open_orders,
                r.orders_sent,
                r.orders_rejected
            ),
        );
    }
    l.push(Tone::Normal, "");
    l.push(
        Tone::Heading,
        format!(
            "{:<12} {:<12} {:<12} {:<9} {:<15} {:>7}",
            "VENUE", "ORDER ENTRY", "MARKET DATA", "STATE", "LAST HEARTBEAT", "OPEN"
        ),
    );
    for r in &v.telemetry.venues {
        l.push(
            if r.order_entry == ConnState::Up {
                Tone::Normal
            } else {
                Tone::Warn
            },
            format!(
                "{:<12} {:<12} {:<12} {:<9} {:<15} {:>7}",
                r.name,
                r.order_entry.as_str(),
                r.market_data.as_str(),
                r.state.as_str(),
                if r.last_heartbeat_wall_ns == 0 {
                    "-".to_string()
                } else {
                    hms(r.last_heartbeat_wall_ns)
                },
                r.open_orders
            ),
        );
    }
    if !v.telemetry.positions.is_empty() {
        l.push(Tone::Normal, "");
        l.push(
            Tone::Heading,
            format!(
                "{:<12} {:<12} {:<12} {:>12} {:>12}",
                "VENUE", "INSTRUMENT", "ACCOUNT", "POSITION", "P&L"
            ),
        );
        for p in &v.telemetry.positions {
            l.push(
                Tone::Normal,
                format!(
                    "{:<12} {:<12} {:<12} {:>12} {:>12}",
                    p.venue,
                    p.instrument,
                    p.account,
                    format!("{:.2}", p.figures.qty as f64 / QTY_SCALE as f64),
                    money(p.figures.pnl)
                ),
            );
        }
    }
    l.0
}
