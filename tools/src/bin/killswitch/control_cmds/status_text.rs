//! `killswitch status` as text: the switch, the engine, its gateway, the
//! lease and standby, the drain, then the engine's published telemetry
//! and the planned shutdown's progress.

use killswitch::clock::{format_duration_ns, format_wall, mono_ns};
use killswitch::control::{Mode, Status};

/// The active-role lease and the hot standby, when either is in use.
fn print_lease_and_standby(s: &Status) {
    let l = &s.lease;
    if l.epoch != 0 {
        let holder = if l.holder == 0 {
            "released (no holder)".to_string()
        } else {
            format!(
                "pid {} {}, expires in {}{}",
                l.holder,
                if l.holder_alive { "alive" } else { "DEAD" },
                format_duration_ns(l.lapses_in_ns),
                if l.lapses_in_ns == 0 { " (LAPSED)" } else { "" }
            )
        };
        outln!("lease       epoch {}, holder {holder}", l.epoch);
    }
    if let Some(sb) = &s.standby {
        outln!(
            "standby     pid {} {}: applied to journal seq {}, {} record(s) behind at its last look, lag {} (max {}), published {} ago",
            sb.pid,
            if sb.alive { "alive" } else { "DEAD" },
            sb.applied_seq,
            sb.behind_records,
            format_duration_ns(sb.lag_ns),
            format_duration_ns(sb.max_lag_ns),
            format_duration_ns(sb.age_ns)
        );
    }
}

pub(super) fn print_status(s: &Status) {
    let headline = match (s.mode, s.scoped) {
        (Mode::Normal, false) => "NORMAL: trading allowed".to_string(),
        (Mode::Normal, true) => "SCOPED: some scopes tripped, the rest trades".to_string(),
        (m, scoped) => format!(
            "{}: {}{}",
            m.as_str().to_uppercase(),
            match m {
                Mode::ReduceOnly => "only position-reducing orders pass",
                Mode::HaltNew => "no new orders pass",
                _ => "no new orders pass; open orders are cancelled",
            },
            if scoped { " (plus scoped trips)" } else { "" }
        ),
    };
    outln!("engine      {} ({})", s.engine, s.path);
    outln!("state       {headline}");
    outln!(
        "generation  {} (state word {:#018x})",
        s.generation,
        s.state_word
    );
    for sc in &s.scopes {
        outln!("scope       {} {} -> {}", sc.kind, sc.name, sc.mode);
    }
    if let Some(t) = &s.trip {
        outln!(
            "tripped     {} by {} (pid {}, uid {}), {} ago: \"{}\"",
            format_wall(t.wall_ns),
            t.source.as_str(),
            t.pid,
            t.uid,
            format_duration_ns(mono_ns().saturating_sub(t.mono_ns)),
            t.reason
        );
    }
    let owner = if s.owner.pid == 0 {
        "none attached".to_string()
    } else if s.owner.alive {
        format!("pid {} alive", s.owner.pid)
    } else if s.generation != 0 && (s.mode != Mode::Normal || s.scoped) {
        format!(
            "pid {} DEAD (the block outlives it; the trip stays latched)",
            s.owner.pid
        )
    } else {
        format!("pid {} DEAD (the block outlives it)", s.owner.pid)
    };
    let hb = s
        .heartbeat_age_ms
        .map(|ms| format!(", last heartbeat {ms:.1} ms ago"))
        .unwrap_or_default();
    outln!("engine pid  {owner}{hb}");
    if s.owner.pid != 0 {
        let lag = if s.gateway_acked_generation >= s.generation {
            "in step".to_string()
        } else {
            format!("BEHIND by {}", s.generation - s.gateway_acked_generation)
        };
        outln!(
            "gateway     acked generation {} ({lag}); {} orders sent",
            s.gateway_acked_generation,
            s.gateway_orders_sent
        );
    }
    print_lease_and_standby(s);
    let d = &s.drain;
    if d.generation != 0 || d.phase != killswitch::control::DrainPhase::Idle {
        let notes: Vec<&str> = [
            (
                d.recovery,
                "start-up recovery of a previous run's open orders",
            ),
            (d.escalated, "a newer trip widened it"),
            (d.gateway_ack_late, "GATEWAY ACK LATE"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, t)| *t)
        .collect();
        outln!(
            "drain       {:?} for generation {}{}: {} open at snapshot, {} cancels sent, {} confirmed, {} UNKNOWN, {} fills during drain, checkpoint seq {}",
            d.phase, d.generation,
            if notes.is_empty() { String::new() } else { format!(" ({})", notes.join(", ")) },
            d.open_at_snapshot, d.cancels_sent, d.orders_confirmed, d.orders_unknown,
            d.fills_during_drain, d.checkpoint_seq
        );
    }
    for b in &s.reset_blockers {
        outln!("reset       BLOCKED: {b}");
    }
}

pub(super) fn print_telemetry(v: &killswitch_tools::admin::view::EngineView) {
    if v.reset_needs_risk_role {
        outln!("reset       needs the RISK role (a trip by risk or an automatic rule is in force): `reset --role risk --token-file FILE`");
    }
    if let Some(e) = v.telemetry.engine {
        outln!(
            "engine      status {} since {}{}",
            e.status.as_str(),
            format_wall(e.status_since_wall_ns),
            v.telemetry_age_ms
                .map(|ms| format!(", telemetry {ms:.0} ms old"))
                .unwrap_or_default()
        );
    }
    if let Some(a) = &v.telemetry.announcement {
        outln!(
            "announced   planned shutdown at {}: \"{}\"",
            format_wall(a.shutdown_at_wall_ns),
            a.reason
        );
    }
    print_planned(&v.planned_shutdown);
    for l in killswitch_tools::admin::dashboard::telemetry_tables(v) {
        outln!("{}", l.text);
    }
}

/// The planned shutdown's progress, the deployment lock and a
/// reconciliation mismatch awaiting acknowledgement.
fn print_planned(p: &killswitch_tools::admin::view::PlannedShutdownView) {
    if let (Some(step), Some(state)) = (p.step, p.state) {
        let since = p.step_since_wall_ns.map(format_wall).unwrap_or_default();
        match state {
            "running" => outln!(
                "shutdown    planned shutdown at step {step}/13 \"{}\", running since {since} (request {})",
                p.step_title.unwrap_or(""),
                p.request.unwrap_or(0)
            ),
            _ => outln!(
                "shutdown    planned shutdown finished {since} (request {}): {}; `killswitch verify-shutdown` checks what it left",
                p.request.unwrap_or(0),
                if p.clean == Some(true) {
                    "clean"
                } else {
                    "WITH FINDINGS (see its report)"
                }
            ),
        }
    }
    if p.locked {
        outln!(
            "lock        deployments and configuration LOCKED by pid {} (a new engine start or config reload is refused; `killswitch unlock` if that process died)",
            p.locked_by_pid.unwrap_or(0)
        );
    }
    if p.reconcile_mismatch {
        outln!("reconcile   MISMATCH found by the last planned shutdown, not acknowledged: `killswitch reconcile` shows the table, `killswitch reconcile --ack` acknowledges it (reset is refused until then)");
    }
}
