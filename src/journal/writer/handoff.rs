//! Handing the journal from one writer process to its successor in a
//! failover, without the successor's recovery scan and rebuild.
//!
//! The old active closes its writer for a successor
//! ([`JournalWriter::close_for_successor`]): it appends nothing more,
//! writes where its journal ends into the lock file, and unlocks, with no
//! msync. The hot standby has applied every committed record up to that
//! end ([`crate::journal::JournalFollower`]), so it opens the writer at
//! that position ([`JournalWriter::open_after`]) with nothing to verify but
//! that the two positions agree: a writer that closes for a successor has
//! finished its last append (one thread owns the writer) and leaves
//! nothing after it, and every acquisition of the lock overwrites the
//! mark, so a holder that died (possibly mid-append) leaves none and the
//! successor takes the full recovery instead.
//!
//! Durability: the old active does not msync its last records before it
//! unlocks. Both processes map the same file on one host, so those records
//! are in the one page cache the successor appends to, and a process dying
//! loses nothing of it; only a machine crash could, exactly as for any
//! record the writer appended since its last sync. The successor queues a
//! background msync of the whole journal (the predecessor's records
//! included; closed segments get an fsync) as soon as it opens, so
//! durability is finished off the failover's critical path, on the new
//! owner's flusher thread, and recorded by its next durability mark.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use super::{ClosedSegment, Flusher, JournalConfig, JournalWriter, END_RESERVE};
use crate::journal::reader::SnapshotAt;
use crate::journal::record::HEADER_LEN;
use crate::journal::segment::{list_segments, segment_name, Segment, SEGMENT_HEADER_LEN};
use crate::journal::{JournalError, JournalLock};

/// Where a journal ends: the position the next record goes to and the
/// sequence it gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JournalEnd {
    /// Segment index.
    pub segment: u64,
    /// Offset in the segment of the next record.
    pub offset: u64,
    /// Sequence of the next record.
    pub next_seq: u64,
}

const MARK: &str = "closed-for-successor";

impl JournalEnd {
    /// The lock file's line for it.
    pub(crate) fn mark(&self) -> String {
        format!(
            "{MARK} segment {} offset {} next_seq {}",
            self.segment, self.offset, self.next_seq
        )
    }

    /// Reads the mark back from a lock file's text (`None`: no mark).
    pub(crate) fn parse_mark(text: &str) -> Option<JournalEnd> {
        let line = text.lines().find(|l| l.starts_with(MARK))?;
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            [_, "segment", s, "offset", o, "next_seq", n] => Some(JournalEnd {
                segment: s.parse().ok()?,
                offset: o.parse().ok()?,
                next_seq: n.parse().ok()?,
            }),
            _ => None,
        }
    }
}

/// What [`JournalWriter::open_after`] did.
pub enum OpenAfter {
    /// Opened at the followed end: the follower's state is the journal's.
    AtFollowedEnd(Box<JournalWriter>),
    /// Not possible (why): the lock is given back for a full open
    /// ([`JournalWriter::open_with_lock`]) and a rebuild.
    Refused(JournalLock, String),
}

impl JournalWriter {
    /// Stops appending (every later append fails with
    /// [`JournalError::ClosedForSuccessor`]), writes where this journal ends into the
    /// lock file and unlocks it, without an msync: see the module docs for
    /// why the successor finishes durability. The mappings stay until the
    /// writer is dropped, off the successor's path.
    pub fn close_for_successor(&mut self) -> Result<JournalEnd, JournalError> {
        let end = JournalEnd {
            segment: self.seg.header.index,
            offset: self.pos as u64,
            next_seq: self.next_seq,
        };
        let Some(lock) = self.lock.as_mut() else {
            return Err(self.handed_to_successor());
        };
        lock.mark_closed(end).map_err(|e| {
            JournalError::io(&self.dir, "write the close mark into the lock file", e)
        })?;
        self.lock = None;
        Ok(end)
    }

    pub(super) fn handed_to_successor(&self) -> JournalError {
        JournalError::ClosedForSuccessor {
            dir: self.dir.clone(),
        }
    }

    /// [`JournalWriter::open`] with the lock already taken (e.g. by
    /// [`JournalLock::try_acquire_after`]): the full recovery.
    pub fn open_with_lock(
        dir: &Path,
        cfg: JournalConfig,
        lock: JournalLock,
    ) -> Result<(JournalWriter, super::RecoveryReport), JournalError> {
        Self::open_locked(dir, cfg, lock)
    }

