//! The commands: the top of the house. They parse, dispatch and present; nothing below
//! refers to them. A subsystem owns its options (`RestoreArgs` lives in `restore/` and
//! goes as it is to `restore::run`, which the rescue also calls); the few commands with
//! no subsystem of their own (init, key, snapshots, status, ...) keep theirs here. Every
//! result is an [`Outcome`](crate::ui::Outcome) that the `Ui` prints for people or as
//! JSON.

pub mod about;
pub mod disks;
pub mod forget;
pub mod init;
pub mod journal;
pub mod key;
pub mod keygen;
pub mod locks;
pub mod migrate;
pub mod protect;
pub mod schedule;
pub mod snapshots;
pub mod status;

use anyhow::Result;
use clap::Subcommand;

use crate::ui::Ui;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new, empty repository.
    Init(init::InitArgs),
    /// Make a signing key pair (NAME.key, NAME.pub) for `capture --sign` and `--trust`.
    Keygen(keygen::KeygenArgs),
    /// The key files of an encrypted repository: list, add, remove, passwd, export (the
    /// printable recovery copy of its master key).
    Key(key::KeyArgs),
    /// Capture a disk (block device, image file or NBD export) into a new snapshot.
    Capture(crate::capture::CaptureArgs),
    /// Restore a snapshot onto a disk or image file, after checking everything first.
    Restore(crate::restore::RestoreArgs),
    /// List the snapshots in a repository.
    Snapshots(snapshots::SnapshotsArgs),
    /// Remove snapshots by a retention policy (restic's --keep-* flags), per name; never
    /// a protected one, nor each name's newest snapshot that passed a drill.
    Forget(forget::ForgetArgs),
    /// Delete the data no snapshot needs and rewrite packs that are mostly unused, while
    /// captures go on (they are waited for, never blocked).
    Prune(crate::prune::PruneArgs),
    /// Show the leases of running captures and prunes, and prune intents; break a dead one.
    Locks(locks::LocksArgs),
    /// Is every machine protected? Per name: the last capture, the last good drill, the
    /// last check; exits as Nagios reads it: 0 OK, 1 WARNING (overdue), 2 CRITICAL
    /// (failed, or no snapshot), 3 UNKNOWN (the repository could not be read).
    Status(status::StatusArgs),
    /// Write systemd units for a machine's backups: a capture (then forget) on a timer, a
    /// weekly check of a share of the data, a weekly drill.
    Schedule(schedule::ScheduleArgs),
    /// Protect a snapshot from forget (or, with --remove, no longer).
    Protect(protect::ProtectArgs),
    /// The record of every operation on the repository: captures, restores, checks,
    /// drills, forgets, protections.
    Journal(journal::JournalArgs),
    /// Check a repository: every referenced chunk exists (and with --read-data, is intact).
    Check(crate::check::CheckArgs),
    /// Move a format 1 repository (a file per chunk) forward to format 2 (packs), in
    /// place; safe to interrupt and run again. It needs the repository to itself.
    Migrate(migrate::MigrateArgs),
    /// List the machine's disks.
    Disks,
    /// Prove that a snapshot comes back and boots: boot the rescue media in QEMU with a
    /// blank disk of the snapshot's size, restore onto it (repository on a USB stick, over
    /// HTTP, or by PXE), then boot the restored disk under OVMF and wait for its marker.
    Drill(crate::drill::DrillArgs),
    /// Build the rescue media around a stock Linux kernel: initramfs.cpio.zst (this binary
    /// as /init, storage, filesystem and network modules), lifeboat-usb.img (GPT, FAT32
    /// ESP with Debian's signed shim and GRUB, GRUB for BIOS, a data partition for a
    /// repository), lifeboat.iso (hybrid: CD, virtual media or stick; BIOS and UEFI) and
    /// pxe/ (kernel, initramfs, iPXE script).
    Mkimage(crate::media::MkimageArgs),
    /// Serve a repository over HTTP(S): reads for anyone who can connect, writes (captures
    /// pushing chunks and manifests) only with the bearer token.
    Serve(crate::serve::ServeArgs),
    /// Report the machine's hardware before anything is written to it: firmware (BIOS or
    /// UEFI, Secure Boot), CPU, memory, PCI devices and their drivers (a disk controller
    /// or NIC without one named as the reason), disks with model, serial, tables,
    /// filesystems and health, NICs with link and addresses, and the kernel log.
    Diagnose,
    /// Fetch a stock Debian kernel, busybox and the signed boot chain (shim, GRUB) for
    /// mkimage and drill (apt-get download, nothing installed), into DIR or the folder
    /// they look in by default.
    FetchKernel(crate::media::fetch::FetchKernelArgs),
    /// This binary's version, the commit it was built from, and its target.
    Version,
    /// Print the completion script for a shell (bash, zsh, fish, elvish, powershell).
    Completions(about::CompletionsArgs),
    /// Write the man pages (lifeboat.1 and one per command) into a folder.
    Man(about::ManArgs),
}

impl Command {
    /// Run the command and show its result. `app` is the whole command line's definition
    /// (for completions and man pages).
    pub fn run(&self, ui: &Ui, app: impl FnOnce() -> clap::Command) -> Result<()> {
        match self {
            Command::Init(a) => ui.show(&init::run(a)?),
            Command::Keygen(a) => ui.show(&keygen::run(a)?),
            Command::Key(a) => ui.show(&key::run(a)?),
            Command::Capture(a) => ui.show(&crate::capture::run(a, ui)?),
            Command::Restore(a) if a.dry_run => ui.show(&crate::restore::dry_run(a, ui)?),
            Command::Restore(a) => ui.show(&crate::restore::run(a, ui)?),
            Command::Snapshots(a) => ui.show(&snapshots::run(a)?),
            Command::Forget(a) => {
                ui.show(&forget::run(a)?)?;
                if a.prune {
                    ui.show(&crate::prune::run(&a.prune_args(), ui)?)?;
                }
                Ok(())
            }
            Command::Prune(a) => ui.show(&crate::prune::run(a, ui)?),
            Command::Locks(a) => ui.show(&locks::run(a)?),
            // Nagios: a status that could not be read is UNKNOWN (3), not a failure.
            Command::Status(a) => ui.show(&status::run(a).map_err(|e| {
                crate::ui::Failure::new(crate::ui::Exit::Unknown, format!("UNKNOWN: {e:#}"))
            })?),
            Command::Schedule(a) => ui.show(&schedule::run(a)?),
            Command::Protect(a) => ui.show(&protect::run(a)?),
            Command::Journal(a) => ui.show(&journal::run(a)?),
            Command::Check(a) => ui.show(&crate::check::run(a, ui)?),
            Command::Migrate(a) => ui.show(&crate::repo::migrate::run(&a.repo, ui)?),
            Command::Disks => ui.show(&disks::run()?),
            Command::Diagnose => ui.show(&crate::diagnose::run()?),
            Command::Drill(a) => ui.show(&crate::drill::run(a, ui)?),
            Command::Mkimage(a) => ui.show(&crate::media::run(a)?),
            Command::Serve(a) => crate::serve::run(a),
            Command::FetchKernel(a) => ui.show(&crate::media::fetch::run(a)?),
            Command::Version => ui.show(&about::version()),
            Command::Completions(a) => about::completions(a, app()),
            Command::Man(a) => ui.show(&about::man(a, app())?),
        }
    }

    /// Whether the command is a long-running server.
    pub fn is_server(&self) -> bool {
        matches!(self, Command::Serve(_))
    }
}
