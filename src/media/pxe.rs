//! The PXE bundle, for BIOS and UEFI network boot from one TFTP (or HTTP) folder:
//! `boot.ipxe` (from image/boot.ipxe) for iPXE, which BIOS PXE ROMs chain to; and
//! `bootx64.efi` (Debian's shim, signed by Microsoft's UEFI CA) with `grubx64.efi` (Debian's
//! signed network GRUB, which shim fetches from the same folder) and `grub/grub.cfg` for
//! UEFI firmware, Secure Boot included. Both boot lifeboat/vmlinuz and its initrds.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use super::chain::BootFiles;

pub fn build(
    dir: &Path,
    vmlinuz: &Path,
    initramfs: &Path,
    chain: &BootFiles,
    grub_cfg: &str,
    cmdline: &str,
) -> Result<()> {
    fs::create_dir_all(dir.join("lifeboat"))
        .with_context(|| format!("create {}", dir.display()))?;
    fs::create_dir_all(dir.join("grub"))
        .with_context(|| format!("create {}/grub", dir.display()))?;
    let copy = |from: &Path, to: &str| {
        fs::copy(from, dir.join(to))
            .map(|_| ())
            .with_context(|| format!("copy {} to {}", from.display(), to))
    };
    copy(vmlinuz, "lifeboat/vmlinuz")?;
    copy(initramfs, "lifeboat/initramfs.cpio.zst")?;
    copy(&chain.shim, "bootx64.efi")?;
    copy(&chain.grub_net, "grubx64.efi")?;
    crate::repo::atomic::write_file(&dir.join("grub/grub.cfg"), grub_cfg.as_bytes())?;
    let script = include_str!("../../image/boot.ipxe").replace("@CMDLINE@", cmdline);
    crate::repo::atomic::write_file(&dir.join("boot.ipxe"), script.as_bytes())
}
