//! Partition tables: read a disk's GPT or MBR into the manifest's terms and cut the disk into
//! regions; move a backup GPT to the end of a larger disk.

use anyhow::{bail, ensure, Context, Result};

use super::{gpt, SourceDisk};
use crate::repo::manifest::{
    DiskInfo, GptInfo, MbrEntry, MbrInfo, MbrKind, RegionKind, TableKind, MAX_DISK_SIZE,
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

fn supported(ss: u32) -> Result<()> {
    match ss {
        512 | 4096 => Ok(()),
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
        supported(g)?;
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
    let Some(table) = gpt::read(dev, ss)? else {
        return Ok(None);
    };
    if let Some(why) = &table.primary_damage {
        log::warn!(
            "primary GPT of {} is damaged ({why}); using the backup",
            dev.path.display()
        );
    }
    let h = &table.header;
    let mut partitions = gpt::parse_entries(&table.entries, h.part_size);
    partitions.sort_by_key(|p| p.first_lba);
    Ok(Some(GptInfo {
        disk_guid: gpt::guid_string(&h.disk_guid),
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
    // Byte offsets of LBAs, checked: a hostile table's LBAs must not wrap.
    let at = |lba: u64| lba.checked_mul(ss).filter(|&b| b <= size);
    let (Some(table_end), Some(backup_start)) = (
        at(g.first_usable_lba),
        g.last_usable_lba.checked_add(1).and_then(at),
    ) else {
        bail!(
            "usable LBAs {}..{} do not fit a {size}-byte disk",
            g.first_usable_lba,
            g.last_usable_lba
        );
    };
    if g.first_usable_lba < 2 || table_end > backup_start {
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
        let start = at(p.first_lba).unwrap_or(u64::MAX);
        let end = p.last_lba.checked_add(1).and_then(at).unwrap_or(u64::MAX);
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
    if dev.size > MAX_DISK_SIZE {
        bail!(
            "{} claims {} bytes, more than any disk Lifeboat supports ({MAX_DISK_SIZE})",
            dev.path.display(),
            dev.size
        );
    }
    let ss = sector_size(dev, given_ss)?;
    if dev.size < ss as u64 {
        bail!(
            "{} is {} bytes, less than one {ss}-byte sector: nothing to capture",
            dev.path.display(),
            dev.size
        );
    }
    if !dev.size.is_multiple_of(ss as u64) {
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
    let ssz = ss as u64;
    let sector = |lba: u64| (lba * ssz) as usize..((lba + 1) * ssz) as usize;
    ensure!(head.len() as u64 >= 2 * ssz, "no room for a GPT header");
    let mut header = gpt::Header::parse(&head[sector(1)], 1)
        .context("read the primary GPT header to move its backup")?;
    let entries_bytes = header.entries_bytes();
    let entries_sectors = entries_bytes.div_ceil(ssz);
    let entries_start = header
        .part_start
        .checked_mul(ssz)
        .filter(|s| {
            s.checked_add(entries_bytes)
                .is_some_and(|e| e <= head.len() as u64)
        })
        .with_context(|| format!("the GPT entries lie beyond the first {} bytes", head.len()))?;
    let last_lba = (new_size / ssz).saturating_sub(1);
    ensure!(
        last_lba > header.first_usable + entries_sectors + 1,
        "a {new_size}-byte target has no room for the GPT"
    );
    header.backup_lba = last_lba;
    header.last_usable = last_lba - entries_sectors - 1;
    let entries = entries_start as usize..(entries_start + entries_bytes) as usize;
    let grown = if grow {
        Some(grow_last_partition(
            &mut head[entries.clone()],
            header.part_size as usize,
            header.last_usable,
            ssz,
        )?)
    } else {
        None
    };
    let entries = head[entries].to_vec();
    header.parts_crc = crc32fast::hash(&entries);
    let primary = header.encode();
    head[ss as usize..ss as usize + primary.len()].copy_from_slice(&primary);

    let backup_entries_lba = last_lba - entries_sectors;
    let mut area = vec![0u8; ((entries_sectors + 1) * ssz) as usize];
    area[..entries.len()].copy_from_slice(&entries);
    let mut backup = header;
    backup.current_lba = last_lba;
    backup.backup_lba = 1;
    backup.part_start = backup_entries_lba;
    let encoded = backup.encode();
    let at = (entries_sectors * ssz) as usize;
    area[at..at + encoded.len()].copy_from_slice(&encoded);
    Ok(Relocated {
        area,
        area_offset: backup_entries_lba * ssz,
        grown,
    })
}

/// Extend the used entry with the highest last LBA to `last_usable`; returns its number
/// and new size in bytes.
fn grow_last_partition(
    entries: &mut [u8],
    es: usize,
    last_usable: u64,
    ss: u64,
) -> Result<(u32, u64)> {
    let le64 = |e: &[u8], o: usize| u64::from_le_bytes(e[o..o + 8].try_into().expect("8 bytes"));
    let last = entries
        .chunks_exact(es)
        .enumerate()
        .filter(|(_, e)| e[..16].iter().any(|&b| b != 0))
        .max_by_key(|(_, e)| le64(e, 40))
        .map(|(i, e)| (i, le64(e, 32)));
    let Some((i, first_lba)) = last else {
        bail!("--grow: the GPT has no partition to grow");
    };
    ensure!(
        first_lba <= last_usable,
        "--grow: partition {} starts past the last usable LBA",
        i + 1
    );
    let at = i * es + 40;
    entries[at..at + 8].copy_from_slice(&last_usable.to_le_bytes());
    Ok((i as u32 + 1, (last_usable - first_lba + 1) * ss))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::manifest::GptPartition;

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
        // LBAs whose byte offsets wrap past 2^64: 2^55 + 2048 sectors is "1 MiB" wrapped.
        let wraps = gpt(34, 8158, &[(1, (1 << 55) + 2048, (1 << 55) + 4095)]);
        assert!(gpt_regions(&wraps, 512, disk).is_err());
        let wraps = gpt(34, u64::MAX, &[]);
        assert!(gpt_regions(&wraps, 512, disk).is_err());
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

    #[test]
    fn a_moved_backup_gpt_is_valid_and_the_last_partition_grows() {
        let img = gpt::tests::disk(200);
        let mut head = img[..34 * 512].to_vec();
        let moved = relocate_gpt(&mut head, 512, 400 * 512, true).unwrap();
        let primary = gpt::Header::parse(&head[512..1024], 1).unwrap();
        assert_eq!(
            (primary.backup_lba, primary.last_usable),
            (399, 399 - 32 - 1)
        );
        assert_eq!(moved.area_offset, (399 - 32) * 512);
        let area = &moved.area;
        let backup = gpt::Header::parse(&area[32 * 512..], 399).unwrap();
        assert_eq!(backup.part_start, 399 - 32);
        assert_eq!(crc32fast::hash(&area[..128 * 128]), backup.parts_crc);
        assert_eq!(moved.grown, Some((1, (primary.last_usable - 40 + 1) * 512)));
        let parts = gpt::parse_entries(&head[1024..1024 + 128 * 128], 128);
        assert_eq!(parts[0].last_lba, primary.last_usable);
        // A target too small for the table is refused, not wrapped.
        let mut head = img[..34 * 512].to_vec();
        assert!(relocate_gpt(&mut head, 512, 40 * 512, false).is_err());
    }
}
