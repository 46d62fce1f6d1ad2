//! [`TradingState`]: open orders, positions and the switch's last trip and
//! reset, as plain data. It is what a quick checkpoint writes, what the
//! complete checkpoint's "trading state" section holds, and what replaying
//! the journal rebuilds (the runbook's "extract state from logs").
//!
//! Replay applies order events through [`crate::order::transition`]; an event
//! the state machine refuses is reported as a [`ReplayIssue`] and not applied
//! to the order, but a fill always moves the position: the money moved at the
//! venue whatever our bookkeeping thought of the order.

use std::collections::BTreeMap;

mod open_orders;

pub use open_orders::OpenOrders;
use open_orders::ORDER_LEN;

use crate::order::{transition, OrderEvent, OrderId, OrderState, Price, Qty, ScopeTags, Side};

use super::record::{
    Cursor, DecodeError, Encode, OrderAction, OrderEventRecord, RecordType, Sink, SwitchRecord,
};

/// One order that is not in a terminal state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct OrderEntry {
    /// Order id.
    #[cfg_attr(feature = "serde", serde(serialize_with = "ser_id"))]
    pub id: OrderId,
    /// Venue, strategy, instrument and account indices (control-block name tables).
    #[cfg_attr(feature = "serde", serde(serialize_with = "ser_tags"))]
    pub tags: ScopeTags,
    /// Buy or sell.
    #[cfg_attr(feature = "serde", serde(serialize_with = "ser_side"))]
    pub side: Side,
    /// Limit price, fixed point ([`crate::order::PRICE_SCALE`]).
    #[cfg_attr(feature = "serde", serde(serialize_with = "ser_price"))]
    pub price: Price,
    /// Total quantity, fixed point ([`crate::order::QTY_SCALE`]).
    #[cfg_attr(feature = "serde", serde(serialize_with = "ser_qty"))]
    pub qty: Qty,
    /// Quantity filled so far, fixed point.
    #[cfg_attr(feature = "serde", serde(serialize_with = "ser_qty"))]
    pub filled: Qty,
    /// Life-cycle state (never terminal here; `CancelUnknown` included).
    pub state: OrderState,
}

/// Key of a position: where and for whom it is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PositionKey {
    /// Venue index.
    pub venue: u16,
    /// Instrument index.
    pub instrument: u16,
    /// Account index (trader, desk or client).
    pub account: u16,
}

impl PositionKey {
    /// The position an order's fills move.
    pub fn of(tags: &ScopeTags) -> PositionKey {
        PositionKey {
            venue: tags.venue,
            instrument: tags.instrument,
            account: tags.account,
        }
    }
}

/// A position, fixed point.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Position {
    /// Signed net quantity (buys minus sells), units of 1/[`crate::order::QTY_SCALE`].
    #[cfg_attr(feature = "serde", serde(serialize_with = "ser_qty"))]
    pub qty: Qty,
    /// Cash flow of the fills: minus the sum of `sign * fill_qty * fill_price`,
    /// in units of 1/(`PRICE_SCALE * QTY_SCALE`). P&L at a mark price `m` is
    /// `cash + qty * m` in the same units.
    #[cfg_attr(feature = "serde", serde(serialize_with = "ser_i128"))]
    pub cash: i128,
}

/// The state of the book, as plain data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct TradingState {
    /// Orders not in a terminal state (pending, live, partially filled,
    /// pending cancel, cancel unknown), by id.
    /// Kept dense with each order's snapshot encoding ready, so a quick
    /// checkpoint copies them in one pass ([`OpenOrders`]).
    pub open_orders: OpenOrders,
    /// Positions, by (venue, instrument, account); flat ones are kept.
    #[cfg_attr(feature = "serde", serde(serialize_with = "ser_positions"))]
    pub positions: BTreeMap<PositionKey, Position>,
    /// The last trip of the kill switch, if any.
    pub last_trip: Option<SwitchRecord>,
    /// The last reset of the kill switch, if any.
    pub last_reset: Option<SwitchRecord>,
    /// Highest order id ever seen (the engine seeds its next id above it).
    #[cfg_attr(feature = "serde", serde(serialize_with = "ser_id"))]
    pub max_order_id: OrderId,
    /// Journal sequence of the last record this state reflects (0: none).
    pub last_seq: u64,
    /// Unix ns when the state was captured (0: unknown).
    pub taken_wall_ns: u64,
}

