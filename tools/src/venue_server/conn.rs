//! Connections: reading and framing, the Logon, the session-level messages
//! (heartbeats, test requests, resends, sequence resets, logout), timers,
//! and what happens when a connection ends (cancel-on-disconnect).

use std::io::{self, Read};
use std::time::{Duration, Instant};

use super::{Conn, Firm, VenueServer};
use crate::fix::codec::{next_frame, parse_fields, Msg, MAX_BODY};
use crate::fix::messages;
use crate::fix::session::{SeqCheck, SessionState, TimerAction};
use crate::fix::{TAG_BACKUP_TAKEOVER, TAG_CANCEL_ON_DISCONNECT};

use super::orders::FirmOrders;

/// Bytes read from one connection per turn (fairness between sessions).
const READ_PER_TURN: usize = 256 * 1024;

/// Session-level reject reasons (373).
pub(super) const REJECT_REQUIRED_TAG_MISSING: u32 = 1;
pub(super) const REJECT_VALUE_INCORRECT: u32 = 5;
const REJECT_COMP_ID: u32 = 9;
pub(super) const REJECT_INVALID_MSG_TYPE: u32 = 11;

impl VenueServer {
    pub(super) fn read_conn(&mut self, slot: usize) {
        let mut chunk = std::mem::take(&mut self.chunk);
        chunk.resize(16 * 1024, 0);
        self.read_conn_into(slot, &mut chunk);
        self.chunk = chunk;
    }

