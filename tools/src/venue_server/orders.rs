//! Application messages: orders, cancels, mass cancels, status, positions,
//! market data, the dead-man timer and venue control in; ExecutionReports
//! and the other answers out.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use killswitch::order::{OrderId, Price, Qty, ScopeIndex, ScopeTags, Side};
use killswitch::venue::{MassCancelScope, NewOrder};
use rustc_hash::FxHashMap;

use super::conn::{REJECT_INVALID_MSG_TYPE, REJECT_REQUIRED_TAG_MISSING, REJECT_VALUE_INCORRECT};
use super::VenueServer;
use crate::fix::codec::{Body, Msg};
use crate::fix::messages::{self, parse_side, side_code};
use crate::fix::{format_fixed, parse_fixed, TAG_CONTROL_KNOB, TAG_CONTROL_VALUE};

/// What the venue knows of one order beyond the book.
#[derive(Clone, Debug)]
pub(super) struct OrderInfo {
    pub(super) cl_ord_id: String,
    pub(super) account: String,
    pub(super) symbol: ScopeIndex,
    pub(super) side: Side,
    pub(super) qty: i64,
    pub(super) price: i64,
    pub(super) cum: i64,
    /// Sum of qty × price of the fills (for AvgPx), in QTY_SCALE × price units.
    pub(super) notional: i128,
    /// ClOrdID of the cancel request that is cancelling it, if any.
    pub(super) cancel_cl_ord_id: Option<String>,
    /// Why it was (or is being) cancelled.
    pub(super) cause: Option<&'static str>,
}

/// A session's orders, by the ClOrdIDs its client chose.
#[derive(Debug, Default)]
pub(super) struct FirmOrders {
    pub(super) by_cl_ord_id: HashMap<String, OrderId>,
    pub(super) info: FxHashMap<OrderId, OrderInfo>,
    pub(super) next_id: u64,
    pub(super) accounts: Vec<String>,
    pub(super) status_reqs: VecDeque<(OrderId, String)>,
    pub(super) pos_reqs: VecDeque<String>,
    pub(super) pos_lines: Vec<(ScopeIndex, ScopeIndex, i64)>,
    pub(super) md_reqs: HashMap<ScopeIndex, String>,
}

impl FirmOrders {
    /// Notes why these orders were cancelled (for the reports' Text).
    pub(super) fn mark_cause(&mut self, ids: &[OrderId], cause: &'static str) {
        for id in ids {
            if let Some(o) = self.info.get_mut(id) {
                o.cause = Some(cause);
            }
        }
    }

    fn account_index(&mut self, account: &str) -> ScopeIndex {
        match self.accounts.iter().position(|a| a == account) {
            Some(i) => i as ScopeIndex,
            None => {
                self.accounts.push(account.to_string());
                (self.accounts.len() - 1) as ScopeIndex
            }
        }
    }
}

/// Why a request is refused: the tag, the session reject reason, the text.
type Refusal = (u32, u32, String);

fn need<'a>(msg: &Msg<'a>, tag: u32) -> Result<&'a str, Refusal> {
    match msg.str(tag) {
        Some(v) => Ok(v),
        None => Err((
            tag,
            REJECT_REQUIRED_TAG_MISSING,
            format!("required tag {tag} missing"),
        )),
    }
}

fn bad(tag: u32, what: &str) -> Refusal {
    (tag, REJECT_VALUE_INCORRECT, format!("tag {tag}: {what}"))
}

impl VenueServer {
    fn symbol_index(&self, symbol: &str) -> Option<ScopeIndex> {
        self.cfg
            .instruments
            .iter()
            .position(|s| s == symbol)
            .map(|i| i as ScopeIndex)
    }

