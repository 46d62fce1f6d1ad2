//! Writing a complete checkpoint: encode, temp file, fsync, rename,
//! directory fsync, `latest.ckpt`, optional verify, alternate directory on
//! failure.
//!
//! `latest.ckpt` is a **symbolic link** to the checkpoint's file name
//! (relative, in the same directory), replaced atomically: a new link is made
//! under a temporary name and renamed over the old one, then the directory is
//! fsynced. A symlink costs no copy of a multi-megabyte file, `ls -l` shows
//! which checkpoint it is, and `validate latest.ckpt` follows it.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::journal::record::{BlobRecord, Encode, RecordType, Sink};
use crate::journal::state::SnapshotPayload;
use crate::journal::TradingState;

use super::{
    crc64, validate, SectionInfo, SectionKind, ValidateError, HEADER_LEN, LATEST, MAGIC,
    TABLE_ENTRY_LEN, TRAILER_MAGIC, VERSION_MAJOR, VERSION_MINOR,
};

/// What goes into a checkpoint.
#[derive(Clone, Debug, Default)]
pub struct CheckpointContents<'a> {
    /// Trading state (required).
    pub state: TradingState,
    /// Configuration entries (name, bytes).
    pub config: Vec<(&'a str, &'a [u8])>,
    /// Strategy states (strategy name, bytes).
    pub strategies: Vec<(&'a str, &'a [u8])>,
    /// Recent market data; the section is left out when `None`.
    pub market_data: Option<&'a [u8]>,
    /// Log lines of the last hour, as text.
    pub log_tail: &'a str,
    /// Last journal sequence the state reflects.
    pub journal_last_seq: u64,
    /// Unix ns of creation (0: now).
    pub created_wall_ns: u64,
}

/// Where and how to write a checkpoint.
#[derive(Clone, Debug)]
pub struct CheckpointTarget {
    /// Directory of the checkpoint.
    pub dir: PathBuf,
    /// File name; `None` for `shutdown_<UTC YYYY-MM-DD_HH-MM-SS>.ckpt`.
    pub file_name: Option<String>,
    /// Where to try when writing in `dir` fails (disk full, I/O error, …).
    pub alternate_dir: Option<PathBuf>,
    /// Point `latest.ckpt` in the directory written to at the new file.
    pub update_latest: bool,
    /// Re-read the file from disk and check every CRC.
    pub verify: bool,
}

impl CheckpointTarget {
    /// `dir`, default name, no alternate, `latest.ckpt` updated, verified.
    pub fn in_dir(dir: impl Into<PathBuf>) -> CheckpointTarget {
        CheckpointTarget {
            dir: dir.into(),
            file_name: None,
            alternate_dir: None,
            update_latest: true,
            verify: true,
        }
    }
}

/// The primary directory failed and the checkpoint went to the alternate one.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Fallback {
    /// The path that could not be written.
    pub primary: PathBuf,
    /// Why (the OS error).
    pub error: String,
}

/// A checkpoint that was written.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Written {
    /// Its path.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Whole-file CRC-64/XZ.
    pub file_crc64: u64,
    /// Sections.
    pub sections: Vec<SectionInfo>,
    /// Set when the primary directory failed: say so loudly.
    pub fallback: Option<Fallback>,
    /// The `latest.ckpt` link updated, if any.
    pub latest: Option<PathBuf>,
    /// Read back and checked.
    pub verified: bool,
    /// Things that did not fail the checkpoint but should be seen.
    pub warnings: Vec<String>,
}

/// Why no checkpoint could be written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Every directory tried failed.
    #[error("checkpoint NOT saved: {}; free space, check the disk, or pass another --path", attempts.iter().map(|(p, e)| format!("{}: {e}", p.display())).collect::<Vec<_>>().join("; then "))]
    Write {
        /// (path tried, error) in order.
        attempts: Vec<(PathBuf, std::io::Error)>,
    },
    /// Written, but reading it back found it damaged.
    #[error("checkpoint written but verification failed: {0}")]
    Verify(#[from] ValidateError),
}

/// `shutdown_<UTC YYYY-MM-DD_HH-MM-SS>.ckpt` for a Unix ns time.
pub fn checkpoint_file_name(wall_ns: u64) -> String {
    format!(
        "shutdown_{}.ckpt",
        crate::clock::format_wall_compact(wall_ns)
    )
}

fn blobs(entries: &[(&str, &[u8])], rtype: RecordType) -> Vec<u8> {
    let mut out = Vec::new();
    out.put_u32(entries.len() as u32);
    for (name, data) in entries {
        BlobRecord { rtype, name, data }.encode(&mut out);
    }
    out
}

