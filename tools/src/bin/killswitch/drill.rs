//! `killswitch drill`: the emergency runbook, end to end, on real processes.
//!
//! It starts simulated venues as their own processes (FIX 4.4 on loopback,
//! [`crate::drill_wire`]; `--venues in-process` keeps them inside the
//! engine) and the reference engine as a child process connected to them,
//! lets it trade until thousands of orders rest, trips it from outside
//! (`killswitch emergency`, or `SIGUSR1`), then checks what the runbook's
//! post-shutdown validation asks and more: no order reached a venue after
//! the gateway acknowledged the kill, every order is terminal or reported
//! `CancelUnknown`, nothing is left resting at the venues (read from the
//! venues' own audit logs over the wire), the quick checkpoint is in the
//! journal, a complete checkpoint built from the journal validates, the
//! journal rebuilds the engine's final state, the process exited and was
//! reaped, and the whole stop took less than the runbook's 30 seconds.
//!
//! `--planned` runs the planned shutdown instead ([`crate::drill_planned`]);
//! `--scenario rolling-restart` the rolling restart ([`crate::drill_rolling`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use killswitch::clock::format_duration_ns;
use killswitch::control::{ControlBlock, GatewaySnapshot, Mode};
use killswitch::journal;
use killswitch_tools::engine::{EngineConfig, EngineReport};
use serde::Serialize;

use crate::emergency::EmergencyReport;

/// What goes wrong in the drill.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// A healthy engine, stopped from outside.
    Normal,
    /// Venue SIM-B ignores every cancel: its orders end `CancelUnknown` at the deadline.
    StuckCancels,
    /// The engine is `SIGSTOP`ped first (the runbook's step 1); `emergency` continues it so it can cancel.
    Sigstop,
    /// The engine is `SIGSTOP`ped and `emergency --no-continue` escalates to SIGTERM, then SIGKILL.
    Stuck,
    /// Venue SIM-B drops the session mid-run (cancel-on-disconnect).
    VenueDisconnect,
    /// A strategy thread panics; the panic hook trips KILL inside the engine.
    StrategyPanic,
    /// The gateway is stuck in a blocking venue write: it never acknowledges
    /// the kill, the drain fails, `emergency` escalates to SIGTERM, then SIGKILL
    /// (SIM-A stays in-process: a FIX session never blocks on a write).
    GatewayHang,
    /// The engine is SIGKILLed with orders resting at venues without
    /// cancel-on-disconnect, then restarted: it must cancel what its journal
    /// shows open before its first new order (over the wire only).
    CrashRestart,
    /// The rolling restart (over the wire only): an active engine and its
    /// hot standby; `killswitch failover`, the old active restarting as
    /// the standby, `killswitch failback`, then `killswitch emergency`;
    /// lost 0, duplicated 0, positions and the gap in order flow read from
    /// the venues' audit logs.
    RollingRestart,
    /// With --planned only: SIM-B's other participants withdraw their
    /// liquidity midway (resting orders pulled, no flow): its positions
    /// will not flatten, flattening escalates to aggressive and reports
    /// what remains (the runbook's "positions not flattening").
    NoLiquidity,
}

/// Where the drill's venues run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VenueMode {
    /// `killswitch venue` child processes, one per venue, over FIX 4.4 on loopback.
    Wire,
    /// The engine's built-in simulated venues (fastest; no sockets).
    InProcess,
}

/// How the drill trips the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TripMethod {
    /// `killswitch emergency` from another process.
    Cli,
    /// `SIGUSR1` to the engine, then `killswitch emergency` to follow it.
    Signal,
    /// `SIGTERM` to the engine (the runbook's `pkill -TERM`), then `killswitch emergency` to follow it.
    Sigterm,
}

