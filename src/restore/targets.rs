//! Restore targets, one home for them: what `--target` and the rescue's
//! `lifeboat.target=` name (a path, or a hint: `serial:S`, `wwn:W`, `auto`,
//! `largest-empty`), which of the snapshot's disks goes to which (`map`), and the
//! machine's disk each hint stands for (`resolve`), for the command line and the rescue
//! alike.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::disk::detect::{list_disks, Disk};
use crate::repo::manifest::{SourceInfo, MAX_DISKS};

/// What a target names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// A block device or an image file (in the rescue, one of the machine's disks).
    Path(PathBuf),
    /// The disk with this serial number.
    Serial(String),
    /// The disk with this World Wide Name.
    Wwn(String),
    /// By the snapshot's own record of the disk: the disk with its serial or WWN, else
    /// the smallest empty disk it fits.
    Auto,
    /// The largest empty disk (the rescue's `largest-empty`).
    LargestEmpty,
}

/// A `--target`: `[N=]DISK`, for the snapshot's disk N or, without `N=`, the next disk in
/// order. DISK is a path, or `serial:S`, `wwn:W` or `auto` (`./auto` for a file of that
/// name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    pub disk: Option<usize>,
    pub target: Target,
}

impl TargetSpec {
    /// A disk or image file, for the next disk in order.
    pub fn path(path: impl Into<PathBuf>) -> TargetSpec {
        TargetSpec {
            disk: None,
            target: Target::Path(path.into()),
        }
    }
}

impl FromStr for TargetSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<TargetSpec, String> {
        let (disk, rest) = match s.split_once('=') {
            Some((n, rest)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => (
                Some(n.parse().map_err(|_| format!("disk number {n}"))?),
                rest,
            ),
            _ => (None, s),
        };
        let target = if rest == "auto" {
            Target::Auto
        } else if let Some(serial) = rest.strip_prefix("serial:") {
            Target::Serial(serial.into())
        } else if let Some(wwn) = rest.strip_prefix("wwn:") {
            Target::Wwn(wwn.into())
        } else {
            Target::Path(rest.into())
        };
        Ok(TargetSpec { disk, target })
    }
}

impl Target {
    /// One target of the rescue's `lifeboat.target=`: `serial:S`, `wwn:W`,
    /// `path:/dev/X`, `largest-empty` or `auto`.
    pub fn from_order(s: &str) -> Result<Target> {
        Ok(match s.split_once(':') {
            Some(("serial", v)) if !v.is_empty() => Target::Serial(v.into()),
            Some(("wwn", v)) if !v.is_empty() => Target::Wwn(v.into()),
            Some(("path", v)) if v.starts_with("/dev/") => Target::Path(v.into()),
            None if s == "largest-empty" => Target::LargestEmpty,
            None if s == "auto" => Target::Auto,
            _ => {
                bail!(
                    "lifeboat.target={s}: expected serial:S, wwn:W, path:/dev/X, largest-empty \
                     or auto (one per disk, separated by commas)"
                )
            }
        })
    }

    /// The rescue's comma-separated list, one per disk.
    pub fn list_from_orders(s: &str) -> Result<Vec<Target>> {
        let list = s
            .split(',')
            .map(Target::from_order)
            .collect::<Result<Vec<_>>>()?;
        if list.len() > MAX_DISKS {
            bail!("lifeboat.target= lists {} disks", list.len());
        }
        Ok(list)
    }
}

/// As a person wrote it, for messages.
impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Path(p) => write!(f, "{}", p.display()),
            Target::Serial(s) => write!(f, "serial:{s}"),
            Target::Wwn(w) => write!(f, "wwn:{w}"),
            Target::Auto => f.write_str("auto"),
            Target::LargestEmpty => f.write_str("largest-empty"),
        }
    }
}

