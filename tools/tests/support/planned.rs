//! The reference engine for the planned-shutdown process tests: a small
//! configuration with quick waits, started as `killswitch engine` and
//! waited for until it trades; its log and its shutdown report.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use killswitch::control::ControlBlock;
use killswitch_tools::engine::EngineConfig;
use serde_json::Value;

use super::{wait_for, KILLSWITCH};

/// Deadline of every wait on the engine.
pub const LONG: Duration = Duration::from_secs(90);

/// The engine process; killed on drop.
pub struct Engine {
    /// The process.
    pub child: Child,
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Engine {
    /// Waits for its exit; its code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let mut code = None;
        let exited = wait_for(LONG, || match self.child.try_wait() {
            Ok(Some(s)) => {
                code = s.code();
                true
            }
            _ => false,
        });
        assert!(exited, "the engine did not exit");
        code
    }
    /// Sends it a signal.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }
}

/// A small engine (a few hundred resting orders) with quick waits.
pub fn config(dir: &Path, name: &str) -> EngineConfig {
    let mut cfg = EngineConfig {
        name: name.into(),
        control_dir: Some(dir.to_path_buf()),
        journal_dir: dir.join(format!("journal-{name}")),
        report_path: Some(dir.join(format!("report-{name}.json"))),
        ..EngineConfig::default()
    };
    for s in &mut cfg.strategies {
        s.open_orders = s.open_orders.min(150);
    }
    cfg.shutdown.order_wait_ms = 10_000;
    cfg.shutdown.conservative_wait_ms = 300;
    cfg.shutdown.market_wait_ms = 2000;
    cfg.shutdown.component_timeout_ms = 5000;
    cfg
}

/// Writes the configuration and starts the engine; returns once it trades.
pub fn start(dir: &Path, cfg: &EngineConfig) -> Engine {
    start_with(dir, cfg, |config| {
        let mut c = Command::new(KILLSWITCH);
        c.arg("engine").arg("--config").arg(config);
        c
    })
}

/// As [`start`], the command built by `command` from the configuration's
/// path (another environment, a wrapper such as `unshare`).
pub fn start_with(
    dir: &Path,
    cfg: &EngineConfig,
    command: impl FnOnce(&Path) -> Command,
) -> Engine {
    let path = dir.join(format!("{}.toml", cfg.name));
    std::fs::write(&path, toml::to_string(cfg).unwrap()).unwrap();
    let log = std::fs::File::create(dir.join(format!("engine-{}.log", cfg.name))).unwrap();
    let child = command(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let e = Engine { child };
    // Trading: attached, and orders resting at the venues.
    let traded = wait_for(LONG, || {
        ControlBlock::open(dir, &cfg.name).is_ok_and(|b| {
            b.owner().alive && killswitch::control::GatewaySnapshot::read(&b).orders_sent > 300
        })
    });
    assert!(
        traded,
        "engine never traded:\n{}",
        engine_log(dir, &cfg.name)
    );
    e
}

/// The engine's log (stderr).
pub fn engine_log(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("engine-{name}.log"))).unwrap_or_default()
}

/// The planned shutdown's report beside the control block.
pub fn shutdown_report(dir: &Path, name: &str) -> Value {
    let p = dir.join(format!("killswitch.{name}.shutdown.json"));
    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
}
