//! FIX 4.4 tag=value framing, parsing and encoding.
//!
//! Written here rather than taken from a crate; see the module docs of
//! [`crate::fix`] for why. Every inbound frame is checked before any field
//! is read:
//! * it starts with `8=FIX.4.4<SOH>9=<length><SOH>`;
//! * `BodyLength` (9) is at most [`MAX_BODY`] and the trailer `10=nnn<SOH>`
//!   sits exactly where it says the body ends;
//! * `CheckSum` (10) equals the byte sum modulo 256 of everything before it.
//!
//! A frame that fails any of these leaves the stream unframeable, so the
//! caller answers with a Logout naming the [`FrameError`] and closes. A
//! well-framed message with a bad field is a [`ParseError`]: the caller
//! answers with a session-level Reject and the session goes on.

use std::fmt;

pub use super::encode::{encode, utc_timestamp, Body, Clock, Header};

/// Field separator.
pub const SOH: u8 = 0x01;
/// The only BeginString this codec speaks.
pub const BEGIN_STRING: &str = "FIX.4.4";
/// Largest body accepted, in bytes (an order-entry message is ~200).
pub const MAX_BODY: usize = 8 * 1024;
/// Most digits a `BodyLength` may have.
const MAX_LENGTH_DIGITS: usize = 5;
/// Bytes of the trailer `10=nnn<SOH>`.
const TRAILER: usize = 7;

pub(crate) const PREFIX: &[u8] = b"8=FIX.4.4\x019=";

/// Why a byte stream cannot be cut into FIX frames any more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The frame does not start with `8=FIX.4.4<SOH>9=`.
    BadBeginString,
    /// `BodyLength` (9) is missing, empty, not a number or too long.
    BadBodyLength,
    /// `BodyLength` (9) is larger than [`MAX_BODY`].
    TooLarge {
        /// The length announced.
        body_len: usize,
    },
    /// No `10=nnn<SOH>` where `BodyLength` says the body ends: the length
    /// is wrong, or bytes were lost or added.
    BodyLengthMismatch,
    /// `CheckSum` (10) is not the byte sum of the message.
    BadChecksum {
        /// Sum computed over the bytes received.
        computed: u8,
        /// Value in the trailer.
        received: u16,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::BadBeginString => {
                write!(f, "garbled frame: expected 8={BEGIN_STRING}<SOH>9=")
            }
            FrameError::BadBodyLength => {
                f.write_str("garbled frame: BodyLength (9) is not a number of at most 5 digits")
            }
            FrameError::TooLarge { body_len } => {
                write!(
                    f,
                    "message too large: BodyLength (9) {body_len} > {MAX_BODY}"
                )
            }
            FrameError::BodyLengthMismatch => f.write_str(
                "wrong BodyLength (9): no CheckSum (10) field where the body should end",
            ),
            FrameError::BadChecksum { computed, received } => {
                write!(
                    f,
                    "bad CheckSum (10): received {received:03}, computed {computed:03}"
                )
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Looks for one complete frame at the start of `buf`. `Ok(Some(n))`: the
/// first `n` bytes are a valid frame; `Ok(None)`: what is there is a valid
/// beginning, more bytes are needed.
pub fn next_frame(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let head = buf.len().min(PREFIX.len());
    if buf[..head] != PREFIX[..head] {
        return Err(FrameError::BadBeginString);
    }
    if buf.len() <= PREFIX.len() {
        return Ok(None);
    }
    let digits = &buf[PREFIX.len()..];
    let Some(end) = digits
        .iter()
        .take(MAX_LENGTH_DIGITS + 1)
        .position(|&b| b == SOH)
    else {
        if digits.len() > MAX_LENGTH_DIGITS || !digits.iter().all(u8::is_ascii_digit) {
            return Err(FrameError::BadBodyLength);
        }
        return Ok(None);
    };
    let body_len = parse_uint(&digits[..end]).ok_or(FrameError::BadBodyLength)? as usize;
    if body_len > MAX_BODY {
        return Err(FrameError::TooLarge { body_len });
    }
    let body_start = PREFIX.len() + end + 1;
    let trailer = body_start + body_len;
    let total = trailer + TRAILER;
    // The trailer must start where the body ends, as far as bytes are here.
    let expect = b"10=";
    let have = buf.len().saturating_sub(trailer).min(expect.len());
    if buf.len() > trailer && buf[trailer..trailer + have] != expect[..have] {
        return Err(FrameError::BodyLengthMismatch);
    }
    if body_len == 0 || (trailer > 0 && buf.len() > trailer && buf[trailer - 1] != SOH) {
        return Err(FrameError::BodyLengthMismatch);
    }
    if buf.len() < total {
        return Ok(None);
    }
    let sum_digits = &buf[trailer + 3..trailer + 6];
    if buf[total - 1] != SOH || !sum_digits.iter().all(u8::is_ascii_digit) {
        return Err(FrameError::BodyLengthMismatch);
    }
    let received = parse_uint(sum_digits).unwrap_or(u64::MAX) as u16;
    let computed = checksum(&buf[..trailer]);
    if u16::from(computed) != received {
        return Err(FrameError::BadChecksum { computed, received });
    }
    Ok(Some(total))
}

/// Byte sum modulo 256.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b))
}

/// A decimal unsigned integer of ASCII digits (no sign, no spaces);
/// `None` when empty, not digits, or over 18 digits.
pub fn parse_uint(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 18 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |a, &d| a * 10 + u64::from(d - b'0')))
}

