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

use std::io::{BufRead, Read, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod planned;

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use killswitch::clock::mono_ns;
use killswitch::control::{
    ControlBlock, EngineOwner, Mode, Operator, ResetRequest, Source, Tripper,
};

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

/// How the watcher process spins.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ReaderLoop {
    /// `pause` between reads.
    Pause,
    /// Back-to-back reads.
    Tight,
}

/// The file beside the control block holding the baseline's cache line.
const BASELINE_FILE: &str = "bare-line.lat";

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

/// A 4 KiB shared mapping of `path` (created by the tripping process) whose
/// first word is the baseline's cache line: nothing else lives on its page.
fn bare_line(path: &std::path::Path) -> std::io::Result<memmap2::MmapMut> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    f.set_len(4096)?;
    // SAFETY: a file of our own in our own directory, mapped shared; it is
    // only ever accessed through `AtomicU64` (see `line_word`).
    unsafe { memmap2::MmapMut::map_mut(&f) }
}

/// The baseline's word: the first 8 bytes of the mapping.
fn line_word(map: &memmap2::MmapMut) -> &AtomicU64 {
    // SAFETY: the mapping is 4096 bytes and page-aligned (so aligned for an
    // AtomicU64), outlives the returned reference, and both processes only
    // access it atomically.
    unsafe { &*(map.as_ptr() as *const AtomicU64) }
}

/// What the watcher saw change.
const SAW_STATE: u64 = 0;
const SAW_LINE: u64 = 1;

/// Spins on the state word and on the baseline's cache line, reading both
/// in the same loop (so both measurements pay the same loop); on every
/// change it writes what changed, the new value and the time it saw it
/// (24 bytes, little-endian) to stdout. The time is taken in the spin loop,
/// before the write, so the pipe's own latency is not in the measured
/// figure. Runs until the parent kills it.
fn watch(dir: &std::path::Path, core: usize, reader: ReaderLoop) -> ExitCode {
    pin(core);
    let Ok(block) = ControlBlock::open(dir, "lat") else {
        return ExitCode::FAILURE;
    };
    let Ok(map) = bare_line(&dir.join(BASELINE_FILE)) else {
        return ExitCode::FAILURE;
    };
    let line = line_word(&map);
    let gate = killswitch::gate::Gate::new(Arc::new(block));
    let mut out = std::io::stdout().lock();
    let mut last = gate.state().generation();
    let mut last_line = line.load(Ordering::Acquire);
    if tell(&mut out, SAW_STATE, last, mono_ns()).is_err() {
        return ExitCode::FAILURE;
    }
    loop {
        let w = gate.state().generation();
        let l = line.load(Ordering::Acquire);
        if w != last {
            let now = mono_ns();
            last = w;
            if tell(&mut out, SAW_STATE, last, now).is_err() {
                return ExitCode::FAILURE;
            }
        }
        if l != last_line {
            let now = mono_ns();
            last_line = l;
            if tell(&mut out, SAW_LINE, l, now).is_err() {
                return ExitCode::FAILURE;
            }
        }
        if reader == ReaderLoop::Pause {
            std::hint::spin_loop();
        }
    }
}

fn tell(out: &mut impl Write, what: u64, value: u64, mono_ns: u64) -> std::io::Result<()> {
    let mut b = [0u8; 24];
    b[..8].copy_from_slice(&what.to_le_bytes());
    b[8..16].copy_from_slice(&value.to_le_bytes());
    b[16..].copy_from_slice(&mono_ns.to_le_bytes());
    out.write_all(&b)?;
    out.flush()
}

