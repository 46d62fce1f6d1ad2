//! `ks-journal-latency`: what the journal and checkpoints cost, as
//! hdrhistogram percentiles, with the baselines measured in the same run:
//!
//! * append of 64 B and 256 B records (and an 88 B order event) vs `write` +
//!   `fdatasync` per record;
//! * quick checkpoint with 10 / 1,000 / 10,000 open orders vs a `serde_json`
//!   dump of the same state to a file (no fsync either; the criterion bench
//!   `benches/journal.rs` adds `postcard`, a dev-dependency);
//! * complete checkpoint (fsync, rename, directory fsync) + verify;
//! * recovery of journals of `--recovery-mib` MiB each (64,256,1024 by
//!   default) written the way an engine writes one: orders opened, acked
//!   and cancelled with about 10,000 open at any time, log lines, and a
//!   quick checkpoint every `--snapshot-mib` MiB (32 by default). Measured:
//!   the full scan (every CRC), the full rebuild (every record replayed),
//!   and what an engine start pays: the writer's open (tail recovery) plus
//!   the rebuild from the newest snapshot. Page cache warm, or cold with
//!   `--cold` (root: drops the page cache before each measurement).
//!
//! Every figure is measured here, on this machine; nothing is assumed.
//! Usage: `ks-journal-latency [--dir DIR] [--appends N] [--recovery-mib M,M,..]
//! [--snapshot-mib N] [--cold] [--only appends|quick|complete|recovery]`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use hdrhistogram::Histogram;
use killswitch::checkpoint::{write_complete, CheckpointContents, CheckpointTarget};
use killswitch::journal::record::{LogRecord, OrderEventRecord};
use killswitch::journal::{
    rebuild, rebuild_from, scan, JournalConfig, JournalWriter, TradingState,
};
use killswitch::order::{OrderId, Price, Qty, ScopeTags, Side};

struct Opts {
    dir: PathBuf,
    appends: u64,
    recovery_mib: Vec<u64>,
    snapshot_mib: u64,
    cold: bool,
    only: Option<String>,
}

fn opts() -> Opts {
    let mut o = Opts {
        dir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        appends: 1_000_000,
        recovery_mib: vec![64, 256, 1024],
        snapshot_mib: 32,
        cold: false,
        only: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--dir" => o.dir = PathBuf::from(v),
            "--appends" => o.appends = v.parse().unwrap_or(o.appends),
            "--recovery-mib" => {
                o.recovery_mib = v.split(',').filter_map(|x| x.trim().parse().ok()).collect()
            }
            "--snapshot-mib" => o.snapshot_mib = v.parse().unwrap_or(o.snapshot_mib),
            "--cold" => {
                o.cold = true;
                i += 1;
                continue;
            }
            "--only" => o.only = Some(v),
            other => {
                eprintln!("unknown argument {other}; usage: ks-journal-latency [--dir DIR] [--appends N] [--recovery-mib M,M,..] [--snapshot-mib N] [--cold] [--only appends|quick|complete|recovery]");
                std::process::exit(2);
            }
        }
        i += 2;
    }
    o
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

fn report(name: &str, h: &Histogram<u64>) {
    println!(
        "{name:<44} n={:<8} p50={:>9} p99={:>9} p99.9={:>9} max={:>10}",
        h.len(),
        fmt(h.value_at_quantile(0.5)),
        fmt(h.value_at_quantile(0.99)),
        fmt(h.value_at_quantile(0.999)),
        fmt(h.max())
    );
}

fn fmt(ns: u64) -> String {
    killswitch::clock::format_duration_ns(ns)
}

fn timed<T>(h: &mut Histogram<u64>, f: impl FnOnce() -> T) -> T {
    let t0 = Instant::now();
    let r = f();
    let _ = h.record(t0.elapsed().as_nanos() as u64);
    r
}

fn fresh(base: &Path, name: &str) -> PathBuf {
    let d = base.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create bench dir");
    d
}

