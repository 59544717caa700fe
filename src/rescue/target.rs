//! Which disks the rescue may touch: never the boot medium (the stick with the
//! `lifeboat-data` partition) nor the disk holding the repository; and resolving
//! `lifeboat.target=` to one disk.

use std::fs;
use std::os::unix::fs::FileExt;

use anyhow::{bail, Context, Result};

use super::cmdline::TargetSpec;
use crate::disk::detect::{list_disks, Disk};
use crate::media::usb::DATA_PARTITION_NAME;

/// A GPT partition's name, from the kernel's uevent.
pub fn partition_name(part: &str) -> Option<String> {
    let ev = fs::read_to_string(format!("/sys/class/block/{part}/uevent")).ok()?;
    ev.lines()
        .find_map(|l| l.strip_prefix("PARTNAME="))
        .map(str::to_string)
}

/// The rescue stick: a disk with a partition named `lifeboat-data`; returns the disk and
/// that partition's device path.
pub fn find_stick(disks: &[Disk]) -> Option<(Disk, String)> {
    disks.iter().find_map(|d| {
        d.partitions
            .iter()
            .find(|p| partition_name(&p.name).as_deref() == Some(DATA_PARTITION_NAME))
            .map(|p| (d.clone(), p.path.clone()))
    })
}

/// Whether a disk's first and last MiB are all zeros (a blank disk).
pub fn is_empty(d: &Disk) -> Result<bool> {
    let f = fs::File::open(&d.path).with_context(|| format!("open {}", d.path))?;
    let mib = 1 << 20;
    let mut buf = vec![0u8; mib as usize];
    for at in [0, d.size.saturating_sub(mib)] {
        let n = f
            .read_at(&mut buf, at)
            .with_context(|| format!("read {}", d.path))?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The disks that may be restored onto: not the boot medium, not the repository's disk,
/// not mounted, not read-only.
pub fn candidates(excluded: &[String]) -> Result<Vec<Disk>> {
    Ok(list_disks()?
        .into_iter()
        .filter(|d| !excluded.contains(&d.path) && !d.mounted() && !d.read_only)
        .filter(|d| !d.name.starts_with("loop") && !d.name.starts_with("sr"))
        .collect())
}

pub fn resolve(spec: &TargetSpec, excluded: &[String]) -> Result<Disk> {
    let all = list_disks()?;
    let pick = |f: &dyn Fn(&Disk) -> bool, what: &str| -> Result<Disk> {
        let Some(d) = all.iter().find(|d| f(d)) else {
            bail!(
                "no disk with {what} (disks: {})",
                all.iter()
                    .map(|d| d.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        if excluded.contains(&d.path) {
            bail!(
                "{} ({what}) is the boot medium or holds the repository: refusing it as the target",
                d.path
            );
        }
        Ok(d.clone())
    };
    match spec {
        TargetSpec::Serial(s) => pick(&|d| d.serial.as_deref() == Some(s), &format!("serial {s}")),
        TargetSpec::Wwn(w) => pick(
            &|d| d.wwn.as_deref().is_some_and(|x| x.eq_ignore_ascii_case(w)),
            &format!("wwn {w}"),
        ),
        TargetSpec::Path(p) => pick(&|d| &d.path == p, &format!("path {p}")),
        TargetSpec::LargestEmpty => {
            let mut empty = Vec::new();
            for d in candidates(excluded)? {
                if is_empty(&d)? {
                    empty.push(d);
                }
            }
            empty.sort_by_key(|d| std::cmp::Reverse(d.size));
            empty.into_iter().next().context("no empty disk to restore onto (largest-empty wants a disk whose first and last MiB are zeros)")
        }
    }
}
