//! Journal and checkpoint benchmarks, each beside its baseline:
//!
//! * `append/{64B,256B,order_event}` vs `baseline_write_fdatasync/{64B,256B}`;
//! * `quick_checkpoint/{10,1000,10000}` vs `baseline_serde_json_file/…` and
//!   `baseline_postcard_file/…` (same state, to a file, no fsync either);
//! * `complete_checkpoint_verify/10000`;
//! * `recovery/scan` and `recovery/rebuild` of a journal of
//!   `KS_BENCH_RECOVERY_MIB` MiB (64 by default; the 1 GiB figure comes from
//!   `ks-journal-latency`).
//!
//! `cargo test --benches` runs every benchmark once with small sizes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{criterion_main, BenchmarkId, Criterion};
use killswitch::checkpoint::{write_complete, CheckpointContents, CheckpointTarget};
use killswitch::journal::record::{LogRecord, OrderEventRecord};
use killswitch::journal::{rebuild, scan, JournalConfig, JournalWriter, TradingState};
use killswitch::order::{OrderId, Price, Qty, ScopeTags, Side};

/// True under `cargo bench`; false under `cargo test --benches` (smoke run).
fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn bench_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ks-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("bench dir");
    d
}

fn cfg() -> JournalConfig {
    JournalConfig {
        segment_size: 16 << 20,
        prefault_write: true,
        background_sync: false,
        ..JournalConfig::default()
    }
}

/// A writer that starts over (outside the timed region) once it has used
/// four segments, so a long run does not fill the disk.
struct Recycled {
    dir: PathBuf,
    w: Option<JournalWriter>,
}

