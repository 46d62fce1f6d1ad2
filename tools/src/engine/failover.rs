//! The reference engine's side of a failover (`killswitch failover`):
//! the active hands over ([`killswitch::runtime::Runtime::hand_over`]) and
//! stops; the hot standby, seeing the lease released and the journal
//! closed, catches up to the last record and starts as the active with
//! its sessions taking over the venues' sessions ([`Promotion`]).
//!
//! Each side prints its phases on stderr as
//! `ks-engine: failover: <phase> at mono <ns>` (`CLOCK_MONOTONIC`, one
//! clock for both processes), so the two logs merge into one timeline:
//! stop new orders, lease released, last record (old active); release
//! seen, caught up, logon, lease taken, orders adopted, first new order
//! (new active).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use killswitch::clock::mono_ns;
use killswitch::control::{ControlBlock, FailoverRequest, Operator};

/// Test knob (environment): a path. The active, having seen a failover
/// request and stopped new orders, waits (at most 60 s) until that path
/// exists before it hands over, so a process test can trip KILL in that
/// window deterministically. Unset in production: no wait.
pub const HOLD_HAND_OVER_ENV: &str = "KS_ENGINE_TEST_HOLD_HAND_OVER";

/// What a promoted standby did while starting, for the timeline.
#[derive(Clone, Copy, Debug)]
pub struct Promotion {
    /// Every venue session logged on as the designated backup.
    pub logged_on_mono_ns: u64,
    /// The runtime started: the lease taken, the journal opened, its open
    /// orders adopted into the registry.
    pub started_mono_ns: u64,
    /// The epoch taken.
    pub epoch: u64,
    /// Orders adopted from the journal.
    pub adopted: usize,
}

/// Which failover request is this engine's to act on. The block keeps the
/// last request ever made; the one already there when this engine started
/// was asked of another (an earlier active, a standby before a failback)
/// and is not this one's, nor is one the active withdrew.
#[derive(Clone, Copy, Debug)]
pub struct FailoverRequests {
    /// The nonce of the request in the block at start.
    asked_before_start: Option<u32>,
}

impl FailoverRequests {
    /// Notes the request in `block` now as not this engine's. Read it
    /// before the lease or the standby role is taken: `killswitch
    /// failover` asks only a live holder, so any later request is ours.
    pub fn at_start(block: &ControlBlock) -> FailoverRequests {
        FailoverRequests {
            asked_before_start: block.failover_request().map(|r| r.nonce),
        }
    }

    /// The request in `block` asked of this engine since it started and
    /// not withdrawn, if any.
    pub fn pending(&self, block: &ControlBlock) -> Option<FailoverRequest> {
        block
            .failover_request()
            .filter(|r| Some(r.nonce) != self.asked_before_start && !r.withdrawn)
    }
}

/// Prints one phase of the timeline.
pub fn phase(what: &str, at_mono_ns: u64) {
    eprintln!("ks-engine: failover: {what} at mono {at_mono_ns}");
}

/// Prints one phase stamped now.
pub fn phase_now(what: &str) -> u64 {
    let t = mono_ns();
    phase(what, t);
    t
}

/// Withdraws failover request `nonce` because a KILL is in force (see
/// [`Operator::withdraw_failover`]) and says so: this engine drains its own
/// orders and stays the lease holder until it stops; the standby keeps
/// following and does not take over.
pub fn withdraw(operator: &Operator, nonce: u32, asked_by: u32) {
    withdraw_because(
        operator,
        nonce,
        asked_by,
        "a KILL is in force; this engine keeps the lease and its sessions and drains its own orders",
    );
}

/// Withdraws failover request `nonce` for the reason given.
pub fn withdraw_because(operator: &Operator, nonce: u32, asked_by: u32, why: &str) {
    if operator.withdraw_failover(nonce) {
        eprintln!(
            "ks-engine: failover: ABORTED (asked by pid {asked_by}): {why} (pid {}); the standby does not take over",
            std::process::id()
        );
    }
}

/// The test knob [`HOLD_HAND_OVER_ENV`]: waits for its path, if set.
pub fn test_hold_before_hand_over() {
    let Some(path) = std::env::var_os(HOLD_HAND_OVER_ENV).map(PathBuf::from) else {
        return;
    };
    eprintln!(
        "ks-engine: failover: holding before the hand-over until {} exists ({HOLD_HAND_OVER_ENV}, a test knob)",
        path.display()
    );
    let end = Instant::now() + Duration::from_secs(60);
    while !path.exists() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(1));
    }
}