    /// An application message on session `f` (already sequenced and logged).
    pub(super) fn application(&mut self, f: usize, msg: &Msg<'_>) {
        self.note_adoption(f, msg);
        let result = match msg.msg_type() {
            b"D" => self.new_order(f, msg),
            b"F" => self.cancel_request(f, msg),
            b"q" => self.mass_cancel(f, msg),
            b"H" => self.status_request(f, msg),
            b"AN" => self.positions_request(f, msg),
            b"V" => self.market_data_request(f, msg),
            b"U1" => self.cancel_all_after(f, msg),
            b"U9" => self.control(f, msg),
            other => {
                let text = format!(
                    "MsgType {} is not served here",
                    String::from_utf8_lossy(other)
                );
                Err((35, REJECT_INVALID_MSG_TYPE, text))
            }
        };
        if let Err((tag, reason, text)) = result {
            let body = messages::reject(msg.seq().unwrap_or(0), Some(tag), reason, &text);
            self.send(f, body, false);
        }
    }

    fn new_order(&mut self, f: usize, msg: &Msg<'_>) -> Result<(), Refusal> {
        let cl_ord_id = need(msg, 11)?.to_string();
        let symbol = need(msg, 55)?;
        let side =
            parse_side(need(msg, 54)?.as_bytes()).ok_or_else(|| bad(54, "Side must be 1 or 2"))?;
        let qty = parse_fixed(need(msg, 38)?.as_bytes()).ok_or_else(|| bad(38, "not a decimal"))?;
        if need(msg, 40)? != "2" {
            return Err(bad(40, "only limit orders (40=2) are accepted"));
        }
        let price =
            parse_fixed(need(msg, 44)?.as_bytes()).ok_or_else(|| bad(44, "not a decimal"))?;
        let account = msg.str(1).unwrap_or("").to_string();
        let Some(instrument) = self.symbol_index(symbol) else {
            let text = format!("unknown symbol {symbol}");
            self.reject_new(f, &cl_ord_id, symbol, side, qty, 1, &text);
            return Ok(());
        };
        let orders = &mut self.firms[f].orders;
        if orders.by_cl_ord_id.contains_key(&cl_ord_id) {
            self.reject_new(f, &cl_ord_id, symbol, side, qty, 6, "duplicate ClOrdID");
            return Ok(());
        }
        orders.next_id += 1;
        let id = OrderId(orders.next_id);
        let account_index = orders.account_index(&account);
        orders.by_cl_ord_id.insert(cl_ord_id.clone(), id);
        orders.info.insert(
            id,
            OrderInfo {
                cl_ord_id,
                account,
                symbol: instrument,
                side,
                qty,
                price,
                cum: 0,
                notional: 0,
                cancel_cl_ord_id: None,
                cause: None,
            },
        );
        let order = NewOrder {
            id,
            tags: ScopeTags {
                instrument,
                account: account_index,
                ..ScopeTags::default()
            },
            side,
            price: Price(price),
            qty: Qty(qty),
        };
        let sid = self.firms[f].sid;
        self.exchange.new_order(sid, &order);
        Ok(())
    }

    /// An ExecutionReport rejecting an order the venue never booked.
    #[allow(clippy::too_many_arguments)]
    fn reject_new(
        &mut self,
        f: usize,
        cl_ord_id: &str,
        symbol: &str,
        side: Side,
        qty: i64,
        reason: u32,
        text: &str,
    ) {
        self.exec_seq += 1;
        let mut b = Body::new("8");
        b.str(37, "NONE")
            .str(11, cl_ord_id)
            .uint(17, self.exec_seq)
            .str(150, "8")
            .str(39, "8")
            .str(55, symbol)
            .str(54, side_code(side))
            .str(38, &format_fixed(qty))
            .str(151, "0")
            .str(14, "0")
            .str(6, "0")
            .uint(103, u64::from(reason))
            .str(60, self.clock.now())
            .str(58, text);
        self.send(f, b, true);
    }

    fn cancel_request(&mut self, f: usize, msg: &Msg<'_>) -> Result<(), Refusal> {
        let orig = need(msg, 41)?;
        let cl_ord_id = need(msg, 11)?.to_string();
        let Some(&id) = self.firms[f].orders.by_cl_ord_id.get(orig) else {
            let mut b = Body::new("9");
            b.str(37, "NONE")
                .str(11, &cl_ord_id)
                .str(41, orig)
                .str(39, "8")
                .str(434, "1")
                .str(102, "1")
                .str(58, "unknown order");
            self.send(f, b, true);
            return Ok(());
        };
        if let Some(o) = self.firms[f].orders.info.get_mut(&id) {
            o.cancel_cl_ord_id = Some(cl_ord_id);
            o.cause.get_or_insert("cancel requested");
        }
        let sid = self.firms[f].sid;
        self.exchange.cancel(sid, id);
        Ok(())
    }

