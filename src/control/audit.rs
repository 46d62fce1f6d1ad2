//! The audit ring: the last 64 trips, no-op trips, resets,
//! refused resets and no-op resets.
//!
//! Writers take a ticket with one `fetch_add`, then fill slot `ticket % N`
//! under a per-slot seqlock. Everything is an atomic store, so a writer is
//! async-signal-safe (the signal handler writes its trip here) and never
//! blocks; a reader retries a slot that changes under it and skips one whose
//! writer died half-way (its `seq` stays odd until the slot is reused).
//!
//! # Invariants
//! * A completed entry's `seq` is `2*ticket + 2`; tickets are unique.
//! * A reader returns an entry only if `seq` was even and unchanged around
//!   its reads, so it never returns a slot while one writer is filling it.
//!
//! # Limits
//! * The ring keeps the last 64 entries: a flood of trips (no-ops included)
//!   pushes older ones out, the record of the trip in force among them (the
//!   journal keeps every trip that changed the switch).
//! * Two writers share a slot only when one stalls (preempted, stopped)
//!   in the middle of its write while 64 later entries are written. The
//!   stalled writer then finishes over the newer entry and readers may take
//!   a mix of the two. Every field is range-checked on read (lengths
//!   clamped, unknown kinds dropped), so this can garble a record but never
//!   cause undefined behaviour or a panic.

use std::sync::atomic::{fence, AtomicU64, Ordering};

use super::layout::{AuditSlot, Layout, AUDIT_SLOTS, REASON_BYTES};
use super::state::Mode;
use super::ScopeKind;

/// What an audit entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
#[repr(u8)]
pub enum AuditKind {
    /// A trip that changed the state word.
    Trip = 1,
    /// A trip asked for while the switch already forbade as much.
    TripNoop = 2,
    /// A reset that cleared the switch.
    Reset = 3,
    /// A reset that was refused (unknown orders, an unfinished drain, a
    /// generation that moved on; not forced).
    ResetRefused = 4,
    /// A reset asked for while nothing was tripped: nothing changed.
    ResetNoop = 5,
    /// A request that did not authenticate (a wrong or missing bearer
    /// token at the admin endpoint): nothing changed. The reason says what
    /// was asked and from where.
    Unauthorized = 6,
    /// An automatic rule crossed a warning grade (50, 75, 90 or 95 % of
    /// its limit; layout 2.2): nothing changed. The reason names the rule,
    /// the grade and the values; `mode` is what the rule trips to.
    Warning = 7,
}

impl AuditKind {
    fn from_u8(v: u8) -> Option<AuditKind> {
        Some(match v {
            1 => AuditKind::Trip,
            2 => AuditKind::TripNoop,
            3 => AuditKind::Reset,
            4 => AuditKind::ResetRefused,
            5 => AuditKind::ResetNoop,
            6 => AuditKind::Unauthorized,
            7 => AuditKind::Warning,
            _ => return None,
        })
    }
}

/// Who asked for a trip or reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
#[repr(u8)]
pub enum Source {
    /// The `killswitch` command line.
    Cli = 1,
    /// The admin HTTP endpoint.
    Http = 2,
    /// A signal handler.
    Signal = 3,
    /// An automatic rule (watchdog, loss limit, reject rate).
    Auto = 4,
    /// The library API, called by the engine.
    Api = 5,
    /// A panic in the engine.
    Panic = 6,
    /// The firm-wide kill, relayed from the firm's messaging bus by `killswitch relay`.
    Firm = 7,
}

impl Source {
    /// Decodes a stored byte; `None` for a value this version does not know.
    pub fn from_u8(v: u8) -> Option<Source> {
        Some(match v {
            1 => Source::Cli,
            2 => Source::Http,
            3 => Source::Signal,
            4 => Source::Auto,
            5 => Source::Api,
            6 => Source::Panic,
            7 => Source::Firm,
            _ => return None,
        })
    }

    /// Name used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Cli => "cli",
            Source::Http => "http",
            Source::Signal => "signal",
            Source::Auto => "auto",
            Source::Api => "api",
            Source::Panic => "panic",
            Source::Firm => "firm",
        }
    }
}

/// Flag bit in an entry: the reset was forced past its preconditions.
pub(crate) const FLAG_FORCED: u8 = 1;
/// Flag bits 1..=2 of an entry: the role the actor proved ([`Role`] as
/// u8 << 1; 0 = no role).
pub(crate) const FLAG_ROLE_SHIFT: u8 = 1;
/// Mask of the role bits.
pub(crate) const FLAG_ROLE_MASK: u8 = 0b110;

