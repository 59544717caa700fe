//! btrfs: the bytes in use are those btrfs has allocated on this device (the stripes of
//! its chunks, from the chunk tree), less what no extent uses inside them.
//!
//! partclone's btrfsclone walks every tree and marks the blocks it meets; its users got
//! images that would not mount, reported as success (trees it did not know, such as the
//! block-group tree). This reader relies on two tables btrfs keeps exact, each checked
//! against a counter btrfs keeps apart:
//! 1. the chunk tree: every chunk and where its stripes lie on each device. The stripes
//!    on this device must add up to its `bytes_used` (superblock's dev item). They are
//!    read, with the first MiB (boot area, primary superblock) and every superblock copy.
//! 2. the extent tree, when no log tree is pending (a clean unmount or a freeze): every
//!    allocated extent (data and tree blocks). Their lengths must add up to the
//!    superblock's `bytes_used`. Inside chunks whose stripes map logical bytes one to one
//!    (single, DUP, RAID1*), only those extents are read; so a fresh filesystem's empty
//!    metadata chunks are not stored.
//!
//! Every tree block's checksum (CRC-32C), filesystem id, address and level are checked.
//! An unknown incompatible feature, another checksum type, a pending log (step 2 only is
//! skipped), a sum that does not match: read in full (or step 1 only), with the reason.

use std::collections::BTreeMap;

use crate::disk::endian::{le16, le32, le64};
use anyhow::{bail, ensure, Context, Result};

use super::crc::crc32c;
use super::{FsKind, Reader, Usage};
use crate::range::{self, ByteRange};

const SUPER_OFFSET: u64 = 0x10000;
const SUPER_SIZE: usize = 4096;
const MAGIC: &[u8; 8] = b"_BHRfS_M";
/// Superblock copies (after the primary at 64 KiB): 64 MiB and 256 GiB.
const SUPER_MIRRORS: [u64; 3] = [0x10000, 64 << 20, 256 << 30];
/// Before the first chunk: the boot area and the primary superblock.
const RESERVED_HEAD: u64 = 1 << 20;
const HEADER: usize = 101;
const KEY: usize = 17;
const LEAF_ITEM: usize = KEY + 8;
const NODE_PTR: usize = KEY + 16;
const MAX_LEVEL: u8 = 7;
const SYS_CHUNK_ARRAY: usize = 0x32b;
const SYS_CHUNK_ARRAY_MAX: usize = 2048;

const CHUNK_ITEM: u8 = 228;
const ROOT_ITEM: u8 = 132;
const EXTENT_ITEM: u8 = 168;
const METADATA_ITEM: u8 = 169;
const EXTENT_TREE: u64 = 2;

/// Chunk profiles whose stripes each hold all of the chunk's bytes in order.
const PROFILE_RAID0: u64 = 1 << 3;
const PROFILE_RAID10: u64 = 1 << 6;
const PROFILE_RAID5: u64 = 1 << 7;
const PROFILE_RAID6: u64 = 1 << 8;
const PROFILE_STRIPED: u64 = PROFILE_RAID0 | PROFILE_RAID10 | PROFILE_RAID5 | PROFILE_RAID6;

const INCOMPAT_METADATA_UUID: u64 = 1 << 10;
/// mixed_backref, default_subvol, mixed_groups, lzo, zstd, big_metadata, extended_iref,
/// raid56, skinny_metadata, no_holes, metadata_uuid, raid1c34, simple_quota: none moves
/// chunks or extents out of the trees read here. (Zoned, extent tree v2 and the raid
/// stripe tree do.)
const INCOMPAT_KNOWN: u64 =
    0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x20 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800 | 0x10000;
/// free_space_tree (+ valid), verity, block_group_tree.
const COMPAT_RO_KNOWN: u64 = 0x1 | 0x2 | 0x4 | 0x8;

/// btrfs's CRC-32C over all but the checksum field, stored little-endian in its first 4
/// bytes.
fn csum_ok(block: &[u8]) -> bool {
    le32(block, 0) == !crc32c(!0, &block[0x20..])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    objectid: u64,
    kind: u8,
    offset: u64,
}

impl Key {
    fn parse(b: &[u8]) -> Key {
        Key {
            objectid: le64(b, 0),
            kind: b[8],
            offset: le64(b, 9),
        }
    }
}

