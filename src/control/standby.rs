//! The hot standby's progress in the block (layout 2.4): who follows the
//! active engine's journal, how far it has applied it, and how far behind
//! it is, for `killswitch status`.
//!
//! Six words in the drain line's spare space (offsets in `layout.rs`), not
//! a side file: `status` already opens the block, the words need no
//! locking (each stands alone, like the rule gauges), and the standby and
//! the active must share the block anyway for the lease. Not the gateway
//! line beside the lease: the gateway writes its counters there on every
//! order, and a second process writing the same line would take that
//! cache line away from the order path every time it publishes. The drain
//! line is written only during a drain.
//!
//! The standby claims the role by compare-and-swap on `standby_pid` (pid |
//! start ticks, as the gateway role): a second live standby is refused, a
//! dead one's claim is taken over. Dropping [`StandbyReporter`] clears it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::claim::{claim_slot, claimant_alive};
use super::{ControlBlock, ControlError, Result};
use crate::clock::mono_ns;

/// What the standby last published ([`ControlBlock::standby`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct StandbyInfo {
    /// The standby's pid.
    pub pid: u32,
    /// True when that process lives (and started at the recorded time).
    pub alive: bool,
    /// Journal sequence of the last record it applied.
    pub applied_seq: u64,
    /// Records it found committed and not yet applied at its last look.
    pub behind_records: u64,
    /// Over those records, the longest time from append to application, ns.
    pub lag_ns: u64,
    /// The longest such time since it started, ns.
    pub max_lag_ns: u64,
    /// Nanoseconds since it last published.
    pub age_ns: u64,
}

/// The standby role of one block, held; publishes the standby's progress.
/// Dropping it gives the role back.
#[must_use = "dropping the reporter gives the standby role back at once"]
#[derive(Debug)]
pub struct StandbyReporter {
    block: Arc<ControlBlock>,
    word: u64,
    max_lag_ns: u64,
}

impl StandbyReporter {
    /// Claims the standby role of `block` for this process. Refused
    /// ([`ControlError::StandbyTaken`]) while another live process holds
    /// it; taken over from a dead one.
    pub fn claim(block: Arc<ControlBlock>) -> Result<StandbyReporter> {
        let d = block.drain_status();
        let mine = match claim_slot(&d.standby_pid, |_| false) {
            Ok(word) => word,
            Err(holder) => {
                return Err(ControlError::StandbyTaken {
                    path: block.path().to_path_buf(),
                    pid: holder as u32,
                })
            }
        };
        for w in [
            &d.standby_applied_seq,
            &d.standby_behind_records,
            &d.standby_lag_ns,
            &d.standby_max_lag_ns,
        ] {
            w.store(0, Ordering::Relaxed);
        }
        d.standby_updated_mono_ns
            .store(mono_ns(), Ordering::Release);
        Ok(StandbyReporter {
            block,
            word: mine,
            max_lag_ns: 0,
        })
    }

    /// Publishes: the last sequence applied, the records found behind at
    /// the last look, and their longest append-to-apply time.
    pub fn publish(&mut self, applied_seq: u64, behind_records: u64, lag_ns: u64) {
        self.max_lag_ns = self.max_lag_ns.max(lag_ns);
        let d = self.block.drain_status();
        d.standby_applied_seq.store(applied_seq, Ordering::Relaxed);
        d.standby_behind_records
            .store(behind_records, Ordering::Relaxed);
        d.standby_lag_ns.store(lag_ns, Ordering::Relaxed);
        d.standby_max_lag_ns
            .store(self.max_lag_ns, Ordering::Relaxed);
        d.standby_updated_mono_ns
            .store(mono_ns(), Ordering::Release);
    }

    /// The longest append-to-apply time published so far, ns.
    pub fn max_lag_ns(&self) -> u64 {
        self.max_lag_ns
    }
}

impl Drop for StandbyReporter {
    fn drop(&mut self) {
        let _ = self.block.drain_status().standby_pid.compare_exchange(
            self.word,
            0,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }
}

/// A failover request in the block: its nonce and who asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailoverRequest {
    /// Changes with every request.
    pub nonce: u32,
    /// The asker's pid.
    pub pid: u32,
    /// The active engine withdrew it without handing over (a KILL was in
    /// force: the drain runs where the orders are): no standby may take
    /// over on it.
    pub withdrawn: bool,
}

