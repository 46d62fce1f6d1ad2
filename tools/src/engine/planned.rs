//! The reference engine's side of the planned shutdown: the plan (from the
//! `[shutdown]` section, a `killswitch shutdown` request in the block, or
//! a SIGTERM), the hooks the library calls (mids of the simulated venues,
//! the notification command, the checkpoint's configuration / strategy /
//! log sections, a service component), and the JSON report written next to
//! the control block after every phase, which `killswitch shutdown`
//! follows and `killswitch verify-shutdown` reads.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use killswitch::clock::wall_ns;
use killswitch::control::{ControlBlock, ScopeKind};
use killswitch::order::{Price, Qty, ScopeIndex};
use killswitch::shutdown::words::ShutdownRequest;
use killswitch::shutdown::{
    CheckpointExtras, Component, ComponentStatus, FlattenConfig, FlattenMode, Phase, PhaseRecord,
    PhaseResult, PlannedShutdownReport, ShutdownHooks, ShutdownPlan, StopOrder,
};
use killswitch::signals::{ShutdownLevel, SignalState};
use serde_json::{json, Value};

use super::config::EngineConfig;
use super::strategy::MID;

/// `<dir>/killswitch.<name>.shutdown.json`: the planned shutdown's report
/// (rewritten after every phase).
pub fn report_path(block_path: &Path) -> PathBuf {
    let mut s = block_path.as_os_str().to_os_string();
    s.push(".shutdown.json");
    PathBuf::from(s)
}

/// `<dir>/killswitch.<name>.shutdown-reason`: the reason `killswitch
/// shutdown` leaves for the engine (the block has no room for text).
pub fn reason_path(block_path: &Path) -> PathBuf {
    let mut s = block_path.as_os_str().to_os_string();
    s.push(".shutdown-reason");
    PathBuf::from(s)
}

/// The complete checkpoint's directory: `[shutdown] checkpoint_dir`, or
/// `<journal_dir>-checkpoints` beside the journal.
pub fn checkpoint_dir(cfg: &EngineConfig) -> PathBuf {
    cfg.shutdown.checkpoint_dir.clone().unwrap_or_else(|| {
        let mut s = cfg.journal_dir.as_os_str().to_os_string();
        s.push("-checkpoints");
        PathBuf::from(s)
    })
}

/// Where the complete checkpoint goes when its directory fails (full,
/// unwritable, not a directory): `[shutdown] alternate_checkpoint_dir`, or
/// the system temp directory (`$TMPDIR`, else `/tmp`), which is on another
/// file system than the data directory on most hosts. The report and step
/// 8's line say when it was used, and why.
pub fn alternate_checkpoint_dir(cfg: &EngineConfig) -> PathBuf {
    cfg.shutdown
        .alternate_checkpoint_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir)
}

fn base_plan(cfg: &EngineConfig) -> ShutdownPlan {
    let s = &cfg.shutdown;
    ShutdownPlan {
        flatten: FlattenMode::parse(&s.flatten).unwrap_or_default(),
        keep_passive: s.keep_passive,
        aggressive: killswitch::shutdown::AggressiveRule {
            within: Price(s.aggressive_within_ticks * super::strategy::TICK),
            strategies: Vec::new(),
        },
        position_limit: s.position_limit_lots.map(Qty::from_lots),
        flatten_cfg: FlattenConfig {
            conservative_wait: Duration::from_millis(s.conservative_wait_ms),
            market_wait: Duration::from_millis(s.market_wait_ms),
            market_collar_bps: s.market_collar_bps,
            loss_alert: s
                .loss_alert
                .map(|l| (l * killswitch::order::PRICE_SCALE as f64) as i64),
        },
        order_wait: Duration::from_millis(s.order_wait_ms),
        reconcile_wait: Duration::from_millis(s.reconcile_wait_ms),
        component_timeout: Duration::from_millis(s.component_timeout_ms),
        checkpoint_dir: Some(checkpoint_dir(cfg)),
        checkpoint_alternate_dir: Some(alternate_checkpoint_dir(cfg)),
        ..ShutdownPlan::default()
    }
}

