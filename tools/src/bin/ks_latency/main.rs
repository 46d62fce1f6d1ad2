//! `ks-latency`: latency of the kill paths across real processes, printed as
//! hdrhistogram percentiles.
//!
//! * `cross-process` — trip in this process (`trip_global`, the same call the
//!   CLI and the signal handler make) and time until a watcher process,
//!   spinning on the state word on another core, sees it.
//! * `signal` — `kill(SIGUSR1)` to a process with killswitch's handlers
//!   installed, until the state word (read here) says KILL.
//! * `cli` — spawn `killswitch trip`, until the state word says KILL: what
//!   an operator's command costs, process start included.
//! * `emergency` — whole emergency stops of the reference engine with about
//!   10,000 resting orders (`killswitch drill`), tripped by
//!   `killswitch emergency`, beside the runbook's path: `SIGTERM` and wait
//!   for the process to exit. `--venues wire` (default, as the drill's) or
//!   `in-process`.
//! * `planned` — whole planned shutdowns of the reference engine with at
//!   least 10,000 resting orders and conservative flattening (`killswitch
//!   drill --planned`): the orchestrator's work per phase beside the time
//!   it spends in configured waits ([`planned`]).

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod cross_process;
mod emergency;
mod planned;

use clap::{Parser, Subcommand};
use cross_process::{cross_process, watch, ReaderLoop};
use emergency::emergency;
use hdrhistogram::Histogram;
use killswitch::clock::mono_ns;
use killswitch::control::{ControlBlock, Mode, Operator, ResetRequest, Source, Tripper};

#[derive(Parser, Debug)]
#[command(
    name = "ks-latency",
    about = "Kill-path latency across processes (hdrhistogram percentiles)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Trip in this process -> seen by a watcher process spinning on another core.
    CrossProcess {
        /// Measured trips.
        #[arg(long, default_value_t = 10_000)]
        iterations: u64,
        /// Core for this (tripping) process; the watcher takes the next one.
        #[arg(long, default_value_t = 0)]
        core: usize,
        /// Control-block directory (the block is `killswitch.lat`, opened or
        /// created), so another process can attach to it (BENCHMARKS.md
        /// floods the admin endpoint serving it); default: a new temp dir.
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        /// The watcher's loop: `pause` (a `pause` instruction between
        /// reads, as a polite spinner does) or `tight` (back-to-back loads,
        /// as an order loop that checks the gate between orders).
        #[arg(long, value_enum, default_value_t = ReaderLoop::Pause)]
        reader: ReaderLoop,
        /// Write each path's HdrHistogram percentile distribution
        /// (`.hgrm`, the format HdrHistogram's plotters read) into this
        /// directory.
        #[arg(long)]
        hgrm: Option<PathBuf>,
    },
    /// kill(SIGUSR1) -> state word set by the handler in the target process.
    Signal {
        /// Measured signals.
        #[arg(long, default_value_t = 2000)]
        iterations: u64,
        /// Core for this process; the target takes the next one.
        #[arg(long, default_value_t = 0)]
        core: usize,
    },
    /// `killswitch trip` process -> state word set.
    Cli {
        /// Measured trips.
        #[arg(long, default_value_t = 200)]
        iterations: u64,
    },
    /// Emergency end to end on the reference engine, and the SIGTERM baseline.
    Emergency {
        /// Runs of each method.
        #[arg(long, default_value_t = 5)]
        runs: u32,
        /// Write each method's percentile distributions (`.hgrm`) into
        /// this directory.
        #[arg(long)]
        hgrm: Option<PathBuf>,
        /// Where the drill's venues run: `wire` (ks-venue processes over
        /// FIX, the drill's default) or `in-process`.
        #[arg(long, default_value = "wire")]
        venues: String,
    },
    /// Planned shutdown of the reference engine: work per phase beside the configured waits.
    Planned {
        /// Runs.
        #[arg(long, default_value_t = 5)]
        runs: u32,
        /// Orders resting when the shutdown is asked for, at least.
        #[arg(long, default_value_t = 10_000)]
        min_open: u64,
        /// Where the drill's venues run: `wire` or `in-process`.
        #[arg(long, default_value = "wire")]
        venues: String,
        /// Write the work and wait distributions (`.hgrm`) into this directory.
        #[arg(long)]
        hgrm: Option<PathBuf>,
    },
    /// (internal) A process with the signal handlers installed, idle.
    #[command(hide = true)]
    SignalTarget {
        /// Control-file directory.
        dir: PathBuf,
        /// Core to pin to.
        core: usize,
    },
    /// (internal) The watcher side of `cross-process`.
    #[command(hide = true)]
    Watch {
        /// Control-file directory.
        dir: PathBuf,
        /// Core to pin to.
        core: usize,
        /// The loop.
        #[arg(long, value_enum, default_value_t = ReaderLoop::Pause)]
        reader: ReaderLoop,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Cmd::CrossProcess {
            iterations,
            core,
            dir,
            reader,
            hgrm,
        } => match cross_process(iterations, core, dir, reader, hgrm.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ks-latency: error: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Watch { dir, core, reader } => watch(&dir, core, reader),
        Cmd::SignalTarget { dir, core } => signal_target(&dir, core),
        Cmd::Signal { iterations, core } => report(signal(iterations, core)),
        Cmd::Cli { iterations } => report(cli(iterations)),
        Cmd::Emergency { runs, hgrm, venues } => report(emergency(runs, hgrm.as_deref(), &venues)),
        Cmd::Planned {
            runs,
            min_open,
            venues,
            hgrm,
        } => report(planned::run(runs, min_open, &venues, hgrm.as_deref())),
    }
}

