//! Model check of the active-role lease (`killswitch::control::lease`) with
//! `loom`: two would-be actives around one takeover.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --test loom_lease`.
//!
//! Both sides run the crate's own functions on loom's atomics: the old
//! holder's gateway brackets its turn with [`enter_sends`] / [`exit_sends`]
//! and admits each order with [`admit_leased`] (the epoch check in the admit
//! step), as `GatewayCore::turn` does; the taker raises the epoch with
//! [`try_acquire`] and waits with [`predecessor_busy`] /
//! [`predecessor_done`] before its first send, as `Lease::acquire` does.
//!
//! Asserted in every interleaving: on the wire (one venue, the order in
//! which the writes happen), no order of the old epoch comes after an order
//! of the new one: after the takeover point the two never interleave. Two
//! broken variants must fail, so the model is not vacuous: a taker that
//! skips the wait for the predecessor's turn, and a gateway that checks
//! the epoch in the admit step but does not mark its turn.
//!
//! A second model races two takers for a dead holder's lease: exactly one
//! wins, and the block names it.
#![cfg(loom)]

use loom::sync::atomic::AtomicU64;
use loom::sync::{Arc, Mutex};
use loom::thread;

use killswitch::control::lease::{
    enter_sends, epoch_of, exit_sends, pid_of, predecessor_busy, predecessor_done, try_acquire,
    Claimant, LeaseWords, Refused,
};
use killswitch::control::StateWord;
use killswitch::gateway::admit::{admit_leased, AdmitWords, Fenced};

/// The block's words: the four lease words and the three the admit step
/// uses (state word, acknowledged generation and its time).
struct Block {
    holder: AtomicU64,
    holder_start: AtomicU64,
    expiry: AtomicU64,
    in_send: AtomicU64,
    state: AtomicU64,
    acked: AtomicU64,
    acked_time: AtomicU64,
}

impl Block {
    fn new() -> Block {
        Block {
            holder: AtomicU64::new(0),
            holder_start: AtomicU64::new(0),
            expiry: AtomicU64::new(0),
            in_send: AtomicU64::new(0),
            state: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            acked_time: AtomicU64::new(0),
        }
    }

    fn lease(&self) -> LeaseWords<'_, AtomicU64> {
        LeaseWords {
            holder: &self.holder,
            holder_start: &self.holder_start,
            expiry: &self.expiry,
            in_send: &self.in_send,
        }
    }

    fn admit_words(&self) -> AdmitWords<'_, AtomicU64> {
        AdmitWords {
            state: &self.state,
            acked_generation: &self.acked,
            acked_mono_ns: &self.acked_time,
        }
    }
}

const OLD: Claimant = Claimant {
    pid: 10,
    start_ticks: 1,
};
const TAKER: Claimant = Claimant {
    pid: 20,
    start_ticks: 2,
};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// The crate's protocol.
    Correct,
    /// The taker sends without waiting for the predecessor's turn.
    TakerSkipsWait,
    /// The gateway checks the epoch per order but sets no turn marker.
    GatewaySkipsMarker,
}

/// One writing turn of a gateway holding `mine`: marker, then `orders`
/// orders through the admit step, each written to `wire` as its epoch.
/// Returns false once fenced.
fn gateway_turn(
    block: &Block,
    mine: u64,
    orders: usize,
    wire: &Mutex<Vec<u64>>,
    mark_turn: bool,
) -> bool {
    if mark_turn && !enter_sends(&block.lease(), mine) {
        return false;
    }
    let mut acked = 0;
    let mut live = true;
    for _ in 0..orders {
        let admitted = admit_leased(
            &block.holder,
            mine,
            &block.admit_words(),
            &mut acked,
            || 1,
            StateWord(0),
            false,
            |_w: StateWord| Ok::<(), ()>(()),
            || (),
        );
        match admitted {
            // The venue write, after the admit step registered it.
            Ok(Ok(())) => wire.lock().unwrap().push(epoch_of(mine)),
            Ok(Err(())) => unreachable!("the model's gate allows everything"),
            Err(Fenced) => {
                live = false;
                break;
            }
        }
    }
    if mark_turn {
        exit_sends(&block.lease(), mine);
    }
    live
}

