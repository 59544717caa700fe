//! The emulated machine of a drill: its firmware (SeaBIOS, OVMF, or OVMF with Secure Boot
//! and Microsoft's keys enrolled), how the rescue boots (QEMU's own kernel loader, the
//! stick, the ISO as a CD-ROM, or PXE), the controller its disks sit behind (the drivers of
//! real servers: megaraid_sas, vmw_pvscsi, sym53c8xx, ahci, nvme, usb-storage, virtio)
//! and its NIC; as QEMU command lines for the rescue and for the restored disk's boot.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::Serialize;

pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// OVMF built with Secure Boot (needs SMM), and variables with Microsoft's keys enrolled.
pub const OVMF_CODE_SECURE: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
pub const OVMF_VARS_MS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";

macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
        pub enum $name {
            $($(#[$vm])* #[value(name = $s)] #[serde(rename = $s)] $v),+
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self { $($name::$v => $s),+ })
            }
        }
    };
}

named_enum!(
    /// The machine's firmware.
    Firmware {
        /// SeaBIOS: the rescue boots by GRUB for BIOS; nothing is written to NVRAM.
        Bios => "bios",
        /// OVMF without Secure Boot.
        Uefi => "uefi",
        /// OVMF with Secure Boot on and Microsoft's keys: only signed loaders start.
        SecureBoot => "secure-boot",
    }
);

named_enum!(
    /// How the rescue boots.
    Media {
        /// QEMU loads the rescue's kernel and initramfs itself (the quickest).
        Kernel => "kernel",
        /// The USB stick image, on a USB controller.
        Usb => "usb",
        /// The ISO, as a CD-ROM (a BMC's virtual media).
        Iso => "iso",
        /// Network boot: iPXE from QEMU's TFTP server with the PXE bundle.
        Pxe => "pxe",
    }
);

named_enum!(
    /// The controller the target disks sit behind (and the driver the rescue needs).
    DiskBus {
        Virtio => "virtio",
        Ahci => "ahci",
        Nvme => "nvme",
        /// A Dell PERC-like MegaRAID SAS (megaraid_sas).
        Megasas => "megasas",
        /// VMware's paravirtual SCSI (vmw_pvscsi).
        Pvscsi => "pvscsi",
        /// LSI 53C895A SCSI (sym53c8xx).
        Lsi => "lsi",
        Usb => "usb",
    }
);

named_enum!(
    /// The NIC (and the driver the rescue needs).
    Nic {
        Virtio => "virtio",
        /// Intel 82574 (e1000e).
        E1000e => "e1000e",
        /// VMware's paravirtual NIC (vmxnet3).
        Vmxnet3 => "vmxnet3",
        /// Realtek 8139 (8139cp / 8139too).
        Rtl8139 => "rtl8139",
    }
);

/// The hardware of one drill.
#[derive(Debug, Clone, Serialize)]
pub struct Hardware {
    pub firmware: Firmware,
    pub media: Media,
    pub disk_bus: DiskBus,
    pub nic: Nic,
}

impl Hardware {
    /// Combinations that cannot boot as asked, refused before anything is built.
    pub fn check(&self) -> Result<()> {
        if self.firmware == Firmware::SecureBoot && self.media == Media::Kernel {
            bail!("--firmware secure-boot boots signed media only: give --media usb or iso");
        }
        if self.firmware != Firmware::Bios && self.media == Media::Pxe {
            bail!(
                "--media pxe is drilled on --firmware bios (iPXE): under UEFI, shim fetches GRUB over QEMU's TFTP without its size and refuses it"
            );
        }
        let files: &[&str] = match self.firmware {
            Firmware::Bios => &[],
            Firmware::Uefi => &[OVMF_CODE, OVMF_VARS],
            Firmware::SecureBoot => &[OVMF_CODE_SECURE, OVMF_VARS_MS],
        };
        for f in files {
            if !Path::new(f).exists() {
                bail!("{f} is missing (apt-get install ovmf)");
            }
        }
        Ok(())
    }

    /// The firmware's variables a drill starts from (copied for each drill), if UEFI.
    pub fn vars_template(&self) -> Option<&'static str> {
        match self.firmware {
            Firmware::Bios => None,
            Firmware::Uefi => Some(OVMF_VARS),
            Firmware::SecureBoot => Some(OVMF_VARS_MS),
        }
    }
}

/// What the rescue boots from.
pub struct Boot<'a> {
    pub vmlinuz: &'a Path,
    pub initramfs: &'a str,
    pub cmdline: &'a str,
    pub usb: &'a str,
    pub iso: &'a str,
    pub pxe: &'a str,
}

/// The command lines of a drill's two guests.
pub struct Qemu {
    pub accel: String,
    pub hw: Hardware,
    pub vars: PathBuf,
    /// The target disks, in the snapshot's order.
    pub disks: Vec<PathBuf>,
}

fn s(v: &str) -> String {
    v.to_string()
}

