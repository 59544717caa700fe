//! A filesystem mounted on a directory of its own for a moment (to replay its log, to grow
//! it), unmounted and the directory removed when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::cmd;

pub struct TempMount {
    dir: PathBuf,
    mounted: bool,
}

impl TempMount {
    /// Mount `dev` (of type `fstype`, with `opts` unless empty) on a new directory.
    pub fn new(dev: &Path, fstype: &str, opts: &str) -> Result<TempMount> {
        let dir = std::env::temp_dir().join(format!(
            "lifeboat-mount-{}-{}",
            std::process::id(),
            dev.file_name().unwrap_or_default().to_string_lossy()
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let mut guard = TempMount {
            dir,
            mounted: false,
        };
        let mut mount = Command::new("mount");
        mount.args(["-t", fstype]);
        if !opts.is_empty() {
            mount.args(["-o", opts]);
        }
        cmd::run(mount.arg(dev).arg(&guard.dir))?;
        guard.mounted = true;
        Ok(guard)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Unmount, reporting a failure (dropping only logs it).
    pub fn close(mut self) -> Result<()> {
        self.mounted = false;
        let r = cmd::run(Command::new("umount").arg(&self.dir)).map(drop);
        let _ = std::fs::remove_dir(&self.dir);
        r
    }
}

impl Drop for TempMount {
    fn drop(&mut self) {
        if self.mounted {
            if let Err(e) = cmd::run(Command::new("umount").arg(&self.dir)) {
                log::warn!("{e:#}");
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}
