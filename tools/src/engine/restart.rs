//! After a hand-over: the old active restarts as the hot standby of the
//! new active (`[failover] restart_as_standby`, on by default), the
//! runbook's "restart primary" done by the engine itself, so that
//! `killswitch failback` needs no manual step.
//!
//! It re-executes itself rather than switching role in the same process:
//! the runtime it ran (its threads, signal handlers, sessions, journal
//! writer, control-block attachments) is gone with the old image, and the
//! standby starts exactly as one started by hand (`--standby`, same
//! configuration). The pid stays the same, so a supervisor (systemd, the
//! drill, a test) that started the engine still watches it, and its
//! stderr goes on in the same log. The binary is the one now at the
//! path it was started from: a binary replaced on disk (an upgrade rolled
//! out before the failover) is the one that comes back.
//!
//! It waits for the successor to take the lease first: until then the
//! promoting standby still holds the control block's standby slot, and a
//! standby of nobody would follow a journal no one writes.

use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use killswitch::control::ControlBlock;

/// What became of the lease this engine gave back.
#[derive(Debug, PartialEq, Eq)]
pub enum Successor {
    /// A live engine holds a newer epoch: restart as its standby.
    Active {
        /// Its pid.
        pid: u32,
        /// The epoch it holds.
        epoch: u64,
    },
    /// A KILL is in force: the engine that took over drains it and stops;
    /// there is nothing to follow.
    KillInForce,
    /// A newer epoch was taken and given back: the new active has stopped.
    StoppedSince {
        /// The epoch it took.
        epoch: u64,
    },
    /// Nobody took the lease within the wait.
    NotTaken {
        /// The epoch still released.
        epoch: u64,
    },
    /// The control block cannot be opened.
    NoBlock(String),
}

/// Waits (at most `wait`) until the lease moved past `released_epoch`.
pub fn wait_for_successor(
    dir: &Path,
    name: &str,
    released_epoch: u64,
    wait: Duration,
) -> Successor {
    let block = match ControlBlock::open(dir, name) {
        Ok(b) => b,
        Err(e) => return Successor::NoBlock(e.to_string()),
    };
    let end = Instant::now() + wait;
    loop {
        if killswitch::drain::kill_in_force(&block, block.state()) {
            return Successor::KillInForce;
        }
        let lease = block.lease();
        if lease.epoch > released_epoch {
            if lease.holder != 0 && lease.holder_alive {
                return Successor::Active {
                    pid: lease.holder,
                    epoch: lease.epoch,
                };
            }
            if lease.holder == 0 {
                return Successor::StoppedSince { epoch: lease.epoch };
            }
        }
        if Instant::now() >= end {
            return Successor::NotTaken { epoch: lease.epoch };
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Where the hand-over's report is kept (the standby's own report, at its
/// end, is written to `report` itself): `<stem>.handover-<epoch>.json`
/// beside it.
pub fn handover_report_path(report: &Path, epoch: u64) -> PathBuf {
    let stem = report
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report".into());
    report.with_file_name(format!("{stem}.handover-{epoch}.json"))
}

/// The binary to run again: the path this process was started from. A
/// binary replaced on disk since reads as `<path> (deleted)` on Linux: the
/// path without the suffix is the new one.
fn binary() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let text = exe.to_string_lossy();
    Ok(match text.strip_suffix(" (deleted)") {
        Some(path) => PathBuf::from(path),
        None => exe,
    })
}

/// The arguments of the standby: this process's own, plus `--standby`
/// unless present (a promoted standby that hands over again has it).
pub fn standby_args(own: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut args: Vec<OsString> = own.into_iter().collect();
    if !args.iter().any(|a| a == "--standby") {
        args.push("--standby".into());
    }
    args
}

/// Replaces this process with the standby. Returns only when that failed.
pub fn exec_as_standby() -> std::io::Error {
    let exe = match binary() {
        Ok(p) => p,
        Err(e) => return e,
    };
    let mut own = std::env::args_os();
    let arg0 = own.next().unwrap_or_else(|| exe.clone().into_os_string());
    let args = standby_args(own);
    // A mask survives exec: the standby must receive SIGTERM / SIGINT
    // (its only stop). Nothing here blocks signals today; this keeps it so.
    let _ = nix::sys::signal::SigSet::empty().thread_set_mask();
    Command::new(&exe).arg0(arg0).args(&args).exec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standby_is_added_once() {
        let a = standby_args(["engine".into(), "--config".into(), "x.toml".into()]);
        assert_eq!(a.last().unwrap(), "--standby");
        assert_eq!(standby_args(a.clone()), a);
    }

    #[test]
    fn the_handover_report_sits_beside_the_report() {
        assert_eq!(
            handover_report_path(Path::new("/w/a1.json"), 3),
            PathBuf::from("/w/a1.handover-3.json")
        );
    }
}
