//! The rescue USB stick image: GPT with a FAT32 EFI System Partition (systemd-boot as the
//! removable-media loader EFI/BOOT/BOOTX64.EFI, a loader entry, the kernel and the
//! initramfs) and a FAT32 data partition named `lifeboat-data` that can hold a repository,
//! so that one stick is both the boot medium and the backup. Both filesystems are made by
//! the fatfs crate.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::io::slice::Slice;

/// The GPT partition name the rescue looks for to find a repository on its stick.
pub const DATA_PARTITION_NAME: &str = "lifeboat-data";
const MIB: u64 = 1 << 20;

pub struct UsbSpec<'a> {
    pub out: &'a Path,
    pub vmlinuz: &'a Path,
    pub initramfs: &'a Path,
    pub loader: &'a Path,
    pub cmdline: &'a str,
    /// A repository to copy into the data partition as /repo.
    pub repo: Option<&'a Path>,
    /// Free room in the data partition beyond the copied repository.
    pub data_mib: u64,
}

#[derive(Debug, Serialize)]
pub struct Built {
    pub path: String,
    pub bytes: u64,
    pub esp_bytes: u64,
    pub data_bytes: u64,
    pub repo_bytes: u64,
}

fn tree_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for e in fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let e = e?;
        let meta = e.metadata()?;
        // Each file costs at most one more cluster than its size.
        total += if meta.is_dir() {
            tree_size(&e.path())? + 4096
        } else {
            meta.len() + 4096
        };
    }
    Ok(total)
}

fn round_mib(n: u64) -> u64 {
    n.div_ceil(MIB) * MIB
}

