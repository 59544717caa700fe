//! A restored filesystem resized with its own tools: ext2/3/4 by e2fsck and resize2fs, in
//! place on a block device or through a loop device on an image file. `--grow` grows
//! one this way (in a partition, or in an LVM volume), and a smaller target has one
//! shrunk on its scratch copy.

use anyhow::Result;

use crate::disk::loopdev::LoopDevice;
use crate::disk::TargetDisk;
use crate::range::ByteRange;

/// e2fsck and resize2fs on the filesystem in `part`, to `to` bytes. On a block device,
/// e2fsprogs' "PATH?offset=N" names it in place. An image file goes through a loop
/// device: resize2fs truncates a regular file to the filesystem's new size, which would
/// cut off the rest of the disk.
pub fn resize_ext(
    target: &TargetDisk,
    part: ByteRange,
    to: u64,
    e2fsck: &std::path::Path,
    resize2fs: &std::path::Path,
) -> Result<()> {
    let lo = if target.is_block {
        None
    } else {
        Some(LoopDevice::attach(&target.path, part.offset, part.len)?)
    };
    let spec = match &lo {
        Some(l) => l.path().display().to_string(),
        None => format!("{}?offset={}", target.path.display(), part.offset),
    };
    crate::cmd::run(std::process::Command::new(e2fsck).args(["-f", "-p", &spec]))?;
    crate::cmd::run(
        std::process::Command::new(resize2fs).args([spec.as_str(), &format!("{}K", to / 1024)]),
    )?;
    if let Some(l) = lo {
        l.close()?;
    }
    Ok(())
}
