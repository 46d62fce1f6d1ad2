//! `killswitch drill`: the emergency runbook, end to end, on real processes.
//!
//! It starts simulated venues as their own processes (FIX 4.4 on loopback,
//! [`crate::drill_wire`]; `--venues in-process` keeps them inside the
//! engine) and the reference engine as a child process connected to them,
//! lets it trade until thousands of orders rest, trips it from outside
//! (`killswitch emergency`, or `SIGUSR1`), then checks what the runbook's
//! post-shutdown validation asks and more: no order reached a venue after
//! the gateway acknowledged the kill, every order is terminal or reported
//! `CancelUnknown`, nothing is left resting at the venues (read from the
//! venues' own audit logs over the wire), the quick checkpoint is in the
//! journal, a complete checkpoint built from the journal validates, the
//! journal rebuilds the engine's final state, the process exited and was
//! reaped, and the whole stop took less than the runbook's 30 seconds.
//!
//! `--planned` runs the planned shutdown instead ([`crate::drill_planned`]);
//! `--scenario rolling-restart` the rolling restart ([`crate::drill_rolling`]).

mod emergency_drill;
mod shared_steps;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use killswitch_tools::engine::EngineReport;
use serde::Serialize;

use crate::emergency::EmergencyReport;
use emergency_drill::drill;
pub(crate) use shared_steps::{
    attach, config_for, say_checks, say_opening, spawn_engine, start_venues_and_config, trade,
    wait_child, work_dir,
};

/// What goes wrong in the drill.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// A healthy engine, stopped from outside.
    Normal,
    /// Venue SIM-B ignores every cancel: its orders end `CancelUnknown` at the deadline.
    StuckCancels,
    /// The engine is `SIGSTOP`ped first (the runbook's step 1); `emergency` continues it so it can cancel.
    Sigstop,
    /// The engine is `SIGSTOP`ped and `emergency --no-continue` escalates to SIGTERM, then SIGKILL.
    Stuck,
    /// Venue SIM-B drops the session mid-run (cancel-on-disconnect).
    VenueDisconnect,
    /// A strategy thread panics; the panic hook trips KILL inside the engine.
    StrategyPanic,
    /// The gateway is stuck in a blocking venue write: it never acknowledges
    /// the kill, the drain fails, `emergency` escalates to SIGTERM, then SIGKILL
    /// (SIM-A stays in-process: a FIX session never blocks on a write).
    GatewayHang,
    /// The engine is SIGKILLed with orders resting at venues without
    /// cancel-on-disconnect, then restarted: it must cancel what its journal
    /// shows open before its first new order (over the wire only).
    CrashRestart,
    /// The rolling restart (over the wire only): an active engine and its
    /// hot standby; `killswitch failover`, the old active restarting as
    /// the standby, `killswitch failback`, then `killswitch emergency`;
    /// lost 0, duplicated 0, positions and the gap in order flow read from
    /// the venues' audit logs.
    RollingRestart,
    /// With --planned only: SIM-B's other participants withdraw their
    /// liquidity midway (resting orders pulled, no flow): its positions
    /// will not flatten, flattening escalates to aggressive and reports
    /// what remains (the runbook's "positions not flattening").
    NoLiquidity,
}

/// Where the drill's venues run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VenueMode {
    /// `killswitch venue` child processes, one per venue, over FIX 4.4 on loopback.
    Wire,
    /// The engine's built-in simulated venues (fastest; no sockets).
    InProcess,
}

/// How the drill trips the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TripMethod {
    /// `killswitch emergency` from another process.
    Cli,
    /// `SIGUSR1` to the engine, then `killswitch emergency` to follow it.
    Signal,
    /// `SIGTERM` to the engine (the runbook's `pkill -TERM`), then `killswitch emergency` to follow it.
    Sigterm,
}

