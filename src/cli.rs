//! The command line: every command and option, with their help.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Lifeboat: bare-metal backup and restore.
///
/// Captures whole disks into a deduplicated, verified chunk repository and restores them
/// exactly, onto the same disk or a larger one.
#[derive(Debug, Parser)]
#[command(name = "lifeboat", version, propagate_version = true)]
pub struct Cli {
    /// Print results as one JSON object (or array) on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress output.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// More diagnostics on stderr (-v info, -vv debug).
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct RepoArg {
    /// Repository: a local directory, or http(s)://HOST:PORT/ of `lifeboat serve` or any
    /// static web server holding one.
    #[arg(long, env = "LIFEBOAT_REPO", value_name = "DIR_OR_URL")]
    pub repo: String,
    /// CA certificates (PEM) to trust for an https repository.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// File holding the bearer token that `lifeboat serve` wants for writes.
    #[arg(long, env = "LIFEBOAT_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

impl RepoArg {
    pub fn spec(&self) -> crate::repo::RepoSpec {
        crate::repo::RepoSpec {
            location: self.repo.clone(),
            cacert: self.cacert.clone(),
            token_file: self.token_file.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct KernelArg {
    /// Kernel unpacked by scripts/fetch-kernel (vmlinuz, lib/modules/VERSION).
    #[arg(
        long,
        env = "LIFEBOAT_KERNEL",
        default_value = ".cache/kernel",
        value_name = "DIR"
    )]
    pub kernel: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new, empty repository.
    Init {
        /// Directory to create (must be absent or empty).
        #[arg(long, value_name = "DIR")]
        repo: PathBuf,
        /// Average chunk size in KiB (minimum is a quarter, maximum four times this).
        #[arg(long, default_value_t = 64, value_name = "KIB")]
        chunk_avg_kib: u32,
        /// zstd compression level for chunks.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(-7..=19))]
        level: i32,
    },
    /// Capture a disk (block device or image file) into a new snapshot.
    Capture {
        #[command(flatten)]
        repo: RepoArg,
        /// The disk to read.
        #[arg(long, value_name = "DISK")]
        source: PathBuf,
        /// Snapshot name, e.g. the host's name.
        #[arg(long)]
        name: String,
        /// Logical sector size of an image file (found from its GPT when not given).
        #[arg(long, value_parser = ["512", "4096"])]
        sector_size: Option<String>,
        /// Read every block, even those a filesystem marks free.
        #[arg(long)]
        full: bool,
        /// zstd level for new chunks (default: the repository's).
        #[arg(long, value_parser = clap::value_parser!(i32).range(-7..=19))]
        level: Option<i32>,
    },
    /// Restore a snapshot onto a disk or image file, after checking everything first.
    Restore {
        #[command(flatten)]
        repo: RepoArg,
        /// Snapshot name (the newest with it), id or id prefix.
        #[arg(long, value_name = "NAME_OR_ID")]
        snapshot: String,
        /// The disk to overwrite; an image file that does not exist is created.
        #[arg(long, value_name = "DISK")]
        target: PathBuf,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Read everything back afterwards and compare hashes.
        #[arg(long)]
        verify: bool,
        /// Take chunks from this image (file or device) where it has them, or, given a
        /// snapshot name or id, trust that the target holds that older snapshot and check
        /// in place only where it had the same chunk.
        #[arg(long, value_name = "IMAGE_OR_SNAPSHOT")]
        seed: Option<String>,
        /// Write every chunk, without first reading what an existing target already holds.
        #[arg(long)]
        no_reuse: bool,
        /// Zero free filesystem space (by default it is left as it is; the filesystem never
        /// reads it).
        #[arg(long)]
        zero_free: bool,
        /// Extend the last partition to the end of a larger target, and grow an ext4
        /// filesystem in it when resize2fs is available.
        #[arg(long)]
        grow: bool,
    },
    /// List the snapshots in a repository.
    Snapshots {
        #[command(flatten)]
        repo: RepoArg,
    },
    /// Check a repository: every referenced chunk exists (and with --read-data, is intact).
    Check {
        #[command(flatten)]
        repo: RepoArg,
        /// Decompress and hash every stored chunk.
        #[arg(long)]
        read_data: bool,
    },
    /// List the machine's disks.
    Disks,
    /// Prove that a snapshot comes back and boots: boot the rescue media in QEMU with a
    /// blank disk of the snapshot's size, restore onto it (repository on a USB stick, over
    /// HTTP, or by PXE), then boot the restored disk under OVMF and wait for its marker.
    Drill {
        #[command(flatten)]
        repo: RepoArg,
        /// Snapshot name (the newest with it), id or id prefix.
        #[arg(long, value_name = "NAME_OR_ID")]
        snapshot: String,
        /// How the rescue gets the repository.
        #[arg(long, value_enum, default_value = "http")]
        via: crate::drill::Via,
        #[command(flatten)]
        kernel: KernelArg,
        /// What the restored system prints on its serial console once booted.
        #[arg(long, default_value = "login:")]
        marker: String,
        /// Have the rescue read the disk back and verify it.
        #[arg(long)]
        verify: bool,
        /// Seconds the rescue may take to report.
        #[arg(long, default_value_t = 900)]
        rescue_timeout: u64,
        /// Seconds the restored disk may take to show its marker.
        #[arg(long, default_value_t = 300)]
        boot_timeout: u64,
        /// Keep the media, the disk and the console logs here (default: a new folder under
        /// /var/tmp, of which only the console logs are kept).
        #[arg(long, value_name = "DIR")]
        work: Option<PathBuf>,
        /// QEMU accelerator: tcg (software, works everywhere) or kvm.
        #[arg(long, default_value = "tcg")]
        accel: String,
    },
    /// Build the rescue media around a stock Linux kernel: initramfs.cpio.zst (this binary
    /// as /init, storage, filesystem and network modules), lifeboat-usb.img (GPT, FAT32
    /// ESP with systemd-boot, a data partition for a repository) and pxe/ (kernel,
    /// initramfs, iPXE script).
    Mkimage {
        /// Output directory.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[command(flatten)]
        kernel: KernelArg,
        /// Kernel command line, with the rescue's orders (lifeboat.repo=, lifeboat.snapshot=,
        /// lifeboat.target=, lifeboat.action=, lifeboat.verify=1, lifeboat.after=).
        #[arg(long, default_value = crate::media::DEFAULT_CMDLINE)]
        cmdline: String,
        /// The UEFI loader to install as EFI/BOOT/BOOTX64.EFI.
        #[arg(long, default_value = crate::media::SYSTEMD_BOOT, value_name = "FILE")]
        loader: PathBuf,
        /// Copy this repository onto the stick's data partition (as /repo).
        #[arg(long, value_name = "DIR")]
        with_repo: Option<PathBuf>,
        /// Free room on the data partition, in MiB.
        #[arg(long, default_value_t = 64, value_name = "MIB")]
        data_mib: u64,
    },
    /// Serve a repository over HTTP(S): reads for anyone who can connect, writes (captures
    /// pushing chunks and manifests) only with the bearer token.
    Serve {
        /// The repository directory.
        #[arg(long, value_name = "DIR")]
        repo: PathBuf,
        /// Address to listen on (port 0 picks one; the first line printed says which).
        #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR:PORT")]
        listen: String,
        /// File holding the bearer token that allows writes; without it, read-only.
        #[arg(long, value_name = "FILE")]
        write_token_file: Option<PathBuf>,
        /// TLS certificate chain (PEM); serves https with --tls-key.
        #[arg(long, value_name = "FILE")]
        tls_cert: Option<PathBuf>,
        /// TLS private key (PEM).
        #[arg(long, value_name = "FILE")]
        tls_key: Option<PathBuf>,
        /// Connections served at once.
        #[arg(long, default_value_t = 64)]
        threads: usize,
        /// Also export every snapshot as a read-only NBD disk named after it, on this
        /// address (e.g. 127.0.0.1:10809).
        #[arg(long, value_name = "ADDR:PORT")]
        nbd: Option<String>,
    },
}