/// The plan for a `killswitch shutdown` request.
pub fn plan_from_request(
    cfg: &EngineConfig,
    block: &ControlBlock,
    r: &ShutdownRequest,
) -> ShutdownPlan {
    let reason = std::fs::read_to_string(reason_path(block.path()))
        .ok()
        .map(|s| s.trim().chars().take(128).collect::<String>())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("requested by pid {}", r.pid));
    ShutdownPlan {
        reason,
        start_at_wall_ns: r.at_wall_ns,
        flatten: r.flatten,
        keep_passive: r.keep_passive,
        reduce_limits_pct: (r.reduce_limits_pct > 0).then_some(r.reduce_limits_pct),
        nonce: r.nonce,
        ..base_plan(cfg)
    }
}

/// The plan for a SIGTERM (the `[shutdown]` defaults).
pub fn plan_from_signal(cfg: &EngineConfig, signal: i32) -> ShutdownPlan {
    ShutdownPlan {
        reason: format!(
            "signal {}",
            if signal == libc::SIGINT {
                "SIGINT"
            } else {
                "SIGTERM"
            }
        ),
        reduce_limits_pct: cfg.shutdown.reduce_limits_pct,
        // The engine's own id for a signal-started shutdown.
        nonce: 0xffff,
        ..base_plan(cfg)
    }
}

/// A service thread of the engine (the runbook's "risk manager"): stops
/// when asked, unless configured to ignore its stop (fault injection: the
/// "Process Not Stopping" path), in which case it is forced.
pub struct ServiceThread {
    name: String,
    stop: Arc<AtomicBool>,
    join: Option<std::thread::JoinHandle<()>>,
    forced: bool,
}

impl ServiceThread {
    /// Starts it.
    pub fn start(name: &str, ignores_stop: bool) -> std::io::Result<ServiceThread> {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let join = std::thread::Builder::new()
            .name(format!("ks-{name}"))
            .spawn(move || loop {
                if !ignores_stop && s.load(Ordering::Acquire) {
                    return;
                }
                // A service that ignores its stop only looks again when
                // forced (the flag is then also its exit).
                if ignores_stop && s.load(Ordering::Acquire) && FORCED.load(Ordering::Acquire) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            })?;
        Ok(ServiceThread {
            name: name.to_string(),
            stop,
            join: Some(join),
            forced: false,
        })
    }
}

/// Set when a stubborn service is forced (it then leaves its loop: the
/// in-process stand-in for SIGKILL of a separate service).
static FORCED: AtomicBool = AtomicBool::new(false);

impl Component for ServiceThread {
    fn name(&self) -> &str {
        &self.name
    }
    fn stop_order(&self) -> StopOrder {
        StopOrder::Risk
    }
    fn request_stop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
    fn is_stopped(&mut self) -> bool {
        self.join.as_ref().is_none_or(|j| j.is_finished())
    }
    fn force_stop(&mut self) -> String {
        self.forced = true;
        FORCED.store(true, Ordering::Release);
        let joined = self.join.take().map(|j| j.join().is_ok()).unwrap_or(false);
        format!(
            "ignored its stop; forced after its timeout ({})",
            if joined {
                "thread ended"
            } else {
                "thread abandoned"
            }
        )
    }
    fn status(&self) -> ComponentStatus {
        match &self.join {
            Some(j) if !j.is_finished() => ComponentStatus::Running,
            _ if self.forced => ComponentStatus::Failed("forced".into()),
            _ => ComponentStatus::Stopped,
        }
    }
}

/// What the engine gives the library.
pub struct EngineHooks {
    /// The engine configuration.
    pub cfg: EngineConfig,
    /// The control block (names, path), through the runtime's monitor.
    pub block: killswitch::runtime::Monitor,
    /// Signal levels (a second SIGTERM escalates).
    pub signals: Option<Arc<SignalState>>,
    /// The engine's log lines so far (for the checkpoint's log section).
    pub log: Vec<String>,
    /// Components to stop in phase 11.
    pub components: Vec<Box<dyn Component>>,
    /// Strategy states for the checkpoint (name, JSON).
    pub strategy_states: Vec<(String, Vec<u8>)>,
}

fn ts() -> String {
    killswitch::clock::format_wall(wall_ns())
}

impl EngineHooks {
    fn log(&mut self, line: String) {
        eprintln!("{line}");
        self.log.push(line);
    }

