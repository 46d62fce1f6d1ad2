//! The mapping layer of the reader: a read-only mapped segment and the
//! step that decides what the bytes at one offset are (a checked record, a
//! segment end, nothing yet, or a problem). [`super::scan`] and
//! [`super::JournalTail`] both walk a segment with it.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use memmap2::{MmapOptions, MmapRaw};

use super::super::record::{
    off, record_crc, record_len, RecordType, SegmentEndRecord, COMMIT, HEADER_LEN,
};
use super::super::segment::{read_header, SegmentHeader};
use super::super::JournalError;
use super::RecordView;

/// Outcome of looking at the bytes at one offset of a segment.
pub(crate) enum Step<'a> {
    /// A valid record; the next one starts at `next`.
    Record(RecordView<'a>, usize),
    /// A valid segment-end record: go on in segment `next_segment`.
    End { seq: u64, next_segment: u64 },
    /// Nothing written here (yet).
    Clean,
    /// Something that is not a valid record: the journal's valid part ends here.
    Problem {
        /// What is wrong.
        reason: String,
        /// Non-zero bytes from here to the last non-zero byte (exclusive scans only, else 0).
        bytes: u64,
    },
}

/// A mapped region of a segment: `avail` readable bytes of a segment of
/// `size` bytes (less when the file was cut short).
pub(crate) struct Region {
    pub base: *const u8,
    pub avail: usize,
    pub size: usize,
    pub index: u64,
}

impl Region {
    /// Bytes `from..last non-zero + 1` (0 when all zero). Only for bytes no
    /// writer touches: exclusive scans, or the rest of a segment after a
    /// committed segment-end record (the writer never returns to it).
    pub(crate) fn nonzero_span(&self, from: usize) -> u64 {
        let mut last = None;
        for i in (from..self.avail).rev() {
            // SAFETY: `i < avail`, inside the mapping; by the rule above nobody
            // writes these bytes while we read them.
            if unsafe { *self.base.add(i) } != 0 {
                last = Some(i);
                break;
            }
        }
        last.map_or(0, |l| (l + 1 - from) as u64)
    }

    pub(crate) fn u32_at(&self, at: usize) -> u32 {
        let mut a = [0u8; 4];
        // SAFETY: callers check `at + 4 <= avail`; the bytes belong to a record
        // whose commit word was seen set, so nobody writes them any more, or
        // (`probe_records`) to an exclusive scan, where nobody writes at all.
        unsafe { std::ptr::copy_nonoverlapping(self.base.add(at), a.as_mut_ptr(), 4) };
        u32::from_le_bytes(a)
    }

    pub(crate) fn u64_at(&self, at: usize) -> u64 {
        let mut a = [0u8; 8];
        // SAFETY: as in `u32_at`.
        unsafe { std::ptr::copy_nonoverlapping(self.base.add(at), a.as_mut_ptr(), 8) };
        u64::from_le_bytes(a)
    }

