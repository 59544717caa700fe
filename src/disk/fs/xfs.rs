//! XFS (version 5, with metadata checksums): the blocks in use are all but those the
//! free-space B+tree of each allocation group (bnobt) lists as free.
//!
//! What is trusted, and checked first: the primary superblock (its CRC, sizes and
//! features), a clean log (the record before the log's head must be an unmount record
//! whose CRC matches), and in each allocation group the AGF header (CRC, number,
//! length) and every block of its bnobt (magic, level, owner, address, filesystem UUID,
//! CRC; records sorted, disjoint, inside the group), whose free blocks must add up to the
//! AGF's own count. The AGFL's blocks are not in the bnobt, so they are read as used
//! (they hold no data yet, but a free-list block given back to the bnobt later must not
//! be garbage in an image of this moment). Anything else is an error and the caller reads
//! the whole filesystem: a version 4 filesystem, `NEEDSREPAIR`, unknown incompatible or
//! read-only-compatible features, an external log or a realtime section, a log that
//! needs recovery (mounted, or not cleanly unmounted), a header whose checksum fails.
//!
//! partclone's xfsclone walks the same tree through libxfs but trusts a dirty log and
//! skips no check of the counts; xfs_repair's phase 2 and 5 do the checks made here.

use crate::disk::endian::{be16, be32, be64};
use anyhow::{bail, ensure, Context, Result};

use super::crc::crc32c;
use super::{FsKind, Reader, Usage};
use crate::range::{self, ByteRange};

const SB_MAGIC: &[u8; 4] = b"XFSB";
const AGF_MAGIC: &[u8; 4] = b"XAGF";
const AGFL_MAGIC: &[u8; 4] = b"XAFL";
/// The bnobt's block magic in version 5 filesystems ("AB3B").
const BNOBT_MAGIC: &[u8; 4] = b"AB3B";
const LOG_MAGIC: u32 = 0xFEED_BABE;
/// A log block (a "basic block") is always 512 bytes.
const BB: u64 = 512;

const INCOMPAT_NEEDSREPAIR: u32 = 1 << 4;
const INCOMPAT_META_UUID: u32 = 1 << 2;
/// ftype, sparse inodes, meta_uuid, bigtime, nrext64, exchange-range, parent pointers:
/// none of them changes where free space is recorded.
const INCOMPAT_KNOWN: u32 = 0x1 | 0x2 | 0x4 | 0x8 | 0x20 | 0x40 | 0x80;
/// finobt, rmapbt, reflink, inobtcount: other trees beside the bnobt, which is unchanged.
const RO_COMPAT_KNOWN: u32 = 0x1 | 0x2 | 0x4 | 0x8;
/// The most allocation groups whose headers are read (1 Mi; mkfs makes at most a few
/// thousand).
const MAX_AGS: u32 = 1 << 20;
/// The deepest bnobt a reader follows (XFS's own limit for these trees is 9 levels).
const MAX_LEVELS: u32 = 9;
/// Short-form B+tree block header of version 5 (with blkno, lsn, uuid, owner, crc).
const BTREE_HEADER: usize = 56;
/// The CRC of each header lies at these offsets (stored little-endian, inverted).
const SB_CRC: usize = 224;
const AGF_CRC: usize = 216;
const AGFL_CRC: usize = 32;
const BTREE_CRC: usize = 52;
/// The fixed part of a log record header, CRC included at 32 (the C struct's size).
const LOG_HEADER: usize = 328;
const LOG_CRC: usize = 32;
/// Each header block of a log record describes at most 32 KiB of data.
const LOG_HEADER_CYCLE: u64 = 32 * 1024;
/// Log records are at most 256 KiB of data; iclogs in flight at most 8 of them.
const MAX_RECORD_BBS: u64 = 2 * (256 * 1024) / BB;
const UNMOUNT_TRANS: u8 = 0x20;

/// XFS's metadata CRC: CRC-32C of the buffer with its CRC field taken as zero, stored
/// little-endian.
fn crc_ok(buf: &[u8], at: usize) -> bool {
    let c = crc32c(!0, &buf[..at]);
    let c = crc32c(c, &[0; 4]);
    let c = !crc32c(c, &buf[at + 4..]);
    u32::from_le_bytes(buf[at..at + 4].try_into().unwrap()) == c
}

