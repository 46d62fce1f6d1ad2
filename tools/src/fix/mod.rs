//! The FIX 4.4 subset spoken between the gateway ([`client::FixVenue`]) and
//! the simulated venues of `ks-venue` ([`crate::venue_server`]).
//!
//! # Why our own codec
//! The registry offers FIX crates (fefix/ferrumfix, its fork rustyfix,
//! fixer, hotfix, ironfix, fix-codec-rs); we looked at each. The engines
//! (fixer, hotfix, ironfix) are tokio applications with their own threads,
//! stores and TLS stacks: the gateway thread must own its sockets and never
//! block or hand off, and the library stays free of async runtimes. The
//! codecs (fefix 0.7, last released years ago; rustyfix, "wildly unstable"
//! by its own README; fix-codec-rs, 0.x with little use) either drag in
//! the same runtime features or leave out the part we care most about:
//! what happens to a stream that is *not* FIX (garbage, a lying
//! BodyLength, a half-sent frame, a 1 GB "message"). The subset we need is
//! some twenty message types; [`codec`] frames, validates (BodyLength and
//! CheckSum are always checked) and encodes them in ~300 lines that
//! allocate nothing per message once warm. Our reading of the protocol is
//! checked by someone else's: a process test drives `ks-venue` with
//! QuickFIX (the reference C++ engine, through its Python binding), whose
//! FIX 4.4 data dictionary validates every message the venue sends.
//!
//! # Messages (35=)
//! | dir | type | name | tags used |
//! |---|---|---|---|
//! | both | A | Logon | 98=0, 108 HeartBtInt, 141 ResetSeqNumFlag, 8013 CancelOrdersOnDisconnect (Y/N) |
//! | both | 5 | Logout | 58 Text (the reason) |
//! | both | 0 | Heartbeat | 112 TestReqID when answering |
//! | both | 1 | TestRequest | 112 |
//! | both | 2 | ResendRequest | 7 BeginSeqNo, 16 EndSeqNo (0 = to the end) |
//! | both | 3 | Reject (session) | 45 RefSeqNum, 371 RefTagID, 372 RefMsgType, 373 reason, 58 |
//! | both | 4 | SequenceReset | 123 GapFillFlag, 36 NewSeqNo |
//! | in | D | NewOrderSingle | 11 ClOrdID, 1 Account, 55 Symbol, 54 Side, 60, 38 OrderQty, 40=2 limit, 44 Price, 59=0 |
//! | in | F | OrderCancelRequest | 41 OrigClOrdID, 11, 54, 55, 60, 38 |
//! | in | q | OrderMassCancelRequest | 11, 530 (7 all, 1 by security), 55, 60 |
//! | in | H | OrderStatusRequest | 11, 54, 55, 790 OrdStatusReqID |
//! | in | AN | RequestForPositions | 710 PosReqID, 724=0, 1, 581=1, 715, 60 |
//! | in | V | MarketDataRequest | 262, 263 (1 subscribe, 2 unsubscribe), 264=1, 267/269 (0 bid, 1 offer), 146/55 |
//! | in | U1 | CancelAllAfter (dead-man timer, ours) | 7001 TimeoutMs (0 disarms) |
//! | in | U9 | VenueControl (fault knobs, ours) | 7100 knob, 7101 value |
//! | out | 8 | ExecutionReport | 37, 11, 41, 17, 150, 39, 1, 55, 54, 38, 44, 40, 151, 14, 6, 32, 31, 103, 58, 60, 790 |
//! | out | 9 | OrderCancelReject | 37, 11, 41, 39, 434=1, 102 (0 too late, 1 unknown order), 58 |
//! | out | r | OrderMassCancelReport | 11, 37, 530, 531 (0 rejected), 532, 533 TotalAffectedOrders, 58 |
//! | out | AO | RequestForPositionsAck | 721, 710, 727 TotalNumPosReports, 728, 729, 1, 581 |
//! | out | AP | PositionReport | 721, 710, 727, 728, 715, 1, 581, 55, 702/703/704/705, 730, 731, 734 |
//! | out | W | MarketDataSnapshotFullRefresh | 262, 55, 268/269/270 (top of book) |
//! | out | U2 | CancelAllAfterAck (ours) | 7001, 7002 (1 armed, 0 disarmed, 2 expired), 7003 orders cancelled |
//! | out | j | BusinessMessageReject | 45, 372, 380, 58 |
//!
//! Prices and quantities are decimals with up to 8 places, exactly the
//! library's fixed point ([`parse_fixed`], [`format_fixed`]).

