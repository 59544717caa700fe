//! Making a restored disk boot again on UEFI: the ESP's removable-media fallback loader
//! EFI/BOOT/BOOTX64.EFI (from the restored system's own loader when it lacks one), and a
//! Boot#### variable for that loader, first in BootOrder. On BIOS the restored first MiB
//! already holds the boot code.

pub mod efivars;

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::disk::fatvol;

const FALLBACK: &str = "EFI/BOOT/BOOTX64.EFI";

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct BootReport {
    /// The ESP's partition number, or None when the disk has no GPT ESP.
    pub esp_partition: Option<u32>,
    pub esp_guid: Option<String>,
    /// "present", "installed from <path>", or why there is none.
    pub fallback: String,
    /// The loader the variable points at.
    pub loader: Option<String>,
    /// "Boot0003 first in BootOrder", or why NVRAM was not used.
    pub nvram: String,
    pub nvram_ok: bool,
    pub warnings: Vec<String>,
}

/// Loaders to copy as the fallback, in order of preference, with the files that must sit
/// beside them.
const CANDIDATES: &[(&str, &[&str])] = &[
    (
        "EFI/debian/shimx64.efi",
        &["EFI/debian/grubx64.efi", "EFI/debian/mmx64.efi"],
    ),
    (
        "EFI/ubuntu/shimx64.efi",
        &["EFI/ubuntu/grubx64.efi", "EFI/ubuntu/mmx64.efi"],
    ),
    ("EFI/systemd/systemd-bootx64.efi", &[]),
    ("EFI/debian/grubx64.efi", &[]),
    ("EFI/ubuntu/grubx64.efi", &[]),
    (
        "EFI/fedora/shimx64.efi",
        &["EFI/fedora/grubx64.efi", "EFI/fedora/mmx64.efi"],
    ),
    (
        "EFI/centos/shimx64.efi",
        &["EFI/centos/grubx64.efi", "EFI/centos/mmx64.efi"],
    ),
    ("EFI/Microsoft/Boot/bootmgfw.efi", &[]),
];

fn exists(root: &fatfs::Dir<crate::io::slice::Slice>, path: &str) -> bool {
    root.open_file(path).is_ok()
}

fn read(root: &fatfs::Dir<crate::io::slice::Slice>, path: &str) -> Result<Vec<u8>> {
    let mut f = root
        .open_file(path)
        .with_context(|| format!("ESP: open {path}"))?;
    let mut v = Vec::new();
    f.read_to_end(&mut v)
        .with_context(|| format!("ESP: read {path}"))?;
    Ok(v)
}

fn write(root: &fatfs::Dir<crate::io::slice::Slice>, path: &str, data: &[u8]) -> Result<()> {
    let mut f = root
        .create_file(path)
        .with_context(|| format!("ESP: create {path}"))?;
    f.truncate()
        .with_context(|| format!("ESP: truncate {path}"))?;
    f.write_all(data)
        .with_context(|| format!("ESP: write {path}"))
}

