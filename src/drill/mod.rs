//! Restore drills: boot the rescue media in QEMU with a blank disk of the snapshot's size
//! and the repository on a USB stick, over HTTP, or by PXE; wait for the rescue's report
//! on the serial console; then boot the restored disk under OVMF and wait for the
//! restored system's own boot marker.

mod args;
pub mod guest;
pub mod server;

use std::fmt;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::journal::{self, Operation, Subject};
use crate::location::RepoLocation;
use crate::media::{KernelArg, MkimageArgs};
use crate::repo::{Repository, Snapshot, SnapshotId};
use crate::rescue::report::{failure_of, Report as RescueReport, FAILED_PREFIX, REPORT_PREFIX};
use crate::rescue::PASSPHRASE_PROMPT;
use crate::ui::{bytes, Outcome, Ui};
pub use args::DrillArgs;
use guest::Guest;
use server::Server;

pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// The rescue stick (systemd-boot under OVMF) with the repository on its data partition.
    Usb,
    /// The rescue kernel booted directly under OVMF, the repository over HTTP.
    Http,
    /// Network boot (iPXE from QEMU's TFTP server), the repository over HTTP.
    Pxe,
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
    pub via: Via,
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
        crate::outln!("drill     {} via {}", self.name, self.via);
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
    let work = Work::new(work_dir(args.work.as_deref())?);
    for f in [OVMF_CODE, OVMF_VARS] {
        if !Path::new(f).exists() {
            bail!("{f} is missing (apt-get install ovmf)");
        }
    }
    let (repo_order, _server) = repository_for_guest(args)?;
    let cmdline =
        format!(
        "console=ttyS0,115200 panic=-1 quiet lifeboat.action=restore lifeboat.repo={repo_order} \
         lifeboat.snapshot={} lifeboat.target={} lifeboat.after=poweroff{}",
        snap.id,
        // Several blank disks: each of the snapshot's disks to the smallest that fits.
        if snap.manifest.disk_count() > 1 { "auto" } else { "largest-empty" },
        if args.verify { " lifeboat.verify=1" } else { "" }
    );
    let mut phases = Vec::new();
    let t = Instant::now();
    let media = crate::media::run(&MkimageArgs {
        out: work.media.clone(),
        kernel: args.kernel.clone(),
        cmdline: cmdline.clone(),
        loader: PathBuf::from(crate::media::SYSTEMD_BOOT),
        with_repo: match args.via {
            Via::Usb => args.repo.local_dir().map(Path::to_path_buf),
            _ => None,
        },
        data_mib: 8,
        trust: args.trust.clone(),
    })?;
    phases.push(Phase::timed(
        "media",
        t,
        true,
        format!(
            "initramfs {}, stick {}",
            bytes(media.initramfs.bytes),
            bytes(media.usb.bytes)
        ),
    ));
    let sizes: Vec<u64> = snap.manifest.disks().map(|(_, d)| d.size).collect();
    let disks = prepare_disks(&work, &sizes)?;
    let qemu = Qemu {
        accel: args.accel.clone(),
        vars: work.vars.clone(),
        disks,
    };
    let rescue_args = qemu.rescue(args.via, &args.kernel, &media, &cmdline);
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
    let mut guest = Guest::start(&qemu.boot(), &work.dir.join("console-boot.log"), echo)?;
    let booted = guest.wait_for(&[&args.marker], args.boot_timeout);
    drop(guest);
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

