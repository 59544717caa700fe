//! A loop device over part of an image file, detached when dropped (or by `close`, which
//! reports a failure to detach).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::cmd;

pub struct LoopDevice {
    path: PathBuf,
    attached: bool,
}

impl LoopDevice {
    /// Attach `len` bytes of `file` from `offset`, with `losetup`.
    pub fn attach(file: &Path, offset: u64, len: u64) -> Result<LoopDevice> {
        Self::attach_with(file, offset, len, &[])
    }

    /// The same, read-only.
    pub fn attach_read_only(file: &Path, offset: u64, len: u64) -> Result<LoopDevice> {
        Self::attach_with(file, offset, len, &["--read-only"])
    }

    fn attach_with(file: &Path, offset: u64, len: u64, more: &[&str]) -> Result<LoopDevice> {
        let losetup = cmd::which("losetup").context("losetup is not available")?;
        let out = cmd::run(
            Command::new(losetup)
                .args([
                    "--find",
                    "--show",
                    "--offset",
                    &offset.to_string(),
                    "--sizelimit",
                    &len.to_string(),
                ])
                .args(more)
                .arg(file),
        )?;
        Ok(LoopDevice {
            path: PathBuf::from(out.trim()),
            attached: true,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn close(mut self) -> Result<()> {
        self.attached = false;
        cmd::run(Command::new("losetup").arg("--detach").arg(&self.path))
            .with_context(|| format!("detach {}", self.path.display()))
            .map(drop)
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        if self.attached {
            if let Err(e) = cmd::run(Command::new("losetup").arg("--detach").arg(&self.path)) {
                log::warn!("{e:#}");
            }
        }
    }
}
