//! The failover's hand-over request, between the thread that asks for it
//! ([`GatewayHandle::hand_over`](super::GatewayHandle::hand_over)) and the
//! gateway thread that does it (only that thread holds the sessions and
//! the lease).
//!
//! The request travels in the strategies' ring, behind the orders already
//! in it (they go out first), but **one request word decides who has
//! it**: the asker writes `(id, ASKED)` before it enqueues the request;
//! the gateway, when it reaches the request, takes it with one
//! compare-and-swap `(id, ASKED) -> (id, TAKEN)`, hands the sessions over,
//! writes its answer and stores `(id, ANSWERED)`. An asker whose deadline
//! passes withdraws with one compare-and-swap `(id, ASKED) -> (id,
//! WITHDRAWN)`. Exactly one of the two succeeds, so the outcome is never
//! in doubt:
//! * withdrawn: the gateway drops the request when it reaches it; no
//!   session was asked to hand over, the lease is still held and the
//!   engine trades on;
//! * taken: the asker waits for the answer, which the gateway gives in the
//!   same turn (a venue's `hand_over`, like every [`crate::venue::Venue`]
//!   call on that thread, does not block).
//!
//! Before this word the asker gave up at its deadline while the request
//! stayed in the ring: the gateway could still hand the sessions over
//! afterwards, to a caller that had been told the hand-over failed.
//!
//! # Invariants
//! * The gateway hands sessions over only for a request it took (its
//!   compare-and-swap from `ASKED` succeeded), and answers every request
//!   it took.
//! * `WITHDRAWN` and `TAKEN` are each reached from `ASKED` only, by one
//!   compare-and-swap: never both for one id.
//! * The answer is written before `ANSWERED` is stored (Release) and read
//!   after it is loaded (Acquire); it names the request it answers.
//! * One request is outstanding at a time: a new one is posted only over
//!   a word that is withdrawn or answered.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{GatewayCore, GatewayHandle, StrategyRequest, FENCED_WRITE};
use crate::backoff::{Backoff, BackoffConfig};
use crate::control::state::AtomicWord;
use crate::order::ScopeIndex;
use crate::order::ScopeTags;
use crate::registry::Refusal;
use crate::venue::VenueError;

/// Phase of a request word: the asker's deadline passed first (and the
/// initial word, id 0: nothing asked yet).
pub const WITHDRAWN: u64 = 0;
/// Phase: posted, not yet taken or withdrawn.
pub const ASKED: u64 = 1;
/// Phase: the gateway took it and is handing the sessions over.
pub const TAKEN: u64 = 2;
/// Phase: the gateway answered it.
pub const ANSWERED: u64 = 3;

/// The request word of request `id` in `phase`.
#[inline]
pub fn word(id: u64, phase: u64) -> u64 {
    id << 2 | phase
}

/// The phase of a request word.
#[inline]
pub fn phase_of(word: u64) -> u64 {
    word & 3
}

/// The request id of a request word.
#[inline]
pub fn id_of(word: u64) -> u64 {
    word >> 2
}

/// One compare-and-swap from exactly `from` to `to`, retried only while
/// the word still holds `from` (`cas_word` may fail spuriously).
#[inline]
fn transition<W: AtomicWord + ?Sized>(w: &W, from: u64, to: u64) -> bool {
    loop {
        if w.load_word(Ordering::Acquire) != from {
            return false;
        }
        if w.cas_word(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return true;
        }
    }
}

/// The asker: posts request `id` (`id >= 1`, above every earlier one);
/// false while another request is outstanding (asked or taken).
pub fn post<W: AtomicWord + ?Sized>(w: &W, id: u64) -> bool {
    loop {
        let seen = w.load_word(Ordering::Acquire);
        if matches!(phase_of(seen), ASKED | TAKEN) {
            return false;
        }
        if transition(w, seen, word(id, ASKED)) {
            return true;
        }
    }
}

/// The gateway, reaching request `id` in its ring: true when it took it
/// (it must hand over and answer); false when it was withdrawn (or is a
/// stale entry of an older request): drop it, do nothing.
pub fn take<W: AtomicWord + ?Sized>(w: &W, id: u64) -> bool {
    transition(w, word(id, ASKED), word(id, TAKEN))
}

