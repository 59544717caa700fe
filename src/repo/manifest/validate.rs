//! A manifest holds together, whoever wrote it (it is outside input): its format and
//! version known; on each disk the regions tile the disk and the chunks tile their
//! region, no chunk over the chunker's maximum; the partition tables bounded and a GPT's
//! usable area within its disk.

use anyhow::{bail, ensure, Context, Result};

use super::{
    DiskInfo, Manifest, Region, RegionKind, MANIFEST_FORMAT, MANIFEST_VERSION,
    MANIFEST_VERSION_MULTI_DISK, MAX_DISKS, MAX_DISK_SIZE, MAX_TABLE_REGION,
};

impl Manifest {
    /// The partition table regions are bounded (a restore holds them in memory), and a
    /// GPT's usable area lies within the disk.
    fn validate_tables(disk: &DiskInfo, regions: &[Region]) -> Result<()> {
        for r in regions {
            if matches!(r.kind, RegionKind::Table | RegionKind::BackupTable) {
                ensure!(
                    r.length <= MAX_TABLE_REGION,
                    "{} is {} bytes; a partition table region holds at most {MAX_TABLE_REGION}",
                    r.label(),
                    r.length
                );
            }
        }
        if let Some(g) = &disk.gpt {
            let ss = disk.logical_sector_size as u64;
            let end = g
                .last_usable_lba
                .checked_add(1)
                .and_then(|l| l.checked_mul(ss));
            ensure!(
                end.is_some_and(|e| e <= disk.size && disk.size - e <= MAX_TABLE_REGION)
                    && g.first_usable_lba <= g.last_usable_lba,
                "the GPT's usable LBAs {}..{} do not fit the disk (or leave more than {MAX_TABLE_REGION} bytes for its backup)",
                g.first_usable_lba,
                g.last_usable_lba
            );
        }
        Ok(())
    }

