//! Who may share the files the kill switch trusts: control files, journal
//! directories and their lock files.
//!
//! A control file in `/dev/shm` can be created by any local user. If an
//! engine running as another user attached to a file planted there, the
//! planter could reset that engine's kill, or feed its operators a false
//! "NORMAL". So a file is used only when it belongs to the effective user of
//! the process opening it and nobody else can write it (mode `0600`, or
//! `0660` with a group the operator named explicitly: [`Access::shared_gid`]).
//! Files are opened with `O_NOFOLLOW` and checked on the open descriptor, so
//! neither a symbolic link nor a rename between the check and the use can
//! swap the file.

use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;

/// Who besides the owner may write a file the kill switch trusts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access {
    /// A group whose members may share the file (mode `0660` with this
    /// group). `None`: owner only (`0600`).
    pub shared_gid: Option<u32>,
}

impl Access {
    /// Owner only: mode `0600`, the default.
    pub const OWNER_ONLY: Access = Access { shared_gid: None };

    /// Owner and the members of group `gid` (mode `0660`).
    pub const fn shared_with(gid: u32) -> Access {
        Access {
            shared_gid: Some(gid),
        }
    }

    /// The mode to create files with.
    pub fn file_mode(&self) -> u32 {
        if self.shared_gid.is_some() {
            0o660
        } else {
            0o600
        }
    }

    /// Checks an open file (or directory) against this policy; the error
    /// says what is wrong with it.
    pub fn check(&self, file: &File) -> Result<(), String> {
        let meta = file
            .metadata()
            .map_err(|e| format!("cannot stat it: {e}"))?;
        self.check_metadata(&meta)
    }

    /// [`Access::check`] on metadata already read from an open descriptor.
    pub fn check_metadata(&self, meta: &Metadata) -> Result<(), String> {
        let euid = nix::unistd::geteuid().as_raw();
        if meta.uid() != euid {
            return Err(format!(
                "it belongs to uid {}, not to uid {euid} that opens it (another user may have planted it)",
                meta.uid()
            ));
        }
        let mode = meta.mode() & 0o7777;
        let shared_ok = self.shared_gid.is_some_and(|g| g == meta.gid());
        let forbidden = if shared_ok { 0o002 } else { 0o022 };
        if mode & forbidden != 0 {
            let who = if mode & 0o002 != 0 {
                "every local user".to_string()
            } else {
                format!("group {}", meta.gid())
            };
            return Err(format!(
                "mode {mode:04o} lets {who} write it{}",
                if self.shared_gid.is_some() && !shared_ok {
                    format!(
                        " (the configured shared group is {}, the file's is {})",
                        self.shared_gid.unwrap_or_default(),
                        meta.gid()
                    )
                } else {
                    String::new()
                }
            ));
        }
        Ok(())
    }

    /// Gives a file this policy's group (a no-op for owner-only files).
    pub fn apply_group(&self, file: &File) -> std::io::Result<()> {
        if let Some(gid) = self.shared_gid {
            use std::os::fd::AsRawFd;
            nix::unistd::fchown(
                file.as_raw_fd(),
                None,
                Some(nix::unistd::Gid::from_raw(gid)),
            )
            .map_err(std::io::Error::from)?;
        }
        Ok(())
    }
}

/// The policy for an optional shared group given by name or number (for
/// `--group` and configuration files).
pub fn access_for_group(group: Option<&str>) -> Result<Access, crate::control::ControlError> {
    match group {
        None => Ok(Access::OWNER_ONLY),
        Some(g) => group_id(g).map(Access::shared_with).map_err(|why| {
            crate::control::ControlError::UnknownGroup {
                group: g.to_string(),
                why,
            }
        }),
    }
}

/// Resolves a group given by name or number.
pub fn group_id(name_or_number: &str) -> Result<u32, String> {
    if let Ok(n) = name_or_number.parse::<u32>() {
        return Ok(n);
    }
    match nix::unistd::Group::from_name(name_or_number) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(format!("no group named {name_or_number:?}")),
        Err(e) => Err(format!("cannot look up group {name_or_number:?}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn owner_only_refuses_group_and_other_write() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let f = File::create(&p).unwrap();
        for (mode, ok) in [
            (0o600, true),
            (0o644, true),
            (0o620, false),
            (0o602, false),
            (0o666, false),
        ] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let got = Access::OWNER_ONLY.check(&f);
            assert_eq!(got.is_ok(), ok, "mode {mode:o}: {got:?}");
        }
        let gid = f.metadata().unwrap().gid();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o660)).unwrap();
        assert!(Access::shared_with(gid).check(&f).is_ok());
        let e = Access::shared_with(gid + 1).check(&f).unwrap_err();
        assert!(e.contains("configured shared group"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o662)).unwrap();
        assert!(Access::shared_with(gid).check(&f).is_err());
    }
}
