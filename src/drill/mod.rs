//! Restore drills: boot the rescue media in QEMU with a blank disk of the snapshot's size
//! and the repository on a USB stick, over HTTP, or by PXE; wait for the rescue's report
//! on the serial console; then boot the restored disk under OVMF and wait for the
//! restored system's own boot marker.

mod args;
pub mod guest;
pub mod machine;
pub mod server;

use std::fmt;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::journal::{self, Operation, Subject};
use crate::location::RepoLocation;
use crate::media::MkimageArgs;
use crate::repo::{Repository, Snapshot, SnapshotId};
use crate::rescue::report::{failure_of, Report as RescueReport, FAILED_PREFIX, REPORT_PREFIX};
use crate::rescue::PASSPHRASE_PROMPT;
use crate::ui::{bytes, Outcome, Ui};
pub use args::DrillArgs;
use guest::Guest;
use machine::{Hardware, Media, Qemu};
use server::Server;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// The rescue stick (shim and GRUB under OVMF) with the repository on its data partition.
    Usb,
    /// The rescue kernel booted directly under OVMF, the repository over HTTP.
    Http,
    /// Network boot (iPXE from QEMU's TFTP server), the repository over HTTP.
    Pxe,
}

/// Where the rescue finds the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RepoOn {
    /// Served over the network (user-mode networking to the host).
    Network,
    /// Copied onto the boot medium (the stick's data partition, or the ISO).
    Media,
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Via::Usb => "usb",
            Via::Http => "http",
            Via::Pxe => "pxe",
        })
    }
}

#[derive(Debug, Serialize)]
pub struct Phase {
    pub name: String,
    pub duration_s: f64,
    pub ok: bool,
    pub detail: String,
}

