//! Recovery: cutting a journal back to its last complete, valid record, and
//! rebuilding the trading state from it (the runbook's "extract state from
//! logs").
//!
//! [`recover`] changes files (under the writer lock): the invalid tail of
//! the last segment is copied to `<segment>.torn-<offset>` and zeroed, later
//! segments that hold records are renamed `<segment>.orphan-<unix ns>`, empty
//! spare segments are removed. Nothing valid is ever touched, and nothing
//! invalid is destroyed without a copy (unless the copy itself fails, which
//! the report says).
//!
//! [`rebuild`] only reads.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::reader::{
    scan, scan_from, scan_tail, DropKind, Dropped, RecordView, RecordsAfter, ScanReport, SnapshotAt,
};
use super::record::{
    BlobRecord, DurableRecord, LogRecord, OrderEventRecord, RecordType, SwitchRecord,
};
use super::segment::{
    fsync_dir, SegmentHeader, FORMAT_MAJOR, MIN_SEGMENT_SIZE, SEGMENT_HEADER_LEN, SEGMENT_MAGIC,
};
use super::state::{PositionsRecord, ReplayIssue, TradingState};
use super::{JournalError, JournalLock, ReadLock};
use crate::access::Access;

/// What recovery found and did.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RecoveryReport {
    /// The scan (records, last sequence, what was invalid).
    pub scan: ScanReport,
    /// What was changed on disk, one line each.
    pub actions: Vec<String>,
}

impl RecoveryReport {
    /// True when nothing had to be dropped or moved.
    pub fn is_clean(&self) -> bool {
        self.scan.dropped.is_empty() && self.scan.orphan_segments.is_empty()
    }
}

/// How much recovery may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecoveryMode {
    /// What a writer does on open (an engine starting): cut an invalid tail
    /// of the last segment that has nothing valid after it (a crash in the
    /// middle of an append) and remove empty spare segments. Any other damage
    /// ([`ScanReport::needs_operator`]) is refused with
    /// [`JournalError::NeedsRecovery`] and nothing is changed.
    TailOnly,
    /// What `killswitch journal recover` does for an operator: also rewrite a
    /// damaged segment header when the records behind it check (the old
    /// header is kept aside), and set aside, never delete, everything past
    /// the valid end, saying how many valid records each file holds.
    Operator,
}

/// Takes the writer lock, recovers the journal in `dir` as an operator asked
/// ([`RecoveryMode::Operator`]), and releases the lock. The directory must
/// be owner-only; see [`recover_with`].
pub fn recover(dir: &Path) -> Result<RecoveryReport, JournalError> {
    recover_with(dir, Access::OWNER_ONLY)
}

/// [`recover`] for a directory shared as `access` allows.
pub fn recover_with(dir: &Path, access: Access) -> Result<RecoveryReport, JournalError> {
    let _lock = JournalLock::acquire(dir, access)?;
    recover_locked(dir, RecoveryMode::Operator)
}

