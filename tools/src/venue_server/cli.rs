//! The command line of `ks-venue` (also run as the hidden `killswitch
//! venue`, which the drill starts so that `cargo run -- drill` needs no
//! other binary).
//!
//! ```text
//! ks-venue --venue SIM-A:9001 --venue SIM-B:0 --audit-dir /tmp/venues
//! ```
//! Each venue prints `ks-venue: venue NAME listening on ADDR` on stdout
//! once it accepts connections (port 0 picks a free one). SIGTERM or SIGINT
//! stops them: connections are closed (cancel-on-disconnect applies) and
//! the audit logs flushed.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::{spawn, VenueConfig};

/// On or off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    /// Offered.
    On,
    /// Not offered.
    Off,
}

/// The options of `ks-venue` (and of the hidden `killswitch venue` the
/// drill starts).
#[derive(Args, Debug, Clone)]
pub struct VenueArgs {
    /// A venue to run, NAME:PORT (port 0 picks a free one); repeat for more.
    #[arg(long = "venue", required = true, value_parser = parse_venue)]
    pub venues: Vec<(String, u16)>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Allow a non-loopback --bind.
    #[arg(long)]
    pub allow_remote: bool,
    /// Symbols every venue lists, comma-separated.
    #[arg(long, default_value = "I0,I1,I2,I3", value_delimiter = ',')]
    pub instruments: Vec<String>,
    /// Seed of the synthetic flow and fault dice (each venue adds its position).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// One participant order every this many µs; 0 turns the flow off.
    #[arg(long, default_value_t = 0)]
    pub flow_interval_us: u64,
    /// The venues offer no mass cancel (35=q is answered 35=r rejected).
    #[arg(long)]
    pub no_mass_cancel: bool,
    /// Delay before every answer, µs.
    #[arg(long, default_value_t = 0)]
    pub latency_us: u64,
    /// Share of new orders rejected, ppm.
    #[arg(long, default_value_t = 0)]
    pub reject_ppm: u32,
    /// Share of cancel acks lost, ppm.
    #[arg(long, default_value_t = 0)]
    pub drop_cancel_ack_ppm: u32,
    /// Accept cancels and mass cancels and do nothing.
    #[arg(long)]
    pub ignore_cancels: bool,
    /// Whether the venues offer cancel-on-disconnect.
    #[arg(long, value_enum, default_value = "on")]
    pub cancel_on_disconnect: OnOff,
    /// Drop the first connection that reaches this many application messages.
    #[arg(long)]
    pub disconnect_after: Option<u64>,
    /// The other participants withdraw their liquidity this many ms after
    /// the start: their resting orders are pulled and no flow arrives, so
    /// nothing of ours fills (positions that will not flatten).
    #[arg(long, value_name = "MS")]
    pub withdraw_liquidity_after_ms: Option<u64>,
    /// A connection must log on within this.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub logon_timeout: Duration,
    /// A message must be complete this long after its first byte.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub frame_timeout: Duration,
    /// Connections served at once per venue.
    #[arg(long, default_value_t = 64)]
    pub max_connections: usize,
    /// Write NAME.audit.jsonl here for each venue.
    #[arg(long)]
    pub audit_dir: Option<PathBuf>,
    /// CompID allowed to send U9 VenueControl.
    #[arg(long, default_value = "KS-CONTROL")]
    pub control_comp_id: String,
    /// Grace period of a designated backup's session takeover (8014=Y):
    /// orders it has not adopted by then are cancelled; 0 refuses
    /// takeovers.
    #[arg(long, default_value_t = 2000)]
    pub takeover_grace_ms: u64,
}

fn parse_venue(s: &str) -> Result<(String, u16), String> {
    let (name, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("--venue {s}: expected NAME:PORT, e.g. SIM-A:9001"))?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '|' && c != '=')
    {
        return Err(format!(
            "--venue {s}: the name must be printable ASCII without '|' or '='"
        ));
    }
    let port = port
        .parse()
        .map_err(|_| format!("--venue {s}: port {port} is not a number 0..65535"))?;
    Ok((name.to_string(), port))
}

/// Runs the venues until SIGTERM or SIGINT.
pub fn main(args: &VenueArgs) -> ExitCode {
    if !args.bind.is_loopback() && !args.allow_remote {
        eprintln!(
            "ks-venue: --bind {} is not a loopback address; simulated venues listen on loopback only (add --allow-remote to override)",
            args.bind
        );
        return ExitCode::from(2);
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            eprintln!("ks-venue: cannot install the handler of signal {sig}: {e}");
            return ExitCode::from(2);
        }
    }
    if let Some(dir) = &args.audit_dir {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("ks-venue: --audit-dir {}: {e}", dir.display());
            return ExitCode::from(2);
        }
    }
    let mut joins = Vec::new();
    for (n, (name, port)) in args.venues.iter().enumerate() {
        let mut cfg = VenueConfig::new(name, SocketAddr::new(args.bind, *port), &[]);
        cfg.instruments = args.instruments.clone();
        cfg.seed = args.seed + n as u64;
        cfg.flow_interval_us = args.flow_interval_us;
        cfg.mass_cancel = !args.no_mass_cancel;
        cfg.latency = Duration::from_micros(args.latency_us);
        cfg.reject_ppm = args.reject_ppm;
        cfg.drop_cancel_ack_ppm = args.drop_cancel_ack_ppm;
        cfg.ignore_cancels = args.ignore_cancels;
        cfg.cancel_on_disconnect = args.cancel_on_disconnect == OnOff::On;
        cfg.disconnect_after = args.disconnect_after;
        cfg.withdraw_liquidity_after = args.withdraw_liquidity_after_ms.map(Duration::from_millis);
        cfg.logon_timeout = args.logon_timeout;
        cfg.frame_timeout = args.frame_timeout;
        cfg.max_connections = args.max_connections;
        cfg.control_comp_id = args.control_comp_id.clone();
        cfg.takeover_grace = Duration::from_millis(args.takeover_grace_ms);
        cfg.audit = args
            .audit_dir
            .as_ref()
            .map(|d| d.join(format!("{name}.audit.jsonl")));
        let audit = cfg.audit.clone();
        match spawn(cfg, stop.clone()) {
            Ok((addr, join)) => {
                println!(
                    "ks-venue: venue {name} listening on {addr}{}",
                    audit
                        .map(|p| format!(" (audit log {})", p.display()))
                        .unwrap_or_default()
                );
                joins.push(join);
            }
            Err(e) => {
                eprintln!("ks-venue: {e}");
                stop.store(true, Ordering::Release);
                for j in joins {
                    let _ = j.join();
                }
                return ExitCode::from(2);
            }
        }
    }
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let mut failed = false;
    for j in joins {
        failed |= j.join().is_err();
    }
    if failed {
        eprintln!("ks-venue: a venue thread panicked");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