    fn mass_cancel(&mut self, f: usize, msg: &Msg<'_>) -> Result<(), Refusal> {
        let cl_ord_id = need(msg, 11)?.to_string();
        let kind = need(msg, 530)?;
        let scope = match kind {
            "7" => MassCancelScope::All,
            "1" => {
                let symbol = need(msg, 55)?;
                match self.symbol_index(symbol) {
                    Some(i) => MassCancelScope::Instrument(i),
                    None => return Err(bad(55, "unknown symbol")),
                }
            }
            _ => {
                return Err(bad(
                    530,
                    "MassCancelRequestType must be 1 (security) or 7 (all)",
                ))
            }
        };
        let sid = self.firms[f].sid;
        let ignored_before = self.handle.stats().ignored_cancels;
        let done = self.exchange.mass_cancel(sid, scope);
        if self.handle.stats().ignored_cancels > ignored_before {
            return Ok(()); // the ignore-cancels knob: no answer at all
        }
        let mut b = Body::new("r");
        b.str(11, &cl_ord_id)
            .str(37, &format!("MC-{cl_ord_id}"))
            .str(530, kind);
        match done {
            None => {
                b.str(531, "0")
                    .str(532, "0")
                    .str(58, "mass cancel is not supported by this venue");
            }
            Some(ids) => {
                self.firms[f].orders.mark_cause(&ids, "mass cancel");
                b.str(531, kind).uint(533, ids.len() as u64);
            }
        }
        self.send(f, b, true);
        Ok(())
    }

    fn status_request(&mut self, f: usize, msg: &Msg<'_>) -> Result<(), Refusal> {
        let cl_ord_id = need(msg, 11)?;
        let req_id = msg.str(790).unwrap_or("").to_string();
        let Some(&id) = self.firms[f].orders.by_cl_ord_id.get(cl_ord_id) else {
            self.exec_seq += 1;
            let mut b = Body::new("8");
            b.str(37, "NONE")
                .str(11, cl_ord_id)
                .uint(17, self.exec_seq)
                .str(150, "I")
                .str(39, "8")
                .str(55, msg.str(55).unwrap_or("?"))
                .str(54, msg.str(54).unwrap_or("1"))
                .str(151, "0")
                .str(14, "0")
                .str(6, "0")
                .str(103, "5")
                .str(58, "unknown order");
            if !req_id.is_empty() {
                b.str(790, &req_id);
            }
            self.send(f, b, true);
            return Ok(());
        };
        self.firms[f].orders.status_reqs.push_back((id, req_id));
        let sid = self.firms[f].sid;
        self.exchange.order_status(sid, id);
        Ok(())
    }

    fn positions_request(&mut self, f: usize, msg: &Msg<'_>) -> Result<(), Refusal> {
        let req_id = need(msg, 710)?.to_string();
        self.firms[f].orders.pos_reqs.push_back(req_id);
        let sid = self.firms[f].sid;
        self.exchange.positions(sid);
        Ok(())
    }

    fn market_data_request(&mut self, f: usize, msg: &Msg<'_>) -> Result<(), Refusal> {
        let req_id = need(msg, 262)?.to_string();
        let subscribe = match need(msg, 263)? {
            "1" => true,
            "2" => false,
            _ => return Err(bad(263, "SubscriptionRequestType must be 1 or 2")),
        };
        let symbols: Vec<String> = msg
            .all(55)
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        if symbols.is_empty() {
            return Err(need(msg, 55).err().unwrap_or_else(|| bad(55, "missing")));
        }
        let sid = self.firms[f].sid;
        for s in symbols {
            let Some(i) = self.symbol_index(&s) else {
                let mut b = Body::new("Y");
                b.str(262, &req_id)
                    .str(281, "0")
                    .str(58, &format!("unknown symbol {s}"));
                self.send(f, b, true);
                continue;
            };
            if subscribe {
                self.exchange.subscribe(sid, i);
                self.firms[f].orders.md_reqs.insert(i, req_id.clone());
            } else {
                self.exchange.unsubscribe(sid, i);
                self.firms[f].orders.md_reqs.remove(&i);
            }
        }
        Ok(())
    }