/// What the superblock says, checked.
#[derive(Debug)]
struct Super {
    block_size: u64,
    sector_size: u64,
    /// Blocks in the data section.
    blocks: u64,
    ag_blocks: u32,
    ag_count: u32,
    /// log2 of the AG size rounded up: fsblock numbers are (agno << ag_blklog) | agbno.
    ag_blklog: u32,
    log_start: u64,
    log_blocks: u32,
    /// Free blocks, as written at the last clean unmount or freeze.
    free_blocks: u64,
    /// The UUID metadata blocks carry.
    meta_uuid: [u8; 16],
}

impl Super {
    fn parse(sb: &[u8], len: u64) -> Result<Super> {
        ensure!(sb.len() >= 512 && &sb[..4] == SB_MAGIC, "no XFS superblock");
        let block_size = be32(sb, 4) as u64;
        let sector_size = be16(sb, 102) as u64;
        ensure!(
            block_size.is_power_of_two() && (512..=65536).contains(&block_size),
            "block size {block_size}"
        );
        ensure!(
            sector_size.is_power_of_two()
                && (512..=32768).contains(&sector_size)
                && sector_size <= block_size,
            "sector size {sector_size}"
        );
        ensure!(
            sb.len() == sector_size as usize,
            "the superblock's sector is not {sector_size} bytes"
        );
        let version = be16(sb, 100) & 0xF;
        if version != 5 {
            bail!("version {version} (without metadata checksums) is not supported");
        }
        ensure!(
            crc_ok(sb, SB_CRC),
            "the superblock's checksum does not match"
        );
        let incompat = be32(sb, 216);
        if incompat & INCOMPAT_NEEDSREPAIR != 0 {
            bail!("it is marked as needing repair (NEEDSREPAIR): run xfs_repair");
        }
        if incompat & !INCOMPAT_KNOWN != 0 {
            bail!(
                "unknown incompatible features {:#x}",
                incompat & !INCOMPAT_KNOWN
            );
        }
        let ro_compat = be32(sb, 212);
        if ro_compat & !RO_COMPAT_KNOWN != 0 {
            bail!(
                "unknown read-only-compatible features {:#x}",
                ro_compat & !RO_COMPAT_KNOWN
            );
        }
        if sb[126] != 0 {
            bail!("mkfs did not finish (sb_inprogress)");
        }
        if be64(sb, 16) != 0 {
            bail!("it has a realtime section");
        }
        let log_start = be64(sb, 48);
        if log_start == 0 {
            bail!("its log is on an external device");
        }
        let blocks = be64(sb, 8);
        let ag_blocks = be32(sb, 84);
        let ag_count = be32(sb, 88);
        let ag_blklog = sb[124] as u32;
        ensure!(
            sb[120] as u64 == block_size.trailing_zeros() as u64,
            "block size and its log disagree"
        );
        ensure!(
            (1..=MAX_AGS).contains(&ag_count) && ag_blocks >= 64 && ag_blklog < 32,
            "{ag_count} allocation groups of {ag_blocks} blocks"
        );
        ensure!(
            (ag_blocks as u64) <= 1u64 << ag_blklog && (ag_blocks as u64) > (1u64 << ag_blklog) / 2,
            "agblklog {ag_blklog} does not fit {ag_blocks} blocks per group"
        );
        let full_ags = (ag_count as u64 - 1) * ag_blocks as u64;
        ensure!(
            blocks > full_ags && blocks <= full_ags + ag_blocks as u64,
            "{blocks} blocks do not make {ag_count} groups of {ag_blocks}"
        );
        let bytes = blocks
            .checked_mul(block_size)
            .context("filesystem size overflows")?;
        ensure!(
            bytes <= len,
            "the filesystem ({bytes} bytes) is larger than its partition ({len} bytes)"
        );
        let mut meta_uuid: [u8; 16] = sb[32..48].try_into().unwrap();
        if incompat & INCOMPAT_META_UUID != 0 {
            meta_uuid = sb[248..264].try_into().unwrap();
        }
        Ok(Super {
            block_size,
            sector_size,
            blocks,
            ag_blocks,
            ag_count,
            ag_blklog,
            log_start,
            log_blocks: be32(sb, 96),
            free_blocks: be64(sb, 144),
            meta_uuid,
        })
    }

    /// The byte offset of block `agbno` of group `agno`.
    fn offset(&self, agno: u32, agbno: u32) -> u64 {
        (agno as u64 * self.ag_blocks as u64 + agbno as u64) * self.block_size
    }

    /// The length in blocks of group `agno` (the last may be short).
    fn ag_length(&self, agno: u32) -> u32 {
        let start = agno as u64 * self.ag_blocks as u64;
        (self.blocks - start).min(self.ag_blocks as u64) as u32
    }
}