/// Bit of the request word's low half that marks it withdrawn (pids stay
/// below 2^22 on Linux, so it never collides with the asker's pid).
const WITHDRAWN: u64 = 1 << 31;

impl super::Operator {
    /// Asks the active engine of this block to hand over to its hot
    /// standby (`killswitch failover`): a new nonce in `failover_request`.
    /// The engine acts on it at its next supervisor beat.
    pub fn request_failover(&self) -> FailoverRequest {
        let w = &self.block().drain_status().failover_request;
        let pid = std::process::id();
        let mut seen = w.load(Ordering::Acquire);
        loop {
            let nonce = ((seen >> 32) as u32).wrapping_add(1).max(1);
            let next = (nonce as u64) << 32 | pid as u64;
            match w.compare_exchange(seen, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    return FailoverRequest {
                        nonce,
                        pid,
                        withdrawn: false,
                    }
                }
                Err(now) => seen = now,
            }
        }
    }

    /// Withdraws failover request `nonce` (the active engine, when a KILL
    /// is in force: it drains its own orders instead of handing them
    /// over), so that neither the standby nor `killswitch failover` acts
    /// on it any more. False when the block holds another request (a newer
    /// one, or already withdrawn).
    pub fn withdraw_failover(&self, nonce: u32) -> bool {
        let w = &self.block().drain_status().failover_request;
        let seen = w.load(Ordering::Acquire);
        if (seen >> 32) as u32 != nonce || seen & WITHDRAWN != 0 {
            return false;
        }
        w.compare_exchange(seen, seen | WITHDRAWN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

impl ControlBlock {
    /// The last failover request, if any was ever made.
    pub fn failover_request(&self) -> Option<FailoverRequest> {
        let w = self.drain_status().failover_request.load(Ordering::Acquire);
        (w != 0).then_some(FailoverRequest {
            nonce: (w >> 32) as u32,
            pid: (w & !WITHDRAWN) as u32,
            withdrawn: w & WITHDRAWN != 0,
        })
    }

    /// The hot standby's last publication; `None` when no standby holds
    /// the role.
    pub fn standby(&self) -> Option<StandbyInfo> {
        let d = self.drain_status();
        let word = d.standby_pid.load(Ordering::Acquire);
        if word == 0 {
            return None;
        }
        let updated = d.standby_updated_mono_ns.load(Ordering::Acquire);
        Some(StandbyInfo {
            pid: word as u32,
            alive: claimant_alive(word),
            applied_seq: d.standby_applied_seq.load(Ordering::Relaxed),
            behind_records: d.standby_behind_records.load(Ordering::Relaxed),
            lag_ns: d.standby_lag_ns.load(Ordering::Relaxed),
            max_lag_ns: d.standby_max_lag_ns.load(Ordering::Relaxed),
            age_ns: mono_ns().saturating_sub(updated),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::claim::claim_word;

    #[test]
    fn one_live_standby_publishes_and_a_second_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let block = Arc::new(ControlBlock::create(dir.path(), "sb").unwrap());
        assert_eq!(block.standby(), None);
        let mut r = StandbyReporter::claim(block.clone()).unwrap();
        r.publish(42, 3, 1_500);
        r.publish(50, 1, 700);
        let s = block.standby().unwrap();
        assert_eq!(s.pid, std::process::id());
        assert!(s.alive);
        assert_eq!(
            (s.applied_seq, s.behind_records, s.lag_ns, s.max_lag_ns),
            (50, 1, 700, 1_500)
        );
        let err = StandbyReporter::claim(block.clone()).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(r);
        assert_eq!(block.standby(), None);
        // A dead standby's claim (a pid that does not exist) is taken over.
        block
            .drain_status()
            .standby_pid
            .store(claim_word(u32::MAX - 7, 1), Ordering::Release);
        assert!(!block.standby().unwrap().alive);
        let _r = StandbyReporter::claim(block.clone()).unwrap();
        assert_eq!(block.standby().unwrap().pid, std::process::id());
    }
}