/// Why a well-framed message cannot be read (answered with a Reject).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// A field is not `tag=value` with a numeric tag and a non-empty value.
    BadField {
        /// Byte offset of the field in the frame.
        offset: usize,
    },
    /// `MsgType` (35) is not the third field.
    NoMsgType,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::BadField { offset } => {
                write!(
                    f,
                    "field at byte {offset} is not tag=value with a numeric tag and a value"
                )
            }
            ParseError::NoMsgType => f.write_str("MsgType (35) must be the third field"),
        }
    }
}

/// One field: tag and the value's byte range in the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// Tag.
    pub tag: u32,
    start: u32,
    end: u32,
}

/// Splits a frame (as returned by [`next_frame`]) into `fields`, which is
/// cleared first and reused between messages (no allocation once warm).
pub fn parse_fields(frame: &[u8], fields: &mut Vec<Field>) -> Result<(), ParseError> {
    fields.clear();
    let n = frame.len();
    let mut pos = 0;
    // One pass: the tag's digits are read as they are scanned for `=`,
    // then the value is scanned for SOH (every ExecutionReport of a mass
    // cancel comes through here; the earlier two scans per field and a
    // second pass over the tag showed in profiles).
    while pos < n {
        let bad = ParseError::BadField { offset: pos };
        let mut i = pos;
        let mut tag = 0u64;
        loop {
            let Some(&b) = frame.get(i) else {
                return Err(bad); // no `=` before the end
            };
            if b == b'=' {
                break;
            }
            // A non-digit (SOH included: no `=` in the field) or a tag
            // longer than any number we read.
            if !b.is_ascii_digit() || i - pos >= 18 {
                return Err(bad);
            }
            tag = tag * 10 + u64::from(b - b'0');
            i += 1;
        }
        if i == pos || tag == 0 || tag > u64::from(u32::MAX) {
            return Err(bad);
        }
        let start = i + 1;
        let end = frame[start..]
            .iter()
            .position(|&b| b == SOH)
            .map_or(n, |e| start + e);
        if end == start {
            return Err(bad); // empty value
        }
        fields.push(Field {
            tag: tag as u32,
            start: start as u32,
            end: end as u32,
        });
        pos = end + 1;
    }
    if fields.get(2).map(|f| f.tag) != Some(35) {
        return Err(ParseError::NoMsgType);
    }
    Ok(())
}

