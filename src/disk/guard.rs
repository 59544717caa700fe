//! Who is using a disk: mounted (itself or a partition), active swap, held by device mapper
//! or RAID, backing a busy loop device. A restore refuses to write to a disk in any use (or
//! one holding the repository); a capture refuses to read one that is being written to.

use std::fmt;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::detect::{mounts, swaps, Mount};
use crate::range::ByteRange;

/// One way a disk (or a partition of it) is in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InUse {
    /// Mounted; `writable` when the filesystem itself is read-write.
    Mounted {
        device: String,
        points: Vec<String>,
        writable: bool,
    },
    Swap {
        device: String,
    },
    /// Held by device mapper (LVM, dm-crypt) or md RAID.
    Held {
        device: String,
        holders: Vec<String>,
        /// Every holder is an open LUKS mapping (dm-crypt) that nothing uses in turn:
        /// nothing can write through it.
        idle_crypt: bool,
    },
}

impl InUse {
    /// Whether a filesystem on it may change while it is read.
    pub fn may_change(&self) -> bool {
        match self {
            InUse::Mounted { writable, .. } => *writable,
            InUse::Held { idle_crypt, .. } => !idle_crypt,
            InUse::Swap { .. } => true,
        }
    }
}

impl fmt::Display for InUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InUse::Mounted {
                device,
                points,
                writable,
            } => write!(
                f,
                "{device} is mounted {}at {}",
                if *writable {
                    "read-write "
                } else {
                    "read-only "
                },
                points.join(", ")
            ),
            InUse::Swap { device } => write!(f, "{device} is active swap"),
            InUse::Held {
                device,
                holders,
                idle_crypt: false,
            } => write!(
                f,
                "{device} is held by {} (device mapper, RAID or LVM)",
                holders.join(", ")
            ),
            InUse::Held {
                device, holders, ..
            } => write!(
                f,
                "{device} is open as {} (a LUKS mapping nothing uses)",
                holders.join(", ")
            ),
        }
    }
}

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

/// Every use of a block device (a whole disk with its partitions, or a partition).
fn block_uses(sys: &Path) -> Result<Vec<InUse>> {
    let mounts = mounts()?;
    let swaps = swaps();
    let mut out = Vec::new();
    for (name, dev) in dev_and_parts(sys) {
        let device = format!("/dev/{name}");
        if let Some(m) = mounts.get(&dev) {
            out.push(InUse::Mounted {
                device: device.clone(),
                points: m.iter().map(|m: &Mount| m.point.clone()).collect(),
                writable: m.iter().any(|m| m.writable),
            });
        }
        if swaps.iter().any(|s| s == &device) {
            out.push(InUse::Swap {
                device: device.clone(),
            });
        }
        let holders = sys_holders(sys, &name);
        if !holders.is_empty() {
            let idle_crypt = holders.iter().all(|h| idle_crypt_mapping(h));
            out.push(InUse::Held {
                device,
                holders,
                idle_crypt,
            });
        }
    }
    Ok(out)
}

/// Whether `/sys/block/NAME` is a dm-crypt mapping of a LUKS container that is not
/// mounted, swap or held in turn.
fn idle_crypt_mapping(name: &str) -> bool {
    let sys = Path::new("/sys/block").join(name);
    let uuid = fs::read_to_string(sys.join("dm/uuid")).unwrap_or_default();
    uuid.starts_with("CRYPT-LUKS") && block_uses(&sys).is_ok_and(|u| u.is_empty())
}

/// The open LUKS mapping of the partition at `part` of the source disk `source`, if it
/// has one that nothing uses: the device whose reads are the container's plaintext.
pub fn idle_crypt_holder(source: &Path, part: ByteRange) -> Option<PathBuf> {
    let sys = partition_devices(source, part).into_iter().next()?;
    let name = sys.file_name()?.to_string_lossy().into_owned();
    let holders = sys_holders(&sys, &name);
    match holders.as_slice() {
        [h] if idle_crypt_mapping(h) => Some(PathBuf::from("/dev").join(h)),
        _ => None,
    }
}

