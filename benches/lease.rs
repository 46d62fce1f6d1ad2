//! What the active-role lease (issue 15) costs the gateway, beside the same
//! step without it, in the same run:
//!
//! * `lease_admit/admit` (the baseline): the gateway's admit step for one
//!   new order with no lease: observe the state word, decide on a fresh
//!   load, register.
//! * `lease_admit/admit_leased`: the same step under a lease: first the
//!   epoch check (a `SeqCst` load of the holder word), then the same.
//! * `lease_turn/turn_marker`: what a writing turn pays once, however many
//!   orders it admits: mark the turn busy (`enter_sends`) and clear it
//!   (`exit_sends`), the marker a taker waits on before it writes.
//! * `lease_turn/baseline_empty_turn`: a turn with nothing in it but the
//!   loop's own `black_box`.
//!
//! The functions are the library's own (`killswitch::gateway::admit`,
//! `killswitch::control::lease`), the ones the gateway calls and the loom
//! models check, here on words on the heap instead of the control block's
//! mapping. The decision is a mask test (the gate's fast path) and the
//! registration a counter: the registry's insert and the venue write are the
//! same with or without the lease, and far larger.
//!
//! Run: `cargo bench --bench lease`.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::Criterion;
use killswitch::control::lease::{enter_sends, exit_sends, LeaseWords};
use killswitch::control::state::GATE_MASK;
use killswitch::control::StateWord;
use killswitch::gateway::admit::{admit, admit_leased, AdmitWords};

fn decide(w: StateWord) -> Result<(), ()> {
    if w.0 & GATE_MASK == 0 {
        Ok(())
    } else {
        Err(())
    }
}

fn bench_lease(c: &mut Criterion) {
    let state = AtomicU64::new(1 << 8);
    let acked = AtomicU64::new(0);
    let acked_at = AtomicU64::new(0);
    let words = AdmitWords {
        state: &state,
        acked_generation: &acked,
        acked_mono_ns: &acked_at,
    };
    // epoch 1, pid 4242: the word a lease holder compares against.
    let mine: u64 = (1 << 32) | 4242;
    let holder = AtomicU64::new(mine);
    let mut my_acked = 0u64;
    let mut registered = 0u64;

    let mut g = c.benchmark_group("lease_admit");
    g.bench_function("admit", |b| {
        b.iter(|| {
            admit(
                black_box(&words),
                &mut my_acked,
                || 1,
                StateWord(0),
                false,
                decide,
                || {
                    registered += 1;
                    registered
                },
            )
        })
    });
    g.bench_function("admit_leased", |b| {
        b.iter(|| {
            admit_leased(
                black_box(&holder),
                mine,
                black_box(&words),
                &mut my_acked,
                || 1,
                StateWord(0),
                false,
                decide,
                || {
                    registered += 1;
                    registered
                },
            )
        })
    });
    g.finish();
    black_box(registered);

    let holder_start = AtomicU64::new(0);
    let expiry = AtomicU64::new(u64::MAX);
    let in_send = AtomicU64::new(0);
    let lease = LeaseWords {
        holder: &holder,
        holder_start: &holder_start,
        expiry: &expiry,
        in_send: &in_send,
    };
    let mut g = c.benchmark_group("lease_turn");
    g.bench_function("turn_marker", |b| {
        b.iter(|| {
            let l = black_box(&lease);
            let entered = enter_sends(l, mine);
            exit_sends(l, mine);
            entered
        })
    });
    g.bench_function("baseline_empty_turn", |b| {
        b.iter(|| black_box(&lease).in_send.load(Ordering::Relaxed))
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_lease(&mut c);
    c.final_summary();
}
