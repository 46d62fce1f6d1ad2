//! `killswitch shutdown`, `verify-shutdown`, `reconcile`, `unlock`: the
//! planned shutdown (the runbook's thirteen steps) asked of the engine
//! through its control block and followed from it, the post-shutdown
//! validation, and the two flags it leaves (reconciliation mismatch,
//! deployment lock).
//!
//! The engine runs the steps; this command writes the request (options in
//! the block's request word, the reason in `killswitch.<name>.shutdown-reason`
//! beside the block), then follows the engine's progress word and the
//! report it rewrites after each step (`killswitch.<name>.shutdown.json`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use killswitch::clock::{format_wall, wall_ns};
use killswitch::control::telemetry::TelemetrySnapshot;
use killswitch::control::ControlBlock;
use killswitch::shutdown::words::{self, FlattenMode, PhaseState, ShutdownRequest};
use killswitch::shutdown::Phase;
use killswitch_tools::engine::planned::{reason_path, report_path};
use serde_json::Value;

use crate::{control_cmds, exit, Target};

mod verify;
pub(crate) use verify::checkpoint_check;
use verify::verify;

/// Exit code of `shutdown`: every step ran but something was found.
pub const FINDINGS: u8 = 5;
/// Exit code of `shutdown`: the engine went away (or the follow timed
/// out) before it finished.
pub const NOT_FINISHED: u8 = 6;
/// `verify-shutdown` exits `VERIFY_BASE + mask` when checks fail: bit 0
/// an engine process, bit 1 open sockets, bit 2 the checkpoint, bit 3
/// ERROR lines in the log.
pub const VERIFY_BASE: u8 = 32;

/// `killswitch shutdown`.
#[derive(Args, Debug)]
pub struct ShutdownArgs {
    /// Why (announced, in the report).
    #[arg(long)]
    pub reason: String,
    /// Start at this UTC time today (HH:MM); the engine announces
    /// SHUTTING_DOWN_SOON until then. Default: now.
    #[arg(long, value_name = "HH:MM")]
    pub at: Option<String>,
    /// Flatten positions: aggressive (market), conservative (limit at mid,
    /// then market), none (keep positions).
    #[arg(long, default_value = "none", value_parser = ["aggressive", "conservative", "none"])]
    pub flatten: String,
    /// Keep passive orders (cancel only aggressive ones; with --flatten none).
    #[arg(long)]
    pub keep_passive: bool,
    /// Reduce position limits by this percentage first.
    #[arg(long, value_name = "PCT", value_parser = clap::value_parser!(u8).range(1..=100))]
    pub reduce_limits: Option<u8>,
    /// Print the plan and the checks; touch nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the final report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Give up following after this long (the engine goes on).
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    pub follow_timeout: Duration,
}

/// `killswitch verify-shutdown`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The shutdown report (default: beside the control block).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// The engine's log: no ERROR line of the last 5 minutes may be in it.
    #[arg(long)]
    pub log: Option<PathBuf>,
}

/// `killswitch reconcile`.
#[derive(Args, Debug)]
pub struct ReconcileArgs {
    /// Acknowledge the last reconciliation's mismatch (reset is refused until then).
    #[arg(long)]
    pub ack: bool,
}

/// The planned-shutdown subcommands.
#[derive(Subcommand, Debug)]
pub enum ShutdownCmd {
    /// Planned shutdown: the runbook's 13 steps, run by the engine, followed here.
    Shutdown(ShutdownArgs),
    /// Post-shutdown validation: no engine process, no sockets, checkpoint valid, no recent ERROR lines.
    VerifyShutdown(VerifyArgs),
    /// The last planned shutdown's reconciliation table; --ack acknowledges a mismatch.
    Reconcile(ReconcileArgs),
    /// Release the deployment lock a planned shutdown left (it died before its end).
    Unlock(UnlockArgs),
}

/// `killswitch unlock`.
#[derive(Args, Debug)]
pub struct UnlockArgs {
    /// Release even if the process that locked is still alive.
    #[arg(long)]
    pub force: bool,
}

/// Runs one of them.
pub fn run(cmd: ShutdownCmd, t: &Target) -> ExitCode {
    match cmd {
        ShutdownCmd::Shutdown(a) => shutdown(a, t),
        ShutdownCmd::VerifyShutdown(a) => verify(a, t),
        ShutdownCmd::Reconcile(a) => reconcile(a, t),
        ShutdownCmd::Unlock(a) => unlock(a, t),
    }
}

fn open(t: &Target) -> Result<ControlBlock, ExitCode> {
    t.open().map_err(|e| control_cmds::fail(&e))
}

