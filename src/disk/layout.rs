//! Partition tables: read a disk's GPT or MBR into the manifest's terms and cut the disk into
//! regions; move a backup GPT to the end of a larger disk.

use std::io::Cursor;

use anyhow::{bail, Context, Result};
use gpt::disk::LogicalBlockSize;

use super::SourceDisk;
use crate::repo::manifest::{
    DiskInfo, GptInfo, GptPartition, MbrEntry, MbrInfo, MbrKind, RegionKind, TableKind,
};

/// A region before capture: where it is and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionPlan {
    pub kind: RegionKind,
    pub partition: Option<u32>,
    pub offset: u64,
    pub length: u64,
}

pub struct Layout {
    pub disk: DiskInfo,
    pub regions: Vec<RegionPlan>,
    /// Why the table was not used to cut regions, when it was not.
    pub notes: Vec<String>,
}

fn lb(ss: u32) -> Result<LogicalBlockSize> {
    match ss {
        512 => Ok(LogicalBlockSize::Lb512),
        4096 => Ok(LogicalBlockSize::Lb4096),
        other => bail!("logical sector size {other} is not supported (512 or 4096)"),
    }
}

/// Find the sector size: the kernel's for a block device, the given one, or for an image
/// the one at which a GPT header is found (512 when there is none).
pub fn sector_size(dev: &SourceDisk, given: Option<u32>) -> Result<u32> {
    if let Some(ss) = dev.sector_size {
        if let Some(g) = given {
            if g != ss {
                bail!(
                    "{} has {ss}-byte logical sectors, not {g}",
                    dev.path.display()
                );
            }
        }
        return Ok(ss);
    }
    if let Some(g) = given {
        lb(g)?;
        return Ok(g);
    }
    for ss in [512u32, 4096] {
        if dev.size >= ss as u64 * 2 {
            let mut sig = [0u8; 8];
            dev.read_at(&mut sig, ss as u64)?;
            if &sig == b"EFI PART" {
                return Ok(ss);
            }
        }
    }
    Ok(512)
}

/// Parse the MBR in sector 0, if there is a plausible one.
pub fn read_mbr(sector0: &[u8], disk_sectors: u64) -> Option<MbrInfo> {
    if sector0.len() < 512 || sector0[510] != 0x55 || sector0[511] != 0xAA {
        return None;
    }
    let mut entries = Vec::new();
    for i in 0..4u8 {
        let e = &sector0[446 + 16 * i as usize..][..16];
        let boot = e[0];
        let os_type = e[4];
        let first = u32::from_le_bytes(e[8..12].try_into().unwrap());
        let sectors = u32::from_le_bytes(e[12..16].try_into().unwrap());
        if os_type == 0 && first == 0 && sectors == 0 {
            continue;
        }
        // A FAT or NTFS boot sector also ends in 55 AA; its "entries" are not plausible.
        let plausible_end = os_type == 0xEE || (first as u64 + sectors as u64) <= disk_sectors;
        if (boot != 0 && boot != 0x80) || os_type == 0 || !plausible_end {
            return None;
        }
        entries.push(MbrEntry {
            index: i + 1,
            bootable: boot == 0x80,
            os_type,
            first_lba: first,
            sectors,
        });
    }
    if entries.is_empty() {
        return None;
    }
    let has_ee = entries.iter().any(|e| e.os_type == 0xEE);
    let kind = match (has_ee, entries.len()) {
        (true, 1) => MbrKind::Protective,
        (true, _) => MbrKind::Hybrid,
        _ => MbrKind::Dos,
    };
    Some(MbrInfo {
        kind,
        disk_signature: u32::from_le_bytes(sector0[440..444].try_into().unwrap()),
        entries,
    })
}