/// An event replay could not apply.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ReplayIssue {
    /// Journal sequence of the record.
    pub seq: u64,
    /// The order concerned, if any.
    pub order_id: Option<u64>,
    /// What was wrong and what replay did.
    pub what: String,
}

impl TradingState {
    /// The trip in force: the last trip when it is newer (by generation) than
    /// the last reset.
    pub fn tripped(&self) -> Option<&SwitchRecord> {
        match (&self.last_trip, &self.last_reset) {
            (Some(t), Some(r)) if r.generation >= t.generation => None,
            (t, _) => t.as_ref(),
        }
    }

    /// Applies a trip or reset record.
    pub fn apply_switch(&mut self, s: &SwitchRecord) {
        if s.reset {
            self.last_reset = Some(s.clone());
        } else {
            self.last_trip = Some(s.clone());
        }
    }

    /// Applies one order event at journal sequence `seq`. Returns the issue
    /// when the event cannot be applied to the order (unknown order, illegal
    /// transition, overfill); fills move positions in every case.
    pub fn apply_order_event(
        &mut self,
        seq: u64,
        ev: &OrderEventRecord,
    ) -> Result<(), ReplayIssue> {
        let issue = |what: String| ReplayIssue {
            seq,
            order_id: Some(ev.order_id.0),
            what,
        };
        self.last_seq = self.last_seq.max(seq);
        if ev.order_id > self.max_order_id {
            self.max_order_id = ev.order_id;
        }
        if let OrderAction::Event(OrderEvent::Fill { .. }) = ev.action {
            let p = self.positions.entry(PositionKey::of(&ev.tags)).or_default();
            let signed = ev.side.sign() as i128 * ev.fill_qty.0 as i128;
            p.qty = Qty(p
                .qty
                .0
                .saturating_add(ev.side.sign().saturating_mul(ev.fill_qty.0)));
            p.cash = p
                .cash
                .saturating_sub(signed.saturating_mul(ev.fill_price.0 as i128));
        }
        match ev.action {
            // One lookup per event, and the order's encoding refreshed in
            // place: the gateway thread runs this for every journaled order
            // event, thousands in an emergency drain.
            OrderAction::New => self
                .open_orders
                .insert_new(OrderEntry {
                    id: ev.order_id,
                    tags: ev.tags,
                    side: ev.side,
                    price: ev.price,
                    qty: ev.qty,
                    filled: Qty::ZERO,
                    state: OrderState::PendingNew,
                })
                .map_err(|()| issue("duplicate new order: kept the first".into())),
            OrderAction::Event(event) => {
                let applied = self.open_orders.update(&ev.order_id, |o| {
                    let next = transition(o.state, event)
                        .map_err(|e| issue(format!("{e}: not applied to the order")))?;
                    if let OrderEvent::Fill { .. } = event {
                        o.filled = Qty(o.filled.0.saturating_add(ev.fill_qty.0));
                    }
                    o.state = next;
                    if o.filled.0 > o.qty.0 {
                        return Err(issue("filled more than the order quantity".into()));
                    }
                    Ok(())
                });
                applied.unwrap_or_else(|| {
                    Err(issue(format!(
                        "{event:?} for an order not open in the journal (terminal, or created before its first segment); fills still moved the position"
                    )))
                })
            }
        }
    }

    /// A made-up state with `orders` open orders spread over 8 venues and 64
    /// instruments, and their positions: for benchmarks and examples.
    pub fn synthetic(orders: u64) -> TradingState {
        let mut s = TradingState::default();
        for id in 1..=orders {
            let tags = ScopeTags {
                venue: (id % 8) as u16,
                strategy: (id % 4) as u16,
                instrument: (id % 64) as u16,
                account: (id % 3) as u16,
            };
            let side = if id % 2 == 0 { Side::Buy } else { Side::Sell };
            s.open_orders.insert(OrderEntry {
                id: OrderId(id),
                tags,
                side,
                price: Price(6_500_000_000_000 + id as i64),
                qty: Qty::from_lots(2),
                filled: Qty::from_lots((id % 2) as i64),
                state: if id % 2 == 0 {
                    OrderState::Live
                } else {
                    OrderState::PartiallyFilled
                },
            });
            let p = s.positions.entry(PositionKey::of(&tags)).or_default();
            p.qty = Qty(p.qty.0 + side.sign() * Qty::from_lots((id % 2) as i64).0);
        }
        s.max_order_id = OrderId(orders);
        s
    }