/// Which disk of a snapshot of `disks` disks goes to which target: by order, or by
/// number; each disk and each target at most once (`auto` names no one disk: it may be
/// given for several). Nothing else is restored.
pub fn map(disks: usize, specs: &[TargetSpec]) -> Result<Vec<(usize, Target)>, String> {
    let numbered = specs.iter().filter(|s| s.disk.is_some()).count();
    let out: Vec<(usize, Target)> = if numbered == 0 {
        if specs.len() != disks {
            return Err(format!(
                "the snapshot holds {disks} disk(s) and {} --target were given: give one per \
                 disk in order, or N=DISK for those to restore",
                specs.len()
            ));
        }
        specs.iter().map(|s| s.target.clone()).enumerate().collect()
    } else if numbered == specs.len() {
        specs
            .iter()
            .map(|s| (s.disk.unwrap_or(0), s.target.clone()))
            .collect()
    } else {
        return Err("give every --target as N=DISK, or none of them".into());
    };
    for (i, (n, target)) in out.iter().enumerate() {
        if *n >= disks {
            return Err(format!(
                "--target {n}={}: the snapshot's disks are numbered 0 to {}",
                target,
                disks - 1
            ));
        }
        let same = |t: &Target| t == target && *target != Target::Auto;
        if let Some((m, _)) = out[..i].iter().find(|(m, t)| m == n || same(t)) {
            return Err(format!(
                "disk {m} and disk {n} cannot both go to {} (or one disk to two targets)",
                target
            ));
        }
    }
    Ok(out)
}

/// The machine a restore (or the rescue's capture) chooses its disks on.
#[derive(Debug, Clone, Copy)]
pub struct Machine<'a> {
    /// Disks never to choose: the rescue's boot medium and the repository's disk.
    pub excluded: &'a [String],
    /// A path must name one of the machine's disks (the rescue), rather than any block
    /// device or image file (the command line, whose preflight checks it).
    pub disks_only: bool,
}

/// A target chosen: its path, and the disk it is when it was looked up among the
/// machine's disks.
#[derive(Debug, Clone)]
pub struct Chosen {
    pub path: PathBuf,
    pub disk: Option<Disk>,
}

/// The disk each target stands for, in order: a path as it is (looked up among the
/// machine's disks when `machine.disks_only`), a hint on this machine. `auto` for the
/// snapshot's disk N places it by `recorded[N]` (what the snapshot recorded of it, and
/// its size). Each disk is chosen once, and a hint never chooses a disk another target
/// names.
pub fn resolve(
    wanted: &[(usize, Target)],
    recorded: Option<&[(SourceInfo, u64)]>,
    machine: Machine,
) -> Result<Vec<Chosen>> {
    let mut not: Vec<String> = machine.excluded.to_vec();
    not.extend(wanted.iter().filter_map(|(_, t)| match t {
        Target::Path(p) => Some(p.display().to_string()),
        _ => None,
    }));
    let mut chosen: Vec<Chosen> = Vec::with_capacity(wanted.len());
    for (i, target) in wanted {
        let taken: Vec<String> = chosen
            .iter()
            .map(|c| c.path.display().to_string())
            .collect();
        let found = match target {
            Target::Path(p) if !machine.disks_only => {
                chosen.push(Chosen {
                    path: p.clone(),
                    disk: None,
                });
                continue;
            }
            Target::Path(p) => by_path(p, &[machine.excluded, &taken].concat())?,
            Target::Auto => {
                let want = recorded
                    .and_then(|r| r.get(*i))
                    .context("lifeboat.target=auto is for restores of a snapshot's disks")?;
                auto(*i, want, &[&not[..], &taken].concat())?
            }
            other => find(other, &[&not[..], &taken].concat())?,
        };
        log::info!("disk {i}: target {} is {}", target, found.path);
        chosen.push(Chosen {
            path: PathBuf::from(&found.path),
            disk: Some(found),
        });
    }
    Ok(chosen)
}

