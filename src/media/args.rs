//! What the rescue media are built from: `lifeboat mkimage`'s options, and the stock kernel
//! they are built around (which drills take too).

use std::path::PathBuf;

use clap::Args;

/// The stock kernel the rescue media are built around.
#[derive(Debug, Clone, Args)]
pub struct KernelArg {
    /// Kernel unpacked by `lifeboat fetch-kernel` (vmlinuz, lib/modules/VERSION,
    /// busybox); default: the source tree's .cache/kernel when there is one, else
    /// fetch-kernel's own folder ($XDG_CACHE_HOME/lifeboat/kernel or
    /// ~/.cache/lifeboat/kernel).
    #[arg(
        long,
        env = "LIFEBOAT_KERNEL",
        default_value_os_t = crate::media::fetch::default_dir(),
        value_name = "DIR"
    )]
    pub kernel: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct MkimageArgs {
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub kernel: KernelArg,
    /// Kernel command line, with the rescue's orders (lifeboat.repo=, lifeboat.snapshot=,
    /// lifeboat.target=, lifeboat.action=, lifeboat.verify=1, lifeboat.after=).
    #[arg(long, default_value = crate::media::DEFAULT_CMDLINE)]
    pub cmdline: String,
    /// Copy this repository onto the stick's data partition and into the ISO (as /repo;
    /// read-only there: `lifeboat.repo=cdrom`).
    #[arg(long, value_name = "DIR")]
    pub with_repo: Option<PathBuf>,
    /// Free room on the data partition, in MiB.
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    pub data_mib: u64,
    /// Add the firmware files the rescue's drivers name (`modinfo -F firmware`) from this
    /// folder (laid out as /lib/firmware, such as the host's own).
    #[arg(long, value_name = "DIR")]
    pub firmware: Option<PathBuf>,
    /// Leave this module out of the rescue (a driver that breaks a machine; as dracut's
    /// omit_drivers). Repeatable.
    #[arg(long, value_name = "MODULE")]
    pub omit_driver: Vec<String>,
    /// Which media to build (all, for the command; a drill builds the one it boots).
    #[arg(skip)]
    pub build: Wanted,
    /// Bake this public key (NAME.pub) into the rescue: it then restores only snapshots
    /// signed by one of the baked keys, whatever its command line says. Repeatable.
    #[arg(long, value_name = "NAME.pub")]
    pub trust: Vec<PathBuf>,
}

/// The media `mkimage` builds besides the initramfs.
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    pub usb: bool,
    pub iso: bool,
    pub pxe: bool,
}

impl Default for Wanted {
    fn default() -> Wanted {
        Wanted {
            usb: true,
            iso: true,
            pxe: true,
        }
    }
}
