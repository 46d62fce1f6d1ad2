//! The active role as a lease with a fencing epoch: of two engines sharing
//! one control block (an active and a would-be active), only the holder of
//! the newest epoch may write to venues.
//!
//! Four words in the gateway line's spare space (layout 2.3, offsets in
//! `layout.rs`):
//! * `lease_holder` = epoch << 32 | holder pid. **The fencing token.** Every
//!   acquisition raises the epoch by one with a compare-and-swap, so each
//!   epoch has exactly one holder, ever. Release keeps the epoch and clears
//!   the pid. The holder's gateway compares the whole word with its own in
//!   every admit step ([`crate::gateway::admit::admit_leased`]).
//! * `lease_holder_start` = the holder's start ticks (low 32 bits) << 32 |
//!   the low 32 bits of the epoch they belong to. Written just after the
//!   epoch is raised, so a reader may briefly see the predecessor's ticks:
//!   the tag tells, and the holder is then judged by its pid alone (alive
//!   if it exists), which errs on the side of "alive".
//! * `lease_expiry_mono_ns`: when the lease lapses unless renewed
//!   (`CLOCK_MONOTONIC`, one clock for every process of the host). The
//!   holder renews it by compare-and-swap while the epoch is its own; a
//!   taker reserves it (compare-and-swap from the lapsed value it judged)
//!   before it raises the epoch.
//! * `lease_in_send` = epoch << 32 | pid << 1 | busy: the holder's gateway
//!   sets busy before a turn that may write to a venue and clears it after
//!   ([`enter_sends`], [`exit_sends`]). The pid says whose turn it is, so a
//!   taker can tell when that process is gone, whoever held the lease in
//!   between.
//!
//! A taker may take the lease when it is free (pid 0), lapsed, or its
//! holder is dead (its pid gone, or reused by a process that started at
//! another time).
//!
//! # Why two actives cannot both send (the ordering argument)
//! The holder's gateway, for each turn that may write:
//! `G1` set `lease_in_send` busy (a SeqCst compare-and-swap, refused if a
//! newer epoch's value is there), `G2` load `lease_holder` (SeqCst) and
//! write nothing unless it is still its own word, then per order `G3`
//! load it again in the admit step, `G4` write, `G5` clear busy (Release).
//! A taker: `T1` raise the epoch (SeqCst compare-and-swap), `T2` load
//! `lease_in_send` (SeqCst) and, while it shows an older epoch busy, wait
//! for that value to change (or its holder to die), `T3` only then send.
//!
//! All of `G1`, `G2`, `T1`, `T2` are SeqCst, with a SeqCst fence between
//! `G1` and `G2` and between `T1` and `T2`, so they sit in one total order
//! (the store-buffering pattern, as in Dekker's algorithm; the fences are
//! what the C++/Rust model needs for store-then-load, and what loom checks). Either `G2`
//! comes after `T1` (then `G2` reads the new epoch: the old gateway writes
//! nothing in that turn, nor in any later one, since being fenced is
//! sticky), or `G2` comes before `T1`, so `G1 < G2 < T1 < T2` and `T2`
//! reads busy (or a later value of the old holder): the taker waits until
//! `G5`, and `G5` (Release) read by the taker (Acquire) makes every write
//! `G4` of that turn happen-before the taker's first send `T3`. A later
//! turn's `G1` of the old gateway is after `T2` in the total order (it
//! wrote a value after the one `T2` read), so its `G2` reads the new
//! epoch. The same turn marker covers cancels, acknowledgements and
//! counters: a fenced gateway stops publishing in the block too.
//! `tests/loom_lease.rs` checks this on these functions, and that a taker
//! skipping `T2`, or a gateway skipping `G1`, is caught.
//!
//! # What this cannot guarantee
//! * *Happens-before is about system calls, not the venue's receive
//!   order.* The old holder's last write returning before the taker's
//!   first write starts says nothing about which one the venue reads
//!   first when they travel on two different sessions. And a process
//!   SIGSTOPped inside a turn (a blocking write, or between two writes)
//!   holds the taker at `T2` until it is continued or dies: the taker
//!   waits (bounded by `LeaseConfig::fence_wait`, then refuses to start)
//!   rather than send beside it. The final guard is the venue refusing the
//!   old session once the new one has logged on (session takeover), which
//!   is phase 2 of the rolling restart, not this code.
//! * The expiry is advisory: a taker stopped between its checks and its
//!   compare-and-swap can take a lease whose holder renewed it meanwhile.
//!   The holder is then fenced (a needless failover), never doubled:
//!   safety rests on the epoch alone.
//! * A 32-bit epoch: 4 billion acquisitions per control file; the last
//!   one is refused ([`Refused::EpochExhausted`]).
//!
//! # Invariants
//! * The epoch only grows, and only by one per acquisition (a
//!   compare-and-swap from the word the taker judged).
//! * `lease_in_send` never goes from an epoch's value to an older epoch's.
//! * A gateway that has seen a newer epoch never writes to a venue again
//!   (it is fenced for good; a new lease means a new gateway).

