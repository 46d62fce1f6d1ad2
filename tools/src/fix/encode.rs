//! Encoding outbound FIX messages: the application [`Body`], the standard
//! [`Header`] a session stamps on it, BodyLength and CheckSum computed as
//! the frame is written ([`encode`]), and FIX timestamps.

use super::codec::{checksum, SOH};

/// The application part of an outbound message: `MsgType` and body fields
/// (everything but the standard header and trailer). The session stamps
/// the header with [`encode`]; a resend re-stamps the same body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Body {
    /// `MsgType` (35).
    pub msg_type: &'static str,
    /// Body fields, each `tag=value<SOH>`.
    pub fields: Vec<u8>,
}

impl Body {
    /// An empty body of `msg_type`.
    pub fn new(msg_type: &'static str) -> Body {
        Body {
            msg_type,
            fields: Vec::with_capacity(160),
        }
    }

    /// Appends `tag=value`. A value with SOH in it would break the frame;
    /// SOH bytes are replaced by spaces.
    pub fn bytes(&mut self, tag: u32, value: &[u8]) -> &mut Body {
        push_uint(&mut self.fields, u64::from(tag));
        self.fields.push(b'=');
        self.fields
            .extend(value.iter().map(|&b| if b == SOH { b' ' } else { b }));
        self.fields.push(SOH);
        self
    }

    /// Appends a text field.
    pub fn str(&mut self, tag: u32, value: &str) -> &mut Body {
        self.bytes(tag, value.as_bytes())
    }

    /// Appends a fixed-point decimal (8 implied places) without allocating:
    /// `100`, `0.01`, `-1.5`.
    pub fn fixed(&mut self, tag: u32, value: i64) -> &mut Body {
        push_uint(&mut self.fields, u64::from(tag));
        self.fields.push(b'=');
        if value < 0 {
            self.fields.push(b'-');
        }
        let v = value.unsigned_abs();
        push_uint(&mut self.fields, v / 100_000_000);
        let mut frac = v % 100_000_000;
        if frac != 0 {
            self.fields.push(b'.');
            let mut digits = [b'0'; 8];
            for d in digits.iter_mut().rev() {
                *d = b'0' + (frac % 10) as u8;
                frac /= 10;
            }
            let len = 8 - digits.iter().rev().take_while(|&&d| d == b'0').count();
            self.fields.extend_from_slice(&digits[..len]);
        }
        self.fields.push(SOH);
        self
    }

    /// Appends `tag=<a>-<b>` (ids such as OrderID) without allocating.
    pub fn pair(&mut self, tag: u32, a: u64, b: u64) -> &mut Body {
        push_uint(&mut self.fields, u64::from(tag));
        self.fields.push(b'=');
        push_uint(&mut self.fields, a);
        self.fields.push(b'-');
        push_uint(&mut self.fields, b);
        self.fields.push(SOH);
        self
    }

    /// Appends an unsigned integer field.
    pub fn uint(&mut self, tag: u32, value: u64) -> &mut Body {
        push_uint(&mut self.fields, u64::from(tag));
        self.fields.push(b'=');
        push_uint(&mut self.fields, value);
        self.fields.push(SOH);
        self
    }
}

pub(crate) fn push_uint(out: &mut Vec<u8>, v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = v;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// The standard header fields a session stamps on a message.
#[derive(Clone, Copy, Debug)]
pub struct Header<'a> {
    /// `SenderCompID` (49).
    pub sender: &'a str,
    /// `TargetCompID` (56).
    pub target: &'a str,
    /// `MsgSeqNum` (34).
    pub seq: u64,
    /// `SendingTime` (52), `YYYYMMDD-HH:MM:SS.sss`.
    pub sending_time: &'a str,
    /// For a resend: `PossDupFlag=Y` and this `OrigSendingTime` (122).
    pub orig_sending_time: Option<&'a str>,
}

