//! The shared-memory control block: the kill flag every process agrees on.
//!
//! One file per engine, `killswitch.<name>` in `/dev/shm` (or `$KILLSWITCH_DIR`,
//! or a directory given explicitly), mode 0600, mapped with
//! [`memmap2::MmapRaw`]. The engine's gate reads its state word on every
//! order; the `killswitch` CLI, signal handlers, the watchdog and the admin
//! endpoint write it. The layout is in `layout.rs` (crate-private: the file format is in the
//! README; only the role handles touch the atomics), the state word's encoding
//! in [`state`], the audit ring in [`audit`].
//!
//! The switch **latches**: the file outlives the engine (until reboot or
//! `killswitch remove`), so an engine that restarts after a kill opens the
//! block, finds `KILL`, and does not trade until an operator resets it.
//!
//! # Invariants
//! * All access to the mapping goes through atomics (`&Layout` is sound
//!   because every field is interior-mutable); no `&mut` ever points into it.
//! * A file is only ever seen fully initialised: it is built under a temporary
//!   name and `link(2)`ed into place, which fails if the name exists; the
//!   version word is also stored last with Release for readers of a block
//!   being built in place.
//! * Global trips are lock-free and async-signal-safe. Scoped trips, resets
//!   and name registration take an exclusive `flock` on the file, so a reset
//!   can never erase the scope table entry of a scoped trip that lands after it.

pub mod audit;
mod error;
mod gateway_role;
pub(crate) mod layout;
pub mod lease;
mod names;
mod owner;
mod roles;
pub mod standby;
pub mod state;
pub mod telemetry;

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{MmapOptions, MmapRaw};
use nix::fcntl::{Flock, FlockArg};

pub use crate::access::Access;
use crate::clock::{mono_ns, wall_ns};
pub use audit::{Actor, AuditEntry, AuditKind, Role, Source};
pub use error::{ControlError, Result};
pub(crate) use gateway_role::GatewayRole;
pub use layout::{DrainPhase, IncompleteWriter, FILE_LEN};
pub(crate) use layout::{DrainStatus, GatewayStatus, Layout};
use layout::{MAGIC, VERSION_MAJOR, VERSION_MINOR};
pub use lease::{Lease, LeaseConfig, LeaseError, LeaseInfo};
pub use names::{valid_name, ScopeKind};
pub use owner::{proc_start_ticks, proc_state};
pub use roles::{EngineOwner, Operator, Tripper};
pub use standby::{FailoverRequest, StandbyInfo, StandbyReporter};
pub use state::{Mode, StateWord, Transition};

/// Environment variable that overrides the control-file directory.
pub const DIR_ENV: &str = "KILLSWITCH_DIR";
/// Default control-file directory.
pub const DEFAULT_DIR: &str = "/dev/shm";

/// The directory control files live in: `$KILLSWITCH_DIR`, else `/dev/shm`.
pub fn default_dir() -> PathBuf {
    std::env::var_os(DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR))
}

/// `dir/killswitch.<name>`.
pub fn path_for(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("killswitch.{name}"))
}

/// A `--dir` that exists but is not a directory gets its own error: the
/// OS's "Not a directory" on `<dir>/killswitch.<name>` does not say which
/// part is wrong.
fn check_dir(dir: &Path) -> Result<()> {
    match fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Err(ControlError::NotADirectory {
            dir: dir.to_path_buf(),
            found: if m.is_file() {
                "regular file"
            } else {
                "special file"
            },
        }),
        _ => Ok(()),
    }
}

fn check_name(what: &'static str, name: &str) -> Result<()> {
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

/// A trip request.
#[derive(Clone, Debug)]
pub struct TripRequest {
    /// Mode to escalate to.
    pub mode: Mode,
    /// Scopes to trip; empty for a global trip.
    pub scopes: Vec<(ScopeKind, String)>,
    /// Who asks.
    pub source: Source,
    /// Why (kept in the audit ring).
    pub reason: String,
}

/// What a trip did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TripOutcome {
    /// The state word change (or lack of it).
    pub transition: Transition,
    /// Audit ticket of the record.
    pub ticket: u64,
}

/// The engine attached to a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct OwnerInfo {
    /// Its pid, 0 when none.
    pub pid: u32,
    /// True when that pid is alive and is the same process (start time matches).
    pub alive: bool,
    /// Its start time in clock ticks since boot, as recorded when it
    /// attached (0: none or unknown).
    pub start_ticks: u64,
}

