//! Loom model of trip / escalate / reset on the state word.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --test loom_state`.
//! Loom explores every interleaving (within its bounds) of the threads
//! below on the same code the control block runs (`trip_word`,
//! `scope_word`, `reset_word` are generic over the atomic type).
//!
//! The trip-vs-reset model holds the rule of issue 9: a reset clears only
//! the generation it names (the one the operator saw); a trip it did not
//! name stays in force. The unconditional reset the crate had before
//! (`reset_before_issue_9` below) must fail that model, so it is not
//! vacuous.
#![cfg(loom)]

use loom::sync::atomic::AtomicU64;
use loom::sync::Arc;
use loom::thread;
use std::sync::atomic::Ordering;

use killswitch::control::state::{
    reset_word, scope_word, trip_word, AtomicWord, StateWord, Transition, GENERATION_SHIFT,
};
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

/// The reset of the crate before issue 9: a CAS loop that clears whatever
/// the word holds when it gets there, including a trip nobody saw. Kept here
/// only to show that the model below catches it.
fn reset_before_issue_9(word: &AtomicU64, _expected: u64) -> Result<Transition, StateWord> {
    let mut cur = word.load_word(Ordering::Acquire);
    loop {
        let w = StateWord(cur);
        if !w.is_active() {
            return Ok(Transition::Unchanged(w));
        }
        let next = StateWord((w.generation() + 1) << GENERATION_SHIFT);
        match word.cas_word(cur, next.0, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Ok(Transition::Changed { from: w, to: next }),
            Err(actual) => cur = actual,
        }
    }
}

type Reset = fn(&AtomicU64, u64) -> Result<Transition, StateWord>;

fn crate_reset(word: &AtomicU64, expected: u64) -> Result<Transition, StateWord> {
    reset_word(word, expected)
}

/// A trip races a reset. The resetter first reads the word (the operator
/// looking at `status`, or the CLI reading it under the file lock), then
/// resets naming that generation; a lock-free trip to KILL lands anywhere
/// around it. Every change bumps the generation once, and a KILL the reset
/// did not name (its generation is newer than the one the reset read)
/// must still be in force at the end.
fn trip_races_reset(reset: Reset) {
    loom::model(move || {
        let word = Arc::new(AtomicU64::new(0));
        trip_word(&*word, Mode::ReduceOnly); // generation 1
        let tripper = {
            let w = word.clone();
            thread::spawn(move || trip_word(&*w, Mode::Kill))
        };
        let resetter = {
            let w = word.clone();
            thread::spawn(move || {
                let seen = StateWord(w.load(Ordering::Acquire)).generation();
                (seen, reset(&w, seen))
            })
        };
        let t = tripper.join().unwrap();
        let (seen, r) = resetter.join().unwrap();
        let end = StateWord(word.load(Ordering::Acquire));
        let reset_changed = matches!(r, Ok(Transition::Changed { .. }));
        assert_eq!(
            end.generation(),
            1 + changed(t) + reset_changed as u64,
            "every change bumps the generation once: {t:?} {r:?} {end:?}"
        );
        if let Transition::Changed { to: killed, .. } = t {
            if seen < killed.generation() {
                // The reset did not name the KILL: it must stand.
                assert_eq!(
                    end.mode(),
                    Mode::Kill,
                    "a reset that named generation {seen} erased the KILL of generation {}: {r:?}",
                    killed.generation()
                );
                assert!(
                    r.is_err()
                        || matches!(r, Ok(Transition::Changed { to, .. }) if to.generation() < killed.generation())
                );
            } else {
                // It saw the KILL and named it: cleared.
                assert_eq!(end.mode(), Mode::Normal);
            }
        }
    });
}

#[test]
fn a_reset_never_erases_a_trip_it_did_not_name() {
    trip_races_reset(crate_reset);
}

/// The model is not vacuous: the unconditional reset of before fails it.
#[test]
#[should_panic(expected = "erased the KILL")]
fn the_unconditional_reset_of_before_fails_the_model() {
    trip_races_reset(reset_before_issue_9);
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