/// `auto` for the snapshot's disk `i`, recorded as `want`.
fn auto(i: usize, want: &(SourceInfo, u64), excluded: &[String]) -> Result<Disk> {
    let mut cands = Vec::new();
    for d in candidates(excluded)? {
        let empty = is_empty(&d)?;
        cands.push((d, empty));
    }
    let at = pick_auto(&want.0, want.1, &cands).with_context(|| {
        format!(
            "no disk for the snapshot's disk {i} (serial {}, {}): none has its serial or \
             WWN, and no empty disk is large enough",
            want.0.serial.as_deref().unwrap_or("-"),
            crate::ui::bytes(want.1)
        )
    })?;
    Ok(cands.swap_remove(at).0)
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

/// The disks that may be restored onto: not excluded (the boot medium, the repository's
/// disk), not mounted, not read-only, no loop device or optical drive.
pub fn candidates(excluded: &[String]) -> Result<Vec<Disk>> {
    Ok(list_disks()?
        .into_iter()
        .filter(|d| !excluded.contains(&d.path) && !d.mounted() && !d.read_only)
        .filter(|d| !d.name.starts_with("loop") && !d.name.starts_with("sr"))
        .collect())
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

/// The machine's disk at `path`.
fn by_path(path: &Path, excluded: &[String]) -> Result<Disk> {
    let p = path.display().to_string();
    pick_one(&|d| d.path == p, &format!("path {p}"), excluded)
}

/// The machine's disk a hint other than `auto` names.
fn find(target: &Target, excluded: &[String]) -> Result<Disk> {
    match target {
        Target::Serial(s) => pick_one(
            &|d| d.serial.as_deref() == Some(s),
            &format!("serial {s}"),
            excluded,
        ),
        Target::Wwn(w) => pick_one(
            &|d| d.wwn.as_deref().is_some_and(|x| x.eq_ignore_ascii_case(w)),
            &format!("wwn {w}"),
            excluded,
        ),
        Target::Path(p) => by_path(p, excluded),
        Target::Auto => bail!("lifeboat.target=auto is for restores of a snapshot's disks"),
        Target::LargestEmpty => {
            let mut empty = Vec::new();
            for d in candidates(excluded)? {
                if is_empty(&d)? {
                    empty.push(d);
                }
            }
            empty.sort_by_key(|d| std::cmp::Reverse(d.size));
            empty.into_iter().next().context(
                "no empty disk to restore onto (largest-empty wants a disk whose first and last \
                 MiB are zeros)",
            )
        }
    }
}

/// The first of the machine's disks that `f` accepts, unless it is excluded.
fn pick_one(f: &dyn Fn(&Disk) -> bool, what: &str, excluded: &[String]) -> Result<Disk> {
    let all = list_disks()?;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(list: &[&str]) -> Vec<TargetSpec> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn paths(list: &[(usize, &str)]) -> Vec<(usize, Target)> {
        list.iter()
            .map(|(n, p)| (*n, Target::Path(p.into())))
            .collect()
    }

    #[test]
    fn targets_map_by_order_or_by_number() {
        assert_eq!(
            map(2, &specs(&["/dev/sda", "/dev/sdb"])).unwrap(),
            paths(&[(0, "/dev/sda"), (1, "/dev/sdb")])
        );
        assert_eq!(
            map(3, &specs(&["2=/dev/sda", "0=b.img"])).unwrap(),
            paths(&[(2, "/dev/sda"), (0, "b.img")])
        );
        // A path with '=' in it is a path.
        assert_eq!(specs(&["x=y"])[0], TargetSpec::path("x=y"));
        for bad in [
            &["/dev/sda"][..],
            &["/dev/sda", "1=/dev/sdb"],
            &["5=/dev/sda"],
            &["0=/dev/sda", "1=/dev/sda"],
            &["0=/dev/sda", "0=/dev/sdb"],
        ] {
            assert!(map(2, &specs(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hints_are_read_from_the_command_line_and_the_rescue_orders() {
        assert_eq!(specs(&["auto"])[0].target, Target::Auto);
        assert_eq!(specs(&["./auto"])[0].target, Target::Path("./auto".into()));
        assert_eq!(
            specs(&["1=serial:S2X9"])[0],
            TargetSpec {
                disk: Some(1),
                target: Target::Serial("S2X9".into())
            }
        );
        assert_eq!(
            specs(&["wwn:0x5000"])[0].target,
            Target::Wwn("0x5000".into())
        );
        // `auto` twice is two disks placed by their records; any other target twice is not.
        assert!(map(2, &specs(&["auto", "auto"])).is_ok());
        assert!(map(2, &specs(&["serial:A", "serial:A"])).is_err());
        assert_eq!(
            Target::from_order("path:/dev/vda").unwrap(),
            Target::Path("/dev/vda".into())
        );
        assert_eq!(
            Target::from_order("largest-empty").unwrap(),
            Target::LargestEmpty
        );
        for bad in ["sda", "path:vda", "serial:", "auto,"] {
            assert!(Target::from_order(bad).is_err(), "{bad}");
        }
    }

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
