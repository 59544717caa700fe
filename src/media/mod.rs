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
pub use args::{KernelArg, MkimageArgs, Wanted};

/// Orders given when none are: the console menu.
pub const DEFAULT_CMDLINE: &str = "console=tty0 console=ttyS0,115200 panic=-1 quiet";

#[derive(Debug, Serialize)]
pub struct Summary {
    pub initramfs: initramfs::Built,
    pub usb: Option<usb::Built>,
    pub iso: Option<iso::Built>,
    pub pxe: Option<String>,
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
    let want = opts.build;
    let usb = want
        .usb
        .then(|| {
            usb::build(&usb::UsbSpec {
                out: &opts.out.join("lifeboat-usb.img"),
                payload: &payload,
                repo: opts.with_repo.as_deref(),
                data_mib: opts.data_mib,
            })
        })
        .transpose()?;
    let iso = want
        .iso
        .then(|| {
            iso::build(&iso::IsoSpec {
                out: &opts.out.join("lifeboat.iso"),
                payload: &payload,
                repo: opts.with_repo.as_deref(),
            })
        })
        .transpose()?;
    let pxe = opts.out.join("pxe");
    if want.pxe {
        pxe::build(
            &pxe,
            &kernel.vmlinuz,
            &ird,
            &boot,
            &grub_cfg,
            &format!("{} lifeboat.media={media_id}", opts.cmdline),
        )?;
    }
    Ok(Summary {
        initramfs,
        usb,
        iso,
        pxe: want.pxe.then(|| pxe.display().to_string()),
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
        if let Some(usb) = &self.usb {
            crate::outln!(
                "usb       {} ({}: ESP {}, data {})",
                usb.path,
                bytes(usb.bytes),
                bytes(usb.esp_bytes),
                bytes(usb.data_bytes)
            );
        }
        if let Some(iso) = &self.iso {
            crate::outln!(
                "iso       {} ({}, BIOS and UEFI, CD or stick{})",
                iso.path,
                bytes(iso.bytes),
                if iso.with_repo {
                    ", with the repository"
                } else {
                    ""
                }
            );
        }
        if let Some(pxe) = &self.pxe {
            crate::outln!("pxe       {pxe}/ (boot.ipxe for BIOS, bootx64.efi for UEFI; lifeboat/)");
        }
        crate::outln!("cmdline   {}", self.cmdline);
    }
}
