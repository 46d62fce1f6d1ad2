//! `killswitch drill --scenario rolling-restart`: the runbook's "Rolling
//! Restart (Zero-Downtime)" end to end, on real processes, over the wire.
//!
//! The venues run as their own processes (`killswitch venue`, offering the
//! designated backup's session takeover); engine A starts as the active
//! (holding the active-role lease), engine B as its hot standby
//! (`--standby`). With orders flowing: `killswitch failover` (A hands over
//! to B, then restarts by itself as B's standby: `[failover]
//! restart_as_standby`), `killswitch failback` (B hands back to A, and
//! restarts as A's standby), then `killswitch emergency` stops the active
//! (the drill's usual end) and SIGTERM the standby.
//!
//! The verdict is read from the venues' own audit logs, not the engines'
//! word: no ClOrdID received twice (duplicated 0); at each takeover, every
//! order the venue had working for the firm was named (adopted) by the new
//! active, and none was cancelled on a disconnect (lost 0: and after the
//! emergency nothing of the firm is left working, with the venues'
//! takeover grace period far longer than the drill, so their own cancel of
//! unadopted orders cannot be what emptied the book); no new order between
//! a hand-over and the takeover after it; each old active's positions at
//! its hand-over equal the venue's fills up to then, and the journal's
//! final positions equal all the fills. The gap in order flow (the venue's
//! clock) and each failover's timeline (the engines' logs) are printed,
//! measured, never asserted.

use std::collections::HashMap;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use killswitch::clock::format_duration_ns;
use killswitch_tools::engine::EngineReport;
use killswitch_tools::venue_server::audit::{working_orders, AuditEntry};
use serde::Serialize;

use crate::drill::{wait_child, work_dir, Check, DrillArgs, VenueMode};

mod evidence;
mod procs;

use crate::emergency::EmergencyReport;
use evidence::{
    events, failovers, final_positions, merged_new_orders, new_orders, FailoverEvidence,
};
use procs::{failover_cmd, wait_block, wait_standby, EngineProc};

/// The venues' takeover grace period in this drill: far longer than the
/// drill, so an order nobody adopted would still be working at the end.
pub const TAKEOVER_GRACE_MS: u64 = 600_000;

/// New orders the venues must receive in each trading phase.
const ORDERS_PER_PHASE: usize = 300;

/// Every wait of the drill (a loaded machine, a debug build).
const DEADLINE: Duration = Duration::from_secs(60);

/// Resting orders per market maker: a rolling restart adopts every resting
/// order at each takeover (one status request each), so the book is
/// smaller than the emergency drill's.
const OPEN_ORDERS_PER_MAKER: usize = 250;

/// The rolling-restart drill's report (`--json`).
#[derive(Clone, Debug, Serialize)]
pub struct RollingReport {
    /// Working directory.
    pub work_dir: String,
    /// PASS / FAIL.
    pub pass: bool,
    /// Checks.
    pub checks: Vec<Check>,
    /// Each failover.
    pub failovers: Vec<FailoverEvidence>,
    /// New orders the venues received in all.
    pub new_orders_total: usize,
    /// Longest pause between two new orders in the whole run, ns.
    pub longest_gap_ns: u64,
    /// `killswitch emergency` at the end.
    pub emergency: Option<EmergencyReport>,
    /// The final active's report.
    pub engine: Option<EngineReport>,
}

/// Runs the scenario; exit 0 on PASS, 1 on FAIL.
pub fn run(args: &DrillArgs) -> ExitCode {
    if args.venues != VenueMode::Wire {
        eprintln!("killswitch drill: error: --scenario rolling-restart runs over the wire only (the venues' session takeover is a FIX venue's): drop --venues in-process");
        return ExitCode::from(crate::exit::USAGE);
    }
    if args.planned || args.method != crate::drill::TripMethod::Cli {
        eprintln!("killswitch drill: error: --scenario rolling-restart ends with `killswitch emergency`: --planned and --method do not apply");
        return ExitCode::from(crate::exit::USAGE);
    }
    crate::drill::finish(rolling(args), args.json, |r| r.pass)
}

/// Prints a line of the narrative (stderr under --json).
fn say(json: bool, line: String) {
    if json {
        eprintln!("{line}");
    } else {
        outln!("{line}");
    }
}

