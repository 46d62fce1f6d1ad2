//! An active engine and its hot standby as processes, trading over FIX
//! with a `ks-venue` process (the rolling-restart tests).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use killswitch::control::ControlBlock;
use killswitch_tools::venue_server::audit::AuditEntry;

use super::venue::VenueProc;
use super::{wait_for, KILLSWITCH};

/// A pair test's work directory (`KS_KEEP=1` keeps it: logs, audit,
/// journal) and its venue: `ks-venue` with one venue `SIM` listing `I0`,
/// synthetic flow every 500 µs, and the session takeover's grace period
/// `grace_ms`.
pub fn work_and_venue(grace_ms: u64) -> (tempfile::TempDir, VenueProc) {
    let work = tempfile::Builder::new()
        .disable_cleanup(std::env::var_os("KS_KEEP").is_some())
        .tempdir()
        .unwrap();
    eprintln!("work dir {}", work.path().display());
    let grace = grace_ms.to_string();
    let venue = VenueProc::start(
        work.path(),
        &["SIM"],
        &[
            "--instruments",
            "I0",
            "--flow-interval-us",
            "500",
            "--takeover-grace-ms",
            &grace,
        ],
    );
    (work, venue)
}

/// The firm's FIX identity (the venue's session name).
pub const FIRM: &str = "FIRM";

/// The pair's engine configuration: one FIX venue, a market maker and a
/// momentum strategy, a lease of 1 s.
pub fn config(dir: &Path, addr: std::net::SocketAddr) -> String {
    format!(
        r#"name = "pair"
control_dir = {dir:?}
journal_dir = {journal:?}
lease_ttl_ms = 1000

[[venues]]
name = "SIM"
instruments = ["I0"]
connect = "{addr}"
comp_id = "{FIRM}"
cancel_on_disconnect = true
dead_man_ms = 0

[[strategies]]
name = "mm"
venue = "SIM"
instrument = "I0"
open_orders = 100

[[strategies]]
name = "momo"
kind = "momentum"
venue = "SIM"
instrument = "I0"
interval_us = 2000
"#,
        journal = dir.join("journal"),
    )
}

/// One engine process (`killswitch engine`), its stderr in `<label>.log`
/// and its report in `<label>.json`.
pub struct Engine {
    /// The process.
    pub child: Child,
    log: PathBuf,
    report: PathBuf,
}

impl Engine {
    /// Starts an engine on `work/engine.toml`.
    pub fn spawn(work: &Path, label: &str, standby: bool) -> Engine {
        Self::spawn_env(work, label, standby, &[])
    }

    /// [`Engine::spawn`] with environment variables set.
    pub fn spawn_env(work: &Path, label: &str, standby: bool, env: &[(&str, &Path)]) -> Engine {
        let log = work.join(format!("{label}.log"));
        let report = work.join(format!("{label}.json"));
        let mut c = Command::new(KILLSWITCH);
        c.arg("engine")
            .arg("--config")
            .arg(work.join("engine.toml"))
            .arg("--report")
            .arg(&report);
        if standby {
            c.arg("--standby");
        }
        for (k, v) in env {
            c.env(k, v);
        }
        let child = c
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Engine { child, log, report }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the exit (deadline 60 s); its code and report.
    pub fn wait(&mut self) -> (i32, serde_json::Value) {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                let r = std::fs::read_to_string(&self.report)
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok())
                    .unwrap_or(serde_json::Value::Null);
                return (s.code().unwrap_or(-1), r);
            }
            assert!(
                Instant::now() < end,
                "engine did not exit; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Sends `sig`.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), sig).unwrap();
    }

    /// Waits until this engine owns the pair's block in `work` and holds
    /// its lease (deadline 60 s); the block.
    pub fn holding_lease(&self, work: &Path) -> ControlBlock {
        let mut block = None;
        assert!(
            wait_for(Duration::from_secs(60), || {
                block = ControlBlock::open(work, "pair")
                    .ok()
                    .filter(|b| b.owner().pid == self.pid() && b.lease().holder == self.pid());
                block.is_some()
            }),
            "active attached with the lease; log:\n{}",
            self.log()
        );
        block.unwrap()
    }

    /// Waits until this engine follows the active as the standby of
    /// `block` (deadline 60 s); the journal sequence it applied.
    pub fn following(&self, block: &ControlBlock, what: &str) -> u64 {
        let mut seq = 0;
        assert!(
            wait_for(Duration::from_secs(60), || block.standby().is_some_and(
                |s| {
                    seq = s.applied_seq;
                    s.pid == self.pid() && s.applied_seq > 0
                }
            )),
            "{what}; log:\n{}",
            self.log()
        );
        seq
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // A SIGSTOPped engine must be woken to die cleanly.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid() as i32),
            nix::sys::signal::Signal::SIGCONT,
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The firm's NewOrderSingles the venue received, in order.
pub fn new_orders(log: &[AuditEntry]) -> Vec<&AuditEntry> {
    log.iter().filter(|e| e.is_new_order_from(FIRM)).collect()
}

/// Waits until the venue has received `more` of the firm's new orders
/// beyond `from`; how many it has received.
pub fn wait_orders(venue: &VenueProc, from: usize, more: usize, what: &str) -> usize {
    let log = venue.wait_audit("SIM", what, |log| new_orders(log).len() >= from + more);
    new_orders(&log).len()
}
