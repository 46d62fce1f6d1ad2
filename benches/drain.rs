//! What a drain costs, against the in-process simulated venue.
//!
//! * `drain/to_wire/{mass,single}/N`: trip -> the venue has accepted the
//!   last cancel (its message log's timestamp), N open orders.
//! * `drain/confirmed/{mass,single}/N`: trip -> every order confirmed
//!   cancelled in the registry (the drain's `t_last_ack`).
//! * `wake/*`: the reaction mechanism alone, trip -> waiting thread
//!   running: the drain's spin/back-off on the state word against the
//!   baselines a futex would give (`Condvar`, `mpsc` channel).
//!
//! One engine (gateway + drain threads, busy back-off) per case; each
//! iteration rests N orders, trips, waits for the report, resets. Only the
//! trip-to-X interval is timed.
//!
//! Run: `cargo bench --bench drain -- --warm-up-time 1 --measurement-time 3`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_main, BenchmarkId, Criterion};
use killswitch::backoff::{Backoff, BackoffConfig};
use killswitch::clock::mono_ns;
use killswitch::control::{ControlBlock, Mode, Operator, ResetRequest, Source};
use killswitch::drain::{Drain, DrainConfig, DrainHandle};
use killswitch::gateway::{Gateway, GatewayConfig, GatewayHandle, OrderSender};
use killswitch::order::{OrderIntent, Price, Qty, ScopeTags, Side};
use killswitch::registry::Registry;
use killswitch::venue::sim::{FlowConfig, SimConfig, SimHandle, SimVenue, WireMessage};
use killswitch::venue::Venue;

struct Engine {
    _dir: tempfile::TempDir,
    operator: Operator,
    registry: Arc<Registry>,
    _gateway: GatewayHandle,
    drain: DrainHandle,
    sender: OrderSender,
    sim: SimHandle,
}

fn engine(mass_cancel: bool) -> Engine {
    let dir = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    let block = Arc::new(ControlBlock::create(dir.path(), "bench").unwrap());
    let registry = Arc::new(Registry::new());
    let mut cfg = SimConfig::new("SIM", 1, 1);
    cfg.flow = FlowConfig::off();
    cfg.mass_cancel = mass_cancel;
    let (venue, sim) = SimVenue::new(cfg);
    let mut gateway = Gateway::spawn(
        block.clone(),
        registry.clone(),
        vec![(0, Box::new(venue) as Box<dyn Venue>)],
        GatewayConfig {
            backoff: BackoffConfig::busy(),
            order_ring: 16_384,
            ..GatewayConfig::default()
        },
    )
    .unwrap();
    let drain = Drain::spawn(
        gateway.take_drain_link().unwrap(),
        DrainConfig {
            backoff: BackoffConfig::busy(),
            ..DrainConfig::emergency()
        },
        None,
    )
    .unwrap();
    let sender = gateway.order_sender();
    Engine {
        _dir: dir,
        operator: Operator::new(block),
        registry,
        _gateway: gateway,
        drain,
        sender,
        sim,
    }
}

