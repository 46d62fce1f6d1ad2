//! Trip and reset records: the switch's changes as the journal keeps them
//! beside the orders they stopped.

use super::{Cursor, DecodeError, Encode, RecordType, Sink, MAX_REASON};
use crate::control::{Mode, ScopeKind, Source};

/// Payload of [`RecordType::Trip`] and [`RecordType::Reset`], `24 + reason_len` bytes:
///
/// | off | size | field |
/// |----:|-----:|-------|
/// | 0  | 1 | mode (0 normal, 1 reduce-only, 2 halt-new, 3 kill): asked for by a trip, left by a reset |
/// | 1  | 1 | source (1 cli, 2 http, 3 signal, 4 auto, 5 api, 6 panic) |
/// | 2  | 1 | scope kind (0 global, 1 venue, 2 strategy, 3 instrument, 4 account) |
/// | 3  | 1 | flags: bit 0 forced (resets) |
/// | 4  | 2 | scope index (0 when global) |
/// | 6  | 2 | reason length, at most 256 |
/// | 8  | 8 | state-word generation after the event |
/// | 16 | 8 | wall-clock ns (Unix) |
/// | 24 | n | reason, UTF-8 |
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SwitchRecord {
    /// True for a reset, false for a trip.
    pub reset: bool,
    /// Mode asked for (trip) or left (reset).
    pub mode: Mode,
    /// Who asked.
    pub source: Source,
    /// Scope of a scoped trip; `None` for a global one.
    pub scope: Option<(ScopeKind, u16)>,
    /// The reset was forced past its preconditions.
    pub forced: bool,
    /// State-word generation after the event.
    pub generation: u64,
    /// Unix ns.
    pub wall_ns: u64,
    /// Why (truncated to [`MAX_REASON`] bytes on a character boundary).
    pub reason: String,
}

impl SwitchRecord {
    fn reason_bytes(&self) -> &[u8] {
        crate::control::audit::truncate_utf8(&self.reason, MAX_REASON).as_bytes()
    }

    /// From an audit entry of the control block: trips and resets; `None`
    /// for a no-op trip or a refused reset, which changed nothing.
    pub fn from_audit(e: &crate::control::AuditEntry) -> Option<SwitchRecord> {
        use crate::control::AuditKind;
        let reset = match e.kind {
            AuditKind::Trip => false,
            AuditKind::Reset => true,
            // Neither changed the switch: the journal records changes.
            AuditKind::TripNoop
            | AuditKind::ResetRefused
            | AuditKind::ResetNoop
            | AuditKind::Unauthorized
            | AuditKind::Warning => return None,
        };
        Some(SwitchRecord {
            reset,
            mode: e.mode,
            source: e.source,
            scope: e.scope,
            forced: e.forced,
            generation: e.generation,
            wall_ns: e.wall_ns,
            reason: e.reason.clone(),
        })
    }

    /// Decodes a payload; `reset` comes from the record type.
    pub fn decode(buf: &[u8], reset: bool) -> Result<Self, DecodeError> {
        let mut c = Cursor::new(buf, if reset { "reset" } else { "trip" });
        let r = Self::decode_from(&mut c, reset)?;
        c.finish()?;
        Ok(r)
    }

    /// Decodes from a cursor (also used inside snapshots).
    pub(crate) fn decode_from(c: &mut Cursor<'_>, reset: bool) -> Result<Self, DecodeError> {
        let mode = c.u8("mode")?;
        if mode > 3 {
            return Err(c.err("mode", format!("unknown mode {mode} (0..=3)")));
        }
        let source_v = c.u8("source")?;
        let source = Source::from_u8(source_v)
            .ok_or_else(|| c.err("source", format!("unknown source {source_v} (1..=6)")))?;
        let kind = c.u8("scope_kind")?;
        let flags = c.u8("flags")?;
        let index = c.u16("scope_index")?;
        let scope = match kind {
            0 => None,
            k => Some((
                ScopeKind::from_u8(k).ok_or_else(|| {
                    c.err("scope_kind", format!("unknown scope kind {k} (0..=4)"))
                })?,
                index,
            )),
        };
        let reason_len = c.u16("reason_len")? as usize;
        if reason_len > MAX_REASON {
            return Err(c.err("reason_len", format!("{reason_len} > {MAX_REASON}")));
        }
        let generation = c.u64("generation")?;
        let wall_ns = c.u64("wall_ns")?;
        let reason = c.text(reason_len, "reason")?;
        Ok(SwitchRecord {
            reset,
            mode: Mode::from_level(mode),
            source,
            scope,
            forced: flags & 1 != 0,
            generation,
            wall_ns,
            reason,
        })
    }
}

impl Encode for SwitchRecord {
    fn record_type(&self) -> RecordType {
        if self.reset {
            RecordType::Reset
        } else {
            RecordType::Trip
        }
    }
    fn encoded_len(&self) -> usize {
        24 + self.reason_bytes().len()
    }
    fn encode<S: Sink>(&self, out: &mut S) {
        let reason = self.reason_bytes();
        let (kind, index) = match self.scope {
            None => (0, 0),
            Some((k, i)) => (k as u8, i),
        };
        out.put(&[self.mode as u8, self.source as u8, kind, self.forced as u8]);
        out.put_u16(index);
        out.put_u16(reason.len() as u16);
        out.put_u64(self.generation);
        out.put_u64(self.wall_ns);
        out.put(reason);
    }
}
