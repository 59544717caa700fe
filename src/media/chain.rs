//! The boot chain every rescue medium carries: under UEFI, Debian's shim (signed by the
//! Microsoft UEFI CA, so Secure Boot firmware starts it) as the removable-media loader
//! `EFI/BOOT/BOOTX64.EFI`, Debian's signed GRUB beside it (which shim verifies), and the
//! signed Debian kernel (which GRUB has shim verify); under BIOS, GRUB for i386-pc (the
//! MBR's boot code and a core image in a BIOS boot partition on the stick; El Torito on
//! the ISO). One loader family on every firmware means one `grub.cfg` for all of them.
//! The initramfs and the command line are not verified by this chain: what is restored is
//! trusted by Lifeboat's own signatures (`mkimage --trust`), not by Secure Boot.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

/// The GRUB modules built into the BIOS images (nothing is loaded from the medium).
const BIOS_MODULES: &[&str] = &[
    "biosdisk",
    "part_gpt",
    "part_msdos",
    "fat",
    "iso9660",
    "normal",
    "linux",
    "boot",
    "search",
    "search_fs_file",
    "configfile",
    "echo",
    "test",
    "serial",
    "terminal",
    "sleep",
    "halt",
    "reboot",
];

/// Where the stick's BIOS GRUB finds its configuration: the ESP (the stick's first
/// partition), beside the UEFI GRUB's.
pub const STICK_PREFIX: &str = "(,gpt1)/EFI/BOOT";
/// Where the ISO's BIOS GRUB finds its configuration.
pub const ISO_PREFIX: &str = "/boot/grub";

/// What every bootable medium carries: the chain, the kernel and initrds (under
/// lifeboat/), the medium's id (its marker file) and the grub.cfg that names it.
pub struct Payload<'a> {
    pub vmlinuz: &'a Path,
    /// In the order GRUB loads them, each under lifeboat/ by its file name.
    pub initrds: &'a [PathBuf],
    pub chain: &'a BootFiles,
    pub media_id: &'a str,
    pub grub_cfg: &'a str,
}

impl Payload<'_> {
    /// Each initrd with its name under lifeboat/.
    pub fn named_initrds(&self) -> impl Iterator<Item = (&str, &Path)> {
        self.initrds.iter().map(|i| {
            let name = i.file_name().and_then(|n| n.to_str()).unwrap_or("initrd");
            (name, i.as_path())
        })
    }
}

/// The files of the chain in a kernel cache (`DIR/boot/`), as `fetch-kernel` leaves them.
#[derive(Debug, Clone)]
pub struct BootFiles {
    /// shimx64.efi: the first stage under UEFI, signed by the Microsoft UEFI CA.
    pub shim: PathBuf,
    /// mmx64.efi: shim's MokManager, which it starts when a signature is not trusted.
    pub mok_manager: PathBuf,
    /// grubx64.efi: Debian's signed GRUB, which reads `$cmdpath/grub.cfg`.
    pub grub_efi: PathBuf,
    /// grubnetx64.efi: Debian's signed GRUB for network boot, which reads
    /// `(tftp)/grub/grub.cfg`.
    pub grub_net: PathBuf,
    /// GRUB's boot.img: the MBR boot code that loads the core image from a fixed sector.
    pub bios_boot: PathBuf,
    /// GRUB's core image for the stick (prefix STICK_PREFIX).
    pub bios_core: PathBuf,
    /// GRUB's El Torito image for the ISO (prefix ISO_PREFIX).
    pub bios_eltorito: PathBuf,
    /// boot_hybrid.img: the MBR of an ISO written to a stick, which starts the El Torito
    /// image under BIOS.
    pub bios_hybrid_mbr: PathBuf,
}

impl BootFiles {
    pub fn in_cache(dir: &Path) -> BootFiles {
        let b = dir.join("boot");
        BootFiles {
            shim: b.join("shimx64.efi"),
            mok_manager: b.join("mmx64.efi"),
            grub_efi: b.join("grubx64.efi"),
            grub_net: b.join("grubnetx64.efi"),
            bios_boot: b.join("bios/boot.img"),
            bios_core: b.join("bios/core.img"),
            bios_eltorito: b.join("bios/eltorito.img"),
            bios_hybrid_mbr: b.join("bios/boot_hybrid.img"),
        }
    }

    fn all(&self) -> [&Path; 8] {
        [
            &self.shim,
            &self.mok_manager,
            &self.grub_efi,
            &self.grub_net,
            &self.bios_boot,
            &self.bios_core,
            &self.bios_eltorito,
            &self.bios_hybrid_mbr,
        ]
    }

    pub fn is_complete(&self) -> bool {
        self.all().iter().all(|p| p.is_file())
    }

    /// The chain of a kernel folder, or why it cannot be used.
    pub fn open(dir: &Path) -> Result<BootFiles> {
        let files = BootFiles::in_cache(dir);
        if let Some(missing) = files.all().iter().find(|p| !p.is_file()) {
            anyhow::bail!(
                "{} is missing: the kernel folder {} has no boot chain (run `lifeboat fetch-kernel {}` again)",
                missing.display(),
                dir.display(),
                dir.display()
            );
        }
        Ok(files)
    }
}

