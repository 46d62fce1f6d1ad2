//! The steps every drill shares: its work directory, its venues and the
//! engine's configuration, its opening lines and its checks list, and the
//! engine process (start, attach to its control block, let it trade, wait
//! for its exit).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use killswitch::control::{ControlBlock, GatewaySnapshot, Mode};
use killswitch_tools::engine::EngineConfig;

use super::{Check, DrillArgs, Scenario, VenueMode};

/// The drill's opening lines: `headline` and where the venues run, the
/// work directory, then each venue process with its address (over the
/// wire). Every drill that starts venues begins its output this way.
pub(crate) fn say_opening(
    q: bool,
    headline: &str,
    work: &Path,
    cfg: &EngineConfig,
    venues: Option<&crate::drill_wire::Venues>,
) {
    say!(
        q,
        "{headline}, venues {}",
        if venues.is_some() {
            "over FIX 4.4 on loopback (their own processes)"
        } else {
            "in-process"
        }
    );
    say!(
        q,
        "work dir {} (engine log: engine.log, config: engine.toml)",
        work.display()
    );
    if let Some(v) = venues {
        for (p, c) in v
            .procs
            .iter()
            .zip(cfg.venues.iter().filter(|c| c.is_wire()))
        {
            say!(
                q,
                "0. venue      {} pid {} on {} (audit log venues/{}.audit.jsonl{})",
                p.name,
                p.pid(),
                c.connect.as_deref().unwrap_or(""),
                p.name,
                if c.cancel_on_disconnect {
                    ""
                } else {
                    "; no cancel-on-disconnect"
                }
            );
        }
    }
}

/// The drill's checks under their step's heading (`"5. checks"`), one
/// line each, ✓ or ✗: every drill ends its output this way.
pub(crate) fn say_checks(q: bool, heading: &str, checks: &[Check]) {
    say!(q, "{heading}");
    for c in checks {
        say!(
            q,
            "   [{}] {}: {}",
            if c.ok { "✓" } else { "✗" },
            c.name,
            c.detail
        );
    }
}

/// Starts the drill's venue processes when it runs over the wire (they set
/// the venues' addresses in `cfg`), then writes the engine's configuration
/// to `engine.toml` in `work`: both drills begin this way.
pub(crate) fn start_venues_and_config(
    args: &DrillArgs,
    cfg: &mut EngineConfig,
    work: &Path,
) -> Result<(Option<crate::drill_wire::Venues>, PathBuf), String> {
    let venues = if args.venues == VenueMode::Wire {
        Some(crate::drill_wire::start(args.scenario, cfg, work)?)
    } else {
        None
    };
    let config_path = work.join("engine.toml");
    std::fs::write(
        &config_path,
        toml::to_string(&*cfg).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("{}: {e}", config_path.display()))?;
    Ok((venues, config_path))
}

pub(crate) fn config_for(args: &DrillArgs, work: &Path) -> EngineConfig {
    let mut cfg = EngineConfig {
        name: "drill".into(),
        control_dir: Some(work.to_path_buf()),
        journal_dir: work.join("journal"),
        report_path: Some(work.join("engine-report.json")),
        ..EngineConfig::default()
    };
    let trade_ms = args.trade_for.as_millis() as u64;
    match args.scenario {
        Scenario::StuckCancels => {
            cfg.venues[1].ignore_cancels = true;
            // Shorter than the 5 s emergency default, so the drill is quick.
            cfg.drain.cancel_deadline_ms = 1000;
        }
        Scenario::VenueDisconnect => {
            cfg.venues[1].disconnect_after_ms = Some(trade_ms / 2);
            cfg.drain.cancel_deadline_ms = 1000;
        }
        Scenario::StrategyPanic => cfg.strategies[1].panic_after_ms = Some(trade_ms),
        // Before the trip: the engine's clock starts a little after the drill's.
        Scenario::GatewayHang => cfg.venues[0].hang_after_ms = Some(trade_ms / 2),
        // The engine's clock: after the trading time, so SIM-B has traded
        // into positions first (the drill waits for the withdrawal).
        Scenario::NoLiquidity => cfg.venues[1].withdraw_liquidity_after_ms = Some(trade_ms + 500),
        Scenario::Normal
        | Scenario::Sigstop
        | Scenario::Stuck
        | Scenario::CrashRestart
        | Scenario::RollingRestart => {}
    }
    cfg
}

pub(crate) fn spawn_engine(work: &Path, config: &Path, log: &str) -> std::io::Result<Child> {
    let log = std::fs::File::create(work.join(log))?;
    Command::new(std::env::current_exe()?)
        .arg("engine")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
}

pub(crate) fn wait_child(
    child: &mut Child,
    deadline: Duration,
) -> Option<std::process::ExitStatus> {
    let end = Instant::now() + deadline;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits until the engine `child` owns the drill's control block.
pub(crate) fn attach(work: &Path, child: &mut Child, log: &str) -> Result<ControlBlock, String> {
    let pid = child.id();
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(b) = ControlBlock::open(work, "drill") {
            if b.owner().pid == pid {
                return Ok(b);
            }
        }
        if let Ok(Some(s)) = child.try_wait() {
            return Err(format!(
                "engine exited at start-up ({s}); see {}",
                work.join(log).display()
            ));
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            return Err("engine did not attach to its control block within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Lets the engine trade for `trade_for` and until `min_open` orders rest
/// (30 s more at most); with `stop_on_kill`, until the switch is at KILL.
pub(crate) fn trade(
    block: &ControlBlock,
    child: &mut Child,
    trade_for: Duration,
    min_open: u64,
    stop_on_kill: bool,
    log: &Path,
) -> Result<(), String> {
    let started = Instant::now();
    let end = started + trade_for + Duration::from_secs(30);
    loop {
        let enough =
            started.elapsed() >= trade_for && GatewaySnapshot::read(block).open_orders >= min_open;
        let self_tripped = stop_on_kill && block.state().mode() == Mode::Kill;
        if enough || self_tripped || Instant::now() > end {
            return Ok(());
        }
        if let Ok(Some(s)) = child.try_wait() {
            return Err(format!(
                "engine exited while trading ({s}); see {}",
                log.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The drill's work directory: `--work-dir`, or a fresh one. Fresh, because
/// a failed drill keeps its own (with a latched block and a journal), and a
/// later drill that got the same pid must not start on them.
pub(crate) fn work_dir(args: &DrillArgs) -> Result<PathBuf, String> {
    match &args.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
            Ok(d.clone())
        }
        None => fresh_work_dir(),
    }
}

/// `ks-drill-<pid>[-n]` in the temporary directory, created by this call.
fn fresh_work_dir() -> Result<PathBuf, String> {
    let base = std::env::temp_dir();
    for n in 0..1000u32 {
        let name = match n {
            0 => format!("ks-drill-{}", std::process::id()),
            n => format!("ks-drill-{}-{n}", std::process::id()),
        };
        let d = base.join(name);
        match std::fs::create_dir(&d) {
            Ok(()) => return Ok(d),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("{}: {e}", d.display())),
        }
    }
    Err(format!(
        "{}: 1000 ks-drill-{}* directories already exist; remove old drills' directories or give --work-dir",
        base.display(),
        std::process::id()
    ))
}
