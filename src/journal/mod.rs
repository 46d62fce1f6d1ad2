//! The append-only journal: every order event, trip, reset, position and
//! state snapshot, in pre-allocated memory-mapped segment files, so the
//! engine's state can be rebuilt from the journal alone after any crash.
//!
//! * [`record`]: the record header and payload layouts (little-endian, fixed).
//! * `segment` (crate-private): segment files, their header, pre-allocation
//!   and mapping.
//! * [`writer`]: [`JournalWriter`], the single writer (append, roll-over,
//!   quick checkpoint, msync).
//! * [`reader`]: [`scan`] of a whole journal and [`JournalTail`], a follower
//!   for another process.
//! * [`recover`](mod@recover): truncating a torn tail and rebuilding [`TradingState`].
//! * [`state`]: [`TradingState`], plain data.
//!
//! # Invariants
//! * One writer per journal directory, enforced across processes by an
//!   exclusive `flock` on `journal.lock` (it holds the writer's pid).
//! * A record becomes visible all at once: its commit word is stored last,
//!   with Release; readers load it with Acquire and check the CRC-32C.
//! * Nothing is written to a mapping through a `&mut`: the writer stores
//!   through raw pointers, the commit word through an atomic.
//! * Sequence numbers increase by exactly one per record across segments;
//!   recovery stops at the first record that breaks that.
//!
//! ```
//! use killswitch::journal::{JournalConfig, JournalWriter, record::OrderEventRecord, rebuild};
//! use killswitch::order::{OrderId, Price, Qty, ScopeTags, Side};
//!
//! let dir = tempfile::tempdir()?;
//! let (mut journal, _recovery) = JournalWriter::open(dir.path(), JournalConfig::small_for_tests())?;
//! let new = OrderEventRecord::new_order(OrderId(1), ScopeTags::default(), Side::Buy,
//!                                       Price::from_units(100), Qty::from_lots(2));
//! journal.append(&new)?;
//! journal.append(&new.with_fill(Qty::from_lots(2), Price::from_units(100), true))?;
//! journal.sync()?;
//! drop(journal);
//!
//! let rebuilt = rebuild(dir.path())?;
//! assert!(rebuilt.state.open_orders.is_empty());
//! assert_eq!(rebuilt.state.positions.values().next().unwrap().qty, Qty::from_lots(2));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod follow;
pub mod reader;
pub mod record;
pub mod recover;
pub(crate) mod segment;
pub mod state;
pub mod writer;

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;

use crate::access::Access;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

pub use follow::{FollowBatch, JournalFollower};
pub use reader::{
    scan, scan_from, scan_tail, DropKind, Dropped, JournalTail, OwnedRecord, RecordView,
    RecordsAfter, ScanReport, SnapshotAt,
};
pub use recover::{
    rebuild, rebuild_from, rebuild_from_snapshot, recover, recover_with, LogLine, Rebuilt,
    RecoveryMode,
};
pub use state::{OrderEntry, Position, PositionKey, ReplayIssue, TradingState};
pub use writer::{
    Appended, DurableAt, JournalConfig, JournalEnd, JournalWriter, OpenAfter, QuickCheckpoint,
};

/// Name of the lock file in a journal directory.
pub const LOCK_FILE: &str = "journal.lock";

