//! Record layout: the 32-byte header, the record types and their payloads.
//!
//! Everything is little-endian and fixed-width; offsets are from the start of
//! the record (header) or of the payload. A record starts on an 8-byte
//! boundary and occupies `align8(32 + payload_len)` bytes; padding is zero.
//!
//! | offset | size | field     | meaning |
//! |-------:|-----:|-----------|---------|
//! | 0      | 4    | `len`     | payload length in bytes (header and padding excluded) |
//! | 4      | 2    | `type`    | [`RecordType`] |
//! | 6      | 2    | `flags`   | reserved, 0 |
//! | 8      | 8    | `seq`     | sequence number, +1 per record over the whole journal, first is 1 |
//! | 16     | 8    | `mono_ns` | `CLOCK_MONOTONIC` ns when appended |
//! | 24     | 4    | `crc`     | CRC-32C (Castagnoli) of header bytes 0..24 followed by the payload |
//! | 28     | 4    | `commit`  | [`COMMIT`] (`"KSJC"`), stored last with Release; 0 = not (yet) complete |
//! | 32     | len  | payload   | per type, below |
//!
//! The CRC covers the length, type, sequence and timestamp as well as the
//! payload, so a flipped bit in the header is caught like one in the payload.
//!
//! Payload codecs never panic on input: every decoder returns a
//! [`DecodeError`] naming the record type, the field and its offset.

mod blobs;
mod marks;
mod order_event;
mod switch;

pub use blobs::{BlobRecord, LogRecord};
pub use marks::DurableRecord;
pub(crate) use marks::{SegmentEndRecord, SnapshotIndexRecord};
pub use order_event::{OrderAction, OrderEventRecord, ORDER_EVENT_LEN};
pub use switch::SwitchRecord;

use crate::order::{ScopeTags, Side};

/// Bytes in a record header.
pub const HEADER_LEN: usize = 32;
/// Value of the commit word of a complete record: the bytes `"KSJC"`.
pub const COMMIT: u32 = u32::from_le_bytes(*b"KSJC");
/// Longest reason text kept in a trip or reset record, in bytes.
pub const MAX_REASON: usize = 256;

/// Offsets of the header fields.
pub(crate) mod off {
    pub const LEN: usize = 0;
    pub const TYPE: usize = 4;
    pub const SEQ: usize = 8;
    pub const MONO: usize = 16;
    pub const CRC: usize = 24;
    pub const COMMIT: usize = 28;
}

/// Bytes a record with `payload_len` bytes of payload occupies in a segment.
#[inline]
pub const fn record_len(payload_len: usize) -> usize {
    (HEADER_LEN + payload_len + 7) & !7
}

/// The record CRC: CRC-32C of header bytes `0..24` then the payload.
#[inline]
pub fn record_crc(header_first_24: &[u8], payload: &[u8]) -> u32 {
    crate::crc::crc32c_append(crate::crc::crc32c(header_first_24), payload)
}

/// What a record holds (header field `type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
#[repr(u16)]
pub enum RecordType {
    /// An order event ([`OrderEventRecord`], 56 bytes).
    OrderEvent = 1,
    /// A trip of the kill switch ([`SwitchRecord`]).
    Trip = 2,
    /// A reset of the kill switch ([`SwitchRecord`]).
    Reset = 3,
    /// A position snapshot ([`crate::journal::state::Position`] list).
    Positions = 4,
    /// The engine configuration ([`BlobRecord`]).
    Config = 5,
    /// A strategy's state ([`BlobRecord`], name = strategy).
    StrategyState = 6,
    /// A free-form log line ([`LogRecord`]).
    Log = 7,
    /// Quick checkpoint: a whole [`crate::journal::TradingState`].
    Snapshot = 8,
    /// Records up to a sequence reached the disk ([`DurableRecord`]).
    Durable = 9,
    /// Last record of a full segment; the journal goes on in the next one.
    SegmentEnd = 10,
    /// First record of every segment after the first: where the newest
    /// snapshot before it is (`SnapshotIndexRecord`), so recovery can
    /// start there instead of replaying the whole journal.
    SnapshotIndex = 11,
}

impl RecordType {
    /// All types, in numeric order.
    pub const ALL: [RecordType; 11] = [
        RecordType::OrderEvent,
        RecordType::Trip,
        RecordType::Reset,
        RecordType::Positions,
        RecordType::Config,
        RecordType::StrategyState,
        RecordType::Log,
        RecordType::Snapshot,
        RecordType::Durable,
        RecordType::SegmentEnd,
        RecordType::SnapshotIndex,
    ];

    /// Decodes the header field; `None` for a type this build does not know.
    pub fn from_u16(v: u16) -> Option<RecordType> {
        RecordType::ALL.get((v as usize).wrapping_sub(1)).copied()
    }

    /// Name used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::OrderEvent => "order-event",
            RecordType::Trip => "trip",
            RecordType::Reset => "reset",
            RecordType::Positions => "positions",
            RecordType::Config => "config",
            RecordType::StrategyState => "strategy-state",
            RecordType::Log => "log",
            RecordType::Snapshot => "snapshot",
            RecordType::Durable => "durable",
            RecordType::SegmentEnd => "segment-end",
            RecordType::SnapshotIndex => "snapshot-index",
        }
    }
}

