//! A role slot of the block (the gateway role, the standby role): one word
//! that holds its claimant (pid | low 32 bits of its start ticks), claimed
//! by compare-and-swap and given back by the holder alone.
//!
//! # Invariants
//! * The word changes only by compare-and-swap: 0 -> claim, a claim judged
//!   takeable -> claim, own claim -> 0 (the holder's drop).
//! * A live claimant's word is taken only when the caller's test says so
//!   (a lease's fenced predecessor); otherwise never, even from this
//!   process.

use std::sync::atomic::{AtomicU64, Ordering};

use super::proc_start_ticks;

/// Packs a claimant: pid in the low 32 bits, the low 32 bits of its start
/// ticks in the high 32 (never 0: a pid is never 0).
pub(super) fn claim_word(pid: u32, start_ticks: u64) -> u64 {
    (start_ticks & 0xffff_ffff) << 32 | pid as u64
}

/// True when the claimant in `word` is alive: its pid exists and started
/// at the recorded time (low 32 bits of clock ticks; 2^32 ticks at 100 Hz
/// is 497 days, so a reused pid that also matches them is out of reach).
pub(super) fn claimant_alive(word: u64) -> bool {
    let pid = word as u32;
    proc_start_ticks(pid).is_some_and(|t| t & 0xffff_ffff == word >> 32)
}

/// Claims `slot` for this process: takes it when it is free, when its
/// claimant is dead, or when `live_but_takeable(holder_pid)` says a live
/// claimant may be replaced. Retries while the word changes under it, so
/// two processes racing for a dead claimant's slot cannot both win.
///
/// `Ok` with the word now in the slot (this process's claim; the holder
/// gives it back with a compare-and-swap from it), `Err` with the live
/// claimant's word that refused it.
pub(super) fn claim_slot(
    slot: &AtomicU64,
    live_but_takeable: impl Fn(u32) -> bool,
) -> Result<u64, u64> {
    let pid = std::process::id();
    let mine = claim_word(pid, proc_start_ticks(pid).unwrap_or(0));
    let mut seen = slot.load(Ordering::Acquire);
    loop {
        // Judged in this order: the liveness test reads /proc.
        let takeable = seen == 0 || !claimant_alive(seen) || live_but_takeable(seen as u32);
        if !takeable {
            return Err(seen);
        }
        match slot.compare_exchange(seen, mine, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Ok(mine),
            Err(now) => seen = now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dead_claimant() -> u64 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        claim_word(dead, 12345)
    }

    #[test]
    fn a_free_or_dead_slot_is_taken_and_a_live_one_only_when_the_test_allows() {
        let slot = AtomicU64::new(0);
        let mine = claim_slot(&slot, |_| false).unwrap();
        assert_eq!(mine as u32, std::process::id());
        assert_eq!(slot.load(Ordering::Acquire), mine);
        // Held by a live process (this one): refused, and named.
        assert_eq!(claim_slot(&slot, |_| false), Err(mine));
        // The caller's test is asked with the live holder's pid.
        let asked = std::cell::Cell::new(0);
        let taken = claim_slot(&slot, |pid| {
            asked.set(pid);
            true
        });
        assert_eq!((taken, asked.get()), (Ok(mine), std::process::id()));
        // A dead claimant's word is taken without asking.
        slot.store(dead_claimant(), Ordering::Release);
        assert_eq!(
            claim_slot(&slot, |_| panic!("asked about a dead claimant")),
            Ok(mine)
        );
    }

    #[test]
    fn threads_racing_for_a_dead_claimants_slot_one_wins() {
        for _ in 0..50 {
            let slot = AtomicU64::new(dead_claimant());
            let wins = std::sync::atomic::AtomicU32::new(0);
            let barrier = std::sync::Barrier::new(4);
            std::thread::scope(|s| {
                for _ in 0..4 {
                    s.spawn(|| {
                        barrier.wait();
                        if claim_slot(&slot, |_| false).is_ok() {
                            wins.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                }
            });
            // The winners' word is this process's, alive: every later
            // claimant is refused by it.
            assert_eq!(wins.load(Ordering::Relaxed), 1);
        }
    }
}
