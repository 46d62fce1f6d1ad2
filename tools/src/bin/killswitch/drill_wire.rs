//! The drill's venues over the wire: one `killswitch venue` child process
//! (the same code as `ks-venue`) per venue of the engine's configuration,
//! the engine connected to them over FIX 4.4 on loopback, and the checks
//! read from the venues' own audit logs once they have stopped.
//!
//! The witness is the venue, not the engine: what the venue received, and
//! in which order, is in its log. The engine's gateway marks the moment it
//! acknowledged the kill in each session's stream (a TestRequest
//! `KS-ACK-<generation>` queued ahead of anything else), so "no new order
//! after the acknowledgement" is read off the venue's log in the venue's
//! own receive order, whatever the transit time of the orders written just
//! before it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use killswitch_tools::engine::config::VenueSection;
use killswitch_tools::engine::{EngineConfig, EngineReport};
use killswitch_tools::fix::client::KILL_ACK_MARK;
use killswitch_tools::venue_server::audit::{self, AuditEntry};
use serde::Serialize;

use crate::drill::{Check, Scenario};

/// Fault knobs of one venue process (the in-process simulator's, moved to
/// the venue's flags).
#[derive(Default)]
struct VenueFlags {
    latency_us: u64,
    ignore_cancels: bool,
    no_mass_cancel: bool,
    cancel_on_disconnect_off: bool,
    disconnect_after: Option<u64>,
    withdraw_liquidity_after_ms: Option<u64>,
    takeover_grace_ms: Option<u64>,
}

/// A venue child process.
pub struct VenueProc {
    /// Venue name.
    pub name: String,
    /// Its audit log.
    pub audit: PathBuf,
    child: Child,
}

/// The venue processes of a drill; dropping it stops them.
pub struct Venues {
    /// One per venue over the wire.
    pub procs: Vec<VenueProc>,
}

/// Starts a venue process for every venue of `cfg` the scenario runs over
/// the wire, and points the engine's configuration at them. The gateway
/// hang is a fault of an in-process adapter (a FIX session never blocks on
/// a write), so in that scenario SIM-A stays in-process.
pub fn start(scenario: Scenario, cfg: &mut EngineConfig, work: &Path) -> Result<Venues, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = work.join("venues");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut venues = Venues { procs: Vec::new() };
    if scenario == Scenario::VenueDisconnect {
        // Over the wire the session comes back and every cancel is
        // answered: the in-process scenario's short deadline (meant to end
        // a dead session's wait quickly) would only cut a loaded machine's
        // answers short.
        cfg.drain.cancel_deadline_ms =
            killswitch_tools::engine::config::DrainSection::default().cancel_deadline_ms;
    }
    for (n, v) in cfg.venues.iter_mut().enumerate() {
        if scenario == Scenario::GatewayHang && n == 0 {
            continue;
        }
        let mut flags = VenueFlags {
            latency_us: v.ack_latency_us,
            ignore_cancels: v.ignore_cancels,
            no_mass_cancel: !v.mass_cancel,
            ..VenueFlags::default()
        };
        match scenario {
            // The first connection of SIM-B to reach this many messages is
            // dropped: the venue cancels its orders (cancel-on-disconnect),
            // the gateway reconnects and the resend brings the cancels.
            Scenario::VenueDisconnect if n == 1 => flags.disconnect_after = Some(1500),
            Scenario::CrashRestart => {
                flags.cancel_on_disconnect_off = true;
                v.cancel_on_disconnect = false;
            }
            // The venue's clock starts before the engine's (which takes a
            // moment, more on a loaded machine, to start and trade): two
            // seconds more.
            Scenario::NoLiquidity => {
                flags.withdraw_liquidity_after_ms =
                    v.withdraw_liquidity_after_ms.map(|ms| ms + 2000);
            }
            // The designated backup's session takeover, with a grace
            // period longer than the drill (see drill_rolling).
            Scenario::RollingRestart => {
                flags.takeover_grace_ms = Some(crate::drill_rolling::TAKEOVER_GRACE_MS);
            }
            _ => {}
        }
        let log = std::fs::File::create(dir.join(format!("{}.log", v.name)))
            .map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&exe);
        cmd.arg("venue")
            .arg("--venue")
            .arg(format!("{}:0", v.name))
            .arg("--instruments")
            .arg(v.instruments.join(","))
            .arg("--seed")
            .arg(v.seed.to_string())
            .arg("--flow-interval-us")
            .arg(v.flow_interval_us.to_string())
            .arg("--latency-us")
            .arg(flags.latency_us.to_string())
            .arg("--audit-dir")
            .arg(&dir);
        if flags.ignore_cancels {
            cmd.arg("--ignore-cancels");
        }
        if flags.no_mass_cancel {
            cmd.arg("--no-mass-cancel");
        }
        if flags.cancel_on_disconnect_off {
            cmd.args(["--cancel-on-disconnect", "off"]);
        }
        if let Some(n) = flags.disconnect_after {
            cmd.arg("--disconnect-after").arg(n.to_string());
        }
        if let Some(ms) = flags.withdraw_liquidity_after_ms {
            cmd.arg("--withdraw-liquidity-after-ms").arg(ms.to_string());
        }
        if let Some(ms) = flags.takeover_grace_ms {
            cmd.arg("--takeover-grace-ms").arg(ms.to_string());
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start venue {}: {e}", v.name))?;
        let addr = listening_on(&mut child, &v.name)?;
        venues.procs.push(VenueProc {
            name: v.name.clone(),
            audit: dir.join(format!("{}.audit.jsonl", v.name)),
            child,
        });
        // The simulator's knobs are the venue's now.
        *v = VenueSection {
            connect: Some(addr),
            ..VenueSection {
                ack_latency_us: 0,
                ignore_cancels: false,
                reject_ppm: 0,
                drop_cancel_ack_ppm: 0,
                disconnect_after_ms: None,
                hang_after_ms: None,
                withdraw_liquidity_after_ms: None,
                ..v.clone()
            }
        };
    }
    Ok(venues)
}

