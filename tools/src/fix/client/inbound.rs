//! What the venue sends a [`FixVenue`]: session messages, and the answers
//! turned into [`VenueEvent`]s.

use std::sync::atomic::Ordering;

use killswitch::order::{OrderId, Price, Qty};
use killswitch::venue::{CancelRejectReason, MassCancelScope, RejectReason, VenueEvent};

use super::FixVenue;
use crate::fix::codec::{next_frame, parse_fields, Msg};
use crate::fix::messages;
use crate::fix::session::SeqCheck;
use crate::fix::{parse_fixed, TAG_DEADMAN_STATE};

/// Our order id in a ClOrdID: ours are `<id>` and `<id>-C<n>` (cancels).
fn order_id(cl_ord_id: &[u8]) -> Option<OrderId> {
    let digits = cl_ord_id.split(|&b| b == b'-').next()?;
    crate::fix::codec::parse_uint(digits).map(OrderId)
}

impl FixVenue {
    pub(super) fn handle_frames(&mut self) {
        // Frames are read where they lie: the buffer is taken out while its
        // frames are handled (no copy per message) and put back with the
        // handled ones dropped once at the end (draining each frame off the
        // front would move the rest of a 64 KiB read once per message).
        let mut rbuf = std::mem::take(&mut self.rbuf);
        let mut pos = 0;
        let mut live = true;
        loop {
            if self.link.stream().is_none() {
                live = false; // lost(): the buffer is gone with the connection
                break;
            }
            match next_frame(&rbuf[pos..]) {
                Ok(Some(n)) => {
                    let frame = &rbuf[pos..pos + n];
                    pos += n;
                    self.on_frame(frame);
                    while let Some(queued) = self.session.take_queued() {
                        self.on_frame(&queued);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // The stream cannot be framed any more: say why, reconnect.
                    let reason = e.to_string();
                    self.send_admin(&messages::logout(&reason));
                    self.lost(&format!("garbled frame from the venue: {reason}"));
                    live = false;
                    break;
                }
            }
        }
        if live {
            rbuf.drain(..pos);
        } else {
            rbuf.clear();
        }
        // Whatever `lost()` cleared meanwhile was the empty placeholder;
        // the buffer (and its capacity) comes back.
        self.rbuf = rbuf;
    }

    fn on_frame(&mut self, frame: &[u8]) {
        let mut fields = std::mem::take(&mut self.fields);
        if let Err(e) = parse_fields(frame, &mut fields) {
            self.last_error = format!("unreadable message from the venue: {e}");
            self.fields = fields;
            return;
        }
        let msg = Msg {
            frame,
            fields: &fields,
        };
        self.sequenced(&msg);
        self.fields = fields;
    }

    fn sequenced(&mut self, msg: &Msg<'_>) {
        let msg_type = msg.msg_type();
        if msg_type == b"4" && msg.get(123) != Some(b"Y") {
            self.session
                .sequence_reset(msg.uint(36).unwrap_or(1), false);
            return;
        }
        if msg_type == b"A" && !self.link.is_active() {
            return self.logon_answer(msg);
        }
        match self.session.check_seq(msg) {
            SeqCheck::InOrder => self.dispatch(msg),
            SeqCheck::Gap { expected } => {
                let seq = msg.seq().unwrap_or(expected);
                if self.session.queue_ahead(seq, msg.frame) {
                    self.send_admin(&messages::resend_request(expected, 0));
                }
            }
            SeqCheck::Duplicate => {}
            SeqCheck::TooLow { expected } => {
                let why = format!(
                    "MsgSeqNum too low from the venue: expected {expected}, got {}",
                    msg.seq().unwrap_or(0)
                );
                self.send_admin(&messages::logout(&why));
                self.reset_next_logon = true;
                self.lost(&why);
            }
            SeqCheck::Missing => self.lost("message from the venue without MsgSeqNum"),
        }
    }

    fn logon_answer(&mut self, msg: &Msg<'_>) {
        let seq = msg.seq().unwrap_or(0);
        let expected = self.session.next_in;
        if seq < expected {
            // The venue forgot us (restarted): start again from 1.
            self.reset_next_logon = true;
            self.lost(&format!(
                "venue Logon MsgSeqNum {seq} below {expected}: reset on next logon"
            ));
            return;
        }
        self.logged_on();
        if seq == expected {
            self.session.next_in = seq + 1;
        } else if self.session.queue_ahead(seq, msg.frame) {
            // Answers we missed while down: ask for everything from the
            // first one missing; the resend (the Logon itself becomes part
            // of a gap fill) is processed before anything newer.
            self.send_admin(&messages::resend_request(expected, 0));
        }
    }

    fn dispatch(&mut self, msg: &Msg<'_>) {
        match msg.msg_type() {
            b"0" | b"A" => {}
            b"1" => self.send_admin(&messages::heartbeat(msg.get(112))),
            b"2" => {
                // We keep no store: gap-fill the whole range (never replay).
                let (begin, end) = (msg.uint(7).unwrap_or(1), msg.uint(16).unwrap_or(0));
                if self.link.stream().is_some() {
                    self.session.resend(begin, end, &mut self.wbuf);
                    let _ = self.flush();
                }
            }
            b"3" | b"j" => self.rejected(msg),
            b"4" => self.session.sequence_reset(msg.uint(36).unwrap_or(0), true),
            b"5" => {
                let why = msg.str(58).unwrap_or("").to_string();
                if self.logout_requested {
                    self.lost("logged out");
                } else {
                    self.lost(&format!("venue logged us out: {why}"));
                }
            }
            b"8" => self.execution_report(msg),
            b"9" => {
                if let Some(id) = msg.get(41).and_then(order_id) {
                    let reason = match msg.get(102) {
                        Some(b"0") => CancelRejectReason::TooLate,
                        _ => CancelRejectReason::UnknownOrder,
                    };
                    // An earlier run's order: what happened to it while no
                    // engine listened is in its status (asked once); the
                    // answer, not this refusal, is what the drain hears.
                    if self.adopted.remove(&id)
                        && killswitch::venue::Venue::request_order_status(self, id).is_ok()
                    {
                        self.status_asked.insert(id);
                    } else {
                        self.events.push(VenueEvent::CancelRejected { id, reason });
                    }
                }
            }
            b"r" => self.mass_cancel_report(msg),
            b"AO" => {
                let n = msg.uint(727).unwrap_or(0);
                if n == 0 {
                    self.events.push(VenueEvent::PositionsEnd);
                    self.positions_left = None;
                } else {
                    self.positions_left = Some(n);
                }
            }
            b"AP" => self.position_report(msg),
            b"W" => self.top_of_book(msg),
            b"U2" if msg.uint(TAG_DEADMAN_STATE) == Some(2) => {
                self.monitor
                    .dead_man_expiries
                    .fetch_add(1, Ordering::Relaxed);
                // The venue disarmed it by running it out: arm it again now.
                if !self.logout_requested {
                    self.dead_man_refresh = Some(std::time::Instant::now());
                }
            }
            _ => {}
        }
    }

    /// A Reject naming one of our NewOrderSingles: the order was refused.
    fn rejected(&mut self, msg: &Msg<'_>) {
        self.monitor
            .rejects_received
            .fetch_add(1, Ordering::Relaxed);
        self.last_error = format!(
            "venue rejected message {}: {}",
            msg.uint(45).unwrap_or(0),
            msg.str(58).unwrap_or("")
        );
        let Some(ref_seq) = msg.uint(45) else {
            return;
        };
        if let Some(pos) = self.sent_orders.iter().position(|(s, _)| *s == ref_seq) {
            if let Some((_, id)) = self.sent_orders.remove(pos) {
                self.orders.remove(&id);
                self.events.push(VenueEvent::Rejected {
                    id,
                    reason: RejectReason::InvalidOrder,
                });
            }
        }
    }

    fn execution_report(&mut self, msg: &Msg<'_>) {
        let Some(id) = msg.get(41).or(msg.get(11)).and_then(order_id) else {
            return;
        };
        let fixed = |tag| msg.get(tag).and_then(parse_fixed);
        let leaves = Qty(fixed(151).unwrap_or(0));
        match msg.get(150) {
            Some(b"0") => self.events.push(VenueEvent::Acked { id }),
            Some(b"F") => {
                let qty = fixed(32).unwrap_or(0);
                if let Some(m) = self.orders.get_mut(&id) {
                    m.delivered += qty;
                }
                self.events.push(VenueEvent::Fill {
                    id,
                    qty: Qty(qty),
                    price: Price(fixed(31).unwrap_or(0)),
                    leaves,
                });
                if leaves.0 == 0 {
                    self.orders.remove(&id);
                }
            }
            Some(b"4") => {
                self.orders.remove(&id);
                self.events.push(VenueEvent::Canceled { id });
            }
            Some(b"8") => {
                self.orders.remove(&id);
                let reason = match msg.get(103) {
                    Some(b"1") => RejectReason::UnknownInstrument,
                    Some(b"6") => RejectReason::DuplicateId,
                    Some(b"3") => RejectReason::VenueRisk,
                    _ => RejectReason::InvalidOrder,
                };
                self.events.push(VenueEvent::Rejected { id, reason });
            }
            Some(b"I") => self.status_report(id, msg),
            _ => {}
        }
    }

    /// An order-status answer: the order's state now, plus a fill for any
    /// quantity the venue reports filled that no event has delivered yet
    /// (priced at the order's average price: the individual executions are
    /// not in a status answer).
    fn status_report(&mut self, id: OrderId, msg: &Msg<'_>) {
        if !matches!(msg.get(39), Some(b"8")) {
            self.status_asked.remove(&id);
        }
        let fixed = |tag| msg.get(tag).and_then(parse_fixed);
        let cum = fixed(14).unwrap_or(0);
        let leaves = fixed(151).unwrap_or(0);
        if let Some(m) = self.orders.get_mut(&id) {
            if cum > m.delivered {
                let qty = cum - m.delivered;
                m.delivered = cum;
                self.events.push(VenueEvent::Fill {
                    id,
                    qty: Qty(qty),
                    price: Price(fixed(6).unwrap_or(0)),
                    leaves: Qty(leaves),
                });
            }
        }
        match msg.get(39) {
            Some(b"0" | b"1") => self.events.push(VenueEvent::Acked { id }),
            Some(b"2") => {
                self.orders.remove(&id);
            }
            Some(b"4") => {
                self.orders.remove(&id);
                self.events.push(VenueEvent::Canceled { id });
            }
            // An earlier run's order the venue never received (it was
            // registered, then the engine died before the bytes left): it
            // never worked, and no connection that could still carry it is
            // left.
            Some(b"8") if msg.get(103) == Some(b"5") && self.status_asked.remove(&id) => {
                self.orders.remove(&id);
                self.events.push(VenueEvent::Rejected {
                    id,
                    reason: RejectReason::NotSent,
                });
            }
            Some(b"8") if msg.get(103) == Some(b"5") => {
                self.events.push(VenueEvent::CancelRejected {
                    id,
                    reason: CancelRejectReason::UnknownOrder,
                });
            }
            Some(b"8") => {
                self.orders.remove(&id);
                self.events.push(VenueEvent::Rejected {
                    id,
                    reason: RejectReason::VenueRisk,
                });
            }
            _ => {}
        }
    }

    fn mass_cancel_report(&mut self, msg: &Msg<'_>) {
        let req = msg.str(11).unwrap_or("");
        let scope = self
            .pending_mass
            .remove(req)
            .unwrap_or(MassCancelScope::All);
        if msg.get(531) == Some(b"0") {
            // Not offered after all: cancel one by one, and from now on.
            self.mass_cancel = false;
            self.last_error = format!("venue refused mass cancel: {}", msg.str(58).unwrap_or(""));
            self.cancel_known(scope);
        }
        if self.logout_after.as_ref().is_some_and(|(r, _)| r == req) {
            let _ = self.finish_logout();
        }
    }

    fn position_report(&mut self, msg: &Msg<'_>) {
        let fixed = |tag| msg.get(tag).and_then(parse_fixed).unwrap_or(0);
        let instrument = msg.str(55).and_then(|s| self.instrument_of.get(s).copied());
        let account = msg.uint(1).unwrap_or(0) as u16;
        if let Some(instrument) = instrument {
            self.events.push(VenueEvent::Position {
                instrument,
                account,
                qty: Qty(fixed(704) - fixed(705)),
            });
        }
        if let Some(left) = self.positions_left.as_mut() {
            *left = left.saturating_sub(1);
            if *left == 0 {
                self.positions_left = None;
                self.events.push(VenueEvent::PositionsEnd);
            }
        }
    }

    fn top_of_book(&mut self, msg: &Msg<'_>) {
        let Some(instrument) = msg.str(55).and_then(|s| self.instrument_of.get(s).copied()) else {
            return;
        };
        let (mut bid, mut ask) = (None, None);
        let mut kind = None;
        for f in msg.fields {
            match f.tag {
                269 => kind = msg.value(f).first().copied(),
                270 => {
                    let px = parse_fixed(msg.value(f)).map(Price);
                    match kind {
                        Some(b'0') => bid = px,
                        Some(b'1') => ask = px,
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        self.monitor
            .market_data_snapshots
            .fetch_add(1, Ordering::Relaxed);
        self.monitor
            .last_market_data_ms
            .store(crate::venue_server::wall_ms(), Ordering::Relaxed);
        self.events.push(VenueEvent::TopOfBook {
            instrument,
            bid,
            ask,
        });
    }
}
