//! [`JournalWriter`]: the one process that appends to a journal.
//!
//! An append writes the header fields and the payload through raw pointers
//! into the pre-faulted mapping, computes the CRC-32C, and stores the commit
//! word last with Release. No system call, no allocation, no lock: the cost is
//! the copy, the CRC and a clock read. Durability is separate: [`JournalWriter::sync`]
//! (msync/fsync on the calling thread) or a background flusher thread
//! ([`JournalConfig::background_sync`], [`JournalWriter::request_sync`]); both
//! leave a [`RecordType::Durable`] record saying which sequence reached the
//! disk and when.
//!
//! # Invariants
//! * `pos` is the offset of the first uncommitted byte of the current
//!   segment; every byte from `pos` to the segment end is zero (fresh
//!   `fallocate`d space, or zeroed by recovery).
//! * `pos + END_RESERVE <= segment size` always: the segment-end record fits.
//! * A new segment exists on disk (renamed into place, directory fsynced)
//!   before the segment-end record that points to it is committed.

mod handoff;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam::channel::{bounded, Sender, TrySendError};

use super::reader::SnapshotAt;
use super::record::{
    off, record_len, DurableRecord, Encode, RecordType, SegmentEndRecord, Sink,
    SnapshotIndexRecord, COMMIT, HEADER_LEN,
};
use super::recover::{recover_locked, RecoveryMode, RecoveryReport};
use super::segment::{
    prefault_for_write, segment_name, Segment, MIN_SEGMENT_SIZE, SEGMENT_HEADER_LEN,
};
use super::state::{SnapshotPayload, TradingState};
use super::{JournalError, JournalLock};
use crate::access::Access;
use crate::clock::{mono_ns, wall_ns};
use crate::crc;

pub use handoff::{JournalEnd, OpenAfter};

/// Bytes kept free at the end of every segment for its segment-end record.
pub const END_RESERVE: usize = record_len(8);
/// Bytes the snapshot-index record takes at the start of every segment
/// after the first.
pub const INDEX_RESERVE: usize = record_len(24);

/// How a journal is written.
#[derive(Clone, Debug)]
pub struct JournalConfig {
    /// Size of each new segment in bytes (a multiple of 4096, at least 4096).
    /// Existing segments keep the size in their header.
    pub segment_size: usize,
    /// Touch every page of a segment once when it is mapped, so appends do not
    /// take first-write page faults.
    pub prefault_write: bool,
    /// Start a background thread that msyncs on [`JournalWriter::request_sync`]
    /// (quick checkpoints request one automatically).
    pub background_sync: bool,
    /// Before the background flusher writes pages back, unmap from this
    /// process the pages the writer has finished with (whole pages below
    /// the append offset, and closed segments). Writing back a page that is
    /// still mapped write-protects it, which needs a TLB shootdown (an
    /// interrupt) on the cores running the writer's threads, landing while
    /// the engine works; the kernel batches them (measured on the
    /// development VM: 1–5 per 486 KB snapshot, 0 with this on, and no
    /// difference in the checkpoint's median either way). The data stays in
    /// the page cache; nothing is lost or reread by the writer, which never
    /// writes below its append offset. On by default; off only to measure
    /// the difference (`ks-journal-latency --only quick`).
    pub release_synced_pages: bool,
    /// Who besides the owner may write the directory and its files.
    pub access: Access,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            segment_size: 64 << 20,
            prefault_write: true,
            background_sync: true,
            release_synced_pages: true,
            access: Access::OWNER_ONLY,
        }
    }
}

impl JournalConfig {
    /// 64 KiB segments, no background thread: for tests and examples.
    pub fn small_for_tests() -> Self {
        JournalConfig {
            segment_size: 64 << 10,
            prefault_write: true,
            background_sync: false,
            release_synced_pages: true,
            access: Access::OWNER_ONLY,
        }
    }
}

/// Where a record went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Its sequence number.
    pub seq: u64,
    /// Its segment.
    pub segment: u64,
    /// Its offset in the segment.
    pub offset: u64,
}

