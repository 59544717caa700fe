//! `capture --luks-keyfile`: a closed LUKS container of the source opened read-only with
//! a key file for the capture (`cryptsetup open --readonly`), so that only the ciphertext
//! under the used blocks of the filesystem inside is read; closed again when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cmd;
use crate::disk::loopdev::LoopDevice;
use crate::disk::SourceDisk;
use crate::range::ByteRange;

/// A LUKS container open for the capture: its plaintext device.
pub struct Unlocked {
    name: String,
    /// The loop device the container was opened through (an image file's partition).
    _loop: Option<LoopDevice>,
}

impl Unlocked {
    /// The device whose reads are the container's plaintext.
    pub fn plain(&self) -> PathBuf {
        Path::new("/dev/mapper").join(&self.name)
    }

    /// Open the container at `part` of `dev` with the first of `keys` that fits.
    pub fn open(dev: &SourceDisk, part: ByteRange, keys: &[PathBuf]) -> Result<Unlocked> {
        let cryptsetup = cmd::which("cryptsetup")
            .context("cryptsetup is not available (needed by --luks-keyfile)")?;
        let (device, lo) = match crate::disk::guard::partition_device(&dev.path, part) {
            Some(d) => (d, None),
            None if !dev.is_block => {
                let lo = LoopDevice::attach_read_only(&dev.path, part.offset, part.len)?;
                (lo.path().to_path_buf(), Some(lo))
            }
            None => bail!("no device node for the partition at byte {}", part.offset),
        };
        let name = format!("lifeboat-luks-{}-{}", std::process::id(), part.offset);
        let mut refused = Vec::new();
        for key in keys {
            let out = Command::new(&cryptsetup)
                .args(["open", "--readonly", "--type", "luks", "--key-file"])
                .arg(key)
                .arg(&device)
                .arg(&name)
                .output()
                .with_context(|| format!("run {}", cryptsetup.display()))?;
            if out.status.success() {
                return Ok(Unlocked { name, _loop: lo });
            }
            // cryptsetup exits 2 for a key that fits no keyslot.
            if out.status.code() != Some(2) {
                bail!(
                    "cryptsetup open {}: {}",
                    device.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            refused.push(key.display().to_string());
        }
        bail!(
            "the LUKS container at byte {} of {} opens with none of the key files given ({})",
            part.offset,
            dev.path.display(),
            refused.join(", ")
        )
    }
}

impl Drop for Unlocked {
    fn drop(&mut self) {
        if let Err(e) = cmd::run(Command::new("cryptsetup").args(["close", &self.name])) {
            log::warn!("close the LUKS mapping {}: {e:#}", self.name);
        }
    }
}
