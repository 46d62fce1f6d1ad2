//! `cross-process`: a trip in this process against a watcher process
//! spinning on the state word on another core, beside the baseline of a
//! bare shared cache line read in the same loop; and `watch`, that watcher.

use std::io::{Read, Write};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use killswitch::clock::mono_ns;
use killswitch::control::{ControlBlock, EngineOwner, Mode, Operator, Source};

use super::{forced_reset, load_average, pin, print_percentiles};

/// How the watcher process spins.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReaderLoop {
    /// `pause` between reads.
    Pause,
    /// Back-to-back reads.
    Tight,
}

/// The file beside the control block holding the baseline's cache line.
const BASELINE_FILE: &str = "bare-line.lat";

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
pub(crate) fn watch(dir: &std::path::Path, core: usize, reader: ReaderLoop) -> ExitCode {
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

pub(crate) fn cross_process(
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
    let reset = forced_reset();
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
