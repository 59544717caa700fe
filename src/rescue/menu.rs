//! The console menu, when the kernel command line gives no orders: pick a repository, a
//! snapshot and a target disk, and confirm by typing the target's serial.

use std::io::{BufRead, Write};

use anyhow::{bail, Context, Result};

use super::target;
use crate::disk::detect::Disk;
use crate::report::bytes;

pub struct Choice {
    pub repo: String,
    pub snapshot: String,
    pub target: Disk,
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
    default_repo: Option<&str>,
    excluded: &[String],
    prepare_repo: &dyn Fn(&str) -> Result<String>,
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
    let repo = loop {
        let dflt = default_repo.unwrap_or("usb");
        let r = ask(&format!(
            "repository (usb, or http(s)://HOST:PORT/) [{dflt}]: "
        ))?;
        if r == "q" {
            bail!("left the menu");
        }
        let r = if r.is_empty() { dflt.to_string() } else { r };
        match prepare_repo(&r) {
            Ok(loc) => break loc,
            Err(e) => println!("cannot use {r}: {e:#}"),
        }
    };
    let spec = crate::repo::RepoSpec {
        location: repo.clone(),
        ..Default::default()
    };
    let list = crate::snapshots::list(&spec)?;
    if list.is_empty() {
        bail!("the repository has no snapshots");
    }
    println!("snapshots:");
    for (i, s) in list.iter().enumerate() {
        println!(
            "  {:>2}) {} {} {} {}",
            i + 1,
            &s.id[..8],
            s.name,
            s.time,
            bytes(s.size)
        );
    }
    let snap = loop {
        let a = ask(&format!("snapshot [1-{}]: ", list.len()))?;
        if a == "q" {
            bail!("left the menu");
        }
        match a.parse::<usize>() {
            Ok(n) if (1..=list.len()).contains(&n) => break &list[n - 1],
            _ => println!("type a number from the list"),
        }
    };
    let disks = target::candidates(excluded)?;
    if disks.is_empty() {
        bail!("no disk can be a target (the boot medium and the repository's disk never are)");
    }
    println!("targets:");
    for (i, d) in disks.iter().enumerate() {
        let fit = if d.size >= snap.size {
            ""
        } else {
            "  (too small)"
        };
        println!("  {:>2}) {}{fit}", i + 1, describe(d));
    }
    let target = loop {
        let a = ask(&format!("target [1-{}]: ", disks.len()))?;
        if a == "q" {
            bail!("left the menu");
        }
        match a.parse::<usize>() {
            Ok(n) if (1..=disks.len()).contains(&n) => break disks[n - 1].clone(),
            _ => println!("type a number from the list"),
        }
    };
    let word = target.serial.clone().unwrap_or_else(|| target.name.clone());
    println!(
        "Everything on {} will be replaced by snapshot {} ({}).",
        describe(&target),
        &snap.id[..8],
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
    let verify = ask("read back and verify afterwards? [Y/n]: ")?;
    Ok(Choice {
        repo,
        snapshot: snap.id.clone(),
        target,
        verify: !verify.eq_ignore_ascii_case("n"),
    })
}
