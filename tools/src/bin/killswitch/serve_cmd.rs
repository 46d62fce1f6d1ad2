//! `killswitch serve` (the admin HTTP endpoint) and `killswitch roles`
//! (identities and tokens for it and for `reset --role`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use killswitch::control::{Operator, Role};
use killswitch_tools::admin::{AdminServer, AlertConfig, ServeConfig, DEFAULT_LISTEN};
use killswitch_tools::roles::{self, Roles};

use crate::{exit, Target};

/// `killswitch serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (the runbook's curl uses localhost:8080).
    #[arg(long, env = "KILLSWITCH_LISTEN", default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Roles file: identities, roles and token hashes (`killswitch roles add`).
    /// Without one, every request that needs a token gets 401.
    #[arg(long, env = "KILLSWITCH_ROLES")]
    roles_file: Option<PathBuf>,
    /// Require a bearer token for activate too (default: loopback needs none).
    #[arg(long)]
    activate_needs_token: bool,
    /// Largest request body, bytes (larger: 413).
    #[arg(long, default_value_t = 16 * 1024)]
    max_body: usize,
    /// A client slower than this to send its request gets 408.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    read_timeout: Duration,
    /// Worker threads answering requests.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Loss (currency units) past which `killswitch_pnl_loss_alert` is 1.
    #[arg(long)]
    loss_alert: Option<f64>,
    /// Scheduling niceness of the endpoint (0..=19): by default it yields
    /// the CPU to the engine's threads under a flood (BENCHMARKS.md), yet
    /// still runs when the engine spins (unlike SCHED_IDLE).
    #[arg(long, default_value_t = 19, value_parser = clap::value_parser!(i32).range(0..=19))]
    nice: i32,
}

/// `killswitch roles ...`.
#[derive(Subcommand, Debug)]
pub enum RolesCmd {
    /// Create an identity: a new token in --token-out (mode 0600) and its hash in the roles file.
    Add {
        /// Roles file (created mode 0600 if missing).
        #[arg(long, env = "KILLSWITCH_ROLES")]
        roles_file: PathBuf,
        /// Name recorded in the audit ring.
        #[arg(long)]
        identity: String,
        /// trader or risk.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Where to write the token (never overwritten).
        #[arg(long)]
        token_out: PathBuf,
    },
    /// List the identities of a roles file (names and roles; tokens are never stored).
    List {
        /// Roles file.
        #[arg(long, env = "KILLSWITCH_ROLES")]
        roles_file: PathBuf,
    },
}

/// Parses `trader` / `risk` for clap.
pub fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("{s:?} is not a role: use trader or risk"))
}

/// Runs `serve` until the process is stopped.
pub fn run_serve(a: ServeArgs, t: &Target) -> ExitCode {
    let block = match t.open() {
        Ok(b) => b,
        Err(e) => return crate::control_cmds::fail(&e),
    };
    let path = block.path().display().to_string();
    // Before any worker starts: threads inherit it.
    // SAFETY: setpriority has no memory arguments; PRIO_PROCESS with who 0
    // is this process, and raising one's own niceness needs no privilege.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, a.nice) };
    if rc != 0 {
        eprintln!(
            "killswitch serve: warning: cannot set niceness {}: {}",
            a.nice,
            std::io::Error::last_os_error()
        );
    }
    let config = ServeConfig {
        listen: a.listen,
        roles_file: a.roles_file.clone(),
        activate_needs_token: a.activate_needs_token,
        max_body: a.max_body,
        read_timeout: a.read_timeout,
        workers: a.workers,
        alerts: AlertConfig {
            loss_alert: a.loss_alert,
        },
    };
    let server = match AdminServer::start(Operator::new(std::sync::Arc::new(block)), config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("killswitch: error: {e}");
            return ExitCode::from(if e.contains("roles file") {
                exit::BAD_FILE
            } else {
                exit::IO
            });
        }
    };
    outln!(
        "killswitch serve: listening on http://{} for engine '{}' ({path})",
        server.local_addr(),
        t.name
    );
    outln!(
        "  activate: {}; reset: bearer token from {}; niceness {}",
        if a.activate_needs_token {
            "bearer token required"
        } else {
            "no token needed from loopback"
        },
        a.roles_file
            .as_ref()
            .map_or("(no roles file: every reset is refused)".to_string(), |p| p
                .display()
                .to_string()),
        a.nice
    );
    server.run_until(&std::sync::atomic::AtomicBool::new(false));
    ExitCode::from(exit::OK)
}

/// Runs a `roles` subcommand.
pub fn run_roles(cmd: RolesCmd) -> ExitCode {
    let result = match cmd {
        RolesCmd::Add {
            roles_file,
            identity,
            role,
            token_out,
        } => roles::add_identity(&roles_file, &identity, role, &token_out).map(|id| {
            outln!(
                "identity {} ({}) added to {}; token written to {} (mode 0600): keep it private",
                id.name,
                id.role,
                roles_file.display(),
                token_out.display()
            );
        }),
        RolesCmd::List { roles_file } => Roles::load(&roles_file).map(|r| {
            outln!("{} identities in {}", r.len(), r.path().display());
            // Names and roles only come back through authentication, so
            // list what the file says.
            if let Ok(text) = std::fs::read_to_string(&roles_file) {
                if let Ok(v) = text.parse::<toml::Table>() {
                    for id in v
                        .get("identity")
                        .and_then(|i| i.as_array())
                        .into_iter()
                        .flatten()
                    {
                        outln!(
                            "  {:<24} {}",
                            id.get("name").and_then(|n| n.as_str()).unwrap_or("?"),
                            id.get("role").and_then(|n| n.as_str()).unwrap_or("?")
                        );
                    }
                }
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("killswitch: error: {e}");
            ExitCode::from(exit::BAD_FILE)
        }
    }
}
