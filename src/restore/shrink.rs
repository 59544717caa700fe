//! A restore onto a disk smaller than the one captured, when the used data fits: the last
//! partition of a GPT disk, holding ext2/3/4, is shrunk to end where the smaller disk's
//! table leaves room.
//!
//! The snapshot is first restored whole into a sparse scratch image (only the data takes
//! space), its chunks verified as always; e2fsck and resize2fs shrink the filesystem
//! there. Only then is the target written: the disk up to the shrunk partition's end,
//! then the backup GPT at the target's end, then the first MiB with the primary GPT, so
//! a failure before the end leaves a target whose table is wiped, and a failure to
//! shrink leaves the target untouched. XFS cannot shrink at all, and btrfs only while
//! mounted: the preflight says so.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};

use super::finish::{resize_ext, GrownPartition, Tables};
use crate::disk::layout::relocate_gpt;
use crate::disk::TargetDisk;
use crate::range::ByteRange;
use crate::repo::manifest::{RegionKind, TableKind};
use crate::repo::Manifest;
use crate::ui::bytes;

const MIB: u64 = 1 << 20;

/// How a snapshot's disk fits a smaller target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shrink {
    /// The last partition: its number, byte offset and captured length.
    pub number: u32,
    pub offset: u64,
    pub old_len: u64,
    /// Its length on the target.
    pub new_len: u64,
}

/// Whether and how the snapshot's disk `m` fits a target of `target_size` bytes.
pub fn plan(m: &Manifest, target_size: u64) -> Result<Shrink> {
    let g = match (&m.disk.gpt, m.disk.table) {
        (Some(g), TableKind::Gpt) => g,
        _ => bail!("only the last partition of a GPT disk can be shrunk"),
    };
    let last = g
        .partitions
        .iter()
        .max_by_key(|p| p.last_lba)
        .context("the GPT has no partition")?;
    let region = m
        .regions
        .iter()
        .find(|r| r.kind == RegionKind::Partition && r.partition == Some(last.number))
        .context("the last partition has no region")?;
    let fs = match &region.filesystem {
        Some(f) if f.kind.starts_with("ext") => f,
        Some(f) if f.kind == "xfs" => bail!(
            "its last partition holds XFS, which cannot shrink (xfs_growfs only grows): \
             restore onto a disk of at least {}",
            bytes(m.disk.size)
        ),
        Some(f) => bail!(
            "its last partition holds {}, which Lifeboat does not shrink (only ext2/3/4)",
            f.kind
        ),
        None => bail!(
            "its last partition was read in full (its filesystem was not understood), so \
             how much of it is used is not known"
        ),
    };
    let ss = m.disk.logical_sector_size as u64;
    let entries_sectors =
        (g.num_partition_entries as u64 * g.partition_entry_size as u64).div_ceil(ss);
    // As relocate_gpt lays it out: the backup header in the last sector, its entries
    // before it, the partition up to the last usable sector.
    let last_usable = (target_size / ss)
        .checked_sub(entries_sectors + 2)
        .filter(|&l| l > last.first_lba)
        .context("the target has no room for the last partition at all")?;
    let new_len = (last_usable - last.first_lba + 1) * ss;
    let offset = last.first_lba * ss;
    let others_end = m
        .regions
        .iter()
        .filter(|r| r.offset < region.offset)
        .map(|r| r.end())
        .max()
        .unwrap_or(0);
    ensure!(others_end <= offset, "a region overlaps the last partition");
    // resize2fs needs room besides the data: be generous before trying.
    let need = fs.used_bytes + fs.used_bytes / 8 + 16 * MIB;
    ensure!(
        new_len >= need,
        "its last partition would be {} on this target, but its {} uses {} (and resize2fs \
         wants room besides): restore onto a disk of at least {}",
        bytes(new_len),
        fs.kind,
        bytes(fs.used_bytes),
        bytes(target_size + need - new_len)
    );
    ensure!(
        crate::cmd::which("e2fsck").is_some() && crate::cmd::which("resize2fs").is_some(),
        "shrinking its ext4 needs e2fsck and resize2fs (e2fsprogs), which this system does \
         not have (the rescue has none yet: restore from a system with e2fsprogs)"
    );
    Ok(Shrink {
        number: last.number,
        offset,
        old_len: region.length,
        new_len,
    })
}

