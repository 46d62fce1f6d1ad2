//! Records that carry the engine's own data: named blobs (its
//! configuration, a strategy's state) and log lines.

use super::{Cursor, DecodeError, Encode, RecordType, Sink};

/// Payload of [`RecordType::Config`] and [`RecordType::StrategyState`]:
/// `u16 name_len, u16 reserved, u32 data_len, name (UTF-8), data`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobRecord<'a> {
    /// Config or strategy state.
    pub rtype: RecordType,
    /// Name (strategy name; free for config).
    pub name: &'a str,
    /// Opaque bytes.
    pub data: &'a [u8],
}

impl<'a> BlobRecord<'a> {
    /// Decodes a payload.
    pub fn decode(buf: &'a [u8], rtype: RecordType) -> Result<Self, DecodeError> {
        let mut c = Cursor::new(buf, rtype.as_str());
        let name_len = c.u16("name_len")? as usize;
        c.u16("reserved")?;
        let data_len = c.u32("data_len")? as usize;
        let at = c.pos();
        let name = std::str::from_utf8(c.bytes(name_len, "name")?).map_err(|e| DecodeError {
            rtype: rtype.as_str(),
            field: "name",
            offset: at,
            what: format!("not UTF-8: {e}"),
        })?;
        let data = c.bytes(data_len, "data")?;
        c.finish()?;
        Ok(BlobRecord { rtype, name, data })
    }
}

impl Encode for BlobRecord<'_> {
    fn record_type(&self) -> RecordType {
        self.rtype
    }
    fn encoded_len(&self) -> usize {
        8 + self.name.len().min(u16::MAX as usize) + self.data.len()
    }
    fn encode<S: Sink>(&self, out: &mut S) {
        let name = crate::control::audit::truncate_utf8(self.name, u16::MAX as usize);
        out.put_u16(name.len() as u16);
        out.put_u16(0);
        out.put_u32(self.data.len() as u32);
        out.put(name.as_bytes());
        out.put(self.data);
    }
}

/// Payload of [`RecordType::Log`]: `u8 level, 7 reserved, u64 wall_ns, text`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord<'a> {
    /// Severity: 1 error, 2 warn, 3 info, 4 debug.
    pub level: u8,
    /// Unix ns.
    pub wall_ns: u64,
    /// The line, UTF-8.
    pub text: &'a str,
}

impl<'a> LogRecord<'a> {
    /// Decodes a payload.
    pub fn decode(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let mut c = Cursor::new(buf, "log");
        let level = c.u8("level")?;
        c.bytes(7, "reserved")?;
        let wall_ns = c.u64("wall_ns")?;
        let at = c.pos();
        let text = std::str::from_utf8(&buf[at..]).map_err(|e| DecodeError {
            rtype: "log",
            field: "text",
            offset: at,
            what: format!("not UTF-8: {e}"),
        })?;
        Ok(LogRecord {
            level,
            wall_ns,
            text,
        })
    }

    /// Name of the level.
    pub fn level_str(&self) -> &'static str {
        match self.level {
            1 => "ERROR",
            2 => "WARN",
            3 => "INFO",
            4 => "DEBUG",
            _ => "LOG",
        }
    }
}

impl Encode for LogRecord<'_> {
    fn record_type(&self) -> RecordType {
        RecordType::Log
    }
    fn encoded_len(&self) -> usize {
        16 + self.text.len()
    }
    #[inline]
    fn encode<S: Sink>(&self, out: &mut S) {
        out.put(&[self.level, 0, 0, 0, 0, 0, 0, 0]);
        out.put_u64(self.wall_ns);
        out.put(self.text.as_bytes());
    }
}
