//! Control-block subcommands: init, status, trip, reset, audit, remove.

mod failover;
mod status_text;

use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use killswitch::clock::format_wall;
use killswitch::control::{
    AuditEntry, AuditKind, ControlBlock, ControlError, Mode, ResetRequest, ScopeKind, Source,
    Transition, TripRequest,
};

use killswitch::watchdog::{Health, Watchdog};

use crate::{exit, Target};
use failover::failover;
use status_text::{print_status, print_telemetry};

/// A role proven with a token, for `trip` and `reset`.
#[derive(clap::Args, Debug, Clone)]
pub struct RoleArgs {
    /// Act with this role (trader or risk), proven by --token-file; a trip
    /// made with the risk role can only be reset with the risk role.
    #[arg(long, value_parser = crate::serve_cmd::parse_role, requires = "token_file")]
    pub role: Option<killswitch::control::Role>,
    /// File holding your token (mode 0600; `killswitch roles add` writes one).
    #[arg(long, requires = "role")]
    pub token_file: Option<std::path::PathBuf>,
    /// Roles file the token is checked against (default: $KILLSWITCH_ROLES).
    #[arg(long)]
    pub roles_file: Option<std::path::PathBuf>,
}

/// Who acts: anonymous without --role, else the identity whose token
/// checks, if its role is the one asked for.
fn authenticate(r: &RoleArgs) -> Result<Option<killswitch_tools::roles::Authenticated>, String> {
    let (Some(role), Some(token_file)) = (r.role, &r.token_file) else {
        return Ok(None);
    };
    let roles = killswitch_tools::roles::Roles::load_configured(r.roles_file.as_deref())?;
    let token = killswitch_tools::roles::read_token_file(token_file)?;
    let who = roles.authenticate(&token).ok_or_else(|| {
        format!(
            "the token in {} matches no identity of {}",
            token_file.display(),
            roles.path().display()
        )
    })?;
    if who.role != role {
        return Err(format!(
            "the token in {} belongs to {} with the {} role, not the {role} role",
            token_file.display(),
            who.name,
            who.role
        ));
    }
    Ok(Some(who))
}

/// Modes a trip can ask for.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TripMode {
    /// Only orders that shrink a position pass.
    ReduceOnly,
    /// No new orders; resting orders stay.
    Halt,
    /// No new orders, and the engine's drain cancels every open order.
    Kill,
}

impl From<TripMode> for Mode {
    fn from(m: TripMode) -> Mode {
        match m {
            TripMode::ReduceOnly => Mode::ReduceOnly,
            TripMode::Halt => Mode::HaltNew,
            TripMode::Kill => Mode::Kill,
        }
    }
}

