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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use killswitch::clock::format_duration_ns;
use killswitch::control::ControlBlock;
use killswitch_tools::engine::{EngineConfig, EngineReport};
use killswitch_tools::venue_server::audit::{working_orders, AuditEntry};
use serde::Serialize;

use crate::drill::{wait_child, work_dir, Check, DrillArgs, VenueMode};
use crate::emergency::EmergencyReport;

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
    match rolling(args) {
        Ok(r) => {
            if args.json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&r).expect("report serialises")
                );
            }
            if r.pass {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("killswitch drill: error: {e}");
            ExitCode::from(crate::exit::IO)
        }
    }
}

/// One engine process of the pair; killed on drop (a failed drill leaves
/// nothing behind).
struct EngineProc {
    label: &'static str,
    child: Child,
    exited: Option<String>,
}

impl EngineProc {
    fn spawn(work: &Path, label: &'static str, standby: bool) -> Result<EngineProc, String> {
        let log =
            std::fs::File::create(work.join(format!("{label}.log"))).map_err(|e| e.to_string())?;
        let mut c = Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
        c.arg("engine")
            .arg("--config")
            .arg(work.join("engine.toml"))
            .arg("--report")
            .arg(work.join(format!("{label}.json")));
        if standby {
            c.arg("--standby");
        }
        let child = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {label}: {e}"))?;
        Ok(EngineProc {
            label,
            child,
            exited: None,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self, work: &Path) -> String {
        std::fs::read_to_string(work.join(format!("{}.log", self.label))).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        if self.exited.is_none() {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.exited = Some(s.to_string());
            }
        }
        self.exited.is_none()
    }

    fn report<T: serde::de::DeserializeOwned>(&self, work: &Path, name: &str) -> Option<T> {
        std::fs::read(work.join(name))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }
}

impl Drop for EngineProc {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
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
    let mut check = |name: &str, ok: bool, detail: String| {
        checks.push(Check {
            name: name.into(),
            ok,
            detail,
        });
    };
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
    say(q, "7. checks".into());
    for c in &checks {
        say(
            q,
            format!(
                "   [{}] {}: {}",
                if c.ok { "✓" } else { "✗" },
                c.name,
                c.detail
            ),
        );
    }
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

/// Waits until `e` holds the lease of the drill's block.
fn wait_block(work: &Path, e: &mut EngineProc) -> Result<ControlBlock, String> {
    let end = Instant::now() + DEADLINE;
    loop {
        if let Ok(b) = ControlBlock::open(work, "drill") {
            if b.lease().holder == e.pid() {
                return Ok(b);
            }
        }
        if !e.running() {
            return Err(format!(
                "engine A exited at start-up; see {}",
                work.join("engine-a.log").display()
            ));
        }
        if Instant::now() > end {
            return Err(format!(
                "engine A did not take the lease within {DEADLINE:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until `e` follows the journal as the standby.
fn wait_standby(
    block: &ControlBlock,
    e: &mut EngineProc,
    work: &Path,
    what: &str,
) -> Result<(), String> {
    let end = Instant::now() + DEADLINE;
    loop {
        if block
            .standby()
            .is_some_and(|s| s.pid == e.pid() && s.alive && s.applied_seq > 0)
        {
            return Ok(());
        }
        if !e.running() {
            return Err(format!(
                "{what}: pid {} exited; see {}",
                e.pid(),
                work.join(format!("{}.log", e.label)).display()
            ));
        }
        if Instant::now() > end {
            return Err(format!("{what}: not following within {DEADLINE:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `killswitch failover|failback`: exit code and output.
fn failover_cmd(work: &Path, what: &str) -> Result<(i32, String), String> {
    let out = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .arg("--dir")
        .arg(work)
        .args(["--name", "drill", what, "--timeout", "60s"])
        .output()
        .map_err(|e| format!("cannot run killswitch {what}: {e}"))?;
    Ok((
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

fn new_orders<'a>(log: &'a [AuditEntry], session: &str) -> Vec<&'a AuditEntry> {
    log.iter()
        .filter(|e| e.session == session && e.dir == "in" && e.msg_type.as_deref() == Some("D"))
        .collect()
}

fn merged_new_orders<'a>(
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

fn events<'a>(log: &'a [AuditEntry], session: &str, event: &str) -> Vec<&'a AuditEntry> {
    log.iter()
        .filter(|e| e.session == session && e.dir == "event" && e.event.as_deref() == Some(event))
        .collect()
}

/// Signed fills (units of 10^-8 lots) by `venue/symbol` among `entries`.
fn fills(venue: &str, entries: &[AuditEntry], session: &str, into: &mut BTreeMap<String, i64>) {
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
fn engine_positions(r: &EngineReport) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for p in &r.positions {
        *out.entry(format!("{}/{}", p.venue, p.instrument))
            .or_default() += p.qty;
    }
    out.retain(|_, q| *q != 0);
    out
}

fn mismatches(
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
fn failovers(
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
fn timeline(logs: &[String], k: usize) -> Vec<String> {
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
fn final_positions(
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
        let name = |kind, i: u16| block.name_at(kind, i).unwrap_or_else(|| i.to_string());
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