pub mod client;
pub mod codec;
pub mod encode;
pub mod messages;
pub mod session;

/// `CancelOrdersOnDisconnect` in Logon (as Coinbase's FIX gateway names it).
pub const TAG_CANCEL_ON_DISCONNECT: u32 = 8013;
/// `DesignatedBackupTakeover` (ours): `Y` in a Logon takes over the
/// session of the same `SenderCompID` and adopts its resting orders; `Y`
/// in a client's Logout holds them for the backup (`ks-venue`'s
/// `--takeover-grace-ms`).
pub const TAG_BACKUP_TAKEOVER: u32 = 8014;
/// `TimeoutMs` of our dead-man message `U1`.
pub const TAG_DEADMAN_TIMEOUT_MS: u32 = 7001;
/// State in `U2`: 0 disarmed, 1 armed, 2 expired (orders cancelled).
pub const TAG_DEADMAN_STATE: u32 = 7002;
/// Orders the expiry cancelled, in `U2`.
pub const TAG_DEADMAN_CANCELLED: u32 = 7003;
/// Knob name of `U9` VenueControl.
pub const TAG_CONTROL_KNOB: u32 = 7100;
/// Knob value of `U9` VenueControl.
pub const TAG_CONTROL_VALUE: u32 = 7101;

/// Decimal text of a fixed-point value with 8 implied places (`1.5`, `100`).
pub fn format_fixed(v: i64) -> String {
    killswitch::order::Qty(v).to_string()
}

/// Parses a FIX decimal (optional `-`, digits, optional `.` and at most 8
/// decimals) into fixed point with 8 implied places; `None` when it is not
/// such a number or does not fit.
pub fn parse_fixed(s: &[u8]) -> Option<i64> {
    let (neg, s) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    let (int, frac) = match s.iter().position(|&b| b == b'.') {
        Some(p) => (&s[..p], &s[p + 1..]),
        None => (s, &s[..0]),
    };
    if int.is_empty() && frac.is_empty() || frac.len() > 8 {
        return None;
    }
    let all_digits = |d: &[u8]| d.iter().all(u8::is_ascii_digit);
    if !all_digits(int) || !all_digits(frac) || int.len() > 11 {
        return None;
    }
    let mut v: i64 = 0;
    for &d in int {
        v = v.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
    }
    for i in 0..8 {
        let d = frac.get(i).map_or(0, |&d| i64::from(d - b'0'));
        v = v.checked_mul(10)?.checked_add(d)?;
    }
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_exact_both_ways() {
        for (text, v) in [
            ("100", 100_0000_0000),
            ("0.01", 100_0000),
            ("-1.5", -1_5000_0000),
            ("65000.12345678", 6_500_012_345_678),
        ] {
            assert_eq!(parse_fixed(text.as_bytes()), Some(v), "{text}");
            assert_eq!(format_fixed(v), text);
        }
        assert_eq!(parse_fixed(b"1."), Some(100_000_000));
        assert_eq!(parse_fixed(b".5"), Some(50_000_000));
        for bad in [
            "",
            ".",
            "1.123456789",
            "1e5",
            "abc",
            "--1",
            "99999999999999",
        ] {
            assert_eq!(parse_fixed(bad.as_bytes()), None, "{bad}");
        }
    }
}
