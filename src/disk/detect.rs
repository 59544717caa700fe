//! What disks the machine has, from sysfs: sizes, sector sizes, identity, transport,
//! partitions, filesystems and mounts.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::fs as fsprobe;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Disk {
    pub name: String,
    pub path: String,
    pub dev: String,
    pub size: u64,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub wwn: Option<String>,
    pub transport: String,
    pub removable: bool,
    pub rotational: bool,
    pub read_only: bool,
    pub fstype: Option<fsprobe::FsKind>,
    pub mountpoints: Vec<String>,
    pub partitions: Vec<Partition>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Partition {
    pub name: String,
    pub path: String,
    pub dev: String,
    pub number: u32,
    pub start: u64,
    pub size: u64,
    pub fstype: Option<fsprobe::FsKind>,
    pub mountpoints: Vec<String>,
}

impl Disk {
    pub fn mounted(&self) -> bool {
        !self.mountpoints.is_empty() || self.partitions.iter().any(|p| !p.mountpoints.is_empty())
    }
}

pub fn read_trim(path: &Path) -> Option<String> {
    fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn read_u64(path: &Path) -> Option<u64> {
    read_trim(path).and_then(|s| s.parse().ok())
}

/// A mount of a block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub point: String,
    /// The filesystem itself is read-write (its superblock options, not the mount
    /// point's: a read-only bind mount of a read-write filesystem still changes).
    pub writable: bool,
    /// The filesystem type, as mountinfo names it (`ext4`, `xfs`, `fuseblk`).
    pub fstype: String,
}

/// major:minor → its mounts, from /proc/self/mountinfo. A filesystem is found under the
/// device it was mounted from too: btrfs reports an anonymous device number of its own.
pub fn mounts() -> Result<HashMap<String, Vec<Mount>>> {
    let text = fs::read_to_string("/proc/self/mountinfo").context("read /proc/self/mountinfo")?;
    let mut map: HashMap<String, Vec<Mount>> = HashMap::new();
    for (dev, source, mount) in parse_mountinfo(&text) {
        let by_source = source
            .strip_prefix("/dev/")
            .and_then(|_| fs::metadata(&source).ok())
            .filter(|m| m.file_type().is_block_device())
            .map(|m| {
                let r = m.rdev();
                format!("{}:{}", nix::sys::stat::major(r), nix::sys::stat::minor(r))
            })
            .filter(|d| *d != dev);
        if let Some(d) = by_source {
            map.entry(d).or_default().push(mount.clone());
        }
        map.entry(dev).or_default().push(mount);
    }
    Ok(map)
}

/// Each mount: its major:minor, its source, and where and how it is mounted.
fn parse_mountinfo(text: &str) -> Vec<(String, String, Mount)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() <= 5 {
            continue;
        }
        // Optional fields end at "-", then the type, the source and the superblock's
        // options.
        let sep = f.iter().position(|x| *x == "-");
        let fstype = sep.and_then(|i| f.get(i + 1)).map(|s| unescape(s));
        let source = sep.and_then(|i| f.get(i + 2)).map(|s| unescape(s));
        let superblock = sep.and_then(|i| f.get(i + 3)).unwrap_or(&f[5]);
        out.push((
            f[2].to_string(),
            source.unwrap_or_default(),
            Mount {
                point: unescape(f[4]),
                writable: superblock.split(',').any(|o| o == "rw"),
                fstype: fstype.unwrap_or_default(),
            },
        ));
    }
    out
}

/// Mount points of a major:minor.
fn points(mounts: &HashMap<String, Vec<Mount>>, dev: &str) -> Vec<String> {
    mounts
        .get(dev)
        .map(|m| m.iter().map(|m| m.point.clone()).collect())
        .unwrap_or_default()
}

/// Mountinfo escapes spaces and such as \040.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Active swap devices and files, as major:minor for devices and paths for files.
pub fn swaps() -> Vec<String> {
    fs::read_to_string("/proc/swaps")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(unescape))
        .collect()
}

/// The sysfs directory of a block device node (whole disk or partition), if it is one.
pub fn sysfs_dir_of(path: &Path) -> Option<PathBuf> {
    let meta = fs::metadata(path).ok()?;
    if !meta.file_type().is_block_device() {
        return None;
    }
    let rdev = meta.rdev();
    let (maj, min) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    fs::canonicalize(format!("/sys/dev/block/{maj}:{min}")).ok()
}

/// A disk's serial: the sysfs attribute where the driver offers one (SCSI/SATA via the
/// device, NVMe and virtio on the disk itself).
pub fn serial_of(sys: &Path) -> Option<String> {
    read_trim(&sys.join("device/serial"))
        .or_else(|| read_trim(&sys.join("serial")))
        .or_else(|| {
            // SCSI VPD page 0x80: 4-byte header, then the serial.
            fs::read(sys.join("device/vpd_pg80"))
                .ok()
                .filter(|b| b.len() > 4)
                .map(|b| String::from_utf8_lossy(&b[4..]).trim().to_string())
                .filter(|s| !s.is_empty())
        })
}

