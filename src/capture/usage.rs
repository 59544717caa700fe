//! Which bytes of each region a capture reads: all of them, or, where a filesystem's own
//! metadata can be trusted, only those it uses. Worked out once per region, before any
//! data is read.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::disk::fs;
use crate::disk::layout::RegionPlan;
use crate::disk::SourceDisk;
use crate::range::{self, ByteRange};
use crate::repo::manifest::{DiskInfo, FsUsage, RegionKind, TableKind};
use crate::ui::bytes;

/// Free runs shorter than this are read anyway. Skipping them saves little, and blocks
/// freed by a day's file changes would turn from their old (unchanged) bytes into zeros,
/// so that the chunks around them change and the next capture stores them again.
pub const MIN_SKIP: u64 = 1 << 20;

/// What a capture reads of one region.
#[derive(Debug, Default)]
pub struct RegionUsage {
    /// The filesystems' usage, recorded in the manifest; None when read in full.
    pub fs: Option<FsUsage>,
    /// The ranges not read (free runs of at least `MIN_SKIP`), ascending.
    pub free: Vec<ByteRange>,
}

/// MBR partition types that hold other partitions or a GPT, not a filesystem.
const CONTAINER_TYPES: [u8; 4] = [0x05, 0x0F, 0x85, 0xEE];

/// The partitions of a region whose filesystems may be read: a GPT partition's own, or
/// the primary partitions of an MBR disk captured whole.
fn partitions_of(disk: &DiskInfo, r: &RegionPlan) -> Vec<(String, ByteRange)> {
    let region = ByteRange::new(r.offset, r.length);
    match (r.kind, &disk.mbr) {
        (RegionKind::Partition, _) => {
            vec![(format!("partition {}", r.partition.unwrap_or(0)), region)]
        }
        (RegionKind::Disk, Some(mbr)) if disk.table == TableKind::Mbr => {
            let ss = disk.logical_sector_size as u64;
            mbr.entries
                .iter()
                .filter(|e| !CONTAINER_TYPES.contains(&e.os_type) && e.sectors > 0)
                .map(|e| {
                    (
                        format!("MBR partition {}", e.index),
                        ByteRange::new(e.first_lba as u64 * ss, e.sectors as u64 * ss),
                    )
                })
                .filter(|(_, p)| region.contains(*p))
                .collect()
        }
        _ => Vec::new(),
    }
}

/// A LUKS container whose plaintext can be seen: open on this machine (through
/// dm-crypt, nothing using the mapping), or opened here with one of `keys`
/// (`--luks-keyfile`): the filesystem inside read through the mapping, and only the
/// ciphertext under its used blocks. None when the partition is not such a container.
fn crypt_view(dev: &SourceDisk, part: ByteRange, keys: &[PathBuf]) -> Result<Option<fs::Scan>> {
    let scan = |plain: &Path| match crypt_usage(dev, part, plain) {
        Ok(s) => s,
        Err(e) => fs::Scan::Whole(format!("an open LUKS container not read through ({e:#})")),
    };
    if let Some(plain) = open_mapping(dev, part) {
        return Ok(Some(scan(&plain)));
    }
    let reader = fs::Reader::new(dev, part.offset, part.len);
    let header = match crate::disk::luks::header(&reader) {
        Ok(h) if !keys.is_empty() => h,
        _ => return Ok(None),
    };
    // Read whole whatever its plaintext: not opened at all.
    if let Some(why) = header.not_linear {
        return Ok(Some(fs::Scan::Whole(format!(
            "LUKS{} ({}): {why}, so the key file is not used",
            header.version, header.cipher
        ))));
    }
    let unlocked = super::unlock::Unlocked::open(dev, part, keys)?;
    Ok(Some(scan(&unlocked.plain())))
}

/// The open, idle dm-crypt mapping of the partition at `part` of a block device.
fn open_mapping(dev: &SourceDisk, part: ByteRange) -> Option<PathBuf> {
    match dev.is_block {
        true => crate::disk::guard::idle_crypt_holder(&dev.path, part),
        false => None,
    }
}

fn crypt_usage(
    dev: &SourceDisk,
    part: ByteRange,
    plain_path: &std::path::Path,
) -> anyhow::Result<fs::Scan> {
    let c = crate::disk::luks::header(&fs::Reader::new(dev, part.offset, part.len))?;
    if let Some(why) = c.not_linear {
        return Ok(fs::Scan::Whole(format!(
            "LUKS{} ({}): {why}",
            c.version, c.cipher
        )));
    }
    let plain = SourceDisk::open_path(plain_path)?;
    anyhow::ensure!(
        c.data_offset + plain.size <= part.len,
        "its mapping is larger than the container"
    );
    let inner = match crate::disk::scan::reader(&fs::Reader::new(&plain, 0, plain.size)) {
        fs::Scan::Used(u) => u,
        fs::Scan::Whole(why) => {
            return Ok(fs::Scan::Whole(format!(
                "LUKS{} open as {}: {why}",
                c.version,
                plain_path.display()
            )))
        }
    };
    let mut used = vec![ByteRange::new(0, c.data_offset)];
    used.extend(inner.used.iter().map(|u| u.shifted(c.data_offset)));
    used.push(ByteRange::between(c.data_offset + plain.size, part.len));
    used.retain(|u| !u.is_empty());
    Ok(fs::Scan::Used(fs::Usage {
        kind: fs::FsKind::Luks,
        block_size: inner.block_size,
        used,
        note: Some(format!(
            "LUKS{} ({}) open as {}, holding {}: only the ciphertext under its used blocks read",
            c.version,
            c.cipher,
            plain_path.display(),
            inner.kind
        )),
    }))
}

