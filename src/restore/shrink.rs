//! A restore onto a disk smaller than the one captured, when the used data fits: the last
//! partition of a GPT disk, holding ext2/3/4 or an LVM physical volume, is shrunk to end
//! where the smaller disk's table leaves room. In a PV, the volume at its end is reduced
//! (its ext2/3/4 first) as far as the PV must shrink, and the PV with it, by lvm2's tools.
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

use super::finish::{GrownPartition, Tables};
use super::lvm_tools::{physical_volume, pieces_of, segments, Lvm};
use super::resize::resize_ext;
use crate::disk::fs::{probe, PROBE_BYTES};
use crate::disk::layout::relocate_gpt;
use crate::disk::TargetDisk;
use crate::range::ByteRange;
use crate::repo::manifest::{RegionKind, TableKind};
use crate::repo::Manifest;
use crate::ui::bytes;

const MIB: u64 = 1 << 20;

/// What the last partition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    Ext,
    LvmPv,
}

/// How a snapshot's disk fits a smaller target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shrink {
    pub content: Content,
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
    let (fs, content) = match &region.filesystem {
        Some(f) if f.kind.starts_with("ext") => (f, Content::Ext),
        Some(f) if f.kind == "LVM2_member" => (f, Content::LvmPv),
        Some(f) if f.kind == "xfs" => bail!(
            "its last partition holds XFS, which cannot shrink (xfs_growfs only grows): \
             restore onto a disk of at least {}",
            bytes(m.disk.size)
        ),
        Some(f) => bail!(
            "its last partition holds {}, which Lifeboat does not shrink (only ext2/3/4, and an LVM physical volume)",
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
        // The smallest disk it fits: shrunk that far, or as captured (no shrink at all).
        bytes((target_size + need - new_len).min(m.disk.size))
    );
    ensure!(
        crate::cmd::which("e2fsck").is_some() && crate::cmd::which("resize2fs").is_some(),
        "shrinking its ext4 needs e2fsck and resize2fs (e2fsprogs), which this system does \
         not have (the rescue has none yet: restore from a system with e2fsprogs)"
    );
    ensure!(
        content == Content::Ext || crate::cmd::which("lvm").is_some(),
        "shrinking its LVM physical volume needs lvm2's tools, which this system does not \
         have (the rescue has none: restore from a system with lvm2 and e2fsprogs)"
    );
    Ok(Shrink {
        content,
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

/// Shrink the last partition's content in the restored `scratch` image; where the
/// filesystem that was shrunk now is, to be checked on the target by `--verify`.
/// What a shrink did, for the summary: the partition, and what in it was shrunk.
pub fn said(s: &Shrink) -> String {
    let what = match s.content {
        Content::Ext => "its ext4 shrunk with resize2fs",
        Content::LvmPv => {
            "its LVM physical volume, the volume at its end and that volume's ext4 shrunk \
             (resize2fs, lvreduce, pvresize)"
        }
    };
    format!(
        "partition {} shrunk from {} to {}, {what}, on a scratch copy first",
        s.number,
        bytes(s.old_len),
        bytes(s.new_len)
    )
}

pub fn shrink_filesystem(scratch: &TargetDisk, s: &Shrink) -> Result<Option<ByteRange>> {
    let what = || {
        format!(
            "shrink partition {} to {} (on a scratch copy; the target is untouched)",
            s.number,
            bytes(s.new_len)
        )
    };
    match s.content {
        Content::Ext => {
            let part = ByteRange::new(s.offset, s.old_len);
            shrink_ext(scratch, part, s.new_len).with_context(what)?;
            Ok(Some(ByteRange::new(s.offset, s.new_len)))
        }
        Content::LvmPv => shrink_physical_volume(scratch, s).with_context(what),
    }
}

/// e2fsck and resize2fs on the ext2/3/4 at `part`, to `to` bytes.
fn shrink_ext(image: &TargetDisk, part: ByteRange, to: u64) -> Result<()> {
    let (e2fsck, resize2fs) = (
        crate::cmd::which("e2fsck").context("e2fsck is not available")?,
        crate::cmd::which("resize2fs").context("resize2fs is not available")?,
    );
    resize_ext(image, part, to, &e2fsck, &resize2fs)
}

/// The PV in the last partition, to fit its new length: the volume reaching past that is
/// reduced (its ext2/3/4 first, by resize2fs), then the PV (`pvresize`); the reduced
/// volume's filesystem, if one was.
fn shrink_physical_volume(scratch: &TargetDisk, s: &Shrink) -> Result<Option<ByteRange>> {
    let tools =
        Lvm::open(scratch, ByteRange::new(s.offset, s.old_len))?.context("lvm is not available")?;
    let pv = physical_volume(&tools)?;
    // The extents that fit (pvresize checks, should the PV keep metadata at its end).
    let fit = s
        .new_len
        .checked_sub(pv.pe_start)
        .context("the partition would be smaller than the PV's metadata")?
        / pv.extent;
    let last = segments(&tools, &pv.vg)?
        .into_iter()
        .max_by_key(|g| g.last)
        .filter(|g| g.last >= fit);
    let mut shrunk = None;
    if let Some(last) = last {
        let name = format!("{}/{}", pv.vg, last.lv);
        let cut = last.last + 1 - fit;
        let pieces = pieces_of(&tools, &pv.vg, &last.lv)?;
        let [one] = pieces.as_slice() else {
            bail!("{name}, at the end of the physical volume, is in {} pieces: only a volume in one piece is shrunk", pieces.len());
        };
        ensure!(one.linear, "{name} is not a linear volume");
        ensure!(
            one.extents() > cut,
            "{name} has {} extents, and {cut} must go",
            one.extents()
        );
        let range = one.bytes(&pv, s.offset);
        let mut head = vec![0u8; PROBE_BYTES];
        scratch.read_at(&mut head, range.offset)?;
        let kind = probe(&head);
        ensure!(
            kind.is_some_and(|k| k.is_ext()),
            "{name} holds {}, which Lifeboat does not shrink (only ext2/3/4)",
            kind.map(|k| k.name()).unwrap_or("unknown content")
        );
        let to = (one.extents() - cut) * pv.extent;
        shrink_ext(scratch, range, to)
            .with_context(|| format!("shrink the filesystem in {name}"))?;
        tools.run(&["lvreduce", "-q", "-f", "-l", &format!("-{cut}"), &name])?;
        shrunk = Some(ByteRange::new(range.offset, to));
    }
    let dev = tools.device().display().to_string();
    let size = format!("{}b", s.new_len);
    tools.run(&[
        "pvresize",
        "-q",
        "-y",
        "--setphysicalvolumesize",
        &size,
        &dev,
    ])?;
    tools.close()?;
    Ok(shrunk)
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

/// `--verify` of a shrunk filesystem (at `fs` on the target): it checks clean.
pub fn check_filesystem(target: &TargetDisk, fs: ByteRange) -> Result<()> {
    let e2fsck = crate::cmd::which("e2fsck").context("e2fsck is not available")?;
    let lo = match target.is_block {
        true => None,
        false => Some(crate::disk::loopdev::LoopDevice::attach(
            &target.path,
            fs.offset,
            fs.len,
        )?),
    };
    let spec = match &lo {
        Some(l) => l.path().display().to_string(),
        None => format!("{}?offset={}", target.path.display(), fs.offset),
    };
    crate::cmd::run(std::process::Command::new(e2fsck).args(["-f", "-n", &spec]))
        .context("verify the shrunk filesystem")?;
    if let Some(l) = lo {
        l.close()?;
    }
    Ok(())
}
