//! What the venues' audit logs say about a rolling restart: each
//! failover's evidence (adoption at the takeover, orders between a
//! hand-over and its takeover, the gap in order flow, the merged
//! timeline) and the positions against the venues' fills.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use killswitch::clock::format_duration_ns;
use killswitch::control::ControlBlock;
use killswitch_tools::engine::{EngineConfig, EngineReport};
use killswitch_tools::venue_server::audit::{working_orders, AuditEntry};
use serde::Serialize;

/// One failover as the venues saw it.
#[derive(Clone, Debug, Serialize)]
pub struct FailoverEvidence {
    /// `failover` or `failback`.
    pub what: String,
    /// The engine that handed over, and the one that took over.
    pub from_pid: u32,
    /// The new active.
    pub to_pid: u32,
    /// Orders working at the venues at the takeovers.
    pub working_at_takeover: usize,
    /// Of those, not named by the new active (not adopted): must be 0.
    pub not_adopted: Vec<String>,
    /// New orders between a hand-over and its takeover: must be 0.
    pub new_orders_in_between: usize,
    /// Longest pause between two new orders around the takeover, ns (the
    /// last before the hand-over, the first after the takeover).
    pub gap_ns: u64,
    /// The old active's positions when it stopped vs the venues' fills up
    /// to its hand-over, where they differ: (venue/instrument, engine,
    /// venue). Information, not a check: fills the venue wrote just
    /// before the hand-over may still have been in flight, unread by the
    /// old active; the new active learns them from its status requests at
    /// the takeover (the journal's final positions, checked, include them).
    pub positions_in_flight_at_hand_over: Vec<(String, i64, i64)>,
    /// New orders written to venues through this control block up to the
    /// old active's stop (its gateway continues the block's count, so
    /// this is every engine's before it).
    pub old_active_orders_sent: u64,
    /// The venues' count of new orders up to the hand-over: equal to the
    /// above when the old active sent nothing after it.
    pub venue_orders_before_hand_over: usize,
    /// The two engines' timeline lines, merged in clock order.
    pub timeline: Vec<String>,
}

pub(super) fn new_orders<'a>(log: &'a [AuditEntry], session: &str) -> Vec<&'a AuditEntry> {
    log.iter()
        .filter(|e| e.is_new_order_from(session))
        .collect()
}

pub(super) fn merged_new_orders<'a>(
    audits: &'a [(String, Vec<AuditEntry>)],
    session: &str,
) -> Vec<&'a AuditEntry> {
    let mut all: Vec<&AuditEntry> = audits
        .iter()
        .flat_map(|(_, l)| new_orders(l, session))
        .collect();
    all.sort_by_key(|e| e.mono_ns);
    all
}

pub(super) fn events<'a>(log: &'a [AuditEntry], session: &str, event: &str) -> Vec<&'a AuditEntry> {
    log.iter()
        .filter(|e| e.is_event_of(session, event))
        .collect()
}

/// Signed fills (units of 10^-8 lots) by `venue/symbol` among `entries`.
pub(super) fn fills(
    venue: &str,
    entries: &[AuditEntry],
    session: &str,
    into: &mut BTreeMap<String, i64>,
) {
    for e in entries.iter().filter(|e| {
        e.session == session
            && e.dir == "out"
            && e.msg_type.as_deref() == Some("8")
            && e.field(150) == Some("F")
    }) {
        let q =
            killswitch_tools::fix::parse_fixed(e.field(32).unwrap_or("0").as_bytes()).unwrap_or(0);
        let key = format!("{venue}/{}", e.field(55).unwrap_or("?"));
        *into.entry(key).or_default() += if e.field(54) == Some("1") { q } else { -q };
    }
}

/// Positions by `venue/instrument` (accounts summed), zeros left out.
pub(super) fn engine_positions(r: &EngineReport) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for p in &r.positions {
        *out.entry(format!("{}/{}", p.venue, p.instrument))
            .or_default() += p.qty;
    }
    out.retain(|_, q| *q != 0);
    out
}

