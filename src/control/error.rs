//! Errors of the control block. Each message names the file and says what to do.

use std::io;
use std::path::PathBuf;

use super::layout::{NAME_BYTES, VERSION_MAJOR};
use super::ScopeKind;

/// Errors opening or changing a control block. Each message names the file
/// and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No file at the path.
    #[error("control file {path} does not exist: start the engine (it creates it) or run `killswitch init --name {name}`; check --dir / KILLSWITCH_DIR")]
    NotFound {
        /// The path tried.
        path: PathBuf,
        /// Engine name.
        name: String,
    },
    /// `create` found a file already there.
    #[error("control file {path} already exists: use it as it is, or `killswitch remove --name {name}` first")]
    AlreadyExists {
        /// The path.
        path: PathBuf,
        /// Engine name.
        name: String,
    },
    /// An I/O error on the file.
    #[error("control file {path}: {source} (check that the directory exists and the file is yours, mode 0600)")]
    Io {
        /// The path.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The file has the wrong size.
    #[error("control file {path} is {found} bytes, expected {expected}: it is truncated or not a killswitch control file; inspect it, then `killswitch remove --force` and recreate")]
    WrongSize {
        /// The path.
        path: PathBuf,
        /// Actual size.
        found: u64,
        /// Size of this layout.
        expected: u64,
    },
    /// The magic number is wrong.
    #[error("control file {path} has magic {found:#018x}, not \"KILLSWCH\": it is not a killswitch control file; check --dir and --name")]
    BadMagic {
        /// The path.
        path: PathBuf,
        /// The value found.
        found: u64,
    },
    /// A layout major version this build does not know.
    #[error("control file {path} has layout version {major}.{minor}, this build reads {VERSION_MAJOR}.x: use the killswitch binary built with the engine")]
    UnsupportedVersion {
        /// The path.
        path: PathBuf,
        /// Major version found.
        major: u16,
        /// Minor version found.
        minor: u16,
    },
    /// The version word is still 0.
    #[error("control file {path} is not initialised (version 0): its creator died while building it; `killswitch remove --force` it")]
    NotInitialised {
        /// The path.
        path: PathBuf,
    },
    /// A name outside the allowed alphabet or length.
    #[error(
        "invalid {what} name {name:?}: use 1 to {NAME_BYTES} characters from {}",
        allowed_characters(what)
    )]
    InvalidName {
        /// What the name is for.
        what: &'static str,
        /// The name given.
        name: String,
    },
    /// The shared group given (`--group`, `KILLSWITCH_GROUP`, `control_group`) does not exist.
    #[error("shared group {group:?}: {why}; name an existing group (or its number), or leave it out for owner-only files")]
    UnknownGroup {
        /// As given.
        group: String,
        /// What the lookup said.
        why: String,
    },
    /// No free slot in a name table.
    #[error("the {kind} name table of {path} is full ({capacity} names): remove the block after the engine stops, or use fewer names")]
    NamesFull {
        /// The path.
        path: PathBuf,
        /// The table.
        kind: ScopeKind,
        /// Its capacity.
        capacity: usize,
    },
    #[error("control file {path} refused: {what}. A control file must belong to the user that opens it and be writable by nobody else (mode 0600); to share it with a group on purpose, name the group (--group / KILLSWITCH_GROUP, or control_group in the engine's configuration) and give the file mode 0660 with that group; otherwise remove the file (`killswitch remove --force`) and let the engine recreate it")]
    /// The file is not ours: another owner, group/other-writable, or a symlink.
    NotOurs {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// A different live process owns the block.
    #[error("control file {path} is owned by engine pid {pid}, which is alive: two engines on one block would fight; stop it or use another --name")]
    OwnedByLiveProcess {
        /// The path.
        path: PathBuf,
        /// The owner.
        pid: u32,
    },
    /// Another live gateway holds the block's gateway role.
    #[error("control file {path}: the gateway role is held by pid {pid}, which is alive: one gateway per block (two would both acknowledge kills, and the drain could snapshot while one still writes orders); stop that gateway, or give this engine another --name")]
    GatewayRoleTaken {
        /// The path.
        path: PathBuf,
        /// The holder.
        pid: u32,
    },
    /// Another live process follows this block's journal as its hot standby.
    #[error("{path}: the hot-standby role is held by live pid {pid}: one standby per engine; stop that one first")]
    StandbyTaken {
        /// The path.
        path: PathBuf,
        /// The holder.
        pid: u32,
    },
    /// The directory given for control files is not a directory.
    #[error("{dir} is not a directory (it is a {found}): --dir / KILLSWITCH_DIR must name the directory that holds killswitch.<name> files")]
    NotADirectory {
        /// The path given.
        dir: PathBuf,
        /// What it is instead ("regular file", …).
        found: &'static str,
    },
    /// A reset named a generation the switch has moved on from.
    #[error("reset refused: you asked to clear generation {expected}, but the switch is at generation {found} (mode {mode}) since: {changes}; check `killswitch status`, then reset that generation with --generation {found} if it is right")]
    ResetStale {
        /// The generation the reset named.
        expected: u64,
        /// The generation found.
        found: u64,
        /// The mode in force now.
        mode: super::Mode,
        /// What changed, from the audit ring.
        changes: String,
    },
    /// The trip in force was made by the risk role or an automatic rule,
    /// and the reset did not prove the risk role.
    #[error("reset refused: a trip in force was made by the {needed} role or by an automatic rule, so only the {needed} role may reset it (this reset had {had}); ask risk to reset with `--role {needed} --token-file FILE` (the refusal is recorded)")]
    ResetNeedsRole {
        /// The role needed.
        needed: super::Role,
        /// What the reset had.
        had: String,
    },
    /// A reset's preconditions failed and it was not forced.
    #[error("reset refused: {why}; reconcile with the venues first, then rerun with --force (the force is recorded)")]
    ResetRefused {
        /// Why.
        why: String,
    },
}

/// The characters a name of kind `what` may hold, as the error message
/// lists them: engine names become file names, so no '/' and no leading '.'.
fn allowed_characters(what: &str) -> &'static str {
    if what == "engine" {
        "A-Z a-z 0-9 _ - . : (no '/', not starting with '.')"
    } else {
        "A-Z a-z 0-9 _ - . : /"
    }
}

/// Shorthand.
pub type Result<T> = std::result::Result<T, ControlError>;
