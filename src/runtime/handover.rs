//! The failover's hand-over ([`Runtime::hand_over`]): the active engine of
//! a rolling restart stops sending and gives the active role to its hot
//! standby, leaving its resting orders at the venues for the standby to
//! adopt.

use std::time::{Duration, Instant};

use super::Runtime;
use crate::clock::mono_ns;

/// Why [`Runtime::hand_over`] refused when a KILL (global or scoped) is in
/// force: the drain runs to its end in this engine, which still holds the
/// lease and its sessions.
pub const KILL_IN_FORCE: &str =
    "a KILL is in force: not handing over; this engine's drain cancels its own orders";

/// What the hand-over did, with its times (`CLOCK_MONOTONIC` ns).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandOver {
    /// When it was asked for.
    pub asked_mono_ns: u64,
    /// When the gateway had handed every session over and released the
    /// lease: from here it refuses every new order and writes nothing.
    pub released_mono_ns: u64,
    /// The epoch given back.
    pub epoch: u64,
    /// Sessions whose hand-over failed, with why (the venue offers no
    /// takeover, or the session was down): their orders may be cancelled
    /// by the venue or stay orphaned; the operator must look.
    pub failed: Vec<String>,
}

impl Runtime {
    /// Hands every venue session over to a designated backup
    /// ([`crate::venue::Venue::hand_over`]: no cancels) and releases the
    /// active-role lease, in one gateway turn that holds it; from then on
    /// the gateway refuses every order and writes nothing more. Orders the
    /// strategies submitted before this call went out before the
    /// hand-over. Waits up to `deadline` for the gateway to do it.
    ///
    /// Refused ([`KILL_IN_FORCE`]) while a KILL is in force.
    ///
    /// Needs a lease ([`super::RuntimeBuilder::lease`]): without one there
    /// is no fencing, and nothing would stop this engine from sending
    /// beside the one that takes over. Stop the runtime next
    /// ([`Runtime::shutdown`]): its journal must be closed before the
    /// successor opens it. After a hand-over that stop closes the journal
    /// for the successor ([`crate::journal::JournalWriter::close_for_successor`]:
    /// no msync, the successor finishes durability) instead of syncing it.
    pub fn hand_over(&mut self, deadline: Duration) -> Result<HandOver, String> {
        let Some(state) = self.lease.clone() else {
            return Err("hand-over needs the active-role lease (RuntimeBuilder::lease): without it nothing fences this engine".into());
        };
        if let Some(newer) = state.fenced_by() {
            return Err(format!(
                "this engine no longer holds the lease (epoch {} replaced by {newer})",
                state.epoch()
            ));
        }
        // A KILL in force is drained here, where the orders are: handing
        // them over mid-drain would leave the drain's cancels to a gateway
        // that may no longer write. (A KILL that lands after this check is
        // drained by the successor: it adopts the orders and drains a KILL
        // in force at its start, see `Runtime::own_kill_in_force`.)
        if crate::drain::kill_in_force(&self.block, self.block.state()) {
            return Err(KILL_IN_FORCE.into());
        }
        // Before anything is asked of the gateway: once some sessions have
        // handed over, a session that cannot would have its orders
        // cancelled or orphaned, and nothing takes the others back.
        if !self.no_hand_over.is_empty() {
            return Err(format!(
                "venue(s) {} offer no session hand-over to a designated backup (Venue::offers_hand_over): their orders would be cancelled or orphaned; no failover with them",
                self.no_hand_over.join(", ")
            ));
        }
        let Some(g) = &self.gateway else {
            return Err("the gateway is stopped".into());
        };
        let asked = mono_ns();
        let end = Instant::now() + deadline;
        while g.hand_over().is_err() {
            if Instant::now() >= end {
                return Err(format!(
                    "the gateway's request ring stayed full for {deadline:?}"
                ));
            }
            std::thread::yield_now();
        }
        while state.fenced_by().is_none() {
            if Instant::now() >= end {
                return Err(format!(
                    "the gateway did not hand over within {deadline:?} (it still holds epoch {})",
                    state.epoch()
                ));
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        let released = mono_ns();
        self.handed_over = true;
        let failed = g
            .position_reports()
            .into_iter()
            .filter_map(|r| {
                r.error.map(|e| {
                    format!(
                        "venue {}: {e}",
                        self.block
                            .name_at(crate::control::ScopeKind::Venue, r.venue)
                            .unwrap_or_else(|| r.venue.to_string())
                    )
                })
            })
            .collect();
        Ok(HandOver {
            asked_mono_ns: asked,
            released_mono_ns: released,
            epoch: state.epoch(),
            failed,
        })
    }
}
