//! `killswitch firm ...` (trip, status, reset, history, init, keygen) and
//! `killswitch relay`: the firm-wide kill over NATS. The state and its rules
//! are in `killswitch_tools::firm`; this file is the command line.

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

async fn trip(
    client: &async_nats::Client,
    nats: &NatsArgs,
    reason: &str,
    mode: Mode,
    key: &KeyArgs,
    timeout: Duration,
) -> ExitCode {
    if reason.trim().is_empty() {
        return ExitCode::from(usage("--reason is empty: say why"));
    }
    let (key, scope) = match key.key() {
        Ok(k) => k,
        Err(e) => return ExitCode::from(usage(&e)),
    };
    let deadline = Instant::now() + timeout;
    let b = match open_retrying(client, nats, true, deadline).await {
        Ok(b) => b,
        Err(e) => return failed(&e),
    };
    let id = write_id();
    let mut last_error = String::new();
    loop {
        if Instant::now() >= deadline {
            return failed(&format!(
                "the trip of {key} was not stored within {timeout:?}: {last_error}; trip hosts locally with `killswitch trip`"
            ));
        }
        let current = match latest(&b, &key).await {
            Ok(c) => c,
            Err(e) => {
                last_error = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let prev = current.as_ref().and_then(record_of);
        if let (Some(e), Some(p)) = (&current, &prev) {
            if p.write_id == id {
                // Stored on an earlier attempt whose answer was lost.
                print_trip(&key, &scope, e.revision, p);
                return ExitCode::from(exit::OK);
            }
        }
        let prev_mode = prev
            .as_ref()
            .filter(|p| p.action == Action::Trip)
            .map(|p| Mode::from(p.mode))
            .unwrap_or(Mode::Normal);
        let record = FirmRecord {
            v: RECORD_VERSION,
            key: key.clone(),
            action: Action::Trip,
            mode: FirmMode::from(prev_mode.max(mode)),
            generation: prev.as_ref().map(|p| p.generation).unwrap_or(0) + 1,
            reason: reason.to_string(),
            who: who(),
            when_ns: wall_ns(),
            write_id: id.clone(),
            revision_seen: None,
            signer: None,
            signature: None,
        };
        let body = Bytes::from(record.encode());
        let put = match &current {
            None => tokio::time::timeout(REQUEST_TIMEOUT, b.firm.create(&key, body))
                .await
                .map(|r| {
                    r.map_err(|e| (e.kind() == CreateErrorKind::AlreadyExists, e.to_string()))
                }),
            Some(e) => tokio::time::timeout(REQUEST_TIMEOUT, b.firm.update(&key, body, e.revision))
                .await
                .map(|r| {
                    r.map_err(|e| {
                        (
                            e.kind() == UpdateErrorKind::WrongLastRevision,
                            e.to_string(),
                        )
                    })
                }),
        };
        match put {
            Ok(Ok(revision)) => {
                print_trip(&key, &scope, revision, &record);
                return ExitCode::from(exit::OK);
            }
            // Someone wrote the key meanwhile: read again and escalate from there.
            Ok(Err((true, _))) => continue,
            Ok(Err((false, e))) => last_error = e,
            Err(_) => last_error = "NATS did not answer".into(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn print_trip(key: &str, scope: &str, revision: u64, r: &FirmRecord) {
    outln!(
        "FIRM TRIP {} on key {key} ({scope}): revision {revision}, generation {}",
        Mode::from(r.mode).as_str().to_uppercase(),
        r.generation
    );
    outln!("  reason \"{}\" by {}", r.reason, r.who);
    outln!("  every relay trips its control blocks now; follow with `killswitch firm status`");
}

#[derive(Serialize)]
struct KeyRow {
    key: String,
    revision: u64,
    /// Mode a relay applies for this key (KILL for anything unverifiable).
    mode: Mode,
    /// Why, as a relay logs it.
    verdict: String,
    record: Option<FirmRecord>,
}

#[derive(Serialize)]
struct EngineRow {
    #[serde(flatten)]
    ack: EngineAck,
    /// The relay has applied the current revision of every key it obeys.
    up_to_date: bool,
    /// Milliseconds since the relay last wrote this.
    last_seen_ms: u64,
    /// confirmed, up to date and not stale.
    ok: bool,
    /// Why not.
    problem: String,
}

#[derive(Serialize)]
struct StatusReport {
    keys: Vec<KeyRow>,
    engines: Vec<EngineRow>,
    confirmed: usize,
    not_confirmed: Vec<String>,
}

/// Every key of a bucket (deleted ones included: their delete marker is a
/// message), from one stream-info request rather than a consumer.
async fn list_keys(store: &kv::Store) -> Result<Vec<String>, String> {
    let mut keys = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut out = Vec::new();
        let mut subjects = store
            .stream
            .info_with_subjects(format!("{}>", store.prefix))
            .await
            .map_err(|e| e.to_string())?;
        while let Some(item) = subjects.next().await {
            let (subject, _) = item.map_err(|e| e.to_string())?;
            if let Some(k) = subject.strip_prefix(store.prefix.as_str()) {
                out.push(k.to_string());
            }
        }
        Ok::<_, String>(out)
    })
    .await
    .map_err(|_| "listing keys: NATS did not answer".to_string())??;
    keys.sort();
    Ok(keys)
}

async fn status(
    client: &async_nats::Client,
    nats: &NatsArgs,
    json: bool,
    stale_after: Duration,
) -> ExitCode {
    let b = match open_retrying(client, nats, false, Instant::now() + REQUEST_TIMEOUT * 5).await {
        Ok(b) => b,
        Err(e) => return failed(&e),
    };
    // A failing server or a leader election makes single requests fail
    // for a few seconds: try again until the deadline.
    let deadline = Instant::now() + REQUEST_TIMEOUT * 5;
    let report = loop {
        match status_report(&b, nats, stale_after).await {
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => break other,
        }
    };
    match report {
        Ok(r) => {
            if json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&r).expect("status serialises")
                );
            } else {
                print_status(&r);
            }
            ExitCode::from(exit::OK)
        }
        Err(e) => failed(&e),
    }
}

async fn status_report(
    b: &Buckets,
    nats: &NatsArgs,
    stale_after: Duration,
) -> Result<StatusReport, String> {
    let mut keys = Vec::new();
    let mut current = std::collections::BTreeMap::new();
    for key in list_keys(&b.firm).await? {
        let Some(e) = latest(b, &key).await? else {
            continue;
        };
        // The verdict a relay trusting this record's own signer would reach;
        // whether that signer is trusted is the relays' configuration.
        let signer: Vec<String> = record_of(&e).and_then(|r| r.signer).into_iter().collect();
        let entry = to_key_entry(&b.firm, &nats.bucket, &signer, &e).await;
        let v = verdict(&key, Some(&entry));
        current.insert(key.clone(), e.revision);
        keys.push(KeyRow {
            key,
            revision: e.revision,
            mode: v.mode,
            verdict: v.why,
            record: record_of(&e),
        });
    }
    let mut engines = Vec::new();
    for key in list_keys(&b.acks).await? {
        let got = tokio::time::timeout(REQUEST_TIMEOUT, b.acks.entry(key.clone()))
            .await
            .map_err(|_| format!("reading {key}: NATS did not answer"))?
            .map_err(|e| format!("reading {key}: {e}"))?;
        let Some(e) = got.filter(|e| e.operation == Operation::Put) else {
            continue;
        };
        let Ok(ack) = serde_json::from_slice::<EngineAck>(&e.value) else {
            continue;
        };
        let behind: Vec<String> = ack
            .keys_seen
            .iter()
            .filter(|(k, rev)| current.get(*k).copied().unwrap_or(0) != **rev)
            .map(|(k, rev)| {
                format!(
                    "relay applied {k} rev {rev}, now rev {}",
                    current.get(k).copied().unwrap_or(0)
                )
            })
            .collect();
        let last_seen_ms = wall_ns().saturating_sub(ack.updated_ns) / 1_000_000;
        let stale = last_seen_ms > stale_after.as_millis() as u64;
        let problem = if stale {
            format!(
                "STALE: relay silent for {}",
                format_duration_ns(last_seen_ms * 1_000_000)
            )
        } else if !behind.is_empty() {
            behind.join("; ")
        } else if !ack.confirmed {
            ack.note.clone()
        } else {
            String::new()
        };
        engines.push(EngineRow {
            up_to_date: behind.is_empty(),
            last_seen_ms,
            ok: problem.is_empty(),
            problem,
            ack,
        });
    }
    let not_confirmed: Vec<String> = engines
        .iter()
        .filter(|e| !e.ok)
        .map(|e| format!("{}/{}", e.ack.host, e.ack.engine))
        .collect();
    Ok(StatusReport {
        keys,
        confirmed: engines.len() - not_confirmed.len(),
        engines,
        not_confirmed,
    })
}

fn print_status(r: &StatusReport) {
    if r.keys.is_empty() {
        outln!("firm        nothing ever tripped");
    }
    for k in &r.keys {
        let (who, when, gen) = k
            .record
            .as_ref()
            .map(|rec| (rec.who.as_str(), format_wall(rec.when_ns), rec.generation))
            .unwrap_or(("?", "?".into(), 0));
        outln!(
            "key {:<20} {:<10} revision {:<6} generation {:<4} {when} by {who}",
            k.key,
            k.mode.as_str().to_uppercase(),
            k.revision,
            gen
        );
        if !k.verdict.is_empty() {
            outln!("    {}", k.verdict);
        }
    }
    outln!("");
    outln!(
        "{:<16} {:<20} {:<10} {:<10} {:>6} {:<18} {:>7} {:>7} {:>9}  state",
        "host",
        "engine",
        "firm asks",
        "block",
        "gen",
        "drain",
        "open",
        "unknown",
        "seen"
    );
    for e in &r.engines {
        let a = &e.ack;
        outln!(
            "{:<16} {:<20} {:<10} {:<10} {:>6} {:<18} {:>7} {:>7} {:>9}  {}",
            a.host,
            a.engine,
            Mode::from(a.firm_mode).as_str(),
            Mode::from(a.mode).as_str(),
            a.generation,
            format!("{:?} g{}", a.drain_phase, a.drain_generation),
            a.open_orders,
            a.unknown_orders,
            format!("{} ago", format_duration_ns(e.last_seen_ms * 1_000_000)),
            if e.ok {
                "confirmed".to_string()
            } else {
                format!("NOT CONFIRMED: {}", e.problem)
            }
        );
    }
    outln!("");
    outln!(
        "{} engine(s): {} confirmed, {} not confirmed{}",
        r.engines.len(),
        r.confirmed,
        r.not_confirmed.len(),
        if r.not_confirmed.is_empty() {
            String::new()
        } else {
            format!(": {}", r.not_confirmed.join(", "))
        }
    );
}

/// Loads the risk role's key pair, refusing a file others could read.
fn load_risk_key(path: &Path) -> Result<nkeys::KeyPair, String> {
    use std::os::unix::fs::MetadataExt;
    let meta =
        std::fs::metadata(path).map_err(|e| format!("--risk-creds {}: {e}", path.display()))?;
    let uid = nix::unistd::getuid().as_raw();
    if meta.uid() != uid {
        return Err(format!(
            "--risk-creds {}: owned by uid {}, not by you (uid {uid}): refused",
            path.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "--risk-creds {}: mode {:o} lets others read the risk key: `chmod 600` it",
            path.display(),
            meta.mode() & 0o777
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--risk-creds {}: {e}", path.display()))?;
    nkeys::KeyPair::from_seed(text.trim()).map_err(|e| {
        format!(
            "--risk-creds {}: not an nkey seed ({e}); make one with `killswitch firm keygen`",
            path.display()
        )
    })
}

async fn reset(client: &async_nats::Client, nats: &NatsArgs, r: ResetArgs) -> ExitCode {
    let ResetArgs {
        confirm,
        revision,
        reason,
        key,
        risk_creds,
        timeout,
    } = r;
    let (key, scope) = match key.key() {
        Ok(k) => k,
        Err(e) => return ExitCode::from(usage(&e)),
    };
    if !confirm {
        return refused(&format!(
            "a firm reset lets {scope} trade again; rerun with --confirm --revision {revision} --reason \"...\""
        ));
    }
    let Some(reason) = reason.filter(|r| !r.trim().is_empty()) else {
        return refused("a reset must say why: add --reason \"...\"");
    };
    let Some(creds) = risk_creds else {
        return refused(&format!(
            "a firm reset needs the risk role: --risk-creds FILE (or {RISK_CREDS_ENV}), a key made by `killswitch firm keygen` whose public key the relays trust"
        ));
    };
    let risk = match load_risk_key(&creds) {
        Ok(k) => k,
        Err(e) => return refused(&e),
    };
    let deadline = Instant::now() + timeout;
    let b = match open_retrying(client, nats, false, deadline).await {
        Ok(b) => b,
        Err(e) => return failed(&e),
    };
    let id = write_id();
    let mut last_error = String::new();
    loop {
        if Instant::now() >= deadline {
            return failed(&format!(
                "the reset of {key} was not stored within {timeout:?}: {last_error}"
            ));
        }
        let current = match latest(&b, &key).await {
            Ok(c) => c,
            Err(e) => {
                last_error = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(cur) = current else {
            return refused(&format!("key {key} was never tripped: nothing to reset"));
        };
        let prev = record_of(&cur);
        if let Some(p) = prev.as_ref().filter(|p| p.write_id == id) {
            print_reset(&key, &scope, revision, cur.revision, p);
            return ExitCode::from(exit::OK);
        }
        if cur.revision != revision {
            let what = prev
                .as_ref()
                .map(|p| {
                    format!(
                        "{} ({} by {}: \"{}\")",
                        Mode::from(p.mode).as_str().to_uppercase(),
                        match p.action {
                            Action::Trip => "tripped",
                            Action::Reset => "reset",
                        },
                        p.who,
                        p.reason
                    )
                })
                .unwrap_or_else(|| "an unreadable or deleted value".into());
            return refused(&format!(
                "revision {revision} is stale: key {key} is now at revision {}: {what}. Look with `killswitch firm status`, then reset with --revision {} if you still mean it",
                cur.revision, cur.revision
            ));
        }
        if prev
            .as_ref()
            .is_some_and(|p| p.action == Action::Reset && p.mode == FirmMode::Normal)
        {
            outln!("key {key} is not tripped (revision {revision} is a reset); nothing to do");
            return ExitCode::from(exit::OK);
        }
        let mut record = FirmRecord {
            v: RECORD_VERSION,
            key: key.clone(),
            action: Action::Reset,
            mode: FirmMode::Normal,
            generation: prev.as_ref().map(|p| p.generation).unwrap_or(0) + 1,
            reason: reason.clone(),
            who: who(),
            when_ns: wall_ns(),
            write_id: id.clone(),
            revision_seen: Some(revision),
            signer: None,
            signature: None,
        };
        if let Err(e) = record.sign(&nats.bucket, &risk) {
            return failed(&e);
        }
        let put = tokio::time::timeout(
            REQUEST_TIMEOUT,
            b.firm.update(&key, Bytes::from(record.encode()), revision),
        )
        .await;
        match put {
            Ok(Ok(new_revision)) => {
                print_reset(&key, &scope, revision, new_revision, &record);
                return ExitCode::from(exit::OK);
            }
            // Changed between our read and our write: the next read says how.
            Ok(Err(e)) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
            Ok(Err(e)) => last_error = e.to_string(),
            Err(_) => last_error = "NATS did not answer".into(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn print_reset(key: &str, scope: &str, seen: u64, revision: u64, r: &FirmRecord) {
    outln!(
        "FIRM RESET of key {key} ({scope}): revision {seen} -> {revision}, generation {}, signed by risk key {}",
        r.generation,
        r.signer.as_deref().unwrap_or("?")
    );
    outln!("  reason \"{}\" by {}", r.reason, r.who);
    outln!("  relays that trust this key release the blocks only the firm tripped; blocks tripped locally stay latched (see `killswitch firm status`)");
}

#[derive(Serialize)]
struct HistoryRow {
    revision: u64,
    key: String,
    created: String,
    operation: String,
    record: Option<FirmRecord>,
    problem: Option<String>,
}

async fn history(
    client: &async_nats::Client,
    nats: &NatsArgs,
    key: Option<String>,
    json: bool,
) -> ExitCode {
    let b = match open_retrying(client, nats, false, Instant::now() + REQUEST_TIMEOUT * 5).await {
        Ok(b) => b,
        Err(e) => return failed(&e),
    };
    let keys = match key {
        Some(k) => vec![k],
        None => match list_keys(&b.firm).await {
            Ok(k) => k,
            Err(e) => return failed(&e),
        },
    };
    let mut rows = Vec::new();
    for k in keys {
        let got = tokio::time::timeout(REQUEST_TIMEOUT * 2, async {
            let mut out = Vec::new();
            let mut h = b.firm.history(&k).await.map_err(|e| e.to_string())?;
            while let Some(e) = h.next().await {
                out.push(e.map_err(|e| e.to_string())?);
            }
            Ok::<_, String>(out)
        })
        .await;
        let entries = match got {
            Ok(Ok(e)) => e,
            Ok(Err(e)) => return failed(&format!("history of {k}: {e}")),
            Err(_) => return failed(&format!("history of {k}: NATS did not answer")),
        };
        for e in entries {
            let (record, problem) = match e.operation {
                Operation::Put => match FirmRecord::decode(&e.value) {
                    Ok(r) => {
                        let problem = (r.action == Action::Reset && r.signature.is_none())
                            .then(|| "UNSIGNED reset: relays hold KILL".to_string());
                        (Some(r), problem)
                    }
                    Err(why) => (None, Some(format!("unreadable: {why}"))),
                },
                op => (None, Some(format!("{op:?}: relays hold KILL"))),
            };
            rows.push(HistoryRow {
                revision: e.revision,
                key: e.key.clone(),
                created: e.created.to_string(),
                operation: format!("{:?}", e.operation),
                record,
                problem,
            });
        }
    }
    rows.sort_by_key(|r| r.revision);
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("history serialises")
        );
        return ExitCode::from(exit::OK);
    }
    if rows.is_empty() {
        outln!("the firm history is empty: nothing was ever tripped");
    }
    outln!(
        "{:>6}  {:<27} {:<18} {:<6} {:<12} {:>4}  {:<36} reason",
        "rev",
        "when",
        "key",
        "action",
        "mode",
        "gen",
        "who"
    );
    for r in &rows {
        match &r.record {
            Some(rec) => outln!(
                "{:>6}  {:<27} {:<18} {:<6} {:<12} {:>4}  {:<36} {}{}",
                r.revision,
                format_wall(rec.when_ns),
                r.key,
                match rec.action {
                    Action::Trip => "TRIP",
                    Action::Reset => "RESET",
                },
                Mode::from(rec.mode).as_str(),
                rec.generation,
                rec.who,
                rec.reason,
                match (&r.problem, &rec.signer, rec.revision_seen) {
                    (Some(p), _, _) => format!("  [{p}]"),
                    (None, Some(s), Some(seen)) => format!("  [replaced rev {seen}; signed {s}]"),
                    _ => String::new(),
                }
            ),
            None => outln!(
                "{:>6}  {:<27} {:<18} {}",
                r.revision,
                r.created,
                r.key,
                r.problem.as_deref().unwrap_or("")
            ),
        }
    }
    ExitCode::from(exit::OK)
}

fn keygen(out: &Path) -> ExitCode {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let pair = nkeys::KeyPair::new_user();
    let seed = match pair.seed() {
        Ok(s) => s,
        Err(e) => return failed(&format!("cannot make a key: {e}")),
    };
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .and_then(|mut f| {
            f.write_all(format!("{seed}\n").as_bytes())
                .and(f.sync_all())
        });
    if let Err(e) = written {
        return failed(&format!("--out {}: {e} (it must not exist)", out.display()));
    }
    outln!("{}", pair.public_key());
    eprintln!(
        "risk key written to {} (mode 0600): keep it with the risk role only. Give the public key above to every relay (--risk-key or --risk-keys-file).",
        out.display()
    );
    ExitCode::from(exit::OK)
}
