//! Model check of the no-escape protocol (DESIGN.md, way 1) with `loom`:
//! a tripper, the gateway and the drain around one kill.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --test loom_drain`.
//!
//! The gateway here runs the crate's own admit step
//! ([`killswitch::gateway::admit`]: `observe`, then `admit` = observe,
//! decide on a load made after the acknowledgement, register) on loom's
//! atomics, the same functions `GatewayCore::send_new` calls; the state
//! word is tripped with the crate's [`trip_word`]. Around it:
//! * the gateway: one turn (observe at the top), two orders through
//!   `admit`, each written to the "wire" after it is registered, then one
//!   more observe (the next turn);
//! * the drain: sees KILL, sees `acked_generation >= g` (Acquire), then
//!   snapshots the registry (its spin loops are modelled as one look each,
//!   see the comment in the code).
//!
//! Asserted in every interleaving: no order is written after the gateway
//! acknowledged the kill generation, and every order written is in the
//! drain's snapshot. The admit step's fault switch (decide on the word
//! loaded at the top of the turn) must fail, so the model is not vacuous.
#![cfg(loom)]

use loom::sync::atomic::{AtomicU64, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;

use killswitch::control::state::trip_word;
use killswitch::control::{Mode, StateWord};
use killswitch::gateway::admit::{admit, observe, AdmitWords};
use killswitch::gateway::publish_ack;

fn model(broken: bool) {
    // Exhaustive search takes about 5 minutes on 2 cores; by default bound
    // the preemptions to 3 (as tokio's CI bounds its loom runs), which still
    // covers every interleaving of the trip between the gateway's load, its
    // acknowledgement and its write. `LOOM_MAX_PREEMPTIONS=...` overrides it
    // (unset the bound with a large value for the exhaustive run).
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(move || {
        let state = Arc::new(AtomicU64::new(0));
        let acked = Arc::new(AtomicU64::new(0));
        let acked_time = Arc::new(AtomicU64::new(0));
        let registry = Arc::new(Mutex::new(Vec::<u64>::new()));

        let tripper = {
            let state = state.clone();
            thread::spawn(move || trip_word(&*state, Mode::Kill).current().generation())
        };

        let gateway = {
            let (state, acked, acked_time, registry) = (
                state.clone(),
                acked.clone(),
                acked_time.clone(),
                registry.clone(),
            );
            thread::spawn(move || {
                // What reached the venue: (order id, generation the gateway
                // had acknowledged when writing it). Only this thread writes
                // to the venue, and it is read after the join.
                let mut wire = Vec::<(u64, u64)>::new();
                let mut my_ack = 0u64;
                let words = AdmitWords {
                    state: &*state,
                    acked_generation: &*acked,
                    acked_mono_ns: &*acked_time,
                };
                // The top of the turn.
                let turn_word = observe(&words, &mut my_ack, || 1);
                for id in 1..=2u64 {
                    let admitted = admit(
                        &words,
                        &mut my_ack,
                        || 1,
                        turn_word,
                        broken,
                        |w: StateWord| {
                            if w.mode() == Mode::Kill {
                                Err(())
                            } else {
                                Ok(())
                            }
                        },
                        || registry.lock().unwrap().push(id),
                    );
                    if admitted.is_ok() {
                        wire.push((id, my_ack));
                    }
                }
                // The next turn: acknowledge what is there now.
                observe(&words, &mut my_ack, || 1);
                wire
            })
        };

        let drain = {
            let (state, acked, registry) = (state.clone(), acked.clone(), registry.clone());
            thread::spawn(move || {
                // One look at each condition instead of a spin loop (loom
                // cannot explore unbounded spinning): an execution in which
                // a spinning drain succeeds is one where its last, successful
                // looks happen here; executions where it gives up prove
                // nothing and are harmless.
                let w = StateWord(state.load(Ordering::Acquire));
                if w.mode() != Mode::Kill {
                    return None;
                }
                if acked.load(Ordering::Acquire) < w.generation() {
                    return None;
                }
                Some(registry.lock().unwrap().clone())
            })
        };

        let g = tripper.join().unwrap();
        let wire = gateway.join().unwrap();
        let snapshot = drain.join().unwrap();
        for (id, ack_at_write) in &wire {
            assert!(
                *ack_at_write < g,
                "order {id} written after the gateway acknowledged kill generation {g}"
            );
            if let Some(snapshot) = &snapshot {
                assert!(
                    snapshot.contains(id),
                    "order {id} written but missing from the drain's snapshot {snapshot:?}"
                );
            }
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

/// The gateway's acknowledgement and its time, as `killswitch emergency`
/// reads them: generation (Acquire), then time. With the crate's
/// [`publish_ack`] the time read is never older than the acknowledgement
/// (here: never the previous acknowledgement's time, 0).
fn ack_time_model(publish: fn(&AtomicU64, &AtomicU64, u64, u64)) {
    loom::model(move || {
        let generation = Arc::new(AtomicU64::new(0));
        let time = Arc::new(AtomicU64::new(0));
        let gateway = {
            let (g, t) = (generation.clone(), time.clone());
            thread::spawn(move || publish(&g, &t, 1, 100))
        };
        let reader = {
            let (g, t) = (generation.clone(), time.clone());
            thread::spawn(move || {
                if g.load(Ordering::Acquire) >= 1 {
                    let seen = t.load(Ordering::Acquire);
                    assert_eq!(
                        seen, 100,
                        "read generation 1 with the time of an older acknowledgement"
                    );
                }
            })
        };
        gateway.join().unwrap();
        reader.join().unwrap();
    });
}

fn crate_publish(g: &AtomicU64, t: &AtomicU64, generation: u64, mono_ns: u64) {
    publish_ack(g, t, generation, mono_ns);
}

/// The order the gateway stored them in before issue 9.
fn generation_first(g: &AtomicU64, t: &AtomicU64, generation: u64, mono_ns: u64) {
    g.store(generation, Ordering::Release);
    t.store(mono_ns, Ordering::Release);
}

#[test]
fn the_ack_time_is_published_before_the_ack() {
    ack_time_model(crate_publish);
}

#[test]
#[should_panic(expected = "time of an older acknowledgement")]
fn publishing_the_generation_first_is_caught() {
    ack_time_model(generation_first);
}