fn read_gpt(dev: &SourceDisk, ss: u32) -> Result<Option<GptInfo>> {
    let mut hdr = vec![0u8; ss as usize];
    if dev.size < 2 * ss as u64 {
        return Ok(None);
    }
    dev.read_at(&mut hdr, ss as u64)?;
    if &hdr[..8] != b"EFI PART" {
        return Ok(None);
    }
    let part_size = u32::from_le_bytes(hdr[84..88].try_into().unwrap());
    if part_size != 128 {
        bail!("GPT partition entries are {part_size} bytes; only 128-byte entries are supported");
    }
    let disk = gpt::GptConfig::new()
        .writable(false)
        .logical_block_size(lb(ss)?)
        .open_from_device(DeviceCursor { dev, pos: 0 })
        .context("read GPT")?;
    if let Err(e) = disk.primary_header() {
        log::warn!(
            "primary GPT header of {} is damaged ({e}); using the backup",
            dev.path.display()
        );
    }
    let h = disk.header();
    let mut partitions: Vec<GptPartition> = disk
        .partitions()
        .iter()
        .filter(|(_, p)| p.is_used())
        .map(|(n, p)| GptPartition {
            number: *n,
            type_guid: p
                .part_type_guid
                .guid
                .hyphenated()
                .to_string()
                .to_uppercase(),
            unique_guid: p.part_guid.hyphenated().to_string().to_uppercase(),
            name: p.name.clone(),
            attributes: p.flags,
            first_lba: p.first_lba,
            last_lba: p.last_lba,
        })
        .collect();
    partitions.sort_by_key(|p| p.first_lba);
    Ok(Some(GptInfo {
        disk_guid: h.disk_guid.hyphenated().to_string().to_uppercase(),
        first_usable_lba: h.first_usable,
        last_usable_lba: h.last_usable,
        partition_entry_lba: h.part_start,
        num_partition_entries: h.num_parts,
        partition_entry_size: h.part_size,
        partitions,
    }))
}

/// Cut a GPT disk into table, gaps, partitions and backup table; an error says why the
/// table cannot be trusted to do so.
fn gpt_regions(g: &GptInfo, ss: u64, size: u64) -> Result<Vec<RegionPlan>> {
    let table_end = g.first_usable_lba * ss;
    let backup_start = (g.last_usable_lba + 1) * ss;
    if g.first_usable_lba < 2 || table_end > backup_start || backup_start > size {
        bail!(
            "usable LBAs {}..{} do not fit a {size}-byte disk",
            g.first_usable_lba,
            g.last_usable_lba
        );
    }
    let mut regions = vec![RegionPlan {
        kind: RegionKind::Table,
        partition: None,
        offset: 0,
        length: table_end,
    }];
    let mut pos = table_end;
    for p in &g.partitions {
        let start = p.first_lba * ss;
        let end = (p.last_lba + 1) * ss;
        if p.last_lba < p.first_lba || start < pos || end > backup_start {
            bail!(
                "partition {} (LBA {}..{}) overlaps another or lies outside the usable area",
                p.number,
                p.first_lba,
                p.last_lba
            );
        }
        if start > pos {
            regions.push(RegionPlan {
                kind: RegionKind::Gap,
                partition: None,
                offset: pos,
                length: start - pos,
            });
        }
        regions.push(RegionPlan {
            kind: RegionKind::Partition,
            partition: Some(p.number),
            offset: start,
            length: end - start,
        });
        pos = end;
    }
    if backup_start > pos {
        regions.push(RegionPlan {
            kind: RegionKind::Gap,
            partition: None,
            offset: pos,
            length: backup_start - pos,
        });
    }
    if size > backup_start {
        regions.push(RegionPlan {
            kind: RegionKind::BackupTable,
            partition: None,
            offset: backup_start,
            length: size - backup_start,
        });
    }
    Ok(regions)
}

pub fn read_layout(dev: &SourceDisk, given_ss: Option<u32>) -> Result<Layout> {
    let ss = sector_size(dev, given_ss)?;
    if dev.size % ss as u64 != 0 {
        bail!(
            "{} is {} bytes, not a whole number of {ss}-byte sectors",
            dev.path.display(),
            dev.size
        );
    }
    let mut sector0 = vec![0u8; 512.min(dev.size as usize)];
    dev.read_at(&mut sector0, 0)?;
    let mbr = read_mbr(&sector0, dev.size / ss as u64);
    let mut notes = Vec::new();
    let gpt = match read_gpt(dev, ss) {
        Ok(g) => g,
        Err(e) => {
            notes.push(format!(
                "GPT not usable ({e:#}); captured as one whole-disk region"
            ));
            None
        }
    };
    let whole = vec![RegionPlan {
        kind: RegionKind::Disk,
        partition: None,
        offset: 0,
        length: dev.size,
    }];
    let (table, regions) = match &gpt {
        Some(g) => match gpt_regions(g, ss as u64, dev.size) {
            Ok(r) => (TableKind::Gpt, r),
            Err(e) => {
                notes.push(format!(
                    "GPT is inconsistent ({e:#}); captured as one whole-disk region"
                ));
                (TableKind::Gpt, whole)
            }
        },
        None if mbr.is_some() => (TableKind::Mbr, whole),
        None => (TableKind::None, whole),
    };
    let regions = regions.into_iter().filter(|r| r.length > 0).collect();
    Ok(Layout {
        disk: DiskInfo {
            size: dev.size,
            logical_sector_size: ss,
            table,
            gpt,
            mbr,
        },
        regions,
        notes,
    })
}