/// Make `target` (a restored disk) bootable on UEFI; `efivars` is the mounted efivarfs,
/// or None where there is none (a BIOS boot, or an image file on the operator's machine).
pub fn reinstall(target: &Path, efivars: Option<&Path>, description: &str) -> Result<BootReport> {
    let mut report = BootReport {
        esp_partition: None,
        esp_guid: None,
        fallback: "no EFI system partition".into(),
        loader: None,
        nvram: "not needed: no EFI system partition".into(),
        nvram_ok: false,
        warnings: Vec::new(),
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(target)
        .with_context(|| format!("open {}", target.display()))?;
    let disk = match gpt::GptConfig::new()
        .writable(false)
        .open_from_device(file.try_clone()?)
    {
        Ok(d) => d,
        Err(_) => {
            report.fallback = "no GPT: BIOS boot code restored with the first MiB".into();
            report.nvram = "not used: no GPT".into();
            return Ok(report);
        }
    };
    let lb: u64 = (*disk.logical_block_size()).into();
    let Some((&number, esp)) = disk
        .partitions()
        .iter()
        .find(|(_, p)| p.part_type_guid == gpt::partition_types::EFI)
    else {
        return Ok(report);
    };
    report.esp_partition = Some(number);
    report.esp_guid = Some(esp.part_guid.to_string());
    let (at, len) = (esp.first_lba * lb, (esp.last_lba - esp.first_lba + 1) * lb);
    let loader = fallback_loader(target, &file, at, len, &mut report)?;
    let Some(loader) = loader else {
        report.nvram = "not used: no loader".into();
        return Ok(report);
    };
    let efi_path = format!("\\{}", loader.replace('/', "\\"));
    report.loader = Some(efi_path.clone());
    let Some(dir) = efivars else {
        report.nvram = "not available: no UEFI variables here; the fallback path boots it".into();
        return Ok(report);
    };
    let lp = efivars::LoaderPath {
        partition: number,
        start_lba: esp.first_lba,
        size_lba: esp.last_lba - esp.first_lba + 1,
        guid_le: esp.part_guid.to_bytes_le(),
        path: efi_path,
    };
    register(dir, description, &lp, &mut report);
    Ok(report)
}

/// The loader the firmware finds on the ESP at `at` (`len` bytes): the removable-media
/// fallback when it is there; else a known loader, copied there (with its companions)
/// so that the disk boots wherever it goes; None when there is none.
fn fallback_loader(
    target: &Path,
    file: &std::fs::File,
    at: u64,
    len: u64,
    report: &mut BootReport,
) -> Result<Option<&'static str>> {
    // Look first through a read-only handle: an ESP that needs nothing is left exactly as
    // restored.
    let (has_fallback, own) = {
        let ro =
            std::fs::File::open(target).with_context(|| format!("open {}", target.display()))?;
        let fs = fatvol::open_fat(&ro, at, len).context("open the restored ESP")?;
        let root = fs.root_dir();
        let own = CANDIDATES.iter().find(|(p, _)| exists(&root, p));
        (exists(&root, FALLBACK), own)
    };
    if has_fallback {
        report.fallback = "present".into();
        return Ok(Some(own.map(|(p, _)| *p).unwrap_or(FALLBACK)));
    }
    let Some((path, companions)) = own else {
        report.fallback = "missing: no known loader on the ESP".into();
        report
            .warnings
            .push("the ESP has no EFI/BOOT/BOOTX64.EFI and no known loader to copy there".into());
        return Ok(None);
    };
    let fs = fatvol::open_fat(file, at, len).context("open the restored ESP")?;
    let root = fs.root_dir();
    let _ = root.create_dir("EFI");
    let _ = root.create_dir("EFI/BOOT");
    write(&root, FALLBACK, &read(&root, path)?)?;
    for c in companions.iter().filter(|c| exists(&root, c)) {
        let name = c.rsplit('/').next().unwrap_or(c);
        write(&root, &format!("EFI/BOOT/{name}"), &read(&root, c)?)?;
    }
    report.fallback = format!("installed from {path}");
    drop(root);
    fs.unmount().context("ESP: unmount")?;
    fatvol::fix_dot_entries(file, at, len)?;
    file.sync_all().context("sync the restored ESP")?;
    Ok(Some(*path))
}

/// A boot entry for the loader in the firmware's variables (`dir`, an efivarfs), first
/// in BootOrder; a refusal is a warning (the fallback path boots it).
fn register(dir: &Path, description: &str, lp: &efivars::LoaderPath, report: &mut BootReport) {
    match efivars::Vars::open(dir).and_then(|v| efivars::install(&v, description, lp)) {
        Ok(i) => {
            report.nvram = format!(
                "{} first in BootOrder ({})",
                i.entry,
                i.boot_order.join(",")
            );
            if !i.removed_duplicates.is_empty() {
                report.nvram += &format!("; removed duplicates {}", i.removed_duplicates.join(","));
            }
            report.nvram_ok = true;
        }
        Err(e) => {
            report.nvram = format!("NVRAM refused ({e:#}); relying on the fallback path");
            report.warnings.push(report.nvram.clone());
        }
    }
}