impl Recycled {
    fn new(name: &str) -> Recycled {
        let dir = bench_dir(name);
        let (w, _) = JournalWriter::open(&dir, cfg()).expect("open");
        Recycled { dir, w: Some(w) }
    }
    fn get(&mut self) -> &mut JournalWriter {
        if self.w.as_ref().is_some_and(|w| w.position().0 > 4) {
            self.w = None;
            let _ = std::fs::remove_dir_all(&self.dir);
            self.w = Some(JournalWriter::open(&self.dir, cfg()).expect("reopen").0);
        }
        let w = self.w.as_mut().expect("writer");
        if w.position().1 > (12 << 20) {
            w.prepare_next_segment().expect("prepare");
        }
        w
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        self.w = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn append(c: &mut Criterion) {
    let mut g = c.benchmark_group("append");
    let mut r = Recycled::new("append");
    for total in [64usize, 256] {
        let text = "x".repeat(total - 48);
        g.bench_function(format!("{total}B"), |b| {
            b.iter_custom(|iters| {
                let w = r.get();
                let rec = LogRecord {
                    level: 3,
                    wall_ns: 0,
                    text: &text,
                };
                let t0 = Instant::now();
                for _ in 0..iters {
                    w.append(&rec).expect("append");
                }
                t0.elapsed()
            })
        });
    }
    let ev = OrderEventRecord::new_order(
        OrderId(1),
        ScopeTags::default(),
        Side::Buy,
        Price::from_units(1),
        Qty::from_lots(1),
    );
    g.bench_function("order_event", |b| {
        b.iter_custom(|iters| {
            let w = r.get();
            let t0 = Instant::now();
            for _ in 0..iters {
                w.append(&ev).expect("append");
            }
            t0.elapsed()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("baseline_write_fdatasync");
    g.sample_size(10).measurement_time(Duration::from_secs(2));
    let d = bench_dir("fsync");
    let mut f = std::fs::File::create(d.join("log")).expect("create");
    for total in [64usize, 256] {
        let buf = vec![b'x'; total];
        g.bench_function(format!("{total}B"), |b| {
            b.iter(|| {
                f.write_all(&buf).expect("write");
                f.sync_data().expect("fdatasync");
            })
        });
    }
    g.finish();
    let _ = std::fs::remove_dir_all(&d);
}

fn quick(c: &mut Criterion) {
    let sizes: &[u64] = if full_run() {
        &[10, 1_000, 10_000]
    } else {
        &[10, 1_000]
    };
    let mut g = c.benchmark_group("quick_checkpoint");
    let mut r = Recycled::new("quick");
    for &n in sizes {
        let state = TradingState::synthetic(n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &state, |b, s| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let w = r.get();
                    let t0 = Instant::now();
                    w.quick_checkpoint(s).expect("quick");
                    total += t0.elapsed();
                }
                total
            })
        });
    }
    g.finish();
    let d = bench_dir("dump");
    for (name, dump) in [
        (
            "baseline_serde_json_file",
            json_dump as fn(&Path, &TradingState),
        ),
        ("baseline_postcard_file", postcard_dump),
    ] {
        let mut g = c.benchmark_group(name);
        g.sample_size(20);
        for &n in sizes {
            let state = TradingState::synthetic(n);
            g.bench_with_input(BenchmarkId::from_parameter(n), &state, |b, s| {
                b.iter(|| dump(&d, s))
            });
        }
        g.finish();
    }
    let _ = std::fs::remove_dir_all(&d);
}

fn json_dump(d: &Path, s: &TradingState) {
    let f = std::fs::File::create(d.join("state.json")).expect("create");
    let mut w = std::io::BufWriter::new(f);
    serde_json::to_writer(&mut w, s).expect("json");
    w.flush().expect("flush");
}

fn postcard_dump(d: &Path, s: &TradingState) {
    let v = postcard::to_stdvec(s).expect("postcard");
    std::fs::write(d.join("state.pc"), v).expect("write");
}

fn complete(c: &mut Criterion) {
    let n = if full_run() { 10_000 } else { 100 };
    let state = TradingState::synthetic(n);
    let d = bench_dir("complete");
    let mut g = c.benchmark_group("complete_checkpoint_verify");
    g.sample_size(10);
    g.bench_function(BenchmarkId::from_parameter(n), |b| {
        b.iter(|| {
            let contents = CheckpointContents {
                state: state.clone(),
                log_tail: "INFO x\n",
                ..CheckpointContents::default()
            };
            let t = CheckpointTarget {
                file_name: Some("bench.ckpt".into()),
                ..CheckpointTarget::in_dir(&d)
            };
            write_complete(&contents, &t).expect("checkpoint")
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&d);
}

fn recovery(c: &mut Criterion) {
    let mib: u64 = if full_run() {
        std::env::var("KS_BENCH_RECOVERY_MIB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(64)
    } else {
        2
    };
    let d = bench_dir("recovery");
    {
        let (mut w, _) = JournalWriter::open(&d, cfg()).expect("open");
        let text = "y".repeat(256 - 48);
        let rec = LogRecord {
            level: 3,
            wall_ns: 0,
            text: &text,
        };
        let ev = OrderEventRecord::new_order(
            OrderId(1),
            ScopeTags::default(),
            Side::Buy,
            Price::from_units(1),
            Qty::from_lots(1),
        );
        let mut written = 0;
        let mut i = 0u64;
        while written < mib << 20 {
            if i % 2 == 0 {
                w.append(&OrderEventRecord {
                    order_id: OrderId(i),
                    ..ev
                })
                .expect("append");
                written += 88;
            } else {
                w.append(&rec).expect("append");
                written += 256;
            }
            i += 1;
        }
    }
    let mut g = c.benchmark_group(format!("recovery_{mib}MiB"));
    g.sample_size(10);
    g.bench_function("scan", |b| b.iter(|| scan(&d, true, |_| {}).expect("scan")));
    g.bench_function("rebuild", |b| b.iter(|| rebuild(&d).expect("rebuild")));
    g.finish();
    let _ = std::fs::remove_dir_all(&d);
}

/// Every journal benchmark (written out rather than `criterion_group!`, so
/// the generated function has a doc comment).
fn benches() {
    let mut c = Criterion::default().configure_from_args();
    append(&mut c);
    quick(&mut c);
    complete(&mut c);
    recovery(&mut c);
}

criterion_main!(benches);