/// Find which bytes of an XFS filesystem are in use.
pub fn scan(r: &Reader, len: u64) -> Result<Usage> {
    let head = r.read(0, 512)?;
    ensure!(&head[..4] == SB_MAGIC, "no XFS superblock");
    let sector = (be16(&head, 102) as usize).clamp(512, 32768);
    let sb = Super::parse(&r.read(0, sector)?, len)?;
    check_log(r, &sb).context("its log")?;
    let mut free = Vec::new();
    let mut counted = 0u64;
    for agno in 0..sb.ag_count {
        let ag = ag_free(r, &sb, agno).with_context(|| format!("allocation group {agno}"))?;
        counted += ag.counted;
        free.extend(ag.free);
    }
    // With a clean log the superblock's count is current (it is written at unmount and
    // freeze), and is what the kernel derives from the AGFs at mount.
    ensure!(
        counted == sb.free_blocks,
        "its allocation groups count {counted} free blocks, its superblock {}",
        sb.free_blocks
    );
    // Past the filesystem's end, the partition is read: it is not XFS's to call free.
    let fs = ByteRange::new(0, sb.blocks * sb.block_size);
    let mut used = range::complement(&free, fs);
    range::append_merged(&mut used, ByteRange::between(fs.end(), len));
    Ok(Usage {
        kind: FsKind::Xfs,
        block_size: sb.block_size as u32,
        used,
        note: None,
    })
}

/// One allocation group's free space.
struct AgFree {
    /// From its bnobt: byte ranges of the filesystem, ascending.
    free: Vec<ByteRange>,
    /// Its AGF's free, free-list and B+tree blocks, as the superblock counts them.
    counted: u64,
}

/// One allocation group's free space, from its AGF and bnobt.
fn ag_free(r: &Reader, sb: &Super, agno: u32) -> Result<AgFree> {
    let base = sb.offset(agno, 0);
    let agf = r.read(base + sb.sector_size, sb.sector_size as usize)?;
    ensure!(&agf[..4] == AGF_MAGIC, "no AGF header (bad magic)");
    ensure!(crc_ok(&agf, AGF_CRC), "the AGF's checksum does not match");
    ensure!(be32(&agf, 4) == 1, "AGF version {}", be32(&agf, 4));
    ensure!(
        be32(&agf, 8) == agno,
        "the AGF says it is group {}",
        be32(&agf, 8)
    );
    let length = be32(&agf, 12);
    ensure!(
        length == sb.ag_length(agno),
        "the AGF's length {length} is not the group's {}",
        sb.ag_length(agno)
    );
    ensure!(
        agf[64..80] == sb.meta_uuid,
        "the AGF belongs to another filesystem"
    );
    let root = be32(&agf, 16);
    let levels = be32(&agf, 28);
    let free_blocks = be32(&agf, 52);
    ensure!(
        (1..=MAX_LEVELS).contains(&levels) && root > 0 && root < length,
        "bnobt root {root} at level {levels}"
    );
    let mut tree = Bnobt {
        r,
        sb,
        agno,
        length,
        records: Vec::new(),
        visited: 0,
    };
    tree.walk(root, levels - 1)?;
    let counted: u64 = tree.records.iter().map(|&(_, n)| n as u64).sum();
    ensure!(
        counted == free_blocks as u64,
        "its bnobt lists {counted} free blocks, its AGF {free_blocks}"
    );
    let free: Vec<ByteRange> = tree
        .records
        .iter()
        .map(|&(start, n)| ByteRange::new(sb.offset(agno, start), n as u64 * sb.block_size))
        .collect();
    check_agfl(r, sb, agno, &agf, &free)?;
    Ok(AgFree {
        free,
        counted: free_blocks as u64 + be32(&agf, 48) as u64 + be32(&agf, 60) as u64,
    })
}

/// The free list's blocks (kept for B+tree splits) are not free space: check that the
/// bnobt agrees.
fn check_agfl(r: &Reader, sb: &Super, agno: u32, agf: &[u8], free: &[ByteRange]) -> Result<()> {
    let agfl = r.read(
        sb.offset(agno, 0) + 3 * sb.sector_size,
        sb.sector_size as usize,
    )?;
    ensure!(&agfl[..4] == AGFL_MAGIC, "no AGFL header (bad magic)");
    ensure!(
        crc_ok(&agfl, AGFL_CRC),
        "the AGFL's checksum does not match"
    );
    let size = (sb.sector_size as u32 - 36) / 4;
    let (first, last, count) = (be32(agf, 40), be32(agf, 44), be32(agf, 48));
    ensure!(
        first < size && last < size && count <= size,
        "free list {first}..{last} ({count}) of {size} slots"
    );
    for i in 0..count {
        let slot = (first + i) % size;
        let agbno = be32(&agfl, 36 + 4 * slot as usize);
        let at = ByteRange::new(sb.offset(agno, agbno), sb.block_size);
        ensure!(
            agbno < sb.ag_length(agno) && !free.iter().any(|f| f.intersect(at).is_some()),
            "free-list block {agbno} is also free space"
        );
    }
    Ok(())
}

