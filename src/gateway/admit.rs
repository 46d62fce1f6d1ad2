//! The gateway's admit step: the part of the no-escape protocol (DESIGN.md,
//! way 1) that decides whether a new order may be written. The gateway
//! calls it for every new order; `tests/loom_drain.rs` calls the same
//! functions on loom's atomics, so the model checks this code, not a copy.
//!
//! The step, in this order:
//! 1. **observe**: load the state word (Acquire); a generation newer than
//!    the one acknowledged is published ([`publish_ack`], `fetch_max`,
//!    Release) before anything is decided on it;
//! 2. **decide** on a load of the state word made *after* that
//!    acknowledgement (the caller's gate check, with the scope levels);
//! 3. **register** the order (before the caller writes it to its venue).
//!
//! Why it is enough: the drain snapshots only after it loaded
//! `acked_generation >= g` (Acquire). Every order registered before the
//! acknowledgement of `g` happens-before that snapshot; every order decided
//! after it was decided on a word of generation `g` or newer, which KILL
//! refuses (modes only escalate until a reset).
//!
//! # The fault switch
//! `stale_decision` makes the step decide on `turn_word` (a load the caller
//! made before this order's observe, e.g. at the top of its loop's turn)
//! instead of a fresh load: the bug of hoisting the load out of the loop.
//! It is `false` in the gateway unless the crate is built with the
//! `fault-injection` feature and
//! `GatewayConfig::fault_stale_admit` is set. The loom model
//! (`a_gateway_deciding_on_a_stale_load_is_caught`) and the stress test
//! (`the_stale_admit_fault_is_caught`, with `--features fault-injection`)
//! must both catch it: they are not vacuous.
//!
//! # Under a lease
//! An engine that holds the active role as a lease
//! ([`crate::control::lease`]) calls [`admit_leased`] instead: the same
//! step, after checking that the block's epoch is still its own (`G3`, a
//! SeqCst load of `lease_holder`). A newer epoch refuses the order
//! ([`Fenced`]) and the gateway writes nothing more. That check alone
//! cannot close the gap between a check and its write (a gateway can pass
//! it, then stop); the turn marker of the lease module closes it for the
//! taker, which waits for the turn to end (`tests/loom_lease.rs`).

use std::sync::atomic::Ordering;

use super::publish_ack;
use crate::control::lease::still_held;
use crate::control::state::AtomicWord;
use crate::control::StateWord;

/// The shared words the admit step reads and writes: the state word and
/// the gateway's acknowledgement (generation and its time).
#[derive(Clone, Copy)]
pub struct AdmitWords<'a, W: ?Sized> {
    /// The state word (read only).
    pub state: &'a W,
    /// The gateway's acknowledged generation (only raised).
    pub acked_generation: &'a W,
    /// When it acknowledged it.
    pub acked_mono_ns: &'a W,
}

/// Step 1: loads the state word and, if its generation is newer than
/// `*acked` (the gateway's own copy), publishes it. Returns the word.
#[inline]
pub fn observe<W: AtomicWord + ?Sized>(
    words: &AdmitWords<'_, W>,
    acked: &mut u64,
    now: impl FnOnce() -> u64,
) -> StateWord {
    let w = StateWord(words.state.load_word(Ordering::Acquire));
    let g = w.generation();
    if g > *acked {
        *acked = g;
        publish_ack(words.acked_generation, words.acked_mono_ns, g, now());
    }
    w
}

/// Steps 1 to 3 for one new order: observe, `decide` on a load made after
/// the acknowledgement (`Err` refuses), `register`. Returns what `register`
/// returned, or the refusal; the caller writes a registered order to its
/// venue next. `turn_word` and `stale_decision` are the fault switch (see
/// the module docs); the gateway passes `false`.
#[inline]
pub fn admit<W: AtomicWord + ?Sized, R, E>(
    words: &AdmitWords<'_, W>,
    acked: &mut u64,
    now: impl FnOnce() -> u64,
    turn_word: StateWord,
    stale_decision: bool,
    decide: impl FnOnce(StateWord) -> Result<(), E>,
    register: impl FnOnce() -> R,
) -> Result<R, E> {
    observe(words, acked, now);
    let w = if stale_decision {
        turn_word
    } else {
        StateWord(words.state.load_word(Ordering::Acquire))
    };
    decide(w)?;
    Ok(register())
}

/// The admit step refused: the block's lease epoch is no longer the
/// gateway's (a newer holder took the active role). Write nothing more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fenced;

/// [`admit`] under a lease: first checks that `lease_holder` still holds
/// `mine` (epoch << 32 | pid), in the same step and before the state
/// word is observed, so a fenced gateway neither acknowledges nor
/// decides; then observe, decide, register as [`admit`] does.
#[allow(clippy::too_many_arguments)] // admit's arguments plus the fence pair
#[inline]
pub fn admit_leased<W: AtomicWord + ?Sized, R, E>(
    lease_holder: &W,
    mine: u64,
    words: &AdmitWords<'_, W>,
    acked: &mut u64,
    now: impl FnOnce() -> u64,
    turn_word: StateWord,
    stale_decision: bool,
    decide: impl FnOnce(StateWord) -> Result<(), E>,
    register: impl FnOnce() -> R,
) -> Result<Result<R, E>, Fenced> {
    if !still_held(lease_holder, mine) {
        return Err(Fenced);
    }
    Ok(admit(
        words,
        acked,
        now,
        turn_word,
        stale_decision,
        decide,
        register,
    ))
}
