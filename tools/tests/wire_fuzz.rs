//! Malformed input against `ks-venue`: named cases with the answer each
//! must get, then thousands of random and mutated messages (bounded in
//! time); the venue must neither crash nor disturb a well-behaved session
//! logged on throughout, and must still serve a new one afterwards.

mod support;

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use killswitch::order::Side;
use killswitch_tools::fix::codec::{checksum, Body};
use killswitch_tools::fix::messages::{self, NewOrderFields};
use support::venue::{events, RawSession, Received, VenueProc};

const VENUE: &str = "SIM-F";

/// xorshift64*: a seeded generator for the fuzz (printed on failure).
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A frame around arbitrary body bytes, with a correct BodyLength and
/// CheckSum (so the mutation reaches the parser, not only the framing).
fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = format!("8=FIX.4.4\x019={}\x01", body.len()).into_bytes();
    out.extend_from_slice(body);
    let sum = checksum(&out);
    out.extend_from_slice(format!("10={sum:03}\x01").as_bytes());
    out
}

fn header(comp: &str, seq: u64, msg_type: &str) -> Vec<u8> {
    format!("35={msg_type}\x0149={comp}\x0156={VENUE}\x0134={seq}\x0152=20261130-09:00:00.000\x01")
        .into_bytes()
}

fn order_body() -> Body {
    messages::new_order_single(&NewOrderFields {
        cl_ord_id: "1",
        account: "1",
        symbol: "I0",
        side: Side::Buy,
        qty: 100_000_000,
        price: 9_000_000_000,
        transact_time: "20261130-09:00:00.000",
    })
}

fn templates() -> Vec<Body> {
    vec![
        order_body(),
        messages::cancel_request(
            "1-C1",
            "1",
            Side::Buy,
            "I0",
            100_000_000,
            "20261130-09:00:00",
        ),
        messages::mass_cancel_request("M1", None, "20261130-09:00:00"),
        messages::mass_cancel_request("M2", Some("I0"), "20261130-09:00:00"),
        messages::order_status_request("1", Side::Buy, "I0", "S1"),
        messages::positions_request("P1", "20261130", "20261130-09:00:00"),
        messages::market_data_request("MD1", "I0", true),
        messages::cancel_all_after(60_000),
        messages::venue_control("inject", "I0,sell,90,1"),
        messages::heartbeat(None),
        messages::test_request("T"),
        messages::resend_request(1, 0),
        messages::logout("bye"),
        messages::logon(30, true, true),
    ]
}

/// One message of a template, well formed, with sequence number `seq`.
fn message(comp: &str, seq: u64, body: &Body) -> Vec<u8> {
    let mut b = header(comp, seq, body.msg_type);
    b.extend_from_slice(&body.fields);
    framed(&b)
}

fn mutate(d: &mut Dice, mut m: Vec<u8>) -> Vec<u8> {
    let junk: &[&[u8]] = &[
        b"",
        b"=",
        b"\x01",
        b"-1",
        b"99999999999999999999",
        b"0",
        b"abc",
        b"1.123456789",
        b"\xff\xfe",
        b"Y",
    ];
    for _ in 0..=d.below(3) {
        if m.is_empty() {
            break;
        }
        let at = d.below(m.len());
        match d.below(7) {
            0 => m[at] = d.next() as u8,
            1 => {
                m.remove(at);
            }
            2 => m.insert(at, d.next() as u8),
            3 => m.truncate(at),
            4 => {
                let end = (at + d.below(40)).min(m.len());
                let seg = m[at..end].to_vec();
                m.splice(at..at, seg);
            }
            5 => {
                let j = junk[d.below(junk.len())];
                let end = m[at..]
                    .iter()
                    .position(|&b| b == 1)
                    .map_or(m.len(), |p| at + p);
                m.splice(at..end, j.iter().copied());
            }
            _ => {
                m = (0..d.below(300))
                    .map(|_| [b'=', 1, b'8', b'9', b'1', d.next() as u8][d.below(6)])
                    .collect()
            }
        }
    }
    // Half the time re-frame the body, so the parser sees the mutation.
    if d.below(2) == 0 {
        if let Some(start) = m.windows(4).position(|w| w == b"\x0135=") {
            let end = m
                .windows(4)
                .rposition(|w| w == b"\x0110=")
                .unwrap_or(m.len());
            if start < end {
                return framed(&m[start + 1..end]);
            }
        }
    }
    m
}