    fn cancel_all_after(&mut self, f: usize, msg: &Msg<'_>) -> Result<(), Refusal> {
        let timeout = msg
            .uint(crate::fix::TAG_DEADMAN_TIMEOUT_MS)
            .ok_or_else(|| {
                bad(
                    crate::fix::TAG_DEADMAN_TIMEOUT_MS,
                    "TimeoutMs missing or not a number",
                )
            })?;
        let state = if timeout == 0 {
            self.firms[f].deadman = None;
            0
        } else {
            let at = Instant::now() + Duration::from_millis(timeout);
            self.firms[f].deadman = Some((timeout, at));
            1
        };
        let mut b = Body::new("U2");
        b.uint(crate::fix::TAG_DEADMAN_TIMEOUT_MS, timeout)
            .uint(crate::fix::TAG_DEADMAN_STATE, state);
        self.send(f, b, true);
        Ok(())
    }

    fn control(&mut self, f: usize, msg: &Msg<'_>) -> Result<(), Refusal> {
        if self.firms[f].comp_id != self.cfg.control_comp_id {
            let body = messages::business_reject(
                msg.seq().unwrap_or(0),
                b"U9",
                6,
                "not authorized: venue control is for the control CompID",
            );
            self.send(f, body, false);
            return Ok(());
        }
        let knob = need(msg, TAG_CONTROL_KNOB)?.to_string();
        let value = need(msg, TAG_CONTROL_VALUE)?.to_string();
        let num = || {
            value
                .parse::<u64>()
                .map_err(|_| bad(TAG_CONTROL_VALUE, "not a number"))
        };
        let h = self.handle.clone();
        match knob.as_str() {
            "latency_us" => h.set_event_latency(Duration::from_micros(num()?)),
            "reject_ppm" => h.set_reject_ppm(num()? as u32),
            "drop_cancel_ack_ppm" => h.set_drop_cancel_ack_ppm(num()? as u32),
            "ignore_cancels" => h.set_ignore_cancels(num()? != 0),
            "mass_cancel" => h.set_mass_cancel(num()? != 0),
            "disconnect_after" => self.disconnect_after = Some(num()?),
            "withdraw_liquidity" => {
                let on = num()? != 0;
                self.withdraw_liquidity(on, "venue control");
            }
            "drop_sessions" => {
                let keep = self.firms[f].conn;
                for slot in 0..self.conns.len() {
                    if Some(slot) != keep && self.conns[slot].is_some() {
                        self.close(slot, "fault injection: drop_sessions");
                    }
                }
            }
            "inject" => {
                let parts: Vec<&str> = value.split(',').collect();
                let parsed = match parts.as_slice() {
                    [sym, side, px, qty] => (
                        self.symbol_index(sym),
                        match *side {
                            "buy" => Some(Side::Buy),
                            "sell" => Some(Side::Sell),
                            _ => None,
                        },
                        parse_fixed(px.as_bytes()),
                        parse_fixed(qty.as_bytes()),
                    ),
                    _ => (None, None, None, None),
                };
                let (Some(i), Some(side), Some(px), Some(qty)) = parsed else {
                    return Err(bad(
                        TAG_CONTROL_VALUE,
                        "inject wants SYMBOL,buy|sell,PRICE,QTY",
                    ));
                };
                h.inject(i, side, Price(px), Qty(qty));
            }
            _ => return Err(bad(TAG_CONTROL_KNOB, "unknown knob")),
        }
        let comp = self.firms[f].comp_id.clone();
        self.event(&comp, "control", None, Some(format!("{knob}={value}")));
        let mut b = messages::venue_control(&knob, &value);
        b.str(58, "applied");
        self.send(f, b, true);
        Ok(())
    }
}
