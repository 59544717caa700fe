//! Disks: opening sources and targets, reading their partition tables, probing filesystems,
//! refusing busy devices, and listing what the machine has.

pub mod detect;
pub mod device;
pub mod fatvol;
pub mod fs;
pub mod guard;
pub mod layout;
pub mod loopdev;
pub mod nbd_client;

pub use device::Device;