/// Put the chain into `new/boot` from the unpacked packages under `root`.
pub fn assemble(root: &Path, new: &Path) -> Result<()> {
    let files = BootFiles::in_cache(new);
    fs::create_dir_all(new.join("boot/bios")).context("create the boot folder")?;
    let copy = |from: &str, to: &Path| {
        let from = root.join(from);
        fs::copy(&from, to)
            .map(|_| ())
            .with_context(|| format!("copy {} to {}", from.display(), to.display()))
    };
    copy("usr/lib/shim/shimx64.efi.signed", &files.shim)?;
    copy("usr/lib/shim/mmx64.efi.signed", &files.mok_manager)?;
    copy(
        "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",
        &files.grub_efi,
    )?;
    copy(
        "usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed",
        &files.grub_net,
    )?;
    let modules = root.join("usr/lib/grub/i386-pc");
    copy("usr/lib/grub/i386-pc/boot.img", &files.bios_boot)?;
    copy(
        "usr/lib/grub/i386-pc/boot_hybrid.img",
        &files.bios_hybrid_mbr,
    )?;
    grub_mkimage(&modules, "i386-pc", STICK_PREFIX, &files.bios_core)?;
    grub_mkimage(
        &modules,
        "i386-pc-eltorito",
        ISO_PREFIX,
        &files.bios_eltorito,
    )
}

fn grub_mkimage(modules: &Path, format: &str, prefix: &str, out: &Path) -> Result<()> {
    crate::cmd::run(
        Command::new("grub-mkimage")
            .arg("-d")
            .arg(modules)
            .args(["-O", format, "-p", prefix, "-o"])
            .arg(out)
            .args(BIOS_MODULES),
    )
    .map(|_| ())
}

/// The one `grub.cfg` of every medium: find the medium by its own marker file (so that a
/// disk of the machine is never taken for it), show GRUB on the serial console too, and
/// boot the rescue with `cmdline` (and the medium's id, by which the rescue finds it).
pub fn grub_cfg(media_id: &str, cmdline: &str, initrds: &[&str]) -> String {
    format!(
        "# Lifeboat rescue (made by lifeboat mkimage)\n\
         search --no-floppy --file --set=root /lifeboat/{marker}\n\
         serial --unit=0 --speed=115200\n\
         terminal_input console serial\n\
         terminal_output console serial\n\
         set timeout=0\n\
         menuentry \"Lifeboat rescue\" {{\n\
         \x20 linux /lifeboat/vmlinuz {cmdline} lifeboat.media={media_id}\n\
         \x20 initrd {initrds}\n\
         }}\n",
        marker = marker_name(media_id),
        initrds = initrds
            .iter()
            .map(|i| format!("/lifeboat/{i}"))
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// The marker file every medium holds under /lifeboat/, named by its id.
pub fn marker_name(media_id: &str) -> String {
    format!("media-{media_id}")
}

/// A new medium id: 16 hex digits.
pub fn new_media_id() -> Result<String> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("random source: {e}"))?;
    Ok(crate::hex::encode(&b))
}

/// Patch GRUB's BIOS boot code into `mbr` (the first sector of a disk whose partition
/// table is already there): boot.img's code around the table, the core image's first
/// sector at boot.img's kernel-sector field, and the core image's own block list (the
/// rest of it follows its first sector). What `grub-bios-setup` does for a disk image.
pub fn bios_boot_sector(boot_img: &[u8], mbr: &mut [u8; 512], core_lba: u64) -> Result<()> {
    if boot_img.len() != 512 {
        anyhow::bail!("GRUB's boot.img is {} bytes, not 512", boot_img.len());
    }
    // boot.img: code 0..0x1b8, then the disk signature and table kept, the 0x55aa mark.
    mbr[..0x1b8].copy_from_slice(&boot_img[..0x1b8]);
    mbr[0x5c..0x64].copy_from_slice(&core_lba.to_le_bytes());
    // As grub-bios-setup does for a hard disk: the drive check's jump becomes two NOPs,
    // so that a BIOS that passes a floppy's drive number still boots the stick as 0x80.
    mbr[0x66] = 0x90;
    mbr[0x67] = 0x90;
    mbr[0x1fe] = 0x55;
    mbr[0x1ff] = 0xaa;
    Ok(())
}

/// The core image with its first sector's block list pointing at the rest of it, which
/// lies at `core_lba + 1` onwards.
pub fn placed_core(core: &[u8], core_lba: u64) -> Result<Vec<u8>> {
    let sectors = core.len().div_ceil(512);
    if !(2..=0x7fff).contains(&sectors) {
        anyhow::bail!("GRUB's core image is {} bytes", core.len());
    }
    let mut out = core.to_vec();
    out.resize(sectors * 512, 0);
    // diskboot.img's block list ends its first sector: start (u64), length (u16),
    // segment (u16); the list is read backwards from 0x1f4.
    out[0x1f4..0x1fc].copy_from_slice(&(core_lba + 1).to_le_bytes());
    out[0x1fc..0x1fe].copy_from_slice(&u16::try_from(sectors - 1)?.to_le_bytes());
    Ok(out)
}