fn check_block(sys: &Path, what: &str) -> Result<()> {
    match block_uses(sys)?.first() {
        None => Ok(()),
        Some(u @ InUse::Mounted { .. }) => bail!("{what} is in use: {u}; unmount it first"),
        Some(u @ InUse::Swap { .. }) => bail!("{what} is in use: {u}; swapoff it first"),
        Some(u) => bail!("{what} is in use: {u}"),
    }
}

/// Every use of a disk to be read: a block device's own, or those of the loop devices
/// an image file backs (with their offsets, they may be one partition of it), and an
/// image that is a swap file.
pub fn uses(source: &Path) -> Result<Vec<InUse>> {
    let meta = fs::metadata(source).with_context(|| format!("stat {}", source.display()))?;
    let canon =
        fs::canonicalize(source).with_context(|| format!("resolve {}", source.display()))?;
    if meta.file_type().is_block_device() {
        let sys = super::detect::sysfs_dir_of(&canon)
            .with_context(|| format!("find {} in sysfs", canon.display()))?;
        return block_uses(&sys);
    }
    let mut out = Vec::new();
    if meta.file_type().is_file() {
        for lo in loops_backed_by(&canon) {
            out.extend(block_uses(&lo)?);
        }
        if swaps().iter().any(|s| Path::new(s) == canon) {
            out.push(InUse::Swap {
                device: canon.display().to_string(),
            });
        }
    }
    Ok(out)
}

/// The sysfs directories of the block devices that are exactly the partition at `part`
/// (bytes) of the source disk `source`: a partition of a block device, or a loop device
/// over an image file at the partition's offset and size.
fn partition_devices(source: &Path, part: ByteRange) -> Vec<PathBuf> {
    let Ok(canon) = fs::canonicalize(source) else {
        return Vec::new();
    };
    let Ok(meta) = fs::metadata(&canon) else {
        return Vec::new();
    };
    // A number in a sysfs file (sizes in sectors; a loop device's offset in bytes).
    let number = |p: &Path, file: &str| -> Option<u64> {
        fs::read_to_string(p.join(file)).ok()?.trim().parse().ok()
    };
    let bytes = |p: &Path, file: &str| number(p, file).and_then(|s| s.checked_mul(512));
    let is_part = |dir: &Path, start: Option<u64>| {
        start == Some(part.offset) && bytes(dir, "size") == Some(part.len)
    };
    if meta.file_type().is_block_device() {
        let Some(sys) = super::detect::sysfs_dir_of(&canon) else {
            return Vec::new();
        };
        fs::read_dir(&sys)
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.join("partition").exists() && is_part(p, bytes(p, "start")))
                    .collect()
            })
            .unwrap_or_default()
    } else {
        loops_backed_by(&canon)
            .into_iter()
            .filter(|lo| is_part(lo, number(lo, "loop/offset")))
            .collect()
    }
}

/// The device node of the partition at `part` of `source`, where there is one.
pub fn partition_device(source: &Path, part: ByteRange) -> Option<PathBuf> {
    let sys = partition_devices(source, part).into_iter().next()?;
    Some(Path::new("/dev").join(sys.file_name()?))
}

/// Where the partition at `part` (bytes) of the source disk `source` is mounted, if it
/// is, with its device number.
pub fn mount_of_partition(source: &Path, part: ByteRange) -> Option<(Mount, u64)> {
    let mounts = mounts().ok()?;
    partition_devices(source, part).iter().find_map(|d| {
        let dev = fs::read_to_string(d.join("dev")).ok()?;
        let (major, minor) = dev.trim().split_once(':')?;
        let number = nix::sys::stat::makedev(major.parse().ok()?, minor.parse().ok()?);
        let m = mounts.get(dev.trim())?.first()?.clone();
        Some((m, number))
    })
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
