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

use crate::control::{Mode, ScopeKind, Source};
use crate::order::{OrderEvent, OrderId, Price, Qty, ScopeTags, Side};

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
    let mut c = crate::crc::Crc32c::new();
    c.update(header_first_24);
    c.update(payload);
    c.value()
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

// ---------------------------------------------------------------------------
// Order events

/// What happened to an order: its creation or an [`OrderEvent`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderAction {
    /// The order was created and sent (state `PendingNew`).
    New,
    /// An event of the order state machine.
    Event(OrderEvent),
}

/// Payload of [`RecordType::OrderEvent`], 56 bytes:
///
/// | off | size | field |
/// |----:|-----:|-------|
/// | 0  | 8 | order id |
/// | 8  | 8 | scope tags: venue, strategy, instrument, account (u16 each) |
/// | 16 | 1 | action: 1 new, 2 acked, 3 fill, 4 cancel-sent, 5 canceled, 6 rejected, 7 cancel-rejected, 8 cancel-timeout (cancel unknown), 9 send-ambiguous (send unknown) |
/// | 17 | 1 | side: 0 buy, 1 sell |
/// | 18 | 1 | flags: bit 0 fill completes the order, bit 1 cancel-rejected with a partial fill |
/// | 19 | 5 | reserved, 0 |
/// | 24 | 8 | limit price (i64 fixed point) |
/// | 32 | 8 | order quantity (i64 fixed point) |
/// | 40 | 8 | fill quantity of this event (fills only, else 0) |
/// | 48 | 8 | fill price (fills only, else 0) |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderEventRecord {
    /// The order.
    pub order_id: OrderId,
    /// Its scope tags.
    pub tags: ScopeTags,
    /// What happened.
    pub action: OrderAction,
    /// Its side.
    pub side: Side,
    /// Its limit price.
    pub price: Price,
    /// Its total quantity.
    pub qty: Qty,
    /// Quantity of this fill (fills only).
    pub fill_qty: Qty,
    /// Price of this fill (fills only).
    pub fill_price: Price,
}

/// Payload bytes of an order event.
pub const ORDER_EVENT_LEN: usize = 56;

impl OrderEventRecord {
    /// A new order.
    pub fn new_order(
        order_id: OrderId,
        tags: ScopeTags,
        side: Side,
        price: Price,
        qty: Qty,
    ) -> Self {
        OrderEventRecord {
            order_id,
            tags,
            action: OrderAction::New,
            side,
            price,
            qty,
            fill_qty: Qty::ZERO,
            fill_price: Price(0),
        }
    }

    /// The same order with another action and no fill.
    pub fn with_event(&self, event: OrderEvent) -> Self {
        OrderEventRecord {
            action: OrderAction::Event(event),
            fill_qty: Qty::ZERO,
            fill_price: Price(0),
            ..*self
        }
    }

    /// The same order with a fill.
    pub fn with_fill(&self, fill_qty: Qty, fill_price: Price, complete: bool) -> Self {
        OrderEventRecord {
            action: OrderAction::Event(OrderEvent::Fill { complete }),
            fill_qty,
            fill_price,
            ..*self
        }
    }

    /// Decodes a payload.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut c = Cursor::new(buf, "order-event");
        let order_id = OrderId(c.u64("order_id")?);
        let tags = get_tags(&mut c)?;
        let action_at = c.pos();
        let action = c.u8("action")?;
        let side = get_side(&mut c)?;
        let flags = c.u8("flags")?;
        c.bytes(5, "reserved")?;
        let action = match action {
            1 => OrderAction::New,
            2 => OrderAction::Event(OrderEvent::Acked),
            3 => OrderAction::Event(OrderEvent::Fill {
                complete: flags & 1 != 0,
            }),
            4 => OrderAction::Event(OrderEvent::CancelSent),
            5 => OrderAction::Event(OrderEvent::Canceled),
            6 => OrderAction::Event(OrderEvent::Rejected),
            7 => OrderAction::Event(OrderEvent::CancelRejected {
                partially_filled: flags & 2 != 0,
            }),
            8 => OrderAction::Event(OrderEvent::CancelTimeout),
            9 => OrderAction::Event(OrderEvent::SendAmbiguous),
            v => {
                return Err(DecodeError {
                    rtype: "order-event",
                    field: "action",
                    offset: action_at,
                    what: format!("unknown action {v} (1..=9)"),
                })
            }
        };
        let r = OrderEventRecord {
            order_id,
            tags,
            action,
            side,
            price: Price(c.i64("price")?),
            qty: Qty(c.i64("qty")?),
            fill_qty: Qty(c.i64("fill_qty")?),
            fill_price: Price(c.i64("fill_price")?),
        };
        c.finish()?;
        Ok(r)
    }
}

