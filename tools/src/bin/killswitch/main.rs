//! `killswitch`: trip, inspect and reset the kill switch of a running engine.
//!
//! Every subcommand that talks to an engine finds its control block as
//! `<dir>/killswitch.<name>`: `--dir` (or `KILLSWITCH_DIR`, default
//! `/dev/shm`) and `--name` (or `KILLSWITCH_NAME`, default `engine`).

/// `println!` for command output. A closed pipe (`killswitch status | head
/// -1`) is a normal end of output, not a panic: printing stops and the
/// command goes on to its own exit code (an `emergency` whose reader went
/// away still says by its exit code what happened).
macro_rules! outln {
    ($($t:tt)*) => {
        $crate::output::line(format_args!($($t)*))
    };
}

/// A drill's progress line: on stdout, or on stderr under `--json` (the
/// drill's stdout is then its JSON report alone).
macro_rules! say {
    ($quiet:expr, $($t:tt)*) => {
        if $quiet { eprintln!($($t)*) } else { outln!($($t)*) }
    };
}

mod output {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};

    static CLOSED: AtomicBool = AtomicBool::new(false);

    /// Writes one line to stdout unless it is closed; see `outln!`.
    pub fn line(args: std::fmt::Arguments<'_>) {
        if CLOSED.load(Ordering::Relaxed) {
            return;
        }
        let mut out = std::io::stdout().lock();
        if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
            CLOSED.store(true, Ordering::Relaxed);
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                eprintln!("killswitch: cannot write to standard output: {e}");
            }
        }
    }
}

mod control_cmds;
mod demo;
mod drill;
mod drill_planned;
mod drill_rolling;
mod drill_wire;
mod emergency;
#[cfg(feature = "firm")]
mod firm_cmds;
mod journal_cmds;
mod serve_cmd;
mod shutdown_cmds;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use killswitch::access::Access;
use killswitch::control::{ControlBlock, ControlError, Operator};

/// Exit codes shared by every subcommand (documented in README.md).
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The operation was refused or found a problem (reset refused, invalid checkpoint).
    pub const REFUSED: u8 = 1;
    /// Wrong command-line arguments (clap's own code).
    pub const USAGE: u8 = 2;
    /// The control file (or another input file) is missing, damaged or of another version.
    pub const BAD_FILE: u8 = 3;
    /// An I/O error.
    pub const IO: u8 = 4;
}

/// Which control block to act on.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Directory of control files.
    #[arg(
        long,
        global = true,
        env = "KILLSWITCH_DIR",
        default_value = "/dev/shm"
    )]
    pub dir: PathBuf,
    /// Engine name: the control file is <dir>/killswitch.<name>.
    #[arg(long, global = true, env = "KILLSWITCH_NAME", default_value = "engine")]
    pub name: String,
    /// A group allowed to share the control file (mode 0660 with that
    /// group); without it the file must be owner-only (0600).
    #[arg(long, global = true, env = "KILLSWITCH_GROUP")]
    pub group: Option<String>,
}

impl Target {
    /// Who may share the control file, from `--group`.
    pub fn access(&self) -> Result<Access, ControlError> {
        killswitch::access::access_for_group(self.group.as_deref())
    }

    /// Opens the control block this command is aimed at.
    pub fn open(&self) -> Result<ControlBlock, ControlError> {
        ControlBlock::open_with(&self.dir, &self.name, self.access()?)
    }

