//! Lifeboat: capture disks into a verified chunk repository and restore them exactly.
//!
//! The commands (`commands/`) are apart from the subsystems they use: the repository
//! (`repo/`), disks (`disk/`), read and write adapters (`io/`), capture and restore with
//! their phases (`capture/`, `restore/`), rescue media (`media/`), the bootloader
//! (`boot/`), the rescue's PID 1 (`rescue/`), NBD (`nbd/`), the server (`serve/`),
//! drills (`drill/`) and signing keys and signatures (`trust/`).

pub mod boot;
pub mod capture;
pub mod check;
pub mod cli;
pub mod cmd;
pub mod commands;
pub mod crypt;
pub mod disk;
pub mod drill;
pub mod fuzz;
pub mod hex;
pub mod io;
pub mod journal;
pub mod location;
pub mod media;
pub mod nbd;
pub mod prune;
pub mod range;
pub mod repo;
pub mod rescue;
pub mod restore;
pub mod retention;
pub mod serve;
pub mod time;
pub mod trust;
pub mod ui;
pub mod who;
