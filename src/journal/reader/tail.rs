//! [`JournalTail`]: follows a journal another process is writing, record
//! by record, through the same checked step as the scan.

use std::path::{Path, PathBuf};

use super::super::segment::{list_segments, segment_name, SEGMENT_HEADER_LEN};
use super::super::JournalError;
use super::region::{MappedSegment, Step};

/// Follows a journal another process is writing, record by record. Held
/// by one reading thread (`Send`); any number of tails may follow one
/// journal.
///
/// [`JournalTail::next_record`] returns `Ok(None)` when nothing new is
/// committed yet; call it again later. It never returns a torn record: it
/// stops at the first commit word that is not set.
pub struct JournalTail {
    dir: PathBuf,
    seg: Option<MappedSegment>,
    index: u64,
    pos: usize,
    expected_seq: Option<u64>,
}

/// A record copied out of the journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedRecord {
    /// Segment index.
    pub segment: u64,
    /// Offset in the segment.
    pub offset: u64,
    /// Raw type.
    pub rtype_raw: u16,
    /// Sequence.
    pub seq: u64,
    /// Monotonic ns.
    pub mono_ns: u64,
    /// Payload bytes.
    pub payload: Vec<u8>,
}

impl JournalTail {
    /// Starts at the first record of the lowest segment in `dir`.
    pub fn open(dir: &Path) -> Result<JournalTail, JournalError> {
        let segs = list_segments(dir)?;
        let index = segs.first().map_or(1, |s| s.0);
        Ok(JournalTail {
            dir: dir.to_path_buf(),
            seg: None,
            index,
            pos: SEGMENT_HEADER_LEN,
            expected_seq: None,
        })
    }

    /// Where the next record is looked for: segment index, offset, and the
    /// sequence it must carry (`None` before the first record).
    pub fn position(&self) -> (u64, u64, Option<u64>) {
        (self.index, self.pos as u64, self.expected_seq)
    }

    /// The next committed record, or `None` if there is none yet.
    pub fn next_record(&mut self) -> Result<Option<OwnedRecord>, JournalError> {
        loop {
            if self.seg.is_none() {
                let path = self.dir.join(segment_name(self.index));
                if !path.exists() {
                    return Ok(None);
                }
                self.seg = Some(MappedSegment::open(&path, self.index)?);
            }
            let seg = self.seg.as_ref().expect("mapped above");
            let r = seg.region();
            match r.step(self.pos, self.expected_seq, false) {
                Step::Record(v, next) => {
                    let rec = OwnedRecord {
                        segment: v.segment,
                        offset: v.offset,
                        rtype_raw: v.rtype_raw,
                        seq: v.seq,
                        mono_ns: v.mono_ns,
                        payload: v.payload.to_vec(),
                    };
                    self.pos = next;
                    self.expected_seq = Some(v.seq + 1);
                    return Ok(Some(rec));
                }
                Step::End { seq, next_segment } => {
                    self.expected_seq = Some(seq);
                    self.index = next_segment;
                    self.pos = SEGMENT_HEADER_LEN;
                    self.seg = None;
                }
                Step::Clean => {
                    // A file mapped while shorter than its final size (cut
                    // short, then re-extended by a recovering writer): map it
                    // again on the next call.
                    if seg.file_len < r.size {
                        self.seg = None;
                    }
                    return Ok(None);
                }
                Step::Problem { reason, .. } => {
                    return Err(JournalError::Corrupt {
                        path: self.dir.join(segment_name(self.index)),
                        offset: self.pos as u64,
                        what: reason,
                    })
                }
            }
        }
    }
}