impl Encode for OrderEventRecord {
    fn record_type(&self) -> RecordType {
        RecordType::OrderEvent
    }
    fn encoded_len(&self) -> usize {
        ORDER_EVENT_LEN
    }
    #[inline]
    fn encode<S: Sink>(&self, out: &mut S) {
        let (action, flags) = match self.action {
            OrderAction::New => (1, 0),
            OrderAction::Event(e) => match e {
                OrderEvent::Acked => (2, 0),
                OrderEvent::Fill { complete } => (3, complete as u8),
                OrderEvent::CancelSent => (4, 0),
                OrderEvent::Canceled => (5, 0),
                OrderEvent::Rejected => (6, 0),
                OrderEvent::CancelRejected { partially_filled } => {
                    (7, (partially_filled as u8) << 1)
                }
                OrderEvent::CancelTimeout => (8, 0),
                OrderEvent::SendAmbiguous => (9, 0),
            },
        };
        out.put_u64(self.order_id.0);
        put_tags(out, &self.tags);
        out.put(&[action, self.side as u8, flags, 0, 0, 0, 0, 0]);
        out.put_i64(self.price.0);
        out.put_i64(self.qty.0);
        out.put_i64(self.fill_qty.0);
        out.put_i64(self.fill_price.0);
    }
}

// ---------------------------------------------------------------------------
// Trips and resets

/// Payload of [`RecordType::Trip`] and [`RecordType::Reset`], `24 + reason_len` bytes:
///
/// | off | size | field |
/// |----:|-----:|-------|
/// | 0  | 1 | mode (0 normal, 1 reduce-only, 2 halt-new, 3 kill): asked for by a trip, left by a reset |
/// | 1  | 1 | source (1 cli, 2 http, 3 signal, 4 auto, 5 api, 6 panic) |
/// | 2  | 1 | scope kind (0 global, 1 venue, 2 strategy, 3 instrument, 4 account) |
/// | 3  | 1 | flags: bit 0 forced (resets) |
/// | 4  | 2 | scope index (0 when global) |
/// | 6  | 2 | reason length, at most 256 |
/// | 8  | 8 | state-word generation after the event |
/// | 16 | 8 | wall-clock ns (Unix) |
/// | 24 | n | reason, UTF-8 |
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SwitchRecord {
    /// True for a reset, false for a trip.
    pub reset: bool,
    /// Mode asked for (trip) or left (reset).
    pub mode: Mode,
    /// Who asked.
    pub source: Source,
    /// Scope of a scoped trip; `None` for a global one.
    pub scope: Option<(ScopeKind, u16)>,
    /// The reset was forced past its preconditions.
    pub forced: bool,
    /// State-word generation after the event.
    pub generation: u64,
    /// Unix ns.
    pub wall_ns: u64,
    /// Why (truncated to [`MAX_REASON`] bytes on a character boundary).
    pub reason: String,
}

impl SwitchRecord {
    fn reason_bytes(&self) -> &[u8] {
        crate::control::audit::truncate_utf8(&self.reason, MAX_REASON).as_bytes()
    }

    /// From an audit entry of the control block: trips and resets; `None`
    /// for a no-op trip or a refused reset, which changed nothing.
    pub fn from_audit(e: &crate::control::AuditEntry) -> Option<SwitchRecord> {
        use crate::control::AuditKind;
        let reset = match e.kind {
            AuditKind::Trip => false,
            AuditKind::Reset => true,
            // Neither changed the switch: the journal records changes.
            AuditKind::TripNoop
            | AuditKind::ResetRefused
            | AuditKind::ResetNoop
            | AuditKind::Unauthorized
            | AuditKind::Warning => return None,
        };
        Some(SwitchRecord {
            reset,
            mode: e.mode,
            source: e.source,
            scope: e.scope,
            forced: e.forced,
            generation: e.generation,
            wall_ns: e.wall_ns,
            reason: e.reason.clone(),
        })
    }

    /// Decodes a payload; `reset` comes from the record type.
    pub fn decode(buf: &[u8], reset: bool) -> Result<Self, DecodeError> {
        let mut c = Cursor::new(buf, if reset { "reset" } else { "trip" });
        let r = Self::decode_from(&mut c, reset)?;
        c.finish()?;
        Ok(r)
    }

