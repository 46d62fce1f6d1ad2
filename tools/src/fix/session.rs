//! The FIX session layer both ends share: sequence numbers, the
//! out-of-order queue, the resend store, heartbeats and test requests.
//!
//! Rules (FIX 4.4 session protocol, as far as this subset needs them):
//! * An inbound `MsgSeqNum` equal to the expected one is processed. A
//!   higher one means messages were lost: the frame is queued, one
//!   ResendRequest asks for the gap, and queued frames are processed in
//!   order as the gap fills. A lower one is a fatal error (Logout "MsgSeqNum
//!   too low") unless it is a `PossDupFlag=Y` resend, which is ignored.
//! * `SequenceReset` with `GapFillFlag=Y` moves the expected number forward;
//!   without it (reset mode) it sets it, whatever the message's own number.
//! * The venue keeps the application messages it sent and resends them with
//!   `PossDupFlag=Y` and `OrigSendingTime`; administrative messages in the
//!   range become one gap fill. The gateway keeps no store: it answers a
//!   ResendRequest with a gap fill, so an order or cancel is never replayed
//!   after a reconnect (the drain decides what to re-send, by id).
//! * Silence for 1.5 × HeartBtInt brings a TestRequest; silence for
//!   2.5 × HeartBtInt ends the connection.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::codec::{encode, utc_timestamp, Body, Header, Msg};

/// How an inbound message's sequence number fits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqCheck {
    /// The expected one: process it (the expected number moved on).
    InOrder,
    /// Higher than expected: queue it and ask for the gap.
    Gap {
        /// The number expected.
        expected: u64,
    },
    /// A resend of something already processed: ignore it.
    Duplicate,
    /// Lower than expected without `PossDupFlag`: fatal.
    TooLow {
        /// The number expected.
        expected: u64,
    },
    /// No `MsgSeqNum` (34): fatal.
    Missing,
}

/// What the heartbeat timers ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerAction {
    /// Nothing due.
    Idle,
    /// Nothing sent for a heartbeat interval: send a Heartbeat.
    Heartbeat,
    /// Nothing received for 1.5 intervals: send a TestRequest.
    TestRequest,
    /// Nothing received for 2.5 intervals: the peer is gone.
    Dead,
}

/// Most application messages kept for resends (oldest dropped first; a
/// resend of a dropped one becomes a gap fill).
pub const STORE_LIMIT: usize = 500_000;

/// Sequence numbers and timers of one session; see the module docs.
#[derive(Debug)]
pub struct SessionState {
    /// `SenderCompID` we stamp.
    pub sender: String,
    /// `TargetCompID` we stamp.
    pub target: String,
    /// Next `MsgSeqNum` we send.
    pub next_out: u64,
    /// Next `MsgSeqNum` we expect.
    pub next_in: u64,
    /// Heartbeat interval agreed at logon.
    pub heartbeat: Duration,
    keep_store: bool,
    /// Sent application messages: sequence number, SendingTime (Unix ms), body.
    store: VecDeque<(u64, u64, Body)>,
    pending_in: BTreeMap<u64, Vec<u8>>,
    resend_asked: bool,
    last_sent: Instant,
    /// Something was sent since the timers last looked.
    sent: bool,
    last_received: Instant,
    /// Something arrived since the timers last looked.
    received: bool,
    test_request_out: bool,
    clock_text: (u64, String),
}

impl SessionState {
    /// A session from sequence number 1; `keep_store` for the venue side.
    pub fn new(sender: &str, target: &str, heartbeat: Duration, keep_store: bool) -> SessionState {
        let now = Instant::now();
        SessionState {
            sender: sender.to_string(),
            target: target.to_string(),
            next_out: 1,
            next_in: 1,
            heartbeat,
            keep_store,
            store: VecDeque::new(),
            pending_in: BTreeMap::new(),
            resend_asked: false,
            last_sent: now,
            sent: false,
            last_received: now,
            received: false,
            test_request_out: false,
            clock_text: (u64::MAX, String::new()),
        }
    }

    /// Both directions back to 1, store and queue emptied (ResetSeqNumFlag).
    pub fn reset(&mut self) {
        self.next_out = 1;
        self.next_in = 1;
        self.store.clear();
        self.pending_in.clear();
        self.resend_asked = false;
    }

    /// A new connection: timers restart, the out-of-order queue is dropped
    /// (the peer resends what we still miss).
    pub fn on_connect(&mut self) {
        let now = Instant::now();
        self.last_sent = now;
        self.last_received = now;
        self.received = false;
        self.test_request_out = false;
        self.pending_in.clear();
        self.resend_asked = false;
    }

