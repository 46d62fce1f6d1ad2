//! The journal's marks about itself: durability (what msync has put on
//! disk), the end of a segment, and where the newest snapshot is.

use super::{Cursor, DecodeError, Encode, RecordType, Sink};

/// Payload of [`RecordType::Durable`], 24 bytes: `u64 up_to_seq, u64 wall_ns,
/// u64 msync_ns`. Every record with a sequence up to `up_to_seq` was on disk
/// (msync returned) at `wall_ns`; the msync took `msync_ns`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct DurableRecord {
    /// Highest sequence made durable.
    pub up_to_seq: u64,
    /// Unix ns when msync returned.
    pub wall_ns: u64,
    /// How long msync took, ns.
    pub msync_ns: u64,
}

impl DurableRecord {
    /// Decodes a payload.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut c = Cursor::new(buf, "durable");
        let r = DurableRecord {
            up_to_seq: c.u64("up_to_seq")?,
            wall_ns: c.u64("wall_ns")?,
            msync_ns: c.u64("msync_ns")?,
        };
        c.finish()?;
        Ok(r)
    }
}

impl Encode for DurableRecord {
    fn record_type(&self) -> RecordType {
        RecordType::Durable
    }
    fn encoded_len(&self) -> usize {
        24
    }
    fn encode<S: Sink>(&self, out: &mut S) {
        out.put_u64(self.up_to_seq);
        out.put_u64(self.wall_ns);
        out.put_u64(self.msync_ns);
    }
}

/// Payload of [`RecordType::SegmentEnd`], 8 bytes: `u64 next_segment_index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentEndRecord {
    /// Index of the segment the journal continues in.
    pub next_segment: u64,
}

impl SegmentEndRecord {
    /// Decodes a payload.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut c = Cursor::new(buf, "segment-end");
        let r = SegmentEndRecord {
            next_segment: c.u64("next_segment")?,
        };
        c.finish()?;
        Ok(r)
    }
}

impl Encode for SegmentEndRecord {
    fn record_type(&self) -> RecordType {
        RecordType::SegmentEnd
    }
    fn encoded_len(&self) -> usize {
        8
    }
    fn encode<S: Sink>(&self, out: &mut S) {
        out.put_u64(self.next_segment);
    }
}

/// Payload of [`RecordType::SnapshotIndex`]: where the newest snapshot
/// record before this segment is. All zero: no snapshot so far.
///
/// | off | size | field |
/// |---:|---:|---|
/// | 0 | 8 | segment index of the snapshot record |
/// | 8 | 8 | its offset in that segment |
/// | 16 | 8 | its sequence number |
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub(crate) struct SnapshotIndexRecord {
    /// Segment of the snapshot record.
    pub segment: u64,
    /// Offset of the snapshot record in its segment.
    pub offset: u64,
    /// Sequence of the snapshot record (0: there is none).
    pub seq: u64,
}

impl SnapshotIndexRecord {
    /// Decodes a payload.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut c = Cursor::new(buf, "snapshot-index");
        let r = SnapshotIndexRecord {
            segment: c.u64("segment")?,
            offset: c.u64("offset")?,
            seq: c.u64("seq")?,
        };
        c.finish()?;
        Ok(r)
    }
}

impl Encode for SnapshotIndexRecord {
    fn record_type(&self) -> RecordType {
        RecordType::SnapshotIndex
    }
    fn encoded_len(&self) -> usize {
        24
    }
    fn encode<S: Sink>(&self, out: &mut S) {
        out.put_u64(self.segment);
        out.put_u64(self.offset);
        out.put_u64(self.seq);
    }
}