/// Recovery proper; the caller holds the writer lock.
pub(crate) fn recover_locked(
    dir: &Path,
    mode: RecoveryMode,
) -> Result<RecoveryReport, JournalError> {
    let mut actions = Vec::new();
    // A writer opening the journal reads only the tail (every header, then
    // the last segment with records): a clean start does not pay for every
    // CRC of a large journal. Anything odd there, or in a header, and the
    // full scan decides.
    let tail = match mode {
        RecoveryMode::TailOnly => scan_tail(dir, true)?.filter(|t| t.needs_operator().is_empty()),
        RecoveryMode::Operator => None,
    };
    let mut scan = match tail {
        Some(t) => t,
        None => scan(dir, true, |_| {})?,
    };
    if mode == RecoveryMode::TailOnly {
        let findings = scan.needs_operator();
        if !findings.is_empty() {
            return Err(JournalError::NeedsRecovery {
                dir: dir.to_path_buf(),
                findings,
            });
        }
    } else {
        // Another build's journal is not damage: recovering it with this
        // build's rules could only lose records. Refuse before touching it.
        for d in scan.dropped.iter().filter(|d| d.kind == DropKind::Header) {
            if let Some((major, minor)) = foreign_version(&d.path) {
                return Err(JournalError::BadSegment {
                    path: d.path.clone(),
                    what: format!(
                        "format version {major}.{minor}, this build reads {FORMAT_MAJOR}.x: recover nothing here; use the killswitch build that wrote it"
                    ),
                });
            }
        }
        // Header-only defects first: each repaired header lets the scan go
        // further, so scan again until nothing more can be repaired.
        let mut repaired = 0;
        while let Some(d) = scan
            .dropped
            .iter()
            .find(|d| d.kind == DropKind::Header && d.records_after.count > 0)
        {
            let expected = (scan.last_seq > 0).then_some(scan.last_seq + 1);
            match repair_header(d, expected)? {
                Some(line) => actions.push(line),
                None => break,
            }
            repaired += 1;
            if repaired > 1_000_000 {
                break;
            }
            scan = super::reader::scan(dir, true, |_| {})?;
        }
    }
    let stamp = crate::clock::wall_ns();
    for d in &scan.dropped {
        match d.kind {
            // The file itself is listed among the orphans or spares below.
            DropKind::MissingSegment => {
                actions.push(format!("{}: {}", d.path.display(), d.reason));
                continue;
            }
            DropKind::Header => {
                let to = aside(&d.path, &format!("orphan-{stamp}"));
                fs::rename(&d.path, &to)
                    .map_err(|e| JournalError::io(&d.path, "set a damaged segment aside", e))?;
                actions.push(format!(
                    "moved {} to {} ({}): its header could not be repaired; it holds {} valid record(s){}",
                    d.path.display(),
                    to.display(),
                    d.reason,
                    d.records_after.count,
                    range(&d.records_after)
                ));
                continue;
            }
            DropKind::Record => {}
        }
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&d.path)
            .map_err(|e| JournalError::io(&d.path, "open the segment to cut its torn tail", e))?;
        if d.bytes > 0 {
            let mut buf = vec![0u8; d.bytes as usize];
            let to = aside(&d.path, &format!("torn-{}", d.offset));
            let copy = f
                .read_exact_at(&mut buf, d.offset)
                .and_then(|_| write_private(&to, &buf));
            match copy {
                Ok(()) => actions.push(format!(
                    "saved {} dropped bytes of {} from offset {} to {}{}",
                    d.bytes,
                    d.path.display(),
                    d.offset,
                    to.display(),
                    if d.records_after.count > 0 {
                        format!(
                            ": they hold {} valid record(s){} after the damage, set aside with them",
                            d.records_after.count,
                            range(&d.records_after)
                        )
                    } else {
                        String::new()
                    }
                )),
                // Never zero what could not be saved.
                Err(e) => {
                    return Err(JournalError::io(
                        &to,
                        "save the dropped bytes aside before cutting them",
                        e,
                    ))
                }
            }
            // Zero in chunks: the tail can be most of a large segment.
            let zeros = vec![0u8; 1 << 20];
            let mut at = d.offset;
            let end = d.offset + d.bytes;
            while at < end {
                let n = ((end - at) as usize).min(zeros.len());
                f.write_all_at(&zeros[..n], at)
                    .map_err(|e| JournalError::io(&d.path, "zero the torn tail", e))?;
                at += n as u64;
            }
            f.sync_all()
                .map_err(|e| JournalError::io(&d.path, "fsync the cut segment", e))?;
        }
        actions.push(format!(
            "cut {} at offset {}: {} ({} bytes dropped)",
            d.path.display(),
            d.offset,
            d.reason,
            d.bytes
        ));
    }
    for p in &scan.orphan_segments {
        let to = aside(p, &format!("orphan-{stamp}"));
        let held = super::reader::probe_segment_file(p);
        fs::rename(p, &to).map_err(|e| JournalError::io(p, "set an orphan segment aside", e))?;
        actions.push(format!(
            "moved {} to {}: it follows the journal's valid end; it holds {} valid record(s){}",
            p.display(),
            to.display(),
            held.count,
            range(&held)
        ));
    }
    for p in &scan.spare_segments {
        fs::remove_file(p).map_err(|e| JournalError::io(p, "remove an empty spare segment", e))?;
        actions.push(format!("removed empty spare segment {}", p.display()));
    }
    if !actions.is_empty() {
        fsync_dir(dir)?;
    }
    Ok(RecoveryReport { scan, actions })
}