/// A disk's World Wide Name, where sysfs has one.
pub fn wwn_of(sys: &Path) -> Option<String> {
    read_trim(&sys.join("wwid")).or_else(|| read_trim(&sys.join("device/wwid")))
}

fn transport_of(sys: &Path, name: &str) -> String {
    let real = fs::canonicalize(sys)
        .unwrap_or_default()
        .display()
        .to_string();
    let t = if name.starts_with("nvme") {
        "nvme"
    } else if name.starts_with("loop") {
        "loop"
    } else if name.starts_with("mmcblk") {
        "mmc"
    } else if name.starts_with("dm-") || name.starts_with("md") {
        "virtual"
    } else if real.contains("/usb") {
        "usb"
    } else if real.contains("/ata") {
        "sata"
    } else if real.contains("/virtio") {
        "virtio"
    } else if real.contains("/host") {
        "scsi"
    } else {
        "unknown"
    };
    t.to_string()
}

fn probe_path(path: &Path) -> Option<fsprobe::FsKind> {
    use std::os::unix::fs::FileExt;
    let f = fs::File::open(path).ok()?;
    let mut buf = vec![0u8; fsprobe::PROBE_BYTES];
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], n as u64) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    buf.truncate(n);
    fsprobe::probe(&buf)
}

/// Every block device with a medium, partitions folded under their disk.
pub fn list_disks() -> Result<Vec<Disk>> {
    let mounts = mounts()?;
    let mut disks = Vec::new();
    let mut names: Vec<String> = fs::read_dir("/sys/block")
        .context("read /sys/block")?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    for name in names {
        if name.starts_with("ram") || name.starts_with("zram") {
            continue;
        }
        let sys = PathBuf::from("/sys/block").join(&name);
        let sectors = read_u64(&sys.join("size")).unwrap_or(0);
        if sectors == 0 {
            continue;
        }
        let dev = read_trim(&sys.join("dev")).unwrap_or_default();
        let path = format!("/dev/{name}");
        let mut partitions = Vec::new();
        if let Ok(rd) = fs::read_dir(&sys) {
            for e in rd.filter_map(|e| e.ok()) {
                let p = e.path();
                if !p.join("partition").exists() {
                    continue;
                }
                let pname = e.file_name().to_string_lossy().into_owned();
                let pdev = read_trim(&p.join("dev")).unwrap_or_default();
                let ppath = format!("/dev/{pname}");
                partitions.push(Partition {
                    number: read_u64(&p.join("partition")).unwrap_or(0) as u32,
                    start: read_u64(&p.join("start")).unwrap_or(0) * 512,
                    size: read_u64(&p.join("size")).unwrap_or(0) * 512,
                    fstype: probe_path(Path::new(&ppath)),
                    mountpoints: points(&mounts, &pdev),
                    name: pname,
                    path: ppath,
                    dev: pdev,
                });
            }
        }
        partitions.sort_by_key(|p| p.number);
        let q = sys.join("queue");
        disks.push(Disk {
            size: sectors * 512,
            logical_sector_size: read_u64(&q.join("logical_block_size")).unwrap_or(512) as u32,
            physical_sector_size: read_u64(&q.join("physical_block_size")).unwrap_or(512) as u32,
            model: read_trim(&sys.join("device/model")),
            serial: serial_of(&sys),
            wwn: wwn_of(&sys),
            transport: transport_of(&sys, &name),
            removable: read_u64(&sys.join("removable")) == Some(1),
            rotational: read_u64(&q.join("rotational")) == Some(1),
            read_only: read_u64(&sys.join("ro")) == Some(1),
            fstype: probe_path(Path::new(&path)),
            mountpoints: points(&mounts, &dev),
            partitions,
            name,
            path,
            dev,
        });
    }
    Ok(disks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_tells_read_write_filesystems_by_their_superblock() {
        let text = "\
36 35 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
37 35 8:2 / /mnt/a\\040b ro,relatime - xfs /dev/sda2 ro,attr2
38 35 8:2 /x /srv ro,relatime shared:7 master:2 - xfs /dev/sda2 rw,attr2
";
        let m = parse_mountinfo(text);
        assert_eq!(
            m[0],
            (
                "8:1".to_string(),
                "/dev/sda1".to_string(),
                Mount {
                    point: "/".into(),
                    writable: true,
                    fstype: "ext4".into(),
                }
            )
        );
        assert_eq!(m[1].2.point, "/mnt/a b");
        assert!(!m[1].2.writable);
        // A read-only bind mount of a read-write filesystem: it still changes.
        assert!(m[2].2.writable);
        assert_eq!(m[2].2.fstype, "xfs");
    }
}