/// A GPT rewritten for its target by [`relocate_gpt`].
pub struct Relocated {
    /// The backup area: entries, then the header in the last sector.
    pub area: Vec<u8>,
    pub area_offset: u64,
    /// With `grow`: the partition extended and its new size in bytes.
    pub grown: Option<(u32, u64)>,
}

/// Rewrite a GPT for a target of `new_size` bytes (at least the captured size): the primary
/// header (inside `head`, the disk's first bytes) is pointed at a backup in the new last
/// sector and its last usable LBA moved to match; with `grow`, the partition that ends last
/// is extended to that LBA. Returns the new backup area.
pub fn relocate_gpt(head: &mut [u8], ss: u32, new_size: u64, grow: bool) -> Result<Relocated> {
    let lbs = lb(ss)?;
    let ssz = ss as u64;
    let mut cursor = Cursor::new(&mut *head);
    let mut header = gpt::header::read_header_from_arbitrary_device(&mut cursor, lbs)
        .context("read the primary GPT header to move its backup")?;
    let entries_bytes = header.num_parts as u64 * header.part_size as u64;
    let entries_sectors = entries_bytes.div_ceil(ssz);
    let last_lba = new_size / ssz - 1;
    let entries_start = header.part_start * ssz;
    if entries_start + entries_bytes > head.len() as u64 {
        bail!("the GPT entries lie beyond the first {} bytes", head.len());
    }
    header.backup_lba = last_lba;
    header.last_usable = last_lba - entries_sectors - 1;

    let mut grown = None;
    if grow {
        // The used entry with the highest last LBA.
        let es = header.part_size as usize;
        let base = entries_start as usize;
        let last = (0..header.num_parts as usize)
            .map(|i| (i, &head[base + i * es..base + (i + 1) * es]))
            .filter(|(_, e)| e[..16].iter().any(|&b| b != 0))
            .max_by_key(|(_, e)| u64::from_le_bytes(e[40..48].try_into().unwrap()))
            .map(|(i, e)| (i, u64::from_le_bytes(e[32..40].try_into().unwrap())));
        let Some((i, first_lba)) = last else {
            bail!("--grow: the GPT has no partition to grow");
        };
        let at = base + i * es + 40;
        head[at..at + 8].copy_from_slice(&header.last_usable.to_le_bytes());
        grown = Some((i as u32 + 1, (header.last_usable - first_lba + 1) * ssz));
    }
    let entries = head[entries_start as usize..(entries_start + entries_bytes) as usize].to_vec();

    let mut cursor = Cursor::new(&mut *head);
    header
        .write_primary(&mut cursor, lbs)
        .context("rewrite the primary GPT header")?;

    let backup_entries_lba = last_lba - entries_sectors;
    let area_start = backup_entries_lba * ssz;
    let mut area = vec![0u8; ((entries_sectors + 1) * ssz) as usize];
    area[..entries.len()].copy_from_slice(&entries);
    let mut backup = header.clone();
    backup.current_lba = last_lba;
    backup.backup_lba = 1;
    backup.part_start = backup_entries_lba;
    // write_backup reads the entries at part_start of the device it is given: give it the
    // area, addressed as if it sat at its real place.
    let mut shifted = ShiftedCursor {
        inner: Cursor::new(&mut area),
        base: area_start,
    };
    backup
        .write_backup(&mut shifted, lbs)
        .context("write the backup GPT header")?;
    Ok(Relocated {
        area,
        area_offset: area_start,
        grown,
    })
}

/// A Read + Seek view of a device (file, block device or NBD export), for the gpt crate.
#[derive(Debug)]
struct DeviceCursor<'a> {
    dev: &'a SourceDisk,
    pos: u64,
}

impl std::io::Read for DeviceCursor<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.dev.read_partial(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl std::io::Write for DeviceCursor<'_> {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::Error::other("read-only"))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::io::Seek for DeviceCursor<'_> {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.pos = match pos {
            std::io::SeekFrom::Start(n) => n,
            std::io::SeekFrom::End(d) => self
                .dev
                .size
                .checked_add_signed(d)
                .ok_or_else(|| std::io::Error::other("seek"))?,
            std::io::SeekFrom::Current(d) => self
                .pos
                .checked_add_signed(d)
                .ok_or_else(|| std::io::Error::other("seek"))?,
        };
        Ok(self.pos)
    }
}