fn bench_appends(o: &Opts, base: &Path) {
    let mut timer = hist();
    for _ in 0..100_000 {
        timed(&mut timer, || ());
    }
    report("timer overhead (Instant::now + elapsed)", &timer);
    for (label, total) in [
        ("append 64 B record", 64usize),
        ("append 256 B record", 256),
    ] {
        let d = fresh(base, "append");
        let (mut w, _) = JournalWriter::open(
            &d,
            JournalConfig {
                background_sync: false,
                ..JournalConfig::default()
            },
        )
        .expect("open journal");
        let text = "x".repeat(total - 32 - 16);
        let rec = LogRecord {
            level: 3,
            wall_ns: 0,
            text: &text,
        };
        // Stay inside pre-faulted segments: prepare the next one ahead, as an
        // engine would off the critical path; roll-over cost is reported apart.
        let mut h = hist();
        let mut roll = hist();
        for _ in 0..o.appends {
            let before = w.position().0;
            let t0 = Instant::now();
            w.append(&rec).expect("append");
            let ns = t0.elapsed().as_nanos() as u64;
            if w.position().0 != before {
                let _ = roll.record(ns);
            } else {
                let _ = h.record(ns);
            }
            if w.position().0 == before && w.position().1 > (60 << 20) {
                w.prepare_next_segment().expect("prepare");
            }
        }
        report(label, &h);
        if !roll.is_empty() {
            report(
                &format!("  ... appends that rolled to a prepared segment ({label})"),
                &roll,
            );
        }
        drop(w);
        let _ = std::fs::remove_dir_all(&d);
    }
    {
        let d = fresh(base, "append");
        let (mut w, _) = JournalWriter::open(
            &d,
            JournalConfig {
                background_sync: false,
                ..JournalConfig::default()
            },
        )
        .expect("open journal");
        let ev = OrderEventRecord::new_order(
            OrderId(1),
            ScopeTags::default(),
            Side::Buy,
            Price::from_units(1),
            Qty::from_lots(1),
        );
        let mut h = hist();
        for i in 0..o.appends.min(500_000) {
            let e = OrderEventRecord {
                order_id: OrderId(i),
                ..ev
            };
            timed(&mut h, || w.append(&e).expect("append"));
        }
        report("append order event (88 B record)", &h);
        drop(w);
        let _ = std::fs::remove_dir_all(&d);
    }
    // Baseline: write + fdatasync per record.
    let d = fresh(base, "fsync");
    let mut f = std::fs::File::create(d.join("log")).expect("create");
    for (label, size) in [
        ("baseline write+fdatasync 64 B", 64usize),
        ("baseline write+fdatasync 256 B", 256),
    ] {
        let buf = vec![b'x'; size];
        let mut h = hist();
        for _ in 0..300 {
            timed(&mut h, || {
                f.write_all(&buf).expect("write");
                f.sync_data().expect("fdatasync");
            });
        }
        report(label, &h);
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// Minor faults and involuntary context switches of the calling thread
/// (`getrusage(RUSAGE_THREAD)`).
fn thread_faults_and_preemptions() -> (u64, u64) {
    // SAFETY: `getrusage` writes a `rusage` into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a `rusage`; RUSAGE_THREAD is Linux's.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    (ru.ru_minflt as u64, ru.ru_nivcsw as u64)
}

/// TLB-shootdown interrupts received by every CPU so far (`TLB:` in
/// `/proc/interrupts`; 0 where the kernel does not count them).
fn tlb_shootdowns() -> u64 {
    std::fs::read_to_string("/proc/interrupts")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.trim_start().starts_with("TLB:"))
                .map(|l| {
                    l.split_whitespace()
                        .skip(1)
                        .map_while(|w| w.parse::<u64>().ok())
                        .sum()
                })
        })
        .unwrap_or(0)
}

/// 200 quick checkpoints of `state`, back to back as a snapshot policy under
/// load would take them, with the background flusher on or off; prints the
/// percentiles and, per checkpoint, the writer thread's minor faults and
/// involuntary switches and the machine's TLB shootdowns.
fn quick_series(base: &Path, state: &TradingState, n: u64, background_sync: bool, release: bool) {
    let d = fresh(base, "quick");
    let (mut w, _) = JournalWriter::open(
        &d,
        JournalConfig {
            background_sync,
            release_synced_pages: release,
            ..JournalConfig::default()
        },
    )
    .expect("open journal");
    let mut h = hist();
    let mut bytes = 0;
    let rounds = 200u64;
    // Counted around each checkpoint only (not the segment preparation,
    // whose pre-faulting takes a fault per page by design).
    let (mut faults, mut preempted, mut tlb) = (0, 0, 0);
    for _ in 0..rounds {
        if w.position().1 > (40 << 20) {
            w.prepare_next_segment().expect("prepare");
        }
        let (f0, c0) = thread_faults_and_preemptions();
        let tlb0 = tlb_shootdowns();
        let q = timed(&mut h, || {
            w.quick_checkpoint(state).expect("quick checkpoint")
        });
        let (f1, c1) = thread_faults_and_preemptions();
        tlb += tlb_shootdowns().saturating_sub(tlb0);
        faults += f1 - f0;
        preempted += c1 - c0;
        bytes = q.bytes;
    }
    let label = match (background_sync, release) {
        (false, _) => "baseline: flusher off",
        (true, true) => "flusher on",
        (true, false) => "flusher on, pages not released (before)",
    };
    report(
        &format!("quick checkpoint {n} orders ({bytes} B), {label}"),
        &h,
    );
    println!(
        "{:<44} per checkpoint: {:.1} minor faults, {:.2} preemptions, {:.1} TLB shootdowns (all CPUs)",
        "",
        faults as f64 / rounds as f64,
        preempted as f64 / rounds as f64,
        tlb as f64 / rounds as f64
    );
    let t0 = Instant::now();
    let dur = w.sync().expect("sync");
    println!(
        "{:<44} {} (msync of everything not yet flushed)",
        format!("  then sync() up to seq {}", dur.up_to_seq),
        fmt(t0.elapsed().as_nanos() as u64)
    );
    drop(w);
    let _ = std::fs::remove_dir_all(&d);
}

