//! The console menu, when the kernel command line gives no orders: pick a repository, a
//! snapshot and a target disk, and confirm by typing the target's serial.

use std::io::{BufRead, Write};

use anyhow::{bail, Context, Result};

use super::cmdline::RescueRepo;
use crate::disk::detect::Disk;
use crate::location::RepoLocation;
use crate::repo::{RepoSpec, Repository, SnapshotId};
use crate::ui::bytes;

pub struct Choice {
    pub repo: RepoLocation,
    /// The master key of an encrypted repository, unlocked to list its snapshots.
    pub key: Option<crate::crypt::SharedKey>,
    pub snapshot: SnapshotId,
    /// One per disk of the snapshot, in order.
    pub targets: Vec<Disk>,
    pub verify: bool,
}

fn ask(prompt: &str) -> Result<String> {
    print!("{prompt}");
    std::io::stdout().flush().ok();
    let mut line = String::new();
    let n = std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("read the console")?;
    if n == 0 {
        bail!("the console closed");
    }
    Ok(line.trim().to_string())
}

fn describe(d: &Disk) -> String {
    format!(
        "{} {} {} serial {}",
        d.path,
        bytes(d.size),
        d.model.as_deref().unwrap_or("-"),
        d.serial.as_deref().unwrap_or("-")
    )
}

/// Ask until the operator has chosen (or typed `q`, which is an error).
pub fn run(
    default_repo: Option<&RescueRepo>,
    excluded: &[String],
    prepare_repo: &dyn Fn(&RescueRepo) -> Result<RepoLocation>,
) -> Result<Choice> {
    println!("\n== Lifeboat rescue menu (q to leave)");
    let all = crate::disk::detect::list_disks()?;
    println!("disks:");
    for d in &all {
        let mark = if excluded.contains(&d.path) {
            "  (boot medium or repository: never a target)"
        } else {
            ""
        };
        println!("  {}{mark}", describe(d));
    }
    let repo = ask_repository(default_repo, prepare_repo)?;
    let mut spec = RepoSpec::at(repo.clone());
    super::unlock_repository(&mut spec, None)?;
    let snap = pick_snapshot(&spec)?;
    let mut targets: Vec<Disk> = Vec::with_capacity(snap.disk_sizes.len());
    for (i, &size) in snap.disk_sizes.iter().enumerate() {
        let mut not = excluded.to_vec();
        not.extend(targets.iter().map(|t| t.path.clone()));
        if snap.disk_sizes.len() > 1 {
            println!("disk {i} of the snapshot ({}):", bytes(size));
        }
        let target = pick_target(&not, size)?;
        confirm(&target, &snap)?;
        targets.push(target);
    }
    let verify = ask("read back and verify afterwards? [Y/n]: ")?;
    Ok(Choice {
        repo,
        key: spec.key,
        snapshot: snap.id,
        targets,
        verify: !verify.eq_ignore_ascii_case("n"),
    })
}

/// Ask for a line; `q` leaves the menu.
fn ask_or_leave(prompt: &str) -> Result<String> {
    let a = ask(prompt)?;
    if a == "q" {
        bail!("left the menu");
    }
    Ok(a)
}

/// A number from 1 to `n`, asked until one is given.
fn pick(what: &str, n: usize) -> Result<usize> {
    loop {
        match ask_or_leave(&format!("{what} [1-{n}]: "))?.parse::<usize>() {
            Ok(k) if (1..=n).contains(&k) => return Ok(k - 1),
            _ => println!("type a number from the list"),
        }
    }
}

fn ask_repository(
    default_repo: Option<&RescueRepo>,
    prepare_repo: &dyn Fn(&RescueRepo) -> Result<RepoLocation>,
) -> Result<RepoLocation> {
    let dflt = default_repo.cloned().unwrap_or(RescueRepo::Usb);
    loop {
        let r = ask_or_leave(&format!(
            "repository (usb, or http(s)://HOST:PORT/) [{dflt}]: "
        ))?;
        let chosen = if r.is_empty() {
            Ok(dflt.clone())
        } else {
            r.parse::<RescueRepo>()
        };
        match chosen.and_then(|c| prepare_repo(&c)) {
            Ok(loc) => return Ok(loc),
            Err(e) => println!("cannot use {r}: {e:#}"),
        }
    }
}

/// A snapshot as the menu offers it (a damaged one with its id alone).
struct Offered {
    id: SnapshotId,
    name: String,
    time: String,
    size: u64,
    /// Each disk's size.
    disk_sizes: Vec<u64>,
}

/// Every snapshot the repository holds, oldest first. The restore chosen from the list
/// checks the signature against the rescue's keys (`rescue_trust`).
fn offered(spec: &RepoSpec) -> Result<Vec<Offered>> {
    let repo = Repository::open(spec)?;
    Ok(repo
        .snapshots()?
        .into_iter()
        .map(|(id, s)| match s {
            Ok(s) => Offered {
                id,
                name: s.manifest.name.clone(),
                time: s.manifest.time.clone(),
                size: s.manifest.total_size(),
                disk_sizes: s.manifest.disks().map(|(_, d)| d.size).collect(),
            },
            Err(_) => Offered {
                id,
                name: String::new(),
                time: String::new(),
                size: 0,
                disk_sizes: Vec::new(),
            },
        })
        .collect())
}

fn pick_snapshot(repo: &RepoSpec) -> Result<Offered> {
    let list = offered(repo)?;
    if list.is_empty() {
        bail!("the repository has no snapshots");
    }
    println!("snapshots:");
    for (i, s) in list.iter().enumerate() {
        println!(
            "  {:>2}) {} {} {} {}",
            i + 1,
            s.id.short(),
            s.name,
            s.time,
            bytes(s.size)
        );
    }
    let k = pick("snapshot", list.len())?;
    Ok(list.into_iter().nth(k).expect("picked from the list"))
}

fn pick_target(excluded: &[String], size: u64) -> Result<Disk> {
    let disks = crate::restore::targets::candidates(excluded)?;
    if disks.is_empty() {
        bail!("no disk can be a target (the boot medium and the repository's disk never are)");
    }
    println!("targets:");
    for (i, d) in disks.iter().enumerate() {
        let fit = if d.size >= size { "" } else { "  (too small)" };
        println!("  {:>2}) {}{fit}", i + 1, describe(d));
    }
    let k = pick("target", disks.len())?;
    Ok(disks[k].clone())
}

/// The operator types the target's serial (its name when it has none).
fn confirm(target: &Disk, snap: &Offered) -> Result<()> {
    let word = target.serial.clone().unwrap_or_else(|| target.name.clone());
    println!(
        "Everything on {} will be replaced by snapshot {} ({}).",
        describe(target),
        snap.id.short(),
        snap.name
    );
    let typed = ask(&format!(
        "type the target's {} ({word}) to confirm: ",
        if target.serial.is_some() {
            "serial"
        } else {
            "name"
        }
    ))?;
    if typed != word {
        bail!("not confirmed: nothing was written");
    }
    Ok(())
}