/// An open control block. Its public methods open, create and remove the
/// file, read it (state, names, audit, owner) and register scope names;
/// everything that writes the switch goes through a role handle
/// ([`Tripper`], [`Operator`], [`EngineOwner`], the gateway's claimed
/// role). `Send + Sync` (every access is atomic); share it as
/// `Arc<ControlBlock>` between the handles of one process.
pub struct ControlBlock {
    map: MmapRaw,
    path: PathBuf,
    name: String,
}

// SAFETY: the mapping is shared memory that every field of `Layout` accesses
// through atomics only, so sharing the handle between threads adds nothing
// that other processes do not already do; `MmapRaw` is a pointer and a length
// that live as long as the handle.
unsafe impl Send for ControlBlock {}
// SAFETY: as above: all access through `&Layout` is atomic.
unsafe impl Sync for ControlBlock {}

impl std::fmt::Debug for ControlBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlBlock")
            .field("path", &self.path)
            .field("state", &self.state())
            .finish()
    }
}

impl ControlBlock {
    /// Creates `dir/killswitch.<name>`, mode 0600; fails if it exists.
    pub fn create(dir: &Path, name: &str) -> Result<ControlBlock> {
        Self::create_with(dir, name, Access::OWNER_ONLY)
    }

    /// [`ControlBlock::create`] with the file shared as `access` says (mode
    /// 0660 and the shared group, when one is given).
    pub fn create_with(dir: &Path, name: &str, access: Access) -> Result<ControlBlock> {
        check_name("engine", name)?;
        check_dir(dir)?;
        let path = path_for(dir, name);
        let io_err = |source| ControlError::Io {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(dir).map_err(io_err)?;
        let tmp = dir.join(format!(".killswitch.{name}.{}.tmp", std::process::id()));
        let _ = fs::remove_file(&tmp);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(access.file_mode())
            .open(&tmp)
            .map_err(io_err)?;
        let built = (|| {
            file.set_permissions(fs::Permissions::from_mode(access.file_mode()))?;
            access.apply_group(&file)?;
            file.set_len(FILE_LEN as u64)?;
            let map = MmapOptions::new().len(FILE_LEN).map_raw(&file)?;
            let block = ControlBlock {
                map,
                path: path.clone(),
                name: name.to_string(),
            };
            let h = &block.layout().header;
            h.magic.store(MAGIC, Ordering::Relaxed);
            h.file_len.store(FILE_LEN as u64, Ordering::Relaxed);
            h.created_wall_ns.store(wall_ns(), Ordering::Relaxed);
            h.creator_pid
                .store(std::process::id() as u64, Ordering::Relaxed);
            let mut nm = [0u8; 32];
            nm[0] = name.len() as u8;
            nm[1..1 + name.len()].copy_from_slice(name.as_bytes());
            audit::store_bytes(&h.engine_name, &nm);
            h.version.store(
                (VERSION_MAJOR as u32) << 16 | VERSION_MINOR as u32,
                Ordering::Release,
            );
            file.sync_all()?;
            io::Result::Ok(block)
        })();
        let block = match built {
            Ok(b) => b,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(io_err(e));
            }
        };
        // link(2) publishes the finished file atomically and refuses to
        // replace an existing one (which may hold a latched kill).
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(block),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Err(ControlError::AlreadyExists {
                    path,
                    name: name.to_string(),
                })
            }
            Err(e) => Err(io_err(e)),
        }
    }

    /// Opens an existing block by directory and engine name. The file must
    /// belong to this process's effective user and be writable by nobody
    /// else ([`Access::OWNER_ONLY`]).
    pub fn open(dir: &Path, name: &str) -> Result<ControlBlock> {
        Self::open_with(dir, name, Access::OWNER_ONLY)
    }

    /// [`ControlBlock::open`] accepting the sharing `access` allows.
    pub fn open_with(dir: &Path, name: &str, access: Access) -> Result<ControlBlock> {
        check_name("engine", name)?;
        check_dir(dir)?;
        Self::open_path_named(&path_for(dir, name), name, access)
    }

    /// Opens the block if it exists (keeping any latched trip), else creates it.
    pub fn open_or_create(dir: &Path, name: &str) -> Result<ControlBlock> {
        Self::open_or_create_with(dir, name, Access::OWNER_ONLY)
    }

    /// [`ControlBlock::open_or_create`] with the sharing `access` allows.
    pub fn open_or_create_with(dir: &Path, name: &str, access: Access) -> Result<ControlBlock> {
        match Self::open_with(dir, name, access) {
            Err(ControlError::NotFound { .. }) => match Self::create_with(dir, name, access) {
                Err(ControlError::AlreadyExists { .. }) => Self::open_with(dir, name, access),
                other => other,
            },
            other => other,
        }
    }

    /// Opens a control file by path, validating owner, mode, size, magic
    /// and version before anything else is read.
    pub fn open_path(path: &Path, access: Access) -> Result<ControlBlock> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("killswitch."))
            .unwrap_or("?")
            .to_string();
        Self::open_path_named(path, &name, access)
    }

    fn open_path_named(path: &Path, name: &str, access: Access) -> Result<ControlBlock> {
        let io_err = |source: io::Error| {
            if source.kind() == io::ErrorKind::NotFound {
                ControlError::NotFound {
                    path: path.to_path_buf(),
                    name: name.to_string(),
                }
            } else {
                ControlError::Io {
                    path: path.to_path_buf(),
                    source,
                }
            }
        };
        // O_NOFOLLOW: a symbolic link planted under our name must not lead
        // the engine to map (and write) some other file.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    ControlError::NotOurs {
                        path: path.to_path_buf(),
                        what: "it is a symbolic link".into(),
                    }
                } else {
                    io_err(e)
                }
            })?;
        // Checked on the open descriptor: nothing can swap the file after.
        access.check(&file).map_err(|what| ControlError::NotOurs {
            path: path.to_path_buf(),
            what,
        })?;
        let len = file.metadata().map_err(io_err)?.len();
        if len != FILE_LEN as u64 {
            // A control file of another layout (an older build's 1.x is
            // smaller) says so by its header, not as a damaged file.
            let mut head = [0u8; 12];
            if std::os::unix::fs::FileExt::read_exact_at(&file, &mut head, 0).is_ok()
                && u64::from_le_bytes(head[..8].try_into().expect("8 bytes")) == MAGIC
            {
                let version = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
                let (major, minor) = ((version >> 16) as u16, version as u16);
                if major != VERSION_MAJOR && major != 0 {
                    return Err(ControlError::UnsupportedVersion {
                        path: path.to_path_buf(),
                        major,
                        minor,
                    });
                }
            }
            return Err(ControlError::WrongSize {
                path: path.to_path_buf(),
                found: len,
                expected: FILE_LEN as u64,
            });
        }
        let map = MmapOptions::new()
            .len(FILE_LEN)
            .map_raw(&file)
            .map_err(io_err)?;
        let block = ControlBlock {
            map,
            path: path.to_path_buf(),
            name: name.to_string(),
        };
        let h = &block.layout().header;
        let version = h.version.load(Ordering::Acquire);
        let magic = h.magic.load(Ordering::Relaxed);
        if magic != MAGIC {
            return Err(if magic == 0 && version == 0 {
                ControlError::NotInitialised {
                    path: path.to_path_buf(),
                }
            } else {
                ControlError::BadMagic {
                    path: path.to_path_buf(),
                    found: magic,
                }
            });
        }
        if version == 0 {
            return Err(ControlError::NotInitialised {
                path: path.to_path_buf(),
            });
        }
        let (major, minor) = ((version >> 16) as u16, version as u16);
        if major != VERSION_MAJOR || h.file_len.load(Ordering::Relaxed) != FILE_LEN as u64 {
            return Err(ControlError::UnsupportedVersion {
                path: path.to_path_buf(),
                major,
                minor,
            });
        }
        Ok(block)
    }

    /// Deletes the control file of `name` in `dir`. Refuses while a live
    /// engine owns it unless `force`. Removing a block clears a latched
    /// kill, so the CLI asks for `--confirm`.
    pub fn remove(dir: &Path, name: &str, force: bool) -> Result<PathBuf> {
        let path = path_for(dir, name);
        match Self::open(dir, name) {
            Ok(block) => {
                let owner = block.owner();
                if owner.alive && !force {
                    return Err(ControlError::OwnedByLiveProcess {
                        path,
                        pid: owner.pid,
                    });
                }
            }
            Err(ControlError::NotFound { .. }) => {
                return Err(ControlError::NotFound {
                    path,
                    name: name.to_string(),
                })
            }
            Err(e @ ControlError::NotADirectory { .. }) => return Err(e),
            Err(e) if !force => return Err(e),
            Err(_) => {}
        }
        fs::remove_file(&path).map_err(|source| ControlError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The engine name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The mapped layout. Every field is atomic. Crate-private: the shared
    /// atomics are reached through the role handles only.
    #[inline]
    pub(crate) fn layout(&self) -> &Layout {
        // SAFETY: the mapping is FILE_LEN bytes (checked at open/create),
        // page-aligned (so aligned for Layout), lives as long as `self`, and
        // every field of Layout is an atomic, so a shared reference to memory
        // that other threads and processes mutate is sound; a zero-filled
        // file is a valid Layout.
        unsafe { &*(self.map.as_ptr() as *const Layout) }
    }

    /// The state word itself, for the gate and the gateway.
    #[inline]
    pub(crate) fn state_atomic(&self) -> &AtomicU64 {
        &self.layout().state.0
    }

    /// A copy of the state word (Acquire).
    #[inline]
    pub fn state(&self) -> StateWord {
        StateWord(self.state_atomic().load(Ordering::Acquire))
    }

    /// The gateway's published status.
    pub(crate) fn gateway_status(&self) -> &GatewayStatus {
        &self.layout().gateway.0
    }

    /// The drain's published status.
    pub(crate) fn drain_status(&self) -> &DrainStatus {
        &self.layout().drain
    }

    /// Escalates the global mode without taking any lock: async-signal-safe
    /// (atomics, `getpid`, `getuid`, `clock_gettime` only), so a signal
    /// handler calls this directly. `reason` should be a static string there.
    pub(crate) fn trip_global(&self, mode: Mode, source: Source, reason: &str) -> TripOutcome {
        self.trip_global_as(mode, source, reason, Actor::ANONYMOUS)
    }

    /// [`ControlBlock::trip_global`] by an actor who proved a role: the
    /// audit entry records the role and identity, and a trip by the risk
    /// role (like one with [`Source::Auto`]) can then only be reset by the
    /// risk role. Async-signal-safe like `trip_global`.
    pub(crate) fn trip_global_as(
        &self,
        mode: Mode,
        source: Source,
        reason: &str,
        actor: Actor<'_>,
    ) -> TripOutcome {
        // The monotonic stamp is taken before the CAS, so "trip -> seen"
        // latencies measured against the record are never negative. The
        // wall-clock stamp (for humans) is taken after it: a clock read
        // (~25 ns in a VM) less between the call and the word every reader
        // watches (issue 16 item 6).
        let t_mono = mono_ns();
        self.note_risk_trip(source, actor);
        let transition = state::trip_word(self.state_atomic(), mode);
        let t_wall = wall_ns();
        let kind = match transition {
            Transition::Changed { .. } => AuditKind::Trip,
            Transition::Unchanged(_) => AuditKind::TripNoop,
        };
        let ticket = audit::write(
            self.layout(),
            &audit::AuditWrite {
                kind,
                mode,
                source,
                scope: None,
                generation: transition.current().generation(),
                reason,
                flags: 0,
                actor,
                mono_ns: t_mono,
                wall_ns: t_wall,
            },
        );
        TripOutcome { transition, ticket }
    }

    /// Counts a trip that only the risk role may reset (made with the risk
    /// role, or by an automatic rule), before the trip changes the word: a
    /// reset that looks after the change also sees the count.
    fn note_risk_trip(&self, source: Source, actor: Actor<'_>) {
        if source == Source::Auto || actor.role == Some(Role::Risk) {
            self.layout()
                .header
                .risk_trips
                .fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Trips globally (no scopes) or for the given scopes.
    pub(crate) fn trip(&self, req: &TripRequest) -> Result<TripOutcome> {
        self.trip_as(req, Actor::ANONYMOUS)
    }

    /// [`ControlBlock::trip`] by an actor who proved a role (see
    /// [`ControlBlock::trip_global_as`]).
    pub(crate) fn trip_as(&self, req: &TripRequest, actor: Actor<'_>) -> Result<TripOutcome> {
        if req.mode == Mode::Normal {
            return Err(ControlError::InvalidName {
                what: "mode",
                name: "normal (use reset)".into(),
            });
        }
        if req.scopes.is_empty() {
            return Ok(self.trip_global_as(req.mode, req.source, &req.reason, actor));
        }
        for (kind, name) in &req.scopes {
            check_name(kind.as_str(), name)?;
        }
        let _lock = self.lock()?;
        // All or nothing: every name must be known or have a free slot
        // before anything is written. A trip that failed part-way would
        // leave levels raised with no generation bump and no audit entry,
        // for a later unrelated trip (which sets SCOPED) to switch on.
        for kind in ScopeKind::ALL {
            let slots = kind.slots(self.layout());
            let mut new: Vec<&str> = req
                .scopes
                .iter()
                .filter(|(k, n)| *k == kind && names::lookup(slots, n).is_none())
                .map(|(_, n)| n.as_str())
                .collect();
            new.sort_unstable();
            new.dedup();
            let free = slots
                .iter()
                .filter(|s| s[0].load(Ordering::Acquire) & 0xff == 0)
                .count();
            if new.len() > free {
                return Err(ControlError::NamesFull {
                    path: self.path.clone(),
                    kind,
                    capacity: kind.capacity(),
                });
            }
        }
        // Cannot fail now: the slots are counted and we hold the lock that
        // every registration takes.
        let mut indices = Vec::with_capacity(req.scopes.len());
        for (kind, name) in &req.scopes {
            indices.push((*kind, self.register_locked(*kind, name)?));
        }
        let (t_mono, t_wall) = (mono_ns(), wall_ns());
        self.note_risk_trip(req.source, actor);
        let mut raised = Vec::with_capacity(req.scopes.len());
        for (kind, idx) in indices {
            let prev = kind.levels(&self.layout().levels)[idx as usize]
                .fetch_max(req.mode as u8, Ordering::AcqRel);
            raised.push((kind, idx, prev < req.mode as u8));
        }
        let any_raised = raised.iter().any(|r| r.2);
        let transition = if any_raised || !self.state().scoped() {
            state::scope_word(self.state_atomic())
        } else {
            Transition::Unchanged(self.state())
        };
        let mut ticket = 0;
        for (kind, idx, was_raised) in raised {
            ticket = audit::write(
                self.layout(),
                &audit::AuditWrite {
                    kind: if was_raised {
                        AuditKind::Trip
                    } else {
                        AuditKind::TripNoop
                    },
                    mode: req.mode,
                    source: req.source,
                    scope: Some((kind, idx)),
                    generation: transition.current().generation(),
                    reason: &req.reason,
                    flags: 0,
                    actor,
                    mono_ns: t_mono,
                    wall_ns: t_wall,
                },
            );
        }
        Ok(TripOutcome { transition, ticket })
    }

    pub(crate) fn lock(&self) -> Result<Flock<File>> {
        let io_err = |source| ControlError::Io {
            path: self.path.clone(),
            source,
        };
        // A fresh open file description per lock, so threads of one process
        // exclude each other too (flock locks belong to the description).
        let f = File::open(&self.path).map_err(io_err)?;
        Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| io_err(io::Error::from(e)))
    }

    /// Registers a scope name (idempotent) and returns its index.
    pub fn register_name(&self, kind: ScopeKind, name: &str) -> Result<u16> {
        check_name(kind.as_str(), name)?;
        if let Some(i) = names::lookup(kind.slots(self.layout()), name) {
            return Ok(i);
        }
        let _lock = self.lock()?;
        self.register_locked(kind, name)
    }

    fn register_locked(&self, kind: ScopeKind, name: &str) -> Result<u16> {
        let slots = kind.slots(self.layout());
        if let Some(i) = names::lookup(slots, name) {
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
        names::write_slot(&slots[free], name);
        Ok(free as u16)
    }

    /// Index of a registered name.
    pub fn lookup_name(&self, kind: ScopeKind, name: &str) -> Option<u16> {
        names::lookup(kind.slots(self.layout()), name)
    }

    /// Name at an index.
    pub fn name_at(&self, kind: ScopeKind, index: u16) -> Option<String> {
        kind.slots(self.layout())
            .get(index as usize)
            .and_then(names::read_slot)
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
                    let name = self
                        .name_at(kind, i as u16)
                        .unwrap_or_else(|| format!("#{i}"));
                    v.push((kind, i as u16, name, Mode::from_level(lvl)));
                }
            }
        }
        v
    }

    /// The audit ring, oldest first.
    pub fn audit(&self) -> Vec<AuditEntry> {
        audit::read_all(self.layout())
    }

    /// The record of the trip in force: the newest trip entry since the last
    /// reset. `None` when not tripped (or the record was overwritten).
    pub fn last_trip(&self) -> Option<AuditEntry> {
        let entries = self.audit();
        let since_reset = entries
            .iter()
            .rposition(|e| e.kind == AuditKind::Reset)
            .map(|i| i + 1)
            .unwrap_or(0);
        entries[since_reset..]
            .iter()
            .rev()
            .find(|e| e.kind == AuditKind::Trip)
            .cloned()
    }
}

mod reset;
mod status;
pub use reset::{DrainIncomplete, ResetRequest};
pub use status::{DrainSnapshot, GatewaySnapshot, ScopeStatus, Status};

#[cfg(test)]
mod tests;
