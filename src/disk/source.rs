//! A disk to read: a block device, an image file or an NBD export. It has no way to be
//! written: capture sources, seed images and targets examined before a restore are all
//! opened as this type.

use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::blockdev::{Identity, OpenDisk};
use crate::location::DiskLocation;
use crate::nbd::client::NbdClient;

enum Backing {
    File(File),
    Nbd(NbdClient),
    /// An image held in memory (tests and fuzzing feed the disk readers this way).
    Memory(Vec<u8>),
    /// A large image of which only some 1 KiB blocks are not zero (fuzzing the readers
    /// of filesystems whose metadata lies far apart).
    Sparse(std::collections::BTreeMap<u64, [u8; SPARSE_BLOCK]>),
}

/// The block size of a sparse image.
pub const SPARSE_BLOCK: usize = 1024;

/// Bytes read from elsewhere than the disk: a consistent view of part of a disk in use
/// (an LVM snapshot of a logical volume, a copy of metadata taken before it).
pub struct Overlay {
    /// Where on the disk.
    pub range: crate::range::ByteRange,
    pub source: OverlaySource,
}

pub enum OverlaySource {
    /// These bytes, in full.
    Bytes(Vec<u8>),
    /// A device (or file), from this offset.
    File(File, u64),
}

pub struct SourceDisk {
    /// What the user named, for messages.
    pub path: PathBuf,
    backing: Backing,
    /// Read over the backing, in order.
    overlays: Vec<Overlay>,
    pub size: u64,
    pub is_block: bool,
    /// The kernel's logical sector size for a block device; None otherwise.
    pub sector_size: Option<u32>,
}

impl std::fmt::Debug for SourceDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SourceDisk({})", self.path.display())
    }
}

impl SourceDisk {
    /// Open a disk read-only wherever it is.
    pub fn open(location: &DiskLocation) -> Result<SourceDisk> {
        match location {
            DiskLocation::Path(p) => Self::open_path(p),
            DiskLocation::Nbd(addr) => {
                let client = NbdClient::connect(addr)?;
                Ok(SourceDisk {
                    path: PathBuf::from(addr.to_string()),
                    size: client.size,
                    is_block: false,
                    sector_size: None,
                    backing: Backing::Nbd(client),
                    overlays: Vec::new(),
                })
            }
        }
    }

    /// Open a local block device or image file read-only. Opening does not wait (a FIFO
    /// would block until a writer came); what is neither a block device nor a regular
    /// file is refused before anything is read.
    pub fn open_path(path: &Path) -> Result<SourceDisk> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(path)
            .with_context(|| format!("open {}", path.display()))?;
        let d = OpenDisk::measure(path, file)?;
        Ok(SourceDisk {
            path: d.path,
            size: d.size,
            is_block: d.is_block,
            sector_size: d.sector_size,
            backing: Backing::File(d.file),
            overlays: Vec::new(),
        })
    }

    /// A disk image held in memory, named `name` in messages.
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> SourceDisk {
        SourceDisk {
            path: PathBuf::from(name),
            size: bytes.len() as u64,
            is_block: false,
            sector_size: None,
            backing: Backing::Memory(bytes),
            overlays: Vec::new(),
        }
    }

    /// An image of `size` bytes, zero but for the given 1 KiB blocks (by number).
    pub fn sparse(
        name: &str,
        size: u64,
        blocks: std::collections::BTreeMap<u64, [u8; SPARSE_BLOCK]>,
    ) -> SourceDisk {
        SourceDisk {
            path: PathBuf::from(name),
            size,
            is_block: false,
            sector_size: None,
            backing: Backing::Sparse(blocks),
            overlays: Vec::new(),
        }
    }

    /// Read `o` over the disk from now on.
    pub fn add_overlay(&mut self, o: Overlay) {
        self.overlays.push(o);
    }

    /// Put the overlays' bytes over what was read at `offset`.
    fn apply_overlays(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let read = crate::range::ByteRange::new(offset, buf.len() as u64);
        for o in &self.overlays {
            let Some(x) = read.intersect(o.range) else {
                continue;
            };
            let dst = &mut buf[(x.offset - offset) as usize..(x.end() - offset) as usize];
            let from = x.offset - o.range.offset;
            match &o.source {
                OverlaySource::Bytes(b) => {
                    dst.copy_from_slice(&b[from as usize..from as usize + dst.len()])
                }
                OverlaySource::File(f, at) => f.read_exact_at(dst, at + from).map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!(
                            "{e}, reading a snapshot (a snapshot that filled up with what was \
                             written meanwhile fails so: leave more free space for it)"
                        ),
                    )
                })?,
            }
        }
        Ok(())
    }

    /// Read up to `buf.len()` bytes at `offset`; fewer only at the end of the disk.
    pub fn read_partial(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        match &self.backing {
            Backing::Nbd(c) => {
                let n = buf.len().min(self.size.saturating_sub(offset) as usize);
                c.read_at(&mut buf[..n], offset)?;
                Ok(n)
            }
            Backing::File(f) => {
                let n = f.read_at(buf, offset)?;
                self.apply_overlays(&mut buf[..n], offset)?;
                Ok(n)
            }
            Backing::Memory(m) => {
                let from = m.len().min(usize::try_from(offset).unwrap_or(usize::MAX));
                let n = buf.len().min(m.len() - from);
                buf[..n].copy_from_slice(&m[from..from + n]);
                Ok(n)
            }
            Backing::Sparse(blocks) => {
                let n = buf.len().min(self.size.saturating_sub(offset) as usize);
                let bs = SPARSE_BLOCK as u64;
                buf[..n].fill(0);
                let (first, end) = (offset / bs, (offset + n as u64).div_ceil(bs));
                for (&b, data) in blocks.range(first..end) {
                    let at = b * bs;
                    let from = at.max(offset);
                    let to = (at + bs).min(offset + n as u64);
                    buf[(from - offset) as usize..(to - offset) as usize]
                        .copy_from_slice(&data[(from - at) as usize..(to - at) as usize]);
                }
                Ok(n)
            }
        }
    }

    /// Read exactly `buf.len()` bytes at `offset`.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let r = match &self.backing {
            Backing::Nbd(c) => c.read_at(buf, offset),
            Backing::File(f) => f
                .read_exact_at(buf, offset)
                .and_then(|_| self.apply_overlays(buf, offset)),
            Backing::Memory(_) | Backing::Sparse(_) => match self.read_partial(buf, offset) {
                Ok(n) if n == buf.len() => Ok(()),
                Ok(_) => Err(std::io::ErrorKind::UnexpectedEof.into()),
                Err(e) => Err(e),
            },
        };
        r.with_context(|| {
            format!(
                "read {} bytes at {offset} from {}",
                buf.len(),
                self.path.display()
            )
        })
    }

    /// Model and serial from sysfs, for block devices.
    pub fn identity(&self) -> Identity {
        match self.backing {
            Backing::File(_) if self.is_block => super::blockdev::identity_of(&self.path),
            _ => Identity::default(),
        }
    }
}

impl crate::io::range::ReadAt for SourceDisk {
    fn read_partial(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        SourceDisk::read_partial(self, buf, offset)
    }
}