pub(super) fn mismatches(
    engine: &BTreeMap<String, i64>,
    venue: &BTreeMap<String, i64>,
) -> Vec<(String, i64, i64)> {
    let keys: BTreeSet<&String> = engine.keys().chain(venue.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let (e, v) = (
                engine.get(k).copied().unwrap_or(0),
                venue.get(k).copied().unwrap_or(0),
            );
            (e != v).then(|| (k.clone(), e, v))
        })
        .collect()
}

/// Reads each failover off the venues' logs: the k-th takeover of every
/// venue belongs to the k-th failover.
pub(super) fn failovers(
    audits: &[(String, Vec<AuditEntry>)],
    session: &str,
    handed: &[(&str, u32, u32, Option<EngineReport>)],
    logs: &[String],
) -> Vec<FailoverEvidence> {
    let mut out = Vec::new();
    for (k, (what, from, to, report)) in handed.iter().enumerate() {
        let mut ev = FailoverEvidence {
            what: what.to_string(),
            from_pid: *from,
            to_pid: *to,
            working_at_takeover: 0,
            not_adopted: Vec::new(),
            new_orders_in_between: 0,
            gap_ns: 0,
            positions_in_flight_at_hand_over: Vec::new(),
            old_active_orders_sent: report.as_ref().map(|r| r.gateway_orders_sent).unwrap_or(0),
            venue_orders_before_hand_over: 0,
            timeline: Vec::new(),
        };
        let mut found = 0;
        let mut venue_fills = BTreeMap::new();
        let (mut first_hold, mut last_takeover) = (u64::MAX, 0u64);
        for (venue, log) in audits {
            let holds = events(log, session, "takeover-hold");
            let takeovers = events(log, session, "takeover");
            let (Some(hold), Some(take)) = (holds.get(k), takeovers.get(k)) else {
                continue;
            };
            found += 1;
            first_hold = first_hold.min(hold.mono_ns);
            last_takeover = last_takeover.max(take.mono_ns);
            let hold_at = log.iter().position(|e| std::ptr::eq(e, *hold)).unwrap_or(0);
            let take_at = log.iter().position(|e| std::ptr::eq(e, *take)).unwrap_or(0);
            ev.venue_orders_before_hand_over += new_orders(&log[..hold_at], session).len();
            ev.new_orders_in_between += new_orders(&log[hold_at..take_at], session).len();
            fills(venue, &log[..hold_at], session, &mut venue_fills);
            let working = working_orders(&log[..=take_at], session);
            // The next takeover's end bounds this one's adoption.
            let end = takeovers
                .get(k + 1)
                .and_then(|n| log.iter().position(|e| std::ptr::eq(e, *n)))
                .unwrap_or(log.len());
            let named: BTreeSet<&str> = log[take_at..end]
                .iter()
                .filter(|e| e.session == session && e.dir == "in")
                .filter_map(|e| match e.msg_type.as_deref() {
                    Some("H") => e.field(11),
                    Some("F" | "G") => e.field(41),
                    _ => None,
                })
                .collect();
            ev.working_at_takeover += working.len();
            ev.not_adopted.extend(
                working
                    .iter()
                    .filter(|id| !named.contains(id.as_str()))
                    .map(|id| format!("{venue} {id}")),
            );
        }
        if found == 0 {
            continue;
        }
        let all = merged_new_orders(audits, session);
        let before = all
            .iter()
            .filter(|e| e.mono_ns <= first_hold)
            .map(|e| e.mono_ns)
            .max();
        let after = all
            .iter()
            .filter(|e| e.mono_ns > last_takeover)
            .map(|e| e.mono_ns)
            .min();
        ev.gap_ns = match (before, after) {
            (Some(b), Some(a)) => a - b,
            _ => 0,
        };
        venue_fills.retain(|_, q| *q != 0);
        if let Some(r) = report {
            ev.positions_in_flight_at_hand_over = mismatches(&engine_positions(r), &venue_fills);
        }
        ev.timeline = timeline(logs, k);
        out.push(ev);
    }
    out
}