    /// Looks at offset `p`; `expected_seq` is the sequence the record must
    /// carry (`None`: any, for the first record of a scan).
    pub(crate) fn step(&self, p: usize, expected_seq: Option<u64>, exclusive: bool) -> Step<'_> {
        let problem = |reason: String| Step::Problem {
            reason,
            bytes: if exclusive { self.nonzero_span(p) } else { 0 },
        };
        if p + HEADER_LEN > self.avail {
            if !exclusive || self.nonzero_span(p) == 0 {
                return Step::Clean;
            }
            return problem(format!(
                "truncated inside a record header: file ends at {}, header needs up to {}",
                self.avail,
                p + HEADER_LEN
            ));
        }
        // SAFETY: `p + 32 <= avail` and `p` is 8-aligned (records are padded to
        // 8 bytes, the mapping is page aligned), so the commit word at p+28 is
        // an aligned u32 inside the mapping. It is only accessed atomically by
        // every process; an atomic load is allowed on a read-only mapping.
        let commit = unsafe { AtomicU32::from_ptr(self.base.add(p + off::COMMIT) as *mut u32) }
            .load(Ordering::Acquire);
        if commit == 0 {
            if exclusive && self.nonzero_span(p) > 0 {
                return problem("incomplete record: bytes written but the commit word is not set (writer died mid-append)".into());
            }
            return Step::Clean;
        }
        if commit != COMMIT {
            return problem(format!(
                "commit word at offset {} is {commit:#010x}, neither 0 nor \"KSJC\"",
                p + off::COMMIT
            ));
        }
        let len = self.u32_at(p + off::LEN) as usize;
        let end = p + record_len(len);
        if end > self.size {
            return problem(format!(
                "length {len} at offset {} runs past the segment end ({})",
                p + off::LEN,
                self.size
            ));
        }
        if end > self.avail {
            return problem(format!(
                "truncated record: needs bytes up to {end}, file ends at {}",
                self.avail
            ));
        }
        // SAFETY: `p..p + 32 + len` is inside the mapping (checked above) and
        // belongs to a committed record, which is never written again.
        let header = unsafe { std::slice::from_raw_parts(self.base.add(p), 24) };
        // SAFETY: as above.
        let payload = unsafe { std::slice::from_raw_parts(self.base.add(p + HEADER_LEN), len) };
        let stored = self.u32_at(p + off::CRC);
        let computed = record_crc(header, payload);
        if stored != computed {
            return problem(format!(
                "CRC-32C mismatch at offset {}: stored {stored:#010x}, computed {computed:#010x}",
                p + off::CRC
            ));
        }
        let seq = self.u64_at(p + off::SEQ);
        if let Some(e) = expected_seq {
            if seq != e {
                return problem(format!("sequence {seq}, expected {e}"));
            }
        }
        let rtype_raw = u16::from_le_bytes([header[off::TYPE], header[off::TYPE + 1]]);
        let rtype = RecordType::from_u16(rtype_raw);
        if rtype == Some(RecordType::SegmentEnd) {
            // The writer puts nothing after a segment-end record, so bytes
            // after it are damage (or a crafted record), never to be skipped
            // silently.
            let after = self.nonzero_span(end);
            if after > 0 {
                return Step::Problem {
                    reason: format!(
                        "segment-end record at offset {p} is followed by {after} non-zero bytes: records after it would be skipped"
                    ),
                    bytes: if exclusive { self.nonzero_span(p) } else { 0 },
                };
            }
            return match SegmentEndRecord::decode(payload) {
                Ok(e) if e.next_segment == self.index + 1 => Step::End {
                    seq,
                    next_segment: e.next_segment,
                },
                Ok(e) => problem(format!(
                    "segment-end record names segment {}, expected {}",
                    e.next_segment,
                    self.index + 1
                )),
                Err(e) => problem(e.to_string()),
            };
        }
        Step::Record(
            RecordView {
                segment: self.index,
                offset: p as u64,
                rtype_raw,
                rtype,
                seq,
                mono_ns: self.u64_at(p + off::MONO),
                payload,
            },
            end,
        )
    }
}

/// A read-only mapping of a segment file.
pub(crate) struct MappedSegment {
    pub header: SegmentHeader,
    pub file_len: usize,
    map: Option<MmapRaw>,
}

impl MappedSegment {
    pub(crate) fn open(path: &Path, index: u64) -> Result<MappedSegment, JournalError> {
        let file = File::open(path).map_err(|e| JournalError::io(path, "open the segment", e))?;
        let header = read_header(&file, path, index)?;
        let file_len = file
            .metadata()
            .map_err(|e| JournalError::io(path, "stat the segment", e))?
            .len()
            .min(header.size) as usize;
        let map = if file_len > 0 {
            Some(
                MmapOptions::new()
                    .len(file_len)
                    .map_raw_read_only(&file)
                    .map_err(|e| JournalError::io(path, "map the segment", e))?,
            )
        } else {
            None
        };
        Ok(MappedSegment {
            header,
            file_len,
            map,
        })
    }

    pub(crate) fn region(&self) -> Region {
        Region {
            base: self.map.as_ref().map_or(std::ptr::null(), |m| m.as_ptr()),
            avail: self.file_len,
            size: self.header.size as usize,
            index: self.header.index,
        }
    }
}
