//! What a drill is asked to do: `lifeboat drill`'s options.

use std::path::PathBuf;

use clap::Args;

use super::machine::{DiskBus, Firmware, Hardware, Media, Nic};
use super::{RepoOn, Via};
use crate::media::KernelArg;
use crate::repo::RepoSpec;

#[derive(Debug, Clone, Args)]
pub struct DrillArgs {
    #[command(flatten)]
    pub repo: RepoSpec,
    /// Snapshot name (the newest with it), id or id prefix.
    #[arg(long, value_name = "NAME_OR_ID")]
    pub snapshot: String,
    /// A shorthand for how the rescue boots and reaches the repository: usb (--media usb
    /// --repo-on media), http (--media kernel, the repository served over HTTP) or pxe
    /// (--media pxe, over HTTP).
    #[arg(long, value_enum, conflicts_with_all = ["media", "repo_on"])]
    pub via: Option<Via>,
    /// How the rescue boots: kernel (QEMU loads it), usb (the stick), iso (the ISO as a
    /// CD-ROM, as a BMC's virtual media) or pxe.
    #[arg(long, value_enum, default_value = "kernel")]
    pub media: Media,
    /// Where the rescue finds the repository: network (served over HTTP, or the S3 or
    /// HTTP repository itself) or media (copied onto the stick or the ISO).
    #[arg(long, value_enum, default_value = "network")]
    pub repo_on: RepoOn,
    /// The machine's firmware: uefi (OVMF), bios (SeaBIOS) or secure-boot (OVMF with
    /// Secure Boot on and Microsoft's keys enrolled).
    #[arg(long, value_enum, default_value = "uefi")]
    pub firmware: Firmware,
    /// The controller of the target disks: virtio, ahci, nvme, megasas (megaraid_sas),
    /// pvscsi (vmw_pvscsi), lsi (sym53c8xx) or usb.
    #[arg(long, value_enum, default_value = "virtio")]
    pub disk_bus: DiskBus,
    /// The NIC: virtio, e1000e, vmxnet3 or rtl8139.
    #[arg(long, value_enum, default_value = "virtio")]
    pub nic: Nic,
    #[command(flatten)]
    pub kernel: KernelArg,
    /// What the restored system prints on its serial console once booted.
    #[arg(long, default_value = "login:")]
    pub marker: String,
    /// Have the rescue read the disk back and verify it.
    #[arg(long)]
    pub verify: bool,
    /// How long the rescue may take to report (a duration; a bare number is seconds).
    #[arg(long, value_name = "DURATION", default_value = "15min", value_parser = crate::time::parse_seconds_or_duration)]
    pub rescue_timeout: std::time::Duration,
    /// How long the restored disk may take to show its marker.
    #[arg(long, value_name = "DURATION", default_value = "5min", value_parser = crate::time::parse_seconds_or_duration)]
    pub boot_timeout: std::time::Duration,
    /// Keep the media, the disk and the console logs here (default: a new folder under
    /// /var/tmp, of which only the console logs are kept).
    #[arg(long, value_name = "DIR")]
    pub work: Option<PathBuf>,
    /// QEMU accelerator: tcg (software, works everywhere) or kvm.
    #[arg(long, default_value = "tcg")]
    pub accel: String,
    /// Add this word to the rescue's command line (such as a static address in dracut's
    /// `ip=` spelling, or `lifeboat.force=1`). Repeatable.
    #[arg(long, value_name = "WORD", allow_hyphen_values = true)]
    pub rescue_arg: Vec<String>,
    /// Leave this driver out of the rescue (as `mkimage --omit-driver`): proves what the
    /// rescue says on a machine it has no driver for. Repeatable.
    #[arg(long, value_name = "MODULE")]
    pub omit_driver: Vec<String>,
    /// Bake this public key into the rescue (as `mkimage --trust`): the drill then also
    /// proves that the snapshot is signed by it. Repeatable.
    #[arg(long, value_name = "NAME.pub")]
    pub trust: Vec<PathBuf>,
}

impl DrillArgs {
    /// The machine asked for, `--via` spelled out.
    pub fn hardware(&self) -> Hardware {
        Hardware {
            firmware: self.firmware,
            media: match self.via {
                Some(Via::Usb) => Media::Usb,
                Some(Via::Http) => Media::Kernel,
                Some(Via::Pxe) => Media::Pxe,
                None => self.media,
            },
            disk_bus: self.disk_bus,
            nic: self.nic,
        }
    }

    pub fn repo_on(&self) -> RepoOn {
        match self.via {
            Some(Via::Usb) => RepoOn::Media,
            Some(_) => RepoOn::Network,
            None => self.repo_on,
        }
    }
}
