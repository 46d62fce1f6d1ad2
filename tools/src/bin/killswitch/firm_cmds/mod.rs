//! `killswitch firm ...` (trip, status, reset, history, init, keygen) and
//! `killswitch relay`: the firm-wide kill over NATS. The state and its rules
//! are in `killswitch_tools::firm`; this module is the command line: the
//! arguments and shared helpers here, the commands that write the bucket in
//! `write`, those that read it in `read`.

mod read;
mod write;

use read::{history, status};
use write::{keygen, reset, trip};

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use bytes::Bytes;
use clap::{Args, Subcommand};
use futures_util::StreamExt;
use killswitch::clock::{format_duration_ns, format_wall, wall_ns};
use killswitch::control::Mode;
use killswitch_tools::firm::local::{BlockSelection, EngineAck};
use killswitch_tools::firm::nats::{buckets, to_key_entry, Buckets, NatsArgs, REQUEST_TIMEOUT};
use killswitch_tools::firm::record::{Action, FirmMode, FirmRecord, RECORD_VERSION};
use killswitch_tools::firm::relay::{self, RelayConfig};
use killswitch_tools::firm::view::{desk_key, host_key, verdict, FIRM_KEY};
use serde::Serialize;

use crate::control_cmds::TripMode;
use crate::{exit, Target};

/// Environment variable naming the risk role's key file.
const RISK_CREDS_ENV: &str = "KILLSWITCH_RISK_CREDS";

/// `killswitch firm`.
#[derive(Args, Debug)]
pub struct FirmArgs {
    #[command(flatten)]
    nats: NatsArgs,
    #[command(subcommand)]
    cmd: FirmCmd,
}

/// Which key: the firm, one desk, or one host.
#[derive(Args, Debug, Clone)]
pub struct KeyArgs {
    /// Only the engines of this desk (key desk.<name>).
    #[arg(long, conflicts_with = "host")]
    desk: Option<String>,
    /// Only the engines of this host (key host.<name>).
    #[arg(long)]
    host: Option<String>,
}

impl KeyArgs {
    fn key(&self) -> Result<(String, String), String> {
        let check = |what: &str, n: &str| {
            if killswitch::control::valid_name(n) {
                Ok(())
            } else {
                Err(format!(
                    "--{what} '{n}': use 1 to 31 characters of A-Z a-z 0-9 _ . : / -"
                ))
            }
        };
        match (&self.desk, &self.host) {
            (Some(d), _) => check("desk", d).map(|()| (desk_key(d), format!("desk {d}"))),
            (_, Some(h)) => check("host", h).map(|()| (host_key(h), format!("host {h}"))),
            _ => Ok((FIRM_KEY.into(), "every host".into())),
        }
    }
}

