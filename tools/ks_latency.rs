//! `ks-latency`: latency of the kill paths across real processes, printed as
//! hdrhistogram percentiles.
//!
//! `ks-latency cross-process` — trip in this process (`trip_global`, the
//! same call the CLI and the signal handler make) and time until a watcher
//! process, spinning on the state word on another core, sees it.

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use killswitch::clock::mono_ns;
use killswitch::control::{ControlBlock, Mode, ResetRequest, Source};

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
    },
    /// (internal) The watcher side of `cross-process`.
    #[command(hide = true)]
    Watch {
        /// Control-file directory.
        dir: PathBuf,
        /// Core to pin to.
        core: usize,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Cmd::CrossProcess { iterations, core } => match cross_process(iterations, core) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ks-latency: error: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Watch { dir, core } => watch(&dir, core),
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

/// Spins on the state word; on every generation change it publishes the
/// time it saw it in the drain-status fields (as an engine's drain would).
/// Runs until the parent kills it.
fn watch(dir: &std::path::Path, core: usize) -> ExitCode {
    pin(core);
    let Ok(block) = ControlBlock::open(dir, "lat") else {
        return ExitCode::FAILURE;
    };
    let d = block.drain_status();
    let mut last = block.state().generation();
    d.generation.store(last, Ordering::Release);
    loop {
        let w = block.state();
        if w.generation() != last {
            let now = mono_ns();
            last = w.generation();
            d.t_trip_seen.store(now, Ordering::Relaxed);
            d.generation.store(last, Ordering::Release);
        }
        std::hint::spin_loop();
    }
}

fn cross_process(iterations: u64, core: usize) -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("ks-latency-{}", std::process::id()));
    let block = ControlBlock::create(&dir, "lat")?;
    block.attach_owner()?;
    let pinned = pin(core);
    let mut child = Command::new(std::env::current_exe()?)
        .arg("watch")
        .arg(&dir)
        .arg((core + 1).to_string())
        .stdout(Stdio::null())
        .spawn()?;
    let d = block.drain_status();
    let wait_gen = |g: u64| -> Result<(), String> {
        let end = Instant::now() + Duration::from_secs(5);
        while d.generation.load(Ordering::Acquire) != g {
            if Instant::now() > end {
                return Err(format!("watcher did not see generation {g} within 5 s"));
            }
            std::hint::spin_loop();
        }
        Ok(())
    };
    wait_gen(block.state().generation())?;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let reset = ResetRequest {
        source: Source::Api,
        reason: "ks-latency".into(),
        force: true,
    };
    let warmup = iterations / 10;
    for i in 0..iterations + warmup {
        let t0 = mono_ns();
        let out = block.trip_global(Mode::Kill, Source::Api, "ks-latency");
        let g = out.transition.current().generation();
        wait_gen(g)?;
        let seen = d.t_trip_seen.load(Ordering::Acquire);
        if i >= warmup {
            hist.record(seen.saturating_sub(t0).max(1))?;
        }
        let r = block.reset(&reset)?;
        wait_gen(r.transition.current().generation())?;
    }
    block.detach_owner();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "trip (trip_global in pid {}) -> seen by a watcher process spinning on the state word",
        std::process::id()
    );
    println!(
        "cores: tripper {core}, watcher {} ({}); {} samples after {warmup} warm-up",
        core + 1,
        if pinned {
            "pinned"
        } else {
            "NOT pinned: affinity unavailable"
        },
        hist.len()
    );
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
