//! lvm2's own tools on one physical volume of a disk being restored: activation off and
//! only that device visible, so no device mapper is needed (metadata changes only).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::disk::loopdev::LoopDevice;
use crate::disk::TargetDisk;
use crate::range::ByteRange;

/// lvm2's tools, seeing only one device and activating nothing.
pub struct Lvm {
    lvm: PathBuf,
    /// A loop device over the PV's partition.
    lo: LoopDevice,
}

impl Lvm {
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let conf = format!(
            "devices {{ filter=[\"a|^{}$|\",\"r|.*|\"] use_devicesfile=0 }} global {{ activation=0 }}",
            self.lo.path().display()
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
pub struct Pv {
    pub vg: String,
    pub pe_count: u64,
    pub pe_start: u64,
    pub extent: u64,
}

/// One segment of a logical volume on this PV: its extents [first, last].
pub struct Segment {
    pub lv: String,
    pub first: u64,
    pub last: u64,
    pub linear: bool,
}

impl Lvm {
    /// lvm2's tools on the PV at `part` of `target`, when lvm is installed.
    pub fn open(target: &TargetDisk, part: ByteRange) -> Result<Option<Lvm>> {
        let Some(lvm) = crate::cmd::which("lvm") else {
            return Ok(None);
        };
        let lo = LoopDevice::attach(&target.path, part.offset, part.len)?;
        Ok(Some(Lvm { lvm, lo }))
    }

    pub fn device(&self) -> &Path {
        self.lo.path()
    }

    /// Detach the loop device, reporting a failure.
    pub fn close(self) -> Result<()> {
        self.lo.close()
    }
}

/// The PV as lvm2 reports it.
pub fn physical_volume(tools: &Lvm) -> Result<Pv> {
    let dev = tools.device().display().to_string();
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
pub fn segments(tools: &Lvm, vg: &str) -> Result<Vec<Segment>> {
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
    let dev = tools.device().display().to_string();
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

/// The segments of one volume on this PV, in extent order.
pub fn pieces_of(tools: &Lvm, vg: &str, lv: &str) -> Result<Vec<Segment>> {
    let mut pieces: Vec<Segment> = segments(tools, vg)?
        .into_iter()
        .filter(|s| s.lv == lv)
        .collect();
    pieces.sort_by_key(|s| s.first);
    Ok(pieces)
}

impl Segment {
    /// How many extents it spans.
    pub fn extents(&self) -> u64 {
        self.last + 1 - self.first
    }

    /// Where it is on the disk, the PV starting at byte `pv_offset`.
    pub fn bytes(&self, pv: &Pv, pv_offset: u64) -> ByteRange {
        ByteRange::new(
            pv_offset + pv.pe_start + self.first * pv.extent,
            self.extents() * pv.extent,
        )
    }
}