/// Firm subcommands.
#[derive(Subcommand, Debug)]
pub enum FirmCmd {
    /// Create the firm buckets (once per cluster; trip and relay also create them when missing).
    Init {
        /// Keep trying this long while the cluster elects its leaders.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
        timeout: Duration,
    },
    /// Trip every engine of the firm (or of one desk or host). Idempotent; only escalates.
    Trip {
        /// Why: kept in the firm history and in every control block's audit ring.
        #[arg(long)]
        reason: String,
        /// What to stop.
        #[arg(long, value_enum, default_value = "kill")]
        mode: TripMode,
        #[command(flatten)]
        key: KeyArgs,
        /// Keep trying this long (a server may be failing over).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
        timeout: Duration,
    },
    /// The firm's keys and every engine the firm knows: acked generation, drain, orders, last seen.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// An acknowledgement older than this counts as stale.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "15s")]
        stale_after: Duration,
    },
    /// Reset a firm trip: compare-and-set on the revision you saw, signed by the risk role.
    Reset(ResetArgs),
    /// The firm audit: every revision of every key (up to 64 per key).
    History {
        /// Only this key (firm, desk.<name>, host.<name>).
        #[arg(long)]
        key: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a risk-role key pair: the seed goes to --out (mode 0600), the public key to stdout for the relays' --risk-key.
    Keygen {
        /// File for the seed (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
}

/// Options of `killswitch firm reset`.
#[derive(Args, Debug)]
pub struct ResetArgs {
    /// Confirm that trading may resume.
    #[arg(long)]
    confirm: bool,
    /// The revision shown by `firm status`: refused if the key changed since.
    #[arg(long)]
    revision: u64,
    /// Why.
    #[arg(long)]
    reason: Option<String>,
    #[command(flatten)]
    key: KeyArgs,
    /// The risk role's key file (from `firm keygen`; mode 0600, owned by you).
    #[arg(long, env = RISK_CREDS_ENV)]
    risk_creds: Option<PathBuf>,
    /// Keep trying this long.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    timeout: Duration,
}

/// `killswitch relay`.
#[derive(Args, Debug)]
pub struct RelayArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// This host's name (key host.<name>); default the machine's host name.
    #[arg(long = "host", env = "KILLSWITCH_HOST")]
    host_name: Option<String>,
    /// A desk this host's engines belong to (key desk.<name>; repeatable).
    #[arg(long)]
    desk: Vec<String>,
    /// Relay this engine's block <dir>/killswitch.<engine> (repeatable; created if missing, so the trip waits for it).
    #[arg(long, conflicts_with = "all")]
    engine: Vec<String>,
    /// Relay every killswitch.* in <dir>, rescanned every --scan-interval.
    #[arg(long)]
    all: bool,
    /// Public nkey of the risk role whose resets are honoured (repeatable).
    #[arg(long, env = "KILLSWITCH_RISK_KEYS", value_delimiter = ',')]
    risk_key: Vec<String>,
    /// File of trusted risk public keys, one a line (# comments).
    #[arg(long)]
    risk_keys_file: Option<PathBuf>,
    /// Enforcement tick: re-trip a block reset locally, follow drains.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1ms")]
    poll: Duration,
    /// How often <dir> is rescanned for new blocks (with --all).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "50ms")]
    scan_interval: Duration,
    /// Full read of the firm keys besides the watch.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    resync: Duration,
    /// Rewrite each acknowledgement at least this often (last seen).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    ack_interval: Duration,
    /// Raise the alarm when the firm state cannot be read for this long.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    unreachable_after: Duration,
    /// Also trip HALT locally when that happens (default: alarm and metric only; see README).
    #[arg(long)]
    fail_closed: bool,
    /// Write Prometheus metrics here (textfile collector format), every second.
    #[arg(long)]
    metrics_file: Option<PathBuf>,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn who() -> String {
    let uid = nix::unistd::getuid();
    let user = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "?".into());
    format!("{user} (uid {uid}) on {}", hostname())
}

fn write_id() -> String {
    format!("{}-{}-{}", hostname(), std::process::id(), wall_ns())
}

fn refused(msg: &str) -> ExitCode {
    eprintln!("killswitch: refused: {msg}");
    ExitCode::from(exit::REFUSED)
}

fn failed(msg: &str) -> ExitCode {
    eprintln!("killswitch: error: {msg}");
    ExitCode::from(exit::IO)
}

