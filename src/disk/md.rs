//! Linux md RAID members: find a member's superblock wherever its version puts it (1.1 at
//! the start, 1.2 at 4 KiB, 1.0 near the end, 0.90 in the last 64 KiB), so that a member
//! is never taken for the filesystem it may hold at its start.
//!
//! A RAID1 member with a version 1 superblock holds the whole array's data at its data
//! offset: the filesystem (or LVM physical volume) there is read through it, so only its
//! used blocks are, and the two halves of a mirror deduplicate. Everything outside the
//! data area (superblock, write-intent bitmap, bad-block log) is read. A member of any
//! other level, or with a 0.90 superblock, is read whole: a RAID0/5 member's first bytes
//! can look like a filesystem that is only a stripe of one.

use crate::disk::endian::{le32, le64};
use anyhow::{bail, ensure, Context, Result};

use super::fs::{Reader, Usage};
use crate::range::ByteRange;

const MAGIC: u32 = 0xa92b_4efc;
const SECTOR: u64 = 512;
/// The superblock, with room for this many device roles, is what is checksummed.
const MAX_DEVS: u32 = 384;

/// What a member's superblock says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// "1.0", "1.1", "1.2" or "0.90".
    pub version: &'static str,
    pub level: i32,
    pub raid_disks: u32,
    /// The array's data on this member (bytes from its start).
    pub data: ByteRange,
}

/// The superblock of an md member, if `r` is one (an error: one that does not check).
pub fn member(r: &Reader) -> Option<Result<Member>> {
    let len = r.len();
    let sectors = len / SECTOR;
    let mut places = vec![(0u64, "1.1"), (8 * SECTOR, "1.2")];
    if sectors > 16 {
        places.push((((sectors - 16) & !7) * SECTOR, "1.0"));
    }
    for (at, version) in places {
        let Ok(head) = r.read(at, 8) else { continue };
        if le32(&head, 0) == MAGIC && le32(&head, 4) == 1 {
            return Some(v1(r, at, version).with_context(|| format!("md superblock {version}")));
        }
    }
    // 0.90: 64 KiB-aligned, the last 64 KiB before the end.
    if len >= 128 << 10 {
        let at = (len & !0xFFFF) - 0x10000;
        if let Ok(head) = r.read(at, 8) {
            if le32(&head, 0) == MAGIC && le32(&head, 4) == 0 {
                return Some(v090(r, at));
            }
        }
    }
    None
}

fn v1(r: &Reader, at: u64, version: &'static str) -> Result<Member> {
    let head = r.read(at, 256)?;
    let max_dev = le32(&head, 220);
    ensure!(max_dev <= MAX_DEVS, "{max_dev} device slots");
    let size = 256 + 2 * max_dev as usize;
    let sb = r.read(at, size)?;
    ensure!(
        le32(&sb, 216) == checksum(&sb),
        "its checksum does not match"
    );
    ensure!(
        le64(&sb, 144) * SECTOR == at,
        "it says it is at sector {}",
        le64(&sb, 144)
    );
    let level = le32(&sb, 72) as i32;
    let data_offset = le64(&sb, 128).checked_mul(SECTOR).context("data offset")?;
    let data_size = le64(&sb, 136).checked_mul(SECTOR).context("data size")?;
    let end = data_offset
        .checked_add(data_size)
        .filter(|&e| e <= r.len())
        .with_context(|| format!("its data area ends past the member ({} bytes)", r.len()))?;
    // The superblock lies outside the data area.
    ensure!(
        at + size as u64 <= data_offset || at >= end,
        "its superblock lies inside its data area"
    );
    Ok(Member {
        version,
        level,
        raid_disks: le32(&sb, 92),
        data: ByteRange::new(data_offset, data_size),
    })
}

/// Version 1's checksum: the superblock's 32-bit words added up (its own field as
/// zero), the carry folded back once.
fn checksum(sb: &[u8]) -> u32 {
    let mut sum: u64 = 0;
    let mut words = sb.chunks_exact(4);
    for (i, w) in words.by_ref().enumerate() {
        if i != 216 / 4 {
            sum += u32::from_le_bytes(w.try_into().unwrap()) as u64;
        }
    }
    if let [a, b] = words.remainder() {
        sum += u16::from_le_bytes([*a, *b]) as u64;
    }
    ((sum & 0xffff_ffff) + (sum >> 32)) as u32
}

fn v090(r: &Reader, at: u64) -> Result<Member> {
    let sb = r.read(at, 4096)?;
    Ok(Member {
        version: "0.90",
        level: le32(&sb, 28) as i32,
        raid_disks: le32(&sb, 40),
        data: ByteRange::new(0, at),
    })
}

/// Which bytes of an md member are in use: for a RAID1 member with a version 1
/// superblock, everything but the free space of what its data area holds (`inner`, the
/// usage of that area, from its start); an error otherwise, and it is read whole.
pub fn usage(r: &Reader, m: &Member, inner: Option<Usage>) -> Result<(Vec<ByteRange>, String)> {
    if m.version == "0.90" {
        bail!(
            "an md member with a 0.90 superblock (level {}) is read whole",
            m.level
        );
    }
    if m.level != 1 {
        bail!(
            "an md RAID{} member of {} devices: what it holds spans them, so it is read whole",
            m.level,
            m.raid_disks
        );
    }
    let Some(inner) = inner else {
        bail!("an md RAID1 member whose data area holds nothing recognised");
    };
    let mut used = vec![ByteRange::new(0, m.data.offset)];
    used.extend(inner.used.iter().map(|u| u.shifted(m.data.offset)));
    used.push(ByteRange::between(m.data.end(), r.len()));
    used.retain(|u| !u.is_empty());
    let note = format!(
        "md RAID1 member (superblock {}, {} devices) holding {}",
        m.version, m.raid_disks, inner.kind
    );
    Ok((used, note))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_skips_its_own_field_and_folds_the_carry() {
        let mut sb = vec![0u8; 256 + 4];
        sb[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        sb[4..8].copy_from_slice(&2u32.to_le_bytes());
        sb[216..220].copy_from_slice(&0xdead_beefu32.to_le_bytes());
        // 0xffffffff + 2 = 0x1_0000_0001, folded: 0x2.
        assert_eq!(checksum(&sb), 2);
    }
}
