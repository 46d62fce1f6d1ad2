//! What the venue sends back: the exchange's answers turned into
//! ExecutionReports (new, trade, canceled, rejected, order status),
//! OrderCancelRejects, position reports and market-data snapshots.

use killswitch::order::OrderId;
use killswitch::venue::sim::{Answer, OrderFate};
use killswitch::venue::{CancelRejectReason, RejectReason, VenueEvent};

use super::orders::OrderInfo;
use super::VenueServer;
use crate::fix::codec::Body;
use crate::fix::format_fixed;
use crate::fix::messages::{self, side_code};

impl VenueServer {
    /// Turns one answer of the exchange into a message on session `f`.
    pub(super) fn answer(&mut self, f: usize, a: Answer) {
        match a {
            Answer::Event(VenueEvent::Acked { id }) => self.report(f, id, "0", None),
            Answer::Event(VenueEvent::Fill { id, qty, price, .. }) => {
                if let Some(o) = self.firms[f].orders.info.get_mut(&id) {
                    o.cum += qty.0;
                    o.notional += i128::from(qty.0) * i128::from(price.0);
                }
                self.report(f, id, "F", Some((qty.0, price.0)));
            }
            Answer::Event(VenueEvent::Canceled { id }) => self.report(f, id, "4", None),
            Answer::Event(VenueEvent::Rejected { id, reason }) => {
                let code = match reason {
                    RejectReason::UnknownInstrument => 1,
                    RejectReason::DuplicateId => 6,
                    RejectReason::VenueRisk => 3,
                    _ => 99,
                };
                self.report(f, id, "8", Some((-i64::from(code), 0)));
            }
            Answer::Event(VenueEvent::CancelRejected { id, reason }) => {
                self.cancel_reject(f, id, reason)
            }
            Answer::Event(VenueEvent::Position {
                instrument,
                account,
                qty,
            }) => {
                self.firms[f]
                    .orders
                    .pos_lines
                    .push((instrument, account, qty.0));
            }
            Answer::Event(VenueEvent::PositionsEnd) => self.position_reports(f),
            Answer::Event(VenueEvent::TopOfBook {
                instrument,
                bid,
                ask,
            }) => {
                let Some(req) = self.firms[f].orders.md_reqs.get(&instrument).cloned() else {
                    return;
                };
                let mut b = Body::new("W");
                b.str(262, &req)
                    .str(55, &self.cfg.instruments[instrument as usize])
                    .uint(268, u64::from(bid.is_some()) + u64::from(ask.is_some()));
                for (kind, px) in [("0", bid), ("1", ask)] {
                    if let Some(px) = px {
                        b.str(269, kind).str(270, &format_fixed(px.0));
                    }
                }
                self.send(f, b, true);
            }
            Answer::Event(VenueEvent::Disconnected | VenueEvent::Reconnected) => {}
            Answer::Status { id, fate } => {
                let orders = &mut self.firms[f].orders;
                let pos = orders.status_reqs.iter().position(|(i, _)| *i == id);
                let req = pos
                    .and_then(|p| orders.status_reqs.remove(p))
                    .map(|(_, r)| r);
                self.status_report(f, id, fate, req.unwrap_or_default());
            }
        }
    }

    /// An ExecutionReport for order `id`. `exec_type` 0 new, F trade, 4
    /// canceled, 8 rejected (then `last` carries the negated reject code).
    fn report(&mut self, f: usize, id: OrderId, exec_type: &str, last: Option<(i64, i64)>) {
        // Taken out and put back (not cloned): a mass cancel reports
        // thousands of orders in one turn.
        let Some(o) = self.firms[f].orders.info.remove(&id) else {
            return;
        };
        let leaves = match exec_type {
            "4" | "8" => 0,
            _ => o.qty - o.cum,
        };
        let ord_status = match exec_type {
            "4" => "4",
            "8" => "8",
            _ if o.cum >= o.qty => "2",
            _ if o.cum > 0 => "1",
            _ => "0",
        };
        let mut b = self.order_fields(f, id, &o, exec_type, ord_status, leaves);
        match (exec_type, last) {
            ("F", Some((qty, px))) => {
                b.fixed(32, qty).fixed(31, px);
            }
            ("8", Some((code, _))) => {
                b.uint(103, code.unsigned_abs())
                    .str(58, "order rejected by the venue");
            }
            ("4", _) => {
                if let Some(cause) = o.cause {
                    b.str(58, cause);
                }
            }
            _ => {}
        }
        self.firms[f].orders.info.insert(id, o);
        self.send(f, b, true);
    }

