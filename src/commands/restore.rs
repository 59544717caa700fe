//! `lifeboat restore`: its options. The rescue builds the same struct from the kernel
//! command line.

use std::path::PathBuf;

use clap::Args;

use crate::repo::RepoSpec;

/// A `--target`: a disk, or a disk for the snapshot's disk N.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    pub disk: Option<usize>,
    pub path: PathBuf,
}

impl TargetSpec {
    pub fn path(path: impl Into<PathBuf>) -> TargetSpec {
        TargetSpec {
            disk: None,
            path: path.into(),
        }
    }
}

impl std::str::FromStr for TargetSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<TargetSpec, String> {
        match s.split_once('=') {
            Some((n, path)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                Ok(TargetSpec {
                    disk: Some(n.parse().map_err(|_| format!("disk number {n}"))?),
                    path: path.into(),
                })
            }
            _ => Ok(TargetSpec::path(s)),
        }
    }
}

/// Which disk of a snapshot of `disks` disks goes to which target: by order, or by
/// number; each disk and each target at most once. Nothing else is restored.
pub fn map_targets(disks: usize, specs: &[TargetSpec]) -> Result<Vec<(usize, PathBuf)>, String> {
    let numbered = specs.iter().filter(|s| s.disk.is_some()).count();
    let out: Vec<(usize, PathBuf)> = if numbered == 0 {
        if specs.len() != disks {
            return Err(format!(
                "the snapshot holds {disks} disk(s) and {} --target were given: give one per \
                 disk in order, or N=DISK for those to restore",
                specs.len()
            ));
        }
        specs.iter().map(|s| s.path.clone()).enumerate().collect()
    } else if numbered == specs.len() {
        specs
            .iter()
            .map(|s| (s.disk.unwrap_or(0), s.path.clone()))
            .collect()
    } else {
        return Err("give every --target as N=DISK, or none of them".into());
    };
    for (i, (n, path)) in out.iter().enumerate() {
        if *n >= disks {
            return Err(format!(
                "--target {n}={}: the snapshot's disks are numbered 0 to {}",
                path.display(),
                disks - 1
            ));
        }
        // `auto` names no one disk: it may be given for several.
        let same = |p: &PathBuf| p == path && path.as_os_str() != "auto";
        if let Some((m, _)) = out[..i].iter().find(|(m, p)| m == n || same(p)) {
            return Err(format!(
                "disk {m} and disk {n} cannot both go to {} (or one disk to two targets)",
                path.display()
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(list: &[&str]) -> Vec<TargetSpec> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn targets_map_by_order_or_by_number() {
        assert_eq!(
            map_targets(2, &specs(&["/dev/sda", "/dev/sdb"])).unwrap(),
            vec![(0, "/dev/sda".into()), (1, "/dev/sdb".into())]
        );
        assert_eq!(
            map_targets(3, &specs(&["2=/dev/sda", "0=b.img"])).unwrap(),
            vec![(2, "/dev/sda".into()), (0, "b.img".into())]
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
            assert!(map_targets(2, &specs(bad)).is_err(), "{bad:?}");
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub repo: RepoSpec,
    #[command(flatten)]
    pub trust: crate::trust::TrustArgs,
    /// Snapshot name (the newest with it), id or id prefix (no prefix while signatures
    /// are required).
    #[arg(long, value_name = "NAME_OR_ID")]
    pub snapshot: String,
    /// The disk to overwrite; an image file that does not exist is created. For a
    /// snapshot of several disks, one `--target` per disk in order, or `N=DISK` for disk
    /// N (those named only are restored). DISK may be a hint instead of a path:
    /// `serial:S`, `wwn:W`, or `auto` (this machine's disk with the serial or WWN the
    /// snapshot recorded for it, else the smallest empty disk it fits; `./auto` for a file
    /// of that name).
    #[arg(long, value_name = "[N=]DISK", required = true)]
    pub target: Vec<TargetSpec>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Read everything back afterwards and compare hashes.
    #[arg(long)]
    pub verify: bool,
    /// Take chunks from this image (file or device) where it has them, or, given a
    /// snapshot name or id, trust that the target holds that older snapshot and check
    /// in place only where it had the same chunk.
    #[arg(long, value_name = "IMAGE_OR_SNAPSHOT")]
    pub seed: Option<String>,
    /// Write every chunk, without first reading what an existing target already holds.
    #[arg(long)]
    pub no_reuse: bool,
    /// Zero free filesystem space (by default it is left as it is; the filesystem never
    /// reads it).
    #[arg(long)]
    pub zero_free: bool,
    /// Extend the last partition to the end of a larger target, and grow an ext4
    /// filesystem in it when resize2fs is available.
    #[arg(long)]
    pub grow: bool,
    /// Where a restore onto a smaller target shrinks the disk first (a sparse copy
    /// taking about the snapshot's data; default: $TMPDIR or /tmp).
    #[arg(long, value_name = "DIR")]
    pub scratch: Option<PathBuf>,
}