/// A parsed message: the frame and its fields.
#[derive(Clone, Copy, Debug)]
pub struct Msg<'a> {
    /// The whole frame, trailer included.
    pub frame: &'a [u8],
    /// Its fields, in order.
    pub fields: &'a [Field],
}

impl<'a> Msg<'a> {
    /// Value of the first occurrence of `tag`.
    pub fn get(&self, tag: u32) -> Option<&'a [u8]> {
        self.fields
            .iter()
            .find(|f| f.tag == tag)
            .map(|f| &self.frame[f.start as usize..f.end as usize])
    }

    /// Value of one of this message's fields.
    pub fn value(&self, f: &Field) -> &'a [u8] {
        &self.frame[f.start as usize..f.end as usize]
    }

    /// Value of `tag` as text (`None` if absent or not UTF-8).
    pub fn str(&self, tag: u32) -> Option<&'a str> {
        self.get(tag).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Value of `tag` as an unsigned integer.
    pub fn uint(&self, tag: u32) -> Option<u64> {
        self.get(tag).and_then(parse_uint)
    }

    /// `MsgType` (35).
    pub fn msg_type(&self) -> &'a [u8] {
        self.get(35).unwrap_or(b"")
    }

    /// `MsgSeqNum` (34).
    pub fn seq(&self) -> Option<u64> {
        self.uint(34)
    }

    /// `PossDupFlag` (43) is `Y`.
    pub fn poss_dup(&self) -> bool {
        self.get(43) == Some(b"Y")
    }

    /// Every occurrence of `tag`, in order (repeating-group members).
    pub fn all(&self, tag: u32) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.fields
            .iter()
            .filter(move |f| f.tag == tag)
            .map(|f| &self.frame[f.start as usize..f.end as usize])
    }

    /// The frame for a log line, SOH shown as `|`.
    pub fn display(&self) -> String {
        printable(self.frame)
    }
}