/// The next (what, value, time seen) the watcher wrote. The pipe is
/// non-blocking and read in a spin: the tripping process never sleeps
/// between measurements, so another process cannot take its core and
/// evict its caches while it waits (on this shared machine that made the
/// trip's own code path, not the transfer, the larger part of the figure).
fn heard(from: &mut impl Read) -> Result<(u64, u64, u64), String> {
    let mut b = [0u8; 24];
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while got < b.len() {
        match from.read(&mut b[got..]) {
            Ok(0) => return Err("the watcher process stopped talking".into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return Err("the watcher process said nothing for 10 s".into());
                }
                std::hint::spin_loop();
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("the watcher process stopped talking: {e}")),
        }
    }
    let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    Ok((word(0), word(8), word(16)))
}

fn cross_process(
    iterations: u64,
    core: usize,
    dir: Option<std::path::PathBuf>,
    reader: ReaderLoop,
    hgrm: Option<&std::path::Path>,
) -> Result<(), Box<dyn std::error::Error>> {
    let given = dir.is_some();
    let block = match dir {
        Some(d) => ControlBlock::open_or_create(&d, "lat")?,
        None => ControlBlock::create(
            &std::env::temp_dir().join(format!("ks-latency-{}", std::process::id())),
            "lat",
        )?,
    };
    let dir = block
        .path()
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default();
    let map = bare_line(&dir.join(BASELINE_FILE))?;
    let line = line_word(&map);
    let block = Arc::new(block);
    let owner = EngineOwner::attach(block.clone())?;
    let operator = Operator::new(block.clone());
    // Spawn before pinning: a child inherits the parent's affinity mask,
    // and `core_affinity` only offers the cores inside it.
    let mut child = Command::new(std::env::current_exe()?)
        .arg("watch")
        .arg(&dir)
        .arg((core + 1).to_string())
        .arg("--reader")
        .arg(match reader {
            ReaderLoop::Pause => "pause",
            ReaderLoop::Tight => "tight",
        })
        .stdout(Stdio::piped())
        .spawn()?;
    let mut from_watcher = child.stdout.take().ok_or("no pipe from the watcher")?;
    {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        use std::os::fd::AsRawFd;
        let fd = from_watcher.as_raw_fd();
        let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
        fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    }
    let pinned = pin(core);
    let wait_for =
        |from: &mut std::process::ChildStdout, what: u64, v: u64| -> Result<u64, String> {
            loop {
                let (seen_what, seen_v, seen_at) = heard(from)?;
                if seen_what == what && seen_v == v {
                    return Ok(seen_at);
                }
            }
        };
    wait_for(&mut from_watcher, SAW_STATE, block.state().generation())?;
    let new_hist = || Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3);
    let (mut trips, mut stores, mut cas) = (new_hist()?, new_hist()?, new_hist()?);
    let mut stamped = new_hist()?;
    let mut probed = new_hist()?;
    let reset = ResetRequest {
        source: Source::Api,
        reason: "ks-latency".into(),
        force: true,
        expected_generation: None,
    };
    let warmup = iterations / 10;
    let tripper = operator.tripper();
    let mut value = line.load(Ordering::Acquire);
    // The three paths take turns, so each sees the same machine.
    for i in 0..iterations + warmup {
        let measured = i >= warmup;
        // Baseline: a bare cache-line transfer (one store, Release).
        value += 1;
        let t0 = mono_ns();
        line.store(value, Ordering::Release);
        let seen = wait_for(&mut from_watcher, SAW_LINE, value)?;
        if measured {
            stores.record(seen.saturating_sub(t0).max(1))?;
        }
        // The state word's own transition without the trip's stamps and
        // audit: a load and a compare-and-swap (AcqRel), as `trip_word`.
        let t0 = mono_ns();
        let cur = line.load(Ordering::Acquire);
        let _ = line.compare_exchange(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire);
        value = cur + 1;
        let seen = wait_for(&mut from_watcher, SAW_LINE, value)?;
        if measured {
            cas.record(seen.saturating_sub(t0).max(1))?;
        }
        // The same, but the line is first taken for writing by a
        // compare-and-swap that is expected to fail (it returns the current
        // value like a load, but asks for the line exclusively): the second
        // compare-and-swap then finds the line in its own cache instead of
        // upgrading a shared copy, one transfer instead of two.
        let t0 = mono_ns();
        let cur =
            match line.compare_exchange(u64::MAX, u64::MAX, Ordering::AcqRel, Ordering::Acquire) {
                Ok(v) | Err(v) => v,
            };
        let _ = line.compare_exchange(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire);
        value = cur + 1;
        let seen = wait_for(&mut from_watcher, SAW_LINE, value)?;
        if measured {
            probed.record(seen.saturating_sub(t0).max(1))?;
        }
        // The same with the two clock reads the trip took before its
        // compare-and-swap until issue 16 (monotonic and wall).
        let t0 = mono_ns();
        std::hint::black_box((mono_ns(), killswitch::clock::wall_ns()));
        let cur = line.load(Ordering::Acquire);
        let _ = line.compare_exchange(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire);
        value = cur + 1;
        let seen = wait_for(&mut from_watcher, SAW_LINE, value)?;
        if measured {
            stamped.record(seen.saturating_sub(t0).max(1))?;
        }
        // The trip.
        let t0 = mono_ns();
        let out = tripper.trip_global(Mode::Kill, Source::Api, "ks-latency");
        let g = out.transition.current().generation();
        let seen = wait_for(&mut from_watcher, SAW_STATE, g)?;
        if measured {
            trips.record(seen.saturating_sub(t0).max(1))?;
        }
        let r = operator.reset(&reset)?;
        wait_for(
            &mut from_watcher,
            SAW_STATE,
            r.transition.current().generation(),
        )?;
    }
    drop(owner);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(dir.join(BASELINE_FILE));
    if !given {
        let _ = std::fs::remove_dir_all(&dir);
    }
    println!(
        "trip (trip_global in pid {}) -> seen by a watcher process spinning on the state word",
        std::process::id()
    );
    println!(
        "cores: tripper {core}, watcher {} ({}); watcher loop: {}; {} samples each after {warmup} warm-up; load average {}",
        core + 1,
        if pinned {
            "pinned"
        } else {
            "NOT pinned: affinity unavailable"
        },
        match reader {
            ReaderLoop::Pause => "load, load, pause",
            ReaderLoop::Tight => "load, load (no pause)",
        },
        trips.len(),
        load_average()
    );
    let rows = [
        (
            "baseline: bare cache-line transfer (store)",
            "bare-line-store",
            &stores,
        ),
        (
            "load + compare-and-swap of a line (as trip_word)",
            "line-load-cas",
            &cas,
        ),
        (
            "failing CAS (line taken exclusive) + CAS",
            "line-probe-cas",
            &probed,
        ),
        (
            "2 clock reads + load + CAS (the old trip's order)",
            "line-stamps-cas",
            &stamped,
        ),
        ("trip_global -> seen", "trip-seen", &trips),
    ];
    for (name, _, h) in rows {
        print!("{name:<52} ");
        print_percentiles(h);
    }
    let p = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64;
    println!(
        "ratio trip/bare line: p50 {:.2}x  p99 {:.2}x",
        p(&trips, 0.5) / p(&stores, 0.5),
        p(&trips, 0.99) / p(&stores, 0.99)
    );
    if let Some(d) = hgrm {
        for (_, file, h) in rows {
            killswitch_tools::hgrm::write(&d.join(format!("{file}.hgrm")), h, 1000.0)?;
        }
    }
    Ok(())
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
    let reset = ResetRequest {
        source: Source::Api,
        reason: "ks-latency".into(),
        force: true,
        expected_generation: None,
    };
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
    let reset = ResetRequest {
        source: Source::Api,
        reason: "ks-latency".into(),
        force: true,
        expected_generation: None,
    };
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

