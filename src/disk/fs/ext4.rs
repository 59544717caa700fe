//! ext2/3/4: the blocks in use, from the group descriptors and block bitmaps.
//!
//! Anything doubtful is an error, and the caller reads the whole partition instead: a
//! journal that needs recovery, bigalloc, an external journal device, unknown incompatible
//! features, a descriptor or bitmap whose checksum does not match, a filesystem larger
//! than its partition. Groups whose bitmap was never initialised (BLOCK_UNINIT) are taken
//! to hold their superblock backup, descriptor blocks and reserved GDT blocks, plus any
//! group's bitmaps and inode table that lie in them: a superset of what the kernel marks.

use crate::disk::endian::{le16, le32};
use anyhow::{bail, ensure, Context, Result};

use super::crc::{crc16, crc32c};
use super::{FsKind, Reader, Usage};
use crate::range::{append_merged, ByteRange};

const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
const INCOMPAT_META_BG: u32 = 0x10;
const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_CSUM_SEED: u32 = 0x2000;
/// Features this reader understands: filetype, recover (refused), meta_bg, extents, 64bit,
/// mmp, flex_bg, ea_inode, dirdata, csum_seed, largedir, inline_data, encrypt, casefold.
const INCOMPAT_KNOWN: u32 = 0x2
    | 0x4
    | 0x10
    | 0x40
    | 0x80
    | 0x100
    | 0x200
    | 0x400
    | 0x1000
    | 0x2000
    | 0x4000
    | 0x8000
    | 0x10000
    | 0x20000;
const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
const RO_COMPAT_GDT_CSUM: u32 = 0x10;
const RO_COMPAT_BIGALLOC: u32 = 0x200;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;
const COMPAT_SPARSE_SUPER2: u32 = 0x200;
const BG_BLOCK_UNINIT: u16 = 0x2;

struct Super {
    bs: u64,
    blocks: u64,
    first_data_block: u64,
    bpg: u64,
    ipg: u64,
    inode_size: u64,
    groups: u64,
    desc_size: usize,
    compat: u32,
    incompat: u32,
    ro_compat: u32,
    reserved_gdt: u64,
    first_meta_bg: u64,
    backup_bgs: [u32; 2],
    csum_seed: u32,
    uuid: [u8; 16],
}

/// The most block groups whose descriptors are held in memory (4 Mi: 512 TiB in 128 MiB
/// groups); a filesystem claiming more is read in full.
const MAX_GROUPS: u64 = 1 << 22;

