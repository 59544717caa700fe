//! Snapshot manifests: what a capture recorded about a disk, and where every byte of it lives.

use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};

use super::id::ChunkId;
use super::ChunkerParams;

pub const MANIFEST_FORMAT: &str = "lifeboat-snapshot";
pub const MANIFEST_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub name: String,
    /// RFC 3339, UTC.
    pub time: String,
    pub hostname: String,
    pub source: SourceInfo,
    pub disk: DiskInfo,
    pub chunker: ChunkerParams,
    /// The whole disk, cut into non-overlapping regions in ascending order.
    pub regions: Vec<Region>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceInfo {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    Gpt,
    Mbr,
    None,
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MbrInfo {
    /// "protective" (one 0xEE entry), "hybrid" (0xEE beside others) or "dos".
    pub kind: String,
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
    pub chunks: Vec<ChunkRef>,
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
    pub used: Vec<(u64, u64)>,
}

impl FsUsage {
    /// The free ranges of [start, end): the complement of `used`.
    pub fn free_ranges(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        complement(&self.used, start, end)
    }
}

/// The parts of [start, end) that none of the sorted (offset, length) `ranges` cover.
pub fn complement(ranges: &[(u64, u64)], start: u64, end: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut pos = start;
    for &(o, l) in ranges {
        if o > pos {
            out.push((pos, o.min(end) - pos));
        }
        pos = pos.max(o + l);
    }
    if end > pos {
        out.push((pos, end - pos));
    }
    out
}

impl Region {
    pub fn end(&self) -> u64 {
        self.offset + self.length
    }

    pub fn label(&self) -> String {
        match (self.kind, self.partition) {
            (RegionKind::Partition, Some(n)) => format!("partition {n}"),
            (kind, _) => format!("{kind:?} at {}", self.offset).to_lowercase(),
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
        self.regions
            .iter()
            .flat_map(|r| r.chunks.iter().filter_map(|c| c.id))
    }

    /// Sum of region bytes that are stored chunks.
    pub fn data_bytes(&self) -> u64 {
        self.regions
            .iter()
            .flat_map(|r| r.chunks.iter())
            .filter(|c| c.id.is_some())
            .map(|c| c.length as u64)
            .sum()
    }

    /// Check the structure: format and version known, regions tile the disk, chunks tile
    /// their region, no chunk larger than the chunker allows.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.format == MANIFEST_FORMAT,
            "format is {:?}, not {MANIFEST_FORMAT:?}",
            self.format
        );
        ensure!(
            self.version == MANIFEST_VERSION,
            "manifest version {} is not supported (this lifeboat reads version {MANIFEST_VERSION})",
            self.version
        );
        let ss = self.disk.logical_sector_size;
        ensure!(
            ss == 512 || ss == 4096,
            "logical sector size {ss} is not 512 or 4096"
        );
        let mut pos = 0u64;
        for r in &self.regions {
            ensure!(
                r.offset == pos,
                "{} starts at {} but the previous region ends at {pos}",
                r.label(),
                r.offset
            );
            if let Some(fs) = &r.filesystem {
                let mut end = r.offset;
                for &(o, l) in &fs.used {
                    ensure!(
                        o >= end && l > 0 && o + l <= r.end(),
                        "{}: used range at {o} is out of order or outside the region",
                        r.label()
                    );
                    end = o + l;
                }
            }
            let mut cpos = r.offset;
            for c in &r.chunks {
                ensure!(
                    c.offset == cpos,
                    "{}: chunk at {} does not follow the previous one ending at {cpos}",
                    r.label(),
                    c.offset
                );
                ensure!(c.length > 0, "{}: empty chunk at {}", r.label(), c.offset);
                ensure!(
                    !(c.free && c.id.is_some()),
                    "{}: chunk at {} is both stored and free",
                    r.label(),
                    c.offset
                );
                if c.id.is_some() {
                    ensure!(
                        c.length <= self.chunker.max_size,
                        "{}: chunk at {} is {} bytes, over the chunker maximum {}",
                        r.label(),
                        c.offset,
                        c.length,
                        self.chunker.max_size
                    );
                }
                cpos += c.length as u64;
            }
            ensure!(
                cpos == r.end(),
                "{}: chunks cover {} of {} bytes",
                r.label(),
                cpos - r.offset,
                r.length
            );
            pos = r.end();
        }
        if pos != self.disk.size {
            bail!(
                "regions cover {pos} bytes of a {}-byte disk",
                self.disk.size
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn complement_of_ranges() {
        let c = super::complement;
        assert_eq!(c(&[(10, 5), (20, 5)], 0, 30), [(0, 10), (15, 5), (25, 5)]);
        assert_eq!(c(&[(0, 30)], 0, 30), []);
        assert_eq!(c(&[], 5, 9), [(5, 4)]);
        assert_eq!(c(&[(2, 3), (4, 4)], 0, 10), [(0, 2), (8, 2)]);
    }
}