/// A scratch image, removed when dropped.
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    /// A new file name in `dir` for the scratch copy of a disk.
    pub fn in_dir(dir: &Path) -> Scratch {
        Scratch {
            path: dir.join(format!("lifeboat-shrink-{}.img", std::process::id())),
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Shrink the last partition's filesystem in the restored `scratch` image.
pub fn shrink_filesystem(scratch: &TargetDisk, s: &Shrink) -> Result<()> {
    let (e2fsck, resize2fs) = (
        crate::cmd::which("e2fsck").context("e2fsck is not available")?,
        crate::cmd::which("resize2fs").context("resize2fs is not available")?,
    );
    resize_ext(
        scratch,
        ByteRange::new(s.offset, s.old_len),
        s.new_len,
        &e2fsck,
        &resize2fs,
    )
    .with_context(|| {
        format!(
            "shrink the filesystem of partition {} to {} (on a scratch copy; the target \
             is untouched)",
            s.number,
            bytes(s.new_len)
        )
    })
}

/// Copy the shrunk disk from `scratch` onto `target`: everything up to the partition's
/// new end, then the new backup GPT, then the first MiB (the primary GPT) last.
pub fn write_target(
    scratch: &TargetDisk,
    target: &TargetDisk,
    s: &Shrink,
    ss: u32,
) -> Result<Tables> {
    let head_len = MIB.min(s.offset);
    let mut head = vec![0u8; head_len as usize];
    scratch.read_at(&mut head, 0)?;
    let moved = relocate_gpt(&mut head, ss, target.size / ss as u64 * ss as u64, true)
        .context("lay out the GPT for the smaller target")?;
    ensure!(
        moved.grown == Some((s.number, s.new_len)),
        "the new table gives partition {} another size than planned",
        s.number
    );
    let end = s.offset + s.new_len;
    let mut buf = vec![0u8; 4 << 20];
    let mut at = head_len;
    let mut written = 0u64;
    while at < end {
        let n = (end - at).min(buf.len() as u64) as usize;
        scratch.read_at(&mut buf[..n], at)?;
        target.write_at(&buf[..n], at)?;
        written += n as u64;
        at += n as u64;
    }
    target.write_at(&moved.area, moved.area_offset)?;
    target.sync()?;
    target.write_at(&head, 0)?;
    target.sync()?;
    Ok(Tables {
        relocated: true,
        grown: Some(GrownPartition {
            number: s.number,
            size: s.new_len,
        }),
        tail_at: moved.area_offset,
        written_bytes: written + head.len() as u64 + moved.area.len() as u64,
    })
}

/// `--verify` of a shrunk partition: its filesystem checks clean on the target.
pub fn check_filesystem(target: &TargetDisk, s: &Shrink) -> Result<()> {
    let e2fsck = crate::cmd::which("e2fsck").context("e2fsck is not available")?;
    let lo = match target.is_block {
        true => None,
        false => Some(crate::disk::loopdev::LoopDevice::attach(
            &target.path,
            s.offset,
            s.new_len,
        )?),
    };
    let spec = match &lo {
        Some(l) => l.path().display().to_string(),
        None => format!("{}?offset={}", target.path.display(), s.offset),
    };
    crate::cmd::run(std::process::Command::new(e2fsck).args(["-f", "-n", &spec]))
        .context("verify the shrunk filesystem")?;
    if let Some(l) = lo {
        l.close()?;
    }
    Ok(())
}