/// Errors of the journal. Each names the file and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// An I/O error.
    #[error("{path}: cannot {action}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What we were doing.
        action: &'static str,
        /// What the OS said.
        source: io::Error,
    },
    /// Another process holds the writer lock.
    #[error("journal {dir} is locked by {holder}: only one writer at a time; stop that process, or read the journal with `killswitch journal inspect` (read-only)")]
    Locked {
        /// Journal directory.
        dir: PathBuf,
        /// Who holds it, e.g. "pid 1234".
        holder: String,
    },
    /// This writer was closed for its successor (a failover's hand-over,
    /// [`JournalWriter::close_for_successor`]): it appends nothing more,
    /// the successor owns the journal now. Nothing was written. Reaching
    /// it from the engine is a bug in the stop order (an event after the
    /// close), not a journal fault.
    #[error("journal {dir}: this writer was closed for its successor (failover hand-over) and appends nothing more; the record was not written (the successor owns the journal)")]
    ClosedForSuccessor {
        /// Journal directory.
        dir: PathBuf,
    },
    /// A segment's header is wrong.
    #[error("journal segment {path}: {what}")]
    BadSegment {
        /// The segment file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A record a follower reached is invalid.
    #[error("journal segment {path} offset {offset}: {what}; run `killswitch journal recover` once the writer has stopped")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Offset of the record.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// The next segment could not be allocated (disk full, file size limit).
    #[error("cannot allocate journal segment {path} ({size} bytes): {source}; every record appended so far is intact; free disk space (or raise the file-size limit) and append again")]
    SegmentAlloc {
        /// The segment that could not be made.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// ENOSPC, EFBIG, EDQUOT, …
        source: io::Error,
    },
    /// A record larger than a segment can hold.
    #[error("record of {len} payload bytes does not fit in a segment (at most {max}); raise JournalConfig::segment_size")]
    RecordTooLarge {
        /// Payload length.
        len: usize,
        /// Largest payload a segment takes.
        max: usize,
    },
    /// The directory or lock file is not ours: another owner, writable by
    /// group or other, or a symbolic link.
    #[error("{path} refused: {what}. A journal directory and its lock file must belong to the user the engine runs as and be writable by nobody else (0700/0600; or 0770/0660 with a group named on purpose as the shared group)")]
    NotOurs {
        /// The directory or file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// The configuration is unusable.
    #[error("journal configuration: {0}")]
    Config(String),
    /// The journal has damage that cutting its tail would lose records to
    /// (a damaged segment header, a missing segment, valid records after a
    /// damaged one, segments after the valid end). Nothing was changed.
    #[error("journal {} is damaged beyond a torn tail, so it was not opened and nothing was changed: {}. Look with `killswitch journal inspect {}`; `killswitch journal recover {}` keeps every valid record it can and sets the rest aside (it deletes nothing)", dir.display(), findings.join("; "), dir.display(), dir.display())]
    NeedsRecovery {
        /// Journal directory.
        dir: PathBuf,
        /// Each finding, one line.
        findings: Vec<String>,
    },
}

impl JournalError {
    /// An I/O error on `path` while doing `action`.
    pub fn io(path: &Path, action: &'static str, source: io::Error) -> JournalError {
        JournalError::Io {
            path: path.to_path_buf(),
            action,
            source,
        }
    }

    /// The OS error number, if this is an I/O error.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            JournalError::Io { source, .. } | JournalError::SegmentAlloc { source, .. } => {
                source.raw_os_error()
            }
            _ => None,
        }
    }
}

/// The exclusive writer lock of a journal directory, held while alive.
pub struct JournalLock {
    _flock: Flock<File>,
}

/// What a read-only user of a journal learns from its lock file.
pub(crate) enum ReadLock {
    /// No writer is active; nobody can start writing while this is held.
    Exclusive {
        /// Held for its drop, which unlocks.
        _held: Flock<File>,
    },
    /// A writer holds the lock ("pid N").
    WriterActive(String),
    /// The lock could not be taken (no lock file and no right to create
    /// one): read as if a writer may be active.
    Unknown(String),
}

/// Opens (without following a symbolic link) the directory `dir` and
/// checks it against `access`.
fn check_dir(dir: &Path, access: Access) -> Result<(), JournalError> {
    let d = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
        .map_err(|e| JournalError::io(dir, "open the journal directory", e))?;
    access.check(&d).map_err(|what| JournalError::NotOurs {
        path: dir.to_path_buf(),
        what,
    })
}

impl JournalLock {
    /// Takes the writer lock without waiting: the inner `Err` names the
    /// holder when another process has it. The directory and the lock file
    /// must be ours ([`Access`]).
    pub fn try_acquire(
        dir: &Path,
        access: Access,
    ) -> Result<Result<JournalLock, String>, JournalError> {
        Ok(Self::try_acquire_after(dir, access)?.map(|(lock, _)| lock))
    }

