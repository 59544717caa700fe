//! FAT32 volumes inside a disk image or device, through the fatfs crate: format, open,
//! and mend what fatfs 0.3.6 leaves for fsck.fat to flag.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};

use anyhow::{bail, Context, Result};

use crate::io::slice::Slice;

pub type Fat = fatfs::FileSystem<Slice>;

/// A new image file of `len` bytes at `path` (an old one truncated), open for reading and
/// writing.
pub fn new_image(path: &std::path::Path, len: u64) -> Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    file.set_len(len)
        .with_context(|| format!("size {}", path.display()))?;
    Ok(file)
}

pub fn format_fat(file: &File, at: u64, len: u64, label: &[u8; 11]) -> Result<()> {
    let slice = Slice::new(file.try_clone()?, at, len);
    fatfs::format_volume(
        slice,
        fatfs::FormatVolumeOptions::new()
            .fat_type(fatfs::FatType::Fat32)
            .volume_label(*label),
    )
    .context("format FAT32")
}

/// A small FAT filesystem (FAT12 or FAT16, as its size asks): an El Torito EFI image.
/// fix_dot_entries does not apply to it (it mends FAT32 only); firmware and GRUB find
/// files by name and do not mind where '.' and '..' sit.
pub fn format_small_fat(file: &File, at: u64, len: u64, label: &[u8; 11]) -> Result<()> {
    let slice = Slice::new(file.try_clone()?, at, len);
    fatfs::format_volume(
        slice,
        fatfs::FormatVolumeOptions::new().volume_label(*label),
    )
    .context("format FAT")
}

pub fn open_fat(file: &File, at: u64, len: u64) -> Result<Fat> {
    let slice = Slice::new(file.try_clone()?, at, len);
    fatfs::FileSystem::new(slice, fatfs::FsOptions::new()).context("open the FAT filesystem")
}

/// Mend what fatfs 0.3.6 writes and fsck.fat flags: it gives '.' and '..' long-name
/// entries, so neither sits in the first two slots of a directory; it gives a child of the
/// root a '..' naming the root's cluster, where FAT wants 0; and it leaves the FSInfo free
/// cluster count unset. Walk every directory, put '.' and '..' first (without long names),
/// and set the free count and next free cluster from the FAT.
pub fn fix_dot_entries(file: &File, at: u64, len: u64) -> Result<()> {
    let mut s = Slice::new(file.try_clone()?, at, len);
    let g = Geometry::read(&mut s)?;
    let mut fat = vec![0u8; g.fat_bytes as usize];
    s.seek(SeekFrom::Start(g.fat_at))?;
    s.read_exact(&mut fat).context("read the FAT")?;
    let entry = |c: u32| -> u32 {
        let i = c as usize * 4;
        fat.get(i..i + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()) & 0x0fff_ffff)
            .unwrap_or(0x0fff_ffff)
    };
    let mut queue = vec![g.root_cluster];
    let mut seen = HashSet::new();
    while let Some(first) = queue.pop() {
        if !seen.insert(first) {
            continue;
        }
        let mut cl = first;
        for hop in 0.. {
            if hop > g.clusters {
                bail!("FAT cluster chain of directory at cluster {first} loops");
            }
            // The first cluster of a directory other than the root holds '.' and '..'.
            let head = hop == 0 && first != g.root_cluster;
            queue.extend(mend_cluster(&mut s, &g, cl, head)?);
            let next = entry(cl);
            if !(2..0x0fff_fff7).contains(&next) {
                break;
            }
            cl = next;
        }
    }
    let free: Vec<u32> = (2..g.clusters as u32 + 2)
        .filter(|&c| entry(c) == 0)
        .collect();
    write_fsinfo(&mut s, g.fsinfo_at, &free)?;
    s.flush()?;
    Ok(())
}

/// A FAT32 volume's layout, from its boot sector.
struct Geometry {
    cluster_bytes: u64,
    /// Where cluster 2 begins.
    data_start: u64,
    clusters: u64,
    root_cluster: u32,
    fat_at: u64,
    fat_bytes: u64,
    fsinfo_at: u64,
}