/// Encodes a checkpoint file in memory; returns the bytes and the sections.
pub fn encode(c: &CheckpointContents<'_>) -> (Vec<u8>, Vec<SectionInfo>) {
    let created = if c.created_wall_ns == 0 {
        crate::clock::wall_ns()
    } else {
        c.created_wall_ns
    };
    let mut state = Vec::new();
    SnapshotPayload {
        state: &c.state,
        last_seq: c.journal_last_seq,
        taken_wall_ns: created,
    }
    .encode(&mut state);
    let mut parts: Vec<(SectionKind, Vec<u8>)> = vec![
        (SectionKind::TradingState, state),
        (SectionKind::Config, blobs(&c.config, RecordType::Config)),
        (
            SectionKind::StrategyState,
            blobs(&c.strategies, RecordType::StrategyState),
        ),
    ];
    if let Some(m) = c.market_data {
        parts.push((SectionKind::MarketData, m.to_vec()));
    }
    parts.push((SectionKind::LogTail, c.log_tail.as_bytes().to_vec()));

    let table_end = HEADER_LEN + parts.len() * TABLE_ENTRY_LEN;
    let mut sections = Vec::new();
    let mut at = table_end;
    for (kind, data) in &parts {
        sections.push(SectionInfo {
            kind: *kind,
            offset: at as u64,
            length: data.len() as u64,
            crc64: crc64(data),
        });
        at = (at + data.len() + 7) & !7;
    }
    let file_len = at + 16;
    let mut table = Vec::with_capacity(parts.len() * TABLE_ENTRY_LEN);
    for s in &sections {
        table.put_u32(s.kind as u32);
        table.put_u32(0);
        table.put_u64(s.offset);
        table.put_u64(s.length);
        table.put_u64(s.crc64);
    }
    let mut b = Vec::with_capacity(file_len);
    b.put(&MAGIC);
    b.put_u16(VERSION_MAJOR);
    b.put_u16(VERSION_MINOR);
    b.put_u32(HEADER_LEN as u32);
    b.put_u32(parts.len() as u32);
    b.put_u32(0);
    b.put_u64(created);
    b.put_u64(c.journal_last_seq);
    b.put_u64(file_len as u64);
    b.put_u64(crc64(&table));
    let hcrc = crc64(&b[0..56]);
    b.put_u64(hcrc);
    b.put(&table);
    for (s, (_, data)) in sections.iter().zip(&parts) {
        b.resize(s.offset as usize, 0);
        b.put(data);
    }
    b.resize(file_len - 16, 0);
    b.put(&TRAILER_MAGIC);
    let fcrc = crc64(&b);
    b.put_u64(fcrc);
    (b, sections)
}

/// Writes a complete checkpoint (see the module docs for the steps). If the
/// primary directory fails and an alternate is set, writes there and says so
/// in [`Written::fallback`].
pub fn write_complete(
    c: &CheckpointContents<'_>,
    target: &CheckpointTarget,
) -> Result<Written, CheckpointError> {
    let (bytes, sections) = encode(c);
    let created = u64::from_le_bytes(bytes[24..32].try_into().unwrap_or_default());
    let name = target
        .file_name
        .clone()
        .unwrap_or_else(|| checkpoint_file_name(created));
    let file_crc64 = u64::from_le_bytes(bytes[bytes.len() - 8..].try_into().unwrap_or_default());
    let mut attempts = Vec::new();
    let mut dirs = vec![target.dir.clone()];
    dirs.extend(target.alternate_dir.clone());
    for dir in dirs {
        let path = dir.join(&name);
        // A checkpoint directory that does not exist yet is created (an
        // operator's `--path /data/checkpoints` on a fresh box); failing to
        // create it counts as a failure of this directory.
        let written =
            std::fs::create_dir_all(&dir).and_then(|()| write_durably(&dir, &name, &bytes));
        match written {
            Ok(()) => {
                let mut w = Written {
                    path: path.clone(),
                    bytes: bytes.len() as u64,
                    file_crc64,
                    sections: sections.clone(),
                    fallback: attempts
                        .first()
                        .map(|(p, e): &(PathBuf, std::io::Error)| Fallback {
                            primary: p.clone(),
                            error: e.to_string(),
                        }),
                    latest: None,
                    verified: false,
                    warnings: Vec::new(),
                };
                if target.update_latest {
                    match link_latest(&dir, &name) {
                        Ok(l) => w.latest = Some(l),
                        Err(e) => w
                            .warnings
                            .push(format!("{} not updated: {e}", dir.join(LATEST).display())),
                    }
                }
                if target.verify {
                    let s = validate(&path)?;
                    if s.file_crc64 != file_crc64 {
                        return Err(CheckpointError::Verify(ValidateError::Invalid {
                            path,
                            problems: vec![super::Problem {
                                region: super::Region::WholeFile,
                                offset: 0,
                                what: format!(
                                    "read back CRC {:#018x}, wrote {file_crc64:#018x}",
                                    s.file_crc64
                                ),
                            }],
                        }));
                    }
                    w.verified = true;
                }
                return Ok(w);
            }
            Err(e) => attempts.push((path, e)),
        }
    }
    Err(CheckpointError::Write { attempts })
}

/// Temp file, write, fsync, rename, directory fsync. On error the temp file
/// is removed and nothing else changed.
fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let r = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, dir.join(name))?;
        fs::File::open(dir)?.sync_all()
    })();
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r
}

fn link_latest(dir: &Path, name: &str) -> std::io::Result<PathBuf> {
    let tmp = dir.join(format!(".{LATEST}.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(name, &tmp)?;
    let latest = dir.join(LATEST);
    if let Err(e) = fs::rename(&tmp, &latest) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::File::open(dir)?.sync_all()?;
    Ok(latest)
}