    /// [`JournalLock::try_acquire`] for the successor of a failover: also
    /// returns where the previous holder's journal ended if it closed for a
    /// successor ([`JournalWriter::close_for_successor`] leaves that in the
    /// lock file before it unlocks; a holder that died leaves nothing, and
    /// every acquisition overwrites it, so a mark is never stale).
    pub fn try_acquire_after(
        dir: &Path,
        access: Access,
    ) -> Result<Result<(JournalLock, Option<JournalEnd>), String>, JournalError> {
        check_dir(dir, access)?;
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(access.file_mode())
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| JournalError::io(&path, "open the journal lock file", e))?;
        access.check(&file).map_err(|what| JournalError::NotOurs {
            path: path.clone(),
            what,
        })?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                let mut before = String::new();
                let closed = lock
                    .rewind()
                    .and_then(|_| lock.read_to_string(&mut before))
                    .ok()
                    .and_then(|_| JournalEnd::parse_mark(&before));
                let pid = std::process::id();
                let write = (|| -> io::Result<()> {
                    lock.set_len(0)?;
                    lock.rewind()?;
                    writeln!(&mut *lock, "{pid}")?;
                    Ok(())
                })();
                write
                    .map_err(|e| JournalError::io(&path, "write our pid into the lock file", e))?;
                Ok(Ok((JournalLock { _flock: lock }, closed)))
            }
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => Ok(Err(holder(&mut file))),
            Err((_, errno)) => Err(JournalError::io(&path, "lock the journal", errno.into())),
        }
    }

    /// Takes the writer lock or fails with [`JournalError::Locked`] naming the holder.
    pub fn acquire(dir: &Path, access: Access) -> Result<JournalLock, JournalError> {
        match JournalLock::try_acquire(dir, access)? {
            Ok(l) => Ok(l),
            Err(holder) => Err(JournalError::Locked {
                dir: dir.to_path_buf(),
                holder,
            }),
        }
    }

    /// Writes into the lock file, while still holding it, that this
    /// holder's journal ends at `end` and nothing more will be appended
    /// (see [`JournalLock::try_acquire_after`]).
    pub(crate) fn mark_closed(&mut self, end: JournalEnd) -> io::Result<()> {
        let f = &mut *self._flock;
        f.set_len(0)?;
        f.rewind()?;
        write!(f, "{}\n{}\n", std::process::id(), end.mark())
    }

    /// For readers (`journal inspect`, `checkpoint create`): needs only read
    /// access to the directory. Opens the lock file read-only (flock does
    /// not need write access), creating it only if allowed, and never
    /// writes a pid into it.
    pub(crate) fn try_read(dir: &Path) -> ReadLock {
        let path = dir.join(LOCK_FILE);
        let open = |create: bool| {
            OpenOptions::new()
                .read(true)
                .write(create)
                .create(create)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
        };
        let file = match open(false) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => match open(true) {
                Ok(f) => f,
                Err(e) => {
                    return ReadLock::Unknown(format!("no lock file, cannot create one: {e}"))
                }
            },
            Err(e) => return ReadLock::Unknown(format!("cannot open {}: {e}", path.display())),
        };
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => ReadLock::Exclusive { _held: l },
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                ReadLock::WriterActive(holder(&mut file))
            }
            Err((_, errno)) => {
                ReadLock::Unknown(format!("cannot lock {}: {errno}", path.display()))
            }
        }
    }
}

/// Who holds a lock, from the pid its writer wrote into the file.
fn holder(file: &mut File) -> String {
    let mut s = String::new();
    let _ = file.rewind().and_then(|_| file.read_to_string(&mut s));
    match s.lines().next().unwrap_or("").trim().parse::<u32>() {
        Ok(pid) => format!("pid {pid}"),
        Err(_) => "another process (pid unknown)".to_string(),
    }
}