fn range(r: &RecordsAfter) -> String {
    if r.count == 0 {
        String::new()
    } else {
        format!(" (sequence {}..{})", r.first_seq, r.last_seq)
    }
}

/// Writes `bytes` to a new file readable by its owner only (it holds
/// journal contents).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// `Some((major, minor))` when `path` starts with an intact header (magic
/// and CRC check) of a format version this build does not read.
fn foreign_version(path: &Path) -> Option<(u16, u16)> {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    std::fs::File::open(path)
        .ok()?
        .read_exact_at(&mut h, 0)
        .ok()?;
    let crc_ok = crate::crc::crc32c(&h[0..60]) == u32::from_le_bytes([h[60], h[61], h[62], h[63]]);
    let major = u16::from_le_bytes([h[8], h[9]]);
    (h[0..8] == SEGMENT_MAGIC && crc_ok && major != FORMAT_MAJOR)
        .then(|| (major, u16::from_le_bytes([h[10], h[11]])))
}

/// Rewrites the header of a segment whose header is damaged but whose first
/// record checks (and continues the sequence at `expected_seq`). Keeps the
/// old header in `<segment>.header-<ns>`. `None` when it is not a header-only
/// defect: a header of another format version (never rewritten: use the
/// build that wrote it), or a first record that does not check.
fn repair_header(d: &Dropped, expected_seq: Option<u64>) -> Result<Option<String>, JournalError> {
    let path = &d.path;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| JournalError::io(path, "open the segment to repair its header", e))?;
    let len = file
        .metadata()
        .map_err(|e| JournalError::io(path, "stat the segment", e))?
        .len() as usize;
    let mut old = [0u8; SEGMENT_HEADER_LEN];
    if len < SEGMENT_HEADER_LEN {
        return Ok(None);
    }
    file.read_exact_at(&mut old, 0)
        .map_err(|e| JournalError::io(path, "read the segment header", e))?;
    if !super::reader::first_record_checks(path, d.segment, expected_seq) {
        return Ok(None);
    }
    let size = len.div_ceil(4096).max(MIN_SEGMENT_SIZE / 4096) * 4096;
    let created = u64::from_le_bytes(old[32..40].try_into().unwrap_or([0; 8]));
    let header = SegmentHeader {
        index: d.segment,
        size: size as u64,
        created_wall_ns: created,
    };
    let keep = aside(path, &format!("header-{}", crate::clock::wall_ns()));
    write_private(&keep, &old)
        .map_err(|e| JournalError::io(&keep, "save the damaged header before rewriting it", e))?;
    file.write_all_at(&header.encode(), 0)
        .map_err(|e| JournalError::io(path, "rewrite the segment header", e))?;
    file.sync_all()
        .map_err(|e| JournalError::io(path, "fsync the repaired segment", e))?;
    Ok(Some(format!(
        "rewrote the damaged header of {} ({}); the old header is in {}; the {} record(s) behind it{} are kept",
        path.display(),
        d.reason,
        keep.display(),
        d.records_after.count,
        range(&d.records_after)
    )))
}

fn aside(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(suffix);
    PathBuf::from(s)
}

/// A log line from the journal.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct LogLine {
    /// Journal sequence.
    pub seq: u64,
    /// Monotonic ns at append.
    pub mono_ns: u64,
    /// Unix ns given by the writer.
    pub wall_ns: u64,
    /// Level name.
    pub level: &'static str,
    /// The text.
    pub text: String,
}

/// Most log lines a rebuild keeps (the newest).
pub const MAX_LOG_TAIL: usize = 100_000;
/// Age of the oldest log line kept: one hour before the last record.
pub const LOG_TAIL_NS: u64 = 3_600_000_000_000;

