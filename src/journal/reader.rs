//! Reading the journal: a whole-directory scan ([`scan`]) and a follower that
//! tails a journal another process is writing ([`JournalTail`]).
//!
//! # Invariants
//! * A record is read only after its commit word was loaded (Acquire) as
//!   [`COMMIT`]; the writer stores it last with Release, so every other byte
//!   of the record is visible and no longer changes. Slices are only ever made
//!   over such committed records; the commit word itself is only touched
//!   through atomics.
//! * Every candidate record is checked (length inside the segment and the
//!   file, CRC-32C, sequence +1) before it is handed out: a reader never
//!   returns a record with a bad CRC.
//! * Bytes past the first uncommitted record are only inspected (for the
//!   "torn tail" diagnosis) in an exclusive scan, when no writer can be
//!   writing them.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::MmapOptions;

use super::record::{off, record_len, RecordType, SnapshotIndexRecord, COMMIT, HEADER_LEN};
use super::segment::{list_segments, read_header, segment_name, SEGMENT_HEADER_LEN};
use super::JournalError;

mod region;
mod tail;
pub(crate) use region::{MappedSegment, Region, Step};
pub use tail::{JournalTail, OwnedRecord};

/// One complete, CRC-checked record, borrowed from the mapping.
#[derive(Clone, Copy, Debug)]
pub struct RecordView<'a> {
    /// Segment index.
    pub segment: u64,
    /// Byte offset of the record header in the segment.
    pub offset: u64,
    /// Raw `type` field.
    pub rtype_raw: u16,
    /// Decoded type; `None` for a type this build does not know.
    pub rtype: Option<RecordType>,
    /// Sequence number.
    pub seq: u64,
    /// `CLOCK_MONOTONIC` ns at append.
    pub mono_ns: u64,
    /// The payload.
    pub payload: &'a [u8],
}

/// Per-segment result of a scan.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SegmentSummary {
    /// Index.
    pub index: u64,
    /// Path.
    pub path: PathBuf,
    /// Pre-allocated size (from the header; 0 when the header is unreadable).
    pub size: u64,
    /// Bytes in the file.
    pub file_len: u64,
    /// Valid records (segment-end records excluded).
    pub records: u64,
    /// Offset just past the last valid record.
    pub valid_end: u64,
    /// Closed by a segment-end record.
    pub ended: bool,
}

/// Something the scan found invalid: the journal's valid part stops before it.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Dropped {
    /// Segment index.
    pub segment: u64,
    /// Segment file.
    pub path: PathBuf,
    /// Offset of the first invalid byte.
    pub offset: u64,
    /// Non-zero bytes from there on (what is lost).
    pub bytes: u64,
    /// Why it is invalid.
    pub reason: String,
    /// What kind of damage it is.
    pub kind: DropKind,
    /// Valid records found past the damage in the same segment (exclusive
    /// scans only): what an automatic cut would throw away.
    pub records_after: RecordsAfter,
}

/// What a [`Dropped`] describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum DropKind {
    /// A record that is not valid (incomplete, CRC, length, sequence, a
    /// segment-end record with data after it) at `offset`.
    Record,
    /// The segment's header is damaged, of another format version, or lies
    /// about the segment (`offset` 0).
    Header,
    /// The segment before this one is missing (`offset` 0).
    MissingSegment,
}

/// Valid records found by probing past a damaged spot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RecordsAfter {
    /// How many.
    pub count: u64,
    /// Sequence of the first one (0 when none).
    pub first_seq: u64,
    /// Sequence of the last one (0 when none).
    pub last_seq: u64,
}

/// What a scan saw.
#[derive(Clone, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ScanReport {
    /// Segments, in order.
    pub segments: Vec<SegmentSummary>,
    /// Valid records (segment-end records excluded).
    pub records: u64,
    /// Sequence of the first valid record.
    pub first_seq: Option<u64>,
    /// Sequence of the last valid record (0: none).
    pub last_seq: u64,
    /// Records per type name (`unknown-<n>` for unknown types).
    pub counts: BTreeMap<String, u64>,
    /// What lies past the valid end (empty for a clean journal).
    pub dropped: Vec<Dropped>,
    /// Segments past the valid end that hold records (orphans).
    pub orphan_segments: Vec<PathBuf>,
    /// Empty segments past the valid end (pre-allocated spares).
    pub spare_segments: Vec<PathBuf>,
    /// Index and offset where the next record goes.
    pub append_at: Option<(u64, u64)>,
    /// Notes that lose nothing (e.g. a file cut short at a record boundary).
    pub notes: Vec<String>,
    /// The newest snapshot record met, or named by a snapshot-index record.
    pub last_snapshot: Option<SnapshotAt>,
}