/// A walk of one group's bnobt, collecting its (start, count) records.
struct Bnobt<'a> {
    r: &'a Reader<'a>,
    sb: &'a Super,
    agno: u32,
    length: u32,
    records: Vec<(u32, u32)>,
    visited: u32,
}

impl Bnobt<'_> {
    fn walk(&mut self, agbno: u32, level: u32) -> Result<()> {
        ensure!(
            agbno > 0 && agbno < self.length,
            "bnobt block {agbno} lies outside the group"
        );
        self.visited += 1;
        ensure!(self.visited <= self.length, "the bnobt has a cycle");
        let bs = self.sb.block_size as usize;
        let b = self.r.read(self.sb.offset(self.agno, agbno), bs)?;
        let at = format!("bnobt block {agbno}");
        ensure!(&b[..4] == BNOBT_MAGIC, "{at}: bad magic");
        ensure!(crc_ok(&b, BTREE_CRC), "{at}: checksum does not match");
        ensure!(
            be16(&b, 4) as u32 == level,
            "{at}: level {} not {level}",
            be16(&b, 4)
        );
        let daddr = self.sb.offset(self.agno, agbno) / BB;
        ensure!(
            be64(&b, 16) == daddr,
            "{at}: says it is at sector {}",
            be64(&b, 16)
        );
        ensure!(
            b[32..48] == self.sb.meta_uuid,
            "{at}: belongs to another filesystem"
        );
        ensure!(
            be32(&b, 48) == self.agno,
            "{at}: owned by group {}",
            be32(&b, 48)
        );
        let n = be16(&b, 6) as usize;
        if level == 0 {
            ensure!(n <= (bs - BTREE_HEADER) / 8, "{at}: {n} records");
            for i in 0..n {
                let o = BTREE_HEADER + 8 * i;
                self.record(be32(&b, o), be32(&b, o + 4))
                    .with_context(|| at.clone())?;
            }
            return Ok(());
        }
        let max = (bs - BTREE_HEADER) / 12;
        ensure!((1..=max).contains(&n), "{at}: {n} pointers");
        for i in 0..n {
            let child = be32(&b, BTREE_HEADER + 8 * max + 4 * i);
            self.walk(child, level - 1)?;
        }
        Ok(())
    }

    fn record(&mut self, start: u32, count: u32) -> Result<()> {
        ensure!(
            count > 0
                && (start as u64 + count as u64) <= self.length as u64
                && self
                    .records
                    .last()
                    .is_none_or(|&(s, n)| s as u64 + n as u64 <= start as u64),
            "free extent {start}+{count} is out of order or outside the group"
        );
        self.records.push((start, count));
        Ok(())
    }
}

/// The log must be clean: the record that ends at its head is an unmount record.
fn check_log(r: &Reader, sb: &Super) -> Result<()> {
    let bbs_per_block = sb.block_size / BB;
    let agno = (sb.log_start >> sb.ag_blklog) as u32;
    let agbno = (sb.log_start & ((1u64 << sb.ag_blklog) - 1)) as u32;
    ensure!(
        agno < sb.ag_count
            && (agbno as u64 + sb.log_blocks as u64) <= sb.ag_length(agno) as u64
            && sb.log_blocks >= 64,
        "{} log blocks at {}/{agbno}",
        sb.log_blocks,
        agno
    );
    let log = Log {
        r,
        start: sb.offset(agno, agbno),
        bbs: sb.log_blocks as u64 * bbs_per_block,
    };
    let first = log.cycle(0)?;
    if first == 0 {
        // Never written (mkfs always writes an unmount record, so this is not XFS's own
        // doing): nothing to recover.
        bail!("it has never been written (zeroed)");
    }
    let head = log.head(first)?;
    log.unmount_record_before(head, first)
}

/// The internal log, as an array of 512-byte blocks.
struct Log<'a> {
    r: &'a Reader<'a>,
    start: u64,
    bbs: u64,
}

