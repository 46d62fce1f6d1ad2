//! Gateway ring candidates: crossbeam `ArrayQueue` vs `rtrb` vs
//! `std::sync::mpsc::sync_channel` (bounded), capacity 4096.
//!
//! * `transfer`: one producer pushes N items (spinning while full), one
//!   consumer pops them; time per item.
//! * `round_trip`: ping-pong of one item through two rings; half of it is
//!   the one-way hand-off latency a cancel sees.
//!
//! Run: `cargo bench --bench ring -- --warm-up-time 1 --measurement-time 3`.

use std::hint::spin_loop;
use std::sync::mpsc::{sync_channel, TryRecvError, TrySendError};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_main, Criterion, Throughput};
use crossbeam::queue::ArrayQueue;

const CAP: usize = 4096;

fn transfer(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring/transfer");
    g.throughput(Throughput::Elements(1));
    g.bench_function("crossbeam_arrayqueue", |b| {
        b.iter_custom(|iters| {
            let q = Arc::new(ArrayQueue::<u64>::new(CAP));
            let bar = Arc::new(Barrier::new(2));
            let (qc, bc) = (q.clone(), bar.clone());
            let consumer = thread::spawn(move || {
                bc.wait();
                let mut n = 0;
                while n < iters {
                    if qc.pop().is_some() {
                        n += 1;
                    } else {
                        spin_loop();
                    }
                }
            });
            bar.wait();
            let t = Instant::now();
            for i in 0..iters {
                let mut v = i;
                while let Err(back) = q.push(v) {
                    v = back;
                    spin_loop();
                }
            }
            consumer.join().unwrap();
            t.elapsed()
        })
    });
    g.bench_function("rtrb", |b| {
        b.iter_custom(|iters| {
            let (mut p, mut cns) = rtrb::RingBuffer::<u64>::new(CAP);
            let bar = Arc::new(Barrier::new(2));
            let bc = bar.clone();
            let consumer = thread::spawn(move || {
                bc.wait();
                let mut n = 0;
                while n < iters {
                    if cns.pop().is_ok() {
                        n += 1;
                    } else {
                        spin_loop();
                    }
                }
            });
            bar.wait();
            let t = Instant::now();
            for i in 0..iters {
                while p.push(i).is_err() {
                    spin_loop();
                }
            }
            consumer.join().unwrap();
            t.elapsed()
        })
    });
    g.bench_function("std_sync_channel", |b| {
        b.iter_custom(|iters| {
            let (tx, rx) = sync_channel::<u64>(CAP);
            let bar = Arc::new(Barrier::new(2));
            let bc = bar.clone();
            let consumer = thread::spawn(move || {
                bc.wait();
                let mut n = 0;
                while n < iters {
                    match rx.try_recv() {
                        Ok(_) => n += 1,
                        Err(TryRecvError::Empty) => spin_loop(),
                        Err(TryRecvError::Disconnected) => break,
                    }
                }
            });
            bar.wait();
            let t = Instant::now();
            for i in 0..iters {
                let mut v = i;
                loop {
                    match tx.try_send(v) {
                        Ok(()) => break,
                        Err(TrySendError::Full(back)) => {
                            v = back;
                            spin_loop();
                        }
                        Err(TrySendError::Disconnected(_)) => return t.elapsed(),
                    }
                }
            }
            consumer.join().unwrap();
            t.elapsed()
        })
    });
    g.finish();
}

/// One ring pair, abstracted just enough for the ping-pong.
trait Pair: Send + 'static {
    fn send(&mut self, v: u64);
    fn recv(&mut self) -> u64;
}

struct Aq(Arc<ArrayQueue<u64>>, Arc<ArrayQueue<u64>>);
impl Pair for Aq {
    fn send(&mut self, v: u64) {
        while self.0.push(v).is_err() {
            spin_loop();
        }
    }
    fn recv(&mut self) -> u64 {
        loop {
            if let Some(v) = self.1.pop() {
                return v;
            }
            spin_loop();
        }
    }
}

struct Rt(rtrb::Producer<u64>, rtrb::Consumer<u64>);
impl Pair for Rt {
    fn send(&mut self, v: u64) {
        while self.0.push(v).is_err() {
            spin_loop();
        }
    }
    fn recv(&mut self) -> u64 {
        loop {
            if let Ok(v) = self.1.pop() {
                return v;
            }
            spin_loop();
        }
    }
}

struct Ch(
    std::sync::mpsc::SyncSender<u64>,
    std::sync::mpsc::Receiver<u64>,
);
impl Pair for Ch {
    fn send(&mut self, v: u64) {
        let _ = self.0.send(v);
    }
    fn recv(&mut self) -> u64 {
        loop {
            match self.1.try_recv() {
                Ok(v) => return v,
                Err(TryRecvError::Empty) => spin_loop(),
                Err(TryRecvError::Disconnected) => return 0,
            }
        }
    }
}

fn ping_pong<P: Pair>(iters: u64, mut here: P, mut there: P) -> Duration {
    let echo = thread::spawn(move || {
        for _ in 0..iters {
            let v = there.recv();
            there.send(v);
        }
    });
    let t = Instant::now();
    for i in 0..iters {
        here.send(i);
        let _ = here.recv();
    }
    let d = t.elapsed();
    echo.join().unwrap();
    d
}

fn round_trip(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring/round_trip");
    g.bench_function("crossbeam_arrayqueue", |b| {
        b.iter_custom(|iters| {
            let (a, z) = (
                Arc::new(ArrayQueue::new(CAP)),
                Arc::new(ArrayQueue::new(CAP)),
            );
            ping_pong(iters, Aq(a.clone(), z.clone()), Aq(z, a))
        })
    });
    g.bench_function("rtrb", |b| {
        b.iter_custom(|iters| {
            let (p1, c1) = rtrb::RingBuffer::new(CAP);
            let (p2, c2) = rtrb::RingBuffer::new(CAP);
            ping_pong(iters, Rt(p1, c2), Rt(p2, c1))
        })
    });
    g.bench_function("std_sync_channel", |b| {
        b.iter_custom(|iters| {
            let (t1, r1) = sync_channel(CAP);
            let (t2, r2) = sync_channel(CAP);
            ping_pong(iters, Ch(t1, r2), Ch(t2, r1))
        })
    });
    g.finish();
}

/// Every benchmark of this file (written out instead of `criterion_group!`,
/// whose generated function has no doc comment).
fn benches() {
    let mut c = Criterion::default().configure_from_args();
    transfer(&mut c);
    round_trip(&mut c);
}
criterion_main!(benches);
