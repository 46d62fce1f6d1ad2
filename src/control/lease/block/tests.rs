//! The lease on a real block, within one process (the two-process test
//! with SIGSTOP is `tools/tests/lease_fencing.rs`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::control::lease::{epoch_of, try_acquire, Claimant, Refused};

fn cfg(ttl_ms: u64) -> LeaseConfig {
    LeaseConfig {
        ttl: Duration::from_millis(ttl_ms),
        acquire_wait: Duration::ZERO,
        fence_wait: Duration::from_millis(200),
    }
}

/// A pid that existed and is gone: a reaped child's.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn acquire_raises_the_epoch_a_live_holder_is_refused_and_release_frees_it() {
    let dir = tempfile::tempdir().unwrap();
    let block = Arc::new(ControlBlock::create(dir.path(), "lease").unwrap());
    assert_eq!(block.lease().epoch, 0);
    let first = Lease::acquire(block.clone(), cfg(60_000)).unwrap();
    assert_eq!(first.epoch(), 1);
    let now = block.lease();
    assert_eq!((now.epoch, now.holder), (1, std::process::id()));
    assert!(now.holder_alive && now.lapses_in_ns > 0);
    // A second acquisition, even from this process, waits for the lapse
    // (here: not at all) and is refused, naming the holder.
    match Lease::acquire(block.clone(), cfg(60_000)) {
        Err(LeaseError::Held { pid, epoch, .. }) => {
            assert_eq!((pid, epoch), (std::process::id(), 1))
        }
        other => panic!("second acquisition: {other:?}"),
    }
    first.release();
    let freed = block.lease();
    assert_eq!(
        (freed.epoch, freed.holder),
        (1, 0),
        "release keeps the epoch"
    );
    let second = Lease::acquire(block.clone(), cfg(60_000)).unwrap();
    assert_eq!(second.epoch(), 2, "every acquisition raises the epoch");
}

#[test]
fn a_lapsed_lease_is_taken_and_its_holder_is_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let block = Arc::new(ControlBlock::create(dir.path(), "lapse").unwrap());
    let mut old = Lease::acquire(block.clone(), cfg(1)).unwrap();
    assert!(old.enter_turn());
    old.exit_turn();
    // 1 ms lease (the floor), never renewed: wait for it to lapse.
    std::thread::sleep(Duration::from_millis(5));
    let new = Lease::acquire(block.clone(), cfg(60_000)).unwrap();
    assert_eq!(new.epoch(), 2);
    assert!(!old.enter_turn(), "the old holder's next turn is fenced");
    assert_eq!(old.state().fenced_by(), Some(2));
    assert!(old.renew().is_err());
    assert!(!old.still_ours());
    // Dropping the fenced lease leaves the new holder's alone.
    drop(old);
    assert_eq!(block.lease().holder, std::process::id());
    assert_eq!(block.lease().epoch, 2);
}

#[test]
fn a_dead_holders_lease_is_taken_before_it_lapses() {
    let dir = tempfile::tempdir().unwrap();
    let block = Arc::new(ControlBlock::create(dir.path(), "dead").unwrap());
    let gs = block.gateway_status();
    let dead = dead_pid();
    gs.lease_holder
        .store(7 << 32 | dead as u64, Ordering::SeqCst);
    gs.lease_holder_start
        .store(12345 << 32 | 7, Ordering::SeqCst);
    gs.lease_expiry_mono_ns.store(
        crate::clock::mono_ns() + 3_600_000_000_000,
        Ordering::SeqCst,
    );
    // Even stopped inside a turn: a dead process writes nothing more.
    gs.lease_in_send
        .store(7 << 32 | (dead as u64) << 1 | 1, Ordering::SeqCst);
    assert!(!block.lease().holder_alive);
    let lease = Lease::acquire(block.clone(), cfg(60_000)).unwrap();
    assert_eq!((lease.epoch(), lease.predecessor()), (8, dead));
}

#[test]
fn a_predecessor_stuck_inside_a_turn_holds_the_taker_back() {
    let dir = tempfile::tempdir().unwrap();
    let block = Arc::new(ControlBlock::create(dir.path(), "stuck").unwrap());
    // The predecessor is a live process (this one, under a pid it really
    // has) whose turn never ends and whose lease has lapsed.
    let mut old = Lease::acquire(block.clone(), cfg(1)).unwrap();
    assert!(old.enter_turn());
    std::thread::sleep(Duration::from_millis(5));
    match Lease::acquire(block.clone(), cfg(60_000)) {
        Err(LeaseError::PredecessorInSend { epoch, pid, .. }) => {
            assert_eq!((epoch, pid), (2, std::process::id()))
        }
        other => panic!("taker beside a busy predecessor: {other:?}"),
    }
    // The taker gave its epoch back.
    assert_eq!((block.lease().epoch, block.lease().holder), (2, 0));
    // A taker that finds the lease free (the last one gave up) still
    // waits for the stuck turn, whose pid the marker names.
    match Lease::acquire(block.clone(), cfg(60_000)) {
        Err(LeaseError::PredecessorInSend { epoch, pid, .. }) => {
            assert_eq!((epoch, pid), (3, std::process::id()))
        }
        other => panic!("taker of a free lease beside a busy turn: {other:?}"),
    }
    old.exit_turn();
    assert!(!old.enter_turn(), "the stuck one is fenced all the same");
    // Once the turn has ended, the next taker goes through.
    let taker = Lease::acquire(block.clone(), cfg(60_000)).unwrap();
    assert_eq!(taker.epoch(), 4);
}

#[test]
fn renewal_pushes_the_expiry_and_a_renewed_lease_is_refused_to_a_taker() {
    let dir = tempfile::tempdir().unwrap();
    let block = Arc::new(ControlBlock::create(dir.path(), "renew").unwrap());
    let expiry = || {
        block
            .gateway_status()
            .lease_expiry_mono_ns
            .load(Ordering::SeqCst)
    };
    let mut held = Lease::acquire(block.clone(), cfg(60_000)).unwrap();
    let before = expiry();
    std::thread::sleep(Duration::from_millis(2));
    held.renew().unwrap();
    assert!(expiry() > before, "renewal pushes the expiry");
    assert!(matches!(
        Lease::acquire(block.clone(), cfg(60_000)),
        Err(LeaseError::Held { .. })
    ));
    assert!(held.enter_turn());
    held.exit_turn();
}

#[test]
fn the_epoch_limit_is_refused_not_wrapped() {
    let dir = tempfile::tempdir().unwrap();
    let block = Arc::new(ControlBlock::create(dir.path(), "limit").unwrap());
    let gs = block.gateway_status();
    gs.lease_holder
        .store((u32::MAX as u64) << 32, Ordering::SeqCst);
    let me = Claimant {
        pid: 1,
        start_ticks: 0,
    };
    let words = super::words(&block);
    assert_eq!(
        try_acquire(&words, me, 10, 10, |_, _| true),
        Err(Refused::EpochExhausted)
    );
    assert!(matches!(
        Lease::acquire(block.clone(), cfg(10)),
        Err(LeaseError::EpochExhausted { .. })
    ));
    assert_eq!(
        epoch_of(gs.lease_holder.load(Ordering::SeqCst)),
        u32::MAX as u64
    );
}
