//! Rescue media around a stock Linux kernel: the initramfs with Lifeboat as /init, a
//! bootable USB/UEFI disk image, and a PXE bundle.

mod args;
pub mod cpio;
pub mod fetch;
pub mod initramfs;
pub mod pxe;
pub mod usb;

use std::fs;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::ui::{bytes, Outcome};
pub use args::{KernelArg, MkimageArgs};

/// The systemd-boot loader Debian's systemd-boot-efi package installs.
pub const SYSTEMD_BOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";
/// Orders given when none are: the console menu.
pub const DEFAULT_CMDLINE: &str = "console=tty0 console=ttyS0,115200 panic=-1 quiet";

#[derive(Debug, Serialize)]
pub struct Summary {
    pub initramfs: initramfs::Built,
    pub usb: usb::Built,
    pub pxe: String,
    pub cmdline: String,
}

pub fn run(opts: &MkimageArgs) -> Result<Summary> {
    let kernel = initramfs::Kernel::open(&opts.kernel.kernel)?;
    fs::create_dir_all(&opts.out).with_context(|| format!("create {}", opts.out.display()))?;
    let exe = std::env::current_exe().context("find the running lifeboat binary")?;
    let ird = opts.out.join("initramfs.cpio.zst");
    let trusted = opts
        .trust
        .iter()
        .map(|p| crate::crypt::signing::PublicKey::load(p))
        .collect::<Result<Vec<_>>>()?;
    let initramfs = initramfs::build(&kernel, &exe, &ird, &trusted)?;
    for s in &initramfs.skipped_modules {
        log::info!("module {s}");
    }
    let usb = usb::build(&usb::UsbSpec {
        out: &opts.out.join("lifeboat-usb.img"),
        vmlinuz: &kernel.vmlinuz,
        initramfs: &ird,
        loader: &opts.loader,
        cmdline: &opts.cmdline,
        repo: opts.with_repo.as_deref(),
        data_mib: opts.data_mib,
    })?;
    let pxe = opts.out.join("pxe");
    pxe::build(&pxe, &kernel.vmlinuz, &ird, &opts.cmdline)?;
    Ok(Summary {
        initramfs,
        usb,
        pxe: pxe.display().to_string(),
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
            "pxe       {}/ (vmlinuz, initramfs.cpio.zst, boot.ipxe)",
            self.pxe
        );
        crate::outln!("cmdline   {}", self.cmdline);
    }
}
