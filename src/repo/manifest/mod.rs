//! Snapshot manifests: what a capture recorded about a disk, and where every byte of it lives.

mod validate;

use std::fmt;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::id::ChunkId;
use super::ChunkerParams;
use crate::range::{self, ByteRange};

pub const MANIFEST_FORMAT: &str = "lifeboat-snapshot";
/// Version 1: one disk. Version 2: a machine of several disks (`more_disks`); a
/// snapshot of one disk is still written as version 1, which every reader takes.
pub const MANIFEST_VERSION: u32 = 1;
pub const MANIFEST_VERSION_MULTI_DISK: u32 = 2;
/// The most disks one snapshot may hold.
pub const MAX_DISKS: usize = 64;
/// No disk is larger than this (1 PiB): a size beyond it is an error, not a plan.
pub const MAX_DISK_SIZE: u64 = 1 << 50;
/// The most a manifest file may hold. It is parsed as it streams in, into about half its
/// size in memory: 1 GiB of JSON is some 11 million chunks, a fully used disk of about
/// 700 GB at the default chunk size.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 30;
/// The most a sealed (compressed and encrypted) manifest may take; it is read whole
/// before it is opened.
pub const MAX_SEALED_MANIFEST_BYTES: u64 = 256 << 20;
/// The most a table region (primary or backup) may hold: 128-byte entries by the
/// thousand fit in a few hundred KiB; 64 MiB leaves room for any real layout.
pub const MAX_TABLE_REGION: u64 = 64 << 20;
/// The longest snapshot name.
pub const MAX_NAME: usize = 64;

/// The one rule for snapshot names, wherever one is given (`capture`, `schedule`,
/// `status`): 1 to 64 letters, digits, `-`, `_` and `.`, beginning with a letter or a
/// digit; so that a name is also a systemd unit's and a file's.
pub fn parse_name(name: &str) -> Result<String, String> {
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let all_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    match first_ok && all_ok && name.len() <= MAX_NAME {
        true => Ok(name.to_string()),
        false => Err(format!(
            "{name:?} is not a snapshot name: 1 to {MAX_NAME} letters, digits, '-', '_' or '.', beginning with a letter or a digit"
        )),
    }
}

/// This machine's name as the default snapshot name: the host name up to its first dot
/// (`web01` of `web01.example.com`), or `localhost` when it makes no valid name.
pub fn default_name() -> String {
    let host = crate::who::hostname();
    let short = host.split('.').next().unwrap_or_default().to_string();
    parse_name(&short).unwrap_or_else(|_| "localhost".into())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub name: String,
    /// RFC 3339, UTC.
    pub time: String,
    pub hostname: String,
    /// The repository it was captured into (its config id): a signature binds the
    /// snapshot to it, so a signed snapshot copied into another repository is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// The newest snapshot of the same name when this one was captured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<super::id::SnapshotId>,
    /// 1 for a name's first snapshot, then one more than its parent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    /// How the disk was read when something may have been writing to it; absent for a
    /// disk nothing was writing to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<Consistency>,
    pub source: SourceInfo,
    pub disk: DiskInfo,
    pub chunker: ChunkerParams,
    /// The whole disk, cut into non-overlapping regions in ascending order.
    pub regions: Vec<Region>,
    /// The machine's other disks, captured in the same snapshot: disks 1, 2, ... (the
    /// fields above are disk 0).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_disks: Vec<DiskImage>,
}

/// One more disk of a snapshot: what the top-level fields say of disk 0.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiskImage {
    pub source: SourceInfo,
    pub disk: DiskInfo,
    pub regions: Vec<Region>,
}

/// A capture of a disk in use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consistency {
    pub kind: ConsistencyKind,
    /// What was using the disk (and, for a live capture, how it was made consistent).
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConsistencyKind {
    /// Read while in use, as the user accepted (`--crash-consistent`): what a power cut
    /// at some moment would have left, at best; files written during the capture may
    /// be torn.
    CrashConsistent,
    /// Read while in use, from copy-on-write snapshots taken for it (`--live`):
    /// consistent as of the moment they were taken, as after a power cut at that moment
    /// with the filesystems frozen.
    Live,
}

impl fmt::Display for ConsistencyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConsistencyKind::CrashConsistent => "crash-consistent",
            ConsistencyKind::Live => "live",
        })
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SourceInfo {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// World Wide Name, where the disk has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    Gpt,
    Mbr,
    None,
}