fn expect_logout(mut s: RawSession, bytes: &[u8], reason_has: &str) {
    s.write_raw(bytes);
    let got = s.read_until(Duration::from_secs(15), |m| m.msg_type == "5");
    let logout = got.iter().find(|m| m.msg_type == "5");
    assert!(
        logout.is_some_and(|m| m.field(58).unwrap_or("").contains(reason_has)),
        "want a Logout naming \"{reason_has}\" for {:?}; got {got:?}",
        String::from_utf8_lossy(bytes)
    );
    let after = s.read_until(Duration::from_secs(15), |_| false);
    assert!(
        after.is_empty(),
        "the venue closes after its Logout: {after:?}"
    );
}

fn expect_reject(
    s: &mut RawSession,
    msg_type: &str,
    fields: &[u8],
    answer: &str,
    reason_tag: u32,
    reason: &str,
    tag: Option<&str>,
) {
    let seq = s.state.next_out;
    s.state.next_out += 1;
    let mut body = header(&s.state.sender.clone(), seq, msg_type);
    body.extend_from_slice(fields);
    let bytes = framed(&body);
    s.write_raw(&bytes);
    let got: Vec<Received> = s.read_until(Duration::from_secs(15), |m| {
        m.msg_type == answer || m.msg_type == "5"
    });
    let r = got.last().filter(|m| m.msg_type == answer);
    assert!(
        r.is_some_and(
            |m| m.field(reason_tag) == Some(reason) && (tag.is_none() || m.field(371) == tag)
        ),
        "want {answer} with {reason_tag}={reason} 371={tag:?} for {:?}; got {got:?}",
        String::from_utf8_lossy(&bytes)
    );
}

fn alive(s: &mut RawSession, id: &str) {
    s.send(&messages::test_request(id));
    let got = s.read_until(Duration::from_secs(15), |m| {
        m.msg_type == "0" && m.field(112) == Some(id)
    });
    assert!(
        got.last().is_some_and(|m| m.field(112) == Some(id)),
        "session answers a TestRequest: {got:?}"
    );
}

fn connect(addr: SocketAddr) -> RawSession {
    RawSession::connect(addr, "NOBODY", VENUE)
}