/// Result of a quick checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct QuickCheckpoint {
    /// Sequence of the snapshot record.
    pub seq: u64,
    /// Segment index.
    pub segment: u64,
    /// Offset in the segment.
    pub offset: u64,
    /// Payload bytes.
    pub bytes: usize,
    /// Open orders saved.
    pub open_orders: usize,
    /// Positions saved.
    pub positions: usize,
    /// Time to append (ns): what the emergency path waits for.
    pub append_ns: u64,
    /// A background msync was queued for it.
    pub sync_requested: bool,
}

/// Records up to `up_to_seq` are on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct DurableAt {
    /// Highest durable sequence.
    pub up_to_seq: u64,
    /// Unix ns when msync/fsync returned.
    pub wall_ns: u64,
    /// How long msync/fsync took, ns.
    pub msync_ns: u64,
    /// Sequence of the [`RecordType::Durable`] record written for it.
    pub record_seq: u64,
}

/// Writes payload bytes straight into the mapping through a raw pointer,
/// and folds them into the record's CRC-32C every 16 KiB, while
/// they are still in L1: a large record (a quick checkpoint) is then encoded
/// and checksummed in one pass, the CRC work overlapping the stores' cache
/// misses, instead of a second pass over half a megabyte.
pub(crate) struct RawSink {
    ptr: *mut u8,
    len: usize,
    pos: usize,
    /// CRC-32C of the header bytes 0..24 and of the payload up to `crc_pos`.
    crc: u32,
    crc_pos: usize,
}

/// Payload bytes folded into the CRC at a time: still in L1 (48 KiB per core
/// here) when folded, and few enough calls that the CRC's per-call set-up
/// stays negligible.
const CRC_BLOCK: usize = 16 * 1024;

impl RawSink {
    /// Folds the bytes written since the last fold into the CRC.
    #[inline]
    fn fold_crc(&mut self) {
        // SAFETY: `crc_pos..pos` lies inside the payload area (`pos <= len`,
        // checked by every `put`) and was written by this sink just now; it
        // is read through a shared slice only, and nothing else writes it.
        let written = unsafe {
            std::slice::from_raw_parts(self.ptr.add(self.crc_pos), self.pos - self.crc_pos)
        };
        self.crc = crc::crc32c_append(self.crc, written);
        self.crc_pos = self.pos;
    }

    /// The record CRC ([`record_crc`]) once the payload is complete.
    fn finish_crc(&mut self) -> u32 {
        self.fold_crc();
        self.crc
    }
}

impl RawSink {
    /// Copies `bytes` to the payload at `pos` and folds every whole CRC
    /// block as it completes.
    #[inline(always)]
    fn copy_in(&mut self, bytes: &[u8]) {
        // SAFETY: `ptr..ptr+len` is the payload area of the record being
        // written, inside the mapping (checked by the caller against the
        // segment size) and past every committed record, so no reader reads
        // it; every caller checked `bytes.len() <= len - pos`.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(self.pos), bytes.len())
        };
        self.pos += bytes.len();
        if self.pos - self.crc_pos >= CRC_BLOCK {
            self.fold_crc();
        }
    }

    /// A put larger than a CRC block (a quick checkpoint's ready-encoded
    /// orders): copied one block at a time, each folded into the CRC while
    /// it is still in L1, instead of a second pass over the whole.
    #[inline(never)]
    fn put_large(&mut self, bytes: &[u8]) {
        for block in bytes.chunks(CRC_BLOCK) {
            self.copy_in(block);
        }
    }
}

impl Sink for RawSink {
    #[inline(always)]
    fn put(&mut self, bytes: &[u8]) {
        // An encoder that writes more than its `encoded_len` is a bug in this
        // crate; stop before writing outside the record.
        assert!(
            bytes.len() <= self.len - self.pos,
            "journal encoder overran its encoded_len"
        );
        // The common case, an order event's ten small fields, is one copy
        // and one comparison each.
        if bytes.len() > CRC_BLOCK {
            self.put_large(bytes);
        } else {
            self.copy_in(bytes);
        }
    }
}

