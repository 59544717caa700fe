//! What a drill is asked to do: `lifeboat drill`'s options.

use std::path::PathBuf;

use clap::Args;

use super::Via;
use crate::media::KernelArg;
use crate::repo::RepoSpec;

#[derive(Debug, Clone, Args)]
pub struct DrillArgs {
    #[command(flatten)]
    pub repo: RepoSpec,
    /// Snapshot name (the newest with it), id or id prefix.
    #[arg(long, value_name = "NAME_OR_ID")]
    pub snapshot: String,
    /// How the rescue gets the repository.
    #[arg(long, value_enum, default_value = "http")]
    pub via: Via,
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
    /// Bake this public key into the rescue (as `mkimage --trust`): the drill then also
    /// proves that the snapshot is signed by it. Repeatable.
    #[arg(long, value_name = "NAME.pub")]
    pub trust: Vec<PathBuf>,
}