/// Options of `killswitch drill`.
#[derive(Args, Debug)]
pub struct DrillArgs {
    /// What goes wrong.
    #[arg(long, value_enum, default_value = "normal")]
    pub(crate) scenario: Scenario,
    /// How to trip.
    #[arg(long, value_enum, default_value = "cli")]
    pub(crate) method: TripMethod,
    /// Where the venues run.
    #[arg(long, value_enum, default_value = "wire")]
    pub(crate) venues: VenueMode,
    /// Trading time before the trip.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
    pub(crate) trade_for: Duration,
    /// Wait for at least this many resting orders before the trip (or 30 s more).
    #[arg(long, default_value_t = 8000)]
    pub(crate) min_open: u64,
    /// Working directory (control block, journal, checkpoints, logs); default a new temp dir, removed on PASS.
    #[arg(long)]
    pub(crate) work_dir: Option<PathBuf>,
    /// Keep the working directory even on PASS.
    #[arg(long)]
    pub(crate) keep: bool,
    /// Print the drill report as JSON on stdout (the narrative goes to stderr).
    #[arg(long)]
    pub(crate) json: bool,
    /// The planned shutdown instead of the emergency: `killswitch shutdown`
    /// (the runbook's 13 steps, with flattening) against the trading
    /// engine, then `killswitch verify-shutdown`.
    #[arg(long)]
    pub(crate) planned: bool,
    /// With --planned: how positions are flattened.
    #[arg(long, default_value = "conservative", value_parser = ["aggressive", "conservative", "none"])]
    pub(crate) flatten: String,
    /// With --planned: where the drill report (JSON) is written; default
    /// `ks-drill-planned-<pid>.json` in the system temp directory (it
    /// outlives the work directory, removed on PASS).
    #[arg(long, value_name = "FILE")]
    pub(crate) report: Option<PathBuf>,
}

/// One check and its outcome.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// What is checked.
    pub name: String,
    /// Passed.
    pub ok: bool,
    /// Figures.
    pub detail: String,
}

impl Check {
    /// A check named `name`, passed or not, with its figures.
    pub fn new(name: &str, ok: bool, detail: String) -> Check {
        Check {
            name: name.into(),
            ok,
            detail,
        }
    }
}

/// The drill's result.
#[derive(Clone, Debug, Serialize)]
pub struct DrillReport {
    /// Scenario.
    pub scenario: Scenario,
    /// Trip method.
    pub method: TripMethod,
    /// Where the venues ran.
    pub venues: VenueMode,
    /// Working directory.
    pub work_dir: String,
    /// PASS / FAIL.
    pub pass: bool,
    /// Checks.
    pub checks: Vec<Check>,
    /// What `killswitch emergency` reported.
    pub emergency: Option<EmergencyReport>,
    /// `killswitch emergency`'s exit code.
    pub emergency_exit: Option<i32>,
    /// The engine's own report (absent when it was killed).
    pub engine: Option<EngineReport>,
    /// The engine process's exit status.
    pub engine_exit: String,
    /// Complete checkpoint written from the journal.
    pub checkpoint: Option<String>,
    /// Over the wire: what the venues' audit logs say.
    pub wire: Option<crate::drill_wire::WireEvidence>,
    /// Crash-restart: the crashed engine's exit status.
    pub crashed_engine_exit: Option<String>,
}

/// Runs the drill.
pub fn run(args: DrillArgs) -> ExitCode {
    if args.scenario == Scenario::RollingRestart {
        return crate::drill_rolling::run(&args);
    }
    if args.planned {
        return crate::drill_planned::run(&args);
    }
    if args.flatten != "conservative" || args.report.is_some() {
        eprintln!("killswitch drill: error: --flatten and --report go with --planned only");
        return ExitCode::from(crate::exit::USAGE);
    }
    if args.scenario == Scenario::NoLiquidity {
        eprintln!("killswitch drill: error: --scenario no-liquidity is a planned-shutdown path: add --planned");
        return ExitCode::from(crate::exit::USAGE);
    }
    finish(drill(&args), args.json, |r| r.pass)
}

/// A drill's exit: its report on stdout with `--json`, exit 0 when `pass`
/// says it passed, 1 when not, the I/O code when it could not run (the
/// error on stderr).
pub(crate) fn finish<R: serde::Serialize>(
    out: Result<R, String>,
    json: bool,
    pass: impl Fn(&R) -> bool,
) -> ExitCode {
    match out {
        Ok(r) => {
            if json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&r).expect("report serialises")
                );
            }
            if pass(&r) {
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