impl fmt::Display for TableKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TableKind::Gpt => "gpt",
            TableKind::Mbr => "mbr",
            TableKind::None => "none",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiskInfo {
    pub size: u64,
    pub logical_sector_size: u32,
    pub table: TableKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpt: Option<GptInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mbr: Option<MbrInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GptInfo {
    pub disk_guid: String,
    pub first_usable_lba: u64,
    pub last_usable_lba: u64,
    pub partition_entry_lba: u64,
    pub num_partition_entries: u32,
    pub partition_entry_size: u32,
    pub partitions: Vec<GptPartition>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GptPartition {
    pub number: u32,
    pub type_guid: String,
    pub unique_guid: String,
    pub name: String,
    pub attributes: u64,
    pub first_lba: u64,
    pub last_lba: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MbrKind {
    /// One 0xEE entry covering a GPT disk.
    Protective,
    /// 0xEE beside other entries.
    Hybrid,
    /// A classic DOS partition table.
    Dos,
}

impl fmt::Display for MbrKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MbrKind::Protective => "protective",
            MbrKind::Hybrid => "hybrid",
            MbrKind::Dos => "dos",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MbrInfo {
    pub kind: MbrKind,
    pub disk_signature: u32,
    pub entries: Vec<MbrEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MbrEntry {
    pub index: u8,
    pub bootable: bool,
    pub os_type: u8,
    pub first_lba: u32,
    pub sectors: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RegionKind {
    /// Protective MBR, primary GPT header and entries.
    Table,
    /// Bytes outside any partition: boot code, gaps between partitions.
    Gap,
    Partition,
    /// Backup GPT entries and header at the end of the disk.
    BackupTable,
    /// A disk with an MBR or no table, captured whole.
    Disk,
}

impl fmt::Display for RegionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RegionKind::Table => "table",
            RegionKind::Gap => "gap",
            RegionKind::Partition => "partition",
            RegionKind::BackupTable => "backup-table",
            RegionKind::Disk => "disk",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Region {
    pub kind: RegionKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    pub offset: u64,
    pub length: u64,
    /// BLAKE3 of the region's bytes, holes included, and free filesystem space (see
    /// `filesystem`) taken as zeros.
    pub blake3: String,
    /// Present when only the blocks a filesystem uses were read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<FsUsage>,
    #[serde(deserialize_with = "chunks_in_blocks")]
    pub chunks: Vec<ChunkRef>,
}

/// Hand memory freed so far back to the system at once (mimalloc, the binary's
/// allocator, keeps it for a while otherwise; without mimalloc this does nothing).
fn release_freed_memory() {
    // SAFETY: a plain call into the allocator's own collection; no pointers are passed.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// A region's chunk list, gathered in blocks and moved into one exact vector at the end:
/// growing one vector by doubling would, at its last step, hold the old and the new
/// buffer at once (three times the list's size for a disk's millions of chunks).
fn chunks_in_blocks<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ChunkRef>, D::Error> {
    struct Blocks;
    impl<'de> serde::de::Visitor<'de> for Blocks {
        type Value = Vec<ChunkRef>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of chunks")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            const BLOCK: usize = 1 << 16;
            let mut blocks: Vec<Vec<ChunkRef>> = Vec::new();
            let mut block = Vec::with_capacity(BLOCK);
            while let Some(c) = seq.next_element()? {
                block.push(c);
                if block.len() == BLOCK {
                    blocks.push(std::mem::replace(&mut block, Vec::with_capacity(BLOCK)));
                }
            }
            if blocks.is_empty() {
                block.shrink_to_fit();
                return Ok(block);
            }
            let mut all = Vec::with_capacity(blocks.len() * BLOCK + block.len());
            for b in blocks {
                all.extend(b);
                release_freed_memory();
            }
            all.extend(block);
            Ok(all)
        }
    }
    d.deserialize_seq(Blocks)
}

/// What a filesystem-aware capture found: the filesystem and the byte ranges it read: the
/// blocks in use, and free runs too short to be worth skipping. Everything else in the
/// region is free: its content was not read, counts as zeros in the region's hash, and a
/// restore need not write it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FsUsage {
    #[serde(rename = "type")]
    pub kind: String,
    pub block_size: u32,
    /// Sum of the used ranges' lengths.
    pub used_bytes: u64,
    /// Ranges read, as [offset on the disk, length], ascending, not overlapping.
    pub used: Vec<ByteRange>,
}

impl FsUsage {
    /// The free ranges of `within`: the complement of `used`.
    pub fn free_ranges(&self, within: ByteRange) -> Vec<ByteRange> {
        range::complement(&self.used, within)
    }
}

impl Region {
    pub fn end(&self) -> u64 {
        self.offset + self.length
    }

    pub fn range(&self) -> ByteRange {
        ByteRange::new(self.offset, self.length)
    }

    /// Free filesystem space in the region (empty when all of it was read).
    pub fn free_ranges(&self) -> Vec<ByteRange> {
        self.filesystem
            .as_ref()
            .map(|f| f.free_ranges(self.range()))
            .unwrap_or_default()
    }

    pub fn label(&self) -> String {
        match (self.kind, self.partition) {
            (RegionKind::Partition, Some(n)) => format!("partition {n}"),
            (kind, _) => format!("{kind} at {}", self.offset),
        }
    }
}

/// One piece of a region: a stored chunk or a run of zeros ("hole") that is not stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkRef {
    /// Byte offset on the disk.
    pub offset: u64,
    pub length: u32,
    /// None for a hole (zeros) or free space.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<ChunkId>,
    /// Free filesystem space: not stored, and a restore need not write it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub free: bool,
}

impl Manifest {
    /// Every chunk id the manifest refers to, with repeats.
    pub fn chunk_ids(&self) -> impl Iterator<Item = ChunkId> + '_ {
        self.all_regions()
            .flat_map(|r| r.chunks.iter().filter_map(|c| c.id))
    }

    /// Every region of every disk.
    pub fn all_regions(&self) -> impl Iterator<Item = &Region> + '_ {
        self.regions
            .iter()
            .chain(self.more_disks.iter().flat_map(|d| d.regions.iter()))
    }

    /// Sum of region bytes that are stored chunks, on every disk.
    pub fn data_bytes(&self) -> u64 {
        self.all_regions()
            .flat_map(|r| r.chunks.iter())
            .filter(|c| c.id.is_some())
            .map(|c| c.length as u64)
            .sum()
    }

    /// How many disks the snapshot holds.
    pub fn disk_count(&self) -> usize {
        1 + self.more_disks.len()
    }

    /// The sizes of all its disks, added up.
    pub fn total_size(&self) -> u64 {
        self.disk.size + self.more_disks.iter().map(|d| d.disk.size).sum::<u64>()
    }

    /// What each disk is: (source, disk) of disk 0, 1, ...
    pub fn disks(&self) -> impl Iterator<Item = (&SourceInfo, &DiskInfo)> + '_ {
        std::iter::once((&self.source, &self.disk))
            .chain(self.more_disks.iter().map(|d| (&d.source, &d.disk)))
    }

    /// Its disks' source paths, or table kinds, joined for a line: "a.img, b.img".
    pub fn joined(&self, what: impl Fn(&SourceInfo, &DiskInfo) -> String) -> String {
        self.disks()
            .map(|(s, d)| what(s, d))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Add another disk (the version follows).
    pub fn push_disk(&mut self, d: DiskImage) {
        self.more_disks.push(d);
        self.version = MANIFEST_VERSION_MULTI_DISK;
    }

    /// One snapshot of one disk per disk, in order, each with this one's name, time and
    /// lineage: what restores, exports and drills work with.
    pub fn into_disks(mut self) -> Vec<Manifest> {
        let more = std::mem::take(&mut self.more_disks);
        self.version = MANIFEST_VERSION;
        let rest: Vec<Manifest> = more
            .into_iter()
            .map(|d| Manifest {
                source: d.source,
                disk: d.disk,
                regions: d.regions,
                ..self.header()
            })
            .collect();
        std::iter::once(self).chain(rest).collect()
    }

    /// The fields that are not about one disk, with an empty disk 0.
    fn header(&self) -> Manifest {
        Manifest {
            format: self.format.clone(),
            version: self.version,
            name: self.name.clone(),
            time: self.time.clone(),
            hostname: self.hostname.clone(),
            repository: self.repository.clone(),
            parent: self.parent,
            sequence: self.sequence,
            consistency: self.consistency.clone(),
            source: SourceInfo::default(),
            disk: self.disk.clone(),
            chunker: self.chunker,
            regions: Vec::new(),
            more_disks: Vec::new(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A 4 MiB GPT disk with 512-byte sectors: the primary table, a gap of zeros to 1 MiB,
    /// one partition (chunks, a 64 KiB hole at 2 MiB, 512 KiB of free space at 3 MiB) and
    /// the backup table. Chunk ids are their ordinal in every byte.
    pub(crate) fn sample_manifest() -> Manifest {
        const K: u64 = 1024;
        const M: u64 = 1 << 20;
        let size = 4 * M;
        let backup = 8159 * 512;
        let mut n = 0u8;
        let mut chunk = |offset: u64, length: u64| {
            n += 1;
            ChunkRef {
                offset,
                length: length as u32,
                id: Some(ChunkId([n; 32])),
                free: false,
            }
        };
        let hole = |offset: u64, length: u64, free: bool| ChunkRef {
            offset,
            length: length as u32,
            id: None,
            free,
        };
        let table = vec![chunk(0, 34 * 512)];
        let gap = vec![hole(34 * 512, M - 34 * 512, false)];
        let mut part: Vec<ChunkRef> = (0..4).map(|i| chunk(M + i * 256 * K, 256 * K)).collect();
        part.push(hole(2 * M, 64 * K, false));
        let mut pos = 2 * M + 64 * K;
        for len in [256 * K, 256 * K, 256 * K, 192 * K] {
            part.push(chunk(pos, len));
            pos += len;
        }
        part.push(hole(3 * M, 512 * K, true));
        part.push(chunk(3 * M + 512 * K, 256 * K));
        part.push(chunk(3 * M + 768 * K, backup - (3 * M + 768 * K)));
        let tail = vec![chunk(backup, size - backup)];
        let region = |kind, partition, offset: u64, end: u64, chunks| Region {
            kind,
            partition,
            offset,
            length: end - offset,
            blake3: String::new(),
            filesystem: None,
            chunks,
        };
        Manifest {
            format: MANIFEST_FORMAT.into(),
            version: MANIFEST_VERSION,
            name: "sample".into(),
            time: "2026-12-01T00:00:00Z".into(),
            hostname: "test".into(),
            repository: None,
            parent: None,
            sequence: None,
            consistency: None,
            source: SourceInfo {
                path: "sample.img".into(),
                ..SourceInfo::default()
            },
            disk: DiskInfo {
                size,
                logical_sector_size: 512,
                table: TableKind::Gpt,
                gpt: Some(GptInfo {
                    disk_guid: String::new(),
                    first_usable_lba: 34,
                    last_usable_lba: 8158,
                    partition_entry_lba: 2,
                    num_partition_entries: 128,
                    partition_entry_size: 128,
                    partitions: vec![],
                }),
                mbr: None,
            },
            chunker: ChunkerParams::default(),
            regions: vec![
                region(RegionKind::Table, None, 0, 34 * 512, table),
                region(RegionKind::Gap, None, 34 * 512, M, gap),
                region(RegionKind::Partition, Some(1), M, backup, part),
                region(RegionKind::BackupTable, None, backup, size, tail),
            ],
            more_disks: Vec::new(),
        }
    }

    #[test]
    fn the_sample_holds_together() {
        let m = sample_manifest();
        m.validate().unwrap();
        assert_eq!(m.chunk_ids().count(), 12);
        assert_eq!(
            m.data_bytes(),
            4 * (1 << 20) - (1 << 20) + 34 * 512 - (576 << 10)
        );
    }

    #[test]
    fn kinds_print_as_stored() {
        assert_eq!(TableKind::Gpt.to_string(), "gpt");
        assert_eq!(
            serde_json::to_string(&MbrKind::Protective).unwrap(),
            format!("\"{}\"", MbrKind::Protective)
        );
        assert_eq!(
            serde_json::to_string(&RegionKind::BackupTable).unwrap(),
            format!("\"{}\"", RegionKind::BackupTable)
        );
        let m = sample_manifest();
        assert_eq!(m.regions[0].label(), "table at 0");
        assert_eq!(m.regions[2].label(), "partition 1");
    }
}
