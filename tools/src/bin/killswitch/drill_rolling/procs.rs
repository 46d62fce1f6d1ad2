//! The drill's two engine processes and the commands it runs against
//! them (`failover`, `failback`), with their waits (each with a deadline).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use killswitch::control::ControlBlock;

use super::DEADLINE;

/// One engine process of the pair; killed on drop (a failed drill leaves
/// nothing behind).
pub(super) struct EngineProc {
    pub(super) label: &'static str,
    pub(super) child: Child,
    exited: Option<String>,
}

impl EngineProc {
    pub(super) fn spawn(
        work: &Path,
        label: &'static str,
        standby: bool,
    ) -> Result<EngineProc, String> {
        let log =
            std::fs::File::create(work.join(format!("{label}.log"))).map_err(|e| e.to_string())?;
        let mut c = Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
        c.arg("engine")
            .arg("--config")
            .arg(work.join("engine.toml"))
            .arg("--report")
            .arg(work.join(format!("{label}.json")));
        if standby {
            c.arg("--standby");
        }
        let child = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {label}: {e}"))?;
        Ok(EngineProc {
            label,
            child,
            exited: None,
        })
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(super) fn log(&self, work: &Path) -> String {
        std::fs::read_to_string(work.join(format!("{}.log", self.label))).unwrap_or_default()
    }

    pub(super) fn running(&mut self) -> bool {
        if self.exited.is_none() {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.exited = Some(s.to_string());
            }
        }
        self.exited.is_none()
    }

    pub(super) fn report<T: serde::de::DeserializeOwned>(
        &self,
        work: &Path,
        name: &str,
    ) -> Option<T> {
        std::fs::read(work.join(name))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }
}

impl Drop for EngineProc {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until `e` holds the lease of the drill's block.
pub(super) fn wait_block(work: &Path, e: &mut EngineProc) -> Result<ControlBlock, String> {
    let end = Instant::now() + DEADLINE;
    loop {
        if let Ok(b) = ControlBlock::open(work, "drill") {
            if b.lease().holder == e.pid() {
                return Ok(b);
            }
        }
        if !e.running() {
            return Err(format!(
                "engine A exited at start-up; see {}",
                work.join("engine-a.log").display()
            ));
        }
        if Instant::now() > end {
            return Err(format!(
                "engine A did not take the lease within {DEADLINE:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until `e` follows the journal as the standby.
pub(super) fn wait_standby(
    block: &ControlBlock,
    e: &mut EngineProc,
    work: &Path,
    what: &str,
) -> Result<(), String> {
    let end = Instant::now() + DEADLINE;
    loop {
        if block
            .standby()
            .is_some_and(|s| s.pid == e.pid() && s.alive && s.applied_seq > 0)
        {
            return Ok(());
        }
        if !e.running() {
            return Err(format!(
                "{what}: pid {} exited; see {}",
                e.pid(),
                work.join(format!("{}.log", e.label)).display()
            ));
        }
        if Instant::now() > end {
            return Err(format!("{what}: not following within {DEADLINE:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `killswitch failover|failback`: exit code and output.
pub(super) fn failover_cmd(work: &Path, what: &str) -> Result<(i32, String), String> {
    let out = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .arg("--dir")
        .arg(work)
        .args(["--name", "drill", what, "--timeout", "60s"])
        .output()
        .map_err(|e| format!("cannot run killswitch {what}: {e}"))?;
    Ok((
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}