impl Qemu {
    fn machine(&self) -> Vec<String> {
        let machine = match self.hw.firmware {
            Firmware::SecureBoot => "q35,smm=on",
            _ => "q35",
        };
        vec![
            s("-accel"),
            self.accel.clone(),
            s("-m"),
            s("1024"),
            s("-nographic"),
            s("-no-reboot"),
            s("-machine"),
            s(machine),
        ]
    }

    fn firmware(&self) -> Vec<String> {
        let vars = format!("if=pflash,format=raw,unit=1,file={}", self.vars.display());
        match self.hw.firmware {
            Firmware::Bios => Vec::new(),
            Firmware::Uefi => vec![
                s("-drive"),
                format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"),
                s("-drive"),
                vars,
            ],
            Firmware::SecureBoot => vec![
                s("-global"),
                s("driver=cfi.pflash01,property=secure,value=on"),
                s("-drive"),
                format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE_SECURE}"),
                s("-drive"),
                vars,
            ],
        }
    }

    /// The target disks behind the drill's controller.
    fn targets(&self, bus: DiskBus) -> Vec<String> {
        let mut args = match bus {
            DiskBus::Megasas => vec![s("-device"), s("megasas-gen2,id=hba")],
            DiskBus::Pvscsi => vec![s("-device"), s("pvscsi,id=hba")],
            DiskBus::Lsi => vec![s("-device"), s("lsi53c895a,id=hba")],
            DiskBus::Usb => vec![s("-device"), s("qemu-xhci,id=thc")],
            _ => Vec::new(),
        };
        for (i, d) in self.disks.iter().enumerate() {
            let file = d.display();
            if bus == DiskBus::Virtio {
                args.extend([s("-drive"), format!("file={file},format=raw,if=virtio")]);
                continue;
            }
            args.extend([
                s("-drive"),
                format!("if=none,id=t{i},file={file},format=raw"),
            ]);
            let device = match bus {
                DiskBus::Ahci => format!("ide-hd,drive=t{i}"),
                DiskBus::Nvme => format!("nvme,drive=t{i},serial=lifeboat-t{i}"),
                DiskBus::Megasas | DiskBus::Pvscsi | DiskBus::Lsi => {
                    format!("scsi-hd,drive=t{i},bus=hba.0,serial=lifeboat-t{i}")
                }
                DiskBus::Usb => format!("usb-storage,drive=t{i},bus=thc.0"),
                DiskBus::Virtio => unreachable!("handled above"),
            };
            args.extend([s("-device"), device]);
        }
        args
    }

    fn nic(&self, netdev: &str) -> Vec<String> {
        let model = match self.hw.nic {
            Nic::Virtio => "virtio-net-pci",
            Nic::E1000e => "e1000e",
            Nic::Vmxnet3 => "vmxnet3",
            Nic::Rtl8139 => "rtl8139",
        };
        vec![
            s("-netdev"),
            netdev.to_string(),
            s("-device"),
            format!("{model},netdev=n0"),
        ]
    }

    /// The rescue booted from the drill's media, with the blank disks; a network when the
    /// repository is on one.
    pub fn rescue(&self, boot: &Boot, network: bool) -> Vec<String> {
        let mut args = self.machine();
        args.extend(self.firmware());
        match self.hw.media {
            Media::Kernel => args.extend([
                s("-kernel"),
                boot.vmlinuz.display().to_string(),
                s("-initrd"),
                boot.initramfs.to_string(),
                s("-append"),
                boot.cmdline.to_string(),
            ]),
            Media::Usb => args.extend([
                s("-drive"),
                format!("if=none,id=stick,format=raw,file={}", boot.usb),
                s("-device"),
                s("qemu-xhci,id=shc"),
                s("-device"),
                s("usb-storage,drive=stick,bus=shc.0,removable=on,bootindex=0"),
            ]),
            Media::Iso => args.extend([
                s("-drive"),
                format!(
                    "if=none,id=cd,media=cdrom,readonly=on,format=raw,file={}",
                    boot.iso
                ),
                s("-device"),
                s("ide-cd,drive=cd,bootindex=0"),
            ]),
            Media::Pxe => args.extend([s("-boot"), s("n")]),
        }
        match (self.hw.media, network) {
            (Media::Pxe, _) => {
                args.extend(self.nic(&format!("user,id=n0,tftp={},bootfile=boot.ipxe", boot.pxe)))
            }
            (_, true) => args.extend(self.nic("user,id=n0")),
            (_, false) => args.extend([s("-net"), s("none")]),
        }
        args.extend(self.targets(self.hw.disk_bus));
        args
    }

    /// The restored disks booted by the same firmware, with no network. They sit on
    /// virtio: which controllers the restored system's own initramfs drives is its own
    /// business, not the rescue's (the demo machines' drive virtio).
    pub fn boot(&self) -> Vec<String> {
        let mut args = self.machine();
        args.extend(self.firmware());
        args.extend(self.targets(DiskBus::Virtio));
        args.extend([s("-net"), s("none")]);
        args
    }
}