    fn order_fields(
        &mut self,
        f: usize,
        id: OrderId,
        o: &OrderInfo,
        exec_type: &str,
        ord_status: &str,
        leaves: i64,
    ) -> Body {
        self.exec_seq += 1;
        let sid = self.firms[f].sid;
        let avg = if o.cum > 0 {
            (o.notional / i128::from(o.cum)) as i64
        } else {
            0
        };
        let mut b = Body::new("8");
        b.pair(37, u64::from(sid), id.0);
        match (&o.cancel_cl_ord_id, exec_type) {
            (Some(c), "4") => b.str(11, c).str(41, &o.cl_ord_id),
            _ => b.str(11, &o.cl_ord_id),
        };
        b.uint(17, self.exec_seq)
            .str(150, exec_type)
            .str(39, ord_status);
        if !o.account.is_empty() {
            b.str(1, &o.account);
        }
        b.str(55, &self.cfg.instruments[o.symbol as usize])
            .str(54, side_code(o.side))
            .fixed(38, o.qty)
            .str(40, "2")
            .fixed(44, o.price)
            .fixed(151, leaves.max(0))
            .fixed(14, o.cum)
            .fixed(6, avg)
            .str(60, self.clock.now());
        b
    }

    fn status_report(&mut self, f: usize, id: OrderId, fate: Option<OrderFate>, req_id: String) {
        let Some(o) = self.firms[f].orders.info.get(&id).cloned() else {
            return;
        };
        let (status, leaves) = match fate {
            Some(OrderFate::Working) if o.cum > 0 => ("1", o.qty - o.cum),
            Some(OrderFate::Working) | None => ("0", o.qty - o.cum),
            Some(OrderFate::Filled) => ("2", 0),
            Some(OrderFate::Canceled) => ("4", 0),
            Some(OrderFate::Rejected(_)) => ("8", 0),
        };
        let mut b = self.order_fields(f, id, &o, "I", status, leaves);
        if !req_id.is_empty() {
            b.str(790, &req_id);
        }
        self.send(f, b, true);
    }

    fn cancel_reject(&mut self, f: usize, id: OrderId, reason: CancelRejectReason) {
        let Some(o) = self.firms[f].orders.info.get(&id).cloned() else {
            return;
        };
        let status = match self.exchange.fate(self.firms[f].sid, id) {
            Some(OrderFate::Filled) => "2",
            Some(OrderFate::Canceled) => "4",
            Some(OrderFate::Working) if o.cum > 0 => "1",
            Some(OrderFate::Working) => "0",
            _ => "8",
        };
        let (code, text) = match reason {
            CancelRejectReason::TooLate => ("0", "too late to cancel"),
            CancelRejectReason::UnknownOrder => ("1", "unknown order"),
        };
        let sid = self.firms[f].sid;
        let mut b = Body::new("9");
        b.str(37, &format!("{sid}-{}", id.0))
            .str(11, o.cancel_cl_ord_id.as_deref().unwrap_or(&o.cl_ord_id))
            .str(41, &o.cl_ord_id)
            .str(39, status)
            .str(434, "1")
            .str(102, code)
            .str(58, text);
        self.send(f, b, true);
    }

    fn position_reports(&mut self, f: usize) {
        let orders = &mut self.firms[f].orders;
        let req = orders.pos_reqs.pop_front().unwrap_or_default();
        let lines = std::mem::take(&mut orders.pos_lines);
        let accounts = orders.accounts.clone();
        let date = self.clock.now().to_string();
        let date = messages::business_date(&date).to_string();
        let mut ack = Body::new("AO");
        ack.str(721, &format!("PR-{req}"))
            .str(710, &req)
            .uint(727, lines.len() as u64)
            .str(728, if lines.is_empty() { "2" } else { "0" })
            .str(729, "0")
            .str(1, "ALL")
            .str(581, "1");
        self.send(f, ack, true);
        for (n, (instrument, account, qty)) in lines.iter().enumerate() {
            let mut b = Body::new("AP");
            b.str(721, &format!("PR-{req}-{n}"))
                .str(710, &req)
                .uint(727, lines.len() as u64)
                .str(728, "0")
                .str(715, &date)
                .str(
                    1,
                    accounts.get(*account as usize).map_or("", String::as_str),
                )
                .str(581, "1")
                .str(55, &self.cfg.instruments[*instrument as usize])
                .str(702, "1")
                .str(703, "TQ")
                .str(704, &format_fixed((*qty).max(0)))
                .str(705, &format_fixed((-*qty).max(0)))
                .str(730, "0")
                .str(731, "1")
                .str(734, "0");
            self.send(f, b, true);
        }
    }
}