    /// Decodes from a cursor (also used inside snapshots).
    pub(crate) fn decode_from(c: &mut Cursor<'_>, reset: bool) -> Result<Self, DecodeError> {
        let mode = c.u8("mode")?;
        if mode > 3 {
            return Err(c.err("mode", format!("unknown mode {mode} (0..=3)")));
        }
        let source_v = c.u8("source")?;
        let source = Source::from_u8(source_v)
            .ok_or_else(|| c.err("source", format!("unknown source {source_v} (1..=6)")))?;
        let kind = c.u8("scope_kind")?;
        let flags = c.u8("flags")?;
        let index = c.u16("scope_index")?;
        let scope = match kind {
            0 => None,
            k => Some((
                ScopeKind::from_u8(k).ok_or_else(|| {
                    c.err("scope_kind", format!("unknown scope kind {k} (0..=4)"))
                })?,
                index,
            )),
        };
        let reason_len = c.u16("reason_len")? as usize;
        if reason_len > MAX_REASON {
            return Err(c.err("reason_len", format!("{reason_len} > {MAX_REASON}")));
        }
        let generation = c.u64("generation")?;
        let wall_ns = c.u64("wall_ns")?;
        let reason = c.text(reason_len, "reason")?;
        Ok(SwitchRecord {
            reset,
            mode: Mode::from_level(mode),
            source,
            scope,
            forced: flags & 1 != 0,
            generation,
            wall_ns,
            reason,
        })
    }
}

impl Encode for SwitchRecord {
    fn record_type(&self) -> RecordType {
        if self.reset {
            RecordType::Reset
        } else {
            RecordType::Trip
        }
    }
    fn encoded_len(&self) -> usize {
        24 + self.reason_bytes().len()
    }
    fn encode<S: Sink>(&self, out: &mut S) {
        let reason = self.reason_bytes();
        let (kind, index) = match self.scope {
            None => (0, 0),
            Some((k, i)) => (k as u8, i),
        };
        out.put(&[self.mode as u8, self.source as u8, kind, self.forced as u8]);
        out.put_u16(index);
        out.put_u16(reason.len() as u16);
        out.put_u64(self.generation);
        out.put_u64(self.wall_ns);
        out.put(reason);
    }
}

// ---------------------------------------------------------------------------
// Blobs, log lines, durability marks

/// Payload of [`RecordType::Config`] and [`RecordType::StrategyState`]:
/// `u16 name_len, u16 reserved, u32 data_len, name (UTF-8), data`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobRecord<'a> {
    /// Config or strategy state.
    pub rtype: RecordType,
    /// Name (strategy name; free for config).
    pub name: &'a str,
    /// Opaque bytes.
    pub data: &'a [u8],
}

impl<'a> BlobRecord<'a> {
    /// Decodes a payload.
    pub fn decode(buf: &'a [u8], rtype: RecordType) -> Result<Self, DecodeError> {
        let mut c = Cursor::new(buf, rtype.as_str());
        let name_len = c.u16("name_len")? as usize;
        c.u16("reserved")?;
        let data_len = c.u32("data_len")? as usize;
        let at = c.pos();
        let name = std::str::from_utf8(c.bytes(name_len, "name")?).map_err(|e| DecodeError {
            rtype: rtype.as_str(),
            field: "name",
            offset: at,
            what: format!("not UTF-8: {e}"),
        })?;
        let data = c.bytes(data_len, "data")?;
        c.finish()?;
        Ok(BlobRecord { rtype, name, data })
    }
}

impl Encode for BlobRecord<'_> {
    fn record_type(&self) -> RecordType {
        self.rtype
    }
    fn encoded_len(&self) -> usize {
        8 + self.name.len().min(u16::MAX as usize) + self.data.len()
    }
    fn encode<S: Sink>(&self, out: &mut S) {
        let name = crate::control::audit::truncate_utf8(self.name, u16::MAX as usize);
        out.put_u16(name.len() as u16);
        out.put_u16(0);
        out.put_u32(self.data.len() as u32);
        out.put(name.as_bytes());
        out.put(self.data);
    }
}

/// Payload of [`RecordType::Log`]: `u8 level, 7 reserved, u64 wall_ns, text`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord<'a> {
    /// Severity: 1 error, 2 warn, 3 info, 4 debug.
    pub level: u8,
    /// Unix ns.
    pub wall_ns: u64,
    /// The line, UTF-8.
    pub text: &'a str,
}

impl<'a> LogRecord<'a> {
    /// Decodes a payload.
    pub fn decode(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let mut c = Cursor::new(buf, "log");
        let level = c.u8("level")?;
        c.bytes(7, "reserved")?;
        let wall_ns = c.u64("wall_ns")?;
        let at = c.pos();
        let text = std::str::from_utf8(&buf[at..]).map_err(|e| DecodeError {
            rtype: "log",
            field: "text",
            offset: at,
            what: format!("not UTF-8: {e}"),
        })?;
        Ok(LogRecord {
            level,
            wall_ns,
            text,
        })
    }

