//! Which disks the rescue may touch: never the boot medium (the stick with the
//! `lifeboat-data` partition) nor the disk holding the repository; and resolving
//! `lifeboat.target=` to one disk.

use std::fs;
use std::os::unix::fs::FileExt;

use anyhow::{bail, Context, Result};

use super::cmdline::TargetSpec;
use crate::disk::detect::{list_disks, Disk};
use crate::media::usb::DATA_PARTITION_NAME;
use crate::repo::manifest::SourceInfo;

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

/// One disk per spec, each different: `auto` by what the snapshot recorded of its disk
/// (`recorded[i]`, needed for it), the others as `resolve` finds them.
pub fn resolve_all(
    specs: &[TargetSpec],
    recorded: Option<&[(SourceInfo, u64)]>,
    excluded: &[String],
) -> Result<Vec<Disk>> {
    let mut chosen: Vec<Disk> = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let mut not = excluded.to_vec();
        not.extend(chosen.iter().map(|d| d.path.clone()));
        let disk = match spec {
            TargetSpec::Auto => {
                let want = recorded
                    .and_then(|r| r.get(i))
                    .context("lifeboat.target=auto is for restores of a snapshot's disks")?;
                let mut cands = Vec::new();
                for d in candidates(&not)? {
                    let empty = is_empty(&d)?;
                    cands.push((d, empty));
                }
                let at = pick_auto(&want.0, want.1, &cands).with_context(|| {
                    format!(
                        "no disk for the snapshot's disk {i} (serial {}, {}): none has its \
                         serial or WWN, and no empty disk is large enough",
                        want.0.serial.as_deref().unwrap_or("-"),
                        crate::ui::bytes(want.1)
                    )
                })?;
                cands.swap_remove(at).0
            }
            other => resolve(other, &not)?,
        };
        chosen.push(disk);
    }
    Ok(chosen)
}

/// The candidate for a disk the snapshot recorded as `source` of `size` bytes: the one
/// with its serial or WWN (and room for it), else the smallest empty one it fits.
pub fn pick_auto(source: &SourceInfo, size: u64, cands: &[(Disk, bool)]) -> Option<usize> {
    let same = |d: &Disk| {
        (source.serial.is_some() && d.serial == source.serial)
            || (source.wwn.is_some()
                && d.wwn.as_deref().map(str::to_ascii_lowercase)
                    == source.wwn.as_deref().map(str::to_ascii_lowercase))
    };
    if let Some(i) = cands.iter().position(|(d, _)| same(d) && d.size >= size) {
        return Some(i);
    }
    cands
        .iter()
        .enumerate()
        .filter(|(_, (d, empty))| *empty && d.size >= size)
        .min_by_key(|(_, (d, _))| d.size)
        .map(|(i, _)| i)
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
        TargetSpec::Auto => bail!("lifeboat.target=auto is for restores of a snapshot's disks"),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(path: &str, size: u64, serial: Option<&str>) -> Disk {
        Disk {
            path: path.into(),
            size,
            serial: serial.map(str::to_string),
            ..Disk::default()
        }
    }

    #[test]
    fn auto_takes_the_same_disk_else_the_smallest_empty_one_that_fits() {
        let gib = 1 << 30;
        let cands = vec![
            (disk("/dev/vda", 4 * gib, Some("A")), false),
            (disk("/dev/vdb", 2 * gib, None), true),
            (disk("/dev/vdc", 3 * gib, None), true),
            (disk("/dev/vdd", 1 << 29, None), true),
        ];
        let rec = |serial: Option<&str>| SourceInfo {
            serial: serial.map(str::to_string),
            ..SourceInfo::default()
        };
        // Its own serial, though not empty.
        assert_eq!(pick_auto(&rec(Some("A")), gib, &cands), Some(0));
        // Another machine's disk: the smallest empty one with room.
        assert_eq!(pick_auto(&rec(Some("Z")), gib, &cands), Some(1));
        assert_eq!(pick_auto(&rec(None), 5 * gib / 2, &cands), Some(2));
        assert_eq!(pick_auto(&rec(None), 5 * gib, &cands), None);
    }
}