    /// Opens the journal for writing at `followed`, where a follower that
    /// applied every committed record stands, without a recovery scan:
    /// only when the previous writer closed for a successor at exactly that
    /// position (`closed`, from [`JournalLock::try_acquire_after`]), no
    /// later segment exists, and the next record's header bytes are still
    /// zero. Anything else is [`OpenAfter::Refused`]. `last_snapshot` is
    /// the newest snapshot the follower met. Queues a background msync of
    /// everything the predecessor wrote (see the module docs).
    pub fn open_after(
        dir: &Path,
        cfg: JournalConfig,
        lock: JournalLock,
        closed: Option<JournalEnd>,
        followed: JournalEnd,
        last_snapshot: Option<SnapshotAt>,
    ) -> Result<OpenAfter, JournalError> {
        super::check_config(&cfg)?;
        match closed {
            Some(c) if c == followed => {}
            Some(c) => {
                return Ok(OpenAfter::Refused(
                    lock,
                    format!("the previous writer closed at {c:?}, the follower stands at {followed:?}"),
                ))
            }
            None => {
                return Ok(OpenAfter::Refused(
                    lock,
                    "the previous writer left no close mark (it died, or stopped without closing for a successor)".into(),
                ))
            }
        }
        let segs = list_segments(dir)?;
        // The predecessor may have prepared the next segment ahead
        // (`prepare_next_segment`): empty, it becomes this writer's spare.
        if let Some((later, _)) = segs.iter().find(|(i, _)| *i > followed.segment + 1) {
            return Ok(OpenAfter::Refused(
                lock,
                format!("segment {later} exists after the followed end"),
            ));
        }
        let seg = Segment::open_rw(&dir.join(segment_name(followed.segment)), followed.segment)?;
        let pos = followed.offset as usize;
        if pos % 8 != 0 || pos + END_RESERVE > seg.size() {
            return Ok(OpenAfter::Refused(
                lock,
                format!("offset {pos} is not a record boundary with room for the segment end"),
            ));
        }
        if !nothing_at(&seg, pos) {
            return Ok(OpenAfter::Refused(
                lock,
                format!("bytes already written at the followed end (offset {pos})"),
            ));
        }
        let spare = match segs.iter().find(|(i, _)| *i == followed.segment + 1) {
            Some((i, path)) => {
                let s = Segment::open_rw(path, *i)?;
                if !nothing_at(&s, SEGMENT_HEADER_LEN) {
                    return Ok(OpenAfter::Refused(
                        lock,
                        format!("segment {i} after the followed end holds records"),
                    ));
                }
                Some(s)
            }
            None => None,
        };
        if cfg.prefault_write {
            // Not the touch loop of a normal open (24–64 ms for a 64 MiB
            // segment on the shared 2-core machine, on the failover's
            // critical path): the page tables are filled in the background
            // while this writer appends (see `populate_in_background`).
            populate_in_background(seg.map.clone(), pos);
            // The predecessor's spare too: its first roll-over would
            // otherwise fault every page in this process, under the
            // registry lock.
            if let Some(s) = &spare {
                populate_in_background(s.map.clone(), SEGMENT_HEADER_LEN);
            }
        }
        // Closed segments the predecessor may not have fsynced: the
        // flusher fsyncs them with its first job (a clean file's fsync
        // costs next to nothing).
        let unsynced = segs
            .iter()
            .filter(|(i, _)| *i < followed.segment)
            .filter_map(|(_, p)| File::open(p).ok())
            .map(|f| ClosedSegment {
                file: Arc::new(f),
                map: None,
            })
            .collect();
        let flusher = cfg.background_sync.then(Flusher::start);
        let mut w = JournalWriter {
            dir: dir.to_path_buf(),
            cfg,
            seg,
            spare,
            retired: Vec::new(),
            pos,
            next_seq: followed.next_seq,
            unsynced,
            released_upto: 0,
            recorded_durable: 0,
            last_snapshot,
            since_snapshot: (0, 0),
            flusher,
            lock: Some(lock),
        };
        w.request_sync();
        Ok(OpenAfter::AtFollowedEnd(Box::new(w)))
    }
}

/// True when the record header at `pos` is all zero: nothing was written
/// there (a record's header is written before its commit word; the writer
/// keeps everything past its append offset zero).
fn nothing_at(seg: &Segment, pos: usize) -> bool {
    if pos + HEADER_LEN > seg.size() {
        return false;
    }
    // SAFETY: `pos + HEADER_LEN <= size`: inside the mapping. The caller
    // holds the journal lock: no other process writes.
    let head = unsafe { std::slice::from_raw_parts(seg.map.as_ptr().add(pos), HEADER_LEN) };
    head.iter().all(|b| *b == 0)
}