/// Rests `n` orders, trips, waits; returns (trip -> last cancel on the wire,
/// trip -> all confirmed).
fn one_drain(e: &Engine, n: usize) -> (Duration, Duration) {
    let intent = OrderIntent {
        tags: ScopeTags::default(),
        side: Side::Buy,
        qty: Qty::from_lots(1),
        price: Price::from_units(50),
        position: Qty::ZERO,
    };
    for _ in 0..n {
        while e.sender.submit(&intent).is_err() {
            thread::yield_now();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while e.sim.stats().our_resting < n as u64 || e.registry.open_count() < n {
        assert!(Instant::now() < deadline, "orders did not rest");
        thread::yield_now();
    }
    let log_before = e.sim.log_len();
    let t0 = mono_ns();
    e.operator
        .tripper()
        .trip_global(Mode::Kill, Source::Api, "bench");
    let out = e
        .drain
        .wait_outcome(Duration::from_secs(30))
        .expect("drain finished");
    assert!(out.is_clean(), "{out}");
    let last_wire = e
        .sim
        .log_from(log_before)
        .iter()
        .filter(|l| matches!(l.msg, WireMessage::Cancel(_) | WireMessage::MassCancel(_)))
        .map(|l| l.mono_ns)
        .max()
        .unwrap_or(t0);
    e.operator
        .reset(&ResetRequest {
            source: Source::Api,
            reason: "bench".into(),
            force: false,
            expected_generation: None,
        })
        .unwrap();
    (
        Duration::from_nanos(last_wire - t0),
        Duration::from_nanos(out.timings.t_last_ack - t0),
    )
}

fn drains(c: &mut Criterion) {
    for (what, pick) in [("to_wire", 0usize), ("confirmed", 1)] {
        let mut g = c.benchmark_group(format!("drain/{what}"));
        g.sample_size(10);
        for mass in [true, false] {
            let e = engine(mass);
            for n in [10usize, 1_000, 10_000] {
                let id = BenchmarkId::new(if mass { "mass" } else { "single" }, n);
                g.bench_function(id, |b| {
                    b.iter_custom(|iters| {
                        (0..iters)
                            .map(|_| {
                                let (w, c) = one_drain(&e, n);
                                if pick == 0 {
                                    w
                                } else {
                                    c
                                }
                            })
                            .sum()
                    })
                });
            }
        }
        g.finish();
    }
}

/// Trip -> waiter running, per wake mechanism. The waiter acknowledges each
/// round on an atomic (not timed) so rounds do not overlap.
fn wake(c: &mut Criterion) {
    let mut g = c.benchmark_group("wake");
    g.bench_function("spin_backoff", |b| {
        b.iter_custom(|iters| {
            let word = Arc::new(AtomicU64::new(0));
            let done = Arc::new(AtomicU64::new(0));
            let total = Arc::new(AtomicU64::new(0));
            let (w, d, t) = (word.clone(), done.clone(), total.clone());
            let waiter = thread::spawn(move || {
                let mut b = Backoff::new(BackoffConfig::default());
                for i in 1..=iters {
                    while w.load(Ordering::Acquire) < i {
                        b.snooze();
                    }
                    let seen = mono_ns();
                    b.reset();
                    t.fetch_add(seen, Ordering::Relaxed);
                    d.store(i, Ordering::Release);
                }
            });
            let mut starts = 0u64;
            for i in 1..=iters {
                starts += mono_ns();
                word.store(i, Ordering::Release);
                while done.load(Ordering::Acquire) < i {
                    thread::yield_now();
                }
            }
            waiter.join().unwrap();
            Duration::from_nanos(total.load(Ordering::Relaxed) - starts)
        })
    });
    g.bench_function("condvar", |b| {
        b.iter_custom(|iters| {
            let pair = Arc::new((Mutex::new(0u64), Condvar::new()));
            let done = Arc::new(AtomicU64::new(0));
            let total = Arc::new(AtomicU64::new(0));
            let (p, d, t) = (pair.clone(), done.clone(), total.clone());
            let waiter = thread::spawn(move || {
                let (m, cv) = &*p;
                for i in 1..=iters {
                    let mut g = m.lock().unwrap();
                    while *g < i {
                        g = cv.wait(g).unwrap();
                    }
                    drop(g);
                    t.fetch_add(mono_ns(), Ordering::Relaxed);
                    d.store(i, Ordering::Release);
                }
            });
            let mut starts = 0u64;
            for i in 1..=iters {
                starts += mono_ns();
                {
                    let (m, cv) = &*pair;
                    *m.lock().unwrap() = i;
                    cv.notify_one();
                }
                while done.load(Ordering::Acquire) < i {
                    thread::yield_now();
                }
            }
            waiter.join().unwrap();
            Duration::from_nanos(total.load(Ordering::Relaxed) - starts)
        })
    });
    g.bench_function("mpsc_channel", |b| {
        b.iter_custom(|iters| {
            let (tx, rx) = mpsc::channel::<u64>();
            let done = Arc::new(AtomicU64::new(0));
            let total = Arc::new(AtomicU64::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let (d, t) = (done.clone(), total.clone());
            let waiter = thread::spawn(move || {
                for i in 1..=iters {
                    if rx.recv().is_err() {
                        return;
                    }
                    t.fetch_add(mono_ns(), Ordering::Relaxed);
                    d.store(i, Ordering::Release);
                }
            });
            let mut starts = 0u64;
            for i in 1..=iters {
                starts += mono_ns();
                let _ = tx.send(i);
                while done.load(Ordering::Acquire) < i {
                    thread::yield_now();
                }
            }
            stop.store(true, Ordering::Relaxed);
            waiter.join().unwrap();
            Duration::from_nanos(total.load(Ordering::Relaxed) - starts)
        })
    });
    g.finish();
}

/// Every benchmark of this file (written out instead of `criterion_group!`,
/// whose generated function has no doc comment).
fn benches() {
    let mut c = Criterion::default().configure_from_args();
    wake(&mut c);
    drains(&mut c);
}
criterion_main!(benches);