/// Control-block subcommands.
#[derive(Subcommand, Debug)]
pub enum ControlCmd {
    /// Create the control block (engines create it themselves on start).
    Init {
        /// Succeed if it already exists (its state is kept).
        #[arg(long)]
        exist_ok: bool,
    },
    /// Rolling restart: the active engine (lease holder) hands its venue
    /// sessions and the lease to its hot standby, which adopts the open
    /// orders and trades on; the old active stops (restart it with
    /// --standby). Refused without a live lease holder and a live standby.
    Failover {
        /// Give up waiting for the standby to hold the lease after this.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
        timeout: std::time::Duration,
    },
    /// The failover back to the engine restarted as the standby (the same
    /// steps as `failover`).
    Failback {
        /// Give up waiting for the standby to hold the lease after this.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
        timeout: std::time::Duration,
    },
    /// Show the switch: mode, scopes, who tripped it and why, engine liveness, drain progress.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Trip the switch (idempotent; only escalates).
    Trip {
        /// What to stop.
        #[arg(long, value_enum, default_value = "kill")]
        mode: TripMode,
        /// Only this venue (repeatable).
        #[arg(long)]
        venue: Vec<String>,
        /// Only this strategy / algorithm (repeatable).
        #[arg(long)]
        strategy: Vec<String>,
        /// Only this instrument (repeatable).
        #[arg(long)]
        instrument: Vec<String>,
        /// Only this account: trader, desk or client (repeatable).
        #[arg(long)]
        account: Vec<String>,
        /// Why: kept in the audit ring and shown by `status`.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        role: RoleArgs,
    },
    /// Clear the switch so the engine may trade again. Needs --confirm.
    Reset {
        /// Confirm that trading may resume.
        #[arg(long)]
        confirm: bool,
        /// Why: kept in the audit ring.
        #[arg(long)]
        reason: Option<String>,
        /// Reset even with orders in an unknown state or an unfinished drain on record (recorded as forced).
        #[arg(long)]
        force: bool,
        /// The generation you mean to clear (as `status` showed it); refused if the switch has moved on.
        /// Default: the generation read under the file lock at the reset.
        #[arg(long)]
        generation: Option<u64>,
        #[command(flatten)]
        role: RoleArgs,
    },
    /// Show the audit ring: the last trips and resets.
    Audit {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Dead-man's switch: trip KILL when the engine's heartbeat is older than --max-silence.
    Watchdog {
        /// Longest silence tolerated, e.g. 250ms.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "250ms")]
        max_silence: std::time::Duration,
        /// How often to look.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "5ms")]
        poll: std::time::Duration,
        /// Give up (exit 0) after this long without tripping; default: run until it trips.
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<std::time::Duration>,
    },
    /// Delete the control block. Clears a latched kill, so needs --confirm.
    Remove {
        /// Confirm the removal.
        #[arg(long)]
        confirm: bool,
        /// Remove even if damaged or owned by a live engine.
        #[arg(long)]
        force: bool,
    },
}

/// Prints an error and maps it to an exit code.
pub fn fail(e: &ControlError) -> ExitCode {
    eprintln!("killswitch: error: {e}");
    ExitCode::from(match e {
        ControlError::Io { .. } => exit::IO,
        ControlError::ResetRefused { .. }
        | ControlError::ResetStale { .. }
        | ControlError::ResetNeedsRole { .. }
        | ControlError::OwnedByLiveProcess { .. } => exit::REFUSED,
        ControlError::InvalidName { .. }
        | ControlError::UnknownGroup { .. }
        | ControlError::NotADirectory { .. } => exit::USAGE,
        _ => exit::BAD_FILE,
    })
}

/// Runs one control subcommand.
pub fn run(cmd: ControlCmd, t: &Target) -> ExitCode {
    match execute(cmd, t) {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

fn execute(cmd: ControlCmd, t: &Target) -> Result<ExitCode, ControlError> {
    match cmd {
        ControlCmd::Init { exist_ok } => {
            let block = if exist_ok {
                ControlBlock::open_or_create_with(&t.dir, &t.name, t.access()?)?
            } else {
                ControlBlock::create_with(&t.dir, &t.name, t.access()?)?
            };
            outln!(
                "control block {} ready: mode {}",
                block.path().display(),
                block.state().mode()
            );
        }
        ControlCmd::Status { json } => {
            let block = t.open()?;
            let view = killswitch_tools::admin::view::EngineView::read(&block);
            if json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&view).expect("status serialises")
                );
            } else {
                print_status(&view.status);
                print_telemetry(&view);
            }
        }
        ControlCmd::Trip {
            mode,
            venue,
            strategy,
            instrument,
            account,
            reason,
            role,
        } => {
            let who = match authenticate(&role) {
                Ok(w) => w,
                Err(e) => {
                    eprintln!("killswitch: refused: {e}");
                    return Ok(ExitCode::from(exit::REFUSED));
                }
            };
            let operator = t.operator()?;
            let block = operator.block();
            let mut scopes = Vec::new();
            for (kind, names) in [
                (ScopeKind::Venue, venue),
                (ScopeKind::Strategy, strategy),
                (ScopeKind::Instrument, instrument),
                (ScopeKind::Account, account),
            ] {
                scopes.extend(names.into_iter().map(|n| (kind, n)));
            }
            let scope_text = if scopes.is_empty() {
                "all orders".to_string()
            } else {
                scopes
                    .iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let out = operator.trip_as(
                &TripRequest {
                    mode: mode.into(),
                    scopes,
                    source: Source::Cli,
                    reason,
                },
                killswitch::control::Actor {
                    role: who.as_ref().map(|w| w.role),
                    identity: who.as_ref().map_or("", |w| w.name.as_str()),
                },
            )?;
            match out.transition {
                Transition::Changed { from, to } => outln!(
                    "TRIPPED {} ({scope_text}) on {}: generation {} -> {}, mode now {}{}",
                    Mode::from(mode).as_str().to_uppercase(),
                    block.path().display(),
                    from.generation(),
                    to.generation(),
                    to.mode(),
                    if to.scoped() { " + scoped" } else { "" }
                ),
                Transition::Unchanged(w) => outln!(
                    "already tripped: mode {}{} at generation {} forbids at least as much; recorded in the audit ring",
                    w.mode(),
                    if w.scoped() { " + scoped" } else { "" },
                    w.generation()
                ),
            }
            let owner = block.owner();
            if !owner.alive {
                outln!("note: no live engine is attached; the trip is latched and applies when one starts");
            }
        }
        ControlCmd::Reset {
            confirm,
            reason,
            force,
            generation,
            role,
        } => {
            let operator = t.operator()?;
            let block = operator.block();
            if !confirm {
                eprintln!(
                    "killswitch: refused: reset lets engine '{}' trade again (mode now {}); rerun with --confirm --reason \"...\"",
                    t.name,
                    block.state().mode()
                );
                return Ok(ExitCode::from(exit::REFUSED));
            }
            let Some(reason) = reason.filter(|r| !r.trim().is_empty()) else {
                eprintln!("killswitch: refused: a reset must say why: add --reason \"...\"");
                return Ok(ExitCode::from(exit::REFUSED));
            };
            let who = match authenticate(&role) {
                Ok(w) => w,
                Err(e) => {
                    // Recorded like the endpoint's 401: someone tried.
                    operator.record_unauthorized(Source::Cli, &format!("cli reset: {e}"));
                    eprintln!("killswitch: refused: {e} (recorded in the audit ring)");
                    return Ok(ExitCode::from(exit::REFUSED));
                }
            };
            let out = operator.reset_as(
                &ResetRequest {
                    source: Source::Cli,
                    reason,
                    force,
                    expected_generation: generation,
                },
                killswitch::control::Actor {
                    role: who.as_ref().map(|w| w.role),
                    identity: who.as_ref().map_or("", |w| w.name.as_str()),
                },
            )?;
            let forced = block
                .audit()
                .iter()
                .any(|e| e.ticket == out.ticket && e.forced);
            match out.transition {
                Transition::Changed { from, to } => outln!(
                    "RESET {}: was {} at generation {}, now normal at generation {}{}",
                    block.path().display(),
                    from.mode(),
                    from.generation(),
                    to.generation(),
                    if forced { " (forced)" } else { "" }
                ),
                Transition::Unchanged(w) if forced => outln!(
                    "not tripped (generation {}); the unfinished-drain record and the unknown-order count are cleared (forced, recorded)",
                    w.generation()
                ),
                Transition::Unchanged(w) => outln!(
                    "not tripped (generation {}); nothing to reset (recorded as a no-op reset)",
                    w.generation()
                ),
            }
        }
        ControlCmd::Audit { json } => {
            let block = t.open()?;
            let entries = block.audit();
            if json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&entries).expect("audit serialises")
                );
            } else if entries.is_empty() {
                outln!("audit ring of {} is empty", block.path().display());
            } else {
                outln!(
                    "{:>5}  {:<27} {:<13} {:<11} {:<7} {:>5} {:>8} {:>6}  {:<22} reason",
                    "#",
                    "time",
                    "event",
                    "mode",
                    "source",
                    "gen",
                    "pid",
                    "uid",
                    "scope"
                );
                for e in &entries {
                    outln!(
                        "{:>5}  {:<27} {:<13} {:<11} {:<7} {:>5} {:>8} {:>6}  {:<22} {}",
                        e.ticket,
                        format_wall(e.wall_ns),
                        kind_text(e),
                        e.mode.as_str(),
                        e.source.as_str(),
                        e.generation,
                        e.pid,
                        e.uid,
                        scope_text(&block, e),
                        e.reason
                    );
                }
            }
        }
        ControlCmd::Watchdog {
            max_silence,
            poll,
            timeout,
        } => {
            let block = std::sync::Arc::new(t.open()?);
            outln!(
                "watchdog on {}: trips KILL after {} without a heartbeat or when the engine dies",
                block.path().display(),
                humantime::format_duration(max_silence)
            );
            let dog = Watchdog::new(block.clone(), max_silence);
            let stop = std::sync::atomic::AtomicBool::new(false);
            let until = timeout.map(|d| std::time::Instant::now() + d);
            let health = dog.run(poll, &stop, until);
            match health {
                Health::Stale { .. } | Health::OwnerDead { .. } => {
                    let trip = block.last_trip();
                    outln!(
                        "TRIPPED KILL: {}",
                        trip.map(|t| t.reason)
                            .unwrap_or_else(|| format!("{health:?}"))
                    );
                }
                Health::AlreadyKilled => {
                    outln!("switch is at KILL; watchdog has nothing left to do")
                }
                Health::Alive { .. } | Health::NoEngine => {
                    outln!("timeout reached: engine healthy ({health:?})")
                }
            }
        }
        ControlCmd::Failover { timeout } => return failover(t, "failover", timeout),
        ControlCmd::Failback { timeout } => return failover(t, "failback", timeout),
        ControlCmd::Remove { confirm, force } => {
            if !confirm {
                eprintln!(
                    "killswitch: refused: removing {} clears any latched kill; rerun with --confirm",
                    killswitch::control::path_for(&t.dir, &t.name).display()
                );
                return Ok(ExitCode::from(exit::REFUSED));
            }
            let path = ControlBlock::remove(&t.dir, &t.name, force)?;
            outln!("removed {}", path.display());
        }
    }
    Ok(ExitCode::from(exit::OK))
}

fn kind_text(e: &AuditEntry) -> &'static str {
    match (e.kind, e.forced) {
        (AuditKind::Trip, _) => "TRIP",
        (AuditKind::TripNoop, _) => "trip (no-op)",
        (AuditKind::Reset, false) => "RESET",
        (AuditKind::Reset, true) => "RESET forced",
        (AuditKind::ResetRefused, _) => "reset refused",
        (AuditKind::ResetNoop, _) => "reset (no-op)",
        (AuditKind::Unauthorized, _) => "UNAUTHORIZED",
        (AuditKind::Warning, _) => "warning",
    }
}

fn scope_text(block: &ControlBlock, e: &AuditEntry) -> String {
    match e.scope {
        None => "all".into(),
        Some((k, i)) => format!("{k} {}", block.scope_label(k, i)),
    }
}