/// What the journal says of a drill that ran.
fn recorded_as(s: &Summary) -> Subject {
    Subject {
        name: Some(s.name.clone()),
        snapshot: Some(s.snapshot),
        details: serde_json::json!({
            "via": s.via,
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
        via: args.via,
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
fn repository_for_guest(args: &DrillArgs) -> Result<(String, Option<Server>)> {
    match (args.via, &args.repo.location) {
        (Via::Usb, RepoLocation::Dir(_)) => Ok(("usb".into(), None)),
        (Via::Usb, _) => bail!(
            "--via usb copies the repository onto the stick: give a local repository directory"
        ),
        (_, RepoLocation::Dir(dir)) => {
            let srv = Server::start(dir)?;
            let url = format!("http://10.0.2.2:{}/", srv.port);
            Ok((url, Some(srv)))
        }
        (_, RepoLocation::S3(url)) => {
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
        (_, remote) => Ok((remote.as_seen_from_qemu_guest().to_string(), None)),
    }
}

/// A blank target disk of each of the snapshot's disks' size (disk.img, disk1.img, ...),
/// and a fresh copy of the firmware's variables shared by both boots.
fn prepare_disks(work: &Work, sizes: &[u64]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::with_capacity(sizes.len());
    for (i, &size) in sizes.iter().enumerate() {
        let path = work.disk(i);
        let _ = fs::remove_file(&path);
        File::create(&path)
            .and_then(|f| f.set_len(size))
            .with_context(|| format!("create the blank disk {}", path.display()))?;
        out.push(path);
    }
    fs::copy(OVMF_VARS, &work.vars).with_context(|| format!("copy {OVMF_VARS}"))?;
    Ok(out)
}

/// The command lines of the two guests.
struct Qemu {
    accel: String,
    vars: PathBuf,
    /// The target disks, in the snapshot's order.
    disks: Vec<PathBuf>,
}

fn s(v: &str) -> String {
    v.to_string()
}

impl Qemu {
    fn machine(&self) -> Vec<String> {
        vec![
            s("-accel"),
            self.accel.clone(),
            s("-m"),
            s("1024"),
            s("-nographic"),
            s("-no-reboot"),
            s("-machine"),
            s("q35"),
        ]
    }

    fn ovmf(&self) -> Vec<String> {
        vec![
            s("-drive"),
            format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"),
            s("-drive"),
            format!("if=pflash,format=raw,file={}", self.vars.display()),
        ]
    }

    fn target(&self) -> Vec<String> {
        self.disks
            .iter()
            .flat_map(|d| {
                [
                    s("-drive"),
                    format!("file={},format=raw,if=virtio", d.display()),
                ]
            })
            .collect()
    }

    /// The rescue booted the way `via` says, with the blank disk.
    fn rescue(
        &self,
        via: Via,
        kernel: &KernelArg,
        media: &crate::media::Summary,
        cmdline: &str,
    ) -> Vec<String> {
        let mut args = self.machine();
        match via {
            Via::Usb => {
                args.extend(self.ovmf());
                args.extend([
                    s("-drive"),
                    format!("if=none,id=stick,format=raw,file={}", media.usb.path),
                    s("-device"),
                    s("qemu-xhci"),
                    s("-device"),
                    s("usb-storage,drive=stick,removable=on"),
                    s("-net"),
                    s("none"),
                ]);
            }
            Via::Http => {
                args.extend(self.ovmf());
                args.extend([
                    s("-kernel"),
                    kernel.kernel.join("vmlinuz").display().to_string(),
                    s("-initrd"),
                    media.initramfs.path.clone(),
                    s("-append"),
                    cmdline.to_string(),
                    s("-netdev"),
                    s("user,id=n0"),
                    s("-device"),
                    s("virtio-net-pci,netdev=n0"),
                ]);
            }
            Via::Pxe => {
                // SeaBIOS and QEMU's iPXE option ROM: DHCP and TFTP from user-mode networking.
                args.extend([
                    s("-boot"),
                    s("n"),
                    s("-netdev"),
                    format!("user,id=n0,tftp={},bootfile=boot.ipxe", media.pxe),
                    s("-device"),
                    s("virtio-net-pci,netdev=n0"),
                ]);
            }
        }
        args.extend(self.target());
        args
    }

    /// The restored disk booted under OVMF, with no network.
    fn boot(&self) -> Vec<String> {
        let mut args = self.machine();
        args.extend(self.ovmf());
        args.extend(self.target());
        args.extend([s("-net"), s("none")]);
        args
    }
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