/// Fills the writer's page tables for `from..` of the segment on a
/// short-lived thread with `MADV_POPULATE_WRITE`, which faults the pages in
/// writable without writing to them: safe while the writer appends to the
/// same pages (unlike the read-and-write-back touch of
/// `prefault_for_write`, which could overwrite a record being written).
/// Until it reaches a page, an append there takes the first-write fault
/// the prefault avoids. A kernel without it (before 5.14) refuses
/// (`EINVAL`): then the appends take those faults; nothing else changes.
fn populate_in_background(map: Arc<memmap2::MmapRaw>, from: usize) {
    const CHUNK: usize = 1 << 20;
    let spawned = std::thread::Builder::new()
        .name("ks-journal-populate".into())
        .spawn(move || {
            let page = 4096;
            let mut off = from / page * page;
            while off < map.len() {
                let len = CHUNK.min(map.len() - off);
                // SAFETY: `off..off + len` is inside the mapping, page
                // aligned (the mapping is; `off` is rounded down to a
                // page). `map` is kept alive by this thread's Arc.
                // MADV_POPULATE_WRITE does not change the memory's
                // contents.
                let r = unsafe {
                    libc::madvise(
                        map.as_mut_ptr().add(off).cast(),
                        len,
                        libc::MADV_POPULATE_WRITE,
                    )
                };
                if r != 0 {
                    return;
                }
                off += len;
            }
        });
    // No thread: the appends take the first-write faults instead.
    drop(spawned);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Access;
    use crate::journal::record::OrderEventRecord;
    use crate::journal::{rebuild, JournalFollower};
    use crate::order::{OrderId, Price, Qty, ScopeTags, Side};

    fn order(id: u64) -> OrderEventRecord {
        OrderEventRecord::new_order(
            OrderId(id),
            ScopeTags::default(),
            Side::Buy,
            Price::from_units(100),
            Qty::from_lots(1),
        )
    }

    fn take_lock(dir: &Path) -> (JournalLock, Option<JournalEnd>) {
        JournalLock::try_acquire_after(dir, Access::OWNER_ONLY)
            .unwrap()
            .expect("lock free")
    }

    /// A writer closed for a successor, across a roll-over (with a spare
    /// segment prepared ahead): the successor opens at the follower's end
    /// without a scan, appends with the next sequence, and the journal
    /// rebuilds to exactly the records of both writers.
    #[test]
    fn a_successor_opens_at_the_followed_end_and_the_sequence_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let (mut old, _) =
            JournalWriter::open(dir.path(), JournalConfig::small_for_tests()).unwrap();
        let mut f = JournalFollower::open(dir.path()).unwrap();
        for id in 1..=3000 {
            old.append(&order(id)).unwrap();
        }
        old.prepare_next_segment().unwrap();
        let end = old.close_for_successor().unwrap();
        assert!(
            matches!(
                old.append(&order(9999)),
                Err(JournalError::ClosedForSuccessor { .. })
            ),
            "closed: appends refused, with the typed error"
        );
        while !f.poll(1000).unwrap().caught_up {}
        assert_eq!(f.end(), end);
        let (lock, closed) = take_lock(dir.path());
        assert_eq!(closed, Some(end));
        let mut new = match JournalWriter::open_after(
            dir.path(),
            JournalConfig::small_for_tests(),
            lock,
            closed,
            f.end(),
            f.last_snapshot(),
        )
        .unwrap()
        {
            OpenAfter::AtFollowedEnd(w) => *w,
            OpenAfter::Refused(_, why) => panic!("refused: {why}"),
        };
        assert_eq!(new.next_seq(), end.next_seq);
        for id in 3001..=6000 {
            new.append(&order(id)).unwrap();
        }
        drop(new);
        drop(old);
        let r = rebuild(dir.path()).unwrap();
        assert!(r.scan.segments.len() > 2, "crossed roll-overs");
        assert_eq!(r.state.open_orders.len(), 6000);
        assert_eq!(r.state.max_order_id, OrderId(6000));
        assert!(r.issues.is_empty(), "{:?}", r.issues);
    }

    /// No close mark (the writer was dropped, as a crash would leave it),
    /// or a mark at another position than the follower's: refused, the
    /// lock handed back for the full recovery.
    #[test]
    fn without_a_matching_close_mark_the_successor_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, _) = JournalWriter::open(dir.path(), JournalConfig::small_for_tests()).unwrap();
        let mut f = JournalFollower::open(dir.path()).unwrap();
        w.append(&order(1)).unwrap();
        drop(w);
        while !f.poll(1000).unwrap().caught_up {}
        let (lock, closed) = take_lock(dir.path());
        assert_eq!(closed, None, "a dropped writer leaves no mark");
        let cfg = JournalConfig::small_for_tests();
        let lock =
            match JournalWriter::open_after(dir.path(), cfg.clone(), lock, closed, f.end(), None)
                .unwrap()
            {
                OpenAfter::Refused(lock, why) => {
                    assert!(why.contains("no close mark"), "{why}");
                    lock
                }
                OpenAfter::AtFollowedEnd(_) => panic!("opened without a close mark"),
            };
        let (mut w, _) = JournalWriter::open_with_lock(dir.path(), cfg.clone(), lock).unwrap();
        w.append(&order(2)).unwrap();
        let end = w.close_for_successor().unwrap();
        // The follower stands one record short of the close mark.
        let behind = JournalEnd {
            next_seq: end.next_seq - 1,
            ..f.end()
        };
        let (lock, closed) = take_lock(dir.path());
        assert_eq!(closed, Some(end));
        match JournalWriter::open_after(dir.path(), cfg, lock, closed, behind, None).unwrap() {
            OpenAfter::Refused(_, why) => assert!(why.contains("closed at"), "{why}"),
            OpenAfter::AtFollowedEnd(_) => panic!("opened behind the close mark"),
        }
        // Every acquisition overwrites the mark: the next holder finds none.
        drop(w);
        let (_lock, closed) = take_lock(dir.path());
        assert_eq!(closed, None);
    }
}