/// Appends the complete frame of `body` with `header` to `out`.
pub fn encode(header: &Header<'_>, body: &Body, out: &mut Vec<u8>) {
    // BodyLength is known before anything is written (every header field's
    // length is), so the frame goes straight into `out`: no second buffer.
    let field = |tag: usize, value: usize| tag + 1 + value + 1;
    let mut body_len = field(2, body.msg_type.len())
        + field(2, header.sender.len())
        + field(2, header.target.len())
        + field(2, uint_digits(header.seq))
        + field(2, header.sending_time.len())
        + body.fields.len();
    if let Some(orig) = header.orig_sending_time {
        body_len += field(2, 1) + field(3, orig.len());
    }
    let start = out.len();
    out.extend_from_slice(super::codec::PREFIX);
    push_uint(out, body_len as u64);
    out.push(SOH);
    let body_start = out.len();
    put(out, b"35=", body.msg_type.as_bytes());
    put(out, b"49=", header.sender.as_bytes());
    put(out, b"56=", header.target.as_bytes());
    out.extend_from_slice(b"34=");
    push_uint(out, header.seq);
    out.push(SOH);
    put(out, b"52=", header.sending_time.as_bytes());
    if let Some(orig) = header.orig_sending_time {
        put(out, b"43=", b"Y");
        put(out, b"122=", orig.as_bytes());
    }
    out.extend_from_slice(&body.fields);
    debug_assert_eq!(out.len() - body_start, body_len);
    let sum = checksum(&out[start..]);
    out.extend_from_slice(b"10=");
    out.extend_from_slice(&[
        b'0' + sum / 100,
        b'0' + (sum / 10) % 10,
        b'0' + sum % 10,
        SOH,
    ]);
}

/// `tag` then `value` (SOH bytes replaced by spaces, as [`Body::bytes`]
/// does: a CompID with SOH in it must not break the frame) then SOH.
fn put(out: &mut Vec<u8>, tag: &[u8], value: &[u8]) {
    out.extend_from_slice(tag);
    out.extend(value.iter().map(|&b| if b == SOH { b' ' } else { b }));
    out.push(SOH);
}

fn uint_digits(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 10 {
        v /= 10;
        n += 1;
    }
    n
}

/// The FIX timestamp of the current millisecond, formatted once per
/// millisecond (a burst of ten thousand reports formats it a few times).
#[derive(Debug, Default)]
pub struct Clock {
    ms: u64,
    text: String,
}

impl Clock {
    /// `YYYYMMDD-HH:MM:SS.sss` for now.
    pub fn now(&mut self) -> &str {
        let now = std::time::SystemTime::now();
        let ms = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        if ms != self.ms || self.text.is_empty() {
            self.ms = ms;
            self.text = utc_timestamp(now);
        }
        &self.text
    }
}

/// `SendingTime` for now: UTC, `YYYYMMDD-HH:MM:SS.sss`.
pub fn utc_timestamp(now: std::time::SystemTime) -> String {
    // humantime: 2026-11-30T08:53:06.123Z
    let t = humantime::format_rfc3339_millis(now).to_string();
    let b = t.as_bytes();
    if b.len() < 23 {
        return t;
    }
    let mut s = String::with_capacity(21);
    s.push_str(&t[0..4]);
    s.push_str(&t[5..7]);
    s.push_str(&t[8..10]);
    s.push('-');
    s.push_str(&t[11..23]);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_point_fields_match_the_decimal_text() {
        for v in [
            0,
            1,
            100_000_000,
            150_000_000,
            -150_000_000,
            6_500_012_345_678,
            i64::MIN + 1,
        ] {
            let mut b = Body::new("8");
            b.fixed(44, v);
            assert_eq!(
                b.fields,
                format!("44={}\x01", crate::fix::format_fixed(v)).into_bytes(),
                "{v}"
            );
        }
    }

    #[test]
    fn sending_time_is_fix_utc_timestamp() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        assert_eq!(utc_timestamp(t), "20231114-22:13:20.123");
    }
}
