//! What a capture is asked to do: `lifeboat capture`'s options (the rescue fills them in
//! from its kernel command line).

use clap::Args;

use crate::location::DiskLocation;
use crate::repo::RepoSpec;

#[derive(Debug, Clone, Args)]
pub struct CaptureArgs {
    #[command(flatten)]
    pub repo: RepoSpec,
    /// The disk to read: a block device, an image file, or nbd://HOST[:PORT]/EXPORT.
    /// Given more than once, the disks of one machine in one snapshot (disk 0, 1, ...).
    #[arg(long, value_name = "DISK", required = true)]
    pub source: Vec<DiskLocation>,
    /// Snapshot name (default: this host's name, up to its first dot).
    #[arg(long, default_value_t = crate::repo::manifest::default_name(), value_parser = crate::repo::manifest::parse_name)]
    pub name: String,
    /// Logical sector size of an image file (found from its GPT when not given).
    #[arg(long, value_parser = parse_sector_size)]
    pub sector_size: Option<u32>,
    /// Read every block, even those a filesystem marks free.
    #[arg(long)]
    pub full: bool,
    /// Read the disk even though a filesystem on it is mounted read-write, or it is
    /// active swap or held by device mapper or RAID: the image is then at best what a
    /// power cut would have left (files written meanwhile may be torn), and the manifest
    /// and `snapshots` say so. Without it such a capture is refused.
    #[arg(long, conflicts_with = "live")]
    pub crash_consistent: bool,
    /// Capture a running machine consistently: every active LVM logical volume on the
    /// disks is read from a snapshot taken for the capture (device mapper freezes its
    /// filesystem for that instant) and removed after. A filesystem mounted read-write
    /// outside LVM has no such view: the capture is refused, saying so.
    #[arg(long)]
    pub live: bool,
    /// With --live: a command run (by sh -c) just before the snapshots are taken, e.g.
    /// to have a database flush and pause; the capture stops if it fails.
    #[arg(long, requires = "live", value_name = "COMMAND")]
    pub pre_hook: Option<String>,
    /// With --live: a command run just after the snapshots are taken (even if taking
    /// them failed), e.g. to resume what the pre-hook paused.
    #[arg(long, requires = "live", value_name = "COMMAND")]
    pub post_hook: Option<String>,
    /// A key file that opens LUKS containers on the source (given more than once, each
    /// is tried): each is opened read-only for the capture (`cryptsetup open`), so that
    /// only the ciphertext under the used blocks of the filesystem inside is read; the
    /// snapshot still holds the container's ciphertext, and a restore needs no key. A
    /// container none of them opens is an error.
    #[arg(long, value_name = "FILE")]
    pub luks_keyfile: Vec<std::path::PathBuf>,
    /// zstd level for new chunks (default: the repository's).
    #[arg(long, value_parser = clap::value_parser!(i32).range(-7..=19))]
    pub level: Option<i32>,
    /// Sign the snapshot with this key (NAME.key, from `lifeboat keygen`).
    #[arg(long, env = "LIFEBOAT_SIGNING_KEY", value_name = "NAME.key")]
    pub sign: Option<std::path::PathBuf>,
    /// The passphrase of a sealed signing key, in a file (first line); without it, it is
    /// asked for on the terminal.
    #[arg(long, env = "LIFEBOAT_SIGNING_PASSWORD_FILE", value_name = "FILE")]
    pub sign_password_file: Option<std::path::PathBuf>,
    /// Record this time (RFC 3339) as the snapshot's instead of now, as restic's `backup
    /// --time`: to import old images, or to test a retention policy.
    #[arg(long, value_name = "RFC3339")]
    pub time: Option<String>,
}

fn parse_sector_size(s: &str) -> Result<u32, String> {
    match s {
        "512" => Ok(512),
        "4096" => Ok(4096),
        _ => Err(format!("{s} is not a logical sector size (512 or 4096)")),
    }
}