/// Everything rebuilt from a journal.
#[derive(Clone, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Rebuilt {
    /// Open orders, positions, last trip and reset.
    pub state: TradingState,
    /// The last configuration blob: (name, bytes).
    pub config: Option<(String, Vec<u8>)>,
    /// The last state blob of each strategy.
    pub strategies: BTreeMap<String, Vec<u8>>,
    /// Log lines of the hour before the newest one (monotonic clock), at most [`MAX_LOG_TAIL`].
    pub log_tail: Vec<LogLine>,
    /// Events that could not be applied, in journal order.
    pub issues: Vec<ReplayIssue>,
    /// Quick-checkpoint snapshots met (each replaced the replayed state).
    pub snapshots: u64,
    /// The last durability mark.
    pub last_durable: Option<DurableRecord>,
    /// The scan: records, counts, torn tail.
    pub scan: ScanReport,
    /// `Some(holder)` when a writer was active during the read.
    pub writer_active: Option<String>,
    /// Where the replay started when it started at a snapshot
    /// ([`rebuild_from_snapshot`]); `None`: from the first record. Records
    /// before it were not read, so `config`, `strategies`, `log_tail`,
    /// `last_durable` and `scan` only cover what follows it.
    pub from_snapshot: Option<SnapshotAt>,
}

/// Rebuilds the state from the journal in `dir`, read-only. If no writer
/// holds the lock, the scan is exclusive (it also diagnoses a torn tail); if
/// one does, only committed records are read and `writer_active` says who.
pub fn rebuild(dir: &Path) -> Result<Rebuilt, JournalError> {
    rebuild_with(dir, Start::First)
}

/// Rebuilds the trading state (open orders, positions, trip and reset,
/// highest order id) the fast way: from the newest snapshot record (a quick
/// checkpoint), found through the last segment's records and its
/// snapshot-index record, replaying and verifying (CRC, sequence) only the
/// records after it. What an engine needs to start; without any snapshot it
/// is [`rebuild`]. `journal inspect` and complete checkpoints use
/// [`rebuild`], which reads and checks every record from the first.
///
/// Refuses ([`JournalError::NeedsRecovery`]) when the records from the
/// snapshot on hold damage beyond a torn tail: state built on them would be
/// wrong.
pub fn rebuild_from_snapshot(dir: &Path) -> Result<Rebuilt, JournalError> {
    rebuild_with(dir, Start::FindSnapshot)
}

/// [`rebuild_from_snapshot`] from a snapshot the caller already knows
/// (a writer that just opened the journal: [`JournalWriter::last_snapshot`]),
/// which spares a second read of the last segment; `None` replays from the
/// first record.
///
/// [`JournalWriter::last_snapshot`]: super::JournalWriter::last_snapshot
pub fn rebuild_from(dir: &Path, snapshot: Option<SnapshotAt>) -> Result<Rebuilt, JournalError> {
    rebuild_with(dir, Start::At(snapshot))
}

/// Where a rebuild starts.
enum Start {
    /// The first record.
    First,
    /// The newest snapshot, found by reading the tail.
    FindSnapshot,
    /// This snapshot (the first record when `None`).
    At(Option<SnapshotAt>),
}

fn rebuild_with(dir: &Path, from: Start) -> Result<Rebuilt, JournalError> {
    if !dir.is_dir() {
        return Err(JournalError::io(
            dir,
            "open the journal directory",
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
        ));
    }
    // Read-only: needs no write access to the directory (an auditor's
    // account can inspect the journal of the engine's).
    let lock = JournalLock::try_read(dir);
    let (exclusive, writer_active) = match &lock {
        ReadLock::Exclusive { .. } => (true, None),
        ReadLock::WriterActive(holder) => (false, Some(holder.clone())),
        ReadLock::Unknown(why) => (false, Some(format!("unknown ({why})"))),
    };
    let mut out = Rebuilt {
        writer_active,
        ..Rebuilt::default()
    };
    let mut tail: VecDeque<LogLine> = VecDeque::new();
    let start = match from {
        Start::First => None,
        Start::FindSnapshot => scan_tail(dir, exclusive)?.and_then(|t| t.last_snapshot),
        Start::At(at) => at,
    };
    out.from_snapshot = start;
    let scan = match start {
        Some(at) => {
            let rep = scan_from(dir, at, exclusive, |v| replay_one(v, &mut out, &mut tail))?;
            let findings = rep.needs_operator();
            if !findings.is_empty() {
                return Err(JournalError::NeedsRecovery {
                    dir: dir.to_path_buf(),
                    findings,
                });
            }
            rep
        }
        None => scan(dir, exclusive, |v| replay_one(v, &mut out, &mut tail))?,
    };
    drop(lock);
    out.scan = scan;
    out.log_tail = tail.into();
    Ok(out)
}

