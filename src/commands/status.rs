//! `lifeboat status`: is every machine protected? Per snapshot name: the last capture,
//! the last drill that passed, the last check; non-zero exit naming every name that is
//! overdue or whose last operation failed (for cron, systemd `OnFailure=`, Nagios).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, Utc};
use clap::Args;
use serde::Serialize;

use crate::journal::{Operation, Record, Status as Result_};
use crate::repo::{RepoSpec, Repository};
use crate::time::{age, human};
use crate::ui::Outcome;

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub repo: RepoSpec,
    /// A name whose newest snapshot is older than this is overdue.
    #[arg(long, default_value = "26h", value_parser = crate::time::parse_duration)]
    pub max_age: Duration,
    /// A name whose last passing drill is older than this (or that never passed one).
    #[arg(long, default_value = "8d", value_parser = crate::time::parse_duration)]
    pub drill_max_age: Duration,
    /// The repository's last check (any) older than this.
    #[arg(long, default_value = "8d", value_parser = crate::time::parse_duration)]
    pub check_max_age: Duration,
    /// Only these names (repeatable).
    #[arg(long)]
    pub name: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct NameStatus {
    pub name: String,
    pub last_capture: Option<String>,
    pub last_drill_passed: Option<String>,
    /// The newest operation of this name in the journal, and how it went.
    pub last_operation: Option<String>,
    pub last_operation_failed: bool,
    pub problems: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub names: Vec<NameStatus>,
    pub last_check: Option<String>,
    pub last_check_ok: Option<bool>,
    pub problems: Vec<String>,
    pub ok: bool,
}

impl Outcome for Report {
    fn print(&self) {
        println!(
            "{:<20} {:<20} {:<20} STATUS",
            "NAME", "LAST CAPTURE", "LAST GOOD DRILL"
        );
        let short = |t: &Option<String>| {
            t.as_deref()
                .map(|t| t.get(..19).unwrap_or(t))
                .unwrap_or("never")
                .to_string()
        };
        for n in &self.names {
            println!(
                "{:<20} {:<20} {:<20} {}",
                n.name,
                short(&n.last_capture),
                short(&n.last_drill_passed),
                if n.problems.is_empty() {
                    "ok".to_string()
                } else {
                    n.problems.join("; ")
                }
            );
        }
        println!(
            "last check: {}{}",
            short(&self.last_check),
            match self.last_check_ok {
                Some(false) => " (FAILED)",
                _ => "",
            }
        );
    }

    fn failure(&self) -> Option<String> {
        (!self.ok).then(|| format!("not protected: {}", self.problems.join("; ")))
    }
}

pub fn run(args: &StatusArgs) -> Result<Report> {
    let repo = Repository::open(&args.repo)?;
    let now = Utc::now();
    let records = crate::journal::read_all(&repo)?;
    let mut newest: BTreeMap<String, String> = BTreeMap::new();
    for (id, s) in repo.snapshots()? {
        match s {
            Ok(s) => {
                let e = newest.entry(s.manifest.name.clone()).or_default();
                if s.manifest.time > *e {
                    *e = s.manifest.time.clone();
                }
            }
            Err(e) => log::warn!("snapshot {}: {e:#}", id.short()),
        }
    }
    // Names the journal knows too (a name whose every capture failed has no snapshot).
    for r in &records {
        if let (Some(n), Operation::Capture) = (&r.name, r.operation) {
            newest.entry(n.clone()).or_default();
        }
    }
    let mut names = Vec::new();
    let mut problems = Vec::new();
    for (name, last_capture) in newest {
        if !args.name.is_empty() && !args.name.contains(&name) {
            continue;
        }
        let n = name_status(&name, last_capture, &records, args, now);
        problems.extend(n.problems.iter().map(|p| format!("{name}: {p}")));
        names.push(n);
    }
    let check = records
        .iter()
        .rev()
        .find(|r| r.operation == Operation::Check);
    let last_check = check.map(|r| r.time.clone());
    let last_check_ok = check.map(|r| r.status == Result_::Ok);
    match check {
        None => problems.push("the repository was never checked".into()),
        Some(r) if r.status != Result_::Ok => problems.push(format!(
            "the last check ({}) failed: {}",
            r.time,
            r.error.as_deref().unwrap_or("")
        )),
        Some(r) => {
            if let Some(a) = age(&r.time, now).filter(|a| *a > args.check_max_age) {
                problems.push(format!("the last check is {} old", human(a)));
            }
        }
    }
    Ok(Report {
        ok: problems.is_empty(),
        names,
        last_check,
        last_check_ok,
        problems,
    })
}

fn name_status(
    name: &str,
    last_capture: String,
    records: &[Record],
    args: &StatusArgs,
    now: DateTime<Utc>,
) -> NameStatus {
    let mut problems = Vec::new();
    let last_capture = (!last_capture.is_empty()).then_some(last_capture);
    match &last_capture {
        None => problems.push("no snapshot".to_string()),
        Some(t) => {
            if let Some(a) = age(t, now).filter(|a| *a > args.max_age) {
                problems.push(format!("last capture {} ago", human(a)));
            }
        }
    }
    let mine: Vec<&Record> = records
        .iter()
        .filter(|r| r.name.as_deref() == Some(name))
        .collect();
    let good_drill = mine
        .iter()
        .rev()
        .find(|r| r.operation == Operation::Drill && r.status == Result_::Ok)
        .map(|r| r.time.clone());
    match &good_drill {
        None => problems.push("never drilled successfully".into()),
        Some(t) => {
            if let Some(a) = age(t, now).filter(|a| *a > args.drill_max_age) {
                problems.push(format!("last good drill {} ago", human(a)));
            }
        }
    }
    let last = mine.iter().rev().find(|r| {
        matches!(
            r.operation,
            Operation::Capture | Operation::Drill | Operation::Restore
        )
    });
    let failed = last.is_some_and(|r| r.status != Result_::Ok);
    if let Some(r) = last.filter(|_| failed) {
        problems.push(
            format!(
                "the last {:?} ({}) failed: {}",
                r.operation,
                r.time,
                r.error.as_deref().unwrap_or("")
            )
            .to_lowercase(),
        );
    }
    NameStatus {
        name: name.to_string(),
        last_capture,
        last_drill_passed: good_drill,
        last_operation: last.map(|r| format!("{:?} {}", r.operation, r.time).to_lowercase()),
        last_operation_failed: failed,
        problems,
    }
}