#[derive(Debug)]
struct Super {
    /// The id tree blocks carry (the metadata UUID where one is set).
    meta_fsid: [u8; 16],
    root: u64,
    root_level: u8,
    chunk_root: u64,
    chunk_root_level: u8,
    log_root: u64,
    bytes_used: u64,
    num_devices: u64,
    sector_size: u32,
    node_size: u32,
    devid: u64,
    dev_total: u64,
    dev_used: u64,
    sys_chunks: Vec<u8>,
}

impl Super {
    fn parse(sb: &[u8], len: u64) -> Result<Super> {
        ensure!(&sb[0x40..0x48] == MAGIC, "no btrfs superblock");
        let csum_type = le16(sb, 0xc4);
        if csum_type != 0 {
            bail!("checksum type {csum_type} (only CRC-32C is read)");
        }
        ensure!(csum_ok(sb), "the superblock's checksum does not match");
        ensure!(
            le64(sb, 0x30) == SUPER_OFFSET,
            "the superblock is not at 64 KiB"
        );
        let incompat = le64(sb, 0xbc);
        if incompat & !INCOMPAT_KNOWN != 0 {
            bail!(
                "unknown incompatible features {:#x}",
                incompat & !INCOMPAT_KNOWN
            );
        }
        let compat_ro = le64(sb, 0xb4);
        if compat_ro & !COMPAT_RO_KNOWN != 0 {
            bail!(
                "unknown read-only-compatible features {:#x}",
                compat_ro & !COMPAT_RO_KNOWN
            );
        }
        let sector_size = le32(sb, 0x90);
        let node_size = le32(sb, 0x94);
        ensure!(
            sector_size.is_power_of_two() && (4096..=65536).contains(&sector_size),
            "sector size {sector_size}"
        );
        ensure!(
            node_size.is_power_of_two()
                && node_size >= sector_size
                && (4096..=65536).contains(&node_size),
            "node size {node_size}"
        );
        let sys_len = le32(sb, 0xa0) as usize;
        ensure!(
            sys_len <= SYS_CHUNK_ARRAY_MAX,
            "system chunk array of {sys_len} bytes"
        );
        let dev = 0xc9;
        let dev_total = le64(sb, dev + 8);
        ensure!(
            dev_total <= len,
            "the device ({dev_total} bytes) is larger than its partition ({len} bytes)"
        );
        let fsid: [u8; 16] = sb[0x20..0x30].try_into().unwrap();
        let meta_fsid = if incompat & INCOMPAT_METADATA_UUID != 0 {
            sb[0x23b..0x24b].try_into().unwrap()
        } else {
            fsid
        };
        ensure!(
            sb[dev + 82..dev + 98] == fsid,
            "the device item names another filesystem"
        );
        Ok(Super {
            meta_fsid,
            root: le64(sb, 0x50),
            root_level: sb[0xc6],
            chunk_root: le64(sb, 0x58),
            chunk_root_level: sb[0xc7],
            log_root: le64(sb, 0x60),
            bytes_used: le64(sb, 0x78),
            num_devices: le64(sb, 0x88),
            sector_size,
            node_size,
            devid: le64(sb, dev),
            dev_total,
            dev_used: le64(sb, dev + 16),
            sys_chunks: sb[SYS_CHUNK_ARRAY..SYS_CHUNK_ARRAY + sys_len].to_vec(),
        })
    }
}

/// A chunk: `length` logical bytes from its key's offset, in stripes on devices.
#[derive(Debug, Clone)]
struct Chunk {
    length: u64,
    profile: u64,
    /// (devid, physical offset) of each stripe.
    stripes: Vec<(u64, u64)>,
    /// Bytes of each stripe on its device.
    stripe_size: u64,
}

impl Chunk {
    /// Parse a chunk item (`b` is exactly its bytes).
    fn parse(b: &[u8]) -> Result<Chunk> {
        ensure!(b.len() >= 48 + 32, "a chunk item of {} bytes", b.len());
        let length = le64(b, 0);
        let profile = le64(b, 24);
        let n = le16(b, 44) as usize;
        let sub = le16(b, 46) as u64;
        ensure!(
            n >= 1 && b.len() == 48 + 32 * n,
            "a chunk item of {} bytes for {n} stripes",
            b.len()
        );
        ensure!(length > 0, "an empty chunk");
        let stripes = (0..n)
            .map(|i| (le64(b, 48 + 32 * i), le64(b, 56 + 32 * i)))
            .collect();
        let n = n as u64;
        // How many stripes share the data (the rest are mirrors or parity).
        let data_stripes = match profile {
            p if p & PROFILE_RAID10 != 0 => n / sub.max(1),
            p if p & PROFILE_RAID0 != 0 => n,
            p if p & PROFILE_RAID5 != 0 => n.saturating_sub(1),
            p if p & PROFILE_RAID6 != 0 => n.saturating_sub(2),
            _ => 1,
        };
        ensure!(
            data_stripes >= 1 && length.is_multiple_of(data_stripes),
            "a chunk of {length} bytes over {data_stripes} data stripes"
        );
        Ok(Chunk {
            length,
            profile,
            stripes,
            stripe_size: length / data_stripes,
        })
    }

