//! Filesystems: what a partition holds (from its signature) and, for ext2/3/4, FAT and
//! swap, which of its bytes are in use, so that a capture reads only those.

pub mod crc;
pub mod ext4;
pub mod fat;
pub mod swap;

use anyhow::Result;

use crate::disk::Device;

/// Reads a filesystem's bytes relative to its start on the device.
pub struct Reader<'a> {
    dev: &'a Device,
    base: u64,
    len: u64,
}

impl Reader<'_> {
    pub fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        anyhow::ensure!(
            offset + len as u64 <= self.len,
            "metadata at byte {offset} lies outside the partition"
        );
        let mut buf = vec![0u8; len];
        self.dev.read_at(&mut buf, self.base + offset)?;
        Ok(buf)
    }
}

/// The bytes a filesystem uses.
#[derive(Debug, Clone)]
pub struct Usage {
    pub kind: &'static str,
    pub block_size: u32,
    /// (offset, length) from the start of the filesystem, ascending and disjoint.
    pub used: Vec<(u64, u64)>,
}

impl Usage {
    pub fn used_bytes(&self) -> u64 {
        self.used.iter().map(|u| u.1).sum()
    }
}

/// What a filesystem-aware look at a partition found.
pub enum Scan {
    Used(Usage),
    /// Read it whole, for this reason.
    Whole(String),
}

/// Find which bytes of the partition at [offset, offset+len) are in use.
pub fn scan(dev: &Device, offset: u64, len: u64) -> Scan {
    let r = Reader {
        dev,
        base: offset,
        len,
    };
    let head = match r.read(0, PROBE_BYTES.min(len as usize)) {
        Ok(h) => h,
        Err(e) => return Scan::Whole(format!("its first bytes could not be read: {e:#}")),
    };
    let kind = probe(&head);
    let result = match kind {
        Some("ext2" | "ext3" | "ext4") => ext4::scan(&r, len),
        Some("vfat") => fat::scan(&r, len),
        Some("swap") => swap::scan(&r, len),
        Some(other) => return Scan::Whole(format!("{other} is read in full")),
        None => return Scan::Whole("no filesystem recognised".into()),
    };
    match result {
        Ok(u) => Scan::Used(u),
        Err(e) => Scan::Whole(format!(
            "{} metadata not usable ({e:#})",
            kind.unwrap_or("?")
        )),
    }
}

/// How many bytes `probe` wants to see.
pub const PROBE_BYTES: usize = 70 * 1024;

/// Name the filesystem or container whose signature starts `buf` (the first bytes of a
/// partition or disk), or None.
pub fn probe(buf: &[u8]) -> Option<&'static str> {
    let at =
        |off: usize, sig: &[u8]| buf.len() >= off + sig.len() && &buf[off..off + sig.len()] == sig;
    if at(0x438, &[0x53, 0xEF]) {
        // ext2/3/4: tell them apart by feature flags.
        let le32 = |o: usize| u32::from_le_bytes(buf[o..o + 4].try_into().unwrap());
        let compat = le32(0x45C);
        let incompat = le32(0x460);
        let ro_compat = le32(0x464);
        return Some(if incompat & 0x2C0 != 0 || ro_compat & 0x78 != 0 {
            "ext4"
        } else if compat & 0x4 != 0 {
            "ext3"
        } else {
            "ext2"
        });
    }
    if at(0x52, b"FAT32   ") {
        return Some("vfat");
    }
    if (at(0x36, b"FAT12   ") || at(0x36, b"FAT16   ") || at(0x36, b"FAT     "))
        && at(0x1FE, &[0x55, 0xAA])
    {
        return Some("vfat");
    }
    if at(3, b"NTFS    ") {
        return Some("ntfs");
    }
    if at(3, b"EXFAT   ") {
        return Some("exfat");
    }
    if at(0, b"XFSB") {
        return Some("xfs");
    }
    if at(0x10040, b"_BHRfS_M") {
        return Some("btrfs");
    }
    if at(0, b"LUKS\xba\xbe") {
        return Some("crypto_LUKS");
    }
    if at(0x218, b"LVM2 001") || at(0x018, b"LVM2 001") {
        return Some("LVM2_member");
    }
    for page in [4096usize, 8192, 16384, 65536] {
        if at(page - 10, b"SWAPSPACE2") || at(page - 10, b"SWAP-SPACE") {
            return Some("swap");
        }
    }
    if at(0x8001, b"CD001") {
        return Some("iso9660");
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
        assert_eq!(probe(&b), Some("ext2"));
        b[0x460] = 0x40; // extents
        assert_eq!(probe(&b), Some("ext4"));
        let mut s = vec![0u8; PROBE_BYTES];
        s[4096 - 10..4096].copy_from_slice(b"SWAPSPACE2");
        assert_eq!(probe(&s), Some("swap"));
    }
}
