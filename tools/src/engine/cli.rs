//! Command-line front of the reference engine, shared by `ks-engine` and
//! the hidden `killswitch engine` (which the drill starts, so that
//! `cargo run -- drill` needs no other binary).

use std::path::PathBuf;

use clap::Args;

use super::{Engine, EngineConfig, EXIT_START_FAILED};

/// The options of `killswitch engine` (hidden; started by the drill). The
/// name and directory come from the config file there: `killswitch`'s own
/// global `--name` / `--dir` would otherwise shadow them.
#[derive(Args, Debug, Clone, Default)]
pub struct EngineFileArgs {
    /// TOML configuration (every key has a default; see `engine::config`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Journal directory.
    #[arg(long)]
    pub journal: Option<PathBuf>,
    /// Write the JSON report here at exit.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Trip KILL by itself after this long (e.g. 5s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub trade_for: Option<std::time::Duration>,
    /// Run as the hot standby of the engine of this name: follow its
    /// journal, keep its state in memory, publish the lag in the control
    /// block, send nothing; stop on SIGTERM / SIGINT.
    #[arg(long)]
    pub standby: bool,
}

/// Options of `ks-engine`: those of [`EngineFileArgs`] plus the engine's
/// name and control directory; each overrides the config file.
#[derive(Args, Debug, Clone, Default)]
pub struct EngineArgs {
    /// Config, journal, report, trade-for.
    #[command(flatten)]
    pub file: EngineFileArgs,
    /// Engine name (control block `killswitch.<name>`).
    #[arg(long)]
    pub name: Option<String>,
    /// Control-block directory.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

impl From<EngineFileArgs> for EngineArgs {
    fn from(file: EngineFileArgs) -> EngineArgs {
        EngineArgs {
            file,
            ..EngineArgs::default()
        }
    }
}

/// Loads the configuration and applies the overrides.
pub fn load(args: &EngineArgs) -> Result<EngineConfig, String> {
    let mut cfg = match &args.file.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).map_err(|e| format!("config {}: {e}", p.display()))?;
            EngineConfig::from_toml(&text).map_err(|e| format!("config {}: {e}", p.display()))?
        }
        None => EngineConfig::default(),
    };
    if let Some(n) = &args.name {
        cfg.name = n.clone();
    }
    if let Some(d) = &args.dir {
        cfg.control_dir = Some(d.clone());
    }
    if let Some(j) = &args.file.journal {
        cfg.journal_dir = j.clone();
    }
    if let Some(r) = &args.file.report {
        cfg.report_path = Some(r.clone());
    }
    if let Some(t) = args.file.trade_for {
        cfg.trade_for_ms = t.as_millis() as u64;
    }
    Ok(cfg)
}

/// Runs the engine to the end; returns the process exit code.
pub fn main(args: &EngineArgs) -> i32 {
    let cfg = match load(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ks-engine: error: {e}");
            return EXIT_START_FAILED;
        }
    };
    let report_path = cfg.report_path.clone();
    let mut taken_over = None;
    if args.file.standby {
        match super::standby::run(&cfg) {
            super::standby::Outcome::Stopped(report) => {
                eprintln!("ks-engine: {}", report.verdict);
                if let Some(p) = report_path {
                    write_report(&p, &report);
                }
                return report.exit_code;
            }
            super::standby::Outcome::Promote(report, journal) => {
                eprintln!("ks-engine: {}", report.verdict);
                taken_over = Some(*journal);
            }
        }
    }
    let after_hand_over = (
        cfg.failover.clone(),
        cfg.control_dir
            .clone()
            .unwrap_or_else(killswitch::control::default_dir),
        cfg.name.clone(),
    );
    let engine = match Engine::start_with(cfg, taken_over) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("ks-engine: cannot start: {e}");
            return e.exit_code;
        }
    };
    eprintln!(
        "ks-engine: pid {} trading; control block {}; {}",
        std::process::id(),
        engine.block_path().display(),
        engine.recovery_note()
    );
    let mut report = engine.run();
    if let Some(epoch) = report.handed_over_epoch {
        let (failover, dir, name) = after_hand_over;
        if failover.restart_as_standby {
            restart_after_hand_over(&mut report, epoch, &failover, &dir, &name, &report_path);
        }
    }
    eprintln!("ks-engine: {}", report.verdict);
    if let Some(p) = report_path {
        write_report(&p, &report);
    }
    report.exit_code
}

/// `[failover] restart_as_standby`: once the successor holds the lease,
/// re-executes this engine as its standby ([`super::restart`]); returns
/// only when it does not (the report says why).
fn restart_after_hand_over(
    report: &mut super::EngineReport,
    epoch: u64,
    failover: &super::config::FailoverSection,
    dir: &std::path::Path,
    name: &str,
    report_path: &Option<PathBuf>,
) {
    use super::restart::{self, Successor};
    let wait = std::time::Duration::from_millis(failover.takeover_wait_ms);
    match restart::wait_for_successor(dir, name, epoch, wait) {
        Successor::Active { pid, epoch: theirs } => {
            report.verdict = format!(
                "handed over to the standby (epoch {epoch} released); pid {pid} holds epoch {theirs}: restarting as its standby ([failover] restart_as_standby)"
            );
            eprintln!("ks-engine: {}", report.verdict);
            if let Some(p) = report_path {
                // The standby writes its own report to the same path when it
                // stops: the hand-over's is kept beside it.
                write_report(&restart::handover_report_path(p, epoch), &*report);
                write_report(p, &*report);
            }
            super::failover::phase_now("restarting as the standby (re-exec with --standby)");
            let e = restart::exec_as_standby();
            report.verdict = format!(
                "handed over (epoch {epoch} released), but cannot restart as the standby: {e}; restart this engine with --standby"
            );
            report.exit_code = EXIT_START_FAILED;
        }
        Successor::KillInForce => {
            report.verdict.push_str(
                "; a KILL is in force: not restarting as a standby (the engine that took over drains it and stops)",
            );
        }
        Successor::StoppedSince { epoch: theirs } => {
            report.verdict = format!(
                "handed over to the standby (epoch {epoch} released); it took epoch {theirs} and has stopped since: nobody is active, so this engine does not restart as a standby (see the other engine's log)"
            );
        }
        Successor::NotTaken { epoch: now } => {
            report.verdict = format!(
                "handed over (epoch {epoch} released), but nobody took the lease within {wait:?} (epoch now {now}): not restarting as a standby; nobody is active and the venues hold the orders for their takeover grace period only: look at the standby's log; starting this engine again without --standby recovers the journal's open orders and cancels them before it trades"
            );
            report.exit_code = EXIT_START_FAILED;
        }
        Successor::NoBlock(e) => {
            report.verdict = format!(
                "handed over (epoch {epoch} released), but cannot read the control block to restart as the standby: {e}; restart this engine with --standby"
            );
            report.exit_code = EXIT_START_FAILED;
        }
    }
}

/// Written to a temporary name and renamed: a reader never sees half a report.
fn write_report(p: &std::path::Path, report: &impl serde::Serialize) {
    let json = serde_json::to_string_pretty(report).expect("report serialises");
    let tmp = p.with_extension("json.tmp");
    if let Err(e) = std::fs::write(&tmp, json).and_then(|()| std::fs::rename(&tmp, p)) {
        eprintln!("ks-engine: cannot write report {}: {e}", p.display());
    }
}
