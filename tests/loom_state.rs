//! Loom model of trip / escalate / reset on the state word.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --test loom_state`.
//! Loom explores every interleaving (within its bounds) of the threads
//! below on the same code the control block runs (`trip_word`,
//! `scope_word`, `reset_word` are generic over the atomic type).
#![cfg(loom)]

use loom::sync::atomic::AtomicU64;
use loom::sync::Arc;
use loom::thread;
use std::sync::atomic::Ordering;

use killswitch::control::state::{reset_word, scope_word, trip_word, StateWord, Transition};
use killswitch::control::Mode;

fn changed(t: Transition) -> u64 {
    matches!(t, Transition::Changed { .. }) as u64
}

/// Two escalating trips race a reader: the reader never sees the mode go
/// down or the generation go back, the final mode is the strongest asked for,
/// and the generation counts exactly the changing calls.
#[test]
fn concurrent_trips_only_escalate() {
    loom::model(|| {
        let word = Arc::new(AtomicU64::new(0));
        let t1 = {
            let w = word.clone();
            thread::spawn(move || changed(trip_word(&*w, Mode::HaltNew)))
        };
        let t2 = {
            let w = word.clone();
            thread::spawn(move || changed(trip_word(&*w, Mode::Kill)))
        };
        let reader = {
            let w = word.clone();
            thread::spawn(move || {
                let a = StateWord(w.load(Ordering::Acquire));
                let b = StateWord(w.load(Ordering::Acquire));
                assert!(b.generation() >= a.generation());
                assert!(
                    b.mode() >= a.mode(),
                    "mode went down without a reset: {a:?} -> {b:?}"
                );
            })
        };
        let n = t1.join().unwrap() + t2.join().unwrap();
        reader.join().unwrap();
        let end = StateWord(word.load(Ordering::Acquire));
        assert_eq!(end.mode(), Mode::Kill);
        assert_eq!(end.generation(), n);
        assert!(
            n == 1 || n == 2,
            "Kill first makes HaltNew a no-op; else both change"
        );
    });
}

/// A trip races a reset: whichever is linearised last decides the final
/// state, every change bumps the generation once, and nothing is lost.
#[test]
fn trip_races_reset() {
    loom::model(|| {
        let word = Arc::new(AtomicU64::new(0));
        trip_word(&*word, Mode::ReduceOnly); // generation 1
        let tripper = {
            let w = word.clone();
            thread::spawn(move || trip_word(&*w, Mode::Kill))
        };
        let resetter = {
            let w = word.clone();
            thread::spawn(move || reset_word(&*w))
        };
        let t = tripper.join().unwrap();
        let r = resetter.join().unwrap();
        let end = StateWord(word.load(Ordering::Acquire));
        assert_eq!(end.generation(), 1 + changed(t) + changed(r));
        match (t, r) {
            // Trip first, reset last: everything cleared.
            (Transition::Changed { to: tt, .. }, Transition::Changed { from: rf, .. })
                if rf == tt =>
            {
                assert_eq!(end.mode(), Mode::Normal);
            }
            // Reset first, trip last: KILL stands.
            (Transition::Changed { from: tf, .. }, Transition::Changed { to: rt, .. })
                if tf == rt =>
            {
                assert_eq!(end.mode(), Mode::Kill);
            }
            other => panic!("impossible interleaving outcome {other:?} ending in {end:?}"),
        }
    });
}

/// A scoped trip and a global trip race: both bits survive, and the
/// generation counts both.
#[test]
fn scoped_and_global_trips_compose() {
    loom::model(|| {
        let word = Arc::new(AtomicU64::new(0));
        let s = {
            let w = word.clone();
            thread::spawn(move || scope_word(&*w))
        };
        let g = {
            let w = word.clone();
            thread::spawn(move || trip_word(&*w, Mode::HaltNew))
        };
        s.join().unwrap();
        g.join().unwrap();
        let end = StateWord(word.load(Ordering::Acquire));
        assert!(end.scoped());
        assert_eq!(end.mode(), Mode::HaltNew);
        assert_eq!(end.generation(), 2);
    });
}
