//! The shared-memory control block: the kill flag every process agrees on.
//!
//! One file per engine, `killswitch.<name>` in `/dev/shm` (or `$KILLSWITCH_DIR`,
//! or a directory given explicitly), mode 0600, mapped with
//! [`memmap2::MmapRaw`]. The engine's gate reads its state word on every
//! order; the `killswitch` CLI, signal handlers, the watchdog and the admin
//! endpoint write it. The layout is in `layout.rs` (crate-private: the file format is in the
//! README; only the role handles touch the atomics), the state word's encoding
//! in [`state`], the audit ring in [`audit`].
//! Creating, opening and removing the file is in `file.rs`, trips in
//! `trip.rs`, resets in `reset.rs`, scope names in `names.rs`, the read-side
//! summary in `status.rs`.
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
mod claim;
mod error;
mod file;
mod gateway_role;
pub(crate) mod layout;
pub mod lease;
mod names;
mod owner;
mod reset;
mod roles;
pub mod standby;
pub mod state;
mod status;
pub mod telemetry;
mod trip;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::MmapRaw;
use nix::fcntl::{Flock, FlockArg};

pub use crate::access::Access;
pub use audit::{Actor, AuditEntry, AuditKind, Role, Source};
pub use error::{ControlError, Result};
pub use file::{default_dir, path_for, DEFAULT_DIR, DIR_ENV};
pub(crate) use gateway_role::GatewayRole;
pub use layout::{DrainPhase, IncompleteWriter, FILE_LEN};
pub(crate) use layout::{DrainStatus, GatewayStatus, Layout};
pub use lease::{Lease, LeaseConfig, LeaseError, LeaseInfo};
pub use names::{valid_name, ScopeKind};
pub use owner::{proc_start_ticks, proc_state};
pub use reset::{DrainIncomplete, ResetRequest};
pub use roles::{EngineOwner, Operator, Tripper};
pub use standby::{FailoverRequest, StandbyInfo, StandbyReporter};
pub use state::{Mode, StateWord, Transition};
pub use status::{DrainSnapshot, GatewaySnapshot, ScopeStatus, Status};
pub use trip::{TripOutcome, TripRequest};

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

#[cfg(test)]
mod tests;
