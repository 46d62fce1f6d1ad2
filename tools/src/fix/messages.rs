//! Bodies of the messages in the subset (see the table in [`crate::fix`]),
//! built by one side and read by the other. Both ends use these builders,
//! so a field is spelled once; an independent peer (QuickFIX) checks that
//! the spelling is FIX 4.4.

use killswitch::order::Side;

use super::codec::Body;
use super::format_fixed;

/// FIX `Side` (54).
pub fn side_code(side: Side) -> &'static str {
    match side {
        Side::Buy => "1",
        Side::Sell => "2",
    }
}

/// Reads FIX `Side` (54): 1 buy, 2 sell.
pub fn parse_side(v: &[u8]) -> Option<Side> {
    match v {
        b"1" => Some(Side::Buy),
        b"2" => Some(Side::Sell),
        _ => None,
    }
}

/// Logon: `EncryptMethod` none, the heartbeat, a reset when asked, and
/// whether the venue should cancel our orders if the connection drops.
pub fn logon(heartbeat_s: u64, reset: bool, cancel_on_disconnect: bool) -> Body {
    let mut b = Body::new("A");
    b.uint(98, 0).uint(108, heartbeat_s);
    if reset {
        b.str(141, "Y");
    }
    b.str(
        super::TAG_CANCEL_ON_DISCONNECT,
        if cancel_on_disconnect { "Y" } else { "N" },
    );
    b
}

/// Logout with its reason.
pub fn logout(reason: &str) -> Body {
    let mut b = Body::new("5");
    if !reason.is_empty() {
        b.str(58, reason);
    }
    b
}

/// Heartbeat, answering a TestRequest when `test_req_id` is given.
pub fn heartbeat(test_req_id: Option<&[u8]>) -> Body {
    let mut b = Body::new("0");
    if let Some(id) = test_req_id {
        b.bytes(112, id);
    }
    b
}

/// TestRequest.
pub fn test_request(id: &str) -> Body {
    let mut b = Body::new("1");
    b.str(112, id);
    b
}

/// ResendRequest for `begin..=end` (0: to the end).
pub fn resend_request(begin: u64, end: u64) -> Body {
    let mut b = Body::new("2");
    b.uint(7, begin).uint(16, end);
    b
}

/// Session-level Reject of message `ref_seq`.
pub fn reject(ref_seq: u64, ref_tag: Option<u32>, reason: u32, text: &str) -> Body {
    let mut b = Body::new("3");
    b.uint(45, ref_seq);
    if let Some(t) = ref_tag {
        b.uint(371, u64::from(t));
    }
    b.uint(373, u64::from(reason)).str(58, text);
    b
}

/// BusinessMessageReject of a message we do not serve.
pub fn business_reject(ref_seq: u64, ref_msg_type: &[u8], reason: u32, text: &str) -> Body {
    let mut b = Body::new("j");
    b.uint(45, ref_seq)
        .bytes(372, ref_msg_type)
        .uint(380, u64::from(reason))
        .str(58, text);
    b
}

/// One new limit order (day).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewOrderFields<'a> {
    /// ClOrdID (11).
    pub cl_ord_id: &'a str,
    /// Account (1).
    pub account: &'a str,
    /// Symbol (55).
    pub symbol: &'a str,
    /// Side (54).
    pub side: Side,
    /// OrderQty (38), fixed point.
    pub qty: i64,
    /// Price (44), fixed point.
    pub price: i64,
    /// TransactTime (60).
    pub transact_time: &'a str,
}

/// NewOrderSingle.
pub fn new_order_single(o: &NewOrderFields<'_>) -> Body {
    let mut b = Body::new("D");
    b.str(11, o.cl_ord_id)
        .str(1, o.account)
        .str(55, o.symbol)
        .str(54, side_code(o.side))
        .str(60, o.transact_time)
        .str(38, &format_fixed(o.qty))
        .str(40, "2")
        .str(44, &format_fixed(o.price))
        .str(59, "0");
    b
}

/// OrderCancelRequest for `orig` (request id `cl_ord_id`).
pub fn cancel_request(
    cl_ord_id: &str,
    orig: &str,
    side: Side,
    symbol: &str,
    qty: i64,
    transact_time: &str,
) -> Body {
    let mut b = Body::new("F");
    b.str(41, orig)
        .str(11, cl_ord_id)
        .str(55, symbol)
        .str(54, side_code(side))
        .str(60, transact_time)
        .str(38, &format_fixed(qty));
    b
}

/// OrderMassCancelRequest: every order of the session (`symbol` None) or
/// of one symbol.
pub fn mass_cancel_request(cl_ord_id: &str, symbol: Option<&str>, transact_time: &str) -> Body {
    let mut b = Body::new("q");
    b.str(11, cl_ord_id);
    match symbol {
        Some(s) => b.str(530, "1").str(55, s),
        None => b.str(530, "7"),
    };
    b.str(60, transact_time);
    b
}

/// OrderStatusRequest.
pub fn order_status_request(cl_ord_id: &str, side: Side, symbol: &str, req_id: &str) -> Body {
    let mut b = Body::new("H");
    b.str(11, cl_ord_id)
        .str(55, symbol)
        .str(54, side_code(side))
        .str(790, req_id);
    b
}

/// RequestForPositions (all accounts of the session).
pub fn positions_request(req_id: &str, business_date: &str, transact_time: &str) -> Body {
    let mut b = Body::new("AN");
    b.str(710, req_id)
        .str(724, "0")
        .str(1, "ALL")
        .str(581, "1")
        .str(715, business_date)
        .str(60, transact_time);
    b
}

/// MarketDataRequest for the top of book of `symbol`.
pub fn market_data_request(req_id: &str, symbol: &str, subscribe: bool) -> Body {
    let mut b = Body::new("V");
    b.str(262, req_id)
        .str(263, if subscribe { "1" } else { "2" })
        .str(264, "1")
        .str(267, "2")
        .str(269, "0")
        .str(269, "1")
        .str(146, "1")
        .str(55, symbol);
    b
}

/// Our dead-man message: cancel all my orders unless refreshed within
/// `timeout_ms` (0 disarms).
pub fn cancel_all_after(timeout_ms: u64) -> Body {
    let mut b = Body::new("U1");
    b.uint(super::TAG_DEADMAN_TIMEOUT_MS, timeout_ms);
    b
}

/// Our venue-control message: set fault knob `knob` to `value`.
pub fn venue_control(knob: &str, value: &str) -> Body {
    let mut b = Body::new("U9");
    b.str(super::TAG_CONTROL_KNOB, knob)
        .str(super::TAG_CONTROL_VALUE, value);
    b
}

/// Today's date as `YYYYMMDD` from a FIX timestamp.
pub fn business_date(sending_time: &str) -> &str {
    sending_time.get(..8).unwrap_or("19700101")
}