    /// Whether every stripe holds the chunk's bytes in order (logical = physical + k).
    fn is_linear(&self) -> bool {
        self.profile & PROFILE_STRIPED == 0
    }
}

/// Find which bytes of a btrfs device are in use.
pub fn scan(r: &Reader, len: u64) -> Result<Usage> {
    ensure!(
        len > SUPER_OFFSET + SUPER_SIZE as u64,
        "too small for btrfs"
    );
    let sb = Super::parse(&r.read(SUPER_OFFSET, SUPER_SIZE)?, len)?;
    let mut fs = Btrfs {
        r,
        sb,
        chunks: BTreeMap::new(),
        visited: 0,
    };
    fs.read_chunk_tree().context("its chunk tree")?;
    let allocated = fs.allocated()?;
    let mut fixed = vec![ByteRange::new(0, RESERVED_HEAD.min(len))];
    for m in SUPER_MIRRORS {
        if m + SUPER_SIZE as u64 <= fs.sb.dev_total {
            fixed.push(ByteRange::new(m, SUPER_SIZE as u64));
        }
    }
    let (used, note) = match fs.why_not_extents() {
        Some(why) => (allocated, Some(why)),
        None => (fs.extents_in(&allocated).context("its extent tree")?, None),
    };
    // Past the device's end as btrfs knows it, the partition is read.
    fixed.push(ByteRange::between(fs.sb.dev_total, len));
    let mut all: Vec<ByteRange> = used
        .into_iter()
        .chain(fixed)
        .filter(|r| !r.is_empty())
        .collect();
    all.sort_unstable();
    let mut merged = Vec::with_capacity(all.len());
    for x in all {
        range::append_merged(&mut merged, x);
    }
    Ok(Usage {
        kind: FsKind::Btrfs,
        block_size: fs.sb.sector_size,
        used: merged,
        note,
    })
}

struct Btrfs<'a> {
    r: &'a Reader<'a>,
    sb: Super,
    /// By logical start.
    chunks: BTreeMap<u64, Chunk>,
    visited: u64,
}

