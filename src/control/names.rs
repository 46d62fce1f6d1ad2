//! Scope kinds and the name tables that map names to scope indices.
//!
//! Names are registered under the control file's `flock` (rare: engine
//! start-up, a scoped trip on a name the engine has not registered yet), and
//! read without any lock: word 0 of a slot, holding the length, is stored
//! last with Release, so a reader that sees a length sees the whole name.

use std::fmt;
use std::sync::atomic::Ordering;

use super::audit::{load_bytes, store_bytes};
use super::layout::{
    Layout, NameSlot, ScopeLevels, ACCOUNTS, INSTRUMENTS, NAME_BYTES, STRATEGIES, VENUES,
};
use super::state::Mode;
use super::{ControlBlock, ControlError, Result};
use std::sync::atomic::AtomicU8;

/// The four scope dimensions of RTS 6 Art. 12.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
#[repr(u8)]
pub enum ScopeKind {
    /// A trading venue.
    Venue = 1,
    /// A strategy (algorithm).
    Strategy = 2,
    /// An instrument.
    Instrument = 3,
    /// An account: trader, desk or client.
    Account = 4,
}

impl ScopeKind {
    /// All kinds, in table order.
    pub const ALL: [ScopeKind; 4] = [
        ScopeKind::Venue,
        ScopeKind::Strategy,
        ScopeKind::Instrument,
        ScopeKind::Account,
    ];

    /// Decodes a stored byte.
    pub fn from_u8(v: u8) -> Option<ScopeKind> {
        Some(match v {
            1 => ScopeKind::Venue,
            2 => ScopeKind::Strategy,
            3 => ScopeKind::Instrument,
            4 => ScopeKind::Account,
            _ => return None,
        })
    }

    /// How many names the table holds.
    pub const fn capacity(self) -> usize {
        match self {
            ScopeKind::Venue => VENUES,
            ScopeKind::Strategy => STRATEGIES,
            ScopeKind::Instrument => INSTRUMENTS,
            ScopeKind::Account => ACCOUNTS,
        }
    }

    /// Name used by the CLI.
    pub const fn as_str(self) -> &'static str {
        match self {
            ScopeKind::Venue => "venue",
            ScopeKind::Strategy => "strategy",
            ScopeKind::Instrument => "instrument",
            ScopeKind::Account => "account",
        }
    }

    pub(crate) fn slots(self, layout: &Layout) -> &[NameSlot] {
        match self {
            ScopeKind::Venue => &layout.names.venues,
            ScopeKind::Strategy => &layout.names.strategies,
            ScopeKind::Instrument => &layout.names.instruments,
            ScopeKind::Account => &layout.names.accounts,
        }
    }

    pub(crate) fn levels(self, levels: &ScopeLevels) -> &[AtomicU8] {
        match self {
            ScopeKind::Venue => &levels.venues,
            ScopeKind::Strategy => &levels.strategies,
            ScopeKind::Instrument => &levels.instruments,
            ScopeKind::Account => &levels.accounts,
        }
    }
}

impl fmt::Display for ScopeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// True for a name we accept: 1..=31 bytes of `[A-Za-z0-9_.:/-]`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'/'))
}

/// Reads the name in a slot, `None` when empty or damaged.
pub(crate) fn read_slot(slot: &NameSlot) -> Option<String> {
    let w0 = slot[0].load(Ordering::Acquire);
    let len = (w0 & 0xff) as usize;
    if len == 0 || len > NAME_BYTES {
        return None;
    }
    let mut buf = [0u8; 32];
    buf[..8].copy_from_slice(&w0.to_le_bytes());
    load_bytes(&slot[1..], &mut buf[8..]);
    let name = std::str::from_utf8(&buf[1..1 + len]).ok()?;
    valid_name(name).then(|| name.to_string())
}

/// Writes a name into an empty slot; the caller holds the file lock.
pub(crate) fn write_slot(slot: &NameSlot, name: &str) {
    let mut buf = [0u8; 32];
    buf[0] = name.len() as u8;
    buf[1..1 + name.len()].copy_from_slice(name.as_bytes());
    let mut rest = [0u8; 24];
    rest.copy_from_slice(&buf[8..]);
    store_bytes(&slot[1..], &rest);
    let w0 = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
    slot[0].store(w0, Ordering::Release);
}

/// Index of `name` in the table, scanning without a lock.
pub(crate) fn lookup(slots: &[NameSlot], name: &str) -> Option<u16> {
    slots
        .iter()
        .position(|s| read_slot(s).as_deref() == Some(name))
        .map(|i| i as u16)
}

/// Checks a scope or engine name before it is stored; engine names also
/// become file names.
pub(super) fn check_name(what: &'static str, name: &str) -> Result<()> {
    // Engine names become file names: no '/', no leading '.'.
    let path_safe = what != "engine" || !(name.contains('/') || name.starts_with('.'));
    if valid_name(name) && path_safe {
        Ok(())
    } else {
        Err(ControlError::InvalidName {
            what,
            name: name.to_string(),
        })
    }
}

impl ControlBlock {
    /// Registers a scope name (idempotent) and returns its index.
    pub fn register_name(&self, kind: ScopeKind, name: &str) -> Result<u16> {
        check_name(kind.as_str(), name)?;
        if let Some(i) = lookup(kind.slots(self.layout()), name) {
            return Ok(i);
        }
        let _lock = self.lock()?;
        self.register_locked(kind, name)
    }

    pub(super) fn register_locked(&self, kind: ScopeKind, name: &str) -> Result<u16> {
        let slots = kind.slots(self.layout());
        if let Some(i) = lookup(slots, name) {
            return Ok(i);
        }
        let free = slots
            .iter()
            .position(|s| s[0].load(Ordering::Acquire) & 0xff == 0)
            .ok_or_else(|| ControlError::NamesFull {
                path: self.path.clone(),
                kind,
                capacity: kind.capacity(),
            })?;
        write_slot(&slots[free], name);
        Ok(free as u16)
    }

    /// Index of a registered name.
    pub fn lookup_name(&self, kind: ScopeKind, name: &str) -> Option<u16> {
        lookup(kind.slots(self.layout()), name)
    }

    /// Name at an index.
    pub fn name_at(&self, kind: ScopeKind, index: u16) -> Option<String> {
        kind.slots(self.layout())
            .get(index as usize)
            .and_then(read_slot)
    }

    /// The name registered for scope `index` of `kind`, or `#index` where
    /// the block has none (an index from an older run, a slot never
    /// named): a report or a status line still says which scope it means.
    pub fn scope_label(&self, kind: ScopeKind, index: u16) -> String {
        self.name_at(kind, index)
            .unwrap_or_else(|| format!("#{index}"))
    }

    /// The level a scoped trip put on one name.
    pub fn scope_level(&self, kind: ScopeKind, index: u16) -> Mode {
        kind.levels(&self.layout().levels)
            .get(index as usize)
            .map(|l| Mode::from_level(l.load(Ordering::Acquire)))
            .unwrap_or(Mode::Kill)
    }

    /// Every scope with a level above normal: (kind, index, name, mode).
    pub fn tripped_scopes(&self) -> Vec<(ScopeKind, u16, String, Mode)> {
        let mut v = Vec::new();
        for kind in ScopeKind::ALL {
            for (i, l) in kind.levels(&self.layout().levels).iter().enumerate() {
                let lvl = l.load(Ordering::Acquire);
                if lvl != 0 {
                    let name = self.scope_label(kind, i as u16);
                    v.push((kind, i as u16, name, Mode::from_level(lvl)));
                }
            }
        }
        v
    }
}