#[test]
fn malformed_input_gets_a_reject_or_a_logout_and_disturbs_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut venue = VenueProc::start(
        dir.path(),
        &[VENUE],
        &[
            "--instruments",
            "I0,I1",
            "--frame-timeout",
            "300ms",
            "--logon-timeout",
            "2s",
            "--max-connections",
            "256",
        ],
    );
    let addr = venue.addr(VENUE);

    // A well-behaved firm, logged on with a resting order, throughout.
    let mut good = RawSession::logon(addr, "GOOD-1", VENUE);
    good.send(&order_body());
    let acked = good.read_until(Duration::from_secs(15), |m| m.field(150) == Some("0"));
    assert!(
        acked.last().is_some_and(|m| m.field(150) == Some("0")),
        "{acked:?}"
    );

    // Framing errors: a Logout that names the problem, then a close.
    expect_logout(
        connect(addr),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "garbled frame",
    );
    let mut bad_sum = message("X1", 1, &messages::logon(30, true, true));
    let n = bad_sum.len();
    bad_sum[n - 2] = if bad_sum[n - 2] == b'0' { b'1' } else { b'0' };
    expect_logout(connect(addr), &bad_sum, "bad CheckSum");
    let mut long = message("X2", 1, &messages::logon(30, true, true));
    long.insert(20, b'x');
    expect_logout(connect(addr), &long, "wrong BodyLength");
    expect_logout(
        connect(addr),
        b"8=FIX.4.4\x019=99999\x01",
        "message too large",
    );
    expect_logout(connect(addr), b"8=FIX.4.4\x019=1x", "BodyLength");
    expect_logout(
        connect(addr),
        &message("X3", 1, &order_body()),
        "first message must be a Logon",
    );
    // A slow-loris client: half a message, then nothing.
    let half = message("X4", 1, &messages::logon(30, true, true));
    expect_logout(connect(addr), &half[..half.len() / 2], "incomplete message");
    // Silence after connecting: no Logon in time.
    expect_logout(connect(addr), b"", "no Logon within");

    // Well framed but wrong: a session Reject, and the session goes on.
    let mut s = RawSession::logon(addr, "X5", VENUE);
    expect_reject(&mut s, "ZZ", b"", "3", 373, "11", Some("35"));
    expect_reject(
        &mut s,
        "D",
        b"11=9\x0154=1\x0138=1\x0140=2\x0144=1\x01",
        "3",
        373,
        "1",
        Some("55"),
    );
    expect_reject(
        &mut s,
        "D",
        b"11=9\x0155=I0\x0154=7\x0138=1\x0140=2\x0144=1\x01",
        "3",
        373,
        "5",
        Some("54"),
    );
    expect_reject(
        &mut s,
        "D",
        b"11=9\x0155=I0\x0154=1\x0138=x\x0140=2\x0144=1\x01",
        "3",
        373,
        "5",
        Some("38"),
    );
    expect_reject(&mut s, "D", b"abc\x01", "3", 373, "5", None);
    expect_reject(
        &mut s,
        "U9",
        b"7100=latency_us\x017101=1\x01",
        "j",
        380,
        "6",
        None,
    );
    alive(&mut s, "after-rejects");
    drop(s);

    // Random and mutated messages, bounded in time.
    let seed = 0x5EED_F1C5_u64 ^ std::process::id() as u64;
    let mut d = Dice(seed | 1);
    let templates = templates();
    let budget = Instant::now() + Duration::from_secs(20);
    let (mut cases, mut messages_sent) = (0u64, 0u64);
    while cases < 5000 && Instant::now() < budget {
        let comp = format!("FUZZ-{}", d.below(50));
        let mut bytes = Vec::new();
        let mut seq = 1;
        if d.below(4) != 0 {
            bytes.extend(message(&comp, seq, &messages::logon(30, true, true)));
            seq += 1;
        }
        for _ in 0..1 + d.below(6) {
            let t = &templates[d.below(templates.len())];
            let m = message(&comp, seq, t);
            seq += 1;
            bytes.extend(if d.below(3) == 0 {
                m
            } else {
                mutate(&mut d, m)
            });
            messages_sent += 1;
        }
        if let Ok(mut c) = TcpStream::connect(addr) {
            let _ = c.write_all(&bytes);
            let _ = c.shutdown(Shutdown::Write);
        }
        cases += 1;
        if cases % 500 == 0 {
            assert!(
                venue.alive(),
                "ks-venue died after {cases} cases (seed {seed:#x}):\n{}",
                venue.stderr()
            );
            alive(&mut good, &format!("fuzz-{cases}"));
        }
    }
    eprintln!("wire fuzz: {cases} connections, {messages_sent} messages (seed {seed:#x})");
    assert!(
        cases >= 1000,
        "only {cases} fuzz cases ran in the time budget"
    );
    assert!(
        venue.alive(),
        "ks-venue died (seed {seed:#x}):\n{}",
        venue.stderr()
    );
    assert!(!venue.stderr().contains("panicked"), "{}", venue.stderr());

    // The firm logged on throughout noticed nothing.
    alive(&mut good, "after-fuzz");
    let named = |log: &[support::venue::AuditEntry], name: &str| {
        log.iter()
            .filter(|e| e.event.as_deref() == Some(name))
            .count() as u64
    };
    let log = venue.wait_audit(VENUE, "every fuzz connection accepted or refused", |log| {
        named(log, "connect") + named(log, "refused") >= cases
    });
    assert!(
        events(&log, "GOOD-1", "disconnect").is_empty(),
        "the good session was never dropped"
    );
    let garbled = named(&log, "garbled-frame");
    eprintln!("wire fuzz: the venue logged out {garbled} connections for garbled frames");
    assert!(
        garbled > 100,
        "the fuzz reaches the framing checks: {garbled}"
    );
    // And a new firm is served as usual.
    let mut fresh = RawSession::logon(addr, "GOOD-2", VENUE);
    fresh.send(&order_body());
    let got = fresh.read_until(Duration::from_secs(15), |m| m.field(150) == Some("0"));
    assert!(
        got.last().is_some_and(|m| m.field(150) == Some("0")),
        "{got:?}"
    );
}