    /// Classifies an inbound message by its `MsgSeqNum` and notes that
    /// something arrived.
    pub fn check_seq(&mut self, msg: &Msg<'_>) -> SeqCheck {
        // The clock is read by `timers`, once per turn, not per message.
        self.received = true;
        let Some(seq) = msg.seq() else {
            return SeqCheck::Missing;
        };
        if seq == self.next_in {
            self.next_in += 1;
            SeqCheck::InOrder
        } else if seq > self.next_in {
            SeqCheck::Gap {
                expected: self.next_in,
            }
        } else if msg.poss_dup() {
            SeqCheck::Duplicate
        } else {
            SeqCheck::TooLow {
                expected: self.next_in,
            }
        }
    }

    /// Queues a frame that arrived ahead of a gap. Returns true when a
    /// ResendRequest for the gap should be sent now (once per gap).
    pub fn queue_ahead(&mut self, seq: u64, frame: &[u8]) -> bool {
        // A peer flooding us with future numbers must not grow this without
        // bound: past a limit the oldest queued frames are dropped (they will
        // be asked for again).
        if self.pending_in.len() >= 100_000 {
            self.pending_in.pop_last();
        }
        self.pending_in.insert(seq, frame.to_vec());
        !std::mem::replace(&mut self.resend_asked, true)
    }

    /// The queued frame whose turn it is, if any (stale ones are dropped).
    pub fn take_queued(&mut self) -> Option<Vec<u8>> {
        while let Some((&seq, _)) = self.pending_in.first_key_value() {
            if seq < self.next_in {
                self.pending_in.pop_first();
                continue;
            }
            if seq == self.next_in {
                return self.pending_in.pop_first().map(|(_, f)| f);
            }
            return None;
        }
        self.resend_asked = false;
        None
    }

    /// Applies a SequenceReset: gap fill moves forward only; reset mode sets.
    pub fn sequence_reset(&mut self, new_seq: u64, gap_fill: bool) {
        if !gap_fill || new_seq > self.next_in {
            self.next_in = new_seq;
        }
        if !gap_fill {
            self.pending_in.retain(|&s, _| s >= new_seq);
        }
    }

    /// Brings the cached `SendingTime` text to the current millisecond.
    fn tick_clock(&mut self) {
        let now = SystemTime::now();
        let ms = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        if self.clock_text.0 != ms {
            self.clock_text = (ms, utc_timestamp(now));
        }
    }

    /// Stamps `body` with the next sequence number and appends the frame to
    /// `out`. Application messages (`store`) are kept for resends on the
    /// venue side. Returns the sequence number used.
    pub fn send(&mut self, body: &Body, store: bool, out: &mut Vec<u8>) -> u64 {
        let seq = self.stamp(body, out);
        if store && self.keep_store {
            self.keep(seq, body.clone());
        }
        seq
    }

    /// [`SessionState::send`] for a body the caller is done with: it is
    /// moved into the resend store, not copied (a mass cancel's thousands
    /// of ExecutionReports on the venue side).
    pub fn send_owned(&mut self, body: Body, store: bool, out: &mut Vec<u8>) -> u64 {
        let seq = self.stamp(&body, out);
        if store && self.keep_store {
            self.keep(seq, body);
        }
        seq
    }

    fn stamp(&mut self, body: &Body, out: &mut Vec<u8>) -> u64 {
        let seq = self.next_out;
        self.next_out += 1;
        self.tick_clock();
        let header = Header {
            sender: &self.sender,
            target: &self.target,
            seq,
            sending_time: &self.clock_text.1,
            orig_sending_time: None,
        };
        encode(&header, body, out);
        self.sent = true;
        seq
    }

    fn keep(&mut self, seq: u64, body: Body) {
        if self.store.len() >= STORE_LIMIT {
            self.store.pop_front();
        }
        self.store.push_back((seq, self.clock_text.0, body));
    }

    /// Answers a ResendRequest for `begin..=end` (`end` 0: to the last sent):
    /// stored application messages again with `PossDupFlag=Y`, gaps as
    /// SequenceReset-GapFill. Without a store, one gap fill covers it all.
    pub fn resend(&mut self, begin: u64, end: u64, out: &mut Vec<u8>) {
        let last = self.next_out.saturating_sub(1);
        let end = if end == 0 || end > last { last } else { end };
        let begin = begin.max(1);
        if begin > end {
            return;
        }
        self.tick_clock();
        let now = self.clock_text.1.clone();
        let mut gap_start: Option<u64> = None;
        let mut seq = begin;
        let first = self.store.partition_point(|(s, _, _)| *s < begin);
        let mut stored = self.store.range(first..).peekable();
        let mut frames = Vec::new();
        while seq <= end {
            match stored.peek() {
                Some((s, orig, body)) if *s == seq => {
                    if let Some(g) = gap_start.take() {
                        frames.push((g, None, gap_fill(seq)));
                    }
                    let orig = UNIX_EPOCH + Duration::from_millis(*orig);
                    frames.push((seq, Some(utc_timestamp(orig)), body.clone()));
                    stored.next();
                }
                _ => {
                    gap_start.get_or_insert(seq);
                }
            }
            seq += 1;
        }
        if let Some(g) = gap_start {
            frames.push((g, None, gap_fill(end + 1)));
        }
        for (seq, orig, body) in frames {
            let header = Header {
                sender: &self.sender,
                target: &self.target,
                seq,
                sending_time: &now,
                orig_sending_time: Some(orig.as_deref().unwrap_or(&now)),
            };
            encode(&header, &body, out);
        }
        self.sent = true;
    }