/// The physical limit of a quick checkpoint: a plain copy of `bytes` from
/// the heap into consecutive places of a pre-faulted shared file mapping,
/// as the journal writes (200 times, fresh space each time).
fn copy_limit(base: &Path, bytes: usize) {
    let d = fresh(base, "copy");
    let len = (bytes + 4096) * 201;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(d.join("copy"))
        .expect("create copy file");
    f.set_len(len as u64).expect("size copy file");
    // SAFETY: a file of this process's own bench directory, mapped shared;
    // nothing else maps or truncates it while the map lives.
    let mut map = unsafe { memmap2::MmapMut::map_mut(&f) }.expect("map copy file");
    for i in (0..len).step_by(4096) {
        map[i] = 0;
    }
    let src: Vec<u8> = (0..bytes).map(|i| i as u8).collect();
    let mut h = hist();
    let mut at = 0;
    for _ in 0..200 {
        timed(&mut h, || {
            map[at..at + bytes].copy_from_slice(&src);
            std::hint::black_box(&map[at]);
        });
        at += bytes;
    }
    report(
        &format!("  baseline: memcpy of {bytes} B into a mapping"),
        &h,
    );
    drop(map);
    let _ = std::fs::remove_dir_all(&d);
}

fn bench_quick(base: &Path) {
    for n in [10u64, 1_000, 10_000] {
        let state = TradingState::synthetic(n);
        // The flusher's effect is what is measured: the baseline without it
        // runs first and last in the same run, around the series with it.
        // and the flusher as it was before it released synced pages.
        quick_series(base, &state, n, false, true);
        quick_series(base, &state, n, true, false);
        quick_series(base, &state, n, true, true);
        if n == 10_000 {
            copy_limit(base, 486_184);
            quick_series(base, &state, n, false, true);
            quick_series(base, &state, n, true, false);
            quick_series(base, &state, n, true, true);
        }

        let d = fresh(base, "dump");
        let mut hj = hist();
        for i in 0..50 {
            timed(&mut hj, || {
                let f = std::fs::File::create(d.join(format!("s{i}.json"))).expect("create");
                let mut bw = std::io::BufWriter::new(f);
                serde_json::to_writer(&mut bw, &state).expect("json");
                bw.flush().expect("flush");
            });
        }
        report(&format!("  baseline serde_json to file {n} orders"), &hj);
        let _ = std::fs::remove_dir_all(&d);
    }
}

fn bench_complete(base: &Path) {
    let state = TradingState::synthetic(10_000);
    let log = "2024-11-25 15:45:23.000 UTC INFO order filled\n".repeat(1000);
    let d = fresh(base, "complete");
    let mut h = hist();
    let mut size = 0;
    for _ in 0..20 {
        let c = CheckpointContents {
            state: state.clone(),
            log_tail: &log,
            ..CheckpointContents::default()
        };
        let t = CheckpointTarget {
            file_name: Some("bench.ckpt".into()),
            ..CheckpointTarget::in_dir(&d)
        };
        let w = timed(&mut h, || write_complete(&c, &t).expect("checkpoint"));
        size = w.bytes;
    }
    report(
        &format!("complete checkpoint+verify 10k orders ({size} B)"),
        &h,
    );
    let _ = std::fs::remove_dir_all(&d);
}