/// A cursor over a buffer that stands for the bytes at `base..` of a disk.
struct ShiftedCursor<'a> {
    inner: Cursor<&'a mut Vec<u8>>,
    base: u64,
}

impl std::io::Read for ShiftedCursor<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}

impl std::io::Write for ShiftedCursor<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::io::Seek for ShiftedCursor<'_> {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        use std::io::SeekFrom;
        let p = match pos {
            SeekFrom::Start(n) => SeekFrom::Start(n.checked_sub(self.base).ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the area")
            })?),
            other => other,
        };
        Ok(self.inner.seek(p)? + self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mbr_recognised_and_boot_sector_not() {
        let mut s = vec![0u8; 512];
        s[510] = 0x55;
        s[511] = 0xAA;
        assert!(read_mbr(&s, 1000).is_none(), "no entries is no table");
        s[446 + 4] = 0x83;
        s[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
        s[446 + 12..446 + 16].copy_from_slice(&100u32.to_le_bytes());
        let m = read_mbr(&s, 4096).unwrap();
        assert_eq!(m.kind, MbrKind::Dos);
        assert_eq!(m.entries[0].first_lba, 2048);
        // Past the end of the disk: not a plausible table.
        assert!(read_mbr(&s, 1000).is_none());
        s[446] = 0x12;
        assert!(read_mbr(&s, 4096).is_none());
    }

    fn gpt(first: u64, last: u64, parts: &[(u32, u64, u64)]) -> GptInfo {
        GptInfo {
            disk_guid: String::new(),
            first_usable_lba: first,
            last_usable_lba: last,
            partition_entry_lba: 2,
            num_partition_entries: 128,
            partition_entry_size: 128,
            partitions: parts
                .iter()
                .map(|&(number, first_lba, last_lba)| GptPartition {
                    number,
                    type_guid: String::new(),
                    unique_guid: String::new(),
                    name: String::new(),
                    attributes: 0,
                    first_lba,
                    last_lba,
                })
                .collect(),
        }
    }

    #[test]
    fn a_gpt_disk_is_cut_into_tables_gaps_and_partitions() {
        let g = gpt(34, 8158, &[(1, 2048, 4095), (2, 6144, 8158)]);
        let r = gpt_regions(&g, 512, 8192 * 512).unwrap();
        let cut: Vec<(RegionKind, Option<u32>, u64, u64)> = r
            .iter()
            .map(|r| (r.kind, r.partition, r.offset / 512, r.length / 512))
            .collect();
        assert_eq!(
            cut,
            vec![
                (RegionKind::Table, None, 0, 34),
                (RegionKind::Gap, None, 34, 2014),
                (RegionKind::Partition, Some(1), 2048, 2048),
                (RegionKind::Gap, None, 4096, 2048),
                (RegionKind::Partition, Some(2), 6144, 2015),
                (RegionKind::BackupTable, None, 8159, 33),
            ]
        );
    }

    #[test]
    fn a_gpt_that_does_not_hold_together_is_refused() {
        let disk = 8192 * 512;
        let overlap = gpt(34, 8158, &[(1, 2048, 4095), (2, 4000, 5000)]);
        assert!(gpt_regions(&overlap, 512, disk)
            .unwrap_err()
            .to_string()
            .contains("partition 2"));
        let outside = gpt(34, 8158, &[(1, 2048, 9000)]);
        assert!(gpt_regions(&outside, 512, disk).is_err());
        let backwards = gpt(34, 8158, &[(1, 4000, 3000)]);
        assert!(gpt_regions(&backwards, 512, disk).is_err());
        let too_big = gpt(34, 20000, &[]);
        assert!(gpt_regions(&too_big, 512, disk)
            .unwrap_err()
            .to_string()
            .contains("do not fit"));
    }

    #[test]
    fn protective_and_hybrid_mbrs() {
        let mut s = vec![0u8; 512];
        s[510] = 0x55;
        s[511] = 0xAA;
        s[446 + 4] = 0xEE;
        s[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
        s[446 + 12..446 + 16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(read_mbr(&s, 4096).unwrap().kind, MbrKind::Protective);
        s[462 + 4] = 0x0C;
        s[462 + 8..462 + 12].copy_from_slice(&2048u32.to_le_bytes());
        s[462 + 12..462 + 16].copy_from_slice(&100u32.to_le_bytes());
        assert_eq!(read_mbr(&s, 4096).unwrap().kind, MbrKind::Hybrid);
    }
}
