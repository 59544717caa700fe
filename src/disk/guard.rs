//! Refuse to write to a disk that anything is using: mounted (itself or a partition), active
//! swap, held by device mapper or RAID, backing a busy loop device, or holding the repository.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::detect::{mounts, swaps};

/// major:minor of a block device node, with the sysfs names of its partitions' numbers.
fn dev_and_parts(sys: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let name = sys
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Ok(d) = fs::read_to_string(sys.join("dev")) {
        out.push((name, d.trim().to_string()));
    }
    if let Ok(rd) = fs::read_dir(sys) {
        for e in rd.filter_map(|e| e.ok()) {
            let p = e.path();
            if p.join("partition").exists() {
                if let Ok(d) = fs::read_to_string(p.join("dev")) {
                    out.push((
                        e.file_name().to_string_lossy().into_owned(),
                        d.trim().to_string(),
                    ));
                }
            }
        }
    }
    out
}

fn check_block(sys: &Path, what: &str) -> Result<()> {
    let mounts = mounts()?;
    let swaps = swaps();
    for (name, dev) in dev_and_parts(sys) {
        if let Some(points) = mounts.get(&dev) {
            bail!(
                "{what} is in use: /dev/{name} is mounted at {}; unmount it first",
                points.join(", ")
            );
        }
        let node = format!("/dev/{name}");
        if swaps.iter().any(|s| s == &node) {
            bail!("{what} is in use: /dev/{name} is active swap; swapoff it first");
        }
        let holders = sys_holders(sys, &name);
        if !holders.is_empty() {
            bail!(
                "{what} is in use: /dev/{name} is held by {} (device mapper, RAID or LVM)",
                holders.join(", ")
            );
        }
    }
    Ok(())
}

fn sys_holders(disk_sys: &Path, name: &str) -> Vec<String> {
    let base = if disk_sys.file_name().map(|n| n == name).unwrap_or(false) {
        disk_sys.to_path_buf()
    } else {
        disk_sys.join(name)
    };
    fs::read_dir(base.join("holders"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Loop devices whose backing file is `file`.
fn loops_backed_by(file: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/sys/block") else {
        return out;
    };
    for e in rd.filter_map(|e| e.ok()) {
        let sys = e.path();
        if let Ok(b) = fs::read_to_string(sys.join("loop/backing_file")) {
            let b = b.trim().trim_end_matches(" (deleted)");
            if Path::new(b) == file {
                out.push(sys);
            }
        }
    }
    out
}

/// Check that `target` may be overwritten. `repo_dir` is the repository's directory, when
/// it is local.
pub fn check_target(target: &Path, repo_dir: Option<&Path>) -> Result<()> {
    let what = format!("target {}", target.display());
    let meta = match fs::metadata(target) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("stat {}", target.display())),
    };
    let canon =
        fs::canonicalize(target).with_context(|| format!("resolve {}", target.display()))?;
    if meta.file_type().is_block_device() {
        let sys = super::detect::sysfs_dir_of(&canon)
            .with_context(|| format!("find {} in sysfs", canon.display()))?;
        // A whole disk is checked with its partitions; a partition alone.
        check_block(&sys, &what)?;
        if let Some(repo) = repo_dir {
            let rmeta = fs::metadata(repo).with_context(|| format!("stat {}", repo.display()))?;
            let rdev = rmeta.dev();
            let repo_dev = format!(
                "{}:{}",
                nix::sys::stat::major(rdev),
                nix::sys::stat::minor(rdev)
            );
            if dev_and_parts(&sys).iter().any(|(_, d)| *d == repo_dev) {
                bail!(
                    "{what} holds the repository {}; restoring onto it would destroy the backup",
                    repo.display()
                );
            }
        }
    } else if meta.file_type().is_file() {
        for lo in loops_backed_by(&canon) {
            let name = lo.file_name().unwrap().to_string_lossy().into_owned();
            check_block(&lo, &format!("{what} (attached to /dev/{name})"))?;
        }
        if swaps().iter().any(|s| Path::new(s) == canon) {
            bail!("{what} is an active swap file");
        }
        if let Some(repo) = repo_dir {
            if let Ok(rc) = fs::canonicalize(repo) {
                if canon.starts_with(&rc) {
                    bail!("{what} lies inside the repository {}", repo.display());
                }
            }
        }
    } else {
        bail!("{what} is neither a block device nor a regular file");
    }
    Ok(())
}
