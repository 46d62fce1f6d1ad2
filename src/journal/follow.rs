//! [`JournalFollower`]: the hot standby's copy of the active engine's
//! trading state, kept current by applying each record as the active
//! commits it.
//!
//! It is [`JournalTail`] (which reads only committed records, checking
//! CRC and sequence) feeding the same replay step as [`super::rebuild`],
//! one record at a time, so the standby's orders, positions and trip state
//! are by construction what a rebuild of the journal at the same sequence
//! would give: a standby that takes over needs no replay of its own.

use std::collections::VecDeque;
use std::path::Path;

use super::reader::{note_snapshot, JournalTail, RecordView, SnapshotAt};
use super::record::RecordType;
use super::recover::{replay_one, LogLine, Rebuilt};
use super::{JournalEnd, JournalError};
use crate::clock::mono_ns;

/// Follows a journal another process writes and keeps the rebuilt state
/// current (see the module docs). One thread owns it.
pub struct JournalFollower {
    tail: JournalTail,
    rebuilt: Rebuilt,
    log_tail: VecDeque<LogLine>,
    applied: u64,
    /// The newest snapshot met (a writer opened at the end names it in
    /// the next segment's index record).
    last_snapshot: Option<SnapshotAt>,
}

/// What one [`JournalFollower::poll`] applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FollowBatch {
    /// Records applied in this call: the records that were committed and
    /// not yet applied when the call began (up to its limit).
    pub records: u64,
    /// The longest time between a record's append (its `mono_ns`) and its
    /// application here, over this batch; 0 when the batch is empty.
    pub max_lag_ns: u64,
    /// True when the call stopped because nothing more was committed (it
    /// did not stop at its limit): the follower is at the journal's end.
    pub caught_up: bool,
}

impl JournalFollower {
    /// Opens the journal in `dir` at its first record. Nothing is read
    /// until [`JournalFollower::poll`].
    pub fn open(dir: &Path) -> Result<JournalFollower, JournalError> {
        Ok(JournalFollower {
            tail: JournalTail::open(dir)?,
            rebuilt: Rebuilt::default(),
            log_tail: VecDeque::new(),
            applied: 0,
            last_snapshot: None,
        })
    }

    /// Applies the records committed since the last call, at most `limit`
    /// of them. A damaged record (CRC, sequence) is an error and nothing
    /// after it is applied: the standby must not take over on it.
    pub fn poll(&mut self, limit: u64) -> Result<FollowBatch, JournalError> {
        let mut batch = FollowBatch::default();
        while batch.records < limit {
            let Some(rec) = self.tail.next_record()? else {
                batch.caught_up = true;
                break;
            };
            let view = RecordView {
                segment: rec.segment,
                offset: rec.offset,
                rtype_raw: rec.rtype_raw,
                rtype: RecordType::from_u16(rec.rtype_raw),
                seq: rec.seq,
                mono_ns: rec.mono_ns,
                payload: &rec.payload,
            };
            note_snapshot(&view, &mut self.last_snapshot);
            replay_one(&view, &mut self.rebuilt, &mut self.log_tail);
            batch.records += 1;
            batch.max_lag_ns = batch.max_lag_ns.max(mono_ns().saturating_sub(rec.mono_ns));
        }
        self.applied += batch.records;
        Ok(batch)
    }

    /// The state as of the last record applied (open orders, positions,
    /// last trip and reset, highest order id, `last_seq`), and what replay
    /// could not apply (`issues`).
    pub fn rebuilt(&self) -> &Rebuilt {
        &self.rebuilt
    }

    /// Journal sequence of the last record applied (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.rebuilt.state.last_seq
    }

    /// Where the journal ends as far as this follower has applied it: the
    /// position and sequence of the next record (what
    /// [`crate::journal::JournalWriter::open_after`] compares with the
    /// previous writer's close mark).
    pub fn end(&self) -> JournalEnd {
        let (segment, offset, expected) = self.tail.position();
        JournalEnd {
            segment,
            offset,
            next_seq: expected.unwrap_or(self.rebuilt.state.last_seq + 1),
        }
    }

    /// The newest snapshot record applied (or named by a segment's index).
    pub fn last_snapshot(&self) -> Option<SnapshotAt> {
        self.last_snapshot
    }

    /// Records applied since [`JournalFollower::open`].
    pub fn applied(&self) -> u64 {
        self.applied
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{Mode, Source};
    use crate::journal::record::{OrderEventRecord, SwitchRecord};
    use crate::journal::{rebuild, JournalConfig, JournalWriter};
    use crate::order::{OrderId, Price, Qty, ScopeTags, Side};

    fn new_order(id: u64, side: Side) -> OrderEventRecord {
        OrderEventRecord::new_order(
            OrderId(id),
            ScopeTags::default(),
            side,
            Price::from_units(100),
            Qty::from_lots(3),
        )
    }

    /// While the writer keeps appending (open, as a live active's is), the
    /// follower applies only what is committed, in batches, across a
    /// segment roll-over and a snapshot, and ends with exactly the state a
    /// rebuild of the finished journal gives.
    #[test]
    fn follows_a_live_writer_and_ends_equal_to_a_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, _) = JournalWriter::open(dir.path(), JournalConfig::small_for_tests()).unwrap();
        let mut f = JournalFollower::open(dir.path()).unwrap();
        assert_eq!(f.poll(1000).unwrap().records, 0);
        let mut expected_records = 0u64;
        for round in 0..40u64 {
            for k in 0..50u64 {
                let id = round * 100 + k + 1;
                let o = new_order(id, if k % 2 == 0 { Side::Buy } else { Side::Sell });
                w.append(&o).unwrap();
                expected_records += 1;
                if k % 3 == 0 {
                    w.append(&o.with_fill(Qty::from_lots(1), Price::from_units(101), false))
                        .unwrap();
                    expected_records += 1;
                }
            }
            if round == 20 {
                w.append(&SwitchRecord {
                    reset: false,
                    mode: Mode::HaltNew,
                    source: Source::Api,
                    scope: None,
                    forced: false,
                    generation: 7,
                    wall_ns: 1,
                    reason: "test".into(),
                })
                .unwrap();
                expected_records += 1;
            }
            // A bounded poll stops at its limit and says it did not reach the end.
            let b = f.poll(10).unwrap();
            assert_eq!(b.records, 10);
            assert!(!b.caught_up);
            while !f.poll(10).unwrap().caught_up {}
            // At least every record we appended (the writer adds its own,
            // e.g. a snapshot index in a new segment), up to the last one.
            assert!(f.applied() >= expected_records, "round {round}");
            assert_eq!(f.last_seq(), w.next_seq() - 1, "round {round}");
        }
        drop(w);
        let r = rebuild(dir.path()).unwrap();
        assert!(
            r.scan.segments.len() > 1,
            "the test must cross a segment roll-over"
        );
        assert_eq!(f.rebuilt().state.open_orders, r.state.open_orders);
        assert_eq!(f.rebuilt().state.positions, r.state.positions);
        assert_eq!(f.rebuilt().state.last_trip, r.state.last_trip);
        assert_eq!(f.rebuilt().state.max_order_id, r.state.max_order_id);
        assert!(f.rebuilt().state.tripped().is_some());
        assert!(f.rebuilt().issues.is_empty(), "{:?}", f.rebuilt().issues);
    }
}
