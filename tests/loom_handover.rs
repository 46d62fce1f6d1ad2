//! Model check of the hand-over request word (`killswitch::gateway::handover`)
//! with `loom`: the asker's deadline against the gateway reaching the
//! request.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --test loom_handover`.
//!
//! The gateway thread runs what `GatewayCore` does when it reaches the
//! request in its ring: [`take`], and only if that succeeds hand the
//! sessions over and [`mark_answered`]. The asker's deadline passes at
//! every point of that: it [`withdraw`]s, and if it could not, waits for
//! the answer. Asserted in every interleaving: an asker told "withdrawn"
//! sees no session handed over, ever (after the gateway thread is done
//! too); an asker that waited for the answer sees the sessions handed
//! over. The broken variant (the asker gives up at its deadline without
//! the compare-and-swap, as before the request word) must fail, so the
//! model is not vacuous.
#![cfg(loom)]

use std::sync::atomic::Ordering;

use loom::sync::atomic::{AtomicBool, AtomicU64};
use loom::sync::Arc;
use loom::thread;

use killswitch::gateway::handover::{mark_answered, phase_of, post, take, withdraw, ANSWERED};

fn deadline_model(asker_withdraws: bool) {
    loom::model(move || {
        let word = Arc::new(AtomicU64::new(0));
        let handed = Arc::new(AtomicBool::new(false));
        assert!(post(&*word, 1));
        let gateway = {
            let (word, handed) = (word.clone(), handed.clone());
            thread::spawn(move || {
                if take(&*word, 1) {
                    handed.store(true, Ordering::Relaxed);
                    mark_answered(&*word, 1);
                }
            })
        };
        let told_failed = if asker_withdraws {
            withdraw(&*word, 1)
        } else {
            phase_of(word.load(Ordering::Acquire)) != ANSWERED
        };
        if !told_failed {
            while phase_of(word.load(Ordering::Acquire)) != ANSWERED {
                thread::yield_now();
            }
            assert!(
                handed.load(Ordering::Relaxed),
                "told handed over, but no session was handed over"
            );
        }
        gateway.join().unwrap();
        if told_failed {
            assert!(
                !handed.load(Ordering::Relaxed),
                "told the hand-over failed, but the gateway handed the sessions over"
            );
        }
    });
}

#[test]
fn the_asker_and_the_gateway_never_disagree_on_the_outcome() {
    deadline_model(true);
}

#[test]
#[should_panic(expected = "told the hand-over failed, but the gateway handed the sessions over")]
fn an_asker_that_gives_up_without_withdrawing_is_caught() {
    deadline_model(false);
}