    fn read_conn_into(&mut self, slot: usize, chunk: &mut [u8]) {
        let mut total = 0;
        loop {
            let Some(c) = self.conns[slot].as_mut() else {
                return;
            };
            match c.stream.read(chunk) {
                Ok(0) => {
                    self.frames(slot);
                    self.close(slot, "connection closed by peer");
                    return;
                }
                Ok(n) => {
                    c.rbuf.extend_from_slice(&chunk[..n]);
                    total += n;
                    // Frame as we go so a flood never grows the buffer past
                    // one message.
                    if c.rbuf.len() > MAX_BODY + 64 || total >= READ_PER_TURN {
                        self.frames(slot);
                        if total >= READ_PER_TURN {
                            return;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.close(slot, &format!("read failed: {e}"));
                    return;
                }
            }
        }
        self.frames(slot);
    }

    /// Handles every complete frame in the connection's buffer (consumed by
    /// offset, the buffer shifted once at the end).
    fn frames(&mut self, slot: usize) {
        let mut pos = 0;
        loop {
            let Some(c) = self.conns[slot].as_mut() else {
                return;
            };
            if c.closing.is_some() {
                c.rbuf.clear();
                return;
            }
            if pos == c.rbuf.len() {
                c.rbuf.clear();
                c.partial_since = None;
                return;
            }
            match next_frame(&c.rbuf[pos..]) {
                Ok(Some(n)) => {
                    self.frame.clear();
                    self.frame.extend_from_slice(&c.rbuf[pos..pos + n]);
                    pos += n;
                    c.partial_since = None;
                    let frame = std::mem::take(&mut self.frame);
                    self.on_frame(slot, &frame);
                    self.frame = frame;
                    self.queued(slot);
                }
                Ok(None) => {
                    c.rbuf.drain(..pos);
                    c.partial_since.get_or_insert_with(Instant::now);
                    return;
                }
                Err(e) => {
                    let session = self.session_name(slot);
                    self.event(&session, "garbled-frame", None, Some(e.to_string()));
                    self.logout_and_close(slot, &e.to_string());
                    return;
                }
            }
        }
    }

    /// Frames queued behind a sequence gap whose turn has come.
    fn queued(&mut self, slot: usize) {
        while let Some(f) = self.conns[slot].as_ref().and_then(|c| c.firm) {
            match self.firms[f].state.take_queued() {
                Some(frame) => self.on_frame(slot, &frame),
                None => return,
            }
        }
    }

    fn session_name(&self, slot: usize) -> String {
        self.conns[slot]
            .as_ref()
            .and_then(|c| c.firm)
            .map_or_else(String::new, |f| self.firms[f].comp_id.clone())
    }

    fn on_frame(&mut self, slot: usize, frame: &[u8]) {
        let mut fields = std::mem::take(&mut self.fields);
        let parsed = parse_fields(frame, &mut fields);
        let firm = self.conns[slot].as_ref().and_then(|c| c.firm);
        match (parsed, firm) {
            (Err(e), None) => self.logout_and_close(slot, &format!("unreadable Logon: {e}")),
            (Err(e), Some(f)) => {
                // Rejected by the number it seems to carry; if that is the
                // one expected, it counts as processed (as FIX has it for a
                // rejected message) and the session goes on.
                let seq = seq_guess(frame);
                if seq == self.firms[f].state.next_in {
                    self.firms[f].state.next_in += 1;
                }
                let body = messages::reject(seq, None, REJECT_VALUE_INCORRECT, &e.to_string());
                self.send(f, body, false);
            }
            (Ok(()), None) => {
                let msg = Msg {
                    frame,
                    fields: &fields,
                };
                self.logon(slot, &msg);
            }
            (Ok(()), Some(f)) => {
                let msg = Msg {
                    frame,
                    fields: &fields,
                };
                self.sequenced(slot, f, &msg);
            }
        }
        self.fields = fields;
    }

    /// A message on a logged-on session: identity, sequence, then dispatch.
    fn sequenced(&mut self, slot: usize, f: usize, msg: &Msg<'_>) {
        let comp = &self.firms[f].comp_id;
        if msg.str(49) != Some(comp.as_str()) || msg.str(56) != Some(self.cfg.name.as_str()) {
            let body = messages::reject(
                msg.seq().unwrap_or(0),
                Some(49),
                REJECT_COMP_ID,
                "CompID problem: SenderCompID/TargetCompID do not match the session",
            );
            self.send(f, body, false);
            self.logout_and_close(slot, "CompID problem");
            return;
        }
        let reset_mode = msg.msg_type() == b"4" && msg.get(123) != Some(b"Y");
        if reset_mode {
            let new_seq = msg.uint(36).unwrap_or(0);
            if new_seq == 0 {
                let body = messages::reject(
                    msg.seq().unwrap_or(0),
                    Some(36),
                    REJECT_REQUIRED_TAG_MISSING,
                    "NewSeqNo (36) missing",
                );
                self.send(f, body, false);
            } else {
                self.firms[f].state.sequence_reset(new_seq, false);
            }
            return;
        }
        match self.firms[f].state.check_seq(msg) {
            SeqCheck::InOrder => self.dispatch(slot, f, msg),
            SeqCheck::Gap { expected } => {
                let seq = msg.seq().unwrap_or(expected);
                if self.firms[f].state.queue_ahead(seq, msg.frame) {
                    self.send(f, messages::resend_request(expected, 0), false);
                }
            }
            SeqCheck::Duplicate => {}
            SeqCheck::TooLow { expected } => {
                let got = msg.seq().unwrap_or(0);
                self.logout_and_close(
                    slot,
                    &format!("MsgSeqNum too low, expecting {expected} but received {got}"),
                );
            }
            SeqCheck::Missing => self.logout_and_close(slot, "MsgSeqNum (34) missing"),
        }
    }

    fn dispatch(&mut self, slot: usize, f: usize, msg: &Msg<'_>) {
        let msg_type = msg.msg_type();
        let admin = matches!(msg_type, b"0" | b"1" | b"2" | b"3" | b"4" | b"5" | b"A");
        self.log_in(f, msg);
        match msg_type {
            b"0" | b"3" => {}
            b"1" => self.send(f, messages::heartbeat(msg.get(112)), false),
            b"2" => {
                let (begin, end) = (msg.uint(7).unwrap_or(1), msg.uint(16).unwrap_or(0));
                let mut out = std::mem::take(&mut self.discard);
                out.clear();
                self.firms[f].state.resend(begin, end, &mut out);
                if let Some(c) = self.conns[slot].as_mut() {
                    c.wbuf.extend_from_slice(&out);
                }
                self.discard = out;
                let comp = self.firms[f].comp_id.clone();
                self.event(&comp, "resend", None, Some(format!("{begin}..{end}")));
            }
            b"4" => {
                let new_seq = msg.uint(36).unwrap_or(0);
                self.firms[f].state.sequence_reset(new_seq, true);
            }
            b"5" => {
                // Everything the session's requests produced goes out before
                // the Logout: its cancels must not be lost behind it.
                let mut answers = std::mem::take(&mut self.answers);
                answers.clear();
                self.exchange.take_all(self.firms[f].sid, &mut answers);
                for a in answers.drain(..) {
                    self.answer(f, a);
                }
                self.answers = answers;
                let held = msg.get(TAG_BACKUP_TAKEOVER) == Some(b"Y") && self.hold_for_backup(f);
                let ack = if held {
                    "logout acknowledged; orders held for the designated backup"
                } else {
                    "logout acknowledged"
                };
                self.send(f, messages::logout(ack), false);
                if let Some(c) = self.conns[slot].as_mut() {
                    c.closing = Some("logout".into());
                    c.closing_since = Some(Instant::now());
                }
            }
            b"A" => {
                let body = messages::reject(
                    msg.seq().unwrap_or(0),
                    Some(35),
                    REJECT_VALUE_INCORRECT,
                    "already logged on",
                );
                self.send(f, body, false);
            }
            _ => {
                self.application(f, msg);
                if !admin {
                    self.count_app_message(slot);
                }
            }
        }
    }

    fn log_in(&mut self, f: usize, msg: &Msg<'_>) {
        if !self.audit.enabled() {
            return;
        }
        let entry = super::AuditEntry {
            mono_ns: killswitch::clock::mono_ns(),
            wall_ms: super::wall_ms(),
            venue: self.cfg.name.clone(),
            session: self.firms[f].comp_id.clone(),
            dir: "in".into(),
            msg_type: Some(String::from_utf8_lossy(msg.msg_type()).into_owned()),
            seq: msg.seq(),
            fix: Some(msg.display()),
            ..super::AuditEntry::default()
        };
        self.audit.write(&entry);
    }

    /// The fault knob `disconnect_after`: drop the first connection that
    /// reaches that many application messages (once).
    fn count_app_message(&mut self, slot: usize) {
        let control = self.conns[slot]
            .as_ref()
            .and_then(|c| c.firm)
            .is_some_and(|f| self.firms[f].comp_id == self.cfg.control_comp_id);
        let Some(c) = self.conns[slot].as_mut() else {
            return;
        };
        if control {
            return; // the control session steers the faults; it is not their target
        }
        c.app_messages += 1;
        if self.disconnect_after.is_some_and(|n| c.app_messages >= n) {
            self.disconnect_after = None;
            let session = self.session_name(slot);
            self.event(
                &session,
                "fault-disconnect",
                None,
                Some("disconnect_after reached".into()),
            );
            self.close(slot, "fault injection: disconnect_after");
        }
    }

    fn logon(&mut self, slot: usize, msg: &Msg<'_>) {
        if msg.msg_type() != b"A" {
            self.logout_and_close(slot, "first message must be a Logon (35=A)");
            return;
        }
        let Some(comp) = msg.str(49).filter(|c| !c.is_empty()) else {
            self.logout_and_close(slot, "Logon without SenderCompID (49)");
            return;
        };
        if msg.str(56) != Some(self.cfg.name.as_str()) {
            let reason = format!("TargetCompID (56) must be {}", self.cfg.name);
            self.logout_and_close(slot, &reason);
            return;
        }
        let heartbeat = match msg.uint(108) {
            Some(h) if (1..=300).contains(&h) => h,
            _ => {
                self.logout_and_close(slot, "HeartBtInt (108) must be 1..300 seconds");
                return;
            }
        };
        let comp = comp.to_string();
        let takeover = msg.get(TAG_BACKUP_TAKEOVER) == Some(b"Y");
        if takeover && !self.by_comp.contains_key(&comp) {
            self.logout_and_close(slot, &format!("no session {comp} to take over"));
            return;
        }
        let f = match self.by_comp.get(&comp) {
            Some(&f) => f,
            None => {
                let sid = self.exchange.open_session();
                self.firms.push(Firm {
                    comp_id: comp.clone(),
                    sid,
                    state: SessionState::new(
                        &self.cfg.name,
                        &comp,
                        Duration::from_secs(heartbeat),
                        true,
                    ),
                    conn: None,
                    cancel_on_disconnect: self.cfg.cancel_on_disconnect,
                    deadman: None,
                    orders: FirmOrders::default(),
                    takeover: None,
                });
                self.by_comp.insert(comp.clone(), self.firms.len() - 1);
                self.firms.len() - 1
            }
        };
        if takeover {
            if let Err(reason) = self.take_over(slot, f) {
                self.logout_and_close(slot, &reason);
                return;
            }
        } else if self.firms[f].conn.is_some() {
            self.logout_and_close(slot, &format!("session {comp} is already logged on"));
            return;
        }
        // A backup cannot know the numbers: a takeover starts them again.
        let reset = takeover || msg.get(141) == Some(b"Y");
        if reset {
            self.firms[f].state.reset();
        }
        self.firms[f].state.heartbeat = Duration::from_secs(heartbeat);
        self.firms[f].state.on_connect();
        let check = self.firms[f].state.check_seq(msg);
        let gap_from = match check {
            SeqCheck::InOrder => None,
            SeqCheck::Gap { expected } => {
                // Take the Logon's number; ask for what came before it.
                self.firms[f].state.next_in = msg.seq().unwrap_or(expected) + 1;
                Some((expected, msg.seq().unwrap_or(expected) - 1))
            }
            SeqCheck::TooLow { expected } => {
                let got = msg.seq().unwrap_or(0);
                self.logout_and_close(
                    slot,
                    &format!("MsgSeqNum too low, expecting {expected} but received {got}"),
                );
                return;
            }
            SeqCheck::Duplicate | SeqCheck::Missing => {
                self.logout_and_close(slot, "Logon MsgSeqNum (34) missing or a duplicate");
                return;
            }
        };
        let asked = msg.get(TAG_CANCEL_ON_DISCONNECT).is_none_or(|v| v == b"Y");
        self.firms[f].cancel_on_disconnect = asked && self.cfg.cancel_on_disconnect;
        self.firms[f].conn = Some(slot);
        if let Some(c) = self.conns[slot].as_mut() {
            c.firm = Some(f);
        }
        self.log_in(f, msg);
        let granted = self.firms[f].cancel_on_disconnect;
        let mut answer = messages::logon(heartbeat, reset, granted);
        if takeover {
            answer.str(TAG_BACKUP_TAKEOVER, "Y");
        }
        self.send(f, answer, false);
        if let Some((begin, end)) = gap_from {
            self.send(f, messages::resend_request(begin, end), false);
        }
        let peer = self.conns[slot]
            .as_ref()
            .map(|c| c.peer.to_string())
            .unwrap_or_default();
        self.event(
            &comp,
            "logon",
            None,
            Some(format!(
                "{peer}; cancel-on-disconnect {}; reset {reset}",
                if granted { "on" } else { "off" }
            )),
        );
    }

    /// Sends a Logout with `reason` and closes once it is written. Before a
    /// logon the Logout is stamped from a throwaway session.
    pub(super) fn logout_and_close(&mut self, slot: usize, reason: &str) {
        let firm = self.conns[slot].as_ref().and_then(|c| c.firm);
        match firm {
            Some(f) => self.send(f, messages::logout(reason), false),
            None => {
                let mut s =
                    SessionState::new(&self.cfg.name, "UNKNOWN", Duration::from_secs(30), false);
                if let Some(c) = self.conns[slot].as_mut() {
                    s.send(&messages::logout(reason), false, &mut c.wbuf);
                }
            }
        }
        if let Some(c) = self.conns[slot].as_mut() {
            c.closing = Some(reason.to_string());
            c.closing_since = Some(Instant::now());
        }
    }

    pub(super) fn conn_timers(&mut self, slot: usize, now: Instant) {
        let Some(c) = self.conns[slot].as_ref() else {
            return;
        };
        if c.closing.is_some() {
            // A peer that does not read our Logout is not waited for long.
            let since = c.closing_since.unwrap_or(c.opened);
            if now.duration_since(since) > self.cfg.logon_timeout && c.unwritten() > 0 {
                let reason = c.closing.clone().unwrap_or_default();
                self.close(slot, &reason);
            }
            return;
        }
        if let Some(since) = c.partial_since {
            if now.duration_since(since) >= self.cfg.frame_timeout {
                let reason = format!("incomplete message for {:?}", self.cfg.frame_timeout);
                let session = self.session_name(slot);
                self.event(&session, "slow-client", None, Some(reason.clone()));
                self.logout_and_close(slot, &reason);
                return;
            }
        }
        let Some(f) = c.firm else {
            if now.duration_since(c.opened) >= self.cfg.logon_timeout {
                let reason = format!("no Logon within {:?}", self.cfg.logon_timeout);
                self.event("", "logon-timeout", None, Some(c.peer.to_string()));
                self.logout_and_close(slot, &reason);
            }
            return;
        };
        match self.firms[f].state.timers(now) {
            TimerAction::Idle => {}
            TimerAction::Heartbeat => self.send(f, messages::heartbeat(None), false),
            TimerAction::TestRequest => self.send(f, messages::test_request("venue"), false),
            TimerAction::Dead => self.logout_and_close(slot, "no answer to TestRequest"),
        }
    }

    /// Ends a connection; a logged-on session loses it (cancel-on-disconnect).
    pub(super) fn close(&mut self, slot: usize, reason: &str) {
        let Some(conn) = self.conns[slot].take() else {
            return;
        };
        let Conn {
            stream,
            firm,
            mut wbuf,
            wpos,
            ..
        } = conn;
        // Last words (our Logout) go out if the socket takes them.
        if wpos < wbuf.len() {
            let mut s = &stream;
            let _ = io::Write::write(&mut s, &wbuf[wpos..]);
            wbuf.clear();
        }
        drop(stream);
        let Some(f) = firm else {
            self.event("", "disconnect", None, Some(reason.to_string()));
            return;
        };
        self.firms[f].conn = None;
        let comp = self.firms[f].comp_id.clone();
        let cancelled = (self.firms[f].cancel_on_disconnect && !self.held_for_backup(f))
            .then(|| self.cancel_resting(f, "cancel-on-disconnect"));
        self.event(&comp, "disconnect", None, Some(reason.to_string()));
        if let Some(n) = cancelled {
            self.event(&comp, "cancel-on-disconnect", Some(n), None);
        }
    }

    /// Cancels every order of session `f` resting at the venue, each
    /// reported with `cause` as its text (58); returns how many.
    pub(super) fn cancel_resting(&mut self, f: usize, cause: &'static str) -> u64 {
        let ids = self.exchange.cancel_all(self.firms[f].sid);
        self.firms[f].orders.mark_cause(&ids, cause);
        ids.len() as u64
    }

    pub(super) fn deadman_expired(&mut self, f: usize) {
        let Some((timeout, _)) = self.firms[f].deadman.take() else {
            return;
        };
        let cancelled = self.cancel_resting(f, "dead-man timer expired");
        let comp = self.firms[f].comp_id.clone();
        self.event(
            &comp,
            "dead-man-expired",
            Some(cancelled),
            Some(format!("timeout {timeout} ms")),
        );
        let mut b = crate::fix::codec::Body::new("U2");
        b.uint(crate::fix::TAG_DEADMAN_TIMEOUT_MS, timeout)
            .uint(crate::fix::TAG_DEADMAN_STATE, 2)
            .uint(crate::fix::TAG_DEADMAN_CANCELLED, cancelled);
        self.send(f, b, true);
    }
}

/// The `MsgSeqNum` an unreadable frame seems to carry (for the Reject).
fn seq_guess(frame: &[u8]) -> u64 {
    frame
        .split(|&b| b == crate::fix::codec::SOH)
        .find_map(|f| f.strip_prefix(b"34="))
        .and_then(crate::fix::codec::parse_uint)
        .unwrap_or(0)
}