/// Options of `killswitch drill`.
#[derive(Args, Debug)]
pub struct DrillArgs {
    /// What goes wrong.
    #[arg(long, value_enum, default_value = "normal")]
    pub(crate) scenario: Scenario,
    /// How to trip.
    #[arg(long, value_enum, default_value = "cli")]
    pub(crate) method: TripMethod,
    /// Where the venues run.
    #[arg(long, value_enum, default_value = "wire")]
    pub(crate) venues: VenueMode,
    /// Trading time before the trip.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
    pub(crate) trade_for: Duration,
    /// Wait for at least this many resting orders before the trip (or 30 s more).
    #[arg(long, default_value_t = 8000)]
    pub(crate) min_open: u64,
    /// Working directory (control block, journal, checkpoints, logs); default a new temp dir, removed on PASS.
    #[arg(long)]
    pub(crate) work_dir: Option<PathBuf>,
    /// Keep the working directory even on PASS.
    #[arg(long)]
    pub(crate) keep: bool,
    /// Print the drill report as JSON on stdout (the narrative goes to stderr).
    #[arg(long)]
    pub(crate) json: bool,
    /// The planned shutdown instead of the emergency: `killswitch shutdown`
    /// (the runbook's 13 steps, with flattening) against the trading
    /// engine, then `killswitch verify-shutdown`.
    #[arg(long)]
    pub(crate) planned: bool,
    /// With --planned: how positions are flattened.
    #[arg(long, default_value = "conservative", value_parser = ["aggressive", "conservative", "none"])]
    pub(crate) flatten: String,
    /// With --planned: where the drill report (JSON) is written; default
    /// `ks-drill-planned-<pid>.json` in the system temp directory (it
    /// outlives the work directory, removed on PASS).
    #[arg(long, value_name = "FILE")]
    pub(crate) report: Option<PathBuf>,
}

/// One check and its outcome.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// What is checked.
    pub name: String,
    /// Passed.
    pub ok: bool,
    /// Figures.
    pub detail: String,
}

/// The drill's result.
#[derive(Clone, Debug, Serialize)]
pub struct DrillReport {
    /// Scenario.
    pub scenario: Scenario,
    /// Trip method.
    pub method: TripMethod,
    /// Where the venues ran.
    pub venues: VenueMode,
    /// Working directory.
    pub work_dir: String,
    /// PASS / FAIL.
    pub pass: bool,
    /// Checks.
    pub checks: Vec<Check>,
    /// What `killswitch emergency` reported.
    pub emergency: Option<EmergencyReport>,
    /// `killswitch emergency`'s exit code.
    pub emergency_exit: Option<i32>,
    /// The engine's own report (absent when it was killed).
    pub engine: Option<EngineReport>,
    /// The engine process's exit status.
    pub engine_exit: String,
    /// Complete checkpoint written from the journal.
    pub checkpoint: Option<String>,
    /// Over the wire: what the venues' audit logs say.
    pub wire: Option<crate::drill_wire::WireEvidence>,
    /// Crash-restart: the crashed engine's exit status.
    pub crashed_engine_exit: Option<String>,
}

/// Runs the drill.
pub fn run(args: DrillArgs) -> ExitCode {
    if args.scenario == Scenario::RollingRestart {
        return crate::drill_rolling::run(&args);
    }
    if args.planned {
        return crate::drill_planned::run(&args);
    }
    if args.flatten != "conservative" || args.report.is_some() {
        eprintln!("killswitch drill: error: --flatten and --report go with --planned only");
        return ExitCode::from(crate::exit::USAGE);
    }
    if args.scenario == Scenario::NoLiquidity {
        eprintln!("killswitch drill: error: --scenario no-liquidity is a planned-shutdown path: add --planned");
        return ExitCode::from(crate::exit::USAGE);
    }
    finish(drill(&args), args.json, |r| r.pass)
}

/// A drill's exit: its report on stdout with `--json`, exit 0 when `pass`
/// says it passed, 1 when not, the I/O code when it could not run (the
/// error on stderr).
pub(crate) fn finish<R: serde::Serialize>(
    out: Result<R, String>,
    json: bool,
    pass: impl Fn(&R) -> bool,
) -> ExitCode {
    match out {
        Ok(r) => {
            if json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&r).expect("report serialises")
                );
            }
            if pass(&r) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("killswitch drill: error: {e}");
            ExitCode::from(crate::exit::IO)
        }
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

