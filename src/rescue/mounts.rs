//! The filesystems PID 1 mounts before anything else: proc, sys, devtmpfs (the Debian
//! kernel does not mount it itself), run, tmp, and efivarfs once its module is loaded.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use nix::mount::{mount, MsFlags};

fn mount_one(
    source: &str,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    fs::create_dir_all(target).with_context(|| format!("create {target}"))?;
    match mount(Some(source), target, Some(fstype), flags, data) {
        Ok(()) | Err(nix::errno::Errno::EBUSY) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("mount {fstype} on {target}")),
    }
}

pub fn early() -> Result<()> {
    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_one("proc", "/proc", "proc", nodev, None)?;
    mount_one("sysfs", "/sys", "sysfs", nodev, None)?;
    mount_one(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    )?;
    mount_one(
        "tmpfs",
        "/run",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )?;
    mount_one(
        "tmpfs",
        "/tmp",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None,
    )?;
    Ok(())
}

/// Mount efivarfs when the machine was booted by UEFI; returns where, or None.
pub fn efivars() -> Option<&'static Path> {
    let dir = "/sys/firmware/efi/efivars";
    if !Path::new("/sys/firmware/efi").exists() {
        return None;
    }
    match mount_one(
        "efivarfs",
        dir,
        "efivarfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    ) {
        Ok(()) => Some(Path::new(dir)),
        Err(e) => {
            log::warn!("{e:#}");
            None
        }
    }
}

/// Mount a vfat partition read-write at `at`.
pub fn vfat(dev: &str, at: &str) -> Result<()> {
    fs::create_dir_all(at).with_context(|| format!("create {at}"))?;
    mount(
        Some(dev),
        at,
        Some("vfat"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("utf8,shortname=mixed"),
    )
    .with_context(|| format!("mount {dev} on {at}"))
}

/// An ISO 9660 filesystem (the boot ISO), read-only.
pub fn iso9660(dev: &str, at: &str) -> Result<()> {
    fs::create_dir_all(at).with_context(|| format!("create {at}"))?;
    mount(
        Some(dev),
        at,
        Some("iso9660"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .with_context(|| format!("mount {dev} on {at}"))
}