pub fn build(spec: &UsbSpec) -> Result<Built> {
    let payload = [spec.vmlinuz, spec.initramfs, spec.loader]
        .iter()
        .map(|p| {
            fs::metadata(p)
                .map(|m| m.len())
                .with_context(|| format!("read {}", p.display()))
        })
        .sum::<Result<u64>>()?;
    // FAT32 wants at least 65525 clusters: 64 MiB with 512-byte clusters suffices.
    let esp = round_mib((payload + 16 * MIB).max(64 * MIB) + payload / 4);
    let repo_bytes = match spec.repo {
        Some(r) => tree_size(r)?,
        None => 0,
    };
    let data = round_mib((repo_bytes + repo_bytes / 8 + spec.data_mib * MIB).max(64 * MIB));
    let total = MIB + esp + data + MIB;

    let tmp = spec.out.with_extension("img.partial");
    let result = (|| {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .with_context(|| format!("create {}", tmp.display()))?;
        file.set_len(total).context("size the image")?;
        let mut disk = gpt::GptConfig::new()
            .writable(true)
            .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
            .create_from_device(file, None)
            .context("create the GPT")?;
        let esp_id = disk
            .add_partition(
                "EFI system partition",
                esp,
                gpt::partition_types::EFI,
                0,
                Some(2048),
            )
            .context("add the ESP")?;
        let data_id = disk
            .add_partition(
                DATA_PARTITION_NAME,
                data,
                gpt::partition_types::BASIC,
                0,
                Some(2048),
            )
            .context("add the data partition")?;
        let place = |id: u32| -> Result<(u64, u64)> {
            let p = &disk.partitions()[&id];
            Ok((p.first_lba * 512, (p.last_lba - p.first_lba + 1) * 512))
        };
        let (esp_at, esp_len) = place(esp_id)?;
        let (data_at, data_len) = place(data_id)?;
        let mut file = disk.write().context("write the GPT")?;
        let mbr = gpt::mbr::ProtectiveMBR::with_lb_size(
            u32::try_from(total / 512 - 1).unwrap_or(u32::MAX),
        );
        mbr.overwrite_lba0(&mut file)
            .context("write the protective MBR")?;

        format_fat(&file, esp_at, esp_len, b"LIFEBOAT   ")?;
        {
            let fs = open_fat(&file, esp_at, esp_len)?;
            let root = fs.root_dir();
            for d in ["EFI", "EFI/BOOT", "loader", "loader/entries", "lifeboat"] {
                root.create_dir(d)
                    .with_context(|| format!("ESP: create {d}"))?;
            }
            copy_in(&root, "EFI/BOOT/BOOTX64.EFI", spec.loader)?;
            copy_in(&root, "lifeboat/vmlinuz", spec.vmlinuz)?;
            copy_in(&root, "lifeboat/initramfs.cpio.zst", spec.initramfs)?;
            write_in(
                &root,
                "loader/loader.conf",
                include_bytes!("../../image/loader.conf"),
            )?;
            let entry =
                include_str!("../../image/lifeboat.conf").replace("@CMDLINE@", spec.cmdline);
            write_in(&root, "loader/entries/lifeboat.conf", entry.as_bytes())?;
            drop(root);
            fs.unmount().context("ESP: unmount")?;
        }
        fix_dot_entries(&file, esp_at, esp_len)?;

        format_fat(&file, data_at, data_len, b"LIFEBOATDAT")?;
        if let Some(repo) = spec.repo {
            let fs = open_fat(&file, data_at, data_len)?;
            let root = fs.root_dir();
            root.create_dir("repo").context("data: create repo")?;
            copy_tree(&root, "repo", repo)?;
            drop(root);
            fs.unmount().context("data: unmount")?;
            fix_dot_entries(&file, data_at, data_len)?;
        }
        file.sync_all().context("sync the image")?;
        fs::rename(&tmp, spec.out)
            .with_context(|| format!("rename {} to {}", tmp.display(), spec.out.display()))?;
        Ok(Built {
            path: spec.out.display().to_string(),
            bytes: total,
            esp_bytes: esp_len,
            data_bytes: data_len,
            repo_bytes,
        })
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

type Fat = fatfs::FileSystem<Slice>;

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

pub fn open_fat(file: &File, at: u64, len: u64) -> Result<Fat> {
    let slice = Slice::new(file.try_clone()?, at, len);
    fatfs::FileSystem::new(slice, fatfs::FsOptions::new()).context("open the FAT filesystem")
}

fn write_in(root: &fatfs::Dir<Slice>, name: &str, data: &[u8]) -> Result<()> {
    let mut f = root
        .create_file(name)
        .with_context(|| format!("create {name}"))?;
    f.truncate().with_context(|| format!("truncate {name}"))?;
    f.write_all(data).with_context(|| format!("write {name}"))
}

fn copy_in(root: &fatfs::Dir<Slice>, name: &str, from: &Path) -> Result<()> {
    let data = fs::read(from).with_context(|| format!("read {}", from.display()))?;
    write_in(root, name, &data)
}

fn copy_tree(root: &fatfs::Dir<Slice>, at: &str, from: &Path) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(from)
        .with_context(|| format!("read {}", from.display()))?
        .collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e
            .file_name()
            .into_string()
            .map_err(|n| anyhow::anyhow!("file name {n:?} is not UTF-8"))?;
        let inner = format!("{at}/{name}");
        if e.file_type()?.is_dir() {
            root.create_dir(&inner)
                .with_context(|| format!("create {inner}"))?;
            copy_tree(root, &inner, &e.path())?;
        } else {
            let mut src =
                File::open(e.path()).with_context(|| format!("open {}", e.path().display()))?;
            let mut dst = root
                .create_file(&inner)
                .with_context(|| format!("create {inner}"))?;
            dst.truncate()?;
            std::io::copy(&mut src, &mut dst)
                .with_context(|| format!("copy {}", e.path().display()))?;
        }
    }
    Ok(())
}

/// Mend what fatfs 0.3.6 writes and fsck.fat flags: it gives '.' and '..' long-name
/// entries, so neither sits in the first two slots of a directory; it gives a child of the
/// root a '..' naming the root's cluster, where FAT wants 0; and it leaves the FSInfo free
/// cluster count unset. Walk every directory, put '.' and '..' first (without long names),
/// and set the free count and next free cluster from the FAT.
pub fn fix_dot_entries(file: &File, at: u64, len: u64) -> Result<()> {
    const DOT: &[u8; 11] = b".          ";
    const DOTDOT: &[u8; 11] = b"..         ";
    let mut s = Slice::new(file.try_clone()?, at, len);
    let mut bs = [0u8; 512];
    s.read_exact(&mut bs).context("read the boot sector")?;
    let bps = u16::from_le_bytes([bs[11], bs[12]]) as u64;
    let spc = bs[13] as u64;
    let reserved = u16::from_le_bytes([bs[14], bs[15]]) as u64;
    let nfats = bs[16] as u64;
    let total_sectors = u32::from_le_bytes(bs[32..36].try_into().unwrap()) as u64;
    let fatsz = u32::from_le_bytes(bs[36..40].try_into().unwrap()) as u64;
    let root_cluster = u32::from_le_bytes(bs[44..48].try_into().unwrap());
    let fsinfo = u16::from_le_bytes([bs[48], bs[49]]) as u64;
    if bps == 0 || spc == 0 || fatsz == 0 {
        bail!("not a FAT32 boot sector");
    }
    let cluster_bytes = bps * spc;
    let data_start = (reserved + nfats * fatsz) * bps;
    let clusters = (total_sectors - reserved - nfats * fatsz) / spc;
    let mut fat = vec![0u8; (fatsz * bps) as usize];
    s.seek(SeekFrom::Start(reserved * bps))?;
    s.read_exact(&mut fat).context("read the FAT")?;
    let entry = |c: u32| -> u32 {
        let i = c as usize * 4;
        fat.get(i..i + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()) & 0x0fff_ffff)
            .unwrap_or(0x0fff_ffff)
    };
    let offset = |c: u32| data_start + (c as u64 - 2) * cluster_bytes;
    let mut queue = vec![root_cluster];
    let mut seen = HashSet::new();
    while let Some(first) = queue.pop() {
        if !seen.insert(first) {
            continue;
        }
        let is_root = first == root_cluster;
        let mut cl = first;
        for hop in 0.. {
            if hop > clusters {
                bail!("FAT cluster chain of directory at cluster {first} loops");
            }
            let mut buf = vec![0u8; cluster_bytes as usize];
            s.seek(SeekFrom::Start(offset(cl)))?;
            s.read_exact(&mut buf)?;
            let slots: Vec<[u8; 32]> = buf
                .chunks_exact(32)
                .map(|e| e.try_into().unwrap())
                .collect();
            let mut dot = None;
            let mut dotdot = None;
            let mut rest = Vec::new();
            // Long-name entries seen but not yet placed: they belong to the next short entry.
            let mut pending: Vec<[u8; 32]> = Vec::new();
            for e in &slots {
                if e[0] == 0 {
                    break;
                }
                let dir = e[0] != 0xe5 && e[11] != 0x0f && e[11] & 0x10 != 0;
                let target = (u16::from_le_bytes([e[20], e[21]]) as u32) << 16
                    | u16::from_le_bytes([e[26], e[27]]) as u32;
                if e[11] == 0x0f && e[0] != 0xe5 {
                    pending.push(*e);
                    continue;
                }
                let dotlike = hop == 0 && !is_root && (&e[..11] == DOT || &e[..11] == DOTDOT);
                if dotlike {
                    // The long name fatfs gave '.' or '..' is dropped.
                    pending.clear();
                } else {
                    rest.append(&mut pending);
                }
                if hop == 0 && !is_root && &e[..11] == DOT {
                    dot = Some(*e);
                } else if hop == 0 && !is_root && &e[..11] == DOTDOT {
                    let mut e = *e;
                    if target == root_cluster {
                        for i in [20, 21, 26, 27] {
                            e[i] = 0;
                        }
                    }
                    dotdot = Some(e);
                } else {
                    if dir && target >= 2 {
                        queue.push(target);
                    }
                    rest.push(*e);
                }
            }
            rest.append(&mut pending);
            if hop == 0 && !is_root {
                let (Some(d), Some(dd)) = (dot, dotdot) else {
                    bail!("directory at cluster {first} has no '.' and '..' entries");
                };
                let used = slots.iter().take_while(|e| e[0] != 0).count();
                let mut out = vec![d, dd];
                out.extend(rest);
                while out.len() < used {
                    let mut deleted = [0u8; 32];
                    deleted[0] = 0xe5;
                    out.push(deleted);
                }
                out.resize(slots.len(), [0u8; 32]);
                let fixed: Vec<u8> = out.concat();
                if fixed != buf {
                    s.seek(SeekFrom::Start(offset(cl)))?;
                    s.write_all(&fixed)?;
                }
            }
            let next = entry(cl);
            if !(2..0x0fff_fff7).contains(&next) {
                break;
            }
            cl = next;
        }
    }
    // FSInfo: free cluster count and a hint for the next free one.
    let free: Vec<u32> = (2..clusters as u32 + 2)
        .filter(|&c| entry(c) == 0)
        .collect();
    let mut info = [0u8; 512];
    s.seek(SeekFrom::Start(fsinfo * bps))?;
    s.read_exact(&mut info)?;
    if &info[..4] == b"RRaA" {
        info[488..492].copy_from_slice(&(free.len() as u32).to_le_bytes());
        info[492..496].copy_from_slice(&free.first().copied().unwrap_or(0xffff_ffff).to_le_bytes());
        s.seek(SeekFrom::Start(fsinfo * bps))?;
        s.write_all(&info)?;
    }
    s.flush()?;
    Ok(())
}