/// The asker, at its deadline: true when it withdrew request `id` (the
/// gateway will never act on it); false when the gateway took it first
/// (wait for its answer).
pub fn withdraw<W: AtomicWord + ?Sized>(w: &W, id: u64) -> bool {
    transition(w, word(id, ASKED), word(id, WITHDRAWN))
}

/// The gateway, once its answer to request `id` is written.
pub fn mark_answered<W: AtomicWord + ?Sized>(w: &W, id: u64) {
    w.store_word(word(id, ANSWERED), Ordering::Release);
}

/// One session's part of a hand-over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionHandOver {
    /// Venue scope index.
    pub venue: ScopeIndex,
    /// Venue name.
    pub name: String,
    /// `Ok`: handed over (no cancels; the venue holds the resting orders
    /// for the designated backup). `Err`: why not: that venue may cancel
    /// the orders or leave them orphaned, and the operator must look.
    pub result: Result<(), String>,
}

/// What the gateway did with a hand-over request it took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandOverAnswer {
    /// Every session was asked to hand over (results in session order),
    /// then the lease was released: this gateway is fenced for good.
    Released(Vec<SessionHandOver>),
    /// Nothing was asked of any session: the gateway runs without a lease
    /// (no backup to hand over to).
    NoLease,
    /// Nothing was asked of any session: the lease was no longer this
    /// gateway's (a newer epoch holds it, or it was already handed over).
    Fenced,
}

/// The request word and the answer, shared by the asker and the gateway.
#[derive(Debug, Default)]
pub(crate) struct HandOverDesk {
    word: AtomicU64,
    next_id: AtomicU64,
    /// The answer and the request it answers.
    answer: Mutex<Option<(u64, HandOverAnswer)>>,
}

impl HandOverDesk {
    /// Posts a new request; `None` while one is outstanding.
    pub(crate) fn post(&self) -> Option<u64> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        post(&self.word, id).then_some(id)
    }

    pub(crate) fn take(&self, id: u64) -> bool {
        take(&self.word, id)
    }

    pub(crate) fn withdraw(&self, id: u64) -> bool {
        withdraw(&self.word, id)
    }

    /// The gateway's answer to request `id` (which it took).
    pub(crate) fn answer(&self, id: u64, answer: HandOverAnswer) {
        *self.answer.lock().unwrap_or_else(|p| p.into_inner()) = Some((id, answer));
        mark_answered(&self.word, id);
    }

    /// The phase of request `id` (`WITHDRAWN` too when a newer request
    /// replaced it).
    pub(crate) fn phase(&self, id: u64) -> u64 {
        let w = self.word.load(Ordering::Acquire);
        if id_of(w) == id {
            phase_of(w)
        } else {
            WITHDRAWN
        }
    }

    /// The answer to request `id`, once answered.
    pub(crate) fn take_answer(&self, id: u64) -> Option<HandOverAnswer> {
        if self.phase(id) != ANSWERED {
            return None;
        }
        let mut g = self.answer.lock().unwrap_or_else(|p| p.into_inner());
        match g.take() {
            Some((answered, a)) if answered == id => Some(a),
            other => {
                *g = other;
                None
            }
        }
    }
}

