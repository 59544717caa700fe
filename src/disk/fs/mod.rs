//! Filesystems: what a partition holds (from its signature), how a filesystem's bytes are
//! read (`Reader`, through a volume's pieces too), what a reader found (`Usage`, `Scan`),
//! and the readers of ext2/3/4, FAT, swap, XFS, btrfs and NTFS, which say which bytes
//! are in use so that a capture reads only those. The containers around filesystems
//! (md, LVM, LUKS) use these; `disk::scan` puts them together.

pub mod btrfs;
pub mod crc;
pub mod ext4;
pub mod fat;
pub mod ntfs;
pub mod swap;
pub mod xfs;

use std::fmt;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::disk::SourceDisk;
use crate::range::{self, ByteRange};

/// What a partition or disk holds, by its signature (named as blkid names them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FsKind {
    #[serde(rename = "ext2")]
    Ext2,
    #[serde(rename = "ext3")]
    Ext3,
    #[serde(rename = "ext4")]
    Ext4,
    #[serde(rename = "vfat")]
    Vfat,
    #[serde(rename = "ntfs")]
    Ntfs,
    #[serde(rename = "exfat")]
    Exfat,
    #[serde(rename = "xfs")]
    Xfs,
    #[serde(rename = "btrfs")]
    Btrfs,
    #[serde(rename = "crypto_LUKS")]
    Luks,
    #[serde(rename = "LVM2_member")]
    Lvm,
    #[serde(rename = "linux_raid_member")]
    MdRaid,
    #[serde(rename = "swap")]
    Swap,
    #[serde(rename = "iso9660")]
    Iso9660,
}

impl FsKind {
    pub fn name(&self) -> &'static str {
        match self {
            FsKind::Ext2 => "ext2",
            FsKind::Ext3 => "ext3",
            FsKind::Ext4 => "ext4",
            FsKind::Vfat => "vfat",
            FsKind::Ntfs => "ntfs",
            FsKind::Exfat => "exfat",
            FsKind::Xfs => "xfs",
            FsKind::Btrfs => "btrfs",
            FsKind::Luks => "crypto_LUKS",
            FsKind::Lvm => "LVM2_member",
            FsKind::MdRaid => "linux_raid_member",
            FsKind::Swap => "swap",
            FsKind::Iso9660 => "iso9660",
        }
    }

    /// ext2, ext3 or ext4: one reader, one resize2fs.
    pub fn is_ext(&self) -> bool {
        matches!(self, FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4)
    }
}

impl fmt::Display for FsKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Reads a filesystem's bytes relative to its start: a range of a device, or a volume
/// whose pieces lie apart on it (a logical volume's segments).
pub struct Reader<'a> {
    dev: &'a SourceDisk,
    /// (offset in the filesystem, offset on the device, length), ascending and
    /// contiguous from 0.
    pieces: Vec<(u64, u64, u64)>,
    len: u64,
}