fn drill(args: &DrillArgs) -> Result<DrillReport, String> {
    let q = args.json;
    let wire = args.venues == VenueMode::Wire;
    if args.scenario == Scenario::CrashRestart && !wire {
        return Err("--scenario crash-restart runs over the wire only: in-process venues die with the engine, so nothing is left to cancel after the crash (drop --venues in-process)".into());
    }
    let work = work_dir(args)?;
    let mut cfg = config_for(args, &work);
    // The drill's SIGTERM method checks the emergency drain, not the
    // planned shutdown (which SIGTERM runs by default).
    if args.method == TripMethod::Sigterm {
        cfg.shutdown.sigterm_planned = false;
    }
    let (mut venues, config_path) = crate::drill::start_venues_and_config(args, &mut cfg, &work)?;
    say!(
        q,
        "killswitch drill: scenario {:?}, trip by {:?}, venues {}",
        args.scenario,
        args.method,
        if wire {
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

    if let Some(v) = &venues {
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

    // 1. Start the engine.
    let mut child = spawn_engine(&work, &config_path, "engine.log")
        .map_err(|e| format!("cannot start the engine: {e}"))?;
    let mut pid = child.id();
    let mut block = attach(&work, &mut child, "engine.log")?;
    let over_wire = cfg.venues.iter().filter(|v| v.is_wire()).count();
    say!(
        q,
        "1. engine     pid {pid} trading on {} simulated venues{} with {} strategies",
        cfg.venues.len(),
        match over_wire {
            0 => String::new(),
            n if n == cfg.venues.len() => " over FIX".into(),
            n => format!(" ({n} over FIX)"),
        },
        cfg.strategies.len()
    );

    // 2. Let it trade.
    let started = Instant::now();
    trade(
        &block,
        &mut child,
        args.trade_for,
        args.min_open,
        args.scenario == Scenario::StrategyPanic,
        &work.join("engine.log"),
    )?;
    let mut crashed_engine_exit = None;
    let session = cfg.venues[0].comp_id_for(&cfg.name);
    if args.scenario == Scenario::CrashRestart {
        let resting = GatewaySnapshot::read(&block).open_orders;
        let _ = child.kill();
        let status = child.wait().map_err(|e| e.to_string())?;
        crashed_engine_exit = Some(status.to_string());
        say!(
            q,
            "   SIGKILL    engine pid {pid} killed with {resting} orders resting ({status}); the venues have no cancel-on-disconnect: the orders stay"
        );
        let logs = venues
            .as_ref()
            .map(|v| v.read_now())
            .transpose()?
            .unwrap_or_default();
        let at_venues: Vec<String> = logs
            .iter()
            .map(|(n, e)| {
                format!(
                    "{n} {}",
                    killswitch_tools::venue_server::audit::working_orders(e, &session).len()
                )
            })
            .collect();
        say!(
            q,
            "   venues     still working for the dead engine (their audit logs): {}",
            at_venues.join(", ")
        );
        child = spawn_engine(&work, &config_path, "engine-restart.log")
            .map_err(|e| format!("cannot restart the engine: {e}"))?;
        pid = child.id();
        block = attach(&work, &mut child, "engine-restart.log")?;
        // The restarted engine trades only once its start-up recovery is
        // over (the runtime's start returns, the engine says "trading");
        // then it must rest orders again before the trip.
        let log = work.join("engine-restart.log");
        let end = Instant::now() + Duration::from_secs(60);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(" trading; ")
        {
            if let Ok(Some(s)) = child.try_wait() {
                return Err(format!(
                    "the restarted engine exited at start-up ({s}); see {}",
                    log.display()
                ));
            }
            if Instant::now() > end {
                return Err(format!(
                    "the restarted engine did not start trading within 60 s; see {}",
                    log.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(v) = &venues {
            v.wait_for_new_orders_after_restart(&session)?;
        }
        trade(
            &block,
            &mut child,
            Duration::from_secs(1),
            args.min_open / 2,
            false,
            &log,
        )?;
        let recovery = std::fs::read_to_string(work.join("engine-restart.log"))
            .unwrap_or_default()
            .lines()
            .find(|l| l.contains("start-up recovery"))
            .map(|l| l.trim_start_matches("ks-engine: ").to_string())
            .unwrap_or_else(|| "no start-up recovery reported (see engine-restart.log)".into());
        say!(q, "   restart    engine pid {pid}: {recovery}");
    }
    let gs = || GatewaySnapshot::read(&block);
    if args.scenario == Scenario::StrategyPanic {
        let end = Instant::now() + Duration::from_secs(30);
        while block.state().mode() != Mode::Kill && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    say!(
        q,
        "2. trading    {:.1} s: {} orders sent, {} resting",
        started.elapsed().as_secs_f64(),
        gs().orders_sent,
        gs().open_orders
    );

    // 3. Trip.
    if matches!(args.scenario, Scenario::Sigstop | Scenario::Stuck) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGSTOP,
        );
        // The stop is asynchronous: wait until the kernel says stopped, as an
        // operator running the runbook's next command would find it.
        let end = Instant::now() + Duration::from_secs(60);
        while killswitch::control::proc_state(pid) != Some('T') && Instant::now() < end {
            std::thread::sleep(Duration::from_micros(100));
        }
        say!(
            q,
            "   SIGSTOP    sent to the engine (runbook step 1: `kill -STOP`)"
        );
    }
    if args.method != TripMethod::Cli && args.scenario != Scenario::StrategyPanic {
        let sig = match args.method {
            TripMethod::Sigterm => nix::sys::signal::Signal::SIGTERM,
            _ => nix::sys::signal::Signal::SIGUSR1,
        };
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
        // Delivery is asynchronous: wait for the handler's trip, so the
        // emergency below follows it instead of racing it.
        // A stopped engine cannot run its handler until continued.
        let stopped = matches!(args.scenario, Scenario::Sigstop | Scenario::Stuck);
        let end = Instant::now() + Duration::from_secs(60);
        while !stopped && block.state().mode() != Mode::Kill && Instant::now() < end {
            std::thread::sleep(Duration::from_micros(50));
        }
        if !stopped && block.state().mode() != Mode::Kill {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "the engine's {sig:?} handler did not trip KILL within 60 s (engine pid {pid}; see {})",
                work.join("engine.log").display()
            ));
        }
        say!(
            q,
            "   {sig:?}    sent to the engine (its handler trips KILL)"
        );
    }
    let mut em = Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
    em.arg("--dir")
        .arg(&work)
        .args(["--name", "drill", "emergency", "--json", "--reason"])
        .arg(format!("drill: scenario {:?}", args.scenario).to_lowercase());
    if args.scenario == Scenario::Stuck {
        em.arg("--no-continue");
    }
    say!(
        q,
        "3. emergency  `killswitch emergency --reason ...`{}",
        if args.scenario == Scenario::Stuck {
            " --no-continue"
        } else {
            ""
        }
    );
    let out = em
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run killswitch emergency: {e}"))?;
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        say!(q, "   {line}");
    }
    let emergency: Option<EmergencyReport> = serde_json::from_slice(&out.stdout).ok();
    let emergency_exit = out.status.code();

    // 4. The engine's end.
    let status = wait_child(&mut child, Duration::from_secs(30));
    let engine_exit = match status {
        Some(s) => s.to_string(),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            "did not exit within 30 s after the emergency: killed by the drill".into()
        }
    };
    let engine: Option<EngineReport> = std::fs::read(work.join("engine-report.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    say!(
        q,
        "4. engine     exited: {engine_exit}{}",
        engine
            .as_ref()
            .map(|r| format!(" — {}", r.verdict))
            .unwrap_or_default()
    );

    // The venues' own record: stopped first, so their logs are complete.
    let logs = match venues.as_mut() {
        Some(v) => Some(v.stop_and_read()?),
        None => None,
    };
    let mut wire_evidence = logs
        .as_ref()
        .map(|l| crate::drill_wire::evidence(l, &session, engine.as_ref()));
    let crash_check = match (&logs, wire_evidence.as_mut()) {
        (Some(l), Some(ev)) if args.scenario == Scenario::CrashRestart => {
            Some(crate::drill_wire::crash_restart_check(l, &session, ev))
        }
        _ => None,
    };
    if let Some(ev) = &wire_evidence {
        say!(
            q,
            "   venues     stopped; their audit logs: {}",
            ev.venues
                .iter()
                .map(|v| format!("{} {} lines", v.name, v.log_lines))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    // 5. Checks.
    let mut checks = Vec::new();
    let mut check = |name: &str, ok: bool, detail: String| {
        checks.push(Check {
            name: name.into(),
            ok,
            detail,
        })
    };
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok();
    check(
        "engine process exited and was reaped (no zombie)",
        status.is_some() && !zombie,
        engine_exit.clone(),
    );
    let expect_killed = matches!(args.scenario, Scenario::Stuck | Scenario::GatewayHang);
    match &engine {
        Some(r) => {
            let v = &r.verification;
            // The window runs from the gateway's acknowledgement until the
            // engine stops its strategies, which it does only once the gate
            // has refused an order from each of them after the drain: the
            // check holds real attempts, it cannot pass before they start.
            let refused: Vec<String> = r
                .strategies
                .iter()
                .map(|s| format!("{} {}", s.name, s.refused_after_drain))
                .collect();
            let every_strategy_refused =
                !r.strategies.is_empty() && r.strategies.iter().all(|s| s.refused_after_drain > 0);
            // In-process venues' logs (the engine counts them) plus the
            // venues' own audit logs over the wire (the drill reads them).
            let (after_ack, new_total) = match &wire_evidence {
                Some(ev) => (
                    v.new_orders_after_ack + ev.new_orders_after_ack,
                    v.new_orders_total + ev.new_orders_total,
                ),
                None => (v.new_orders_after_ack, v.new_orders_total),
            };
            check(
                "no new order reached a venue after the gateway acknowledged the kill, while every strategy kept trying",
                after_ack == 0 && v.ack_mono_ns != 0 && every_strategy_refused,
                format!(
                    "{} after the ack, of {} new orders in the venues' logs; refused by the gate after the drain: {}",
                    after_ack,
                    new_total,
                    if refused.is_empty() {
                        "no strategy ran".to_string()
                    } else {
                        refused.join(", ")
                    }
                ),
            );
            let d = r.drains.iter().rev().find(|d| d.global);
            check(
                "every order terminal or reported CancelUnknown",
                v.orders_unaccounted == 0,
                match d {
                    Some(d) => format!(
                        "{} open at the snapshot: {} canceled, {} filled, {} rejected, {} CancelUnknown; {} unaccounted",
                        d.open_at_snapshot, d.canceled, d.filled, d.rejected, d.unknown.len(), v.orders_unaccounted
                    ),
                    None => "no global drain ran".into(),
                },
            );
            let seq = d.and_then(|d| d.checkpoint_seq);
            check(
                "quick checkpoint written to the journal",
                seq.is_some(),
                format!("journal seq {seq:?}"),
            );
            // Stuck cancels and a dropped session leave orders nobody can
            // confirm: they must be reported by id, never called cancelled.
            // Over the wire the dropped session comes back, and the resend
            // brings the venue's cancel-on-disconnect cancels: nothing is
            // left unknown.
            let expect_unknown = args.scenario == Scenario::StuckCancels
                || (args.scenario == Scenario::VenueDisconnect && !wire);
            let reconnects: u64 = r
                .venues
                .iter()
                .filter_map(|v| v.wire.as_ref())
                .map(|w| w.logons.saturating_sub(1))
                .sum();
            let on_disconnect: u64 = r.venues.iter().map(|v| v.cancelled_on_disconnect).sum();
            let first_ids: String = d
                .map(|d| d.unknown.iter().take(3).map(|u| format!("; {u}")).collect())
                .unwrap_or_default();
            check(
                match args.scenario {
                    Scenario::StuckCancels => "stuck cancels reported as CancelUnknown, by id",
                    Scenario::VenueDisconnect if wire => {
                        "the dropped venue session came back; orders that may have been lost in transit at the drop are reported CancelUnknown, by id (the venues' logs below show none working)"
                    }
                    Scenario::VenueDisconnect => {
                        "orders on the dropped venue session reported as CancelUnknown, by id"
                    }
                    _ => "no order left in CancelUnknown",
                },
                if args.scenario == Scenario::VenueDisconnect && wire {
                    reconnects > 0
                } else {
                    (v.orders_unknown > 0) == expect_unknown
                },
                format!(
                    "{} CancelUnknown{first_ids}{}{}",
                    v.orders_unknown,
                    if reconnects > 0 {
                        format!("; {reconnects} reconnect(s) over the wire")
                    } else {
                        String::new()
                    },
                    if on_disconnect > 0 {
                        format!("; the venue's cancel-on-disconnect removed {on_disconnect} of ours (reconciliation will show them gone)")
                    } else {
                        String::new()
                    }
                ),
            );
        }
        None => check(
            "engine report present (absent only when the engine was killed)",
            expect_killed,
            if expect_killed {
                "engine was killed: the journal below is the record".into()
            } else {
                "missing".into()
            },
        ),
    }
    if args.scenario == Scenario::StuckCancels {
        check(
            "`killswitch emergency` exited 11 (orders unknown)",
            emergency_exit == Some(11),
            format!("exit {emergency_exit:?}"),
        );
    }
    if expect_killed {
        check(
            "emergency escalated (SIGTERM, SIGKILL) and said so",
            emergency
                .as_ref()
                .is_some_and(|e| e.signals_sent.iter().any(|s| s == "SIGKILL"))
                && emergency_exit == Some(10),
            emergency
                .as_ref()
                .map(|e| e.verdict.clone())
                .unwrap_or_default(),
        );
    }

    // The journal: rebuild, compare, checkpoint, validate.
    let jdir = work.join("journal");
    let rebuilt = journal::rebuild(&jdir).map_err(|e| e.to_string())?;
    if let Some(r) = &engine {
        let mut want: Vec<(u64, String)> = r.orders_not_terminal.clone();
        want.sort();
        // The journal's open orders come in slot order, not id order.
        let mut got: Vec<(u64, String)> = rebuilt
            .state
            .open_orders
            .values()
            .map(|o| (o.id.0, format!("{:?}", o.state)))
            .collect();
        got.sort();
        let want_pos: Vec<((u16, u16, u16), i64)> =
            r.positions.iter().map(|p| (p.key, p.qty)).collect();
        let got_pos: Vec<((u16, u16, u16), i64)> = rebuilt
            .state
            .positions
            .iter()
            .filter(|(_, p)| p.qty.0 != 0)
            .map(|(k, p)| ((k.venue, k.instrument, k.account), p.qty.0))
            .collect();
        check(
            "journal alone rebuilds the engine's final orders and positions",
            got == want && got_pos == want_pos && rebuilt.issues.is_empty(),
            format!(
                "{} records, {} not-terminal orders (engine {}), {} positions (engine {}), {} replay issues",
                rebuilt.scan.records,
                got.len(),
                want.len(),
                got_pos.len(),
                want_pos.len(),
                rebuilt.issues.len()
            ),
        );
    } else {
        check(
            "journal recovers after the kill",
            rebuilt.scan.records > 0,
            format!(
                "{} records, {} torn bytes dropped, {} orders still open in the journal: reconcile these with the venues",
                rebuilt.scan.records,
                rebuilt.scan.dropped.len(),
                rebuilt.state.open_orders.len()
            ),
        );
    }
    let wire_checks = wire_evidence
        .as_ref()
        .map(|ev| crate::drill_wire::checks(ev, engine.as_ref(), args.scenario))
        .unwrap_or_default();
    for c in crash_check.into_iter().chain(wire_checks) {
        check(&c.name, c.ok, c.detail);
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let ckpt_dir = work.join("checkpoints");
    let created = Command::new(&exe)
        .args([
            "checkpoint",
            "create",
            "--level",
            "complete",
            "--verify",
            "--journal",
        ])
        .arg(&jdir)
        .arg("--path")
        .arg(&ckpt_dir)
        .output()
        .map_err(|e| e.to_string())?;
    let latest = ckpt_dir.join("latest.ckpt");
    let validated = Command::new(&exe)
        .args(["checkpoint", "validate"])
        .arg(&latest)
        .output()
        .map_err(|e| e.to_string())?;
    let vtext = String::from_utf8_lossy(&validated.stdout).to_string();
    let checkpoint = std::fs::canonicalize(&latest)
        .ok()
        .map(|p| p.display().to_string());
    check(
        "complete checkpoint from the journal: Checkpoint valid ✓",
        created.status.success()
            && validated.status.success()
            && vtext.contains("Checkpoint valid ✓"),
        format!(
            "{} — {}",
            checkpoint.clone().unwrap_or_else(|| "not written".into()),
            vtext.lines().next().unwrap_or("").trim()
        ),
    );
    let total_ns = emergency.as_ref().map(|e| e.total_ns).unwrap_or(u64::MAX);
    check(
        "emergency finished within the runbook's 30 s",
        total_ns < 30_000_000_000,
        format!(
            "{} from the trip to the end of `killswitch emergency`",
            format_duration_ns(total_ns)
        ),
    );

    let pass = checks.iter().all(|c| c.ok);
    say!(q, "5. checks");
    for c in &checks {
        say!(
            q,
            "   [{}] {}: {}",
            if c.ok { "✓" } else { "✗" },
            c.name,
            c.detail
        );
    }
    if let Some(r) = &engine {
        if !r.positions.is_empty() {
            say!(q, "   positions at the stop (keep them or flatten them by hand, as the runbook says):");
            for p in &r.positions {
                say!(
                    q,
                    "     {:<6} {:<8} {:<7} {:>12}",
                    p.venue,
                    p.instrument,
                    p.account,
                    p.qty_text
                );
            }
        }
    }
    say!(q, "VERDICT: {}", if pass { "PASS" } else { "FAIL" });
    let report = DrillReport {
        scenario: args.scenario,
        method: args.method,
        venues: args.venues,
        work_dir: work.display().to_string(),
        pass,
        checks,
        emergency,
        emergency_exit,
        engine,
        engine_exit,
        checkpoint,
        wire: wire_evidence,
        crashed_engine_exit,
    };
    if pass && !args.keep && args.work_dir.is_none() {
        let _ = std::fs::remove_dir_all(&work);
    } else {
        say!(q, "work dir kept: {}", work.display());
    }
    Ok(report)
}
