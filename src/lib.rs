//! Lifeboat: capture disks into a verified chunk repository and restore them exactly.

pub mod boot;
pub mod capture;
pub mod check;
pub mod cli;
pub mod cmd;
pub mod disk;
pub mod drill;
pub mod io;
pub mod media;
pub mod repo;
pub mod report;
pub mod rescue;
pub mod restore;
pub mod serve;
pub mod snapshots;