impl Super {
    fn parse(sb: &[u8]) -> Result<Super> {
        ensure!(le16(sb, 0x38) == 0xEF53, "no ext2/3/4 superblock");
        let log = le32(sb, 0x18);
        ensure!(log <= 6, "block size 2^(10+{log}) is out of range");
        let bs = 1024u64 << log;
        let incompat = le32(sb, 0x60);
        let ro_compat = le32(sb, 0x64);
        if incompat & INCOMPAT_RECOVER != 0 {
            bail!("its journal needs recovery (captured while mounted, or after a crash)");
        }
        if incompat & INCOMPAT_JOURNAL_DEV != 0 {
            bail!("it is an external journal device");
        }
        if ro_compat & RO_COMPAT_BIGALLOC != 0 {
            bail!("bigalloc (cluster bitmaps) is not supported");
        }
        if incompat & !INCOMPAT_KNOWN != 0 {
            bail!(
                "unknown incompatible features {:#x}",
                incompat & !INCOMPAT_KNOWN
            );
        }
        let is64 = incompat & INCOMPAT_64BIT != 0;
        let blocks = le32(sb, 0x4) as u64
            | if is64 {
                (le32(sb, 0x150) as u64) << 32
            } else {
                0
            };
        let first_data_block = le32(sb, 0x14) as u64;
        let bpg = le32(sb, 0x20) as u64;
        let ipg = le32(sb, 0x28) as u64;
        let inode_size = if le32(sb, 0x4C) >= 1 {
            le16(sb, 0x58) as u64
        } else {
            128
        };
        let desc_size = if is64 { le16(sb, 0xFE) as usize } else { 32 };
        ensure!(
            bpg > 0 && bpg <= 8 * bs && bpg.is_multiple_of(8),
            "{bpg} blocks per group"
        );
        ensure!(blocks > first_data_block, "{blocks} blocks");
        ensure!(
            (32..=bs as usize).contains(&desc_size) && desc_size.is_power_of_two(),
            "descriptor size {desc_size}"
        );
        ensure!(
            inode_size >= 128 && inode_size <= bs,
            "inode size {inode_size}"
        );
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&sb[0x68..0x78]);
        let csum_seed = if incompat & INCOMPAT_CSUM_SEED != 0 {
            le32(sb, 0x270)
        } else {
            crc32c(!0, &uuid)
        };
        if ro_compat & RO_COMPAT_METADATA_CSUM != 0 {
            ensure!(
                crc32c(!0, &sb[..0x3FC]) == le32(sb, 0x3FC),
                "the superblock checksum does not match"
            );
        }
        let groups = (blocks - first_data_block).div_ceil(bpg);
        ensure!(
            groups <= MAX_GROUPS,
            "{groups} block groups are more than the {MAX_GROUPS} whose descriptors are read into memory"
        );
        Ok(Super {
            bs,
            blocks,
            first_data_block,
            bpg,
            ipg,
            inode_size,
            groups,
            desc_size,
            compat: le32(sb, 0x5C),
            incompat,
            ro_compat,
            reserved_gdt: le16(sb, 0xCE) as u64,
            first_meta_bg: le32(sb, 0x104) as u64,
            backup_bgs: [le32(sb, 0x24C), le32(sb, 0x250)],
            csum_seed,
            uuid,
        })
    }

    fn group_first_block(&self, g: u64) -> u64 {
        self.first_data_block + g * self.bpg
    }

    fn descs_per_block(&self) -> u64 {
        self.bs / self.desc_size as u64
    }

    fn has_super(&self, g: u64) -> bool {
        if g == 0 {
            return true;
        }
        if self.compat & COMPAT_SPARSE_SUPER2 != 0 {
            return g == self.backup_bgs[0] as u64 || g == self.backup_bgs[1] as u64;
        }
        if self.ro_compat & RO_COMPAT_SPARSE_SUPER == 0 || g == 1 {
            return true;
        }
        if g.is_multiple_of(2) {
            return false;
        }
        [3u64, 5, 7].iter().any(|&p| {
            let mut n = p;
            while n < g {
                n *= p;
            }
            n == g
        })
    }

    fn meta_bg(&self) -> bool {
        self.incompat & INCOMPAT_META_BG != 0
    }

    /// Where the descriptor of group `g` lives: (block, byte offset in it).
    fn desc_location(&self, g: u64) -> (u64, usize) {
        let d = self.descs_per_block();
        let nr = g / d;
        let within = (g % d) as usize * self.desc_size;
        if !self.meta_bg() || nr < self.first_meta_bg {
            (self.first_data_block + 1 + nr, within)
        } else {
            let bg = nr * d;
            (
                self.group_first_block(bg) + self.has_super(bg) as u64,
                within,
            )
        }
    }

    /// Blocks at the start of group `g` that hold a superblock copy and descriptors.
    fn base_meta_blocks(&self, g: u64) -> u64 {
        let sup = self.has_super(g) as u64;
        let d = self.descs_per_block();
        if !self.meta_bg() || g < self.first_meta_bg * d {
            if sup == 0 {
                return 0;
            }
            let gdt = if self.meta_bg() {
                self.first_meta_bg
            } else {
                self.groups.div_ceil(d)
            };
            sup + gdt + self.reserved_gdt
        } else {
            let idx = g % d;
            sup + (idx == 0 || idx == 1 || idx == d - 1) as u64
        }
    }

    fn checksums(&self) -> bool {
        self.ro_compat & (RO_COMPAT_METADATA_CSUM | RO_COMPAT_GDT_CSUM) != 0
    }

    fn check_desc(&self, g: u64, desc: &[u8]) -> Result<()> {
        let stored = le16(desc, 0x1E);
        let le_group = (g as u32).to_le_bytes();
        let computed = if self.ro_compat & RO_COMPAT_METADATA_CSUM != 0 {
            let mut c = crc32c(self.csum_seed, &le_group);
            c = crc32c(c, &desc[..0x1E]);
            c = crc32c(c, &[0, 0]);
            c = crc32c(c, &desc[0x20..self.desc_size]);
            (c & 0xFFFF) as u16
        } else if self.ro_compat & RO_COMPAT_GDT_CSUM != 0 {
            let mut c = crc16(0xFFFF, &self.uuid);
            c = crc16(c, &le_group);
            c = crc16(c, &desc[..0x1E]);
            if self.desc_size > 0x20 {
                c = crc16(c, &desc[0x20..self.desc_size]);
            }
            c
        } else {
            return Ok(());
        };
        ensure!(
            computed == stored,
            "group {g}'s descriptor checksum is {stored:#06x}, computed {computed:#06x}"
        );
        Ok(())
    }
}

struct Group {
    block_bitmap: u64,
    inode_bitmap: u64,
    inode_table: u64,
    flags: u16,
    bitmap_csum: u32,
}

