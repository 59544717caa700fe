//! Lifeboat: capture disks into a verified chunk repository and restore them exactly.
//!
//! The house, from the top floor down. A module imports only from its own floor and the
//! floors below, never in a circle (`scripts/structure` checks it in `scripts/test`):
//! 7. `commands/`, `cli`, `main`, `fuzz`: parse the command line, dispatch, present.
//! 6. `drill/`: QEMU boots the rescue media, then the disk it restored.
//! 5. `rescue/`: PID 1 of the rescue media, its orders from the kernel command line.
//! 4. `capture/`, `restore/`, `check`, `serve/`, `media/`, `boot/`, `diagnose/`: subsystems.
//! 3. `journal/`, `trust/`, `prune/`, `retention`: records, signatures, leases, policies.
//! 2. `repo/` (objects, chunks, manifests, stores), `disk/` (tables, volumes, filesystems).
//! 1. `crypt/` (keys, sealing, signing), `nbd/` (the protocol and its client).
//! 0. `io/`, `hex`, `time`, `range`, `location`, `cmd`, `who`, `ui`: values and adapters.

pub mod boot;
pub mod capture;
pub mod check;
pub mod cli;
pub mod cmd;
pub mod commands;
pub mod crypt;
pub mod diagnose;
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