/// A payload that fails to decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{rtype} payload: field `{field}` at payload offset {offset}: {what}")]
pub struct DecodeError {
    /// Record type name.
    pub rtype: &'static str,
    /// The field.
    pub field: &'static str,
    /// Byte offset of the field in the payload.
    pub offset: usize,
    /// What is wrong with it.
    pub what: String,
}

/// Where encoders write: a `Vec` or raw memory in the journal mapping.
pub trait Sink {
    /// Appends bytes.
    fn put(&mut self, bytes: &[u8]);
    /// Appends one byte.
    #[inline]
    fn put_u8(&mut self, v: u8) {
        self.put(&[v]);
    }
    /// Appends a little-endian u16.
    #[inline]
    fn put_u16(&mut self, v: u16) {
        self.put(&v.to_le_bytes());
    }
    /// Appends a little-endian u32.
    #[inline]
    fn put_u32(&mut self, v: u32) {
        self.put(&v.to_le_bytes());
    }
    /// Appends a little-endian u64.
    #[inline]
    fn put_u64(&mut self, v: u64) {
        self.put(&v.to_le_bytes());
    }
    /// Appends a little-endian i64.
    #[inline]
    fn put_i64(&mut self, v: i64) {
        self.put(&v.to_le_bytes());
    }
    /// Appends a little-endian i128.
    #[inline]
    fn put_i128(&mut self, v: i128) {
        self.put(&v.to_le_bytes());
    }
}

impl Sink for Vec<u8> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// A payload that can be appended to the journal.
pub trait Encode {
    /// The header `type`.
    fn record_type(&self) -> RecordType;
    /// Exact payload length [`Encode::encode`] writes.
    fn encoded_len(&self) -> usize;
    /// Writes the payload.
    fn encode<S: Sink>(&self, out: &mut S);
}

/// Reads fields out of a payload, naming each one in its errors.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    rtype: &'static str,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `buf`, a payload of type `rtype` (for errors).
    pub fn new(buf: &'a [u8], rtype: &'static str) -> Cursor<'a> {
        Cursor { buf, pos: 0, rtype }
    }

    /// Current offset.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// An error at the current offset.
    pub fn err(&self, field: &'static str, what: impl Into<String>) -> DecodeError {
        DecodeError {
            rtype: self.rtype,
            field,
            offset: self.pos,
            what: what.into(),
        }
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len());
        match end {
            Some(end) => {
                let b = &self.buf[self.pos..end];
                self.pos = end;
                Ok(b)
            }
            None => Err(self.err(
                field,
                format!(
                    "needs {n} bytes, only {} left",
                    self.buf.len().saturating_sub(self.pos)
                ),
            )),
        }
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let b = self.bytes(N, field)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    /// A byte.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }
    /// A little-endian u16.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.array(field).map(u16::from_le_bytes)
    }
    /// A little-endian u32.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.array(field).map(u32::from_le_bytes)
    }
    /// A little-endian u64.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.array(field).map(u64::from_le_bytes)
    }
    /// A little-endian i64.
    pub fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        self.array(field).map(i64::from_le_bytes)
    }
    /// A little-endian i128.
    pub fn i128(&mut self, field: &'static str) -> Result<i128, DecodeError> {
        self.array(field).map(i128::from_le_bytes)
    }

    /// UTF-8 text of `n` bytes.
    pub fn text(&mut self, n: usize, field: &'static str) -> Result<String, DecodeError> {
        let at = self.pos;
        let b = self.bytes(n, field)?;
        String::from_utf8(b.to_vec()).map_err(|e| DecodeError {
            rtype: self.rtype,
            field,
            offset: at,
            what: format!("not UTF-8: {e}"),
        })
    }

    /// Fails unless every byte was consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(self.err(
                "end",
                format!("{} trailing bytes", self.buf.len() - self.pos),
            ))
        }
    }
}

/// Encodes scope tags (8 bytes: venue, strategy, instrument, account).
pub(crate) fn put_tags<S: Sink>(out: &mut S, t: &ScopeTags) {
    out.put_u16(t.venue);
    out.put_u16(t.strategy);
    out.put_u16(t.instrument);
    out.put_u16(t.account);
}

/// Decodes scope tags.
pub(crate) fn get_tags(c: &mut Cursor<'_>) -> Result<ScopeTags, DecodeError> {
    Ok(ScopeTags {
        venue: c.u16("tags.venue")?,
        strategy: c.u16("tags.strategy")?,
        instrument: c.u16("tags.instrument")?,
        account: c.u16("tags.account")?,
    })
}

/// Decodes a side byte.
pub(crate) fn get_side(c: &mut Cursor<'_>) -> Result<Side, DecodeError> {
    let v = c.u8("side")?;
    Side::from_u8(v).ok_or_else(|| c.err("side", format!("unknown side {v} (0 buy, 1 sell)")))
}

#[cfg(test)]
mod tests;
