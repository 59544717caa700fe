//! After `--grow` enlarged a partition holding an LVM2 physical volume: the PV is resized
//! to fill it (`pvresize`), the logical volume at its end extended by as many extents as
//! the PV gained, contiguously (`lvextend --alloc contiguous`: the free extents the group
//! had stay free, after it), and the ext2/3/4 (`resize2fs`) or XFS
//! (`xfs_growfs`, mounted for the moment) in that volume grown with it.
//!
//! lvm2's own tools do the metadata, with activation off and only this PV visible: no
//! device mapper is needed. A filesystem is grown only where the volume is one run of
//! extents (a loop device over it is the volume); otherwise it is left, and the report
//! says how to grow it once the machine runs.

use std::process::Command;

use anyhow::{Context, Result};

use super::lvm_tools::{physical_volume, pieces_of, segments, Lvm};

use crate::disk::fs::{probe, FsKind, PROBE_BYTES};
use crate::disk::loopdev::LoopDevice;
use crate::disk::target::TargetDisk;
use crate::range::ByteRange;
use crate::ui::bytes;

/// Grow the PV in `part` of `target` and its last volume; what happened, in words.
pub fn grow(target: &TargetDisk, number: u32, part: ByteRange) -> String {
    match try_grow(target, number, part) {
        Ok(s) => s,
        Err(e) => format!("partition {number} grown, but its LVM physical volume was not: {e:#}"),
    }
}

fn try_grow(target: &TargetDisk, number: u32, part: ByteRange) -> Result<String> {
    let Some(tools) = Lvm::open(target, part)? else {
        return Ok(format!("partition {number} grown; lvm is not available, so its physical volume keeps its old size (grow it later with pvresize and lvextend)"));
    };
    let dev = tools.device().display().to_string();
    let old = physical_volume(&tools)?.pe_count;
    tools.run(&["pvresize", "-q", &dev])?;
    let pv = physical_volume(&tools)?;
    let before = segments(&tools, &pv.vg)?;
    let Some(last) = before.iter().max_by_key(|s| s.last) else {
        tools.close()?;
        return Ok(format!(
            "LVM physical volume in partition {number} grown to {} extents; it holds no logical volume",
            pv.pe_count
        ));
    };
    // Only as many extents as the PV gained: the group keeps the free extents it had
    // (room for snapshots, as `capture --live` takes), now after the volume.
    let (lv, new) = (last.lv.clone(), pv.pe_count.saturating_sub(old));
    if !last.linear || new == 0 {
        tools.close()?;
        return Ok(format!(
            "LVM physical volume in partition {number} grown to {} extents; {}/{lv} left as it was ({})",
            pv.pe_count,
            pv.vg,
            if new == 0 { "the physical volume gained no extents" } else { "not a linear volume" }
        ));
    }
    let name = format!("{}/{lv}", pv.vg);
    tools.run(&[
        "lvextend",
        "-q",
        "--alloc",
        "contiguous",
        "-l",
        &format!("+{new}"),
        &name,
        &dev,
    ])?;
    let pieces = pieces_of(&tools, &pv.vg, &lv)?;
    let grown = format!(
        "LVM physical volume in partition {number} and {name} grown by {}",
        bytes(new * pv.extent)
    );
    let filesystem = match pieces.as_slice() {
        [one] => grow_filesystem(target, one.bytes(&pv, part.offset))
            .with_context(|| format!("grow the filesystem in {name}"))?,
        _ => format!(
            "its filesystem was left at its old size: the volume is in {} pieces, which only device mapper joins (grow it on the running machine: lvextend -r, or resize2fs / xfs_growfs)",
            pieces.len()
        ),
    };
    tools.close()?;
    Ok(format!("{grown}; {filesystem}"))
}

/// Grow the ext2/3/4 or XFS at `range` of the target to fill it.
fn grow_filesystem(target: &TargetDisk, range: ByteRange) -> Result<String> {
    let mut head = vec![0u8; PROBE_BYTES];
    target.read_at(&mut head, range.offset)?;
    match probe(&head) {
        Some(k) if k.is_ext() => {
            let (e2fsck, resize2fs) =
                match (crate::cmd::which("e2fsck"), crate::cmd::which("resize2fs")) {
                    (Some(a), Some(b)) => (a, b),
                    _ => {
                        return Ok("resize2fs is not available: its ext4 keeps its old size".into())
                    }
                };
            super::resize::resize_ext(target, range, range.len, &e2fsck, &resize2fs)?;
            Ok(format!(
                "its {} grown to {} with resize2fs",
                k.name(),
                bytes(range.len)
            ))
        }
        Some(FsKind::Xfs) => {
            let Some(growfs) = crate::cmd::which("xfs_growfs") else {
                return Ok("xfs_growfs is not available: its XFS keeps its old size".into());
            };
            let lo = LoopDevice::attach(&target.path, range.offset, range.len)?;
            let m = crate::disk::mount::TempMount::new(lo.path(), "xfs", "nouuid")?;
            crate::cmd::run(Command::new(growfs).arg(m.dir()))?;
            m.close()?;
            lo.close()?;
            Ok(format!(
                "its XFS grown to {} with xfs_growfs",
                bytes(range.len)
            ))
        }
        k => Ok(format!(
            "its {} was left at its old size",
            k.map(|k| k.name()).unwrap_or("unknown content")
        )),
    }
}
