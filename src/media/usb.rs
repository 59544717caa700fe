//! The rescue USB stick image: GPT with a FAT32 EFI System Partition (the boot chain of
//! `chain`: shim as the removable-media loader EFI/BOOT/BOOTX64.EFI, Debian's signed GRUB
//! and its grub.cfg beside it, the kernel and the initramfs under lifeboat/), a FAT32 data
//! partition named `lifeboat-data` that can hold a repository, so that one stick is both
//! the boot medium and the backup, and a BIOS boot partition holding GRUB's core image,
//! which the MBR's boot code loads on BIOS firmware. Both filesystems are made by the
//! fatfs crate.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use super::chain::{self, BootFiles, Payload};
use crate::disk::fatvol::{fix_dot_entries, format_fat, new_image, open_fat};
use crate::io::slice::Slice;
use crate::range::ByteRange;

/// The GPT partition name the rescue looks for to find a repository on its stick.
pub const DATA_PARTITION_NAME: &str = "lifeboat-data";
const MIB: u64 = 1 << 20;
/// GPT type of a BIOS boot partition (GRUB's core image, read by the MBR's boot code).
const BIOS_BOOT: gpt::partition_types::Type = gpt::partition_types::BIOS;

pub struct UsbSpec<'a> {
    pub out: &'a Path,
    pub payload: &'a Payload<'a>,
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
    let p = spec.payload;
    let payload = [
        p.vmlinuz,
        &p.chain.shim,
        &p.chain.grub_efi,
        &p.chain.mok_manager,
    ]
    .into_iter()
    .chain(p.initrds.iter().map(PathBuf::as_path))
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
    let total = MIB + esp + data + BIOS_PART + MIB;

    let tmp = spec.out.with_extension("img.partial");
    let result = (|| {
        let (file, esp, data_part, bios) = partition(&tmp, total, esp, data)?;
        fill_esp(&file, esp, spec)?;
        install_bios_boot(&file, bios, spec.payload.chain)?;
        format_fat(&file, data_part.offset, data_part.len, b"LIFEBOATDAT")?;
        if let Some(repo) = spec.repo {
            let fs = open_fat(&file, data_part.offset, data_part.len)?;
            let root = fs.root_dir();
            root.create_dir("repo").context("data: create repo")?;
            copy_tree(&root, "repo", repo)?;
            drop(root);
            fs.unmount().context("data: unmount")?;
            fix_dot_entries(&file, data_part.offset, data_part.len)?;
        }
        file.sync_all().context("sync the image")?;
        fs::rename(&tmp, spec.out)
            .with_context(|| format!("rename {} to {}", tmp.display(), spec.out.display()))?;
        Ok(Built {
            path: spec.out.display().to_string(),
            bytes: total,
            esp_bytes: esp.len,
            data_bytes: data_part.len,
            repo_bytes,
        })
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The BIOS boot partition's size: GRUB's core image is some 100 KiB.
const BIOS_PART: u64 = MIB;

/// A new image file of `total` bytes at `path` with a GPT (and its protective MBR)
/// holding an ESP of `esp` bytes (partition 1, as chain::STICK_PREFIX says), the data
/// partition of `data` and the BIOS boot partition; where each lies.
fn partition(
    path: &Path,
    total: u64,
    esp: u64,
    data: u64,
) -> Result<(File, ByteRange, ByteRange, ByteRange)> {
    let file = new_image(path, total)?;
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
    let bios_id = disk
        .add_partition("BIOS boot", BIOS_PART, BIOS_BOOT, 0, Some(2048))
        .context("add the BIOS boot partition")?;
    let place = |id: u32| -> ByteRange {
        let p = &disk.partitions()[&id];
        ByteRange::new(p.first_lba * 512, (p.last_lba - p.first_lba + 1) * 512)
    };
    let (esp, data_part, bios) = (place(esp_id), place(data_id), place(bios_id));
    let mut file = disk.write().context("write the GPT")?;
    let mbr =
        gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from(total / 512 - 1).unwrap_or(u32::MAX));
    mbr.overwrite_lba0(&mut file)
        .context("write the protective MBR")?;
    Ok((file, esp, data_part, bios))
}

/// GRUB for BIOS: its core image in the BIOS boot partition, its boot code in the MBR
/// (around the protective MBR's partition table).
fn install_bios_boot(file: &File, bios: ByteRange, chain: &BootFiles) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let read = |p: &Path| fs::read(p).with_context(|| format!("read {}", p.display()));
    let lba = bios.offset / 512;
    let core = chain::placed_core(&read(&chain.bios_core)?, lba)?;
    if core.len() as u64 > bios.len {
        anyhow::bail!(
            "GRUB's core image ({} bytes) does not fit the BIOS boot partition",
            core.len()
        );
    }
    file.write_all_at(&core, bios.offset)
        .context("write GRUB's core image")?;
    let mut mbr = [0u8; 512];
    file.read_exact_at(&mut mbr, 0).context("read the MBR")?;
    chain::bios_boot_sector(&read(&chain.bios_boot)?, &mut mbr, lba)?;
    file.write_all_at(&mbr, 0)
        .context("write the MBR's boot code")
}

/// The ESP: the UEFI chain, its grub.cfg, the kernel, the initrds and the marker.
fn fill_esp(file: &File, esp: ByteRange, spec: &UsbSpec) -> Result<()> {
    format_fat(file, esp.offset, esp.len, b"LIFEBOAT   ")?;
    {
        let fs = open_fat(file, esp.offset, esp.len)?;
        let root = fs.root_dir();
        let p = spec.payload;
        fill_efi_boot(&root, p.chain, p.grub_cfg)?;
        root.create_dir("lifeboat")
            .context("ESP: create lifeboat")?;
        copy_in(&root, "lifeboat/vmlinuz", p.vmlinuz)?;
        for (name, file) in p.named_initrds() {
            copy_in(&root, &format!("lifeboat/{name}"), file)?;
        }
        write_in(
            &root,
            &format!("lifeboat/{}", chain::marker_name(p.media_id)),
            p.media_id.as_bytes(),
        )?;
        drop(root);
        fs.unmount().context("ESP: unmount")?;
    }
    fix_dot_entries(file, esp.offset, esp.len)
}

/// EFI/BOOT on a FAT filesystem: shim as the removable-media loader, Debian's signed GRUB
/// and MokManager beside it, and the grub.cfg GRUB reads from there (`$cmdpath`).
pub fn fill_efi_boot(root: &fatfs::Dir<Slice>, chain: &BootFiles, grub_cfg: &str) -> Result<()> {
    for d in ["EFI", "EFI/BOOT"] {
        root.create_dir(d).with_context(|| format!("create {d}"))?;
    }
    copy_in(root, "EFI/BOOT/BOOTX64.EFI", &chain.shim)?;
    copy_in(root, "EFI/BOOT/grubx64.efi", &chain.grub_efi)?;
    copy_in(root, "EFI/BOOT/mmx64.efi", &chain.mok_manager)?;
    write_in(root, "EFI/BOOT/grub.cfg", grub_cfg.as_bytes())
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
