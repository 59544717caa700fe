//! The PXE bundle: the kernel, the initramfs and an iPXE script (from image/boot.ipxe)
//! that boots them with the rescue's command line; serve the folder by TFTP or HTTP.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

pub fn build(dir: &Path, vmlinuz: &Path, initramfs: &Path, cmdline: &str) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    fs::copy(vmlinuz, dir.join("vmlinuz"))
        .with_context(|| format!("copy {}", vmlinuz.display()))?;
    fs::copy(initramfs, dir.join("initramfs.cpio.zst"))
        .with_context(|| format!("copy {}", initramfs.display()))?;
    let script = include_str!("../../image/boot.ipxe").replace("@CMDLINE@", cmdline);
    crate::repo::atomic::write_file(&dir.join("boot.ipxe"), script.as_bytes())
}