/// A frame for a log line, SOH shown as `|`, other control bytes as `?`.
pub fn printable(frame: &[u8]) -> String {
    frame
        .iter()
        .map(|&b| match b {
            SOH => '|',
            0x20..=0x7e => b as char,
            _ => '?',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_of(msg_type: &'static str, fields: &[(u32, &str)]) -> Vec<u8> {
        let mut body = Body::new(msg_type);
        for (t, v) in fields {
            body.str(*t, v);
        }
        let mut out = Vec::new();
        let h = Header {
            sender: "ENGINE",
            target: "VENUE",
            seq: 7,
            sending_time: "20261130-08:53:06.123",
            orig_sending_time: None,
        };
        encode(&h, &body, &mut out);
        out
    }

    #[test]
    fn a_known_message_round_trips_with_the_reference_checksum() {
        // The classic example from the FIX specification's checksum section,
        // re-encoded: BodyLength and CheckSum computed independently here.
        let f = frame_of("0", &[]);
        let text = printable(&f);
        let body = "35=0|49=ENGINE|56=VENUE|34=7|52=20261130-08:53:06.123|";
        assert!(text.starts_with(&format!("8=FIX.4.4|9={}|{body}10=", body.len())));
        let sum: u32 = f[..f.len() - 7].iter().map(|&b| u32::from(b)).sum();
        assert!(text.ends_with(&format!("10={:03}|", sum % 256)));
        assert_eq!(next_frame(&f), Ok(Some(f.len())));
        let mut fields = Vec::new();
        parse_fields(&f, &mut fields).unwrap();
        let m = Msg {
            frame: &f,
            fields: &fields,
        };
        assert_eq!(m.msg_type(), b"0");
        assert_eq!(m.seq(), Some(7));
        assert_eq!(m.str(49), Some("ENGINE"));
    }

    #[test]
    fn partial_frames_wait_and_broken_ones_are_named() {
        let f = frame_of("D", &[(11, "42"), (55, "I0")]);
        for cut in 0..f.len() {
            assert_eq!(next_frame(&f[..cut]), Ok(None), "prefix of {cut} bytes");
        }
        let mut two = f.clone();
        two.extend_from_slice(&f);
        assert_eq!(next_frame(&two), Ok(Some(f.len())));

        let mut bad_sum = f.clone();
        let n = bad_sum.len();
        bad_sum[n - 2] = if bad_sum[n - 2] == b'0' { b'1' } else { b'0' };
        assert!(matches!(
            next_frame(&bad_sum),
            Err(FrameError::BadChecksum { .. })
        ));

        let mut flipped = f.clone();
        let i = flipped.len() / 2;
        flipped[i] ^= 0x20;
        assert!(matches!(
            next_frame(&flipped),
            Err(FrameError::BadChecksum { .. })
        ));

        let mut longer = f.clone();
        longer.insert(30, b'x');
        assert_eq!(next_frame(&longer), Err(FrameError::BodyLengthMismatch));
        let mut shorter = f.clone();
        shorter.remove(30);
        assert_eq!(next_frame(&shorter), Err(FrameError::BodyLengthMismatch));

        assert_eq!(
            next_frame(b"GET / HTTP/1.1\r\n"),
            Err(FrameError::BadBeginString)
        );
        assert_eq!(
            next_frame(b"8=FIX.4.2\x019=5"),
            Err(FrameError::BadBeginString)
        );
        assert_eq!(
            next_frame(b"8=FIX.4.4\x019=12a"),
            Err(FrameError::BadBodyLength)
        );
        assert_eq!(
            next_frame(b"8=FIX.4.4\x019=123456"),
            Err(FrameError::BadBodyLength)
        );
        assert_eq!(
            next_frame(b"8=FIX.4.4\x019=99999\x01"),
            Err(FrameError::TooLarge { body_len: 99999 })
        );
    }

    #[test]
    fn bad_fields_are_parse_errors_not_panics() {
        let mut fields = Vec::new();
        assert_eq!(
            parse_fields(b"8=FIX.4.4\x019=5\x01x=1\x01", &mut fields),
            Err(ParseError::BadField { offset: 14 })
        );
        assert_eq!(
            parse_fields(b"8=FIX.4.4\x019=5\x0135=\x01", &mut fields),
            Err(ParseError::BadField { offset: 14 })
        );
        assert_eq!(
            parse_fields(b"8=FIX.4.4\x019=5\x0149=A\x01", &mut fields),
            Err(ParseError::NoMsgType)
        );
        // The one-pass parser's edges: tag 0, a tag past u32, a tag of 19
        // digits, a field with no `=` at the very end, and SOH before `=`.
        for (bad, offset) in [
            (&b"8=FIX.4.4\x019=5\x010=1\x01"[..], 14),
            (b"8=FIX.4.4\x019=5\x014294967296=1\x01", 14),
            (b"8=FIX.4.4\x019=5\x011234567890123456789=1\x01", 14),
            (b"8=FIX.4.4\x019=5\x0135", 14),
            (b"8=FIX.4.4\x019=5\x0135\x01=1", 14),
            (b"=1\x01", 0),
        ] {
            assert_eq!(
                parse_fields(bad, &mut fields),
                Err(ParseError::BadField { offset }),
                "{}",
                printable(bad)
            );
        }
        // A value may hold `=`; the largest tag is read whole.
        parse_fields(b"8=FIX.4.4\x019=5\x0135=0\x014294967295=a=b", &mut fields).unwrap();
        let m = Msg {
            frame: b"8=FIX.4.4\x019=5\x0135=0\x014294967295=a=b",
            fields: &fields,
        };
        assert_eq!(m.get(u32::MAX), Some(&b"a=b"[..]));
        let mut body = Body::new("D");
        body.str(58, "a\x01b");
        assert_eq!(body.fields, b"58=a b\x01");
    }
}
