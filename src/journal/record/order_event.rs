//! Order-event records: an order's creation and every event of its state
//! machine, the journal's bulk (one per order message).

use super::{get_side, get_tags, put_tags, Cursor, DecodeError, Encode, RecordType, Sink};
use crate::order::{OrderEvent, OrderId, Price, Qty, ScopeTags, Side};

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
