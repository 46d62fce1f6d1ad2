//! A small tmpfs for the full-disk fault tests.

use std::process::Command;

/// A small tmpfs mounted for a full-disk test, unmounted on drop. `None`
/// (with a note on stderr) where mounting is not allowed (not root).
pub struct Tmpfs(pub std::path::PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "64k") on a new temp dir.
    pub fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap().keep();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            Some(Tmpfs(dir))
        } else {
            eprintln!("NOTE: cannot mount a tmpfs here (not root?): full-disk test not run");
            let _ = std::fs::remove_dir(&dir);
            None
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}
