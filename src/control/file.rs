//! Creating, opening, checking and removing the control file: where it
//! lives, how a new one is published whole, and what an opener verifies
//! (owner, mode, size, magic, version) before it reads anything else.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use memmap2::MmapOptions;

use super::audit;
use super::layout::{FILE_LEN, MAGIC, VERSION_MAJOR, VERSION_MINOR};
use super::names::check_name;
use super::{Access, ControlBlock, ControlError, Result};
use crate::clock::wall_ns;

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
}
