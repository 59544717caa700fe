//! Disks: opening sources (read-only) and targets (writable), reading their partition
//! tables, probing filesystems, refusing busy devices, and listing what the machine has.

pub mod blockdev;
pub mod detect;
pub mod endian;
pub mod fatvol;
pub mod fs;
pub mod fsmap;
pub mod gpt;
pub mod guard;
pub mod layout;
pub mod loopdev;
pub mod luks;
pub mod lvm;
pub mod md;
pub mod mount;
pub mod scan;
pub mod source;
pub mod target;

pub use blockdev::Identity;
pub use source::SourceDisk;
pub use target::TargetDisk;