    /// Decodes a snapshot payload (see `SnapshotPayload`).
    pub fn decode(buf: &[u8]) -> Result<TradingState, DecodeError> {
        let mut c = Cursor::new(buf, "snapshot");
        let version = c.u32("version")?;
        if version != SNAPSHOT_VERSION {
            return Err(c.err(
                "version",
                format!("snapshot format {version}, this build reads {SNAPSHOT_VERSION}: use a matching killswitch build"),
            ));
        }
        let n_orders = c.u32("order_count")? as usize;
        let n_positions = c.u32("position_count")? as usize;
        let flags = c.u32("flags")?;
        let last_seq = c.u64("last_seq")?;
        let max_order_id = OrderId(c.u64("max_order_id")?);
        let taken_wall_ns = c.u64("taken_wall_ns")?;
        let need =
            n_orders as u128 * ORDER_LEN as u128 + n_positions as u128 * POSITION_LEN as u128;
        if need > (buf.len() - c.pos()) as u128 {
            return Err(c.err(
                "order_count",
                format!("{n_orders} orders and {n_positions} positions need {need} bytes, payload has {}", buf.len() - c.pos()),
            ));
        }
        let mut s = TradingState {
            last_seq,
            max_order_id,
            taken_wall_ns,
            ..TradingState::default()
        };
        s.open_orders = OpenOrders::decode_from(&mut c, n_orders)?;
        for _ in 0..n_positions {
            let (key, p) = get_position(&mut c)?;
            if s.positions.insert(key, p).is_some() {
                return Err(c.err("position", format!("position {key:?} appears twice")));
            }
        }
        if flags & 1 != 0 {
            s.last_trip = Some(SwitchRecord::decode_from(&mut c, false)?);
        }
        if flags & 2 != 0 {
            s.last_reset = Some(SwitchRecord::decode_from(&mut c, true)?);
        }
        c.finish()?;
        Ok(s)
    }
}

/// Snapshot format version.
pub const SNAPSHOT_VERSION: u32 = 1;
const POSITION_LEN: usize = 32;
const SNAPSHOT_HEADER_LEN: usize = 40;

/// Payload of [`RecordType::Snapshot`] (and the trading-state section of a
/// complete checkpoint): a [`TradingState`] with the sequence and time it
/// reflects.
///
/// | off | size | field |
/// |----:|-----:|-------|
/// | 0  | 4 | format version (1) |
/// | 4  | 4 | order count N |
/// | 8  | 4 | position count P |
/// | 12 | 4 | flags: bit 0 last trip present, bit 1 last reset present |
/// | 16 | 8 | last journal sequence reflected |
/// | 24 | 8 | highest order id seen |
/// | 32 | 8 | wall-clock ns taken |
/// | 40 | 48·N | orders: id u64, tags 4×u16, side u8, state u8, 6 reserved, price i64, qty i64, filled i64 |
/// | … | 32·P | positions: venue u16, instrument u16, account u16, reserved u16, qty i64, cash i128 |
/// | … | 24+n | last trip (trip record layout), if flagged |
/// | … | 24+n | last reset, if flagged |
pub(crate) struct SnapshotPayload<'a> {
    /// The state.
    pub state: &'a TradingState,
    /// Overrides `state.last_seq`.
    pub last_seq: u64,
    /// Overrides `state.taken_wall_ns`.
    pub taken_wall_ns: u64,
}

impl Encode for SnapshotPayload<'_> {
    fn record_type(&self) -> RecordType {
        RecordType::Snapshot
    }
    fn encoded_len(&self) -> usize {
        let s = self.state;
        SNAPSHOT_HEADER_LEN
            + s.open_orders.len() * ORDER_LEN
            + s.positions.len() * POSITION_LEN
            + s.last_trip.as_ref().map_or(0, |t| t.encoded_len())
            + s.last_reset.as_ref().map_or(0, |t| t.encoded_len())
    }
    fn encode<S: Sink>(&self, out: &mut S) {
        let s = self.state;
        out.put_u32(SNAPSHOT_VERSION);
        out.put_u32(s.open_orders.len() as u32);
        out.put_u32(s.positions.len() as u32);
        out.put_u32(s.last_trip.is_some() as u32 | (s.last_reset.is_some() as u32) << 1);
        out.put_u64(self.last_seq);
        out.put_u64(s.max_order_id.0);
        out.put_u64(self.taken_wall_ns);
        // The orders are kept encoded (`OpenOrders`): one copy of the whole
        // array, the bulk of a quick checkpoint with many open orders.
        out.put(s.open_orders.encoded());
        for (k, p) in &s.positions {
            put_position(out, k, p);
        }
        if let Some(t) = &s.last_trip {
            t.encode(out);
        }
        if let Some(r) = &s.last_reset {
            r.encode(out);
        }
    }
}