impl Phase {
    fn timed(name: &str, since: Instant, ok: bool, detail: String) -> Phase {
        Phase {
            name: name.into(),
            duration_s: since.elapsed().as_secs_f64(),
            ok,
            detail,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub pass: bool,
    /// How the rescue booted and on what hardware.
    #[serde(flatten)]
    pub hardware: Hardware,
    pub repo_on: RepoOn,
    pub snapshot: SnapshotId,
    pub name: String,
    pub disk_size: u64,
    pub phases: Vec<Phase>,
    /// The rescue's own report, as it printed it.
    pub rescue_report: Option<RescueReport>,
    pub rescue_error: Option<String>,
    pub work_dir: String,
    pub duration_s: f64,
}

impl Outcome for Summary {
    fn print(&self) {
        let h = &self.hardware;
        crate::outln!(
            "drill     {} from {} on {} firmware, disks on {}, NIC {}, repository on {}",
            self.name,
            h.media,
            h.firmware,
            h.disk_bus,
            h.nic,
            match self.repo_on {
                RepoOn::Network => "the network",
                RepoOn::Media => "the boot medium",
            }
        );
        crate::outln!(
            "snapshot  {} ({})",
            self.snapshot.short(),
            bytes(self.disk_size)
        );
        for p in &self.phases {
            crate::outln!(
                "{:<9} {:>6.1} s  {}  {}",
                p.name,
                p.duration_s,
                if p.ok { "ok  " } else { "FAIL" },
                p.detail
            );
        }
        if let Some(e) = &self.rescue_error {
            crate::outln!("error     {e}");
        }
        crate::outln!(
            "result    {} in {:.1} s (console logs in {})",
            if self.pass { "PASS" } else { "FAIL" },
            self.duration_s,
            self.work_dir
        );
    }

    fn failure(&self) -> Option<String> {
        (!self.pass).then(|| {
            format!(
                "drill failed: {}",
                self.rescue_error
                    .clone()
                    .unwrap_or_else(|| "the restored disk did not boot to its marker".into())
            )
        })
    }
}

/// What OVMF prints when Secure Boot refuses a loader.
const REFUSED_BY_FIRMWARE: &str = ": Access Denied";
/// What OVMF and SeaBIOS print when no disk holds anything to boot (a restore that did
/// not complete, whose tables were wiped): the boot phase ends there, not at its timeout.
const NOTHING_TO_BOOT: &[&str] = &[
    "No bootable option or device was found",
    "No bootable device.",
];

/// The files a drill works with.
struct Work {
    dir: PathBuf,
    media: PathBuf,
    vars: PathBuf,
}

impl Work {
    fn new(dir: PathBuf) -> Work {
        Work {
            media: dir.join("media"),
            vars: dir.join("OVMF_VARS.fd"),
            dir,
        }
    }

    /// Keep only the console logs of a drill run in a folder of its own.
    fn clean(&self) {
        let _ = fs::remove_dir_all(&self.media);
        for i in 0..crate::repo::manifest::MAX_DISKS {
            let _ = fs::remove_file(self.disk(i));
        }
        let _ = fs::remove_file(&self.vars);
    }

    /// The blank target of the snapshot's disk `i`.
    fn disk(&self, i: usize) -> PathBuf {
        match i {
            0 => self.dir.join("disk.img"),
            i => self.dir.join(format!("disk{i}.img")),
        }
    }
}

pub fn run(args: &DrillArgs, ui: &Ui) -> Result<Summary> {
    let start = Instant::now();
    let repo = Repository::open(&args.repo)?;
    // Every drill is recorded, linked to its snapshot: what `snapshots`, `forget` (last
    // known bootable) and `status` read. One that could not run (or was interrupted) is a
    // drill that did not pass.
    journal::recorded(
        &repo,
        Operation::Drill,
        || {
            drill(&repo, args, ui, start).map_err(|e| {
                crate::io::interrupt::explain(e, &format!("drill of {}", args.snapshot), || {
                    "nothing was changed in the repository; run the same command again".into()
                })
            })
        },
        |result| {
            Some(match result {
                Ok(s) => recorded_as(s),
                Err(_) => journal::named(&repo, &args.snapshot),
            })
        },
    )
}

/// Media, blank disks, the rescue's restore, then the restored disk's boot.
fn drill(repo: &Repository, args: &DrillArgs, ui: &Ui, start: Instant) -> Result<Summary> {
    let snap = repo.resolve(&args.snapshot)?;
    let hw = args.hardware();
    hw.check()?;
    let work = Work::new(work_dir(args.work.as_deref())?);
    let (repo_order, _server) = repository_for_guest(args, hw.media)?;
    let cmdline = rescue_cmdline(args, &snap, &repo_order);
    let mut phases = Vec::new();
    let t = Instant::now();
    let media = crate::media::run(&MkimageArgs {
        out: work.media.clone(),
        kernel: args.kernel.clone(),
        cmdline: cmdline.clone(),
        with_repo: match args.repo_on() {
            RepoOn::Media => args.repo.local_dir().map(Path::to_path_buf),
            RepoOn::Network => None,
        },
        data_mib: 8,
        trust: args.trust.clone(),
        firmware: None,
        omit_driver: args.omit_driver.clone(),
        // Only the medium this drill boots.
        build: crate::media::Wanted {
            usb: hw.media == Media::Usb,
            iso: hw.media == Media::Iso,
            pxe: hw.media == Media::Pxe,
        },
    })?;
    phases.push(Phase::timed(
        "media",
        t,
        true,
        format!(
            "initramfs {}, boot medium {}",
            bytes(media.initramfs.bytes),
            bytes(
                media.usb.as_ref().map(|u| u.bytes).unwrap_or(0)
                    + media.iso.as_ref().map(|i| i.bytes).unwrap_or(0)
            )
        ),
    ));
    let sizes: Vec<u64> = snap.manifest.disks().map(|(_, d)| d.size).collect();
    let disks = prepare_disks(&work, &sizes, hw.vars_template())?;
    let qemu = Qemu {
        accel: args.accel.clone(),
        hw: hw.clone(),
        vars: work.vars.clone(),
        disks,
    };
    let vmlinuz = args.kernel.kernel.join("vmlinuz");
    let rescue_args = qemu.rescue(
        &machine::Boot {
            vmlinuz: &vmlinuz,
            initramfs: &media.initramfs.path,
            cmdline: &cmdline,
            usb: media.usb.as_ref().map_or("", |u| u.path.as_str()),
            iso: media.iso.as_ref().map_or("", |i| i.path.as_str()),
            pxe: media.pxe.as_deref().unwrap_or(""),
        },
        args.repo_on() == RepoOn::Network,
    );
    let echo = !ui.quiet;
    let t = Instant::now();
    let passphrase = if repo.is_encrypted() {
        Some(args.repo.passphrase()?)
    } else {
        None
    };
    let rescue = run_rescue(&rescue_args, &work.dir, args, echo, passphrase.as_ref())?;
    crate::io::interrupt::check()?;
    phases.push(Phase::timed("rescue", t, rescue.ok, rescue.detail()));
    // Boot what is on the disk now, whatever the rescue said: a failed restore must not boot.
    let t = Instant::now();
    let booted = boot_restored(&qemu, &work, args, echo)?;
    crate::io::interrupt::check()?;
    phases.push(Phase::timed(
        "boot",
        t,
        booted.is_ok(),
        match &booted {
            Ok((_, line)) => format!("marker: {}", line.trim()),
            Err(why) => format!("marker {:?} not seen: {why}", args.marker),
        },
    ));
    if args.work.is_none() {
        work.clean();
    }
    Ok(summarise(
        args,
        &snap,
        rescue,
        booted.is_ok(),
        phases,
        &work,
        start,
    ))
}

/// Boot the restored disks and wait for the marker: the line that shows it, or why not
/// (the firmware refused the loader, found nothing to boot, or the time ran out).
fn boot_restored(
    qemu: &Qemu,
    work: &Work,
    args: &DrillArgs,
    echo: bool,
) -> Result<std::result::Result<(usize, String), String>> {
    let mut guest = Guest::start(&qemu.boot(), &work.dir.join("console-boot.log"), echo)?;
    let mut watched = vec![args.marker.as_str(), REFUSED_BY_FIRMWARE];
    watched.extend(NOTHING_TO_BOOT);
    Ok(match guest.wait_for(&watched, args.boot_timeout) {
        Ok((0, line)) => Ok((0, line)),
        Ok((1, line)) => Err(format!(
            "the firmware refused the restored disk's loader: {}",
            line.trim()
        )),
        Ok((_, line)) => Err(format!(
            "the firmware found nothing to boot: {}",
            line.trim()
        )),
        Err(why) => Err(why),
    })
}

/// The rescue's orders: restore the snapshot onto the blank disks, then power off; and
/// the words `--rescue-arg` adds.
fn rescue_cmdline(args: &DrillArgs, snap: &Snapshot, repo_order: &str) -> String {
    let orders =
        format!(
        "console=ttyS0,115200 panic=-1 quiet lifeboat.action=restore lifeboat.repo={repo_order} \
         lifeboat.snapshot={} lifeboat.target={} lifeboat.after=poweroff{}",
        snap.id,
        // Several blank disks: each of the snapshot's disks to the smallest that fits.
        if snap.manifest.disk_count() > 1 {
            "auto"
        } else {
            "largest-empty"
        },
        if args.verify { " lifeboat.verify=1" } else { "" }
    );
    std::iter::once(orders)
        .chain(args.rescue_arg.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// What the journal says of a drill that ran.
fn recorded_as(s: &Summary) -> Subject {
    Subject {
        name: Some(s.name.clone()),
        snapshot: Some(s.snapshot),
        details: serde_json::json!({
            "media": s.hardware.media,
            "firmware": s.hardware.firmware,
            "disk_bus": s.hardware.disk_bus,
            "nic": s.hardware.nic,
            "repo_on": s.repo_on,
            "phases": s.phases,
            "disk_size": s.disk_size,
        }),
        failure: (!s.pass).then(|| {
            s.rescue_error
                .clone()
                .unwrap_or_else(|| "the restored disk did not show its marker".into())
        }),
    }
}

fn summarise(
    args: &DrillArgs,
    snap: &Snapshot,
    rescue: RescueRun,
    booted: bool,
    phases: Vec<Phase>,
    work: &Work,
    start: Instant,
) -> Summary {
    Summary {
        pass: rescue.ok && booted,
        hardware: args.hardware(),
        repo_on: args.repo_on(),
        snapshot: snap.id,
        name: snap.manifest.name.clone(),
        disk_size: snap.manifest.total_size(),
        phases,
        rescue_report: rescue.report,
        rescue_error: rescue.error,
        work_dir: work.dir.display().to_string(),
        duration_s: start.elapsed().as_secs_f64(),
    }
}

/// The `lifeboat.repo=` order for the guest, and the server started for it (kept alive
/// by the caller for the drill's length).
fn repository_for_guest(args: &DrillArgs, media: Media) -> Result<(String, Option<Server>)> {
    match (args.repo_on(), media, &args.repo.location) {
        (RepoOn::Media, Media::Usb, RepoLocation::Dir(_)) => Ok(("usb".into(), None)),
        (RepoOn::Media, Media::Iso, RepoLocation::Dir(_)) => Ok(("cdrom".into(), None)),
        (RepoOn::Media, Media::Usb | Media::Iso, _) => bail!(
            "--repo-on media copies the repository onto the stick or the ISO: give a local repository directory"
        ),
        (RepoOn::Media, _, _) => {
            bail!("--repo-on media needs --media usb or iso: the other media carry no repository")
        }
        (_, _, RepoLocation::Dir(dir)) => {
            let srv = Server::start(dir)?;
            let url = format!("http://10.0.2.2:{}/", srv.port);
            Ok((url, Some(srv)))
        }
        (_, _, RepoLocation::S3(url)) => {
            // The endpoint as the guest reaches it, and the key: on the command line.
            let (endpoint, keys) = args.repo.s3_access()?;
            let mut order = format!(
                "{url} lifeboat.s3-endpoint={} lifeboat.s3-key={} lifeboat.s3-secret={}",
                crate::location::url_as_seen_from_qemu_guest(&endpoint),
                keys.key_id,
                keys.secret
            );
            if let Some(r) = keys.region {
                order.push_str(&format!(" lifeboat.s3-region={r}"));
            }
            Ok((order, None))
        }
        (_, _, remote) => Ok((remote.as_seen_from_qemu_guest().to_string(), None)),
    }
}

/// A blank target disk of each of the snapshot's disks' size (disk.img, disk1.img, ...),
/// and a fresh copy of the firmware's variables (if UEFI) shared by both boots.
fn prepare_disks(work: &Work, sizes: &[u64], vars: Option<&str>) -> Result<Vec<PathBuf>> {
    let mut out = Vec::with_capacity(sizes.len());
    for (i, &size) in sizes.iter().enumerate() {
        let path = work.disk(i);
        let _ = fs::remove_file(&path);
        File::create(&path)
            .and_then(|f| f.set_len(size))
            .with_context(|| format!("create the blank disk {}", path.display()))?;
        out.push(path);
    }
    if let Some(vars) = vars {
        fs::copy(vars, &work.vars).with_context(|| format!("copy {vars}"))?;
    }
    Ok(out)
}

/// What the rescue guest came to.
struct RescueRun {
    ok: bool,
    report: Option<RescueReport>,
    error: Option<String>,
}

impl RescueRun {
    fn detail(&self) -> String {
        match &self.report {
            Some(r) if self.ok => format!(
                "restored {} in {:.1} s in the guest (repository reached in {:.1} s); bootloader: {}",
                bytes(r.restore.as_ref().map(|s| s.disk_size).unwrap_or(0)),
                r.seconds_in(&["restore", "restore+verify"]),
                r.seconds_in(&["network", "repository"]),
                r.bootloader.as_ref().map(|b| b.nvram.as_str()).unwrap_or("-")
            ),
            _ => self.error.clone().unwrap_or_default(),
        }
    }
}

/// Boot the rescue and wait for its report (or its failure line).
/// An encrypted repository's passphrase is typed on the rescue's console when it asks
/// (echo is off by then: it never reaches the console log).
fn run_rescue(
    qemu_args: &[String],
    dir: &Path,
    args: &DrillArgs,
    echo: bool,
    passphrase: Option<&crate::crypt::Passphrase>,
) -> Result<RescueRun> {
    let mut guest = Guest::start(qemu_args, &dir.join("console-rescue.log"), echo)?;
    let deadline = Instant::now() + args.rescue_timeout;
    let outcome = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match guest.wait_for(&[REPORT_PREFIX, FAILED_PREFIX, PASSPHRASE_PROMPT], left) {
            Ok((2, line)) => match passphrase {
                Some(p) => guest.type_line(p.as_str())?,
                None => {
                    break Ok((
                        1,
                        format!("{FAILED_PREFIX}the rescue asks for a passphrase ({line}); give the drill --password-file"),
                    ))
                }
            },
            other => break other,
        }
    };
    let mut run = RescueRun {
        ok: false,
        report: None,
        error: None,
    };
    match outcome {
        Ok((0, line)) => {
            let report = RescueReport::from_console_line(&line)
                .expect("the line holds the report prefix")
                .context("parse the rescue's report")?;
            run.ok = report.succeeded();
            if !run.ok {
                run.error = report.error.clone();
                // The failure line follows the report.
                if let Ok((_, l)) = guest.wait_for(&[FAILED_PREFIX], Duration::from_secs(10)) {
                    run.error = failure_of(&l).map(str::to_string);
                }
            }
            run.report = Some(report);
        }
        Ok((_, line)) => run.error = failure_of(&line).map(str::to_string),
        Err(why) => run.error = Some(format!("no report from the rescue: {why}")),
    }
    if run.ok {
        guest.end(Duration::from_secs(30));
    }
    Ok(run)
}

fn work_dir(given: Option<&Path>) -> Result<PathBuf> {
    let dir = match given {
        Some(w) => w.to_path_buf(),
        None => std::env::var_os("TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/tmp"))
            .join(format!("lifeboat-drill-{}", std::process::id())),
    };
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}