/// Why [`GatewayHandle::hand_over`] handed nothing over. In every case no
/// session was asked to hand over unless the variant says otherwise.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandOverError {
    /// Another hand-over request is outstanding (taken, not answered).
    #[error("a hand-over request is already outstanding: wait for its answer")]
    Outstanding,
    /// The deadline passed before the gateway took the request, and it
    /// was withdrawn: the gateway will never act on it.
    #[error("the gateway did not take the hand-over request within {waited:?} ({why}); it was withdrawn: no session was handed over, this engine still holds the lease and trades on. Retry with a longer deadline, or stop the engine another way")]
    Withdrawn {
        /// How long the asker waited.
        waited: Duration,
        /// What held the request (ring full, gateway busy or fenced).
        why: &'static str,
    },
    /// The gateway runs without a lease: there is no backup to hand to.
    #[error("the gateway runs without an active-role lease: nothing fences it, so it hands nothing over")]
    NoLease,
    /// The lease was no longer the gateway's when it took the request.
    #[error("the gateway no longer held the active-role lease (a newer epoch holds it, or it was already handed over): no session was handed over by this request")]
    Fenced,
    /// The gateway answered, but the answer was no longer there to read
    /// (another caller took it): whether sessions were handed over is told
    /// by the lease (`Runtime::handed_over`).
    #[error("the gateway answered the hand-over request but its answer was taken by another caller: read the lease to know whether sessions were handed over")]
    AnswerLost,
    /// The gateway thread died: before taking the request (nothing was
    /// handed over), or after (some sessions may have been handed over;
    /// the lease was given back as the thread ended).
    #[error("the gateway thread died {when}: {why}")]
    GatewayDied {
        /// "before taking the hand-over request: nothing was handed over"
        /// or "during the hand-over: …".
        when: &'static str,
        /// Why it died.
        why: String,
    },
}

impl GatewayHandle {
    /// Asks the gateway to hand every venue session over to a designated
    /// backup ([`crate::venue::Venue::hand_over`]) and release its lease,
    /// and waits for its answer: the per-session results once every
    /// session was asked and the lease released.
    ///
    /// `deadline` bounds the wait for the gateway to *take* the request
    /// (orders already in the ring go out first). When it passes the
    /// request is withdrawn ([`HandOverError::Withdrawn`]) unless the
    /// gateway took it first, one compare-and-swap deciding (see the
    /// module docs); a request taken is waited for to its answer, given in
    /// the same gateway turn, so the caller is never told "failed" about a
    /// hand-over that then happens, nor "done" about one that did not.
    pub fn hand_over(&self, deadline: Duration) -> Result<Vec<SessionHandOver>, HandOverError> {
        let asked = Instant::now();
        let end = asked + deadline;
        let Some(id) = self.hand_overs.post() else {
            return Err(HandOverError::Outstanding);
        };
        let withdrawn = |why| {
            if self.hand_overs.withdraw(id) {
                Some(HandOverError::Withdrawn {
                    waited: asked.elapsed(),
                    why,
                })
            } else {
                None
            }
        };
        let mut enqueued = false;
        let mut wait = Backoff::new(BackoffConfig {
            max_sleep: Duration::from_micros(50),
            ..BackoffConfig::default()
        });
        loop {
            if !enqueued {
                enqueued = self.sender.hand_over(id).is_ok();
            }
            match self.hand_overs.phase(id) {
                ANSWERED => break,
                TAKEN => {
                    if let Err(why) = self.check() {
                        return Err(HandOverError::GatewayDied {
                            when: "during the hand-over: some sessions may have been handed over, and the lease was given back as the thread ended; check every venue's orders",
                            why,
                        });
                    }
                }
                _ => {
                    if let Err(why) = self.check() {
                        if withdrawn("gateway dead").is_some() {
                            return Err(HandOverError::GatewayDied {
                                when:
                                    "before taking the hand-over request: nothing was handed over",
                                why,
                            });
                        }
                        continue;
                    }
                    if Instant::now() >= end {
                        let why = if enqueued {
                            "it was busy, held back, or fenced"
                        } else {
                            "its request ring stayed full"
                        };
                        if let Some(e) = withdrawn(why) {
                            return Err(e);
                        }
                        // Taken just before the deadline: wait for the answer.
                        continue;
                    }
                }
            }
            wait.snooze();
        }
        match self.hand_overs.take_answer(id) {
            Some(HandOverAnswer::Released(sessions)) => Ok(sessions),
            Some(HandOverAnswer::NoLease) => Err(HandOverError::NoLease),
            Some(HandOverAnswer::Fenced) => Err(HandOverError::Fenced),
            // Only this call takes the answer to its own request (the
            // handle is not shared between threads); should another ever
            // take it, say so rather than panic: the lease tells the rest.
            None => Err(HandOverError::AnswerLost),
        }
    }
}

