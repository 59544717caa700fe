//! Lifeboat as PID 1 of the rescue initramfs: mount the early filesystems, load the
//! modules, wait for disks, get an address by DHCP when the repository is on the network,
//! follow the orders of the kernel command line (or the console menu), restore, make the
//! disk bootable, report, and reboot or power off. On failure it stays on the console
//! with the error; it never reboots into a half-restored disk.

pub mod cmdline;
pub mod dhcp;
mod hardware;
pub mod menu;
pub mod modules;
pub mod mounts;
pub mod netconf;
pub mod report;
pub mod stick;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::trust::TrustArgs;
use anyhow::{bail, Context, Result};

use crate::capture::CaptureArgs;
use crate::crypt::Passphrase;
use crate::location::{DiskLocation, RepoLocation};
use crate::repo::keyring;
use crate::repo::object::ReportName;
use crate::repo::{Object, RepoSpec};
use crate::restore::targets::{self, Machine, Target, TargetSpec};
use crate::restore::RestoreArgs;
use crate::ui::{bytes, Ui};
use cmdline::{Action, After, RescueRepo, S3Access};
use report::{Outcome, PhaseTime};
pub use report::{Report, FAILED_PREFIX, REPORT_PREFIX};

/// Output on the serial console: plain progress lines, which drills read.
const CONSOLE: Ui = Ui {
    json: false,
    quiet: false,
    plain: true,
};

struct Phases {
    last: Instant,
}

impl Phases {
    fn mark(&mut self, report: &mut Report, name: &str) {
        let now = Instant::now();
        report
            .phases
            .push(PhaseTime(name.into(), (now - self.last).as_secs_f64()));
        self.last = now;
        println!(
            "lifeboat: {name} done ({:.1} s)",
            report.phases.last().map(|p| p.1).unwrap_or(0.0)
        );
    }
}

/// Whether this process is the initramfs's init.
pub fn is_init() -> bool {
    std::process::id() == 1
}

pub fn main() -> ! {
    let _ = env_logger::Builder::new()
        .filter_level(log::LevelFilter::Info)
        .format_timestamp(None)
        .try_init();
    let start = Instant::now();
    let mut report = Report {
        lifeboat_version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    };
    println!("\nlifeboat {} rescue starting", report.lifeboat_version);
    let outcome = run(&mut report, start);
    report.duration_s = start.elapsed().as_secs_f64();
    match outcome {
        Ok(after) => {
            report.result = Some(Outcome::Ok);
            publish(&mut report);
            println!(
                "lifeboat: finished; {}",
                match after {
                    After::Reboot => "rebooting",
                    After::Poweroff => "powering off",
                    After::Stay => "staying on the console",
                }
            );
            finish(after)
        }
        Err(e) => {
            report.result = Some(Outcome::Failed);
            report.error = Some(format!("{e:#}"));
            publish(&mut report);
            println!("{FAILED_PREFIX}{e:#}");
            println!("lifeboat: the restore did not complete; the target was not made bootable. Nothing will reboot by itself.");
            stay()
        }
    }
}

/// Print the report on the console and write it into a local repository when writable.
fn publish(report: &mut Report) {
    if let Some(RepoLocation::Dir(dir)) = report.repo.clone() {
        // Through the repository's own store: its temporary files, durability and clean-up.
        let key = Object::Report(ReportName::new(chrono::Utc::now(), report.succeeded()));
        report.report_file = Some(dir.join(key.key()).display().to_string());
        let written = serde_json::to_vec_pretty(&*report)
            .context("encode the report")
            .and_then(|json| {
                // No key needed (a report is written in the clear, even into an
                // encrypted repository: see the threat model).
                let r = crate::repo::Repository::open_without_key(&RepoSpec::at(
                    RepoLocation::Dir(dir),
                ))?;
                r.store().put(&key, &json)?;
                r.store().flush()
            });
        if let Err(e) = written {
            report.report_file = None;
            println!("lifeboat: could not write the report into the repository: {e:#}");
        }
    }
    match serde_json::to_string(&*report) {
        Ok(j) => println!("{REPORT_PREFIX}{j}"),
        Err(e) => println!("lifeboat: report: {e}"),
    }
}