    fn notify(&self, event: &str, report: &PlannedShutdownReport) {
        let Some(cmd) = self.cfg.shutdown.notify_command.clone() else {
            return;
        };
        let payload = json!({
            "event": event,
            "engine": self.cfg.name,
            "reason": report.reason,
            "wall_ns": wall_ns(),
            "nonce": report.nonce,
        })
        .to_string();
        // The event is in the pipe before the shutdown goes on (a pipe holds
        // far more than one line, so this never waits on the command): the
        // last event is not lost when the engine exits right after it. The
        // command itself runs beside the shutdown, never in its way: a hung
        // notifier must not hold the stop, so only its reaping is on a thread.
        let child = std::process::Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .stdin(std::process::Stdio::piped())
            .spawn();
        match child {
            Ok(mut c) => {
                if let Some(mut stdin) = c.stdin.take() {
                    let _ = stdin.write_all(payload.as_bytes());
                    let _ = stdin.write_all(b"\n");
                }
                std::thread::spawn(move || {
                    let _ = c.wait();
                });
            }
            Err(e) => eprintln!("ks-engine: notify_command {cmd:?} did not start: {e}"),
        }
    }
}

impl ShutdownHooks for EngineHooks {
    fn mid(&mut self, venue: ScopeIndex, instrument: ScopeIndex) -> Option<Price> {
        // The simulated venues centre their flow on a fixed mid.
        let v = self.block.block().name_at(ScopeKind::Venue, venue)?;
        let i = self
            .block
            .block()
            .name_at(ScopeKind::Instrument, instrument)?;
        self.cfg
            .venues
            .iter()
            .any(|s| s.name == v && s.instruments.contains(&i))
            .then_some(MID)
    }

    fn on_phase(&mut self, record: &PhaseRecord, report: &PlannedShutdownReport) {
        let n = record.phase.number();
        let line = match &record.result {
            PhaseResult::Running => format!("[{}] Step {n}: {}...", ts(), record.phase.title()),
            r => format!(
                "[{}] Step {n}: {} ... {} ({} ms){}",
                ts(),
                record.phase.title(),
                result_word(r),
                record.micros / 1000,
                if record.detail.is_empty() {
                    String::new()
                } else {
                    format!(": {}", record.detail)
                }
            ),
        };
        let line = match &record.result {
            PhaseResult::Warning(w) => format!("{line}\n[{}] WARNING: {w}", ts()),
            PhaseResult::Failed(w) => format!("{line}\n[{}] ERROR: {w}", ts()),
            _ => line,
        };
        self.log(line);
        if record.phase == Phase::Announce && record.result == PhaseResult::Running {
            self.notify("shutdown-announced", report);
        }
        if record.phase == Phase::Report && record.result != PhaseResult::Running {
            self.notify("shutdown-complete", report);
        }
        let mut v = report_json(self.block.block(), report);
        v["engine_pid"] = json!(std::process::id());
        v["engine"] = json!(self.cfg.name);
        write_json(&report_path(self.block.block().path()), &v);
    }

    fn checkpoint_extras(&mut self) -> CheckpointExtras {
        CheckpointExtras {
            config: vec![(
                "engine.toml".into(),
                toml::to_string(&self.cfg).unwrap_or_default().into_bytes(),
            )],
            strategies: std::mem::take(&mut self.strategy_states),
            log_tail: self.log.join("\n"),
        }
    }

    fn stop_market_data(&mut self) -> Result<String, String> {
        Ok(format!(
            "{} simulated venue(s): no external feed subscribed (their flow is internal to the simulator); nothing to unsubscribe",
            self.cfg.venues.len()
        ))
    }

    fn components(&mut self) -> Vec<Box<dyn Component>> {
        std::mem::take(&mut self.components)
    }

    fn escalate(&mut self) -> bool {
        self.signals
            .as_ref()
            .is_some_and(|s| s.level() == ShutdownLevel::Emergency)
    }
}

/// The result's word on a step line.
pub fn result_word(r: &PhaseResult) -> &'static str {
    match r {
        PhaseResult::Running => "running",
        PhaseResult::Done => "Done",
        PhaseResult::Skipped => "Skipped",
        PhaseResult::Warning(_) => "Done with warning",
        PhaseResult::Failed(_) => "FAILED",
    }
}

fn lots(q: Qty) -> f64 {
    q.0 as f64 / killswitch::order::QTY_SCALE as f64
}

fn units(p: i64) -> f64 {
    p as f64 / killswitch::order::PRICE_SCALE as f64
}