/// The gateway thread's side.
impl GatewayCore {
    /// A hand-over request reached in the ring: acted on only if the
    /// gateway takes it before the asker withdraws it (see the module docs).
    /// True when the lease was released.
    pub(super) fn hand_over(&mut self, request: u64) -> bool {
        if !self.hand_overs.take(request) {
            return false; // withdrawn: the asker was told nothing happened
        }
        let answer = self.hand_over_all();
        let released = matches!(answer, HandOverAnswer::Released(_));
        self.hand_overs.answer(request, answer);
        released
    }

    /// The failover's hand-over, inside a turn that holds the lease: every
    /// session hands over (no cancels: the backup adopts the orders), then
    /// the lease is given back and this gateway is fenced for good (it
    /// refuses every later order and writes nothing more, no logout at its
    /// stop either). Orders admitted before this request went out before
    /// it (one ring, in order).
    fn hand_over_all(&mut self) -> HandOverAnswer {
        let Some(lease) = self.lease.as_mut() else {
            return HandOverAnswer::NoLease;
        };
        if lease.is_fenced() || !lease.still_ours() {
            return HandOverAnswer::Fenced;
        }
        let sessions = self
            .sessions
            .iter_mut()
            .map(|s| SessionHandOver {
                venue: s.index,
                name: s.venue.name().to_string(),
                result: s.venue.hand_over().map_err(|e| e.to_string()),
            })
            .collect();
        lease.release_fenced();
        HandOverAnswer::Released(sessions)
    }

    /// A fenced gateway's turn (the lease went to a newer epoch, or was
    /// handed over): nothing is written to a venue or the block, but the
    /// ring is still emptied so every strategy hears why its order went
    /// nowhere ([`Refusal::Fenced`]) instead of waiting on a ring nobody
    /// reads, and a hand-over asked now gets its answer. Off the order
    /// path of a gateway that holds its lease.
    pub(super) fn refuse_fenced(&mut self) -> bool {
        let epoch = self.lease.as_ref().map_or(0, |l| l.epoch());
        let mut work = false;
        for _ in 0..self.orders_per_turn {
            let Some(request) = self.orders.pop() else {
                break;
            };
            work = true;
            match request {
                StrategyRequest::New(order) | StrategyRequest::Replace { new: order, .. } => self
                    .registry
                    .refused(order.id, order.tags, Refusal::Fenced { epoch }),
                StrategyRequest::Cancel { id, strategy } => self.registry.refused(
                    id,
                    ScopeTags {
                        strategy,
                        ..ScopeTags::default()
                    },
                    Refusal::CancelNotWritten(VenueError::Unsupported(FENCED_WRITE)),
                ),
                StrategyRequest::HandOver { request } => {
                    if self.hand_overs.take(request) {
                        self.hand_overs.answer(request, HandOverAnswer::Fenced);
                    }
                }
                // A fenced gateway asks nothing of a venue: positions and
                // logouts are the new holder's (a logout could have the
                // venue cancel the orders it adopted).
                StrategyRequest::RequestPositions | StrategyRequest::LogoutAll => {}
            }
        }
        work
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The three outcomes of one request, and a stale ring entry of a
    /// withdrawn request that must not be taken once a newer one is posted.
    #[test]
    fn one_compare_and_swap_decides_between_the_gateway_and_the_deadline() {
        let desk = HandOverDesk::default();
        let first = desk.post().unwrap();
        assert!(desk.post().is_none(), "one request at a time");
        assert!(desk.withdraw(first), "not taken yet: withdrawn");
        assert!(!desk.take(first), "a withdrawn request is never taken");
        let second = desk.post().unwrap();
        assert!(
            !desk.take(first),
            "the stale entry does not take the new one"
        );
        assert!(desk.take(second));
        assert!(!desk.withdraw(second), "taken: too late to withdraw");
        assert!(desk.post().is_none(), "taken: still outstanding");
        assert_eq!(desk.take_answer(second), None, "not answered yet");
        desk.answer(second, HandOverAnswer::Fenced);
        assert_eq!(desk.take_answer(first), None, "not the answer to the first");
        assert_eq!(desk.take_answer(second), Some(HandOverAnswer::Fenced));
        assert!(desk.post().is_some(), "answered: a new request may follow");
    }
}