impl Geometry {
    fn read(s: &mut Slice) -> Result<Geometry> {
        let mut bs = [0u8; 512];
        s.read_exact(&mut bs).context("read the boot sector")?;
        let bps = u16::from_le_bytes([bs[11], bs[12]]) as u64;
        let spc = bs[13] as u64;
        let reserved = u16::from_le_bytes([bs[14], bs[15]]) as u64;
        let nfats = bs[16] as u64;
        // The 16-bit count when it fits, else the 32-bit one.
        let total_sectors = match u16::from_le_bytes([bs[19], bs[20]]) {
            0 => u32::from_le_bytes(bs[32..36].try_into().unwrap()) as u64,
            n => n as u64,
        };
        let fatsz = u32::from_le_bytes(bs[36..40].try_into().unwrap()) as u64;
        let fsinfo = u16::from_le_bytes([bs[48], bs[49]]) as u64;
        let fat16_size = u16::from_le_bytes([bs[22], bs[23]]);
        if bps == 0 || spc == 0 || fatsz == 0 || fat16_size != 0 {
            bail!("not a FAT32 boot sector");
        }
        let meta = reserved + nfats * fatsz;
        let Some(data_sectors) = total_sectors.checked_sub(meta) else {
            bail!("the FAT32 boot sector's tables ({meta} sectors) overrun its volume ({total_sectors} sectors)");
        };
        Ok(Geometry {
            cluster_bytes: bps * spc,
            data_start: meta * bps,
            clusters: data_sectors / spc,
            root_cluster: u32::from_le_bytes(bs[44..48].try_into().unwrap()),
            fat_at: reserved * bps,
            fat_bytes: fatsz * bps,
            fsinfo_at: fsinfo * bps,
        })
    }

    fn offset(&self, cluster: u32) -> u64 {
        self.data_start + (cluster as u64 - 2) * self.cluster_bytes
    }
}

/// One cluster of a directory: with `head` (a directory's first, not the root's), its
/// '.' and '..' moved first without long names and '..' of a child of the root set to 0.
/// Returns the subdirectories it names.
fn mend_cluster(s: &mut Slice, g: &Geometry, cl: u32, head: bool) -> Result<Vec<u32>> {
    const DOT: &[u8; 11] = b".          ";
    const DOTDOT: &[u8; 11] = b"..         ";
    let mut buf = vec![0u8; g.cluster_bytes as usize];
    s.seek(SeekFrom::Start(g.offset(cl)))?;
    s.read_exact(&mut buf)?;
    let slots: Vec<[u8; 32]> = buf
        .chunks_exact(32)
        .map(|e| e.try_into().unwrap())
        .collect();
    let (mut dot, mut dotdot, mut rest, mut subdirs) = (None, None, Vec::new(), Vec::new());
    // Long-name entries seen but not yet placed: they belong to the next short entry.
    let mut pending: Vec<[u8; 32]> = Vec::new();
    for e in slots.iter().take_while(|e| e[0] != 0) {
        let dir = e[0] != 0xe5 && e[11] != 0x0f && e[11] & 0x10 != 0;
        let target = (u16::from_le_bytes([e[20], e[21]]) as u32) << 16
            | u16::from_le_bytes([e[26], e[27]]) as u32;
        if e[11] == 0x0f && e[0] != 0xe5 {
            pending.push(*e);
            continue;
        }
        let name = &e[..11];
        if head && (name == DOT || name == DOTDOT) {
            // The long name fatfs gave '.' or '..' is dropped.
            pending.clear();
        } else {
            rest.append(&mut pending);
        }
        if head && name == DOT {
            dot = Some(*e);
        } else if head && name == DOTDOT {
            let mut e = *e;
            if target == g.root_cluster {
                for i in [20, 21, 26, 27] {
                    e[i] = 0;
                }
            }
            dotdot = Some(e);
        } else {
            if dir && target >= 2 {
                subdirs.push(target);
            }
            rest.push(*e);
        }
    }
    rest.append(&mut pending);
    if head {
        let (Some(d), Some(dd)) = (dot, dotdot) else {
            bail!("directory at cluster {cl} has no '.' and '..' entries");
        };
        let used = slots.iter().take_while(|e| e[0] != 0).count();
        let fixed = dots_first(d, dd, rest, used, slots.len());
        if fixed != buf {
            s.seek(SeekFrom::Start(g.offset(cl)))?;
            s.write_all(&fixed)?;
        }
    }
    Ok(subdirs)
}

/// A directory's first cluster with '.' and '..' in slots 0 and 1, the other entries
/// after them, deleted entries where slots were used before, and end markers after.
fn dots_first(
    dot: [u8; 32],
    dotdot: [u8; 32],
    rest: Vec<[u8; 32]>,
    used: usize,
    slots: usize,
) -> Vec<u8> {
    let mut out = vec![dot, dotdot];
    out.extend(rest);
    while out.len() < used {
        let mut deleted = [0u8; 32];
        deleted[0] = 0xe5;
        out.push(deleted);
    }
    out.resize(slots, [0u8; 32]);
    out.concat()
}

/// FSInfo at `at`: the free cluster count and a hint for the next free one.
fn write_fsinfo(s: &mut Slice, at: u64, free: &[u32]) -> Result<()> {
    let mut info = [0u8; 512];
    s.seek(SeekFrom::Start(at))?;
    s.read_exact(&mut info)?;
    if &info[..4] == b"RRaA" {
        info[488..492].copy_from_slice(&(free.len() as u32).to_le_bytes());
        info[492..496].copy_from_slice(&free.first().copied().unwrap_or(0xffff_ffff).to_le_bytes());
        s.seek(SeekFrom::Start(at))?;
        s.write_all(&info)?;
    }
    Ok(())
}
