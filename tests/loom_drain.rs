//! Model check of the no-escape protocol (DESIGN.md, way 1) with `loom`:
//! a tripper, the gateway and the drain around one kill.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --test loom_drain`.
//!
//! The model keeps exactly what the protocol relies on, with the crate's
//! own state-word code ([`trip_word`] on loom's `AtomicU64`):
//! * the state word, tripped to KILL by one thread;
//! * the gateway: before each of two orders it *observes* (loads the word
//!   and publishes a newer generation in `acked_generation` with Release),
//!   then re-checks the word, registers the order, then writes it to the
//!   "wire"; afterwards it keeps turning until it has acknowledged the kill;
//! * the drain: waits for KILL, waits for `acked_generation >= g`
//!   (Acquire), then snapshots the registry.
//!
//! Asserted in every interleaving: no order is written after the gateway
//! acknowledged the kill generation, and every order written is in the
//! drain's snapshot. A deliberately broken gateway (deciding on a load taken
//! before its acknowledgement) must fail, so the model is not vacuous.
#![cfg(loom)]

use loom::sync::atomic::{AtomicU64, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;

use killswitch::control::state::trip_word;
use killswitch::control::{Mode, StateWord};

fn model(broken: bool) {
    loom::model(move || {
        let state = Arc::new(AtomicU64::new(0));
        let acked = Arc::new(AtomicU64::new(0));
        let registry = Arc::new(Mutex::new(Vec::<u64>::new()));
        // (order id, generation the gateway had acknowledged when writing it)
        let wire = Arc::new(Mutex::new(Vec::<(u64, u64)>::new()));

        let tripper = {
            let state = state.clone();
            thread::spawn(move || trip_word(&*state, Mode::Kill).current().generation())
        };

        let gateway = {
            let (state, acked, registry, wire) =
                (state.clone(), acked.clone(), registry.clone(), wire.clone());
            thread::spawn(move || {
                let mut my_ack = 0u64;
                let mut observe = |my_ack: &mut u64| {
                    let w = StateWord(state.load(Ordering::Acquire));
                    if w.generation() > *my_ack {
                        *my_ack = w.generation();
                        acked.store(*my_ack, Ordering::Release);
                    }
                    w
                };
                for id in 1..=2u64 {
                    let stale = StateWord(state.load(Ordering::Acquire));
                    observe(&mut my_ack);
                    // The gate re-check: a fresh load, after the ack.
                    let w = if broken {
                        stale
                    } else {
                        StateWord(state.load(Ordering::Acquire))
                    };
                    if w.mode() == Mode::Kill {
                        continue;
                    }
                    registry.lock().unwrap().push(id);
                    wire.lock().unwrap().push((id, my_ack));
                }
                while observe(&mut my_ack).mode() != Mode::Kill {
                    thread::yield_now();
                }
            })
        };

        let drain = {
            let (state, acked, registry) = (state.clone(), acked.clone(), registry.clone());
            thread::spawn(move || {
                let g = loop {
                    let w = StateWord(state.load(Ordering::Acquire));
                    if w.mode() == Mode::Kill {
                        break w.generation();
                    }
                    thread::yield_now();
                };
                while acked.load(Ordering::Acquire) < g {
                    thread::yield_now();
                }
                registry.lock().unwrap().clone()
            })
        };

        let g = tripper.join().unwrap();
        gateway.join().unwrap();
        let snapshot = drain.join().unwrap();
        for (id, ack_at_write) in wire.lock().unwrap().iter() {
            assert!(
                *ack_at_write < g,
                "order {id} written after the gateway acknowledged kill generation {g}"
            );
            assert!(
                snapshot.contains(id),
                "order {id} written but missing from the drain's snapshot {snapshot:?}"
            );
        }
    });
}

#[test]
fn no_order_escapes_the_drain_snapshot() {
    model(false);
}

#[test]
#[should_panic(expected = "written after the gateway acknowledged")]
fn a_gateway_deciding_on_a_stale_load_is_caught() {
    model(true);
}
