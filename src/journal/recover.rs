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

use super::reader::{scan, RecordView, ScanReport};
use super::record::{
    BlobRecord, DurableRecord, LogRecord, OrderEventRecord, RecordType, SwitchRecord,
};
use super::segment::fsync_dir;
use super::state::{PositionsRecord, ReplayIssue, TradingState};
use super::{JournalError, JournalLock};

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

/// Takes the writer lock, recovers the journal in `dir`, and releases the lock.
pub fn recover(dir: &Path) -> Result<RecoveryReport, JournalError> {
    let _lock = JournalLock::acquire(dir)?;
    recover_locked(dir)
}

/// Recovery proper; the caller holds the writer lock.
pub(crate) fn recover_locked(dir: &Path) -> Result<RecoveryReport, JournalError> {
    let scan = scan(dir, true, |_| {})?;
    let mut actions = Vec::new();
    let stamp = crate::clock::wall_ns();
    for d in &scan.dropped {
        if d.offset == 0 {
            // A segment with an unreadable header, or after a missing one.
            let to = aside(&d.path, &format!("orphan-{stamp}"));
            fs::rename(&d.path, &to)
                .map_err(|e| JournalError::io(&d.path, "set a damaged segment aside", e))?;
            actions.push(format!(
                "moved {} to {} ({})",
                d.path.display(),
                to.display(),
                d.reason
            ));
            continue;
        }
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&d.path)
            .map_err(|e| JournalError::io(&d.path, "open the segment to cut its torn tail", e))?;
        if d.bytes > 0 {
            let mut buf = vec![0u8; d.bytes as usize];
            let copy = f
                .read_exact_at(&mut buf, d.offset)
                .and_then(|_| fs::write(aside(&d.path, &format!("torn-{}", d.offset)), &buf));
            match copy {
                Ok(()) => actions.push(format!(
                    "saved {} dropped bytes of {} from offset {} to {}",
                    d.bytes,
                    d.path.display(),
                    d.offset,
                    aside(&d.path, &format!("torn-{}", d.offset)).display()
                )),
                Err(e) => actions.push(format!(
                    "could NOT save the {} dropped bytes of {} at offset {}: {e}",
                    d.bytes,
                    d.path.display(),
                    d.offset
                )),
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
        fs::rename(p, &to).map_err(|e| JournalError::io(p, "set an orphan segment aside", e))?;
        actions.push(format!(
            "moved {} to {}: it follows the journal's valid end",
            p.display(),
            to.display()
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
}

/// Rebuilds the state from the journal in `dir`, read-only. If no writer
/// holds the lock, the scan is exclusive (it also diagnoses a torn tail); if
/// one does, only committed records are read and `writer_active` says who.
pub fn rebuild(dir: &Path) -> Result<Rebuilt, JournalError> {
    if !dir.is_dir() {
        return Err(JournalError::io(
            dir,
            "open the journal directory",
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
        ));
    }
    let lock = JournalLock::try_acquire(dir)?;
    let (exclusive, writer_active) = match &lock {
        Ok(_) => (true, None),
        Err(holder) => (false, Some(holder.clone())),
    };
    let mut out = Rebuilt {
        writer_active,
        ..Rebuilt::default()
    };
    let mut tail: VecDeque<LogLine> = VecDeque::new();
    let scan = scan(dir, exclusive, |v| replay_one(v, &mut out, &mut tail))?;
    drop(lock);
    out.scan = scan;
    out.log_tail = tail.into();
    Ok(out)
}

fn replay_one(v: &RecordView<'_>, out: &mut Rebuilt, tail: &mut VecDeque<LogLine>) {
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
                let differs = snap.open_orders != st.open_orders || snap.positions != st.positions;
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
        RecordType::SegmentEnd => Ok(()),
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