/// Every group's descriptor, checked, one block read per block of them.
fn read_groups(r: &Reader, sb: &Super) -> Result<Vec<Group>> {
    let bs = sb.bs;
    let is64 = sb.incompat & INCOMPAT_64BIT != 0;
    let csum_hi = sb.desc_size >= 0x3A;

    let mut groups = Vec::with_capacity(sb.groups as usize);
    let mut cached: Option<(u64, Vec<u8>)> = None;
    for g in 0..sb.groups {
        let (block, within) = sb.desc_location(g);
        ensure!(
            block < sb.blocks,
            "group {g}'s descriptor lies outside the filesystem"
        );
        if cached.as_ref().map(|c| c.0) != Some(block) {
            cached = Some((block, r.read(block * bs, bs as usize)?));
        }
        let buf = &cached.as_ref().unwrap().1;
        let desc = &buf[within..within + sb.desc_size];
        sb.check_desc(g, desc)?;
        let hi = |o: usize| {
            if is64 {
                (le32(desc, o) as u64) << 32
            } else {
                0
            }
        };
        groups.push(Group {
            block_bitmap: le32(desc, 0x0) as u64 | hi(0x20),
            inode_bitmap: le32(desc, 0x4) as u64 | hi(0x24),
            inode_table: le32(desc, 0x8) as u64 | hi(0x28),
            flags: le16(desc, 0x12),
            bitmap_csum: le16(desc, 0x18) as u32
                | if csum_hi {
                    (le16(desc, 0x38) as u32) << 16
                } else {
                    0
                },
        });
    }
    Ok(groups)
}

pub fn scan(r: &Reader, len: u64) -> Result<Usage> {
    let sb_bytes = r.read(1024, 1024)?;
    let sb = Super::parse(&sb_bytes)?;
    let bs = sb.bs;
    let fs_bytes = sb
        .blocks
        .checked_mul(bs)
        .with_context(|| format!("{} blocks of {bs} bytes overflow", sb.blocks))?;
    ensure!(
        fs_bytes <= len,
        "the filesystem ({fs_bytes} bytes) is larger than its partition ({len} bytes)"
    );
    let csum_hi = sb.desc_size >= 0x3A;
    let groups = read_groups(r, &sb)?;

    // Every group's metadata blocks, as (first, count).
    let itable_blocks = (sb.ipg * sb.inode_size).div_ceil(bs);
    let mut meta: Vec<(u64, u64)> = Vec::with_capacity(groups.len() * 3);
    for (g, d) in groups.iter().enumerate() {
        for (first, n) in [
            (d.block_bitmap, 1),
            (d.inode_bitmap, 1),
            (d.inode_table, itable_blocks),
        ] {
            ensure!(
                first >= sb.first_data_block
                    && first.checked_add(n).is_some_and(|e| e <= sb.blocks),
                "group {g}'s metadata at block {first} lies outside the filesystem"
            );
            meta.push((first, n));
        }
    }
    meta.sort_unstable();

    let mut used: Vec<ByteRange> = Vec::new();
    let mut push =
        |first: u64, n: u64| append_merged(&mut used, ByteRange::new(first * bs, n * bs));
    // The boot block before the first data block (1 KiB block filesystems).
    push(0, sb.first_data_block);
    let bitmap_bytes = (sb.bpg / 8) as usize;
    for (g, d) in groups.iter().enumerate() {
        let g = g as u64;
        let start = sb.group_first_block(g);
        let count = sb.bpg.min(sb.blocks - start);
        if sb.checksums() && d.flags & BG_BLOCK_UNINIT != 0 {
            push(start, sb.base_meta_blocks(g).min(count));
            let lo = meta.partition_point(|m| m.0 + m.1 <= start);
            for &(first, n) in meta[lo..].iter().take_while(|m| m.0 < start + count) {
                let a = first.max(start);
                let b = (first + n).min(start + count);
                push(a, b - a);
            }
            continue;
        }
        let bitmap = r.read(d.block_bitmap * bs, bitmap_bytes)?;
        if sb.ro_compat & RO_COMPAT_METADATA_CSUM != 0 {
            let c = crc32c(sb.csum_seed, &bitmap);
            let c = if csum_hi { c } else { c & 0xFFFF };
            ensure!(
                c == d.bitmap_csum,
                "group {g}'s block bitmap checksum does not match"
            );
        }
        let mut i = 0u64;
        while i < count {
            let set = |i: u64| bitmap[(i / 8) as usize] & (1 << (i % 8)) != 0;
            if !set(i) {
                i += 1;
                continue;
            }
            let s = i;
            while i < count && set(i) {
                i += 1;
            }
            push(start + s, i - s);
        }
    }
    // Whatever follows the filesystem in its partition.
    let mut used: Vec<ByteRange> = used
        .into_iter()
        .filter_map(|u| u.intersect(ByteRange::new(0, fs_bytes)))
        .collect();
    append_merged(&mut used, ByteRange::between(fs_bytes, len));
    Ok(Usage {
        kind: super::probe(&sb_bytes_with_offset(&sb_bytes)).unwrap_or(FsKind::Ext4),
        block_size: bs as u32,
        used,
        note: None,
    })
}

/// `probe` looks for the superblock at byte 1024; give it that.
fn sb_bytes_with_offset(sb: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; 2048];
    v[1024..].copy_from_slice(sb);
    v
}