/// Reads the venue's "listening on ADDR" line (60 s at most: a loaded machine).
fn listening_on(child: &mut Child, name: &str) -> Result<String, String> {
    let out = child.stdout.take().ok_or("venue stdout not captured")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(rest) = line.split(" listening on ").nth(1) {
                    return Ok(rest.split_whitespace().next().unwrap_or("").to_string());
                }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "venue {name} did not say where it listens within 60 s; see venues/{name}.log"
                ));
            }
        }
    }
}

impl VenueProc {
    /// The venue process's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Venues {
    /// Stops every venue (SIGTERM: connections closed, audit logs flushed)
    /// and waits for them (10 s, then SIGKILL). Returns each venue's name
    /// and audit log, read.
    pub fn stop_and_read(&mut self) -> Result<Vec<(String, Vec<AuditEntry>)>, String> {
        for p in &self.procs {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p.child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let mut logs = Vec::new();
        for p in &mut self.procs {
            if crate::drill::wait_child(&mut p.child, Duration::from_secs(10)).is_none() {
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
            let entries = audit::read(&p.audit).map_err(|e| e.to_string())?;
            logs.push((p.name.clone(), entries));
        }
        Ok(logs)
    }

    /// Waits until every venue's log shows a new order of `session` after
    /// its second logon (the restarted engine trades everywhere), 60 s at
    /// most.
    pub fn wait_for_new_orders_after_restart(&self, session: &str) -> Result<(), String> {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let logs = self.read_now()?;
            let waiting: Vec<&str> = logs
                .iter()
                .filter(|(_, entries)| {
                    let second = entries
                        .iter()
                        .enumerate()
                        .filter(|(_, e)| e.is_event_of(session, "logon"))
                        .nth(1)
                        .map(|(i, _)| i);
                    !second
                        .is_some_and(|i| entries[i..].iter().any(|e| e.is_new_order_from(session)))
                })
                .map(|(n, _)| n.as_str())
                .collect();
            if waiting.is_empty() {
                return Ok(());
            }
            if Instant::now() > end {
                return Err(format!(
                    "the restarted engine sent no new order to {} within 60 s (see engine-restart.log)",
                    waiting.join(", ")
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Reads the audit logs as they are now (the venues keep running).
    pub fn read_now(&self) -> Result<Vec<(String, Vec<AuditEntry>)>, String> {
        self.procs
            .iter()
            .map(|p| {
                audit::read(&p.audit)
                    .map(|e| (p.name.clone(), e))
                    .map_err(|e| e.to_string())
            })
            .collect()
    }
}

impl Drop for Venues {
    fn drop(&mut self) {
        for p in &mut self.procs {
            if let Ok(None) = p.child.try_wait() {
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
        }
    }
}

/// What the venues' audit logs say, per venue and in total.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WireEvidence {
    /// Per venue.
    pub venues: Vec<VenueEvidence>,
    /// New orders the venues received after the kill acknowledgement mark.
    pub new_orders_after_ack: u64,
    /// New orders the venues received from us in the whole log.
    pub new_orders_total: u64,
    /// Orders working at the venues when the kill drain finished that the
    /// engine did not report `CancelUnknown`: must be 0.
    pub unaccounted_at_drain_end: u64,
    /// Orders of ours working at the venues at the end of their logs.
    pub resting_at_end: u64,
    /// Crash-restart: orders the crashed engine left working.
    pub left_by_crashed_engine: u64,
    /// Crash-restart: of those, cancelled or filled before the restarted
    /// engine's first new order.
    pub closed_before_first_new_order: u64,
}

/// One venue's evidence.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VenueEvidence {
    /// Venue.
    pub name: String,
    /// Lines in its audit log.
    pub log_lines: usize,
    /// Where the kill acknowledgement mark is (line, 1-based), if found.
    pub ack_mark_line: Option<usize>,
    /// New orders received after it.
    pub new_orders_after_ack: u64,
    /// New orders received in all.
    pub new_orders_total: u64,
    /// Working at the end of the kill drain.
    pub working_at_drain_end: u64,
    /// Of those, not reported `CancelUnknown` by the engine.
    pub unaccounted_at_drain_end: u64,
    /// Working at the end of the log.
    pub resting_at_end: u64,
    /// Orders cancelled by the venue when a connection ended.
    pub cancelled_on_disconnect: u64,
    /// Dead-man expiries.
    pub dead_man_expiries: u64,
}

/// Orders working per ClOrdID after replaying `entries` (our session's
/// ExecutionReports, as [`audit::working_orders`] reads them).
fn working(entries: &[AuditEntry], session: &str) -> BTreeSet<String> {
    audit::working_orders(entries, session)
}

/// Reads the evidence from the venues' logs. `session`: our CompID.
/// `report`: the (last) engine's report, when it wrote one.
pub fn evidence(
    logs: &[(String, Vec<AuditEntry>)],
    session: &str,
    report: Option<&EngineReport>,
) -> WireEvidence {
    let mut total = WireEvidence::default();
    let kill = report.and_then(|r| r.drains.iter().rev().find(|d| d.global && !d.recovery));
    let not_terminal: BTreeSet<String> = report
        .map(|r| {
            r.orders_not_terminal
                .iter()
                .map(|(id, _)| id.to_string())
                .collect()
        })
        .unwrap_or_default();
    for (name, entries) in logs {
        let mut ev = VenueEvidence {
            name: name.clone(),
            log_lines: entries.len(),
            ..VenueEvidence::default()
        };
        ev.new_orders_total = entries
            .iter()
            .filter(|e| e.is_new_order_from(session))
            .count() as u64;
        if let (Some(r), Some(_)) = (report, kill) {
            let generation = r.verification.ack_generation;
            let mark = entries.iter().position(|e| {
                e.session == session
                    && e.dir == "in"
                    && e.msg_type.as_deref() == Some("1")
                    && e.field(112)
                        .and_then(|t| t.strip_prefix(KILL_ACK_MARK))
                        .and_then(|g| g.parse::<u64>().ok())
                        .is_some_and(|g| g >= generation)
            });
            ev.ack_mark_line = mark.map(|i| i + 1);
            ev.new_orders_after_ack = match mark {
                Some(i) => entries[i..]
                    .iter()
                    .filter(|e| e.is_new_order_from(session))
                    .count() as u64,
                // No mark: the session was down at the ack. Anything the
                // venue received after the ack's instant counts.
                None => entries
                    .iter()
                    .filter(|e| {
                        e.is_new_order_from(session) && e.mono_ns >= r.verification.ack_mono_ns
                    })
                    .count() as u64,
            };
        }
        if let Some(d) = kill {
            let done = d.timings_ns[7];
            let upto = entries.partition_point(|e| e.mono_ns <= done);
            let at_done = working(&entries[..upto], session);
            ev.working_at_drain_end = at_done.len() as u64;
            ev.unaccounted_at_drain_end = at_done
                .iter()
                .filter(|id| !not_terminal.contains(*id))
                .count() as u64;
        }
        ev.resting_at_end = working(entries, session).len() as u64;
        for e in entries
            .iter()
            .filter(|e| e.session == session && e.dir == "event")
        {
            match e.event.as_deref() {
                Some("cancel-on-disconnect") => ev.cancelled_on_disconnect += e.orders.unwrap_or(0),
                Some("dead-man-expired" | "dead-man") => ev.dead_man_expiries += 1,
                _ => {}
            }
        }
        total.new_orders_after_ack += ev.new_orders_after_ack;
        total.new_orders_total += ev.new_orders_total;
        total.unaccounted_at_drain_end += ev.unaccounted_at_drain_end;
        total.resting_at_end += ev.resting_at_end;
        total.venues.push(ev);
    }
    total
}

/// The crash-restart check: every order of ours working at a venue when the
/// restarted engine logged on (the crashed engine's) is cancelled or filled
/// in the venue's log before the restarted engine's first new order there.
/// Returns the check, and fills the evidence's crash figures.
pub fn crash_restart_check(
    logs: &[(String, Vec<AuditEntry>)],
    session: &str,
    ev: &mut WireEvidence,
) -> Check {
    let mut left_total = 0u64;
    let mut closed_total = 0u64;
    let mut problems = Vec::new();
    let mut per_venue = Vec::new();
    for (name, entries) in logs {
        // The second logon of our session is the restarted engine's.
        let logons: Vec<usize> = entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.is_event_of(session, "logon"))
            .map(|(i, _)| i)
            .collect();
        let Some(&restart) = logons.get(1) else {
            problems.push(format!(
                "{name}: no second logon (the engine did not come back)"
            ));
            continue;
        };
        let left = working(&entries[..restart], session);
        let first_new = entries[restart..]
            .iter()
            .position(|e| e.is_new_order_from(session))
            .map(|i| restart + i);
        let window_end = first_new.unwrap_or(entries.len());
        let mut closed: BTreeMap<&str, &'static str> = BTreeMap::new();
        for e in &entries[restart..window_end] {
            if e.session != session || e.dir != "out" || e.msg_type.as_deref() != Some("8") {
                continue;
            }
            let id = e.field(41).or(e.field(11)).unwrap_or("");
            let how = match (e.field(150), e.field(39)) {
                (Some("4"), _) => "cancelled",
                (_, Some("2")) => "filled",
                _ => continue,
            };
            if let Some(id) = left.get(id) {
                closed.insert(id.as_str(), how);
            }
        }
        let dead_man = entries[..window_end]
            .iter()
            .filter(|e| e.session == session && e.event.as_deref() == Some("dead-man-expired"))
            .count();
        let open: Vec<&String> = left
            .iter()
            .filter(|id| !closed.contains_key(id.as_str()))
            .collect();
        if first_new.is_none() {
            problems.push(format!("{name}: the restarted engine sent no new order"));
        }
        if !open.is_empty() {
            problems.push(format!(
                "{name}: {} left working at the first new order (e.g. {})",
                open.len(),
                open.iter()
                    .take(3)
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if dead_man > 0 {
            problems.push(format!(
                "{name}: the dead-man timer fired ({dead_man}x): it, not the restart, may have cancelled them"
            ));
        }
        let cancelled = closed.values().filter(|h| **h == "cancelled").count();
        per_venue.push(format!(
            "{name} {} left, {cancelled} cancelled + {} filled before the first new order (log line {})",
            left.len(),
            closed.len() - cancelled,
            first_new.map_or("-".to_string(), |i| (i + 1).to_string())
        ));
        left_total += left.len() as u64;
        closed_total += closed.len() as u64;
    }
    ev.left_by_crashed_engine = left_total;
    ev.closed_before_first_new_order = closed_total;
    if left_total == 0 {
        problems.push("the crashed engine left no order working: nothing was tested".into());
    }
    Check {
        name: "every order the crashed engine left at the venues was cancelled before the restarted engine's first new order (venues' audit logs)".into(),
        ok: problems.is_empty(),
        detail: if problems.is_empty() {
            per_venue.join("; ")
        } else {
            format!("{}; {}", problems.join("; "), per_venue.join("; "))
        },
    }
}

/// The checks over the wire, from the evidence.
pub fn checks(ev: &WireEvidence, report: Option<&EngineReport>, scenario: Scenario) -> Vec<Check> {
    let mut out = Vec::new();
    let line = |f: &dyn Fn(&VenueEvidence) -> String| {
        ev.venues.iter().map(f).collect::<Vec<_>>().join(", ")
    };
    if report.is_some_and(|r| r.kill_generation.is_some()) {
        out.push(Check {
            name: "venues' audit logs: no new order arrived after the gateway's kill acknowledgement mark".into(),
            ok: ev.new_orders_after_ack == 0
                && ev.venues.iter().all(|v| v.ack_mark_line.is_some() || v.new_orders_total == 0),
            detail: format!(
                "{} after the mark, of {} new orders received ({})",
                ev.new_orders_after_ack,
                ev.new_orders_total,
                line(&|v| format!(
                    "{} mark at line {}",
                    v.name,
                    v.ack_mark_line.map_or("- (none)".into(), |l| l.to_string())
                ))
            ),
        });
        out.push(Check {
            name: "venues' audit logs: every order still working at the venue when the drain ended was reported CancelUnknown".into(),
            ok: ev.unaccounted_at_drain_end == 0,
            detail: format!(
                "{} unaccounted ({})",
                ev.unaccounted_at_drain_end,
                line(&|v| format!("{} {} working", v.name, v.working_at_drain_end))
            ),
        });
    }
    out.push(Check {
        name: "venues' audit logs: no order of ours left resting at any venue after the engine stopped".into(),
        ok: ev.resting_at_end == 0,
        detail: format!(
            "{} resting ({}){}",
            ev.resting_at_end,
            line(&|v| format!("{} {}", v.name, v.resting_at_end)),
            match scenario {
                Scenario::CrashRestart => "; cancel-on-disconnect off: the restarted engine's drain and logout cancelled them",
                _ => "",
            }
        ),
    });
    out
}