fn finish(after: After) -> ! {
    nix::unistd::sync();
    let how = match after {
        After::Reboot => nix::sys::reboot::RebootMode::RB_AUTOBOOT,
        After::Poweroff => nix::sys::reboot::RebootMode::RB_POWER_OFF,
        After::Stay => stay(),
    };
    let e = nix::sys::reboot::reboot(how);
    println!("lifeboat: reboot failed: {e:?}");
    stay()
}

/// The console after the work: commands until the operator powers off or reboots.
fn stay() -> ! {
    let stdin = std::io::stdin();
    loop {
        print!("lifeboat> (menu, disks, reboot, poweroff) ");
        std::io::stdout().flush().ok();
        let mut line = String::new();
        match stdin.lock().read_line(&mut line) {
            Ok(0) | Err(_) => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
            Ok(_) => {}
        }
        match line.trim() {
            "reboot" => finish(After::Reboot),
            "poweroff" => finish(After::Poweroff),
            "disks" => match crate::disk::detect::list_disks() {
                Ok(d) => d
                    .iter()
                    .for_each(|d| println!("{} {} {:?}", d.path, bytes(d.size), d.serial)),
                Err(e) => println!("{e:#}"),
            },
            "menu" => {
                let mut report = Report::default();
                match menu_restore(&mut report, None, &S3Access::default(), Instant::now()) {
                    Ok(()) => {
                        report.result = Some(Outcome::Ok);
                        publish(&mut report);
                    }
                    Err(e) => println!("{FAILED_PREFIX}{e:#}"),
                }
            }
            "" => {}
            other => println!("unknown command {other}"),
        }
    }
}