/// Writes a journal of about `mib` MiB the way an engine does (see the
/// module docs); returns the number of records and snapshots.
fn engine_like_journal(d: &Path, mib: u64, snapshot_mib: u64) -> (u64, u64) {
    const OPEN: u64 = 10_000;
    let (mut w, _) = JournalWriter::open(
        d,
        JournalConfig {
            background_sync: false,
            ..JournalConfig::default()
        },
    )
    .expect("open journal");
    let text = "y".repeat(256 - 48);
    let log = LogRecord {
        level: 3,
        wall_ns: 0,
        text: &text,
    };
    let mut mirror = TradingState::default();
    let add = |w: &mut JournalWriter, m: &mut TradingState, r: &OrderEventRecord| {
        let a = w.append(r).expect("append");
        let _ = m.apply_order_event(a.seq, r);
    };
    let order = |i: u64| {
        OrderEventRecord::new_order(
            OrderId(i),
            ScopeTags {
                venue: (i % 2) as u16,
                instrument: (i % 4) as u16,
                ..ScopeTags::default()
            },
            if i % 2 == 0 { Side::Buy } else { Side::Sell },
            Price::from_units(100 + (i % 50) as i64),
            Qty::from_lots(1),
        )
    };
    let (target, every) = (mib << 20, snapshot_mib.max(1) << 20);
    let (mut next_snapshot, mut snapshots, mut i) = (every, 0u64, 1u64);
    loop {
        let (seg, off) = w.position();
        let written = (seg - 1) * JournalConfig::default().segment_size as u64 + off;
        if written >= target {
            break;
        }
        if written >= next_snapshot {
            w.quick_checkpoint(&mirror).expect("snapshot");
            snapshots += 1;
            next_snapshot += every;
        }
        let o = order(i);
        add(&mut w, &mut mirror, &o);
        add(
            &mut w,
            &mut mirror,
            &o.with_event(killswitch::order::OrderEvent::Acked),
        );
        if i > OPEN {
            let old = order(i - OPEN);
            add(
                &mut w,
                &mut mirror,
                &old.with_event(killswitch::order::OrderEvent::CancelSent),
            );
            add(
                &mut w,
                &mut mirror,
                &old.with_event(killswitch::order::OrderEvent::Canceled),
            );
        }
        w.append(&log).expect("append");
        i += 1;
    }
    let records = w.next_seq() - 1;
    (records, snapshots)
}

/// Drops the page cache (root only) so the next read comes from the disk.
fn drop_caches(cold: bool) {
    if !cold {
        return;
    }
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    if std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_err() {
        eprintln!("--cold: cannot drop the page cache (not root?): figures are warm");
    }
}

fn bench_recovery(o: &Opts, base: &Path) {
    println!(
        "recovery: engine-like journals, a quick checkpoint every {} MiB, page cache {}",
        o.snapshot_mib,
        if o.cold { "cold" } else { "warm" }
    );
    println!(
        "{:>9} {:>11} {:>6} {:>12} {:>14} {:>16}",
        "journal", "records", "snaps", "full scan", "full rebuild", "start-to-ready"
    );
    for &mib in &o.recovery_mib {
        let d = fresh(base, &format!("recovery-{mib}"));
        let (records, snapshots) = engine_like_journal(&d, mib, o.snapshot_mib);
        drop_caches(o.cold);
        let t0 = Instant::now();
        let rep = scan(&d, true, |_| {}).expect("scan");
        let scan_t = t0.elapsed();
        drop_caches(o.cold);
        let t0 = Instant::now();
        let full = rebuild(&d).expect("rebuild");
        let full_t = t0.elapsed();
        drop_caches(o.cold);
        // What an engine start pays: the writer's open (it recovers the
        // tail) and the rebuild from the newest snapshot.
        let t0 = Instant::now();
        let (w, _) = JournalWriter::open(
            &d,
            JournalConfig {
                background_sync: false,
                ..JournalConfig::default()
            },
        )
        .expect("open");
        let fast = rebuild_from(&d, w.last_snapshot()).expect("rebuild from snapshot");
        let ready_t = t0.elapsed();
        drop(w);
        assert_eq!(
            fast.state.open_orders, full.state.open_orders,
            "the fast rebuild must give the full rebuild's state"
        );
        println!(
            "{:>5} MiB {records:>11} {snapshots:>6} {:>10.1} ms {:>12.1} ms {:>14.1} ms   ({} records in the scan, {} open orders, replay from seq {})",
            mib,
            scan_t.as_secs_f64() * 1e3,
            full_t.as_secs_f64() * 1e3,
            ready_t.as_secs_f64() * 1e3,
            rep.records,
            fast.state.open_orders.len(),
            fast.from_snapshot.map_or(1, |s| s.seq),
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}

fn main() {
    let o = opts();
    let base = o
        .dir
        .join(format!("ks-journal-latency-{}", std::process::id()));
    std::fs::create_dir_all(&base).expect("create work directory");
    println!("ks-journal-latency: work dir {}", base.display());
    let run = |what: &str| o.only.as_deref().is_none_or(|only| only == what);
    if run("appends") {
        bench_appends(&o, &base);
    }
    if run("quick") {
        bench_quick(&base);
    }
    if run("complete") {
        bench_complete(&base);
    }
    if run("recovery") {
        bench_recovery(&o, &base);
    }
    let _ = std::fs::remove_dir_all(&base);
}
