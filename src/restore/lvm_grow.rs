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

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::disk::fs::{probe, FsKind, PROBE_BYTES};
use crate::disk::loopdev::LoopDevice;
use crate::disk::target::TargetDisk;
use crate::range::ByteRange;
use crate::ui::bytes;

/// lvm2's tools, seeing only one device and activating nothing.
struct Lvm {
    lvm: PathBuf,
    device: PathBuf,
}

impl Lvm {
    fn run(&self, args: &[&str]) -> Result<String> {
        let conf = format!(
            "devices {{ filter=[\"a|^{}$|\",\"r|.*|\"] use_devicesfile=0 }} global {{ activation=0 }}",
            self.device.display()
        );
        crate::cmd::run(
            Command::new(&self.lvm)
                .env("LVM_SUPPRESS_FD_WARNINGS", "1")
                .args(args)
                .args(["--config", &conf]),
        )
    }

    /// One report line's fields (`--noheadings`, bytes without suffix).
    fn report(&self, command: &str, args: &[&str]) -> Result<Vec<Vec<String>>> {
        let mut all = vec![
            command,
            "--noheadings",
            "--units",
            "b",
            "--nosuffix",
            "--separator",
            ";",
        ];
        all.extend_from_slice(args);
        Ok(self
            .run(&all)?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.trim().split(';').map(|f| f.trim().to_string()).collect())
            .collect())
    }
}

/// A PV as lvm2 reports it.
struct Pv {
    vg: String,
    pe_count: u64,
    pe_start: u64,
    extent: u64,
}

/// One segment of a logical volume on this PV: its extents [first, last].
struct Segment {
    lv: String,
    first: u64,
    last: u64,
    linear: bool,
}

/// Grow the PV in `part` of `target` and its last volume; what happened, in words.
pub fn grow(target: &TargetDisk, number: u32, part: ByteRange) -> String {
    match try_grow(target, number, part) {
        Ok(s) => s,
        Err(e) => format!("partition {number} grown, but its LVM physical volume was not: {e:#}"),
    }
}

fn try_grow(target: &TargetDisk, number: u32, part: ByteRange) -> Result<String> {
    let Some(lvm) = crate::cmd::which("lvm") else {
        return Ok(format!("partition {number} grown; lvm is not available, so its physical volume keeps its old size (grow it later with pvresize and lvextend)"));
    };
    let lo = LoopDevice::attach(&target.path, part.offset, part.len)?;
    let tools = Lvm {
        lvm,
        device: lo.path().to_path_buf(),
    };
    let dev = tools.device.display().to_string();
    let old = physical_volume(&tools)?.pe_count;
    tools.run(&["pvresize", "-q", &dev])?;
    let pv = physical_volume(&tools)?;
    let before = segments(&tools, &pv.vg)?;
    let Some(last) = before.iter().max_by_key(|s| s.last) else {
        lo.close()?;
        return Ok(format!(
            "LVM physical volume in partition {number} grown to {} extents; it holds no logical volume",
            pv.pe_count
        ));
    };
    // Only as many extents as the PV gained: the group keeps the free extents it had
    // (room for snapshots, as `capture --live` takes), now after the volume.
    let (lv, new) = (last.lv.clone(), pv.pe_count.saturating_sub(old));
    if !last.linear || new == 0 {
        lo.close()?;
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
    let pieces: Vec<Segment> = segments(&tools, &pv.vg)?
        .into_iter()
        .filter(|s| s.lv == lv)
        .collect();
    let grown = format!(
        "LVM physical volume in partition {number} and {name} grown by {}",
        bytes(new * pv.extent)
    );
    let filesystem = match pieces.as_slice() {
        [one] => {
            let at = pv.pe_start + one.first * pv.extent;
            let len = (one.last + 1 - one.first) * pv.extent;
            let range = ByteRange::new(part.offset + at, len);
            grow_filesystem(target, range).with_context(|| format!("grow the filesystem in {name}"))?
        }
        _ => format!(
            "its filesystem was left at its old size: the volume is in {} pieces, which only device mapper joins (grow it on the running machine: lvextend -r, or resize2fs / xfs_growfs)",
            pieces.len()
        ),
    };
    lo.close()?;
    Ok(format!("{grown}; {filesystem}"))
}

fn physical_volume(tools: &Lvm) -> Result<Pv> {
    let dev = tools.device.display().to_string();
    let rows = tools.report(
        "pvs",
        &["-o", "vg_name,pv_pe_count,pe_start,vg_extent_size", &dev],
    )?;
    let [row] = rows.as_slice() else {
        bail!("pvs reported {} lines for {dev}", rows.len());
    };
    let num = |i: usize| -> Result<u64> {
        row.get(i)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("pvs: field {i} of {row:?}"))
    };
    let vg = row
        .first()
        .filter(|v| !v.is_empty())
        .context("the PV belongs to no volume group")?;
    Ok(Pv {
        vg: vg.clone(),
        pe_count: num(1)?,
        pe_start: num(2)?,
        extent: num(3)?,
    })
}

/// Every segment of the group's volumes on this PV (`lvs --segments`).
fn segments(tools: &Lvm, vg: &str) -> Result<Vec<Segment>> {
    let rows = tools.report(
        "lvs",
        &[
            "-a",
            "--segments",
            "-o",
            "lv_name,seg_pe_ranges,segtype",
            vg,
        ],
    )?;
    let dev = tools.device.display().to_string();
    let mut out = Vec::new();
    for row in rows {
        let [lv, ranges, kind] = row.as_slice() else {
            bail!("lvs: unexpected line {row:?}");
        };
        // "DEV:FIRST-LAST", space-separated for several.
        for r in ranges.split_whitespace() {
            let Some((d, span)) = r.rsplit_once(':') else {
                continue;
            };
            let Some((a, b)) = span.split_once('-') else {
                continue;
            };
            if d != dev {
                continue;
            }
            let (first, last) = (a.parse::<u64>()?, b.parse::<u64>()?);
            out.push(Segment {
                lv: lv.clone(),
                first,
                last,
                linear: kind == "linear",
            });
        }
    }
    Ok(out)
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
            super::finish::resize_ext(target, range, range.len, &e2fsck, &resize2fs)?;
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
