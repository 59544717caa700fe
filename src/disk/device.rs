//! A disk opened for capture or restore: a block device or an image file.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

nix::ioctl_read!(blk_getsize64, 0x12, 114, u64);
nix::ioctl_read_bad!(blk_sszget, 0x1268, libc_int);
nix::ioctl_none!(blk_rrpart, 0x12, 95);
nix::ioctl_write_ptr_bad!(blk_zeroout, 0x127f, [u64; 2]);

#[allow(non_camel_case_types)]
type libc_int = std::os::raw::c_int;

pub struct Device {
    pub path: PathBuf,
    /// The open file or block device. For an NBD source this is /dev/null: every read of
    /// a device goes through `read_at`/`read_partial`, which use `nbd` instead.
    pub file: File,
    pub nbd: Option<super::nbd_client::NbdClient>,
    pub size: u64,
    pub is_block: bool,
    /// The kernel's logical sector size for a block device; None for an image file.
    pub sector_size: Option<u32>,
}

impl crate::io::range::ReadAt for Device {
    fn read_partial(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        Device::read_partial(self, buf, offset)
    }
}

impl Device {
    /// Open a disk read-only, for capture: a block device, an image file, or an export of
    /// an NBD server given as nbd://HOST:PORT/NAME.
    pub fn open_read(path: &Path) -> Result<Device> {
        let s = path.to_string_lossy();
        if s.starts_with("nbd://") {
            let client = super::nbd_client::NbdClient::connect(&s)?;
            return Ok(Device {
                path: path.to_path_buf(),
                file: File::open("/dev/null").context("open /dev/null")?,
                size: client.size,
                is_block: false,
                sector_size: None,
                nbd: Some(client),
            });
        }
        let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
        Self::from_file(path, file)
    }

    /// Read up to `buf.len()` bytes at `offset`; fewer only at the end of the device.
    pub fn read_partial(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        match &self.nbd {
            Some(c) => {
                let n = buf.len().min(self.size.saturating_sub(offset) as usize);
                c.read_at(&mut buf[..n], offset)?;
                Ok(n)
            }
            None => self.file.read_at(buf, offset),
        }
    }

    /// Open an existing disk for writing. A block device is opened exclusively, which the
    /// kernel refuses while anything (a mount, a RAID, a device mapper) holds it.
    pub fn open_write(path: &Path) -> Result<Device> {
        let meta = std::fs::metadata(path).with_context(|| format!("stat {}", path.display()))?;
        let mut opts = OpenOptions::new();
        opts.read(true).write(true);
        if meta.file_type().is_block_device() {
            opts.custom_flags(nix::libc::O_EXCL);
        }
        let file = opts.open(path).with_context(|| {
            format!(
                "open {} for writing (exclusive; is it in use?)",
                path.display()
            )
        })?;
        Self::from_file(path, file)
    }

    /// Create a new image file of `size` bytes (sparse).
    pub fn create_image(path: &Path, size: u64) -> Result<Device> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .with_context(|| format!("create {}", path.display()))?;
        file.set_len(size)
            .with_context(|| format!("size {} to {size} bytes", path.display()))?;
        Self::from_file(path, file)
    }

    fn from_file(path: &Path, file: File) -> Result<Device> {
        let meta = file
            .metadata()
            .with_context(|| format!("stat {}", path.display()))?;
        let ft = meta.file_type();
        if ft.is_block_device() {
            let fd = file.as_raw_fd();
            let mut size = 0u64;
            unsafe { blk_getsize64(fd, &mut size) }
                .with_context(|| format!("BLKGETSIZE64 on {}", path.display()))?;
            let mut ss: libc_int = 0;
            unsafe { blk_sszget(fd, &mut ss) }
                .with_context(|| format!("BLKSSZGET on {}", path.display()))?;
            Ok(Device {
                path: path.to_path_buf(),
                file,
                size,
                is_block: true,
                sector_size: Some(ss as u32),
                nbd: None,
            })
        } else if ft.is_file() {
            Ok(Device {
                path: path.to_path_buf(),
                file,
                size: meta.len(),
                is_block: false,
                sector_size: None,
                nbd: None,
            })
        } else {
            bail!(
                "{} is neither a block device nor a regular file",
                path.display()
            )
        }
    }

    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        if let Some(c) = &self.nbd {
            return c
                .read_at(buf, offset)
                .with_context(|| format!("read {} bytes at {offset} from {}", buf.len(), c.url));
        }
        self.file.read_exact_at(buf, offset).with_context(|| {
            format!(
                "read {} bytes at {offset} from {}",
                buf.len(),
                self.path.display()
            )
        })
    }

    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.file.write_all_at(buf, offset).with_context(|| {
            format!(
                "write {} bytes at {offset} to {}",
                buf.len(),
                self.path.display()
            )
        })
    }

    /// Make [offset, offset+len) read as zeros: BLKZEROOUT on a block device, a punched hole
    /// in a file, written zeros where neither works.
    pub fn zero_range(&self, offset: u64, len: u64) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let fd = self.file.as_raw_fd();
        let done = if self.is_block {
            let range = [offset, len];
            unsafe { blk_zeroout(fd, &range) }.is_ok()
        } else {
            use nix::fcntl::{fallocate, FallocateFlags};
            fallocate(
                fd,
                FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
                offset as i64,
                len as i64,
            )
            .is_ok()
        };
        if done {
            return Ok(());
        }
        let zeros = vec![0u8; (1 << 20).min(len as usize)];
        let mut pos = offset;
        while pos < offset + len {
            let n = zeros.len().min((offset + len - pos) as usize);
            self.write_at(&zeros[..n], pos)?;
            pos += n as u64;
        }
        Ok(())
    }

    /// Start writing [offset, offset+len) back to the disk without waiting, so that the
    /// final fsync finds little left to do. Best effort: errors surface at that fsync.
    pub fn start_writeback(&self, offset: u64, len: u64) {
        const SYNC_FILE_RANGE_WRITE: u32 = 2;
        // SAFETY: plain syscall on an open descriptor; no memory is passed.
        unsafe {
            nix::libc::sync_file_range(
                self.file.as_raw_fd(),
                offset as i64,
                len as i64,
                SYNC_FILE_RANGE_WRITE,
            );
        }
    }

    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_all()
            .with_context(|| format!("fsync {}", self.path.display()))
    }

    /// Ask the kernel to re-read a block device's partition table; a failure only matters
    /// to the running system, so it is logged, not returned.
    pub fn reread_partitions(&self) {
        if self.is_block {
            if let Err(e) = unsafe { blk_rrpart(self.file.as_raw_fd()) } {
                log::info!(
                    "re-reading the partition table of {} failed: {e}",
                    self.path.display()
                );
            }
        }
    }

    /// Model and serial from sysfs, for block devices.
    pub fn identity(&self) -> (Option<String>, Option<String>) {
        match super::detect::sysfs_dir_of(&self.path) {
            Some(dir) => (
                super::detect::read_trim(&dir.join("device/model")),
                super::detect::serial_of(&dir),
            ),
            None => (None, None),
        }
    }
}

/// Zero the places a partition table lives: the first MiB and the last MiB of the device.
/// Called before a restore writes anything else, and again if it fails.
pub fn wipe_tables(dev: &Device) -> Result<()> {
    const MIB: u64 = 1 << 20;
    let head = MIB.min(dev.size);
    dev.zero_range(0, head)?;
    let tail_start = dev.size.saturating_sub(MIB).max(head);
    dev.zero_range(tail_start, dev.size - tail_start)?;
    dev.sync()
}
