//! The failover's hand-over ([`Runtime::hand_over`]): the active engine of
//! a rolling restart stops sending and gives the active role to its hot
//! standby, leaving its resting orders at the venues for the standby to
//! adopt.

use std::time::Duration;

use super::Runtime;
use crate::clock::mono_ns;
use crate::gateway::handover::{HandOverError, SessionHandOver};

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
    /// Each session's part, from the gateway's answer to this request
    /// (nothing an earlier request left behind).
    pub sessions: Vec<SessionHandOver>,
}

impl HandOver {
    /// The sessions whose hand-over failed, each as "venue NAME: why":
    /// their orders may be cancelled by the venue or stay orphaned; the
    /// operator must look. Empty when every session handed over.
    pub fn failed(&self) -> Vec<String> {
        self.sessions
            .iter()
            .filter_map(|s| {
                s.result
                    .as_ref()
                    .err()
                    .map(|e| format!("venue {}: {e}", s.name))
            })
            .collect()
    }
}

impl Runtime {
    /// Hands every venue session over to a designated backup
    /// ([`crate::venue::Venue::hand_over`]: no cancels) and releases the
    /// active-role lease, in one gateway turn that holds it; from then on
    /// the gateway refuses every order ([`crate::registry::Refusal::Fenced`])
    /// and writes nothing more. Orders the strategies submitted before
    /// this call went out before the hand-over.
    ///
    /// The outcome is never in doubt: `Ok` when the gateway handed over
    /// and released the lease (per-session results in
    /// [`HandOver::sessions`]); `Err` when it did not and never will for
    /// this call: `deadline` bounds the wait for the gateway to take the
    /// request, and one that is not taken by then is withdrawn (see
    /// [`crate::gateway::handover`]), so the engine still holds its lease
    /// and trades on. A request the gateway took is waited for to its
    /// answer, which comes in the same gateway turn.
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
        match g.hand_over(deadline) {
            Ok(sessions) => Ok(HandOver {
                asked_mono_ns: asked,
                released_mono_ns: mono_ns(),
                epoch: state.epoch(),
                sessions,
            }),
            Err(e @ HandOverError::Fenced) => Err(format!(
                "{e} (epoch {}{})",
                state.epoch(),
                state
                    .fenced_by()
                    .map(|n| format!(", fenced by epoch {n}"))
                    .unwrap_or_default()
            )),
            Err(e) => Err(e.to_string()),
        }
    }

    /// True once this engine's gateway handed the sessions over and
    /// released the lease ([`Runtime::hand_over`]). Derived from the lease
    /// itself, not kept beside it: a release leaves the holder word at our
    /// epoch with pid 0, which only a release of ours writes (a taker
    /// always raises the epoch), and the gateway records exactly that word
    /// as its fence ([`crate::control::lease::LeaseState::handed_back`]). So it
    /// also holds when the gateway died after releasing: the lease is the
    /// successor's to take either way, and the stop closes the journal
    /// for it.
    pub fn handed_over(&self) -> bool {
        self.lease.as_ref().is_some_and(|s| s.handed_back())
    }

    /// Order events the registry applied after the journal was closed for
    /// the successor, and that were therefore not journaled. The stop
    /// order makes this zero; anything else is a bug to report (the
    /// successor's journal lacks those events). Not a KILL: the block is
    /// shared with the successor, which would drain the orders it adopted.
    pub fn events_not_journaled_after_close(&self) -> u64 {
        self.journal.as_ref().map_or(0, |j| {
            j.lock()
                .map(|j| j.not_journaled_after_close)
                .unwrap_or_else(|p| p.into_inner().not_journaled_after_close)
        })
    }
}
