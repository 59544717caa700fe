//! The rescue's own stick: the disk with the `lifeboat-data` partition, which is never a
//! target (`restore::targets` resolves `lifeboat.target=`, with the stick and the
//! repository's disk excluded).

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::report::Report;
use crate::location::RepoLocation;

use crate::disk::detect::Disk;
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

/// The boot ISO mounted read-only at `at`: the first CD-ROM or whole disk whose ISO 9660
/// filesystem holds /lifeboat/media-ID (the id of `lifeboat.media=`), or, without an id,
/// a /repo. Returns its device.
pub fn mount_iso(media_id: Option<&str>, at: &str) -> Option<String> {
    let mut names: Vec<String> = fs::read_dir("/sys/block")
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("loop") && !n.starts_with("ram"))
        .collect();
    // CD-ROMs first.
    names.sort_by_key(|n| (!n.starts_with("sr"), n.clone()));
    for name in names {
        let dev = format!("/dev/{name}");
        if super::mounts::iso9660(&dev, at).is_err() {
            continue;
        }
        let root = std::path::Path::new(at);
        let ours = match media_id {
            Some(id) => root
                .join("lifeboat")
                .join(crate::media::chain::marker_name(id))
                .is_file(),
            None => root.join("repo").is_dir(),
        };
        if ours {
            return Some(dev);
        }
        let _ = nix::mount::umount(at);
    }
    None
}

/// `lifeboat.repo=cdrom`: the repository on the boot ISO, mounted read-only; its device
/// joins `excluded`.
pub(super) fn cdrom_repo(report: &Report, excluded: &mut Vec<String>) -> Result<RepoLocation> {
    let media = report.orders.as_ref().and_then(|o| o.media.clone());
    let mnt = "/mnt/cdrom";
    let repo = Path::new(mnt).join("repo");
    if !repo.exists() {
        let dev = mount_iso(media.as_deref(), mnt).with_context(|| {
            format!(
                "lifeboat.repo=cdrom, but no CD-ROM or disk holds this rescue's ISO{}",
                media
                    .as_deref()
                    .map(|m| format!(" (medium {m})"))
                    .unwrap_or_default()
            )
        })?;
        println!("lifeboat: repository on the boot ISO ({dev}, read-only)");
        excluded.push(dev);
    }
    if !repo.is_dir() {
        bail!("the boot ISO holds no repository (mkimage --with-repo puts one there)");
    }
    Ok(RepoLocation::Dir(repo))
}
