//! The rescue ISO, for a BMC's virtual media (iDRAC, iLO, IPMI, Redfish `InsertMedia`), a
//! CD or a stick: one hybrid image made by `xorriso`, as grub-mkrescue makes it. ISO 9660
//! (Rock Ridge names) holding the kernel, the initrds, grub.cfg and optionally a
//! repository (read-only, `lifeboat.repo=cdrom`); El Torito entries for BIOS (GRUB's
//! El Torito image) and UEFI (a FAT image with the signed chain); and an MBR with GRUB's
//! hybrid boot code plus a GPT entry for that FAT image, so that the same file written
//! to a stick with `dd` boots on both firmwares too.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use serde::Serialize;

use super::chain::{self, BootFiles, Payload};
use crate::disk::fatvol::{format_small_fat, new_image, open_fat};

pub struct IsoSpec<'a> {
    pub out: &'a Path,
    pub payload: &'a Payload<'a>,
    /// A repository to put on the ISO as /repo (read-only there).
    pub repo: Option<&'a Path>,
}

#[derive(Debug, Serialize)]
pub struct Built {
    pub path: String,
    pub bytes: u64,
    /// The FAT image of the UEFI El Torito entry.
    pub efi_image_bytes: u64,
    pub with_repo: bool,
}

/// Room for shim, GRUB, MokManager and grub.cfg (some 6 MiB) on FAT16.
const EFI_IMAGE_BYTES: u64 = 8 << 20;

pub fn build(spec: &IsoSpec) -> Result<Built> {
    if crate::cmd::which("xorriso").is_none() {
        anyhow::bail!("mkimage needs xorriso to make the ISO (apt-get install xorriso)");
    }
    let staging = spec.out.with_extension("iso.files");
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).with_context(|| format!("create {}", staging.display()))?;
    let tmp = spec.out.with_extension("iso.partial");
    let result = (|| {
        let p = spec.payload;
        let efi = staging.join("efi.img");
        efi_image(&efi, p)?;
        let cfg = staging.join("grub.cfg");
        fs::write(&cfg, p.grub_cfg).context("write grub.cfg")?;
        let marker = staging.join("marker");
        fs::write(&marker, p.media_id).context("write the medium's marker")?;
        let mut grafts = vec![
            graft("boot/grub/grub.cfg", &cfg),
            graft("boot/grub/i386-pc/eltorito.img", &p.chain.bios_eltorito),
            graft("boot/efi.img", &efi),
            graft("lifeboat/vmlinuz", p.vmlinuz),
            graft(
                &format!("lifeboat/{}", chain::marker_name(p.media_id)),
                &marker,
            ),
        ];
        for (name, file) in p.named_initrds() {
            grafts.push(graft(&format!("lifeboat/{name}"), file));
        }
        if let Some(repo) = spec.repo {
            grafts.push(graft("repo", repo));
        }
        let _ = fs::remove_file(&tmp);
        xorriso(&tmp, p.chain, &grafts)?;
        fs::rename(&tmp, spec.out)
            .with_context(|| format!("rename {} to {}", tmp.display(), spec.out.display()))?;
        Ok(Built {
            path: spec.out.display().to_string(),
            bytes: fs::metadata(spec.out)
                .with_context(|| format!("read {}", spec.out.display()))?
                .len(),
            efi_image_bytes: EFI_IMAGE_BYTES,
            with_repo: spec.repo.is_some(),
        })
    })();
    let _ = fs::remove_dir_all(&staging);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// `PATH_IN_ISO=FILE` for xorriso's -graft-points ('=' and '\' in names escaped).
fn graft(inside: &str, from: &Path) -> String {
    let esc = |s: &str| s.replace('\\', "\\\\").replace('=', "\\=");
    format!("/{}={}", esc(inside), esc(&from.display().to_string()))
}

/// The FAT image of the UEFI entry: EFI/BOOT with the signed chain and grub.cfg, which
/// finds the ISO 9660 filesystem by the marker and boots from there.
fn efi_image(path: &Path, p: &Payload) -> Result<()> {
    let file = new_image(path, EFI_IMAGE_BYTES)?;
    format_small_fat(&file, 0, EFI_IMAGE_BYTES, b"LIFEBOATEFI")?;
    {
        let fs = open_fat(&file, 0, EFI_IMAGE_BYTES)?;
        super::usb::fill_efi_boot(&fs.root_dir(), p.chain, p.grub_cfg)?;
        fs.unmount().context("EFI image: unmount")?;
    }
    file.sync_all().context("sync the EFI image")
}

fn xorriso(out: &Path, chain: &BootFiles, grafts: &[String]) -> Result<()> {
    let mut cmd = Command::new("xorriso");
    cmd.args(["-as", "mkisofs", "-quiet", "-o"])
        .arg(out)
        .args(["-V", "LIFEBOAT", "-R", "-iso-level", "3", "-graft-points"])
        // BIOS: GRUB's El Torito image; its MBR for a stick.
        .args([
            "-b",
            "boot/grub/i386-pc/eltorito.img",
            "-no-emul-boot",
            "-boot-load-size",
            "4",
            "-boot-info-table",
            "--grub2-boot-info",
            "--grub2-mbr",
        ])
        .arg(&chain.bios_hybrid_mbr)
        // UEFI: the FAT image, as an El Torito entry and as a GPT partition.
        .args([
            "-eltorito-alt-boot",
            "-e",
            "boot/efi.img",
            "-no-emul-boot",
            "-efi-boot-part",
            "--efi-boot-image",
        ])
        .args(grafts);
    crate::cmd::run(&mut cmd).map(|_| ())
}