/// The report as JSON, names resolved from the block.
pub fn report_json(block: &ControlBlock, r: &PlannedShutdownReport) -> Value {
    let name = |kind, i| block.scope_label(kind, i);
    let key = |k: (u16, u16, u16)| {
        json!({
            "venue": name(ScopeKind::Venue, k.0),
            "instrument": name(ScopeKind::Instrument, k.1),
            "account": name(ScopeKind::Account, k.2),
        })
    };
    let phases: Vec<Value> = r
        .phases
        .iter()
        .map(|p| {
            let (result, note) = match &p.result {
                PhaseResult::Running => ("running", None),
                PhaseResult::Done => ("done", None),
                PhaseResult::Skipped => ("skipped", None),
                PhaseResult::Warning(w) => ("warning", Some(w.clone())),
                PhaseResult::Failed(w) => ("failed", Some(w.clone())),
            };
            json!({
                "step": p.phase.number(),
                "phase": p.phase.title(),
                "started_wall_ns": p.started_wall_ns,
                "ms": p.micros as f64 / 1000.0,
                "waited_ms": p.waited_micros as f64 / 1000.0,
                "result": result,
                "note": note,
                "detail": p.detail,
            })
        })
        .collect();
    json!({
        "nonce": r.nonce,
        "reason": r.reason,
        "flatten": r.flatten,
        "keep_passive": r.keep_passive,
        "reduce_limits_pct": r.reduce_limits_pct,
        "started_wall_ns": r.started_wall_ns,
        "finished_wall_ns": r.finished_wall_ns,
        "finished": r.finished_wall_ns != 0,
        "clean": r.is_clean(),
        "outcome_bits": r.outcome,
        "phases": phases,
        "total_ms": r.total_micros() as f64 / 1000.0,
        "waited_ms": r.waited_micros() as f64 / 1000.0,
        "work_ms": (r.total_micros().saturating_sub(r.waited_micros())) as f64 / 1000.0,
        "strategies": r.strategies.iter().map(|s| json!({
            "strategy": s.name, "status": s.status, "last_signal_wall_ns": s.last_signal_wall_ns,
        })).collect::<Vec<_>>(),
        "position_limit": r.position_limit.map(lots),
        "cancelled": r.cancelled.len(),
        "kept_passive": r.kept_passive.iter().map(|i| i.0).collect::<Vec<_>>(),
        "flatten_results": r.flatten_results.iter().map(|f| {
            let mut k = key(f.key);
            k["start"] = json!(lots(f.start));
            k["remaining"] = json!(lots(f.remaining));
            k["filled"] = json!(lots(f.filled));
            k["mid_at_start"] = json!(f.mid_at_start.map(|m| units(m.0)));
            k["slippage"] = json!(units(f.slippage));
            k
        }).collect::<Vec<_>>(),
        "flatten_escalated": r.flatten_escalated,
        "slippage": units(r.slippage),
        "loss_alert": r.loss_alert,
        "stragglers": r.stragglers.iter().map(|i| i.0).collect::<Vec<_>>(),
        "forced_cancel_local": r.forced_cancel_local.iter().map(|i| i.0).collect::<Vec<_>>(),
        "reconcile": r.reconcile.iter().map(|row| {
            let mut k = key((row.venue, row.instrument, row.account));
            k["internal"] = json!(lots(row.internal));
            k["at_venue"] = json!(row.at_venue.map(lots));
            k["status"] = json!(row.status.as_str());
            k
        }).collect::<Vec<_>>(),
        "final_positions": r.final_positions.iter().map(|(k, q)| {
            let mut v = key(*k);
            v["qty"] = json!(lots(*q));
            v
        }).collect::<Vec<_>>(),
        "pnl": r.pnl.map(units),
        "checkpoint": r.checkpoint.as_ref().map(|c| json!({
            "path": c.path.display().to_string(),
            "crc64": format!("0x{:016x}", c.crc64),
            "bytes": c.bytes,
            "verified": c.verified,
            "alternate_because": c.alternate_because,
        })),
        "components": r.components.iter().map(|c| json!({
            "name": c.name, "order": c.order.as_str(), "graceful": c.graceful,
            "forced": c.forced, "ms": c.ms,
        })).collect::<Vec<_>>(),
        "warnings": r.warnings,
    })
}

/// Writes `v` to `path` through a temporary file and a rename: a reader
/// never sees half a report.
pub fn write_json(path: &Path, v: &Value) {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path)) {
        eprintln!(
            "ks-engine: cannot write the shutdown report {}: {e}",
            path.display()
        );
    }
}
