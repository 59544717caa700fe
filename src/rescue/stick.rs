//! The rescue's own stick: the disk with the `lifeboat-data` partition, which is never a
//! target (`restore::targets` resolves `lifeboat.target=`, with the stick and the
//! repository's disk excluded).

use std::fs;

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