impl<'a> Reader<'a> {
    /// The filesystem at [base, base+len) of `dev`.
    pub fn new(dev: &'a SourceDisk, base: u64, len: u64) -> Reader<'a> {
        Reader {
            dev,
            pieces: vec![(0, base, len)],
            len,
        }
    }

    /// A volume made of `pieces` (device offset, length) of `dev`, one after another.
    pub fn mapped(dev: &'a SourceDisk, pieces: &[(u64, u64)]) -> Reader<'a> {
        let mut at = 0;
        let pieces = pieces
            .iter()
            .map(|&(dev_off, len)| {
                let p = (at, dev_off, len);
                at += len;
                p
            })
            .collect();
        Reader {
            dev,
            pieces,
            len: at,
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        anyhow::ensure!(
            offset
                .checked_add(len as u64)
                .is_some_and(|end| end <= self.len),
            "metadata at byte {offset} lies outside the partition"
        );
        let mut buf = vec![0u8; len];
        let mut done = 0usize;
        for &(at, dev_off, plen) in &self.pieces {
            let pos = offset + done as u64;
            if done == len {
                break;
            }
            if pos >= at + plen {
                continue;
            }
            let n = ((at + plen - pos) as usize).min(len - done);
            self.dev
                .read_at(&mut buf[done..done + n], dev_off + (pos - at))?;
            done += n;
        }
        Ok(buf)
    }

    /// A volume made of `pieces` (offset in what this reads, length), one after another.
    pub fn sub(&self, pieces: &[(u64, u64)]) -> Reader<'a> {
        let on_device: Vec<(u64, u64)> = pieces
            .iter()
            .flat_map(|&(off, len)| {
                let own: Vec<(u64, u64)> = self.pieces.iter().map(|p| (p.1, p.2)).collect();
                map_ranges(&own, &[ByteRange::new(off, len)])
            })
            .map(|r| (r.offset, r.len))
            .collect();
        Reader::mapped(self.dev, &on_device)
    }
}

/// Ranges of a volume made of `pieces` (offset, length, one after another), as ranges of
/// what the pieces lie in, split at the pieces' ends.
pub fn map_ranges(pieces: &[(u64, u64)], ranges: &[ByteRange]) -> Vec<ByteRange> {
    let mut out = Vec::new();
    for r in ranges {
        let mut at = 0u64;
        for &(off, len) in pieces {
            if let Some(x) = r.intersect(ByteRange::new(at, len)) {
                out.push(ByteRange::new(off + (x.offset - at), x.len));
            }
            at += len;
        }
    }
    out
}

/// The bytes a filesystem uses.
#[derive(Debug, Clone)]
pub struct Usage {
    pub kind: FsKind,
    pub block_size: u32,
    /// Ranges from the start of the filesystem, ascending and disjoint.
    pub used: Vec<ByteRange>,
    /// What was read more than the filesystem uses, and why.
    pub note: Option<String>,
}

impl Usage {
    pub fn used_bytes(&self) -> u64 {
        range::total(&self.used)
    }
}

/// What a filesystem-aware look at a partition found.
pub enum Scan {
    Used(Usage),
    /// Read it whole, for this reason.
    Whole(String),
}

/// How many bytes `probe` wants to see.
pub const PROBE_BYTES: usize = 70 * 1024;

/// Name the filesystem or container whose signature starts `buf` (the first bytes of a
/// partition or disk), or None.
pub fn probe(buf: &[u8]) -> Option<FsKind> {
    let at =
        |off: usize, sig: &[u8]| buf.len() >= off + sig.len() && &buf[off..off + sig.len()] == sig;
    if at(0x438, &[0x53, 0xEF]) {
        // ext2/3/4: tell them apart by feature flags.
        let le32 = |o: usize| u32::from_le_bytes(buf[o..o + 4].try_into().unwrap());
        let compat = le32(0x45C);
        let incompat = le32(0x460);
        let ro_compat = le32(0x464);
        return Some(if incompat & 0x2C0 != 0 || ro_compat & 0x78 != 0 {
            FsKind::Ext4
        } else if compat & 0x4 != 0 {
            FsKind::Ext3
        } else {
            FsKind::Ext2
        });
    }
    if at(0x52, b"FAT32   ") {
        return Some(FsKind::Vfat);
    }
    if (at(0x36, b"FAT12   ") || at(0x36, b"FAT16   ") || at(0x36, b"FAT     "))
        && at(0x1FE, &[0x55, 0xAA])
    {
        return Some(FsKind::Vfat);
    }
    if at(3, b"NTFS    ") {
        return Some(FsKind::Ntfs);
    }
    if at(3, b"EXFAT   ") {
        return Some(FsKind::Exfat);
    }
    if at(0, b"XFSB") {
        return Some(FsKind::Xfs);
    }
    if at(0x10040, b"_BHRfS_M") {
        return Some(FsKind::Btrfs);
    }
    let md = [0xfc, 0x4e, 0x2b, 0xa9, 1, 0, 0, 0];
    if at(0, &md) || at(4096, &md) {
        return Some(FsKind::MdRaid);
    }
    if at(0, b"LUKS\xba\xbe") {
        return Some(FsKind::Luks);
    }
    if at(0x218, b"LVM2 001") || at(0x018, b"LVM2 001") {
        return Some(FsKind::Lvm);
    }
    for page in [4096usize, 8192, 16384, 65536] {
        if at(page - 10, b"SWAPSPACE2") || at(page - 10, b"SWAP-SPACE") {
            return Some(FsKind::Swap);
        }
    }
    if at(0x8001, b"CD001") {
        return Some(FsKind::Iso9660);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_known_signatures() {
        let mut b = vec![0u8; PROBE_BYTES];
        assert_eq!(probe(&b), None);
        b[0x438] = 0x53;
        b[0x439] = 0xEF;
        assert_eq!(probe(&b), Some(FsKind::Ext2));
        b[0x460] = 0x40; // extents
        assert_eq!(probe(&b), Some(FsKind::Ext4));
        let mut s = vec![0u8; PROBE_BYTES];
        s[4096 - 10..4096].copy_from_slice(b"SWAPSPACE2");
        assert_eq!(probe(&s), Some(FsKind::Swap));
        let mut x = vec![0u8; PROBE_BYTES];
        x[..4].copy_from_slice(b"XFSB");
        assert_eq!(probe(&x), Some(FsKind::Xfs));
        let mut f = vec![0u8; PROBE_BYTES];
        f[0x52..0x5A].copy_from_slice(b"FAT32   ");
        assert_eq!(probe(&f), Some(FsKind::Vfat));
    }

    #[test]
    fn kinds_are_named_as_blkid_names_them() {
        for k in [FsKind::Ext4, FsKind::Luks, FsKind::Lvm, FsKind::Vfat] {
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{k}\""));
        }
        assert_eq!(FsKind::Luks.to_string(), "crypto_LUKS");
        assert!(FsKind::Ext3.is_ext() && !FsKind::Xfs.is_ext());
    }
}
