//! Rescue media around a stock Linux kernel: the initramfs with Lifeboat as /init, a
//! USB stick image and a hybrid ISO that boot on UEFI (Secure Boot too, through Debian's
//! signed shim and GRUB) and BIOS, and a PXE bundle.

mod args;
pub mod chain;
pub mod cpio;
pub mod fetch;
pub mod initramfs;
pub mod iso;
pub mod modules;
pub mod pxe;
pub mod usb;

use std::fs;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::ui::{bytes, Outcome};
pub use args::{KernelArg, MkimageArgs};

/// Orders given when none are: the console menu.
pub const DEFAULT_CMDLINE: &str = "console=tty0 console=ttyS0,115200 panic=-1 quiet";

#[derive(Debug, Serialize)]
pub struct Summary {
    pub initramfs: initramfs::Built,
    pub usb: usb::Built,
    pub iso: iso::Built,
    pub pxe: String,
    /// The id of this build's media (`lifeboat.media=` on their command line).
    pub media_id: String,
    pub cmdline: String,
}

pub fn run(opts: &MkimageArgs) -> Result<Summary> {
    let kernel = initramfs::Kernel::open(&opts.kernel.kernel)?;
    let boot = chain::BootFiles::open(&opts.kernel.kernel)?;
    fs::create_dir_all(&opts.out).with_context(|| format!("create {}", opts.out.display()))?;
    let exe = std::env::current_exe().context("find the running lifeboat binary")?;
    let ird = opts.out.join("initramfs.cpio.zst");
    let trusted = opts
        .trust
        .iter()
        .map(|p| crate::crypt::signing::PublicKey::load(p))
        .collect::<Result<Vec<_>>>()?;
    let initramfs = initramfs::build(
        &initramfs::Contents {
            kernel: &kernel,
            init: &exe,
            trusted: &trusted,
            firmware: opts.firmware.as_deref(),
            omit: &opts.omit_driver,
        },
        &ird,
    )?;
    for s in &initramfs.skipped_modules {
        log::info!("module {s}");
    }
    let initrds = [ird.clone()];
    let media_id = chain::new_media_id()?;
    let grub_cfg = chain::grub_cfg(&media_id, &opts.cmdline, &["initramfs.cpio.zst"]);
    let payload = chain::Payload {
        vmlinuz: &kernel.vmlinuz,
        initrds: &initrds,
        chain: &boot,
        media_id: &media_id,
        grub_cfg: &grub_cfg,
    };
    let usb = usb::build(&usb::UsbSpec {
        out: &opts.out.join("lifeboat-usb.img"),
        payload: &payload,
        repo: opts.with_repo.as_deref(),
        data_mib: opts.data_mib,
    })?;
    let iso = iso::build(&iso::IsoSpec {
        out: &opts.out.join("lifeboat.iso"),
        payload: &payload,
        repo: opts.with_repo.as_deref(),
    })?;
    let pxe = opts.out.join("pxe");
    pxe::build(
        &pxe,
        &kernel.vmlinuz,
        &ird,
        &boot,
        &grub_cfg,
        &format!("{} lifeboat.media={media_id}", opts.cmdline),
    )?;
    Ok(Summary {
        initramfs,
        usb,
        iso,
        pxe: pxe.display().to_string(),
        media_id,
        cmdline: opts.cmdline.clone(),
    })
}

impl Outcome for Summary {
    fn print(&self) {
        let i = &self.initramfs;
        crate::outln!(
            "initramfs {} (kernel {}, {} modules, {} from {})",
            i.path,
            i.kernel_version,
            i.modules,
            bytes(i.bytes),
            bytes(i.uncompressed_bytes)
        );
        crate::outln!(
            "usb       {} ({}: ESP {}, data {})",
            self.usb.path,
            bytes(self.usb.bytes),
            bytes(self.usb.esp_bytes),
            bytes(self.usb.data_bytes)
        );
        crate::outln!(
            "iso       {} ({}, BIOS and UEFI, CD or stick{})",
            self.iso.path,
            bytes(self.iso.bytes),
            if self.iso.with_repo {
                ", with the repository"
            } else {
                ""
            }
        );
        crate::outln!(
            "pxe       {}/ (boot.ipxe for BIOS, bootx64.efi for UEFI; lifeboat/)",
            self.pxe
        );
        crate::outln!("cmdline   {}", self.cmdline);
    }
}
