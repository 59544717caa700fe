//! A disk to write: a block device opened exclusively, or an image file. Only a restore
//! opens one, after its preflight.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::blockdev::{self, OpenDisk};
use crate::range::ByteRange;

const MIB: u64 = 1 << 20;

pub struct TargetDisk {
    pub path: PathBuf,
    file: File,
    pub size: u64,
    pub is_block: bool,
    pub sector_size: Option<u32>,
}

impl TargetDisk {
    /// Open an existing disk for writing. A block device is opened exclusively, which the
    /// kernel refuses while anything (a mount, a RAID, a device mapper) holds it.
    pub fn open(path: &Path) -> Result<TargetDisk> {
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
        Ok(Self::from(OpenDisk::measure(path, file)?))
    }

    /// Create a new image file of `size` bytes (sparse).
    pub fn create_image(path: &Path, size: u64) -> Result<TargetDisk> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .with_context(|| format!("create {}", path.display()))?;
        file.set_len(size)
            .with_context(|| format!("size {} to {size} bytes", path.display()))?;
        Ok(Self::from(OpenDisk::measure(path, file)?))
    }

    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
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

    /// Make `r` read as zeros: BLKZEROOUT on a block device, a punched hole in a file,
    /// written zeros where neither works.
    pub fn zero(&self, r: ByteRange) -> Result<()> {
        if r.is_empty() {
            return Ok(());
        }
        let done = if self.is_block {
            blockdev::zero_out(&self.file, r.offset, r.len)
        } else {
            use nix::fcntl::{fallocate, FallocateFlags};
            fallocate(
                self.file.as_raw_fd(),
                FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
                r.offset as i64,
                r.len as i64,
            )
            .is_ok()
        };
        if done {
            return Ok(());
        }
        let zeros = vec![0u8; MIB.min(r.len) as usize];
        let mut pos = r.offset;
        while pos < r.end() {
            let n = zeros.len().min((r.end() - pos) as usize);
            self.write_at(&zeros[..n], pos)?;
            pos += n as u64;
        }
        Ok(())
    }

    /// Start writing `r` back to the disk without waiting, so that the final fsync finds
    /// little left to do. Best effort: errors surface at that fsync.
    pub fn start_writeback(&self, r: ByteRange) {
        const SYNC_FILE_RANGE_WRITE: u32 = 2;
        // SAFETY: plain syscall on an open descriptor; no memory is passed.
        unsafe {
            nix::libc::sync_file_range(
                self.file.as_raw_fd(),
                r.offset as i64,
                r.len as i64,
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
            if let Err(e) = blockdev::reread_partitions(&self.file) {
                log::info!(
                    "re-reading the partition table of {} failed: {e}",
                    self.path.display()
                );
            }
        }
    }

    /// Zero the places a partition table lives: the first MiB and the last MiB of the
    /// disk. Called before a restore writes anything else, and again if it fails.
    pub fn wipe_tables(&self) -> Result<()> {
        let head = ByteRange::new(0, MIB.min(self.size));
        self.zero(head)?;
        self.zero(ByteRange::between(
            self.size.saturating_sub(MIB).max(head.end()),
            self.size,
        ))?;
        self.sync()
    }
}

impl From<OpenDisk> for TargetDisk {
    fn from(d: OpenDisk) -> TargetDisk {
        TargetDisk {
            path: d.path,
            file: d.file,
            size: d.size,
            is_block: d.is_block,
            sector_size: d.sector_size,
        }
    }
}

impl crate::io::coalesce::WriteAt for TargetDisk {
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        TargetDisk::write_at(self, buf, offset)
    }
    fn start_writeback(&self, r: ByteRange) {
        TargetDisk::start_writeback(self, r)
    }
}

impl crate::io::range::ReadAt for TargetDisk {
    fn read_partial(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        self.file.read_at(buf, offset)
    }
}