fn rolling(args: &DrillArgs) -> Result<RollingReport, String> {
    let q = args.json;
    let work = work_dir(args)?;
    let mut cfg = crate::drill::config_for(args, &work);
    cfg.lease_ttl_ms = 1000;
    // Each engine writes its own report (--report).
    cfg.report_path = None;
    for s in &mut cfg.strategies {
        s.open_orders = s.open_orders.min(OPEN_ORDERS_PER_MAKER);
    }
    let (venues, _config) = crate::drill::start_venues_and_config(args, &mut cfg, &work)?;
    let venues = venues.ok_or("the rolling restart runs over the wire")?;
    let session = cfg.venues[0].comp_id_for(&cfg.name);
    say(q, "killswitch drill: scenario rolling-restart: an active engine and its hot standby, venues over FIX 4.4 on loopback (their own processes)".into());
    say(
        q,
        format!(
            "work dir {} (logs engine-a.log, engine-b.log; venues/*.audit.jsonl)",
            work.display()
        ),
    );
    for p in &venues.procs {
        say(
            q,
            format!(
                "0. venue      {} pid {} (session takeover offered, grace {} s)",
                p.name,
                p.pid(),
                TAKEOVER_GRACE_MS / 1000
            ),
        );
    }
    let orders_now = |what: &str| -> Result<usize, String> {
        venues
            .read_now()
            .map(|logs| {
                logs.iter()
                    .map(|(_, l)| new_orders(l, &session).len())
                    .sum()
            })
            .map_err(|e| format!("{what}: {e}"))
    };
    let wait_orders = |from: usize, what: &str| -> Result<usize, String> {
        let end = Instant::now() + DEADLINE;
        loop {
            let n = orders_now(what)?;
            if n >= from + ORDERS_PER_PHASE {
                return Ok(n);
            }
            if Instant::now() > end {
                return Err(format!("{what}: the venues received {} new order(s) in {DEADLINE:?}, waiting for {ORDERS_PER_PHASE}; see the engines' logs in {}", n - from, work.display()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    // 1. The active.
    let mut a = EngineProc::spawn(&work, "engine-a", false)?;
    let block = wait_block(&work, &mut a)?;
    say(
        q,
        format!(
            "1. active     engine A pid {} holds the lease (epoch {})",
            a.pid(),
            block.lease().epoch
        ),
    );
    let started = Instant::now();
    let mut n = wait_orders(0, "the active trades")?;
    if let Some(rest) = args.trade_for.checked_sub(started.elapsed()) {
        std::thread::sleep(rest);
    }
    // 2. The standby.
    let mut b = EngineProc::spawn(&work, "engine-b", true)?;
    wait_standby(&block, &mut b, &work, "engine B following as the standby")?;
    say(
        q,
        format!(
            "2. standby    engine B pid {} follows the journal (status: `killswitch --dir {} --name drill status`)",
            b.pid(),
            work.display()
        ),
    );
    n = wait_orders(n, "trading with a standby")?;

    // 3. Failover, 4. failback.
    let mut checks = Vec::new();
    let mut check =
        |name: &str, ok: bool, detail: String| checks.push(Check::new(name, ok, detail));
    let mut handed = Vec::new();
    for step in [3, 4] {
        let (what, from, to) = if step == 3 {
            ("failover", &mut a, &mut b)
        } else {
            ("failback", &mut b, &mut a)
        };
        let epoch = block.lease().epoch;
        let (code, out) = failover_cmd(&work, what)?;
        let done = code == 0 && out.contains(&format!("active pid {}", to.pid()));
        say(
            q,
            format!(
                "{step}. {what:<9}  `killswitch {what}`: {}",
                out.trim().replace('\n', "\n               ")
            ),
        );
        check(
            &format!("`killswitch {what}` returned with the standby active"),
            done,
            format!(
                "exit {code}: {}",
                out.trim().lines().last().unwrap_or_default()
            ),
        );
        if !done {
            break;
        }
        let restarted = wait_standby(
            &block,
            from,
            &work,
            "the old active restarted as the standby",
        );
        say(
            q,
            format!(
                "   restart    the old active (pid {}) {}",
                from.pid(),
                match &restarted {
                    Ok(()) => "restarted by itself as the standby of the new active".to_string(),
                    Err(e) => format!("did NOT restart as the standby: {e}"),
                }
            ),
        );
        check(
            &format!("{what}: the old active restarted by itself as the standby"),
            restarted.is_ok(),
            restarted
                .err()
                .unwrap_or_else(|| format!("pid {}", from.pid())),
        );
        let report: Option<EngineReport> =
            from.report(&work, &format!("{}.handover-{epoch}.json", from.label));
        handed.push((what, from.pid(), to.pid(), report));
        n = wait_orders(n, &format!("trading after the {what}"))?;
    }

    // 5. The end: the drill's usual emergency against the active, then the
    // standby's stop.
    let mut em = Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
    em.arg("--dir").arg(&work).args([
        "--name",
        "drill",
        "emergency",
        "--json",
        "--reason",
        "drill: rolling-restart",
    ]);
    say(
        q,
        "5. emergency  `killswitch emergency --reason ...` (the active), then SIGTERM the standby"
            .into(),
    );
    let out = em
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run killswitch emergency: {e}"))?;
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        say(q, format!("   {line}"));
    }
    let emergency: Option<EmergencyReport> = serde_json::from_slice(&out.stdout).ok();
    // After a failback A is the active, B the standby; after a failed step
    // it may be the other way round: stop whichever is which.
    let active_pid = block.lease().holder;
    let (active, standby) = if active_pid == b.pid() {
        (&mut b, &mut a)
    } else {
        (&mut a, &mut b)
    };
    let active_exit = wait_child(&mut active.child, Duration::from_secs(30))
        .map(|s| s.to_string())
        .unwrap_or_else(|| "did not exit within 30 s after the emergency".into());
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(standby.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let standby_exit = wait_child(&mut standby.child, Duration::from_secs(30))
        .map(|s| s.to_string())
        .unwrap_or_else(|| "did not exit within 30 s of SIGTERM".into());
    let engine: Option<EngineReport> = active.report(&work, &format!("{}.json", active.label));
    let standby_report: Option<serde_json::Value> =
        standby.report(&work, &format!("{}.json", standby.label));
    say(
        q,
        format!(
            "   active     pid {} exited: {active_exit}{}",
            active.pid(),
            engine
                .as_ref()
                .map(|r| format!(" — {}", r.verdict))
                .unwrap_or_default()
        ),
    );
    say(
        q,
        format!(
            "   standby    pid {} exited: {standby_exit}{}",
            standby.pid(),
            standby_report
                .as_ref()
                .and_then(|r| r["verdict"].as_str().map(|v| format!(" — {v}")))
                .unwrap_or_default()
        ),
    );
    let logs = [a.log(&work), b.log(&work)];
    let mut venues = venues;
    let audits = venues.stop_and_read()?;

    // 6. The venues' record.
    let evidence = failovers(&audits, &session, &handed, &logs);
    let all: Vec<&AuditEntry> = merged_new_orders(&audits, &session);
    let mut dup: HashMap<(&str, &str), usize> = HashMap::new();
    for (venue, log) in &audits {
        for e in new_orders(log, &session) {
            *dup.entry((venue.as_str(), e.field(11).unwrap_or("")))
                .or_default() += 1;
        }
    }
    let doubled: Vec<String> = dup
        .iter()
        .filter(|(_, &c)| c > 1)
        .map(|((v, id), c)| format!("{v} {id} x{c}"))
        .collect();
    let longest = all
        .windows(2)
        .map(|p| p[1].mono_ns.saturating_sub(p[0].mono_ns))
        .max()
        .unwrap_or(0);
    check(
        "duplicated 0: no ClOrdID received twice by a venue",
        doubled.is_empty(),
        if doubled.is_empty() {
            format!("{} new orders, all distinct", all.len())
        } else {
            doubled.join(", ")
        },
    );
    check(
        "two takeovers seen at the venues (failover, failback)",
        evidence.len() == 2,
        format!("{} found", evidence.len()),
    );
    for f in &evidence {
        check(
            &format!(
                "{}: lost 0: every order working at the takeover adopted by the new active",
                f.what
            ),
            f.working_at_takeover > 0 && f.not_adopted.is_empty(),
            format!(
                "{} working at the takeover, {} not adopted{}",
                f.working_at_takeover,
                f.not_adopted.len(),
                if f.not_adopted.is_empty() {
                    String::new()
                } else {
                    format!(": {}", f.not_adopted.join(", "))
                }
            ),
        );
        check(
            &format!("{}: the old active sent 0 orders after its hand-over", f.what),
            f.new_orders_in_between == 0
                && f.old_active_orders_sent as usize == f.venue_orders_before_hand_over,
            format!(
                "{} new order(s) between the hand-over and the takeover; the old active's gateway wrote {} new orders, the venues received {} up to its hand-over",
                f.new_orders_in_between, f.old_active_orders_sent, f.venue_orders_before_hand_over
            ),
        );
    }
    let cod: u64 = audits
        .iter()
        .flat_map(|(_, l)| events(l, &session, "cancel-on-disconnect"))
        .map(|e| e.orders.unwrap_or(0))
        .sum();
    let grace: u64 = audits
        .iter()
        .flat_map(|(_, l)| events(l, &session, "takeover-grace-expired"))
        .map(|e| e.orders.unwrap_or(0))
        .sum();
    check(
        "lost 0: no order cancelled by a venue on a disconnect or at the end of a takeover grace period",
        cod == 0 && grace == 0,
        format!("{cod} cancelled on a disconnect, {grace} at a grace period's end"),
    );
    let working: Vec<String> = audits
        .iter()
        .flat_map(|(v, l)| {
            working_orders(l, &session)
                .into_iter()
                .map(move |id| format!("{v} {id}"))
        })
        .collect();
    check(
        "clean stop: nothing of the firm working at any venue after the emergency",
        working.is_empty(),
        format!("{} working", working.len()),
    );
    let (journal_eq, journal_detail) = final_positions(
        &work,
        &audits,
        &session,
        &cfg,
        engine.as_ref(),
        standby_report.as_ref(),
    );
    check(
        "positions: the journal's, the final active's and the standby's equal the venues' fills",
        journal_eq,
        journal_detail,
    );
    check(
        "clean stop: the active drained and exited 0, the standby exited 0 having sent nothing",
        active_exit.contains("exit status: 0")
            && standby_exit.contains("exit status: 0")
            && engine
                .as_ref()
                .is_some_and(|r| r.exit_code == 0 && r.orders_not_terminal.is_empty())
            && standby_report
                .as_ref()
                .is_some_and(|r| r["orders_sent"].as_u64() == Some(0)),
        format!("active: {active_exit}; standby: {standby_exit}"),
    );
    check(
        "`killswitch emergency` exit 0",
        out.status.code() == Some(0),
        format!("exit {:?}", out.status.code()),
    );

    say(
        q,
        "6. failovers  (the venues' clock; the engines' timelines)".into(),
    );
    for f in &evidence {
        say(
            q,
            format!(
                "   {}: pid {} -> pid {}: {} order(s) working at the takeover, {} adopted; gap in order flow at the venues {}",
                f.what,
                f.from_pid,
                f.to_pid,
                f.working_at_takeover,
                f.working_at_takeover - f.not_adopted.len(),
                format_duration_ns(f.gap_ns)
            ),
        );
        if !f.positions_in_flight_at_hand_over.is_empty() {
            say(
                q,
                format!(
                    "     fills in flight at the hand-over (unread by the old active, learned by the new one at its takeover): {:?} (instrument, old active, venue)",
                    f.positions_in_flight_at_hand_over
                ),
            );
        }
        for l in &f.timeline {
            say(q, format!("     {l}"));
        }
    }
    say(
        q,
        format!(
            "   {} new orders at the venues in all; longest pause between two: {}",
            all.len(),
            format_duration_ns(longest)
        ),
    );
    let pass = checks.iter().all(|c| c.ok);
    crate::drill::say_checks(q, "7. checks", &checks);
    say(
        q,
        format!("VERDICT: {}", if pass { "PASS" } else { "FAIL" }),
    );
    let report = RollingReport {
        work_dir: work.display().to_string(),
        pass,
        checks,
        new_orders_total: all.len(),
        longest_gap_ns: longest,
        failovers: evidence,
        emergency,
        engine,
    };
    if pass && !args.keep && args.work_dir.is_none() {
        drop(a);
        drop(b);
        let _ = std::fs::remove_dir_all(&work);
    } else {
        say(q, format!("work dir kept: {}", work.display()));
    }
    Ok(report)
}