    /// Name of the level.
    pub fn level_str(&self) -> &'static str {
        match self.level {
            1 => "ERROR",
            2 => "WARN",
            3 => "INFO",
            4 => "DEBUG",
            _ => "LOG",
        }
    }
}

impl Encode for LogRecord<'_> {
    fn record_type(&self) -> RecordType {
        RecordType::Log
    }
    fn encoded_len(&self) -> usize {
        16 + self.text.len()
    }
    #[inline]
    fn encode<S: Sink>(&self, out: &mut S) {
        out.put(&[self.level, 0, 0, 0, 0, 0, 0, 0]);
        out.put_u64(self.wall_ns);
        out.put(self.text.as_bytes());
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip<T: Encode>(v: &T) -> Vec<u8> {
        let mut buf = Vec::new();
        v.encode(&mut buf);
        assert_eq!(buf.len(), v.encoded_len());
        buf
    }

    #[test]
    fn order_events_roundtrip_every_action() {
        let tags = ScopeTags {
            venue: 1,
            strategy: 2,
            instrument: 3,
            account: 4,
        };
        let base = OrderEventRecord::new_order(
            OrderId(77),
            tags,
            Side::Sell,
            Price::from_units(101),
            Qty::from_lots(5),
        );
        let events = [
            base,
            base.with_event(OrderEvent::Acked),
            base.with_fill(Qty::from_lots(2), Price::from_units(100), false),
            base.with_fill(Qty::from_lots(3), Price::from_units(99), true),
            base.with_event(OrderEvent::CancelSent),
            base.with_event(OrderEvent::Canceled),
            base.with_event(OrderEvent::Rejected),
            base.with_event(OrderEvent::CancelRejected {
                partially_filled: true,
            }),
            base.with_event(OrderEvent::CancelRejected {
                partially_filled: false,
            }),
            base.with_event(OrderEvent::CancelTimeout),
            base.with_event(OrderEvent::SendAmbiguous),
        ];
        for e in events {
            let buf = roundtrip(&e);
            assert_eq!(OrderEventRecord::decode(&buf).unwrap(), e);
        }
        let mut bad = roundtrip(&base);
        bad[16] = 10;
        let err = OrderEventRecord::decode(&bad).unwrap_err();
        assert_eq!((err.field, err.offset), ("action", 16));
        assert!(OrderEventRecord::decode(&bad[..40]).is_err());
    }

    #[test]
    fn switch_records_roundtrip_and_reject_bad_fields() {
        let t = SwitchRecord {
            reset: false,
            mode: Mode::Kill,
            source: Source::Signal,
            scope: Some((ScopeKind::Venue, 3)),
            forced: false,
            generation: 9,
            wall_ns: 123,
            reason: "loss limit é".into(),
        };
        let buf = roundtrip(&t);
        assert_eq!(SwitchRecord::decode(&buf, false).unwrap(), t);
        let mut bad = buf.clone();
        bad[1] = 0;
        assert_eq!(
            SwitchRecord::decode(&bad, false).unwrap_err().field,
            "source"
        );
        let mut bad = buf;
        bad[6] = 200; // reason_len beyond the payload
        assert_eq!(
            SwitchRecord::decode(&bad, false).unwrap_err().field,
            "reason"
        );
        let long = SwitchRecord {
            reason: "x".repeat(1000),
            ..t
        };
        assert_eq!(roundtrip(&long).len(), 24 + MAX_REASON);
    }

    #[test]
    fn blobs_logs_and_marks_roundtrip() {
        let b = BlobRecord {
            rtype: RecordType::StrategyState,
            name: "mm-1",
            data: b"\x00\x01state",
        };
        assert_eq!(BlobRecord::decode(&roundtrip(&b), b.rtype).unwrap(), b);
        let l = LogRecord {
            level: 2,
            wall_ns: 5,
            text: "venue slow",
        };
        assert_eq!(LogRecord::decode(&roundtrip(&l)).unwrap(), l);
        let d = DurableRecord {
            up_to_seq: 4,
            wall_ns: 5,
            msync_ns: 6,
        };
        assert_eq!(DurableRecord::decode(&roundtrip(&d)).unwrap(), d);
        for t in RecordType::ALL {
            assert_eq!(RecordType::from_u16(t as u16), Some(t));
        }
        assert_eq!(RecordType::from_u16(0), None);
        assert_eq!(RecordType::from_u16(12), None);
        let i = SnapshotIndexRecord {
            segment: 3,
            offset: 4096,
            seq: 77,
        };
        assert_eq!(SnapshotIndexRecord::decode(&roundtrip(&i)).unwrap(), i);
        assert_eq!(record_len(0), 32);
        assert_eq!(record_len(1), 40);
        assert_eq!(record_len(56), 88);
    }
}
