//! `lifeboat restore`: its options. The rescue builds the same struct from the kernel
//! command line.

use std::path::PathBuf;

use clap::Args;

use crate::repo::RepoSpec;

#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub repo: RepoSpec,
    #[command(flatten)]
    pub trust: crate::trust::TrustArgs,
    /// Snapshot name (the newest with it), id or id prefix (no prefix while signatures
    /// are required).
    #[arg(long, value_name = "NAME_OR_ID")]
    pub snapshot: String,
    /// The disk to overwrite; an image file that does not exist is created.
    #[arg(long, value_name = "DISK")]
    pub target: PathBuf,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Read everything back afterwards and compare hashes.
    #[arg(long)]
    pub verify: bool,
    /// Take chunks from this image (file or device) where it has them, or, given a
    /// snapshot name or id, trust that the target holds that older snapshot and check
    /// in place only where it had the same chunk.
    #[arg(long, value_name = "IMAGE_OR_SNAPSHOT")]
    pub seed: Option<String>,
    /// Write every chunk, without first reading what an existing target already holds.
    #[arg(long)]
    pub no_reuse: bool,
    /// Zero free filesystem space (by default it is left as it is; the filesystem never
    /// reads it).
    #[arg(long)]
    pub zero_free: bool,
    /// Extend the last partition to the end of a larger target, and grow an ext4
    /// filesystem in it when resize2fs is available.
    #[arg(long)]
    pub grow: bool,
}