/// Wait until the set of disks stops changing (at least `min`, at most `max`), and, when
/// `want` says so, until it holds the rescue stick.
fn wait_for_disks(
    min: Duration,
    max: Duration,
    want_stick: bool,
) -> Vec<crate::disk::detect::Disk> {
    let start = Instant::now();
    let mut last = Vec::new();
    let mut stable_since = Instant::now();
    loop {
        let now = crate::disk::detect::list_disks().unwrap_or_default();
        let names: Vec<String> = now
            .iter()
            .map(|d| format!("{}{}", d.name, d.partitions.len()))
            .collect();
        if names != last {
            last = names;
            stable_since = Instant::now();
        }
        let stick_ok = !want_stick || stick::find_stick(&now).is_some();
        let settled =
            stable_since.elapsed() >= Duration::from_millis(1500) && start.elapsed() >= min;
        if (settled && stick_ok) || start.elapsed() >= max {
            return now;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn run(report: &mut Report, start: Instant) -> Result<After> {
    let mut ph = Phases { last: start };
    mounts::early()?;
    report.kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let loaded = modules::load_all()?;
    for f in &loaded.failed {
        log::debug!("module {f}");
    }
    println!(
        "lifeboat: {} modules loaded at start, {} drivers for the devices found ({}), {} not loaded",
        loaded.always,
        loaded.drivers.len(),
        loaded.drivers.keys().cloned().collect::<Vec<_>>().join(" "),
        loaded.failed.len()
    );
    report.modules = Some(loaded);
    ph.mark(report, "modules");
    let cmd = std::fs::read_to_string("/proc/cmdline").context("read /proc/cmdline")?;
    let orders = cmdline::parse(&cmd)?;
    report.orders = Some(orders.clone());
    report.action = Some(orders.action);
    if orders.action == Action::Poweroff {
        return Ok(After::Poweroff);
    }
    let want_stick = orders.repo == Some(RescueRepo::Usb) || orders.action == Action::Menu;
    let disks = wait_for_disks(
        Duration::from_secs(2),
        Duration::from_secs(if want_stick { 30 } else { 15 }),
        want_stick && orders.action != Action::Menu,
    );
    println!(
        "lifeboat: disks: {}",
        disks
            .iter()
            .map(|d| format!("{} ({})", d.path, bytes(d.size)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    ph.mark(report, "disks");
    hardware::diagnose(report)?;
    ph.mark(report, "diagnose");
    match orders.action {
        Action::Diagnose => Ok(orders.after),
        Action::Menu => {
            menu_restore(report, orders.repo.as_ref(), &orders.s3, start)?;
            Ok(After::Reboot)
        }
        Action::Restore | Action::Capture => {
            let mut excluded = Vec::new();
            let wanted = orders.repo.as_ref().expect("validated by cmdline::parse");
            let repo = prepare_repo(report, wanted, &mut excluded)?;
            ph.mark(
                report,
                if repo.is_network() {
                    "network"
                } else {
                    "repository"
                },
            );
            let token = match orders.action {
                Action::Capture => orders.token.as_deref(),
                _ => None,
            };
            let spec = repo_spec(
                repo,
                token,
                &orders.s3,
                orders.password_file.as_deref(),
                None,
            )?;
            let machine = Machine {
                excluded: &excluded,
                disks_only: true,
            };
            if orders.action == Action::Capture {
                capture_ordered(report, &mut ph, &orders, spec, machine)?;
            } else {
                restore_ordered(report, &mut ph, &orders, spec, machine)?;
            }
            Ok(orders.after)
        }
        Action::Poweroff => Ok(After::Poweroff),
    }
}

/// `lifeboat.action=capture`: the disks `lifeboat.target=` names, into the repository.
fn capture_ordered(
    report: &mut Report,
    ph: &mut Phases,
    orders: &cmdline::Orders,
    spec: RepoSpec,
    machine: Machine,
) -> Result<()> {
    let wanted: Vec<(usize, Target)> = orders
        .target
        .clone()
        .expect("validated by cmdline::parse")
        .into_iter()
        .enumerate()
        .collect();
    let disks = chosen_disks(targets::resolve(&wanted, None, machine)?);
    announce_targets(report, &disks);
    let first = &disks[0];
    let args = CaptureArgs {
        repo: spec,
        source: disks
            .iter()
            .map(|d| DiskLocation::Path(PathBuf::from(&d.path)))
            .collect(),
        name: orders
            .name
            .clone()
            .unwrap_or_else(|| first.serial.clone().unwrap_or_else(|| first.name.clone())),
        sector_size: None,
        full: false,
        crash_consistent: false,
        live: false,
        pre_hook: None,
        post_hook: None,
        luks_keyfile: Vec::new(),
        level: None,
        sign: None,
        sign_password_file: None,
        time: None,
    };
    report.capture = Some(crate::capture::run(&args, &CONSOLE)?);
    ph.mark(report, "capture");
    Ok(())
}

/// `lifeboat.action=restore`: the snapshot onto the disks `lifeboat.target=` names.
fn restore_ordered(
    report: &mut Report,
    ph: &mut Phases,
    orders: &cmdline::Orders,
    spec: RepoSpec,
    machine: Machine,
) -> Result<()> {
    let specs = orders.target.clone().expect("validated by cmdline::parse");
    let mut args = RestoreArgs {
        repo: spec,
        trust: rescue_trust(&orders.trust, orders.max_age.as_deref())?,
        snapshot: orders.snapshot.clone().unwrap_or_default(),
        target: Vec::new(),
        yes: true,
        force: orders.force,
        dry_run: false,
        partition: Vec::new(),
        verify: orders.verify,
        seed: None,
        // A blank disk holds nothing worth reading first.
        no_reuse: specs.iter().all(|s| *s == Target::LargestEmpty),
        zero_free: false,
        grow: false,
        scratch: None,
    };
    // `auto` places the snapshot's disks by what it recorded of them.
    let recorded = match specs.contains(&Target::Auto) {
        true => Some(recorded_disks(&args).context("nothing was written")?),
        false => None,
    };
    let specs = match (specs.as_slice(), &recorded) {
        ([Target::Auto], Some(r)) => vec![Target::Auto; r.len()],
        _ => specs,
    };
    let wanted: Vec<(usize, Target)> = specs.into_iter().enumerate().collect();
    let chosen = targets::resolve(&wanted, recorded.as_deref(), machine)
        .map_err(|e| hardware::with_problems(e, report))
        .context("nothing was written")?;
    let disks = chosen_disks(chosen);
    announce_targets(report, &disks);
    args.target = disks.iter().map(|d| TargetSpec::path(&d.path)).collect();
    restore_onto(report, ph, &args)
}

/// The machine's disks chosen (the rescue looks every target up among them).
fn chosen_disks(chosen: Vec<targets::Chosen>) -> Vec<crate::disk::detect::Disk> {
    chosen.into_iter().filter_map(|c| c.disk).collect()
}

/// Say which disks the rescue is about to use, and put them in the report.
fn announce_targets(report: &mut Report, disks: &[crate::disk::detect::Disk]) {
    for (i, disk) in disks.iter().enumerate() {
        println!(
            "lifeboat: target {}{} ({}, serial {})",
            if disks.len() > 1 {
                format!("of disk {i}: ")
            } else {
                String::new()
            },
            disk.path,
            bytes(disk.size),
            disk.serial.as_deref().unwrap_or("-")
        );
    }
    report.target = disks.first().cloned();
    report.targets = disks.to_vec();
}

/// What the snapshot to restore recorded of each of its disks (to place them by).
fn recorded_disks(args: &RestoreArgs) -> Result<Vec<(crate::repo::manifest::SourceInfo, u64)>> {
    let repo = crate::repo::Repository::open(&args.repo)?;
    let policy = crate::trust::Policy::new(&args.trust, &repo)?;
    let (snap, _) = policy.resolve(&repo, &args.snapshot)?;
    Ok(snap
        .manifest
        .disks()
        .map(|(s, d)| (s.clone(), d.size))
        .collect())
}

/// The line the rescue prints when it asks for an encrypted repository's passphrase on
/// its console (a drill answers it).
pub const PASSPHRASE_PROMPT: &str = "lifeboat: the repository is encrypted; type its passphrase";

/// Unlock an encrypted repository once, for everything this rescue does with it: with
/// `lifeboat.password-file=`, or asked on the console (three tries). A plain repository
/// is left as it is.
pub(crate) fn unlock_repository(spec: &mut RepoSpec, password_file: Option<&Path>) -> Result<()> {
    if spec.key.is_some() {
        return Ok(());
    }
    let repo = crate::repo::Repository::open_without_key(spec)?;
    if !repo.is_encrypted() {
        return Ok(());
    }
    let store = &**repo.store();
    let unlocked = if let Some(f) = password_file {
        let pass = crate::crypt::passphrase::get(Some(f), "passphrase", "")?;
        keyring::unlock(store, &repo.config, &repo.display, &Passphrase::new(pass))?
    } else {
        let mut tries = 0;
        loop {
            tries += 1;
            let pass = crate::crypt::passphrase::ask_announced(
                Some(&format!("{PASSPHRASE_PROMPT} (try {tries} of 3)")),
                "passphrase",
            )?;
            match keyring::unlock(store, &repo.config, &repo.display, &Passphrase::new(pass)) {
                Ok(u) => break u,
                Err(e) if tries < 3 && e.downcast_ref::<keyring::UnlockError>().is_some() => {
                    println!("lifeboat: {e:#}");
                }
                Err(e) => return Err(e),
            }
        }
    };
    println!("lifeboat: repository unlocked (key file {})", unlocked.1);
    spec.key = Some(crate::crypt::SharedKey(std::sync::Arc::new(unlocked.0)));
    Ok(())
}

/// The repository as restore and capture take it: an S3 endpoint and key from the
/// orders; a push token goes into a file; an encrypted one unlocked.
fn repo_spec(
    location: RepoLocation,
    token: Option<&str>,
    s3: &S3Access,
    password_file: Option<&Path>,
    key: Option<crate::crypt::SharedKey>,
) -> Result<RepoSpec> {
    let token_file = match token {
        Some(t) => {
            let p = Path::new("/run/lifeboat-token");
            std::fs::write(p, t).context("write the token")?;
            Some(p.to_path_buf())
        }
        None => None,
    };
    let mut spec = RepoSpec {
        token_file,
        s3_endpoint: s3.endpoint.clone(),
        s3_keys: s3.keys(),
        key,
        ..RepoSpec::at(location)
    };
    unlock_repository(&mut spec, password_file)?;
    Ok(spec)
}

/// Make a repository reachable: mount the stick's data partition for `usb`, or get an
/// address for a network repository. Disks that hold it join `excluded`.
fn prepare_repo(
    report: &mut Report,
    repo: &RescueRepo,
    excluded: &mut Vec<String>,
) -> Result<RepoLocation> {
    let disks = crate::disk::detect::list_disks()?;
    if let Some((stick, _)) = stick::find_stick(&disks) {
        excluded.push(stick.path.clone());
    }
    let location = match repo {
        RescueRepo::Usb => {
            let Some((stick, part)) = stick::find_stick(&disks) else {
                bail!(
                    "lifeboat.repo=usb, but no disk has a partition named {}",
                    crate::media::usb::DATA_PARTITION_NAME
                );
            };
            let mnt = "/mnt/usb";
            if !Path::new(mnt).join("repo").exists() {
                mounts::vfat(&part, mnt)?;
            }
            println!("lifeboat: repository on {} ({part})", stick.path);
            RepoLocation::Dir(Path::new(mnt).join("repo"))
        }
        RescueRepo::Cdrom => stick::cdrom_repo(report, excluded)?,
        RescueRepo::Network(location) => {
            if report.network.is_none() {
                let net = report
                    .orders
                    .as_ref()
                    .map(|o| o.net.clone())
                    .unwrap_or_default();
                let lease = netconf::bring_up(&net)?;
                println!(
                    "lifeboat: {} has {} by {} (router {:?}{})",
                    lease.interface,
                    lease.address,
                    lease.how,
                    lease.router,
                    match lease.how.as_str() {
                        "dhcp" => format!(", DHCP server {}", lease.server),
                        _ => String::new(),
                    }
                );
                report.network = Some(lease);
            }
            location.clone()
        }
    };
    report.repo = Some(location.clone());
    if let Some(dir) = location.local_dir() {
        exclude_disk_holding(dir, &disks, excluded)?;
    }
    Ok(location)
}

/// A local repository's disk is never a target either.
fn exclude_disk_holding(
    dir: &Path,
    disks: &[crate::disk::detect::Disk],
    excluded: &mut Vec<String>,
) -> Result<()> {
    for (dev, mounts) in crate::disk::detect::mounts()?.iter() {
        if mounts
            .iter()
            .any(|m| dir.starts_with(&m.point) && m.point != "/")
        {
            for d in disks {
                if d.partitions.iter().any(|p| &p.dev == dev) && !excluded.contains(&d.path) {
                    excluded.push(d.path.clone());
                }
            }
        }
    }
    Ok(())
}

/// What this rescue's restores require of a snapshot: the keys baked into it
/// (`mkimage --trust`) if there are any, else those on its command line
/// (`lifeboat.trust=`), and the maximum age; said on the console.
fn rescue_trust(
    orders_trust: &[crate::crypt::signing::PublicKey],
    max_age: Option<&str>,
) -> Result<TrustArgs> {
    let baked =
        match std::fs::read_to_string(Path::new("/").join(crate::media::initramfs::TRUSTED_KEYS)) {
            Ok(text) => text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| l.parse::<crate::crypt::signing::PublicKey>())
                .collect::<Result<Vec<_>>>()
                .context("read the keys baked into this rescue")?,
            Err(_) => Vec::new(),
        };
    let keys =
        if !baked.is_empty() {
            if !orders_trust.is_empty() {
                println!("lifeboat: trust: lifeboat.trust= ignored: this rescue has keys baked in");
            }
            println!(
            "lifeboat: trust: restoring only snapshots signed by key {} (baked into this rescue)",
            baked.iter().map(|k| k.id().to_string()).collect::<Vec<_>>().join(", ")
        );
            baked
        } else if !orders_trust.is_empty() {
            println!(
                "lifeboat: trust: restoring only snapshots signed by key {} (lifeboat.trust=)",
                orders_trust
                    .iter()
                    .map(|k| k.id().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            orders_trust.to_vec()
        } else {
            println!("lifeboat: trust: no key given: snapshots are not checked for signatures");
            Vec::new()
        };
    Ok(TrustArgs {
        trust: keys.iter().map(|k| k.to_string()).collect(),
        max_age: max_age
            .map(crate::time::parse_duration)
            .transpose()
            .map_err(|e| anyhow::anyhow!("lifeboat.max-age: {e}"))?,
        ..TrustArgs::default()
    })
}

fn restore_onto(report: &mut Report, ph: &mut Phases, args: &RestoreArgs) -> Result<()> {
    let targets: Vec<&Path> = args
        .target
        .iter()
        .filter_map(|t| match &t.target {
            Target::Path(p) => Some(p.as_path()),
            _ => None,
        })
        .collect();
    println!(
        "lifeboat: restoring {} from {} onto {}",
        args.snapshot,
        args.repo.location,
        targets
            .iter()
            .map(|t| t.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let s = crate::restore::run(args, &CONSOLE)?;
    let name = s.name.clone();
    report.restore = Some(s);
    ph.mark(
        report,
        if args.verify {
            "restore+verify"
        } else {
            "restore"
        },
    );
    // The bootloader of the first disk that has an EFI system partition.
    let efivars = mounts::efivars();
    let mut b = None;
    for t in &targets {
        let r = crate::boot::reinstall(t, efivars, &format!("{name} (restored by Lifeboat)"))?;
        let found = r.esp_partition.is_some();
        if b.is_none() || found {
            b = Some(r);
        }
        if found {
            break;
        }
    }
    let mut b = b.context("no target")?;
    if !Path::new("/sys/firmware/efi").exists() {
        b.nvram = "not used: BIOS firmware has no boot entries to write (the MBR's boot code and any BIOS boot partition came back with the snapshot)".into();
    }
    println!(
        "lifeboat: bootloader: fallback {}; NVRAM {}",
        b.fallback, b.nvram
    );
    report.bootloader = Some(b);
    nix::unistd::sync();
    ph.mark(report, "bootloader");
    Ok(())
}

fn menu_restore(
    report: &mut Report,
    default_repo: Option<&RescueRepo>,
    s3: &S3Access,
    start: Instant,
) -> Result<()> {
    let mut ph = Phases { last: start };
    let mut excluded = Vec::new();
    let disks = crate::disk::detect::list_disks()?;
    if let Some((stick, _)) = stick::find_stick(&disks) {
        excluded.push(stick.path);
    }
    let report_cell = std::cell::RefCell::new(std::mem::take(report));
    let excluded_cell = std::cell::RefCell::new(excluded.clone());
    let choice = menu::run(default_repo, &excluded, &|r| {
        prepare_repo(
            &mut report_cell.borrow_mut(),
            r,
            &mut excluded_cell.borrow_mut(),
        )
    });
    *report = report_cell.into_inner();
    let choice = choice?;
    let excluded = excluded_cell.into_inner();
    if let Some(t) = choice.targets.iter().find(|t| excluded.contains(&t.path)) {
        bail!(
            "{} holds the repository or is the boot medium: refusing it",
            t.path
        );
    }
    report.target = choice.targets.first().cloned();
    report.targets = choice.targets.clone();
    report.action = Some(Action::Restore);
    let args = RestoreArgs {
        repo: repo_spec(choice.repo, None, s3, None, choice.key)?,
        trust: rescue_trust(&[], None)?,
        snapshot: choice.snapshot.to_string(),
        target: choice
            .targets
            .iter()
            .map(|t| TargetSpec::path(&t.path))
            .collect(),
        yes: true,
        // The menu confirms by the target's serial; a failing disk is refused there.
        force: false,
        dry_run: false,
        partition: Vec::new(),
        verify: choice.verify,
        seed: None,
        no_reuse: false,
        zero_free: false,
        grow: false,
        scratch: None,
    };
    restore_onto(report, &mut ph, &args)
}