fn takeover_model(variant: Variant) {
    // Bounded preemptions, as tests/loom_drain.rs (LOOM_MAX_PREEMPTIONS
    // overrides it).
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(move || {
        let block = Arc::new(Block::new());
        // The old holder took the lease at t=0 for 100 ns; the taker
        // comes at t=1000, so it has lapsed (the holder was stopped).
        let old = try_acquire(&block.lease(), OLD, 0, 100, |_, _| true).expect("free lease");
        let wire = Arc::new(Mutex::new(Vec::<u64>::new()));

        let old_gateway = {
            let (block, wire) = (block.clone(), wire.clone());
            thread::spawn(move || {
                let mark = variant != Variant::GatewaySkipsMarker;
                for _ in 0..2 {
                    if !gateway_turn(&block, old.word, 1, &wire, mark) {
                        break;
                    }
                }
            })
        };

        let taker = {
            let (block, wire) = (block.clone(), wire.clone());
            thread::spawn(move || {
                let mine = try_acquire(&block.lease(), TAKER, 1000, 100, |_, _| true)
                    .expect("a lapsed lease is taken");
                assert_eq!(mine.epoch, old.epoch + 1, "a taker raises the epoch by one");
                assert_eq!(mine.predecessor, OLD.pid);
                if variant != Variant::TakerSkipsWait {
                    if let Some(seen) = predecessor_busy(&block.lease(), mine.word) {
                        while !predecessor_done(&block.lease(), seen) {
                            thread::yield_now();
                        }
                    }
                }
                let mark = variant != Variant::GatewaySkipsMarker;
                assert!(
                    gateway_turn(&block, mine.word, 1, &wire, mark),
                    "the new holder is never fenced here"
                );
            })
        };

        old_gateway.join().unwrap();
        taker.join().unwrap();
        let wire = wire.lock().unwrap().clone();
        let first_new = wire.iter().position(|&e| e == old.epoch + 1);
        assert!(first_new.is_some(), "the taker sent its order: {wire:?}");
        if let Some(first_new) = first_new {
            let late = wire[first_new..]
                .iter()
                .filter(|&&e| e == old.epoch)
                .count();
            assert_eq!(
                late, 0,
                "old epoch sent after the new epoch's first send: wire {wire:?}"
            );
        }
    });
}

#[test]
fn a_fenced_gateway_sends_nothing_after_the_takers_first_send() {
    takeover_model(Variant::Correct);
}

#[test]
#[should_panic(expected = "old epoch sent after the new epoch's first send")]
fn a_taker_that_does_not_wait_for_the_predecessors_turn_is_caught() {
    takeover_model(Variant::TakerSkipsWait);
}

#[test]
#[should_panic(expected = "old epoch sent after the new epoch's first send")]
fn a_gateway_that_does_not_mark_its_turn_is_caught() {
    takeover_model(Variant::GatewaySkipsMarker);
}

#[test]
fn two_takers_of_a_dead_holders_lease_one_wins() {
    loom::model(|| {
        let block = Arc::new(Block::new());
        // The old holder's lease has not lapsed (expiry 10^6 at t=1000),
        // but the holder is dead: only the judge of liveness lets it go.
        try_acquire(&block.lease(), OLD, 0, 1_000_000, |_, _| true).expect("free lease");
        let alive = |pid: u32, _ticks: Option<u32>| pid != OLD.pid;
        let takers: Vec<_> = [21u32, 22]
            .into_iter()
            .map(|pid| {
                let block = block.clone();
                thread::spawn(move || {
                    let me = Claimant {
                        pid,
                        start_ticks: 3,
                    };
                    try_acquire(&block.lease(), me, 1000, 1_000_000, alive)
                })
            })
            .collect();
        let results: Vec<_> = takers.into_iter().map(|t| t.join().unwrap()).collect();
        let winners: Vec<_> = results.iter().filter_map(|r| r.ok()).collect();
        assert_eq!(winners.len(), 1, "exactly one taker wins: {results:?}");
        for r in &results {
            if let Err(refused) = r {
                assert!(
                    matches!(refused, Refused::Held { epoch: 2, .. }),
                    "the loser is refused by the winner's lease: {refused:?}"
                );
            }
        }
        let word = block.holder.load(loom::sync::atomic::Ordering::SeqCst);
        assert_eq!(word, winners[0].word, "the block names the winner");
        assert_eq!((epoch_of(word), pid_of(word)), (2, pid_of(winners[0].word)));
    });
}