struct SyncJob {
    /// Closed segments not yet fsynced, with their mappings when they are
    /// to be released first.
    files: Vec<ClosedSegment>,
    map: Arc<memmap2::MmapRaw>,
    upto: usize,
    /// Whole pages `release.0..release.1` of `map` are done with: unmap
    /// them before the msync (empty when not releasing).
    release: (usize, usize),
    seq: u64,
}

/// A closed segment waiting for its fsync.
struct ClosedSegment {
    file: Arc<File>,
    /// Its mapping, unmapped from the process before the fsync
    /// ([`JournalConfig::release_synced_pages`]); `None`: leave it.
    map: Option<Arc<memmap2::MmapRaw>>,
}

struct Flusher {
    tx: Option<Sender<SyncJob>>,
    done: Arc<Mutex<FlushState>>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct FlushState {
    durable: Option<DurableRecord>,
    error: Option<String>,
}

impl Flusher {
    fn start() -> Flusher {
        let (tx, rx) = bounded::<SyncJob>(16);
        let done = Arc::new(Mutex::new(FlushState::default()));
        let d = done.clone();
        let thread = std::thread::Builder::new()
            .name("ks-journal-sync".into())
            .spawn(move || {
                for job in rx {
                    let t0 = mono_ns();
                    let r = sync_job(&job);
                    let mut st = d.lock().unwrap_or_else(|p| p.into_inner());
                    match r {
                        Ok(()) => {
                            st.durable = Some(DurableRecord {
                                up_to_seq: job.seq,
                                wall_ns: wall_ns(),
                                msync_ns: mono_ns() - t0,
                            })
                        }
                        Err(e) => st.error = Some(e.to_string()),
                    }
                }
            })
            .ok();
        Flusher {
            tx: Some(tx),
            done,
            thread,
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn sync_job(job: &SyncJob) -> std::io::Result<()> {
    for f in &job.files {
        if let Some(map) = &f.map {
            release_pages(map, 0, map.len());
        }
        f.file.sync_data()?;
    }
    release_pages(&job.map, job.release.0, job.release.1);
    job.map.flush_range(0, job.upto)
}

/// Unmaps pages `from..to` (page-aligned) of a shared file mapping from
/// this process (`MADV_DONTNEED`): their contents stay in the page cache,
/// dirty pages stay dirty, and a later access maps them again from the
/// file. Done so that writing them back needs no TLB shootdown per page
/// (see [`JournalConfig::release_synced_pages`]). A failure is harmless
/// (the pages stay mapped, as without the release) and is ignored.
fn release_pages(map: &memmap2::MmapRaw, from: usize, to: usize) {
    let to = to.min(map.len());
    if from >= to {
        return;
    }
    debug_assert!(from % 4096 == 0 && to % 4096 == 0);
    // SAFETY: `from..to` lies inside the mapping (clamped above), which the
    // `Arc` keeps alive for the call. The mapping is `MAP_SHARED` of a
    // regular file, for which `MADV_DONTNEED` only drops this process's page
    // table entries: the bytes stay in the page cache and are read back on
    // the next access, so no data changes. The writer never writes these
    // bytes again (they lie below its append offset, or in a closed
    // segment), and readers in this process that touch them fault them in.
    unsafe {
        libc::madvise(
            map.as_mut_ptr().add(from).cast(),
            to - from,
            libc::MADV_DONTNEED,
        );
    }
}

/// Creates the journal directory (and missing parents) if needed, owner-only
/// (or shared with the configured group).
fn create_dir(dir: &Path, access: Access) -> Result<(), JournalError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    let mode = if access.shared_gid.is_some() {
        0o770
    } else {
        0o700
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(|e| JournalError::io(dir, "create the journal directory", e))?;
    let d = File::open(dir).map_err(|e| JournalError::io(dir, "open the journal directory", e))?;
    access
        .apply_group(&d)
        .map_err(|e| JournalError::io(dir, "give the journal directory its group", e))
}

fn check_config(cfg: &JournalConfig) -> Result<(), JournalError> {
    if cfg.segment_size < MIN_SEGMENT_SIZE
        || cfg.segment_size % 4096 != 0
        || cfg.segment_size > u32::MAX as usize
    {
        return Err(JournalError::Config(format!(
            "segment_size {} must be a multiple of 4096 between {MIN_SEGMENT_SIZE} and 4 GiB",
            cfg.segment_size
        )));
    }
    Ok(())
}

/// The single writer of a journal directory (one per directory, across
/// processes: a file lock). `Send`, not `Sync`: one thread appends; the
/// runtime keeps it behind a mutex shared by the registry's sink, the
/// drain's checkpoint and the supervisor.
pub struct JournalWriter {
    dir: PathBuf,
    cfg: JournalConfig,
    seg: Segment,
    spare: Option<Segment>,
    /// Closed segments still mapped: unmapping 64 MiB of dirty pages takes
    /// milliseconds, so it is done in `prepare_next_segment`, not at roll-over.
    retired: Vec<Segment>,
    pos: usize,
    next_seq: u64,
    /// Earlier segments not yet fsynced.
    unsynced: Vec<ClosedSegment>,
    /// Pages of the current segment below this offset were handed to the
    /// flusher to be released.
    released_upto: usize,
    recorded_durable: u64,
    /// The newest snapshot record, named at the start of every new segment
    /// so recovery can start there.
    last_snapshot: Option<SnapshotAt>,
    /// Records and bytes appended since that snapshot (for a snapshot policy).
    since_snapshot: (u64, u64),
    flusher: Option<Flusher>,
    // Dropped last: the lock outlives every mapping. `None` once the
    // journal was closed for a successor (`close_for_successor`): nothing
    // more is appended.
    lock: Option<JournalLock>,
}

impl JournalWriter {
    /// Opens (or creates) the journal in `dir` for writing: takes the writer
    /// lock, recovers (truncates a torn tail, sets orphans aside; see
    /// [`RecoveryReport`]), and positions after the last valid record.
    pub fn open(
        dir: &Path,
        cfg: JournalConfig,
    ) -> Result<(JournalWriter, RecoveryReport), JournalError> {
        check_config(&cfg)?;
        create_dir(dir, cfg.access)?;
        let lock = JournalLock::acquire(dir, cfg.access)?;
        Self::open_locked(dir, cfg, lock)
    }

    /// [`JournalWriter::open`] with the lock already held.
    fn open_locked(
        dir: &Path,
        cfg: JournalConfig,
        lock: JournalLock,
    ) -> Result<(JournalWriter, RecoveryReport), JournalError> {
        check_config(&cfg)?;
        let report = recover_locked(dir, RecoveryMode::TailOnly)?;
        let scan = &report.scan;
        let next_seq = scan.last_seq + 1;
        let (seg, pos) = match scan.append_at {
            Some((index, at)) => {
                let path = dir.join(segment_name(index));
                (Segment::open_rw(&path, index)?, at as usize)
            }
            None => {
                // Empty journal, or the last segment is closed: start the next.
                let index = scan.segments.last().map_or(1, |s| s.index + 1);
                (
                    Segment::create(dir, index, cfg.segment_size)?,
                    SEGMENT_HEADER_LEN,
                )
            }
        };
        if pos + END_RESERVE > seg.size() {
            return Err(JournalError::BadSegment {
                path: seg.path.clone(),
                what: format!("append offset {pos} leaves no room for the segment-end record"),
            });
        }
        if cfg.prefault_write {
            prefault_for_write(&seg.map, pos);
        }
        let flusher = cfg.background_sync.then(Flusher::start);
        Ok((
            JournalWriter {
                dir: dir.to_path_buf(),
                cfg,
                seg,
                spare: None,
                retired: Vec::new(),
                pos,
                next_seq,
                unsynced: Vec::new(),
                released_upto: 0,
                recorded_durable: 0,
                last_snapshot: scan.last_snapshot,
                since_snapshot: (0, 0),
                flusher,
                lock: Some(lock),
            },
            report,
        ))
    }

    /// The journal directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sequence the next record will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Current segment index and append offset.
    pub fn position(&self) -> (u64, u64) {
        (self.seg.header.index, self.pos as u64)
    }

    /// Appends one record. Never blocks on I/O except at segment roll-over
    /// (call [`JournalWriter::prepare_next_segment`] ahead to avoid even that).
    /// On error nothing was written and every earlier record is intact.
    #[inline]
    pub fn append<P: Encode>(&mut self, rec: &P) -> Result<Appended, JournalError> {
        let len = rec.encoded_len();
        self.append_with(rec.record_type() as u16, len, mono_ns(), |s| rec.encode(s))
    }

    /// [`append`](JournalWriter::append) with the record's monotonic stamp
    /// given: for a batch of records appended together under one hold of
    /// the writer, stamped with one clock read (`mono_ns` from
    /// [`crate::clock::mono_ns`], read after the previous record was
    /// appended, so stamps never go backwards). Thousands of records in
    /// an emergency drain: the clock read was a tenth of their cost.
    #[inline]
    pub fn append_stamped<P: Encode>(
        &mut self,
        rec: &P,
        mono_ns: u64,
    ) -> Result<Appended, JournalError> {
        let len = rec.encoded_len();
        self.append_with(rec.record_type() as u16, len, mono_ns, |s| rec.encode(s))
    }

    /// Appends a record of a raw type with the given payload bytes.
    pub fn append_bytes(&mut self, rtype: u16, payload: &[u8]) -> Result<Appended, JournalError> {
        self.append_with(rtype, payload.len(), mono_ns(), |s| s.put(payload))
    }

    #[inline]
    fn append_with(
        &mut self,
        rtype: u16,
        len: usize,
        mono: u64,
        fill: impl FnOnce(&mut RawSink),
    ) -> Result<Appended, JournalError> {
        if self.lock.is_none() {
            return Err(self.handed_to_successor());
        }
        if self.pos + record_len(len) + END_RESERVE > self.seg.size() {
            self.roll(len)?;
        }
        Ok(self.write_record(rtype, len, mono, fill))
    }

    /// Writes a record at `pos`; the caller checked that it fits.
    #[inline]
    fn write_record(
        &mut self,
        rtype: u16,
        len: usize,
        mono: u64,
        fill: impl FnOnce(&mut RawSink),
    ) -> Appended {
        let p = self.pos;
        let total = record_len(len);
        debug_assert!(p + total <= self.seg.size());
        let seq = self.next_seq;
        let mut head = [0u8; 24];
        head[off::LEN..off::LEN + 4].copy_from_slice(&(len as u32).to_le_bytes());
        head[off::TYPE..off::TYPE + 2].copy_from_slice(&rtype.to_le_bytes());
        head[off::SEQ..off::SEQ + 8].copy_from_slice(&seq.to_le_bytes());
        head[off::MONO..off::MONO + 8].copy_from_slice(&mono.to_le_bytes());
        // SAFETY: `p + total <= segment size` (checked by the callers), so
        // every pointer below stays inside the mapping, which lives as long
        // as `self.seg`. The bytes `p..p+total` are past every committed
        // record: readers do not read them until the commit word is set, and
        // this is the only writer (journal lock). No `&mut` into the mapping
        // is created; the slices for the CRC are shared and cover only bytes
        // this thread has just written. The commit word at p+28 is 4-aligned
        // (p is 8-aligned, the mapping page-aligned) and is only ever accessed
        // atomically.
        unsafe {
            let rec = self.seg.map.as_mut_ptr().add(p);
            std::ptr::copy_nonoverlapping(head.as_ptr(), rec, 24);
            let mut sink = RawSink {
                ptr: rec.add(HEADER_LEN),
                len,
                pos: 0,
                crc: crc::crc32c(&head),
                crc_pos: 0,
            };
            fill(&mut sink);
            assert_eq!(
                sink.pos, len,
                "journal encoder wrote less than its encoded_len"
            );
            // Same value as `record_crc(header 0..24, payload)`.
            let crc = sink.finish_crc();
            // Padding: zero already (invariant), written anyway so a record
            // never depends on what was there.
            std::ptr::write_bytes(rec.add(HEADER_LEN + len), 0, total - HEADER_LEN - len);
            std::ptr::copy_nonoverlapping(crc.to_le_bytes().as_ptr(), rec.add(off::CRC), 4);
            AtomicU32::from_ptr(rec.add(off::COMMIT) as *mut u32).store(COMMIT, Ordering::Release);
        }
        self.pos = p + total;
        self.next_seq = seq + 1;
        if rtype == RecordType::Snapshot as u16 {
            self.last_snapshot = Some(SnapshotAt {
                segment: self.seg.header.index,
                offset: p as u64,
                seq,
            });
            self.since_snapshot = (0, 0);
        } else {
            self.since_snapshot.0 += 1;
            self.since_snapshot.1 += total as u64;
        }
        Appended {
            seq,
            segment: self.seg.header.index,
            offset: p as u64,
        }
    }

    /// Moves to the next segment; on error nothing changed.
    #[cold]
    fn roll(&mut self, payload_len: usize) -> Result<(), JournalError> {
        let max =
            self.cfg.segment_size - SEGMENT_HEADER_LEN - END_RESERVE - INDEX_RESERVE - HEADER_LEN;
        if payload_len > max {
            return Err(JournalError::RecordTooLarge {
                len: payload_len,
                max,
            });
        }
        let next_index = self.seg.header.index + 1;
        let next = match self.spare.take() {
            Some(s) => s,
            None => self.new_segment(next_index)?,
        };
        self.write_record(RecordType::SegmentEnd as u16, 8, mono_ns(), |s| {
            SegmentEndRecord {
                next_segment: next_index,
            }
            .encode(s)
        });
        // The segment-end record carries the sequence the next record gets and
        // does not use it up: the records a reader sees are numbered 1, 2, 3…
        // without gaps across segments.
        self.next_seq -= 1;
        let old = std::mem::replace(&mut self.seg, next);
        self.pos = SEGMENT_HEADER_LEN;
        self.released_upto = 0;
        match old.file.try_clone() {
            Ok(f) => self.unsynced.push(ClosedSegment {
                file: Arc::new(f),
                map: self.cfg.release_synced_pages.then(|| old.map.clone()),
            }),
            // Cannot keep a handle: make the old segment durable now instead.
            Err(_) => {
                let _ = old.map.flush();
            }
        }
        self.retired.push(old);
        if self.retired.len() > 2 {
            // Nobody prepares segments ahead: bound the mappings kept.
            self.retired.remove(0);
        }
        // The new segment starts by naming the newest snapshot, so recovery
        // finds it without reading the segments before.
        let index = self
            .last_snapshot
            .map_or(SnapshotIndexRecord::default(), |s| SnapshotIndexRecord {
                segment: s.segment,
                offset: s.offset,
                seq: s.seq,
            });
        self.write_record(
            RecordType::SnapshotIndex as u16,
            index.encoded_len(),
            mono_ns(),
            |s| index.encode(s),
        );
        Ok(())
    }

    /// Records and payload-plus-header bytes appended since the newest
    /// snapshot record (or since the writer opened, if none since): what a
    /// snapshot policy ("every N records or bytes") looks at.
    pub fn since_snapshot(&self) -> (u64, u64) {
        self.since_snapshot
    }

    /// The newest snapshot record this writer knows of.
    pub fn last_snapshot(&self) -> Option<SnapshotAt> {
        self.last_snapshot
    }

    fn new_segment(&self, index: u64) -> Result<Segment, JournalError> {
        // Closed for its successor: segment `index` may be the successor's
        // to create (or already written by it); never rename over it.
        if self.lock.is_none() {
            return Err(self.handed_to_successor());
        }
        let s = Segment::create(&self.dir, index, self.cfg.segment_size)?;
        if self.cfg.prefault_write {
            prefault_for_write(&s.map, SEGMENT_HEADER_LEN);
        }
        Ok(s)
    }

    /// Creates and maps the next segment now, off the critical path, so the
    /// next roll-over costs no system call; also unmaps closed segments. A
    /// no-op if a segment is ready and none is retired.
    pub fn prepare_next_segment(&mut self) -> Result<(), JournalError> {
        self.retired.clear();
        if self.spare.is_none() {
            self.spare = Some(self.new_segment(self.seg.header.index + 1)?);
        }
        Ok(())
    }

    /// Quick (emergency) checkpoint: appends one [`RecordType::Snapshot`]
    /// record of `state` (open orders, positions, last trip and reset), with
    /// no fsync; queues a background msync if the flusher runs. The page cache
    /// keeps the record if the process dies; [`JournalWriter::sync`] or the
    /// flusher makes it durable against a machine crash.
    pub fn quick_checkpoint(
        &mut self,
        state: &TradingState,
    ) -> Result<QuickCheckpoint, JournalError> {
        let t0 = mono_ns();
        let payload = SnapshotPayload {
            state,
            last_seq: self.next_seq.saturating_sub(1),
            taken_wall_ns: wall_ns(),
        };
        let bytes = payload.encoded_len();
        let a = self.append(&payload)?;
        let append_ns = mono_ns() - t0;
        let sync_requested = self.request_sync();
        Ok(QuickCheckpoint {
            seq: a.seq,
            segment: a.segment,
            offset: a.offset,
            bytes,
            open_orders: state.open_orders.len(),
            positions: state.positions.len(),
            append_ns,
            sync_requested,
        })
    }

    /// Queues a background msync of everything appended so far. Returns
    /// false when there is no flusher or its queue is full (16 requests; a
    /// later request covers these records too).
    pub fn request_sync(&mut self) -> bool {
        let Some(tx) = self.flusher.as_ref().and_then(|f| f.tx.as_ref()) else {
            return false;
        };
        // Whole pages below the append offset: the writer never writes
        // there again. The page holding `pos` stays mapped.
        let release = if self.cfg.release_synced_pages {
            (self.released_upto, self.pos / 4096 * 4096)
        } else {
            (0, 0)
        };
        let job = SyncJob {
            files: std::mem::take(&mut self.unsynced),
            map: self.seg.map.clone(),
            upto: self.pos,
            release,
            seq: self.next_seq - 1,
        };
        match tx.try_send(job) {
            Ok(()) => {
                self.released_upto = self.released_upto.max(release.1);
                true
            }
            Err(TrySendError::Full(job)) | Err(TrySendError::Disconnected(job)) => {
                self.unsynced = job.files;
                false
            }
        }
    }

    /// If the background flusher made more records durable since the last
    /// call, appends a [`RecordType::Durable`] record saying so and returns
    /// it. Returns an error if the flusher's msync failed.
    pub fn poll_durable(&mut self) -> Result<Option<DurableAt>, JournalError> {
        let Some(f) = &self.flusher else {
            return Ok(None);
        };
        let (durable, error) = {
            let mut st = f.done.lock().unwrap_or_else(|p| p.into_inner());
            (st.durable, st.error.take())
        };
        if let Some(e) = error {
            return Err(JournalError::io(
                &self.seg.path,
                "msync the journal (background)",
                std::io::Error::other(e),
            ));
        }
        match durable {
            Some(d) if d.up_to_seq > self.recorded_durable => self.record_durable(d).map(Some),
            _ => Ok(None),
        }
    }

    fn record_durable(&mut self, d: DurableRecord) -> Result<DurableAt, JournalError> {
        let a = self.append(&d)?;
        self.recorded_durable = d.up_to_seq;
        Ok(DurableAt {
            up_to_seq: d.up_to_seq,
            wall_ns: d.wall_ns,
            msync_ns: d.msync_ns,
            record_seq: a.seq,
        })
    }

    /// Makes every record appended so far durable on this thread (fsync of
    /// closed segments, msync of the current one), then appends a
    /// [`RecordType::Durable`] record saying so (that record itself is durable
    /// only after the next sync).
    pub fn sync(&mut self) -> Result<DurableAt, JournalError> {
        let t0 = mono_ns();
        for f in &self.unsynced {
            f.file
                .sync_data()
                .map_err(|e| JournalError::io(&self.dir, "fsync a closed journal segment", e))?;
        }
        self.unsynced.clear();
        self.seg
            .map
            .flush_range(0, self.pos)
            .map_err(|e| JournalError::io(&self.seg.path, "msync the journal", e))?;
        let d = DurableRecord {
            up_to_seq: self.next_seq - 1,
            wall_ns: wall_ns(),
            msync_ns: mono_ns() - t0,
        };
        self.record_durable(d)
    }
}
