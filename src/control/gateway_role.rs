//! The gateway role of a block: at most one gateway acknowledges kill
//! generations for a block at a time.
//!
//! Two gateways on one block would both store `acked_generation`: the drain
//! could take one's acknowledgement for the other's and snapshot while the
//! other still writes new orders. So the role is claimed in the block by a
//! compare-and-swap on one word (pid | low 32 bits of its start time), held
//! for as long as the gateway lives ([`GatewayRole`]; dropping it gives the
//! role back), and refused to a second claimant while the first is alive.
//! A claimant that died without giving it back (SIGKILL, a crash) is
//! noticed by its pid (gone, or reused by a process that started at another
//! time) and its role taken over, by a compare-and-swap from the dead
//! claimant's word, so two processes racing to take over cannot both win.
//!
//! # Invariants
//! * The word changes only by compare-and-swap: 0 -> claim, dead claim ->
//!   claim, own claim -> 0 (the loop is `control::claim`'s, shared with
//!   the standby role).
//! * A claim is never taken from a live process, even from this one (a
//!   second gateway in the same process is refused too), except from the
//!   fenced predecessor of a lease this process holds
//!   ([`GatewayRole::claim_from_fenced`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::claim::{claim_slot, claimant_alive};
use super::{ControlBlock, ControlError, Result};

/// The claimed gateway role of one block; dropping it gives the role back.
/// Held by the gateway (inside [`crate::gateway::GatewayCore`]); only the
/// thread that runs the gateway holds it.
#[must_use = "dropping the role gives it back at once"]
#[derive(Debug)]
pub(crate) struct GatewayRole {
    block: Arc<ControlBlock>,
    word: u64,
}

impl GatewayRole {
    /// Claims the gateway role of `block` for this process. Refused while a
    /// live process (this one included) holds it; taken over from a dead one.
    pub(crate) fn claim(block: Arc<ControlBlock>) -> Result<GatewayRole> {
        GatewayRole::claim_if(block, |_| false)
    }

    /// Claims the role under an active-role lease this process holds:
    /// like [`GatewayRole::claim`], but a live claimant whose pid is
    /// `fenced` (the lease's predecessor, whose epoch ours has replaced,
    /// so its gateway writes nothing more) is taken over too. Any other
    /// live claimant is refused: it may be a gateway without a lease,
    /// which no epoch stops.
    pub(crate) fn claim_from_fenced(block: Arc<ControlBlock>, fenced: u32) -> Result<GatewayRole> {
        let pid = std::process::id();
        GatewayRole::claim_if(block, |holder| {
            fenced != 0 && fenced != pid && holder == fenced
        })
    }

    /// The claim both share: a live holder is taken over only when
    /// `live_but_takeable(its pid)`.
    fn claim_if(
        block: Arc<ControlBlock>,
        live_but_takeable: impl Fn(u32) -> bool,
    ) -> Result<GatewayRole> {
        match claim_slot(&block.gateway_status().role, live_but_takeable) {
            Ok(word) => Ok(GatewayRole { block, word }),
            Err(holder) => Err(ControlError::GatewayRoleTaken {
                path: block.path().to_path_buf(),
                pid: holder as u32,
            }),
        }
    }
}

impl Drop for GatewayRole {
    fn drop(&mut self) {
        // Only our own claim: never one a later gateway made after taking
        // over (which cannot happen while we live, but costs nothing).
        let _ = self.block.gateway_status().role.compare_exchange(
            self.word,
            0,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }
}

impl ControlBlock {
    /// Pid of the process holding the gateway role, if the holder is alive.
    pub fn gateway_holder(&self) -> Option<u32> {
        let w = self.gateway_status().role.load(Ordering::Acquire);
        (w != 0 && claimant_alive(w)).then_some(w as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::claim::claim_word;

    #[test]
    fn one_live_claimant_and_a_dead_ones_role_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let block = Arc::new(ControlBlock::create(dir.path(), "role").unwrap());
        let first = GatewayRole::claim(block.clone()).unwrap();
        assert_eq!(block.gateway_holder(), Some(std::process::id()));
        // A second gateway, even in this process, is refused and named.
        match GatewayRole::claim(block.clone()) {
            Err(ControlError::GatewayRoleTaken { pid, .. }) => assert_eq!(pid, std::process::id()),
            other => panic!("second claim: {other:?}"),
        }
        drop(first);
        assert_eq!(block.gateway_holder(), None);
        // A claimant that died holding the role: a reaped child's pid.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        block
            .gateway_status()
            .role
            .store(claim_word(dead, 12345), Ordering::Release);
        assert_eq!(block.gateway_holder(), None);
        let taken = GatewayRole::claim(block.clone()).unwrap();
        assert_eq!(block.gateway_holder(), Some(std::process::id()));
        drop(taken);
    }
}
