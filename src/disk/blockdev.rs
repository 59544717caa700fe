//! What both disk types share: an open file or block device, its size and sector size
//! (by the kernel's ioctls for a block device), and its identity from sysfs.

use std::fs::File;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

nix::ioctl_read!(blk_getsize64, 0x12, 114, u64);
nix::ioctl_read_bad!(blk_sszget, 0x1268, libc_int);
nix::ioctl_none!(blk_rrpart, 0x12, 95);
nix::ioctl_write_ptr_bad!(blk_zeroout, 0x127f, [u64; 2]);

#[allow(non_camel_case_types)]
type libc_int = std::os::raw::c_int;

/// An open image file or block device, measured.
#[derive(Debug)]
pub struct OpenDisk {
    pub path: PathBuf,
    pub file: File,
    pub size: u64,
    pub is_block: bool,
    /// The kernel's logical sector size for a block device; None for an image file.
    pub sector_size: Option<u32>,
}

impl OpenDisk {
    /// Measure an opened file: a block device by ioctl, a regular file by its length;
    /// anything else is refused.
    pub fn measure(path: &Path, file: File) -> Result<OpenDisk> {
        let meta = file
            .metadata()
            .with_context(|| format!("stat {}", path.display()))?;
        let ft = meta.file_type();
        let (size, is_block, sector_size) = if ft.is_block_device() {
            let fd = file.as_raw_fd();
            let mut size = 0u64;
            // SAFETY: the ioctls write one integer each into the places given.
            unsafe { blk_getsize64(fd, &mut size) }
                .with_context(|| format!("BLKGETSIZE64 on {}", path.display()))?;
            let mut ss: libc_int = 0;
            unsafe { blk_sszget(fd, &mut ss) }
                .with_context(|| format!("BLKSSZGET on {}", path.display()))?;
            (size, true, Some(ss as u32))
        } else if ft.is_file() {
            (meta.len(), false, None)
        } else {
            bail!(
                "{} is neither a block device nor a regular file",
                path.display()
            )
        };
        Ok(OpenDisk {
            path: path.to_path_buf(),
            file,
            size,
            is_block,
            sector_size,
        })
    }
}

/// What a disk says of itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub model: Option<String>,
    pub serial: Option<String>,
    pub wwn: Option<String>,
}

pub fn identity_of(path: &Path) -> Identity {
    match super::detect::sysfs_dir_of(path) {
        Some(dir) => Identity {
            model: super::detect::read_trim(&dir.join("device/model")),
            serial: super::detect::serial_of(&dir),
            wwn: super::detect::wwn_of(&dir),
        },
        None => Identity::default(),
    }
}

/// BLKZEROOUT of [offset, offset+len); false when the device refuses.
pub fn zero_out(file: &File, offset: u64, len: u64) -> bool {
    let range = [offset, len];
    // SAFETY: the ioctl reads two integers from the array given.
    unsafe { blk_zeroout(file.as_raw_fd(), &range) }.is_ok()
}

/// Ask the kernel to re-read a block device's partition table.
pub fn reread_partitions(file: &File) -> nix::Result<()> {
    // SAFETY: no memory is passed.
    unsafe { blk_rrpart(file.as_raw_fd()) }.map(|_| ())
}