/// A role proven with a token (the admin endpoint's bearer token, the
/// CLI's `--role R --token-file F`). FIA's guidance: only authorised people
/// reset; a trip made by the risk role (or by an automatic rule) can only
/// be reset by the risk role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
#[repr(u8)]
pub enum Role {
    /// A trader: may reset what traders and operators tripped.
    Trader = 1,
    /// Risk: may reset anything, and is the only role that may reset a
    /// trip made by risk or by an automatic rule.
    Risk = 2,
}

impl Role {
    /// Decodes the role bits' value.
    pub fn from_u8(v: u8) -> Option<Role> {
        match v {
            1 => Some(Role::Trader),
            2 => Some(Role::Risk),
            _ => None,
        }
    }

    /// Name used in files, flags and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Trader => "trader",
            Role::Risk => "risk",
        }
    }

    /// Parses `trader` or `risk`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "trader" => Some(Role::Trader),
            "risk" => Some(Role::Risk),
            _ => None,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who acts: the role a token proved and the identity it belongs to.
/// [`Actor::ANONYMOUS`] is an operator with file access and no token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Actor<'a> {
    /// The role proven, `None` without a token.
    pub role: Option<Role>,
    /// The identity (name in the roles file), up to 31 bytes kept.
    pub identity: &'a str,
}

impl Actor<'_> {
    /// No token, no identity.
    pub const ANONYMOUS: Actor<'static> = Actor {
        role: None,
        identity: "",
    };
}

/// A decoded, consistent copy of one audit slot.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct AuditEntry {
    /// Global order of the entry (its ticket).
    pub ticket: u64,
    /// What happened.
    pub kind: AuditKind,
    /// Mode asked for (trip) or left (reset).
    pub mode: Mode,
    /// Who asked.
    pub source: Source,
    /// The scope of a scoped trip, `None` for a global one.
    pub scope: Option<(ScopeKind, u16)>,
    /// State-word generation after the event.
    pub generation: u64,
    /// Process id of the writer.
    pub pid: u32,
    /// User id of the writer.
    pub uid: u32,
    /// `CLOCK_MONOTONIC` ns.
    pub mono_ns: u64,
    /// Unix ns.
    pub wall_ns: u64,
    /// Reason text as given.
    pub reason: String,
    /// True for a forced reset.
    pub forced: bool,
    /// The role the actor proved, if any.
    pub role: Option<Role>,
    /// The actor's identity ("" when anonymous).
    pub identity: String,
}

/// What a writer puts into an entry; plain data, no allocation, so a signal
/// handler can fill one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AuditWrite<'a> {
    /// What happened.
    pub kind: AuditKind,
    /// Mode asked for or left.
    pub mode: Mode,
    /// Who asked.
    pub source: Source,
    /// Scope of a scoped trip.
    pub scope: Option<(ScopeKind, u16)>,
    /// State generation after the event.
    pub generation: u64,
    /// Reason text (truncated to the slot's capacity).
    pub reason: &'a str,
    /// Flags (`FLAG_FORCED`; the role bits are set from `actor`).
    pub flags: u8,
    /// Who acts.
    pub actor: Actor<'a>,
    /// `CLOCK_MONOTONIC` ns of the event.
    pub mono_ns: u64,
    /// Unix ns of the event.
    pub wall_ns: u64,
}

/// Truncates `s` to at most `max` bytes on a character boundary.
pub(crate) fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Appends one entry; async-signal-safe (atomics, `getpid`, `getuid` only).
pub(crate) fn write(layout: &Layout, w: &AuditWrite<'_>) -> u64 {
    let ticket = layout.audit_head.0.fetch_add(1, Ordering::AcqRel);
    let slot = &layout.audit[(ticket % AUDIT_SLOTS as u64) as usize];
    slot.seq.store(2 * ticket + 1, Ordering::Relaxed);
    // Orders the odd `seq` before the field stores below, for readers.
    fence(Ordering::Release);

    let reason = truncate_utf8(w.reason, REASON_BYTES).as_bytes();
    let (scope_kind, scope_index) = match w.scope {
        Some((k, i)) => (k as u8, i),
        None => (0, 0),
    };
    let role_bits = w.actor.role.map_or(0, |r| (r as u8) << FLAG_ROLE_SHIFT);
    let flags = (w.flags & !FLAG_ROLE_MASK) | role_bits;
    let meta = (w.kind as u64)
        | (w.mode as u64) << 8
        | (w.source as u64) << 16
        | (scope_kind as u64) << 24
        | (scope_index as u64) << 32
        | (reason.len() as u64) << 48
        | (flags as u64) << 56;
    slot.meta.store(meta, Ordering::Relaxed);
    slot.generation.store(w.generation, Ordering::Relaxed);
    // SAFETY: getpid and getuid take no arguments, cannot fail and are
    // async-signal-safe.
    let (pid, uid) = unsafe { (libc::getpid() as u32, libc::getuid()) };
    slot.ids
        .store(pid as u64 | (uid as u64) << 32, Ordering::Relaxed);
    slot.mono_ns.store(w.mono_ns, Ordering::Relaxed);
    slot.wall_ns.store(w.wall_ns, Ordering::Relaxed);
    store_bytes(&slot.reason, reason);
    let identity = truncate_utf8(w.actor.identity, 31).as_bytes();
    let mut id_buf = [0u8; 32];
    id_buf[0] = identity.len() as u8;
    id_buf[1..1 + identity.len()].copy_from_slice(identity);
    store_bytes(&slot.identity, &id_buf);
    slot.seq.store(2 * ticket + 2, Ordering::Release);
    ticket
}

