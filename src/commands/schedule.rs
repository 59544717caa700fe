//! `lifeboat schedule`: systemd units for one machine's backups, on the conventions its
//! operators already have: a capture (then forget by the policy) on a timer, a weekly
//! check of a rotating share of the data, and a weekly drill of the newest snapshot.
//! It writes the units and prints what it wrote; enabling them is `systemctl enable
//! --now` of the timers it names.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;

use crate::ui::Outcome;

#[derive(Debug, Clone, Args)]
pub struct ScheduleArgs {
    /// The snapshot name (default: this host's name, up to its first dot).
    #[arg(long, default_value_t = crate::repo::manifest::default_name(), value_parser = crate::repo::manifest::parse_name)]
    pub name: String,
    /// The disk to capture.
    #[arg(long, value_name = "DISK")]
    pub source: String,
    /// The repository, as the units will give it (directory, URL or s3://).
    #[arg(long, env = "LIFEBOAT_REPO", value_name = "DIR_OR_URL")]
    pub repo: String,
    /// How often to capture: a systemd calendar expression (hourly, daily, weekly, or
    /// e.g. "*-*-* 02:30").
    #[arg(long, default_value = "daily")]
    pub every: String,
    /// The retention policy forget applies after each capture (restic's flags).
    #[arg(
        long,
        default_value = "--keep-daily 7 --keep-weekly 5 --keep-monthly 12"
    )]
    pub policy: String,
    /// The share of the data the weekly check reads.
    #[arg(long, default_value = "15%")]
    pub check_subset: String,
    /// Where to write the units.
    #[arg(long, default_value = "/etc/systemd/system")]
    pub dir: PathBuf,
}

#[derive(Debug, Serialize)]
pub struct Written {
    pub units: Vec<PathBuf>,
    pub timers: Vec<String>,
}

impl Outcome for Written {
    fn print(&self) {
        for u in &self.units {
            crate::outln!("wrote {}", u.display());
        }
        crate::outln!(
            "enable them with: systemctl daemon-reload && systemctl enable --now {}",
            self.timers.join(" ")
        );
        crate::outln!("credentials and the passphrase (AWS_*, LIFEBOAT_PASSWORD_FILE, LIFEBOAT_TOKEN_FILE) go in /etc/lifeboat/lifeboat.env");
    }
}

/// An argument quoted for an ExecStart= line (`%` doubled: systemd's specifiers).
fn quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c))
    {
        return arg.replace('%', "%%");
    }
    format!(
        "\"{}\"",
        arg.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('%', "%%")
    )
}

fn service(description: &str, exec: &[Vec<String>]) -> String {
    let mut s = format!(
        "[Unit]\nDescription={description}\nWants=network-online.target\nAfter=network-online.target\n\n[Service]\nType=oneshot\nEnvironmentFile=-/etc/lifeboat/lifeboat.env\n"
    );
    for (i, cmd) in exec.iter().enumerate() {
        let line: Vec<String> = cmd.iter().map(|a| quote(a)).collect();
        let key = if i == 0 { "ExecStart" } else { "ExecStartPost" };
        s.push_str(&format!("{key}={}\n", line.join(" ")));
    }
    s
}

fn timer(description: &str, calendar: &str) -> String {
    format!(
        "[Unit]\nDescription={description}\n\n[Timer]\nOnCalendar={calendar}\nPersistent=true\nRandomizedDelaySec=15min\n\n[Install]\nWantedBy=timers.target\n"
    )
}

fn write(dir: &Path, name: &str, text: &str, out: &mut Vec<PathBuf>) -> Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    out.push(path);
    Ok(())
}

pub fn run(args: &ScheduleArgs) -> Result<Written> {
    // A unit name part too: the snapshot name's rule keeps to what a unit name allows.
    let name = args.name.clone();
    let exe = std::env::current_exe().context("find this program")?;
    let exe = exe.display().to_string();
    let policy: Vec<String> = args.policy.split_whitespace().map(str::to_string).collect();
    if !policy.iter().any(|a| a.starts_with("--keep-")) {
        bail!("--policy {:?}: give forget's --keep-* flags", args.policy);
    }
    std::fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    let base = |cmd: &str| {
        vec![
            exe.clone(),
            cmd.to_string(),
            "--repo".into(),
            args.repo.clone(),
        ]
    };
    let mut capture = base("capture");
    capture.extend([
        "--source".into(),
        args.source.clone(),
        "--name".into(),
        name.clone(),
    ]);
    let mut forget = base("forget");
    forget.extend(["--name".into(), name.clone()]);
    forget.extend(policy);
    let mut check = base("check");
    check.extend(["--read-data-subset".into(), args.check_subset.clone()]);
    let mut drill = base("drill");
    drill.extend(["--snapshot".into(), name.clone()]);
    let mut units = Vec::new();
    let d = &args.dir;
    write(
        d,
        &format!("lifeboat-capture-{name}.service"),
        &service(
            &format!("Lifeboat: capture {name}, then forget by the policy"),
            &[capture, forget],
        ),
        &mut units,
    )?;
    write(
        d,
        &format!("lifeboat-capture-{name}.timer"),
        &timer(
            &format!("Lifeboat: capture {name} {}", args.every),
            &args.every,
        ),
        &mut units,
    )?;
    write(
        d,
        &format!("lifeboat-check-{name}.service"),
        &service(
            &format!(
                "Lifeboat: check {} of the repository of {name}",
                args.check_subset
            ),
            &[check],
        ),
        &mut units,
    )?;
    write(
        d,
        &format!("lifeboat-check-{name}.timer"),
        &timer(&format!("Lifeboat: weekly check for {name}"), "weekly"),
        &mut units,
    )?;
    write(
        d,
        &format!("lifeboat-drill-{name}.service"),
        &service(
            &format!("Lifeboat: drill the newest snapshot of {name}"),
            &[drill],
        ),
        &mut units,
    )?;
    write(
        d,
        &format!("lifeboat-drill-{name}.timer"),
        &timer(&format!("Lifeboat: weekly drill of {name}"), "weekly"),
        &mut units,
    )?;
    Ok(Written {
        units,
        timers: ["capture", "check", "drill"]
            .iter()
            .map(|k| format!("lifeboat-{k}-{name}.timer"))
            .collect(),
    })
}