/// Runs `killswitch relay`.
pub fn run_relay(a: RelayArgs, t: &Target, access: killswitch::access::Access) -> ExitCode {
    let host = a.host_name.clone().unwrap_or_else(hostname);
    for (what, n) in std::iter::once(("host", &host)).chain(a.desk.iter().map(|d| ("desk", d))) {
        if !killswitch::control::valid_name(n) {
            return ExitCode::from(usage(&format!(
                "--{what} '{n}': use 1 to 31 characters of A-Z a-z 0-9 _ . : / -"
            )));
        }
    }
    if a.engine.is_empty() && !a.all {
        return ExitCode::from(usage(
            "say which control blocks to relay: --engine NAME (repeatable) or --all",
        ));
    }
    let mut trusted = a.risk_key.clone();
    if let Some(f) = &a.risk_keys_file {
        match std::fs::read_to_string(f) {
            Ok(text) => trusted.extend(
                text.lines()
                    .map(|l| l.split('#').next().unwrap_or("").trim())
                    .filter(|l| !l.is_empty())
                    .map(str::to_string),
            ),
            Err(e) => return failed(&format!("--risk-keys-file {}: {e}", f.display())),
        }
    }
    if trusted.is_empty() {
        return ExitCode::from(usage(
            "no trusted risk key: no firm reset could ever be verified; pass --risk-key <public nkey> (from `killswitch firm keygen`) or --risk-keys-file FILE",
        ));
    }
    for k in &trusted {
        if nkeys::KeyPair::from_public_key(k).is_err() {
            return ExitCode::from(usage(&format!(
                "risk key '{k}' is not a public nkey (it starts with U and has 56 characters; `killswitch firm keygen` prints one)"
            )));
        }
    }
    let code = relay::run(RelayConfig {
        nats: a.nats,
        host,
        desks: a.desk,
        selection: BlockSelection {
            dir: t.dir.clone(),
            engines: a.engine,
            access,
        },
        trusted,
        poll: a.poll.max(Duration::from_micros(100)),
        scan_interval: a.scan_interval,
        resync: a.resync.max(Duration::from_millis(50)),
        ack_interval: a.ack_interval,
        unreachable_after: a.unreachable_after,
        fail_closed: a.fail_closed,
        metrics_file: a.metrics_file,
    });
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn usage(msg: &str) -> u8 {
    eprintln!("killswitch: error: {msg}");
    exit::USAGE
}

/// Runs one `killswitch firm` subcommand.
pub fn run(a: FirmArgs) -> ExitCode {
    if let FirmCmd::Keygen { out } = &a.cmd {
        return keygen(out);
    }
    // Names are checked before any connection is tried.
    let key = match &a.cmd {
        FirmCmd::Trip { key, .. } => Some(key),
        FirmCmd::Reset(r) => Some(&r.key),
        _ => None,
    };
    if let Some(Err(e)) = key.map(KeyArgs::key) {
        return ExitCode::from(usage(&e));
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return failed(&format!("cannot start the async runtime: {e}")),
    };
    rt.block_on(async move {
        let client = match a.nats.connect("killswitch firm", None, true).await {
            Ok(c) => c,
            Err(e) => return failed(&e),
        };
        let nats = &a.nats;
        match a.cmd {
            FirmCmd::Init { timeout } => init(&client, nats, timeout).await,
            FirmCmd::Trip {
                reason,
                mode,
                key,
                timeout,
            } => trip(&client, nats, &reason, mode.into(), &key, timeout).await,
            FirmCmd::Status { json, stale_after } => status(&client, nats, json, stale_after).await,
            FirmCmd::Reset(r) => reset(&client, nats, r).await,
            FirmCmd::History { key, json } => history(&client, nats, key, json).await,
            FirmCmd::Keygen { .. } => unreachable!("handled above"),
        }
    })
}

/// Opens the buckets, retrying until `deadline` (leader elections).
async fn open_retrying(
    client: &async_nats::Client,
    nats: &NatsArgs,
    create: bool,
    deadline: Instant,
) -> Result<Buckets, String> {
    loop {
        match buckets(client, nats, create).await {
            Ok(b) => return Ok(b),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn init(client: &async_nats::Client, nats: &NatsArgs, timeout: Duration) -> ExitCode {
    match open_retrying(client, nats, true, Instant::now() + timeout).await {
        Ok(_) => {
            outln!(
                "buckets {} (history {} per key) and {} ready, {} replica(s) when created here",
                nats.bucket,
                killswitch_tools::firm::nats::HISTORY,
                nats.acks_bucket(),
                nats.replicas
            );
            ExitCode::from(exit::OK)
        }
        Err(e) => failed(&e),
    }
}

async fn latest(b: &Buckets, key: &str) -> Result<Option<kv::Entry>, String> {
    tokio::time::timeout(REQUEST_TIMEOUT, b.firm.entry(key.to_string()))
        .await
        .map_err(|_| format!("reading {key}: NATS did not answer"))?
        .map_err(|e| format!("reading {key}: {e}"))
}

fn record_of(e: &kv::Entry) -> Option<FirmRecord> {
    (e.operation == Operation::Put)
        .then(|| FirmRecord::decode(&e.value).ok())
        .flatten()
}