fn pid_alive(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    // A zombie has exited: its /proc/<pid>/stat says state Z.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(") ")
            .map(|(_, rest)| !rest.starts_with('Z'))
            .unwrap_or(true),
        Err(_) => false,
    }
}

/// `HH:MM` today (UTC) as Unix ns.
fn parse_at(s: &str) -> Result<u64, String> {
    let bad = || format!("--at {s:?}: use HH:MM (UTC, today), e.g. --at 15:45");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    let (h, m): (u64, u64) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 23 || m > 59 {
        return Err(bad());
    }
    let now = wall_ns();
    let day = now / 86_400_000_000_000 * 86_400_000_000_000;
    let at = day + (h * 3600 + m * 60) * 1_000_000_000;
    if at + 60_000_000_000 < now {
        return Err(format!(
            "--at {s}: that is in the past (now {} UTC); give a later time or leave --at out",
            format_wall(now)
        ));
    }
    Ok(at.max(now))
}

fn shutdown(a: ShutdownArgs, t: &Target) -> ExitCode {
    let at = match a.at.as_deref().map(parse_at).transpose() {
        Ok(v) => v.unwrap_or(0),
        Err(e) => {
            eprintln!("killswitch: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let flatten = FlattenMode::parse(&a.flatten).unwrap_or_default();
    if a.keep_passive && flatten != FlattenMode::None {
        eprintln!(
            "killswitch: --keep-passive keeps positions (option B): it cannot go with --flatten {}",
            a.flatten
        );
        return ExitCode::from(exit::USAGE);
    }
    let block = match open(t) {
        Ok(b) => b,
        Err(c) => return c,
    };
    let owner = block.owner();
    let progress = words::progress(&block);
    let running = progress.is_some_and(|p| p.state == PhaseState::Running);
    if a.dry_run {
        outln!(
            "Planned shutdown of engine {:?} (dry run: nothing is touched)",
            t.name
        );
        outln!("  reason:          {}", a.reason);
        outln!(
            "  start:           {}",
            if at == 0 {
                "now".into()
            } else {
                format_wall(at) + " UTC"
            }
        );
        outln!("  flatten:         {}", flatten.as_str());
        outln!("  keep passive:    {}", a.keep_passive);
        outln!(
            "  reduce limits:   {}",
            a.reduce_limits.map_or("no".into(), |p| format!("{p}%"))
        );
        outln!("Steps:");
        for p in Phase::ALL {
            let skip = match p {
                Phase::ReduceLimits if a.reduce_limits.is_none() => " (skipped: not asked)",
                _ => "",
            };
            outln!("  {:>2}. {}{skip}", p.number(), p.title());
        }
        outln!("Checks:");
        let mut ok = true;
        let mut check = |good: bool, what: String| {
            ok &= good;
            outln!("  {} {what}", if good { "✓" } else { "✗" });
        };
        check(owner.alive, format!("engine attached (pid {})", owner.pid));
        check(!running, "no planned shutdown running".into());
        let flags = words::change_flags(&block);
        check(!flags.locked, "deployments not locked".into());
        check(
            block.state().mode() != killswitch::control::Mode::Kill,
            "switch not at KILL (a KILL is the emergency path)".into(),
        );
        let tel = TelemetrySnapshot::read(&block);
        if let Some(e) = &tel.engine {
            outln!(
                "  · open orders {}, positions open {}, status {}",
                e.open_orders,
                e.positions_open,
                e.status.as_str()
            );
        }
        return ExitCode::from(if ok { exit::OK } else { exit::REFUSED });
    }
    if !owner.alive {
        eprintln!(
            "killswitch: no engine is attached to {} (nothing to shut down); `killswitch verify-shutdown` checks what a finished one left",
            block.path().display()
        );
        return ExitCode::from(exit::REFUSED);
    }
    if let Err(e) = std::fs::write(reason_path(block.path()), &a.reason) {
        eprintln!(
            "killswitch: cannot write the reason beside the control block ({}): {e}",
            reason_path(block.path()).display()
        );
        return ExitCode::from(exit::IO);
    }
    let req = ShutdownRequest {
        nonce: 0,
        flatten,
        keep_passive: a.keep_passive,
        reduce_limits_pct: a.reduce_limits.unwrap_or(0),
        pid: 0,
        at_wall_ns: at,
    };
    let req = match words::request_shutdown(&block, req) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("killswitch: {e}");
            return ExitCode::from(exit::REFUSED);
        }
    };
    if !a.json {
        outln!(
            "[{}] Planned shutdown requested (request {}): {}",
            clock(),
            req.nonce,
            a.reason
        );
    }
    follow(&block, req.nonce, owner.pid, &a)
}

fn clock() -> String {
    let s = format_wall(wall_ns());
    // "YYYY-MM-DD HH:MM:SS.mmm": the time is what an operator reads.
    s.split_once(' ').map(|(_, t)| t.to_string()).unwrap_or(s)
}

fn read_report(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn follow(block: &ControlBlock, nonce: u16, pid: u32, a: &ShutdownArgs) -> ExitCode {
    let path = report_path(block.path());
    let start = Instant::now();
    let mut printed_running = 0u64;
    let mut printed_done = 0u64;
    loop {
        let p = words::progress(block).filter(|p| p.nonce == nonce);
        let report = read_report(&path).filter(|r| r["nonce"] == nonce);
        if let (Some(r), false) = (&report, a.json) {
            for ph in r["phases"].as_array().into_iter().flatten() {
                let step = ph["step"].as_u64().unwrap_or(0);
                let bit = 1u64 << step;
                let result = ph["result"].as_str().unwrap_or("");
                if result == "running" {
                    if printed_running & bit == 0 {
                        printed_running |= bit;
                        outln!(
                            "[{}] Step {step}: {}...",
                            clock(),
                            ph["phase"].as_str().unwrap_or("")
                        );
                    }
                    continue;
                }
                if printed_done & bit == 0 {
                    printed_done |= bit;
                    let word = match result {
                        "done" => "Done",
                        "skipped" => "Skipped",
                        "warning" => "Done with warning",
                        _ => "FAILED",
                    };
                    outln!(
                        "[{}] Step {step}: {} ... {word} ({:.0} ms){}",
                        clock(),
                        ph["phase"].as_str().unwrap_or(""),
                        ph["ms"].as_f64().unwrap_or(0.0),
                        ph["detail"]
                            .as_str()
                            .filter(|d| !d.is_empty())
                            .map(|d| format!(": {d}"))
                            .unwrap_or_default()
                    );
                    if let Some(n) = ph["note"].as_str() {
                        outln!(
                            "           {}: {n}",
                            if result == "warning" {
                                "WARNING"
                            } else {
                                "ERROR"
                            }
                        );
                    }
                }
            }
        }
        let finished = p.is_some_and(|p| p.state == PhaseState::Finished)
            && report.as_ref().is_some_and(|r| r["finished"] == true);
        if finished {
            let r = report.unwrap_or(Value::Null);
            if a.json {
                outln!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            } else {
                print_summary(&r, &path);
            }
            return ExitCode::from(if r["clean"] == true {
                exit::OK
            } else {
                FINDINGS
            });
        }
        if !pid_alive(pid) {
            // One last look: the engine may have finished just now.
            if words::progress(block)
                .is_some_and(|p| p.nonce == nonce && p.state == PhaseState::Finished)
            {
                continue;
            }
            eprintln!(
                "killswitch: the engine (pid {pid}) is gone before the planned shutdown finished (last step {}); run `killswitch verify-shutdown` and check its log",
                p.map_or(0, |p| p.phase)
            );
            return ExitCode::from(NOT_FINISHED);
        }
        if start.elapsed() > a.follow_timeout {
            eprintln!(
                "killswitch: stopped following after {:?}: the engine goes on (step {}); `killswitch status` shows it",
                a.follow_timeout,
                p.map_or(0, |p| p.phase)
            );
            return ExitCode::from(NOT_FINISHED);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn print_summary(r: &Value, path: &Path) {
    outln!("");
    outln!("Step  Phase                                      Result              ms     waited ms");
    outln!("───────────────────────────────────────────────────────────────────────────────────");
    for ph in r["phases"].as_array().into_iter().flatten() {
        outln!(
            "{:>4}  {:<42} {:<18} {:>8.1} {:>9.1}",
            ph["step"].as_u64().unwrap_or(0),
            ph["phase"].as_str().unwrap_or(""),
            ph["result"].as_str().unwrap_or(""),
            ph["ms"].as_f64().unwrap_or(0.0),
            ph["waited_ms"].as_f64().unwrap_or(0.0)
        );
    }
    outln!(
        "Total {:.1} ms, of which configured waits {:.1} ms, work {:.1} ms",
        r["total_ms"].as_f64().unwrap_or(0.0),
        r["waited_ms"].as_f64().unwrap_or(0.0),
        r["work_ms"].as_f64().unwrap_or(0.0)
    );
    let rows = r["strategies"].as_array().cloned().unwrap_or_default();
    if !rows.is_empty() {
        outln!("");
        outln!("Strategy                 Status      Last Signal");
        for s in rows {
            let last = s["last_signal_wall_ns"].as_u64().unwrap_or(0);
            let ago = if last == 0 {
                "never".to_string()
            } else {
                format!("{}s ago", wall_ns().saturating_sub(last) / 1_000_000_000)
            };
            outln!(
                "{:<24} {:<11} {ago}",
                s["strategy"].as_str().unwrap_or(""),
                s["status"].as_str().unwrap_or("")
            );
        }
    }
    print_reconcile(r);
    let fr = r["flatten_results"].as_array().cloned().unwrap_or_default();
    if !fr.is_empty() {
        outln!("");
        outln!(
            "Flatten: {} (escalated: {}), slippage {}",
            r["flatten"],
            r["flatten_escalated"],
            r["slippage"]
        );
        for f in fr {
            outln!(
                "  {} {} {}: {} -> {}",
                f["venue"].as_str().unwrap_or(""),
                f["instrument"].as_str().unwrap_or(""),
                f["account"].as_str().unwrap_or(""),
                f["start"],
                f["remaining"]
            );
        }
    }
    outln!("");
    if let Some(c) = r["checkpoint"].as_object() {
        outln!(
            "Checkpoint: {} (CRC64 {}, verified {})",
            c["path"].as_str().unwrap_or(""),
            c["crc64"].as_str().unwrap_or(""),
            c["verified"]
        );
    }
    outln!("P&L: {}", r["pnl"]);
    let strag = r["stragglers"].as_array().cloned().unwrap_or_default();
    if !strag.is_empty() {
        outln!(
            "Stragglers ({}): {}",
            strag.len(),
            strag
                .iter()
                .take(20)
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    for w in r["warnings"].as_array().into_iter().flatten() {
        outln!("WARNING: {}", w.as_str().unwrap_or(""));
    }
    outln!(
        "{} — report {}",
        if r["clean"] == true {
            "Planned shutdown complete: status OFFLINE"
        } else {
            "Planned shutdown finished WITH FINDINGS: status OFFLINE"
        },
        path.display()
    );
}

fn print_reconcile(r: &Value) {
    let rows = r["reconcile"].as_array().cloned().unwrap_or_default();
    outln!("");
    outln!("Venue       Symbol      Account     Internal    Venue       Status");
    outln!("────────────────────────────────────────────────────────────────────");
    if rows.is_empty() {
        outln!("(no position anywhere)");
    }
    for row in rows {
        let st = row["status"].as_str().unwrap_or("");
        outln!(
            "{:<11} {:<11} {:<11} {:<11} {:<11} {} {st}",
            row["venue"].as_str().unwrap_or(""),
            row["instrument"].as_str().unwrap_or(""),
            row["account"].as_str().unwrap_or(""),
            row["internal"].to_string(),
            row["at_venue"].to_string(),
            if st == "OK" { "✓" } else { "✗" }
        );
    }
}

fn reconcile(a: ReconcileArgs, t: &Target) -> ExitCode {
    let block = match open(t) {
        Ok(b) => b,
        Err(c) => return c,
    };
    if let Some(r) = read_report(&report_path(block.path())) {
        print_reconcile(&r);
    } else {
        outln!(
            "(no planned shutdown report beside {})",
            block.path().display()
        );
    }
    let flags = words::change_flags(&block);
    if a.ack {
        let was = words::set_reconcile_mismatch(&block, false);
        outln!(
            "{}",
            if was {
                "Reconciliation mismatch acknowledged: reset is no longer blocked by it"
            } else {
                "No reconciliation mismatch was recorded: nothing to acknowledge"
            }
        );
        return ExitCode::from(exit::OK);
    }
    if flags.reconcile_mismatch {
        outln!("A reconciliation mismatch is recorded: reset is refused until `killswitch reconcile --ack`");
        return ExitCode::from(exit::REFUSED);
    }
    ExitCode::from(exit::OK)
}

fn unlock(a: UnlockArgs, t: &Target) -> ExitCode {
    let block = match open(t) {
        Ok(b) => b,
        Err(c) => return c,
    };
    let f = words::change_flags(&block);
    if !f.locked {
        outln!("Deployments are not locked");
        return ExitCode::from(exit::OK);
    }
    if pid_alive(f.locked_by_pid) && !a.force {
        eprintln!(
            "killswitch: the lock's owner (pid {}) is alive, its planned shutdown is still running: wait, or --force",
            f.locked_by_pid
        );
        return ExitCode::from(exit::REFUSED);
    }
    words::set_change_lock(&block, false);
    outln!(
        "Deployment lock released (it was set by pid {})",
        f.locked_by_pid
    );
    ExitCode::from(exit::OK)
}