    /// The operator's handle on the target block (trip, reset, status).
    pub fn operator(&self) -> Result<Operator, ControlError> {
        Operator::open(&self.dir, &self.name, self.access()?)
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "killswitch",
    version,
    about = "Kill switch for automated trading engines: trip, inspect, reset",
    after_help = "Exit codes: 0 ok, 1 refused / problem found, 2 usage, 3 missing or damaged file, 4 I/O error; emergency: 10 escalated, 11 orders unknown, 12 checkpoint failed, 13 no engine; shutdown: 5 finished with findings, 6 engine gone or follow timed out; verify-shutdown: 32 + mask (1 engine process, 2 sockets, 4 checkpoint, 8 log errors)."
)]
struct Cli {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    #[command(flatten)]
    Control(control_cmds::ControlCmd),
    /// Create a control block, trip it from a child process and show what a gate saw.
    Demo,
    /// The main job: start the reference engine, trip it from outside, check nothing escaped and nothing was lost (--planned: the planned shutdown instead).
    Drill(drill::DrillArgs),
    /// The reference engine (what `ks-engine` runs; the drill starts it as a child).
    #[command(hide = true)]
    Engine(killswitch_tools::engine::cli::EngineFileArgs),
    /// Simulated venues over FIX 4.4 (what `ks-venue` runs; the drill starts them as children).
    #[command(hide = true)]
    Venue(killswitch_tools::venue_server::cli::VenueArgs),
    /// Emergency stop: trip KILL, follow the engine's drain, escalate to SIGTERM/SIGKILL if it does not confirm.
    Emergency(emergency::EmergencyArgs),
    #[command(flatten)]
    Shutdown(shutdown_cmds::ShutdownCmd),
    /// Create or validate state checkpoints (quick: journal snapshot; complete: .ckpt file).
    #[command(subcommand)]
    Checkpoint(journal_cmds::CheckpointCmd),
    /// Inspect or recover the journal.
    #[command(subcommand)]
    Journal(journal_cmds::JournalCmd),
    /// The admin HTTP endpoint beside the engine: activate, reset (token), status, metrics.
    Serve(serve_cmd::ServeArgs),
    /// Identities and tokens for `serve` and `reset --role`.
    #[command(subcommand)]
    Roles(serve_cmd::RolesCmd),
    /// Terminal dashboard of the live engine (the runbook's "SHUTDOWN IN PROGRESS" view during a drain).
    Watch(watch::WatchArgs),
    /// The firm-wide kill over NATS: trip, status, reset, history (and init, keygen).
    #[cfg(feature = "firm")]
    Firm(firm_cmds::FirmArgs),
    /// Per host: follow the firm's NATS bucket and hold this host's control blocks to it.
    #[cfg(feature = "firm")]
    Relay(firm_cmds::RelayArgs),
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    // The drill and the demo make their own control block (the drill in its
    // work directory, name "drill"): a --dir / --name given for them would
    // be silently ignored, so they are refused. (KILLSWITCH_DIR /
    // KILLSWITCH_NAME in the environment are meant for the other commands
    // and do not apply to these.)
    if matches!(cli.command, Command::Drill(_) | Command::Demo) {
        let given: Vec<&str> = ["dir", "name"]
            .into_iter()
            .filter(|id| matches.value_source(id) == Some(ValueSource::CommandLine))
            .collect();
        if !given.is_empty() {
            let drill = matches!(cli.command, Command::Drill(_));
            eprintln!(
                "killswitch: error: --{} does not apply to `{}`: it creates its own control block{}",
                given.join(" / --"),
                if drill { "drill" } else { "demo" },
                if drill {
                    " (name \"drill\") in its work directory; use --work-dir DIR to choose where"
                } else {
                    " in a temporary directory"
                }
            );
            return ExitCode::from(exit::USAGE);
        }
    }
    match cli.command {
        Command::Control(c) => control_cmds::run(c, &cli.target),
        Command::Demo => demo::run(),
        Command::Drill(a) => drill::run(a),
        Command::Emergency(a) => emergency::run(a, &cli.target),
        Command::Shutdown(c) => shutdown_cmds::run(c, &cli.target),
        Command::Venue(a) => killswitch_tools::venue_server::cli::main(&a),
        Command::Engine(a) => std::process::ExitCode::from(
            killswitch_tools::engine::cli::main(&a.into()).clamp(0, 255) as u8,
        ),
        Command::Checkpoint(c) => match cli.target.access() {
            Ok(access) => journal_cmds::run_checkpoint(c, access),
            Err(e) => control_cmds::fail(&e),
        },
        Command::Journal(c) => match cli.target.access() {
            Ok(access) => journal_cmds::run_journal(c, access),
            Err(e) => control_cmds::fail(&e),
        },
        Command::Serve(a) => serve_cmd::run_serve(a, &cli.target),
        Command::Roles(c) => serve_cmd::run_roles(c),
        Command::Watch(a) => watch::run(a, &cli.target),
        #[cfg(feature = "firm")]
        Command::Firm(a) => firm_cmds::run(a),
        #[cfg(feature = "firm")]
        Command::Relay(a) => match cli.target.access() {
            Ok(access) => firm_cmds::run_relay(a, &cli.target, access),
            Err(e) => control_cmds::fail(&e),
        },
    }
}
