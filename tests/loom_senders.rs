//! Model check of the several-senders no-escape protocol (DESIGN.md, way
//! 2) with `loom`: a tripper, a sending thread that writes to its venue
//! itself, and the drain.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --test loom_senders`.
//!
//! The sender runs the crate's own steps ([`killswitch::senders::protocol`]:
//! `enter` = `in_send` odd, fence, load the state word; `leave` = even),
//! registering and "writing" each order it is allowed to send in between;
//! the drain runs `drain_barrier` and `inside` after it has seen the kill.
//! loom has no `membarrier`, so the model checks the protocol's fallback
//! form, a SeqCst fence on both sides (what `membarrier` stands for: a full
//! barrier run in every other thread of the process).
//!
//! Asserted in every interleaving: if the drain snapshots (it saw the
//! kill, and every sender it found inside a send has left it), every order
//! written is in its snapshot. A sender without its fence (the membarrier
//! form's sender, whose other half loom cannot model) must fail the model,
//! so it is not vacuous.
#![cfg(loom)]

use loom::sync::atomic::{AtomicU64, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;

use killswitch::control::state::trip_word;
use killswitch::control::{Mode, StateWord};
use killswitch::senders::protocol::{drain_barrier, enter, inside, leave};

fn model(sender_fences: bool) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(move || {
        let state = Arc::new(AtomicU64::new(0));
        let in_send = Arc::new(AtomicU64::new(0));
        let registry = Arc::new(Mutex::new(Vec::<u64>::new()));

        let tripper = {
            let state = state.clone();
            thread::spawn(move || {
                trip_word(&*state, Mode::Kill);
            })
        };

        let sender = {
            let (state, in_send, registry) = (state.clone(), in_send.clone(), registry.clone());
            thread::spawn(move || {
                // What this thread wrote to its venue. Read after the join.
                let mut wire = Vec::new();
                let mut seq = 0;
                for id in 1..=2u64 {
                    let w = enter(&*in_send, seq, &*state, sender_fences);
                    if w.mode() != Mode::Kill {
                        registry.lock().unwrap().push(id);
                        wire.push(id);
                    }
                    leave(&*in_send, seq);
                    seq += 2;
                }
                wire
            })
        };

        let drain = {
            let (state, in_send, registry) = (state.clone(), in_send.clone(), registry.clone());
            thread::spawn(move || {
                // One look per wait instead of a spin (loom cannot explore
                // unbounded spinning): executions where the drain gives up
                // prove nothing and are harmless.
                let w = StateWord(state.load(Ordering::Acquire));
                if w.mode() != Mode::Kill {
                    return None;
                }
                drain_barrier(false);
                if let Some(v) = inside(&*in_send) {
                    if in_send.load(Ordering::Acquire) == v {
                        return None;
                    }
                }
                Some(registry.lock().unwrap().clone())
            })
        };

        tripper.join().unwrap();
        let wire = sender.join().unwrap();
        if let Some(snapshot) = drain.join().unwrap() {
            for id in &wire {
                assert!(
                    snapshot.contains(id),
                    "order {id} written but missing from the drain's snapshot {snapshot:?}"
                );
            }
        }
    });
}

#[test]
fn no_order_a_sender_writes_escapes_the_drain_snapshot() {
    model(true);
}

#[test]
#[should_panic(expected = "missing from the drain's snapshot")]
fn a_sender_without_its_fence_is_caught() {
    model(false);
}