#[cfg(feature = "serde")]
fn ser_id<S: serde::Serializer>(v: &OrderId, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(v.0)
}
#[cfg(feature = "serde")]
fn ser_side<S: serde::Serializer>(v: &Side, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match v {
        Side::Buy => "buy",
        Side::Sell => "sell",
    })
}
#[cfg(feature = "serde")]
fn ser_price<S: serde::Serializer>(v: &Price, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&v.to_string())
}
#[cfg(feature = "serde")]
fn ser_qty<S: serde::Serializer>(v: &Qty, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&v.to_string())
}
#[cfg(feature = "serde")]
fn ser_i128<S: serde::Serializer>(v: &i128, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&v.to_string())
}
#[cfg(feature = "serde")]
fn ser_tags<S: serde::Serializer>(v: &ScopeTags, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct;
    let mut st = s.serialize_struct("ScopeTags", 4)?;
    st.serialize_field("venue", &v.venue)?;
    st.serialize_field("strategy", &v.strategy)?;
    st.serialize_field("instrument", &v.instrument)?;
    st.serialize_field("account", &v.account)?;
    st.end()
}
#[cfg(feature = "serde")]
fn ser_positions<S: serde::Serializer>(
    v: &BTreeMap<PositionKey, Position>,
    s: S,
) -> Result<S::Ok, S::Error> {
    #[cfg_attr(feature = "serde", derive(serde::Serialize))]
    struct Row {
        venue: u16,
        instrument: u16,
        account: u16,
        qty: String,
        cash: String,
    }
    s.collect_seq(v.iter().map(|(k, p)| Row {
        venue: k.venue,
        instrument: k.instrument,
        account: k.account,
        qty: p.qty.to_string(),
        cash: p.cash.to_string(),
    }))
}

/// Payload of [`RecordType::Positions`]: `u32 count, u32 reserved`, then per
/// position the 32-byte layout of the snapshot (venue u16, instrument u16,
/// account u16, reserved u16, qty i64, cash i128). Replay overwrites the
/// listed positions (e.g. after a reconcile with the venue).
pub(crate) struct PositionsRecord<'a>(pub &'a BTreeMap<PositionKey, Position>);

impl Encode for PositionsRecord<'_> {
    fn record_type(&self) -> RecordType {
        RecordType::Positions
    }
    fn encoded_len(&self) -> usize {
        8 + self.0.len() * POSITION_LEN
    }
    fn encode<S: Sink>(&self, out: &mut S) {
        out.put_u32(self.0.len() as u32);
        out.put_u32(0);
        for (k, p) in self.0 {
            put_position(out, k, p);
        }
    }
}

impl PositionsRecord<'_> {
    /// Decodes a payload.
    pub fn decode(buf: &[u8]) -> Result<BTreeMap<PositionKey, Position>, DecodeError> {
        let mut c = Cursor::new(buf, "positions");
        let n = c.u32("count")? as usize;
        c.u32("reserved")?;
        if n as u128 * POSITION_LEN as u128 != (buf.len() - 8) as u128 {
            return Err(c.err(
                "count",
                format!(
                    "{n} positions need {} bytes, payload has {}",
                    n * POSITION_LEN,
                    buf.len() - 8
                ),
            ));
        }
        let mut out = BTreeMap::new();
        for _ in 0..n {
            let (key, p) = get_position(&mut c)?;
            out.insert(key, p);
        }
        c.finish()?;
        Ok(out)
    }
}

/// One position in the 32-byte layout shared by the snapshot and the
/// positions record: venue, instrument, account u16, reserved u16, qty i64,
/// cash i128.
fn put_position<S: Sink>(out: &mut S, k: &PositionKey, p: &Position) {
    out.put_u16(k.venue);
    out.put_u16(k.instrument);
    out.put_u16(k.account);
    out.put_u16(0);
    out.put_i64(p.qty.0);
    out.put_i128(p.cash);
}