/// The engines' `failover: ... at mono N` lines of the `k`-th failover,
/// merged in clock order: from its "stop new orders" to the next one.
pub(super) fn timeline(logs: &[String], k: usize) -> Vec<String> {
    let mut lines: Vec<(u64, String)> = logs
        .iter()
        .flat_map(|l| l.lines())
        .filter(|l| l.contains("failover: "))
        .filter_map(|l| {
            let at: u64 = l.rsplit("at mono ").next()?.trim().parse().ok()?;
            Some((at, l.trim_start_matches("ks-engine: ").to_string()))
        })
        .collect();
    lines.sort();
    let starts: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, (_, l))| l.contains("failover: stop new orders"))
        .map(|(i, _)| i)
        .collect();
    let Some(&from) = starts.get(k) else {
        return Vec::new();
    };
    let to = starts.get(k + 1).copied().unwrap_or(lines.len());
    let t0 = lines[from].0;
    lines[from..to]
        .iter()
        .map(|(t, l)| {
            let text = l.rsplit_once(" at mono ").map(|(a, _)| a).unwrap_or(l);
            format!("+{:>10}  {text}", format_duration_ns(t - t0))
        })
        .collect()
}

/// The positions at the end, three ways, against every fill at the
/// venues: the journal's (rebuilt), the final active's report, and the
/// standby's (what it holds from following the journal: what a next
/// failover would start from).
pub(super) fn final_positions(
    work: &Path,
    audits: &[(String, Vec<AuditEntry>)],
    session: &str,
    cfg: &EngineConfig,
    active: Option<&EngineReport>,
    standby: Option<&serde_json::Value>,
) -> (bool, String) {
    use killswitch::control::ScopeKind;
    let rebuilt = match killswitch::journal::rebuild(&work.join("journal")) {
        Ok(r) => r,
        Err(e) => return (false, format!("journal: {e}")),
    };
    let block = match ControlBlock::open(work, &cfg.name) {
        Ok(b) => b,
        Err(e) => return (false, format!("control block: {e}")),
    };
    let key = |venue: u16, instrument: u16| {
        let name = |kind, i| block.scope_label(kind, i);
        format!(
            "{}/{}",
            name(ScopeKind::Venue, venue),
            name(ScopeKind::Instrument, instrument)
        )
    };
    let mut journal = BTreeMap::new();
    for (k, p) in &rebuilt.state.positions {
        *journal.entry(key(k.venue, k.instrument)).or_default() += p.qty.0;
    }
    journal.retain(|_, q: &mut i64| *q != 0);
    let mut held = BTreeMap::new();
    for (k, q) in standby
        .and_then(|s| s["positions"].as_object())
        .into_iter()
        .flatten()
    {
        let mut parts = k.split('/').map(|p| p.parse::<u16>().unwrap_or(u16::MAX));
        let (v, i) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        *held.entry(key(v, i)).or_default() += q.as_i64().unwrap_or(0);
    }
    held.retain(|_, q: &mut i64| *q != 0);
    let mut venue = BTreeMap::new();
    for (v, log) in audits {
        fills(v, log, session, &mut venue);
    }
    venue.retain(|_, q| *q != 0);
    let mut diffs = Vec::new();
    for (who, theirs) in [
        ("journal", Some(journal.clone())),
        ("active's report", active.map(engine_positions)),
        ("standby", standby.map(|_| held.clone())),
    ] {
        match theirs {
            Some(p) => {
                let d = mismatches(&p, &venue);
                if !d.is_empty() {
                    diffs.push(format!("{who}: {d:?} (instrument, {who}, venues)"));
                }
            }
            None => diffs.push(format!("{who}: no report")),
        }
    }
    if diffs.is_empty() {
        (
            true,
            format!(
                "{} position(s): {}",
                venue.len(),
                venue
                    .iter()
                    .map(|(k, q)| format!("{k} {}", *q as f64 / 1e8))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    } else {
        (false, diffs.join("; "))
    }
}
