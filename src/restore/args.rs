//! What a restore is asked to do: `lifeboat restore`'s options, which the rescue fills in
//! from its kernel command line.

use std::path::PathBuf;

use clap::Args;

use super::targets::TargetSpec;
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
    /// The disk to overwrite; an image file that does not exist is created. For a
    /// snapshot of several disks, one `--target` per disk in order, or `N=DISK` for disk
    /// N (those named only are restored). DISK may be a hint instead of a path:
    /// `serial:S`, `wwn:W`, or `auto` (this machine's disk with the serial or WWN the
    /// snapshot recorded for it, else the smallest empty disk it fits; `./auto` for a file
    /// of that name).
    #[arg(long, value_name = "[N=]DISK", required = true)]
    pub target: Vec<TargetSpec>,
    /// Restore only partition N (repeatable) into the target's own partition table,
    /// which must place it where the snapshot had it; the table and every other
    /// partition are left as they are.
    #[arg(long, value_name = "N")]
    pub partition: Vec<u32>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Restore even onto a disk whose own health (an NVMe critical warning, an ATA SMART
    /// threshold exceeded) says it is failing; refused otherwise.
    #[arg(long)]
    pub force: bool,
    /// Check everything and say what would go where (what would be written, what the
    /// target already holds and keeps, what would be grown or shrunk); write nothing.
    #[arg(long)]
    pub dry_run: bool,
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
    /// Where a restore onto a smaller target shrinks the disk first (a sparse copy
    /// taking about the snapshot's data; default: $TMPDIR or /tmp).
    #[arg(long, value_name = "DIR")]
    pub scratch: Option<PathBuf>,
}