/// Stores `bytes` into `words` little-endian, zero-padding the rest.
pub(crate) fn store_bytes(words: &[AtomicU64], bytes: &[u8]) {
    for (i, word) in words.iter().enumerate() {
        let mut buf = [0u8; 8];
        let start = (i * 8).min(bytes.len());
        let end = (start + 8).min(bytes.len());
        buf[..end - start].copy_from_slice(&bytes[start..end]);
        word.store(u64::from_le_bytes(buf), Ordering::Relaxed);
    }
}

/// Loads `words` as bytes.
pub(crate) fn load_bytes(words: &[AtomicU64], out: &mut [u8]) {
    for (i, word) in words.iter().enumerate() {
        let b = word.load(Ordering::Relaxed).to_le_bytes();
        let start = i * 8;
        if start >= out.len() {
            break;
        }
        let end = (start + 8).min(out.len());
        out[start..end].copy_from_slice(&b[..end - start]);
    }
}

/// Reads one slot consistently; `None` when it is empty, being written, or
/// holds values this version does not know.
pub(crate) fn read_slot(slot: &AuditSlot) -> Option<AuditEntry> {
    for _ in 0..64 {
        let s1 = slot.seq.load(Ordering::Acquire);
        if s1 == 0 || s1 % 2 == 1 {
            return None;
        }
        let meta = slot.meta.load(Ordering::Relaxed);
        let generation = slot.generation.load(Ordering::Relaxed);
        let ids = slot.ids.load(Ordering::Relaxed);
        let mono_ns = slot.mono_ns.load(Ordering::Relaxed);
        let wall_ns = slot.wall_ns.load(Ordering::Relaxed);
        let mut reason = [0u8; REASON_BYTES];
        load_bytes(&slot.reason, &mut reason);
        let mut identity = [0u8; 32];
        load_bytes(&slot.identity, &mut identity);
        // Orders the field loads before the re-check of `seq`.
        fence(Ordering::Acquire);
        if slot.seq.load(Ordering::Relaxed) != s1 {
            continue;
        }
        let kind = AuditKind::from_u8(meta as u8)?;
        let mode = Mode::from_level((meta >> 8) as u8);
        let source = Source::from_u8((meta >> 16) as u8)?;
        let scope = ScopeKind::from_u8((meta >> 24) as u8).map(|k| (k, (meta >> 32) as u16));
        let len = ((meta >> 48) as u8 as usize).min(REASON_BYTES);
        return Some(AuditEntry {
            ticket: (s1 - 2) / 2,
            kind,
            mode,
            source,
            scope,
            generation,
            pid: ids as u32,
            uid: (ids >> 32) as u32,
            mono_ns,
            wall_ns,
            reason: String::from_utf8_lossy(&reason[..len]).into_owned(),
            forced: (meta >> 56) as u8 & FLAG_FORCED != 0,
            role: Role::from_u8(((meta >> 56) as u8 & FLAG_ROLE_MASK) >> FLAG_ROLE_SHIFT),
            identity: String::from_utf8_lossy(&identity[1..1 + (identity[0] as usize).min(31)])
                .into_owned(),
        });
    }
    None
}

/// Every readable entry, oldest first.
pub(crate) fn read_all(layout: &Layout) -> Vec<AuditEntry> {
    let mut v: Vec<AuditEntry> = layout.audit.iter().filter_map(read_slot).collect();
    v.sort_by_key(|e| e.ticket);
    v
}