/// Reads one position written by [`put_position`].
fn get_position(c: &mut Cursor<'_>) -> Result<(PositionKey, Position), DecodeError> {
    let key = PositionKey {
        venue: c.u16("position.venue")?,
        instrument: c.u16("position.instrument")?,
        account: c.u16("position.account")?,
    };
    c.u16("position.reserved")?;
    let p = Position {
        qty: Qty(c.i64("position.qty")?),
        cash: c.i128("position.cash")?,
    };
    Ok((key, p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{Mode, Source};

    fn sample() -> TradingState {
        let mut s = TradingState::default();
        let tags = ScopeTags {
            venue: 1,
            strategy: 2,
            instrument: 3,
            account: 4,
        };
        let new = OrderEventRecord::new_order(
            OrderId(5),
            tags,
            Side::Buy,
            Price::from_units(10),
            Qty::from_lots(3),
        );
        s.apply_order_event(1, &new).unwrap();
        s.apply_order_event(2, &new.with_event(OrderEvent::Acked))
            .unwrap();
        s.apply_order_event(
            3,
            &new.with_fill(Qty::from_lots(1), Price::from_units(10), false),
        )
        .unwrap();
        s.apply_switch(&SwitchRecord {
            reset: false,
            mode: Mode::Kill,
            source: Source::Cli,
            scope: None,
            forced: false,
            generation: 2,
            wall_ns: 9,
            reason: "drill".into(),
        });
        s
    }

    #[test]
    fn replay_tracks_fills_positions_and_trips() {
        let s = sample();
        let o = &s.open_orders[&OrderId(5)];
        assert_eq!(
            (o.state, o.filled),
            (OrderState::PartiallyFilled, Qty::from_lots(1))
        );
        let p = s.positions.values().next().unwrap();
        assert_eq!(p.qty, Qty::from_lots(1));
        assert_eq!(
            p.cash,
            -(Qty::from_lots(1).0 as i128 * Price::from_units(10).0 as i128)
        );
        assert_eq!(s.tripped().unwrap().reason, "drill");
        assert_eq!(s.max_order_id, OrderId(5));
    }

    #[test]
    fn illegal_events_are_reported_not_applied() {
        let mut s = sample();
        let ev = OrderEventRecord::new_order(
            OrderId(5),
            ScopeTags::default(),
            Side::Buy,
            Price(1),
            Qty(1),
        )
        .with_event(OrderEvent::Rejected);
        let issue = s.apply_order_event(4, &ev).unwrap_err();
        assert!(issue.what.contains("illegal"), "{}", issue.what);
        assert_eq!(
            s.open_orders[&OrderId(5)].state,
            OrderState::PartiallyFilled
        );
        let late_fill = ev.with_fill(Qty(1), Price(1), true);
        let mut gone = s.clone();
        gone.open_orders.clear();
        assert!(gone.apply_order_event(5, &late_fill).is_err());
        // The fill still moved the (default-tag) position.
        assert_eq!(
            gone.positions[&PositionKey::of(&ScopeTags::default())].qty,
            Qty(1)
        );
    }

    #[test]
    fn snapshot_roundtrips_and_rejects_damage() {
        let s = sample();
        let p = SnapshotPayload {
            state: &s,
            last_seq: 3,
            taken_wall_ns: 7,
        };
        let mut buf = Vec::new();
        p.encode(&mut buf);
        assert_eq!(buf.len(), p.encoded_len());
        let back = TradingState::decode(&buf).unwrap();
        assert_eq!(
            back,
            TradingState {
                last_seq: 3,
                taken_wall_ns: 7,
                ..s.clone()
            }
        );
        // Every truncation is an error, never a panic.
        for cut in 0..buf.len() {
            assert!(TradingState::decode(&buf[..cut]).is_err(), "cut at {cut}");
        }
        let mut huge = buf.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            TradingState::decode(&huge).unwrap_err().field,
            "order_count"
        );
        let mut pos = Vec::new();
        PositionsRecord(&s.positions).encode(&mut pos);
        assert_eq!(PositionsRecord::decode(&pos).unwrap(), s.positions);
    }
}