impl Log<'_> {
    fn block(&self, bb: u64, n: u64) -> Result<Vec<u8>> {
        self.r.read(self.start + bb * BB, (n * BB) as usize)
    }

    /// The cycle number a block was last written in: the word after a record header's
    /// magic, or the first word of a data block (XFS stamps it there).
    fn cycle(&self, bb: u64) -> Result<u32> {
        let b = self.block(bb, 1)?;
        Ok(match be32(&b, 0) {
            LOG_MAGIC => be32(&b, 4),
            c => c,
        })
    }

    /// The first block not written in cycle `first` (the log's end if all were): where
    /// the next record would go. No block of that cycle may follow it within the reach
    /// of records in flight, or the log was torn by a crash.
    fn head(&self, first: u32) -> Result<u64> {
        let last = self.cycle(self.bbs - 1)?;
        let head = if last == first {
            self.bbs
        } else {
            ensure!(
                last == first - 1 || last == 0,
                "cycles {first} and {last} at its ends"
            );
            // cycle(lo) == first, cycle(hi) != first.
            let (mut lo, mut hi) = (0, self.bbs - 1);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if self.cycle(mid)? == first {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            hi
        };
        let reach = MAX_RECORD_BBS * 8;
        let after = head..(head + reach).min(self.bbs);
        if !after.is_empty() {
            let b = self.block(after.start, after.end - after.start)?;
            for (i, word) in b.chunks(BB as usize).enumerate() {
                let c = match be32(word, 0) {
                    LOG_MAGIC => be32(word, 4),
                    c => c,
                };
                ensure!(
                    c != first,
                    "block {} after the head ({head}) was written in the head's cycle: \
                     the log was torn and needs recovery",
                    after.start + i as u64
                );
            }
        }
        Ok(head)
    }

    /// Find the record header that ends at `head`, check its CRC, and that it is an
    /// unmount record.
    fn unmount_record_before(&self, head: u64, cycle: u32) -> Result<()> {
        let from = head.saturating_sub(MAX_RECORD_BBS + 8);
        let span = self.block(from, head - from)?;
        let found = (from..head)
            .rev()
            .find(|&bb| be32(&span[((bb - from) * BB) as usize..], 0) == LOG_MAGIC)
            .context("no record header before its head")?;
        let h = &span[((found - from) * BB) as usize..];
        ensure!(be32(h, 4) == cycle, "the last record is of another cycle");
        let version = be32(h, 8);
        let data_len = be32(h, 12) as u64;
        let iclog = match version {
            2 => be32(h, 320) as u64,
            1 => LOG_HEADER_CYCLE,
            v => bail!("log record version {v}"),
        };
        ensure!(
            data_len > 0 && data_len <= iclog && iclog <= 256 * 1024,
            "a record of {data_len} bytes in a {iclog}-byte buffer"
        );
        let header_bbs = match version {
            2 => iclog.div_ceil(LOG_HEADER_CYCLE).max(1),
            _ => 1,
        };
        let end = found + header_bbs + data_len.div_ceil(BB);
        if end != head {
            bail!(
                "it needs recovery (its last record, at block {found}, does not end at its \
                 head, block {head}: mounted, or not cleanly unmounted)"
            );
        }
        let rec = &span[((found - from) * BB) as usize..((end - from) * BB) as usize];
        let mut c = crc32c(!0, &rec[..LOG_CRC]);
        c = crc32c(c, &[0; 4]);
        c = crc32c(c, &rec[LOG_CRC + 4..LOG_HEADER]);
        for x in 1..header_bbs {
            c = crc32c(
                c,
                &rec[(x * BB) as usize..(x * BB) as usize + LOG_HEADER_EXT],
            );
        }
        c = !crc32c(c, &rec[(header_bbs * BB) as usize..][..data_len as usize]);
        // mkfs.xfs and xfs_repair (libxfs) write the record that clears a log without a
        // checksum; the kernel, finding the log clean, does not ask for one either.
        let stored = u32::from_le_bytes(h[LOG_CRC..LOG_CRC + 4].try_into().unwrap());
        ensure!(
            stored == c || stored == 0,
            "its last record's checksum does not match"
        );
        let data = &rec[(header_bbs * BB) as usize..];
        if be32(h, 40) != 1 || data[9] & UNMOUNT_TRANS == 0 {
            bail!(
                "it needs recovery (its last record is not an unmount record: mounted, or \
                 not cleanly unmounted)"
            );
        }
        Ok(())
    }
}

/// An extended record header: a cycle word and 64 saved data words.
const LOG_HEADER_EXT: usize = 260;