/// Pins the calling thread; says so when it cannot.
fn pin(core: usize) -> bool {
    let ids = core_affinity::get_core_ids().unwrap_or_default();
    match ids.get(core % ids.len().max(1)) {
        Some(id) => core_affinity::set_for_current(*id),
        None => false,
    }
}

/// The 1-minute load average, as `/proc/loadavg` says.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

fn report(r: Result<(), Box<dyn std::error::Error>>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ks-latency: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Installs the handlers and idles until killed.
fn signal_target(dir: &std::path::Path, core: usize) -> ExitCode {
    pin(core);
    let Ok(block) = ControlBlock::open(dir, "lat") else {
        return ExitCode::FAILURE;
    };
    let tripper = Tripper::new(Arc::new(block));
    let Ok(_guard) =
        killswitch::signals::install(&tripper, &killswitch::signals::SignalConfig::default())
    else {
        return ExitCode::FAILURE;
    };
    // Ready: the parent waits for this line.
    println!("ready");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The forced reset that rearms the block between two measured trips.
fn forced_reset() -> ResetRequest {
    ResetRequest {
        source: Source::Api,
        reason: "ks-latency".into(),
        force: true,
        expected_generation: None,
    }
}

fn temp_block() -> Result<(PathBuf, Operator), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("ks-latency-{}", std::process::id()));
    let block = ControlBlock::create(&dir, "lat")?;
    Ok((dir, Operator::new(Arc::new(block))))
}

fn wait_kill(block: &Operator) -> Result<u64, String> {
    let end = Instant::now() + Duration::from_secs(5);
    while block.block().state().mode() != Mode::Kill {
        if Instant::now() > end {
            return Err("the state word did not show KILL within 5 s".into());
        }
        std::hint::spin_loop();
    }
    Ok(mono_ns())
}

fn signal(iterations: u64, core: usize) -> Result<(), Box<dyn std::error::Error>> {
    let (dir, block) = temp_block()?;
    let mut child = Command::new(std::env::current_exe()?)
        .arg("signal-target")
        .arg(&dir)
        .arg((core + 1).to_string())
        .stdout(Stdio::piped())
        .spawn()?;
    let pinned = pin(core);
    // The target says "ready" once its handlers are installed (a read with
    // no deadline of its own: the target either says it or exits, which
    // ends the read).
    let mut line = String::new();
    let said = child
        .stdout
        .take()
        .map(|o| std::io::BufReader::new(o).read_line(&mut line));
    if !matches!(said, Some(Ok(n)) if n > 0) || line.trim() != "ready" {
        let _ = child.kill();
        let _ = child.wait();
        return Err("signal target did not start".into());
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let reset = forced_reset();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let warmup = iterations / 10;
    for i in 0..iterations + warmup {
        block.reset(&reset)?;
        let t0 = mono_ns();
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR1)?;
        let t1 = wait_kill(&block)?;
        if i >= warmup {
            hist.record((t1 - t0).max(1))?;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "kill(SIGUSR1) in this process -> KILL in the state word, set by the handler in pid {}",
        pid
    );
    println!(
        "cores: sender {core}, target {} ({}); {} samples",
        core + 1,
        if pinned { "pinned" } else { "NOT pinned" },
        hist.len()
    );
    print_percentiles(&hist);
    Ok(())
}

/// The `killswitch` binary next to this one.
fn killswitch_exe() -> Result<PathBuf, Box<dyn std::error::Error>> {
    let exe = std::env::current_exe()?.with_file_name("killswitch");
    if !exe.exists() {
        return Err(format!(
            "{} not found: build it (`cargo build --release`)",
            exe.display()
        )
        .into());
    }
    Ok(exe)
}

fn cli(iterations: u64) -> Result<(), Box<dyn std::error::Error>> {
    let (dir, block) = temp_block()?;
    let exe = killswitch_exe()?;
    let reset = forced_reset();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    for _ in 0..iterations {
        block.reset(&reset)?;
        let t0 = mono_ns();
        let mut child = Command::new(&exe)
            .arg("--dir")
            .arg(&dir)
            .args(["--name", "lat", "trip", "--reason", "ks-latency cli"])
            .stdout(Stdio::null())
            .spawn()?;
        let t1 = wait_kill(&block)?;
        hist.record((t1 - t0).max(1))?;
        child.wait()?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("spawn `killswitch trip` -> KILL in the state word (process start, open, map, trip)");
    println!("{} samples", hist.len());
    print_percentiles(&hist);
    Ok(())
}

fn print_percentiles(h: &Histogram<u64>) {
    let us = |v: u64| v as f64 / 1000.0;
    println!(
        "p50 {:.2} µs  p90 {:.2} µs  p99 {:.2} µs  p99.9 {:.2} µs  max {:.2} µs",
        us(h.value_at_quantile(0.50)),
        us(h.value_at_quantile(0.90)),
        us(h.value_at_quantile(0.99)),
        us(h.value_at_quantile(0.999)),
        us(h.max())
    );
}