    /// What the heartbeat timers want now.
    pub fn timers(&mut self, now: Instant) -> TimerAction {
        if std::mem::take(&mut self.received) {
            self.last_received = now;
            self.test_request_out = false;
        }
        if std::mem::take(&mut self.sent) {
            self.last_sent = now;
        }
        let hb = self.heartbeat;
        let silent = now.saturating_duration_since(self.last_received);
        if silent >= hb * 5 / 2 {
            return TimerAction::Dead;
        }
        if silent >= hb * 3 / 2 && !self.test_request_out {
            self.test_request_out = true;
            return TimerAction::TestRequest;
        }
        if now.saturating_duration_since(self.last_sent) >= hb {
            return TimerAction::Heartbeat;
        }
        TimerAction::Idle
    }
}

/// A SequenceReset-GapFill body moving the peer to `new_seq`.
pub fn gap_fill(new_seq: u64) -> Body {
    let mut b = Body::new("4");
    b.str(123, "Y").uint(36, new_seq);
    b
}

#[cfg(test)]
mod tests {
    use super::super::codec::{next_frame, parse_fields};
    use super::*;

    fn frames(buf: &[u8]) -> Vec<(String, Option<u64>, bool, Option<u64>)> {
        let mut out = Vec::new();
        let mut pos = 0;
        let mut fields = Vec::new();
        while let Ok(Some(n)) = next_frame(&buf[pos..]) {
            let f = &buf[pos..pos + n];
            parse_fields(f, &mut fields).unwrap();
            let m = Msg {
                frame: f,
                fields: &fields,
            };
            out.push((
                String::from_utf8_lossy(m.msg_type()).into_owned(),
                m.seq(),
                m.poss_dup(),
                m.uint(36),
            ));
            pos += n;
        }
        assert_eq!(pos, buf.len());
        out
    }

    #[test]
    fn resend_replays_stored_messages_and_gap_fills_the_rest() {
        let mut s = SessionState::new("V", "E", Duration::from_secs(30), true);
        let mut sink = Vec::new();
        s.send(&Body::new("0"), false, &mut sink); // 1 admin
        s.send(&Body::new("8"), true, &mut sink); // 2 app
        s.send(&Body::new("0"), false, &mut sink); // 3 admin
        s.send(&Body::new("0"), false, &mut sink); // 4 admin
        s.send(&Body::new("8"), true, &mut sink); // 5 app
        s.send(&Body::new("0"), false, &mut sink); // 6 admin
        let mut out = Vec::new();
        s.resend(1, 0, &mut out);
        assert_eq!(
            frames(&out),
            vec![
                ("4".into(), Some(1), true, Some(2)),
                ("8".into(), Some(2), true, None),
                ("4".into(), Some(3), true, Some(5)),
                ("8".into(), Some(5), true, None),
                ("4".into(), Some(6), true, Some(7)),
            ]
        );
        assert_eq!(s.next_out, 7, "a resend spends no new numbers");
    }

    #[test]
    fn gaps_queue_frames_until_filled() {
        let mut s = SessionState::new("E", "V", Duration::from_secs(30), false);
        let mut peer = SessionState::new("V", "E", Duration::from_secs(30), true);
        let mut wire = Vec::new();
        for _ in 0..3 {
            peer.send(&Body::new("8"), true, &mut wire);
        }
        let n1 = next_frame(&wire).unwrap().unwrap();
        let n2 = n1 + next_frame(&wire[n1..]).unwrap().unwrap();
        let (f1, f3) = (&wire[..n1], &wire[n2..]);
        let mut fields = Vec::new();
        let check = |s: &mut SessionState, f: &[u8], fields: &mut Vec<_>| {
            parse_fields(f, fields).unwrap();
            s.check_seq(&Msg { frame: f, fields })
        };
        assert_eq!(check(&mut s, f1, &mut fields), SeqCheck::InOrder);
        assert_eq!(
            check(&mut s, f3, &mut fields),
            SeqCheck::Gap { expected: 2 }
        );
        assert!(s.queue_ahead(3, f3), "first gap asks");
        assert!(!s.queue_ahead(3, f3), "asks once");
        assert_eq!(s.take_queued(), None, "2 still missing");
        s.sequence_reset(3, true);
        assert_eq!(s.take_queued().as_deref(), Some(f3));
        assert_eq!(check(&mut s, f3, &mut fields), SeqCheck::InOrder);
        assert_eq!(
            check(&mut s, f1, &mut fields),
            SeqCheck::TooLow { expected: 4 }
        );
    }
}