fn emergency(
    runs: u32,
    hgrm: Option<&std::path::Path>,
    venues: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let exe = killswitch_exe()?;
    let mut rows = Vec::new();
    let mut split = Vec::new();
    for method in ["cli", "sigterm"] {
        let mut drain_done = Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3)?;
        let mut last_ack = Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3)?;
        let mut to_exit = Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3)?;
        let mut open = Vec::new();
        let mut phases: Vec<Histogram<u64>> = (0..PHASES.len())
            .map(|_| Histogram::new_with_bounds(1, 600_000_000_000, 3))
            .collect::<Result<_, _>>()?;
        for _ in 0..runs {
            let out = Command::new(&exe)
                .args([
                    "drill",
                    "--json",
                    "--trade-for",
                    "2s",
                    "--min-open",
                    "10000",
                    "--method",
                    method,
                    "--venues",
                    venues,
                ])
                .stderr(Stdio::null())
                .output()?;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            if v["pass"] != true {
                return Err(format!("a drill failed: {}", v["checks"]).into());
            }
            let d = v["engine"]["drains"]
                .as_array()
                .and_then(|a| a.last())
                .ok_or("no drain in the report")?;
            let t = |i: usize| d["timings_ns"][i].as_u64().unwrap_or(0);
            // timings: trip, seen, ack, first cancel, last enqueued, last answer, checkpoint, done.
            last_ack.record(t(5).saturating_sub(t(0)).max(1))?;
            drain_done.record(t(7).saturating_sub(t(0)).max(1))?;
            to_exit.record(v["emergency"]["total_ns"].as_u64().unwrap_or(0).max(1))?;
            open.push(d["open_at_snapshot"].as_u64().unwrap_or(0));
            for (h, (_, from, to)) in phases.iter_mut().zip(PHASES) {
                h.record(t(to).saturating_sub(t(from)).max(1))?;
            }
        }
        rows.push((method, last_ack, drain_done, to_exit, open));
        split.push((method, phases));
    }
    if let Some(d) = hgrm {
        for (method, a, done, e, _) in &rows {
            for (what, h) in [("last-ack", a), ("drain-done", done), ("exit", e)] {
                killswitch_tools::hgrm::write(&d.join(format!("{method}-{what}.hgrm")), h, 1000.0)?;
            }
        }
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1e6;
    println!(
        "emergency stop of the reference engine ({runs} runs per method, 2 s of trading each, venues {venues}), load average {}",
        load_average()
    );
    println!(
        "{:<34} {:>22} {:>26} {:>22}",
        "trip by", "trip -> last cancel ack", "-> quick checkpoint, done", "trip -> process exit"
    );
    for (method, a, d, e, open) in &rows {
        let name = match *method {
            "cli" => "killswitch emergency",
            _ => "SIGTERM, wait for exit (runbook)",
        };
        println!(
            "{name:<34} p50 {:>7.2} ms max {:>7.2} p50 {:>9.2} ms max {:>7.2} p50 {:>7.2} ms max {:>7.2}   open orders {:?}",
            ms(a, 0.5),
            a.max() as f64 / 1e6,
            ms(d, 0.5),
            d.max() as f64 / 1e6,
            ms(e, 0.5),
            e.max() as f64 / 1e6,
            open
        );
    }
    println!("phase split (drain timings; p50 / max, ms):");
    for (method, phases) in &split {
        let cells: Vec<String> = PHASES
            .iter()
            .zip(phases)
            .map(|((name, _, _), h)| {
                format!("{name} {:.3} / {:.3}", ms(h, 0.5), h.max() as f64 / 1e6)
            })
            .collect();
        println!("  {method:<8} {}", cells.join(" | "));
    }
    Ok(())
}

/// The emergency's phases, as (name, from, to) indexes into a drain
/// report's `timings_ns`: trip, seen, gateway ack, first cancel enqueued,
/// last cancel enqueued, last answer, checkpoint done, drain done.
const PHASES: [(&str, usize, usize); 6] = [
    ("trip->ack", 0, 2),
    ("ack->first cancel (snapshot)", 2, 3),
    ("trip->first cancel", 0, 3),
    ("cancels out", 3, 4),
    ("answers in", 4, 5),
    ("checkpoint", 5, 6),
];

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