/// Keeps `last` on the newest snapshot: a snapshot record itself, or the
/// one a segment's snapshot-index record names (always older than anything
/// in that segment).
pub(crate) fn note_snapshot(v: &RecordView<'_>, last: &mut Option<SnapshotAt>) {
    match v.rtype {
        Some(RecordType::Snapshot) => {
            *last = Some(SnapshotAt {
                segment: v.segment,
                offset: v.offset,
                seq: v.seq,
            })
        }
        Some(RecordType::SnapshotIndex) => {
            if let Ok(i) = SnapshotIndexRecord::decode(v.payload) {
                if i.seq > 0 && last.is_none_or(|l| l.seq < i.seq) {
                    *last = Some(SnapshotAt {
                        segment: i.segment,
                        offset: i.offset,
                        seq: i.seq,
                    });
                }
            }
        }
        _ => {}
    }
}

/// The cheap part of opening a journal: checks the header of every segment
/// (64 bytes each) and that no index is missing, then scans only from the
/// last segment that holds records to the end — instead of every record of
/// every segment. `None` when a header or the numbering is wrong: the caller
/// then needs a full [`scan`] to see (and report) the damage.
pub fn scan_tail(dir: &Path, exclusive: bool) -> Result<Option<ScanReport>, JournalError> {
    let segs = list_segments(dir)?;
    for (i, (index, path)) in segs.iter().enumerate() {
        if i > 0 && *index != segs[i - 1].0 + 1 {
            return Ok(None);
        }
        let file = File::open(path).map_err(|e| JournalError::io(path, "open the segment", e))?;
        match read_header(&file, path, *index) {
            Ok(_) => {}
            Err(JournalError::BadSegment { .. }) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    // The last segment with a record: empty ones after it are the current
    // segment (just rolled into) or spares, which the scan classifies.
    let mut from = segs.first().map(|s| s.0);
    for (index, path) in segs.iter().rev() {
        let seg = MappedSegment::open(path, *index)?;
        if !matches!(
            seg.region().step(SEGMENT_HEADER_LEN, None, false),
            Step::Clean
        ) {
            from = Some(*index);
            break;
        }
    }
    let Some(segment) = from else {
        return scan(dir, exclusive, |_| {}).map(Some);
    };
    // The first record of that segment carries whatever sequence it has:
    // the records before it are not read.
    let mut rep = scan_at(
        dir,
        Some((segment, SEGMENT_HEADER_LEN as u64)),
        None,
        exclusive,
        |_| {},
    )?;
    rep.notes.push(format!(
        "tail scan from segment {segment}: the records before it were not read"
    ));
    Ok(Some(rep))
}

impl ScanReport {
    /// Damage that automatic recovery (a writer opening the journal, an
    /// engine starting) must not repair, one line each: everything except an
    /// invalid tail of the last segment with nothing valid after it, which is
    /// what a crash in the middle of an append leaves. A damaged or foreign
    /// segment header, a missing segment, valid records after a damaged one,
    /// and segments after the valid end all mean that cutting would throw
    /// away records the engine's state depends on: an operator decides
    /// (`killswitch journal recover`).
    pub fn needs_operator(&self) -> Vec<String> {
        let mut v = Vec::new();
        for d in &self.dropped {
            let after = d.records_after;
            match d.kind {
                DropKind::Header => v.push(format!(
                    "{}: segment header damaged ({}); {} valid record(s) behind it{}",
                    d.path.display(),
                    d.reason,
                    after.count,
                    seq_range(after)
                )),
                DropKind::MissingSegment => v.push(format!("{}: {}", d.path.display(), d.reason)),
                DropKind::Record if after.count > 0 => v.push(format!(
                    "{} offset {}: {}; {} valid record(s) follow it{}",
                    d.path.display(),
                    d.offset,
                    d.reason,
                    after.count,
                    seq_range(after)
                )),
                DropKind::Record => {}
            }
        }
        for o in &self.orphan_segments {
            v.push(format!(
                "{}: holds records but comes after the journal's valid end",
                o.display()
            ));
        }
        v
    }
}

fn seq_range(r: RecordsAfter) -> String {
    if r.count == 0 {
        String::new()
    } else {
        format!(" (sequence {}..{})", r.first_seq, r.last_seq)
    }
}

/// Counts the valid records in `r` from offset `from` on, wherever they
/// start (8-aligned offsets whose commit word is set and whose record
/// checks), skipping damaged bytes. Exclusive scans only: it reads bytes no
/// committed record covers.
pub(crate) fn probe_records(r: &Region, from: usize) -> RecordsAfter {
    let mut out = RecordsAfter::default();
    let mut p = from.div_ceil(8) * 8;
    while p + HEADER_LEN <= r.avail {
        if r.u32_at(p + off::COMMIT) != COMMIT {
            p += 8;
            continue;
        }
        match r.step(p, None, false) {
            Step::Record(v, next) => {
                if out.count == 0 {
                    out.first_seq = v.seq;
                }
                out.count += 1;
                out.last_seq = v.seq;
                p = next;
            }
            Step::End { .. } => break,
            Step::Clean | Step::Problem { .. } => p += 8,
        }
    }
    out
}

/// Where a snapshot record (a quick checkpoint) is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SnapshotAt {
    /// Segment index.
    pub segment: u64,
    /// Offset of the record in the segment.
    pub offset: u64,
    /// Its sequence number.
    pub seq: u64,
}

/// Scans every segment of the journal in `dir` and calls `visit` for each
/// valid record in order. `exclusive` says no writer is active (the caller
/// holds the journal lock), which allows the torn-tail diagnosis.
pub fn scan(
    dir: &Path,
    exclusive: bool,
    visit: impl FnMut(&RecordView<'_>),
) -> Result<ScanReport, JournalError> {
    scan_at(dir, None, None, exclusive, visit)
}

/// [`scan`] from the record at `start` (which must carry `start.seq`: a
/// snapshot found earlier) to the end, skipping everything before it.
pub fn scan_from(
    dir: &Path,
    start: SnapshotAt,
    exclusive: bool,
    visit: impl FnMut(&RecordView<'_>),
) -> Result<ScanReport, JournalError> {
    scan_at(
        dir,
        Some((start.segment, start.offset)),
        Some(start.seq),
        exclusive,
        visit,
    )
}

/// The scan proper: from `(segment, offset)` (or the beginning), the first
/// record carrying `first_seq` (any when `None`).
fn scan_at(
    dir: &Path,
    start: Option<(u64, u64)>,
    first_seq: Option<u64>,
    exclusive: bool,
    mut visit: impl FnMut(&RecordView<'_>),
) -> Result<ScanReport, JournalError> {
    let segs = list_segments(dir)?;
    let mut rep = ScanReport::default();
    let mut expected_seq: Option<u64> = first_seq;
    let mut stopped = false;
    let mut prev_index: Option<u64> = None;
    for (index, path) in segs {
        if start.is_some_and(|(segment, _)| index < segment) {
            continue;
        }
        if stopped {
            classify_after_end(&path, index, &mut rep);
            continue;
        }
        if let Some(p) = prev_index {
            if index != p + 1 {
                rep.dropped.push(Dropped {
                    segment: index,
                    path: path.clone(),
                    offset: 0,
                    bytes: 0,
                    reason: format!(
                        "segment {} is missing: the journal stops at segment {p}",
                        p + 1
                    ),
                    kind: DropKind::MissingSegment,
                    records_after: RecordsAfter::default(),
                });
                stopped = true;
                classify_after_end(&path, index, &mut rep);
                continue;
            }
        }
        prev_index = Some(index);
        let seg = match MappedSegment::open(&path, index) {
            Ok(s) => s,
            Err(JournalError::BadSegment { what, .. }) => {
                let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                let records_after = if exclusive {
                    probe_file(&path, index)
                } else {
                    RecordsAfter::default()
                };
                rep.dropped.push(Dropped {
                    segment: index,
                    path: path.clone(),
                    offset: 0,
                    bytes,
                    reason: format!("segment header: {what}"),
                    kind: DropKind::Header,
                    records_after,
                });
                rep.segments.push(SegmentSummary {
                    index,
                    path,
                    size: 0,
                    file_len: bytes,
                    records: 0,
                    valid_end: 0,
                    ended: false,
                });
                stopped = true;
                continue;
            }
            Err(e) => return Err(e),
        };
        let r = seg.region();
        if seg.file_len < r.size {
            rep.notes.push(format!(
                "{}: file is {} bytes, its header says {} (cut short)",
                path.display(),
                seg.file_len,
                r.size
            ));
        }
        let mut sum = SegmentSummary {
            index,
            path: path.clone(),
            size: r.size as u64,
            file_len: seg.file_len as u64,
            records: 0,
            valid_end: SEGMENT_HEADER_LEN as u64,
            ended: false,
        };
        let mut p = match start {
            Some((segment, offset)) if segment == index => offset as usize,
            _ => SEGMENT_HEADER_LEN,
        };
        loop {
            match r.step(p, expected_seq, exclusive) {
                Step::Record(v, next) => {
                    note_snapshot(&v, &mut rep.last_snapshot);
                    visit(&v);
                    rep.records += 1;
                    sum.records += 1;
                    rep.first_seq.get_or_insert(v.seq);
                    rep.last_seq = v.seq;
                    expected_seq = Some(v.seq + 1);
                    let name = match v.rtype {
                        Some(t) => t.as_str().to_string(),
                        None => format!("unknown-{}", v.rtype_raw),
                    };
                    *rep.counts.entry(name).or_default() += 1;
                    p = next;
                    sum.valid_end = p as u64;
                }
                Step::End { seq, .. } => {
                    expected_seq = Some(seq);
                    sum.ended = true;
                    sum.valid_end = (p + record_len(8)) as u64;
                    break;
                }
                Step::Clean => {
                    rep.append_at = Some((index, p as u64));
                    stopped = true;
                    break;
                }
                Step::Problem { reason, bytes } => {
                    let records_after = if exclusive {
                        probe_records(&r, p + 8)
                    } else {
                        RecordsAfter::default()
                    };
                    rep.dropped.push(Dropped {
                        segment: index,
                        path: path.clone(),
                        offset: p as u64,
                        bytes,
                        reason,
                        kind: DropKind::Record,
                        records_after,
                    });
                    rep.append_at = Some((index, p as u64));
                    stopped = true;
                    break;
                }
            }
        }
        rep.segments.push(sum);
    }
    if !stopped {
        if let Some(last) = rep.segments.last() {
            // The last segment was closed by a segment-end record but its
            // successor is missing (crash between the two steps cannot cause
            // this: the successor is renamed into place first).
            rep.notes.push(format!(
                "segment {} ends with a segment-end record but {} is missing",
                last.index,
                segment_name(last.index + 1)
            ));
        }
    }
    Ok(rep)
}

/// [`probe_records`] over a segment file whose header cannot be trusted:
/// maps the file as it is and looks for records after the 64 header bytes.
fn probe_file(path: &Path, index: u64) -> RecordsAfter {
    let Ok(file) = File::open(path) else {
        return RecordsAfter::default();
    };
    let len = file.metadata().map(|m| m.len() as usize).unwrap_or(0);
    if len <= SEGMENT_HEADER_LEN {
        return RecordsAfter::default();
    }
    let Ok(map) = MmapOptions::new().len(len).map_raw_read_only(&file) else {
        return RecordsAfter::default();
    };
    let r = Region {
        base: map.as_ptr(),
        avail: len,
        size: len,
        index,
    };
    probe_records(&r, SEGMENT_HEADER_LEN)
}

/// Valid records in a segment file, header or not (for reports on files
/// set aside).
pub(crate) fn probe_segment_file(path: &Path) -> RecordsAfter {
    let index = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(super::segment::parse_segment_name)
        .unwrap_or(0);
    probe_file(path, index)
}

/// True when the record right after the header of segment file `path`
/// checks (CRC, length) and carries `expected_seq` (any when `None`).
pub(crate) fn first_record_checks(path: &Path, index: u64, expected_seq: Option<u64>) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let len = file.metadata().map(|m| m.len() as usize).unwrap_or(0);
    if len <= SEGMENT_HEADER_LEN {
        return false;
    }
    let Ok(map) = MmapOptions::new().len(len).map_raw_read_only(&file) else {
        return false;
    };
    let r = Region {
        base: map.as_ptr(),
        avail: len,
        size: len,
        index,
    };
    matches!(
        r.step(SEGMENT_HEADER_LEN, expected_seq, false),
        Step::Record(..) | Step::End { .. }
    )
}

fn classify_after_end(path: &Path, index: u64, rep: &mut ScanReport) {
    let has_records = MappedSegment::open(path, index)
        .map(|s| {
            let r = s.region();
            !matches!(r.step(SEGMENT_HEADER_LEN, None, false), Step::Clean)
        })
        .unwrap_or(true);
    if has_records {
        rep.orphan_segments.push(path.to_path_buf());
    } else {
        rep.spare_segments.push(path.to_path_buf());
    }
}