use std::sync::atomic::Ordering;

#[cfg(loom)]
use loom::sync::atomic::fence;
#[cfg(not(loom))]
use std::sync::atomic::fence;

use crate::control::state::AtomicWord;

/// The four lease words, generic over the atomic type so the loom model
/// runs this code.
#[derive(Clone, Copy)]
pub struct LeaseWords<'a, W: ?Sized> {
    /// epoch << 32 | pid.
    pub holder: &'a W,
    /// start ticks (low 32) << 32 | epoch (low 32).
    pub holder_start: &'a W,
    /// Expiry, `CLOCK_MONOTONIC` ns.
    pub expiry: &'a W,
    /// epoch << 32 | pid << 1 | busy.
    pub in_send: &'a W,
}

/// Who wants the lease: a process and its start time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claimant {
    /// Process id (never 0).
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub start_ticks: u64,
}

/// A lease just acquired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acquired {
    /// The `lease_holder` word this holder owns (epoch << 32 | pid).
    pub word: u64,
    /// The new epoch.
    pub epoch: u64,
    /// The holder it was taken from (pid), 0 when it was free.
    pub predecessor: u32,
}

/// Why the lease was not acquired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// A live holder holds it and it has not lapsed.
    Held {
        /// The holder's pid.
        pid: u32,
        /// Its epoch.
        epoch: u64,
        /// Nanoseconds until it lapses unless renewed.
        lapses_in_ns: u64,
    },
    /// The epoch reached its limit (2^32 - 1): recreate the control file.
    EpochExhausted,
}

/// The epoch of a `lease_holder` word.
#[inline]
pub fn epoch_of(word: u64) -> u64 {
    word >> 32
}

/// The pid of a `lease_holder` word (0 = released or never held).
#[inline]
pub fn pid_of(word: u64) -> u32 {
    word as u32
}

/// One attempt round of acquisition: takes the lease if it is free,
/// lapsed at `now_ns`, or its holder is dead (`alive(pid, start ticks low
/// 32 bits if known)` says false), raising the epoch; the new holder's
/// lease lapses at `now_ns + ttl_ns`. Retries by itself while the words
/// change under it; returns the refusal when a live holder holds it.
pub fn try_acquire<W: AtomicWord + ?Sized>(
    words: &LeaseWords<'_, W>,
    me: Claimant,
    now_ns: u64,
    ttl_ns: u64,
    alive: impl Fn(u32, Option<u32>) -> bool,
) -> Result<Acquired, Refused> {
    loop {
        let word = words.holder.load_word(Ordering::SeqCst);
        let start = words.holder_start.load_word(Ordering::Acquire);
        let expiry = words.expiry.load_word(Ordering::Acquire);
        if words.holder.load_word(Ordering::SeqCst) != word {
            continue;
        }
        let (epoch, pid) = (epoch_of(word), pid_of(word));
        let ticks = (start as u32 as u64 == epoch & 0xffff_ffff).then_some((start >> 32) as u32);
        let free = pid == 0;
        let lapsed = expiry <= now_ns;
        // Judged last: it reads /proc.
        if !free && !lapsed && alive(pid, ticks) {
            return Err(Refused::Held {
                pid,
                epoch,
                lapses_in_ns: expiry - now_ns,
            });
        }
        if epoch >= u32::MAX as u64 {
            return Err(Refused::EpochExhausted);
        }
        // Reserve the expiry first: from here a second taker reading the
        // words sees a lease that has not lapsed, so it cannot slip in
        // between our epoch raise and our expiry (only a dead holder's
        // lease can be raced for, and then one compare-and-swap wins).
        let mine_expiry = now_ns.saturating_add(ttl_ns).max(expiry.saturating_add(1));
        if words
            .expiry
            .cas_word(expiry, mine_expiry, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            continue;
        }
        let new_epoch = epoch + 1;
        let mine = new_epoch << 32 | me.pid as u64;
        // T1: the fencing point. From here every admit step of the old
        // holder that reads the word refuses.
        if words
            .holder
            .cas_word(word, mine, Ordering::SeqCst, Ordering::Relaxed)
            .is_err()
        {
            continue;
        }
        words.holder_start.store_word(
            (me.start_ticks & 0xffff_ffff) << 32 | (new_epoch & 0xffff_ffff),
            Ordering::Release,
        );
        return Ok(Acquired {
            word: mine,
            epoch: new_epoch,
            predecessor: pid,
        });
    }
}