/// Applies one record to `out` (the one replay step: [`rebuild`] and the
/// standby's [`super::follow::JournalFollower`] both go through it).
pub(super) fn replay_one(v: &RecordView<'_>, out: &mut Rebuilt, tail: &mut VecDeque<LogLine>) {
    let issue = |what: String| ReplayIssue {
        seq: v.seq,
        order_id: None,
        what,
    };
    let Some(rtype) = v.rtype else {
        out.issues.push(issue(format!(
            "record type {} unknown to this build: skipped",
            v.rtype_raw
        )));
        return;
    };
    let st = &mut out.state;
    let res: Result<(), String> = match rtype {
        RecordType::OrderEvent => match OrderEventRecord::decode(v.payload) {
            Ok(ev) => st.apply_order_event(v.seq, &ev).map_err(|i| {
                out.issues.push(i);
                String::new()
            }),
            Err(e) => Err(e.to_string()),
        },
        RecordType::Trip | RecordType::Reset => {
            SwitchRecord::decode(v.payload, rtype == RecordType::Reset)
                .map(|s| st.apply_switch(&s))
                .map_err(|e| e.to_string())
        }
        RecordType::Positions => PositionsRecord::decode(v.payload)
            .map(|p| st.positions.extend(p))
            .map_err(|e| e.to_string()),
        RecordType::Config => BlobRecord::decode(v.payload, rtype)
            .map(|b| out.config = Some((b.name.to_string(), b.data.to_vec())))
            .map_err(|e| e.to_string()),
        RecordType::StrategyState => BlobRecord::decode(v.payload, rtype)
            .map(|b| {
                out.strategies.insert(b.name.to_string(), b.data.to_vec());
            })
            .map_err(|e| e.to_string()),
        RecordType::Log => LogRecord::decode(v.payload)
            .map(|l| {
                tail.push_back(LogLine {
                    seq: v.seq,
                    mono_ns: v.mono_ns,
                    wall_ns: l.wall_ns,
                    level: l.level_str(),
                    text: l.text.to_string(),
                });
                if tail.len() > MAX_LOG_TAIL {
                    tail.pop_front();
                }
            })
            .map_err(|e| e.to_string()),
        RecordType::Snapshot => match TradingState::decode(v.payload) {
            Ok(snap) => {
                out.snapshots += 1;
                // A rebuild that starts at this snapshot has nothing to
                // compare it with.
                let starts_here = out.from_snapshot.is_some_and(|s| s.seq == v.seq);
                let differs = !starts_here
                    && (snap.open_orders != st.open_orders || snap.positions != st.positions);
                if differs {
                    out.issues.push(issue(format!(
                        "snapshot ({} open orders, {} positions) differs from the replayed events ({} open orders, {} positions): the snapshot wins",
                        snap.open_orders.len(),
                        snap.positions.len(),
                        st.open_orders.len(),
                        st.positions.len()
                    )));
                }
                let max_id = st.max_order_id.max(snap.max_order_id);
                *st = snap;
                st.max_order_id = max_id;
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        },
        RecordType::Durable => DurableRecord::decode(v.payload)
            .map(|d| out.last_durable = Some(d))
            .map_err(|e| e.to_string()),
        RecordType::SegmentEnd | RecordType::SnapshotIndex => Ok(()),
    };
    if let Err(e) = res {
        if !e.is_empty() {
            out.issues
                .push(issue(format!("undecodable payload (CRC was valid): {e}")));
        }
    }
    out.state.last_seq = out.state.last_seq.max(v.seq);
    while let (Some(first), Some(last)) = (tail.front(), tail.back()) {
        if last.mono_ns.saturating_sub(first.mono_ns) > LOG_TAIL_NS {
            tail.pop_front();
        } else {
            break;
        }
    }
}