impl Btrfs<'_> {
    /// The chunk map: the superblock's system chunks, then every chunk of the chunk tree.
    fn read_chunk_tree(&mut self) -> Result<()> {
        let sys = std::mem::take(&mut self.sb.sys_chunks);
        let mut at = 0;
        while at < sys.len() {
            ensure!(
                at + KEY + 48 <= sys.len(),
                "the system chunk array is cut short"
            );
            let key = Key::parse(&sys[at..]);
            ensure!(
                key.kind == CHUNK_ITEM,
                "a system chunk array item of type {}",
                key.kind
            );
            let n = le16(&sys, at + KEY + 44) as usize;
            let end = at + KEY + 48 + 32 * n;
            ensure!(end <= sys.len(), "the system chunk array is cut short");
            self.add_chunk(key.offset, Chunk::parse(&sys[at + KEY..end])?)?;
            at = end;
        }
        let mut found = Vec::new();
        self.walk(
            self.sb.chunk_root,
            self.sb.chunk_root_level,
            &mut |key, data| {
                if key.kind == CHUNK_ITEM {
                    found.push((key.offset, Chunk::parse(data)?));
                }
                Ok(())
            },
        )?;
        for (logical, chunk) in found {
            match self.chunks.get(&logical) {
                // System chunks are in both; they must agree.
                Some(c) => ensure!(
                    c.length == chunk.length && c.stripes == chunk.stripes,
                    "the chunk at {logical} differs from the superblock's copy"
                ),
                None => self.add_chunk(logical, chunk)?,
            }
        }
        Ok(())
    }

    fn add_chunk(&mut self, logical: u64, c: Chunk) -> Result<()> {
        let end = logical
            .checked_add(c.length)
            .context("a chunk beyond 2^64")?;
        let overlaps = self
            .chunks
            .range(..end)
            .next_back()
            .is_some_and(|(&s, o)| s + o.length > logical);
        ensure!(!overlaps, "chunks overlap at {logical}");
        for &(devid, phys) in &c.stripes {
            if devid == self.sb.devid {
                ensure!(
                    phys.checked_add(c.stripe_size)
                        .is_some_and(|e| e <= self.sb.dev_total),
                    "a stripe at {phys} lies beyond the device"
                );
            }
        }
        self.chunks.insert(logical, c);
        Ok(())
    }

    /// The stripes on this device, which must add up to its bytes_used.
    fn allocated(&self) -> Result<Vec<ByteRange>> {
        let mut out: Vec<ByteRange> = self
            .chunks
            .values()
            .flat_map(|c| {
                c.stripes
                    .iter()
                    .filter(|s| s.0 == self.sb.devid)
                    .map(|s| ByteRange::new(s.1, c.stripe_size))
            })
            .collect();
        out.sort_unstable();
        for w in out.windows(2) {
            ensure!(
                w[0].end() <= w[1].offset,
                "stripes overlap at {}",
                w[1].offset
            );
        }
        let total = range::total(&out);
        ensure!(
            total == self.sb.dev_used,
            "its chunks take {total} bytes of this device, its device item says {}",
            self.sb.dev_used
        );
        Ok(out)
    }

    /// Why only whole chunks are read, if they are.
    fn why_not_extents(&self) -> Option<String> {
        if self.sb.log_root != 0 {
            return Some(
                "a log tree is pending (mounted, or not cleanly unmounted): its chunks are \
                 read whole"
                    .into(),
            );
        }
        if self.sb.num_devices != 1 {
            return Some(format!(
                "one of {} devices: its chunks are read whole",
                self.sb.num_devices
            ));
        }
        None
    }

    /// The physical ranges of this device that allocated extents use, within linear
    /// chunks; striped chunks' stripes are kept whole.
    fn extents_in(&mut self, allocated: &[ByteRange]) -> Result<Vec<ByteRange>> {
        let (root, level) = self.extent_root()?;
        let node = self.sb.node_size as u64;
        let mut logical: Vec<ByteRange> = Vec::new();
        let mut total = 0u64;
        self.walk(root, level, &mut |key, _| {
            let len = match key.kind {
                EXTENT_ITEM => key.offset,
                METADATA_ITEM => node,
                _ => return Ok(()),
            };
            ensure!(
                len > 0 && key.objectid.checked_add(len).is_some(),
                "an extent of {len} bytes at {}",
                key.objectid
            );
            total += len;
            let r = ByteRange::new(key.objectid, len);
            ensure!(
                logical.last().is_none_or(|l| l.end() <= r.offset),
                "extents overlap or are out of order at {}",
                r.offset
            );
            range::append_merged(&mut logical, r);
            Ok(())
        })?;
        ensure!(
            total == self.sb.bytes_used,
            "its extents add up to {total} bytes, its superblock says {}",
            self.sb.bytes_used
        );
        let mut out = Vec::new();
        for (&start, c) in &self.chunks {
            let mine = c.stripes.iter().filter(|s| s.0 == self.sb.devid);
            if !c.is_linear() {
                out.extend(mine.map(|s| ByteRange::new(s.1, c.stripe_size)));
                continue;
            }
            let chunk = ByteRange::new(start, c.length);
            let inside: Vec<ByteRange> =
                logical.iter().filter_map(|e| e.intersect(chunk)).collect();
            for &(_, phys) in mine {
                out.extend(
                    inside
                        .iter()
                        .map(|e| ByteRange::new(e.offset - start + phys, e.len)),
                );
            }
        }
        // Every extent lies in a chunk.
        let in_chunks: u64 = self
            .chunks
            .iter()
            .map(|(&s, c)| {
                logical
                    .iter()
                    .filter_map(|e| e.intersect(ByteRange::new(s, c.length)))
                    .map(|e| e.len)
                    .sum::<u64>()
            })
            .sum();
        ensure!(
            in_chunks == range::total(&logical),
            "some extents lie outside every chunk"
        );
        out.retain(|r| allocated.iter().any(|a| a.contains(*r)));
        Ok(out)
    }

    /// The extent tree's root, from the root tree.
    fn extent_root(&mut self) -> Result<(u64, u8)> {
        let mut found = None;
        self.walk(self.sb.root, self.sb.root_level, &mut |key, data| {
            if key.objectid == EXTENT_TREE && key.kind == ROOT_ITEM {
                ensure!(data.len() >= 239, "a root item of {} bytes", data.len());
                found = Some((le64(data, 176), data[238]));
            }
            Ok(())
        })?;
        found.context("no extent tree in the root tree")
    }

    /// The physical offset on this device of a logical address's node.
    fn physical(&self, logical: u64) -> Result<u64> {
        let (&start, c) = self
            .chunks
            .range(..=logical)
            .next_back()
            .filter(|(&s, c)| logical - s < c.length)
            .with_context(|| format!("no chunk maps logical address {logical}"))?;
        ensure!(c.is_linear(), "tree block {logical} is in a striped chunk");
        let &(_, phys) = c
            .stripes
            .iter()
            .find(|s| s.0 == self.sb.devid)
            .with_context(|| format!("tree block {logical} is on another device"))?;
        Ok(phys + (logical - start))
    }

    /// Visit every item of the tree whose root is at `logical`, at `level`.
    fn walk(
        &mut self,
        logical: u64,
        level: u8,
        visit: &mut dyn FnMut(Key, &[u8]) -> Result<()>,
    ) -> Result<()> {
        ensure!(level <= MAX_LEVEL, "a tree of level {level}");
        self.visited += 1;
        ensure!(
            self.visited <= self.sb.dev_total / self.sb.node_size as u64,
            "more tree blocks than the device holds (a cycle)"
        );
        let node = self.sb.node_size as usize;
        let b = self.r.read(self.physical(logical)?, node)?;
        let at = format!("tree block {logical}");
        ensure!(csum_ok(&b), "{at}: checksum does not match");
        ensure!(
            b[0x20..0x30] == self.sb.meta_fsid,
            "{at}: belongs to another filesystem"
        );
        ensure!(
            le64(&b, 0x30) == logical,
            "{at}: says it is at {}",
            le64(&b, 0x30)
        );
        ensure!(b[0x64] == level, "{at}: level {} not {level}", b[0x64]);
        let n = le32(&b, 0x60) as usize;
        if level == 0 {
            ensure!(n <= (node - HEADER) / LEAF_ITEM, "{at}: {n} items");
            for i in 0..n {
                let item = HEADER + LEAF_ITEM * i;
                let key = Key::parse(&b[item..]);
                let (off, size) = (
                    le32(&b, item + KEY) as usize,
                    le32(&b, item + KEY + 4) as usize,
                );
                let data = HEADER
                    .checked_add(off)
                    .filter(|&s| s >= HEADER + LEAF_ITEM * n && s + size <= node)
                    .with_context(|| format!("{at}: item {i} lies outside it"))?;
                visit(key, &b[data..data + size]).with_context(|| at.clone())?;
            }
            return Ok(());
        }
        ensure!(
            (1..=(node - HEADER) / NODE_PTR).contains(&n),
            "{at}: {n} pointers"
        );
        for i in 0..n {
            let child = le64(&b, HEADER + NODE_PTR * i + KEY);
            self.walk(child, level - 1, visit)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn striped_chunks_spread_their_length_over_data_stripes() {
        let mut b = vec![0u8; 48 + 32 * 4];
        b[..8].copy_from_slice(&(64u64 << 20).to_le_bytes());
        b[24..32].copy_from_slice(&PROFILE_RAID10.to_le_bytes());
        b[44..46].copy_from_slice(&4u16.to_le_bytes());
        b[46..48].copy_from_slice(&2u16.to_le_bytes());
        let c = Chunk::parse(&b).unwrap();
        assert_eq!(c.stripe_size, 32 << 20);
        assert!(!c.is_linear());
        // A DUP chunk: two stripes, each the whole chunk.
        let mut d = vec![0u8; 48 + 32 * 2];
        d[..8].copy_from_slice(&(8u64 << 20).to_le_bytes());
        d[24..32].copy_from_slice(&(32u64 | 4).to_le_bytes());
        d[44..46].copy_from_slice(&2u16.to_le_bytes());
        let c = Chunk::parse(&d).unwrap();
        assert_eq!((c.stripe_size, c.stripes.len()), (8 << 20, 2));
        assert!(c.is_linear());
        // A stripe count the item's size does not hold.
        d[44..46].copy_from_slice(&3u16.to_le_bytes());
        assert!(Chunk::parse(&d).is_err());
    }
}
