//! Which bytes of a partition are in use: the container at its start (an md member, an
//! LVM physical volume, a LUKS header) or its filesystem, each looked at by its own
//! reader, containers one inside the other at most `MAX_NESTING` deep. Whatever cannot
//! be looked into is read whole, saying why.

use super::fs::{
    btrfs, ext4, fat, ntfs, probe, swap, xfs, FsKind, Reader, Scan, Usage, PROBE_BYTES,
};
use super::SourceDisk;

/// Find which bytes of the partition at [offset, offset+len) are in use.
pub fn partition(dev: &SourceDisk, offset: u64, len: u64) -> Scan {
    reader(&Reader::new(dev, offset, len))
}

/// Find which bytes of what `r` reads are in use: a filesystem, or a volume group's
/// physical volume holding some.
pub fn reader(r: &Reader) -> Scan {
    scan_inner(r, MAX_NESTING)
}

/// Containers (md members, LVM physical volumes) one inside the other at most this deep:
/// an md mirror holding a volume group, not a volume group holding itself forever.
const MAX_NESTING: u32 = 2;

/// A filesystem inside a logical volume (no container further in).
pub fn filesystem(r: &Reader) -> Scan {
    scan_inner(r, 0)
}

fn scan_inner(r: &Reader, nesting: u32) -> Scan {
    let len = r.len();
    // An md member first: versions 1.0 and 0.90 keep the filesystem at its start and the
    // superblock at its end, where a filesystem's reader would see free space.
    if let Some(m) = super::md::member(r) {
        return scan_md(r, m, nesting);
    }
    let head = match r.read(0, PROBE_BYTES.min(len as usize)) {
        Ok(h) => h,
        Err(e) => return Scan::Whole(format!("its first bytes could not be read: {e:#}")),
    };
    let Some(kind) = probe(&head) else {
        return Scan::Whole("no filesystem recognised".into());
    };
    let result = match kind {
        k if k.is_ext() => ext4::scan(r, len),
        FsKind::Vfat => fat::scan(r, len),
        FsKind::Swap => swap::scan(r, len),
        FsKind::Xfs => xfs::scan(r, len),
        FsKind::Btrfs => btrfs::scan(r, len),
        FsKind::Ntfs => ntfs::scan(r, len),
        FsKind::Lvm if nesting > 0 => super::lvm::scan(r, len, &filesystem),
        FsKind::Luks => {
            return Scan::Whole(match super::luks::header(r) {
                Ok(c) => match c.not_linear {
                    Some(why) => format!("LUKS{} ({}): {why}", c.version, c.cipher),
                    None => format!(
                        "LUKS{} ({}) kept whole: its plaintext is not visible here (open it \
                         with cryptsetup, unmounted, to read only the ciphertext under its \
                         used blocks)",
                        c.version, c.cipher
                    ),
                },
                Err(e) => format!("a LUKS header that does not check ({e:#})"),
            })
        }
        other => return Scan::Whole(format!("{other} is read in full")),
    };
    match result {
        Ok(u) => Scan::Used(u),
        Err(e) => Scan::Whole(format!("{kind} metadata not usable ({e:#})")),
    }
}

/// An md member: RAID1's data area read through, anything else whole.
fn scan_md(r: &Reader, m: anyhow::Result<super::md::Member>, nesting: u32) -> Scan {
    let m = match m {
        Ok(m) => m,
        Err(e) => {
            return Scan::Whole(format!(
                "an md member whose superblock is not usable ({e:#})"
            ))
        }
    };
    if nesting == 0 {
        return Scan::Whole(format!(
            "an md member (superblock {}) nested too deep",
            m.version
        ));
    }
    let inner = (m.level == 1 && m.version != "0.90")
        .then(|| scan_inner(&r.sub(&[(m.data.offset, m.data.len)]), nesting - 1));
    let inner = match inner {
        Some(Scan::Whole(why)) => {
            return Scan::Whole(format!(
                "an md RAID1 member whose data area is read whole: {why}"
            ))
        }
        Some(Scan::Used(u)) => Some(u),
        None => None,
    };
    let note_inner = inner.as_ref().and_then(|u| u.note.clone());
    match super::md::usage(r, &m, inner.clone()) {
        Ok((used, note)) => Scan::Used(Usage {
            kind: FsKind::MdRaid,
            block_size: inner.map(|u| u.block_size).unwrap_or(4096),
            used,
            note: Some(match note_inner {
                Some(n) => format!("{note}; {n}"),
                None => note,
            }),
        }),
        Err(e) => Scan::Whole(format!("{e:#}")),
    }
}