/// Pushes the expiry to `now_ns + ttl_ns` while the epoch is still
/// `mine`'s. `Err(word)` with the newer word when it is not: fenced.
pub fn renew<W: AtomicWord + ?Sized>(
    words: &LeaseWords<'_, W>,
    mine: u64,
    now_ns: u64,
    ttl_ns: u64,
) -> Result<(), u64> {
    loop {
        let word = words.holder.load_word(Ordering::SeqCst);
        if word != mine {
            return Err(word);
        }
        let expiry = words.expiry.load_word(Ordering::Acquire);
        let next = now_ns.saturating_add(ttl_ns);
        if next <= expiry {
            return Ok(());
        }
        if words
            .expiry
            .cas_word(expiry, next, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return Ok(());
        }
    }
}

/// Gives the lease back (pid 0, epoch kept) if `mine` still holds it.
/// True when it did.
pub fn release<W: AtomicWord + ?Sized>(words: &LeaseWords<'_, W>, mine: u64) -> bool {
    let freed = epoch_of(mine) << 32;
    loop {
        if words.holder.load_word(Ordering::SeqCst) != mine {
            return false;
        }
        if words
            .holder
            .cas_word(mine, freed, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
        {
            return true;
        }
    }
}

/// `G1` and `G2`: marks the holder of `mine` busy (about to write to
/// venues) and checks that the epoch is still its own. False (fenced, and
/// the mark is not left set) when a newer epoch holds the lease or has
/// marked `lease_in_send`.
#[inline]
pub fn enter_sends<W: AtomicWord + ?Sized>(words: &LeaseWords<'_, W>, mine: u64) -> bool {
    let epoch = epoch_of(mine);
    let busy = marker(mine) | 1;
    loop {
        let seen = words.in_send.load_word(Ordering::Relaxed);
        if epoch_of(seen) > epoch {
            return false;
        }
        if seen == busy {
            break;
        }
        // Over our own or an older epoch's value only; never over a newer
        // one (checked above; the compare-and-swap fails if it changed).
        if words
            .in_send
            .cas_word(seen, busy, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
        {
            break;
        }
    }
    // The store-buffering pair with the taker's fence after its epoch
    // raise. On x86-64 the locked compare-and-swap is already a full
    // barrier; the fence makes the pairing explicit in the memory model
    // (SeqCst fences order the two sides' store-then-load; SeqCst
    // accesses alone are all loom models as AcqRel) and costs one
    // `mfence` per turn, not per order.
    fence(Ordering::SeqCst);
    if words.holder.load_word(Ordering::SeqCst) == mine {
        return true;
    }
    exit_sends(words, mine);
    false
}

/// `G5`: clears the busy mark of `mine`'s epoch (Release: every venue
/// write of the turn happens-before a taker's read of the cleared value).
/// Leaves a newer epoch's value alone.
#[inline]
pub fn exit_sends<W: AtomicWord + ?Sized>(words: &LeaseWords<'_, W>, mine: u64) {
    let busy = marker(mine) | 1;
    loop {
        if words.in_send.load_word(Ordering::Relaxed) != busy {
            return;
        }
        if words
            .in_send
            .cas_word(busy, marker(mine), Ordering::Release, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
    }
}

/// `T2`, one look: the `lease_in_send` value of an older epoch's turn
/// still in progress, which the holder of `mine` must see change before it
/// sends; `None` when there is none.
#[inline]
pub fn predecessor_busy<W: AtomicWord + ?Sized>(
    words: &LeaseWords<'_, W>,
    mine: u64,
) -> Option<u64> {
    // Pairs with the fence in `enter_sends` (see there): called after the
    // epoch raise `T1`, before this load `T2`.
    fence(Ordering::SeqCst);
    let seen = words.in_send.load_word(Ordering::SeqCst);
    (seen & 1 == 1 && epoch_of(seen) < epoch_of(mine)).then_some(seen)
}

/// The pid whose turn a `lease_in_send` value marks.
#[inline]
pub fn marker_pid(in_send: u64) -> u32 {
    (in_send as u32) >> 1
}

/// The `lease_in_send` value (busy bit clear) of the holder of `mine`.
#[inline]
fn marker(mine: u64) -> u64 {
    epoch_of(mine) << 32 | ((pid_of(mine) & 0x7fff_ffff) as u64) << 1
}

/// `T2`, the wait: true once the busy value `seen` (from
/// [`predecessor_busy`]) has changed, which ends that turn for good (any
/// later turn of that holder reads the newer epoch and writes nothing).
#[inline]
pub fn predecessor_done<W: AtomicWord + ?Sized>(words: &LeaseWords<'_, W>, seen: u64) -> bool {
    words.in_send.load_word(Ordering::Acquire) != seen
}

/// `G3`, in the admit step: the epoch is still `mine`'s.
#[inline]
pub fn still_held<W: AtomicWord + ?Sized>(holder: &W, mine: u64) -> bool {
    holder.load_word(Ordering::SeqCst) == mine
}

mod block;
pub use block::{Lease, LeaseConfig, LeaseError, LeaseInfo, LeaseState};