    /// Check the structure: format and version known, on each disk the regions tile the
    /// disk, chunks tile their region, no chunk larger than the chunker allows.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.format == MANIFEST_FORMAT,
            "format is {:?}, not {MANIFEST_FORMAT:?}",
            self.format
        );
        match self.version {
            MANIFEST_VERSION => ensure!(
                self.more_disks.is_empty(),
                "a version {MANIFEST_VERSION} manifest lists more than one disk"
            ),
            MANIFEST_VERSION_MULTI_DISK => ensure!(
                !self.more_disks.is_empty() && self.disk_count() <= MAX_DISKS,
                "a version {MANIFEST_VERSION_MULTI_DISK} manifest lists {} disks (2 to {MAX_DISKS})",
                self.disk_count()
            ),
            v => bail!(
                "manifest version {v} is not supported (this lifeboat reads versions {MANIFEST_VERSION} and {MANIFEST_VERSION_MULTI_DISK})"
            ),
        }
        self.chunker.validate()?;
        self.validate_disk(&self.disk, &self.regions)?;
        for (i, d) in self.more_disks.iter().enumerate() {
            self.validate_disk(&d.disk, &d.regions)
                .with_context(|| format!("disk {}", i + 1))?;
        }
        Ok(())
    }

    fn validate_disk(&self, disk: &DiskInfo, regions: &[Region]) -> Result<()> {
        let ss = disk.logical_sector_size;
        ensure!(
            ss == 512 || ss == 4096,
            "logical sector size {ss} is not 512 or 4096"
        );
        ensure!(
            disk.size <= MAX_DISK_SIZE,
            "a disk of {} bytes is larger than any Lifeboat supports ({MAX_DISK_SIZE})",
            disk.size
        );
        Self::validate_tables(disk, regions)?;
        let mut pos = 0u64;
        for r in regions {
            ensure!(
                r.offset == pos && r.offset.checked_add(r.length).is_some(),
                "{} starts at {} but the previous region ends at {pos}",
                r.label(),
                r.offset
            );
            if let Some(fs) = &r.filesystem {
                let mut end = r.offset;
                for u in &fs.used {
                    ensure!(
                        u.offset >= end
                            && !u.is_empty()
                            && u.offset.checked_add(u.len).is_some_and(|e| e <= r.end()),
                        "{}: used range at {} is out of order or outside the region",
                        r.label(),
                        u.offset
                    );
                    end = u.end();
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
                cpos = cpos
                    .checked_add(c.length as u64)
                    .filter(|&e| e <= r.end())
                    .ok_or_else(|| anyhow::anyhow!("{}: chunks run past the region", r.label()))?;
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
        if pos != disk.size {
            bail!("regions cover {pos} bytes of a {}-byte disk", disk.size);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample_manifest;
    use super::super::{DiskImage, FsUsage};
    use crate::range::ByteRange;

    #[test]
    fn validation_names_what_is_wrong() {
        let mut m = sample_manifest();
        m.regions[2].chunks[1].offset += 1;
        let e = m.validate().unwrap_err().to_string();
        assert!(e.contains("partition 1: chunk at"), "{e}");

        let mut m = sample_manifest();
        m.disk.size += 512;
        assert!(m
            .validate()
            .unwrap_err()
            .to_string()
            .contains("regions cover"));

        let mut m = sample_manifest();
        m.regions[2].chunks[0].length = 1 << 20;
        m.regions[2].chunks.truncate(1);
        let e = m.validate().unwrap_err().to_string();
        assert!(e.contains("over the chunker maximum"), "{e}");

        let mut m = sample_manifest();
        m.regions[2].filesystem = Some(FsUsage {
            kind: "ext4".into(),
            block_size: 4096,
            used_bytes: 0,
            used: vec![ByteRange::new(0, 4096)],
        });
        let e = m.validate().unwrap_err().to_string();
        assert!(e.contains("outside the region"), "{e}");

        let mut m = sample_manifest();
        m.regions[2].length = u64::MAX - (1 << 20) + 1;
        assert!(m.validate().is_err(), "a region that wraps");

        let mut m = sample_manifest();
        m.chunker.avg_size = 0;
        assert!(m.validate().is_err(), "unusable chunker settings");

        let mut m = sample_manifest();
        m.disk.gpt.as_mut().unwrap().last_usable_lba = u64::MAX;
        assert!(m
            .validate()
            .unwrap_err()
            .to_string()
            .contains("usable LBAs"));

        let mut m = sample_manifest();
        m.disk.gpt.as_mut().unwrap().last_usable_lba = 100;
        m.disk.size = 1 << 40;
        assert!(
            m.validate()
                .unwrap_err()
                .to_string()
                .contains("usable LBAs"),
            "a huge backup area"
        );

        let mut m = sample_manifest();
        m.version = 3;
        assert!(m
            .validate()
            .unwrap_err()
            .to_string()
            .contains("not supported"));
    }

    #[test]
    fn several_disks_are_each_checked_and_split_into_one_manifest_per_disk() {
        // Version 2 is for several disks, version 1 for one; each disk is checked.
        let mut m = sample_manifest();
        m.version = 2;
        assert!(m
            .validate()
            .unwrap_err()
            .to_string()
            .contains("lists 1 disks"));
        let mut m = sample_manifest();
        let second = sample_manifest();
        m.push_disk(DiskImage {
            source: second.source.clone(),
            disk: second.disk.clone(),
            regions: second.regions.clone(),
        });
        m.validate().unwrap();
        assert_eq!((m.version, m.disk_count()), (2, 2));
        assert_eq!(m.chunk_ids().count(), 2 * second.chunk_ids().count());
        m.more_disks[0].regions.pop();
        let e = format!("{:#}", m.validate().unwrap_err());
        assert!(e.contains("disk 1: regions cover"), "{e}");
        m.version = 1;
        assert!(m.validate().is_err());
        // Split into one manifest per disk, each of version 1 and valid.
        let mut m = sample_manifest();
        m.push_disk(DiskImage {
            source: second.source,
            disk: second.disk,
            regions: second.regions,
        });
        let parts = m.into_disks();
        assert_eq!(parts.len(), 2);
        for p in &parts {
            p.validate().unwrap();
            assert_eq!(p.name, "sample");
        }
    }
}