/// A filesystem mounted on this machine (ext2/3/4 or XFS): its free space as the
/// running kernel knows it (`FS_IOC_GETFSMAP`), since on disk its maps may lag behind a
/// journal or log not yet written back. None when the partition is not mounted, or holds
/// another filesystem.
fn mounted_view(dev: &SourceDisk, part: ByteRange) -> Option<fs::Scan> {
    let (mount, number) = crate::disk::guard::mount_of_partition(&dev.path, part)?;
    let kind = match mount.fstype.as_str() {
        "ext2" => fs::FsKind::Ext2,
        "ext3" => fs::FsKind::Ext3,
        "ext4" => fs::FsKind::Ext4,
        "xfs" => fs::FsKind::Xfs,
        _ => return None,
    };
    Some(match kernel_usage(part, &mount, number, kind) {
        Ok(u) => fs::Scan::Used(u),
        Err(e) => fs::Scan::Whole(format!(
            "{kind} mounted at {}: the kernel's map of its space could not be read ({e:#})",
            mount.point
        )),
    })
}

fn kernel_usage(
    part: ByteRange,
    mount: &crate::disk::detect::Mount,
    number: u64,
    kind: fs::FsKind,
) -> anyhow::Result<fs::Usage> {
    let point = std::path::Path::new(&mount.point);
    let free = crate::disk::fsmap::free_ranges(point, number)?;
    if let Some(f) = free.iter().find(|f| f.end() > part.len) {
        anyhow::bail!(
            "a free extent at byte {} ends past the partition ({} bytes)",
            f.offset,
            part.len
        );
    }
    let block_size = nix::sys::statvfs::statvfs(point)
        .map(|v| v.block_size() as u32)
        .unwrap_or(4096);
    Ok(fs::Usage {
        kind,
        block_size,
        used: range::complement(&free, ByteRange::new(0, part.len)),
        note: Some(format!(
            "mounted {}at {}: its free space as the kernel reports it (FS_IOC_GETFSMAP), not its on-disk maps",
            if mount.writable { "read-write " } else { "read-only " },
            mount.point
        )),
    })
}

/// The bytes of a region that its filesystems use, when they can be known; notes say
/// what was found (or why a partition is read in full).
pub fn region_usage(
    dev: &SourceDisk,
    disk: &DiskInfo,
    r: &RegionPlan,
    keys: &[PathBuf],
    notes: &mut Vec<String>,
) -> Result<RegionUsage> {
    let region = ByteRange::new(r.offset, r.length);
    let mut free: Vec<ByteRange> = Vec::new();
    let mut kinds = Vec::new();
    let mut block_size = u32::MAX;
    for (label, part) in partitions_of(disk, r) {
        let scan = match mounted_view(dev, part) {
            Some(s) => s,
            None => crypt_view(dev, part, keys)
                .with_context(|| format!("{label}: --luks-keyfile"))?
                .unwrap_or_else(|| crate::disk::scan::partition(dev, part.offset, part.len)),
        };
        match scan {
            fs::Scan::Used(u) => {
                let used = u.used_bytes();
                notes.push(format!(
                    "{label}: {}, {} of {} in use; free runs of 1 MiB or more not read",
                    u.kind,
                    bytes(used),
                    bytes(part.len)
                ));
                if let Some(n) = &u.note {
                    notes.push(format!("{label}: {n}"));
                }
                let on_disk: Vec<ByteRange> =
                    u.used.iter().map(|x| x.shifted(part.offset)).collect();
                free.extend(
                    range::complement(&on_disk, part)
                        .into_iter()
                        .filter(|f| f.len >= MIN_SKIP),
                );
                kinds.push(u.kind.name());
                block_size = block_size.min(u.block_size);
            }
            fs::Scan::Whole(why) => notes.push(format!("{label}: {why}; read in full")),
        }
    }
    if kinds.is_empty() {
        return Ok(RegionUsage::default());
    }
    free.sort_unstable();
    // Read = the region less every partition's skipped free space.
    let used = range::complement(&free, region);
    let fs = FsUsage {
        kind: kinds.join("+"),
        block_size,
        used_bytes: range::total(&used),
        used,
    };
    Ok(RegionUsage {
        free: fs.free_ranges(region),
        fs: Some(fs),
    })
}
