//! `lifeboat status`: is every machine protected? Per snapshot name: the last capture,
//! the last drill that passed, the last check; non-zero exit naming every name that is
//! overdue or whose last operation failed (for cron, systemd `OnFailure=`, Nagios).

use std::time::Duration;

use anyhow::Result;
use chrono::Utc;
use clap::Args;
use serde::Serialize;

use crate::journal;
use crate::journal::protection::{Limits, ProtectionView};
use crate::repo::{RepoSpec, Repository};
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
        crate::outln!(
            "{:<20} {:<20} {:<20} STATUS",
            "NAME",
            "LAST CAPTURE",
            "LAST GOOD DRILL"
        );
        let short = |t: &Option<String>| {
            t.as_deref()
                .map(|t| t.get(..19).unwrap_or(t))
                .unwrap_or("never")
                .to_string()
        };
        for n in &self.names {
            crate::outln!(
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
        crate::outln!(
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
    let view = ProtectionView::read(&repo)?;
    let limits = Limits {
        capture: args.max_age,
        drill: args.drill_max_age,
        check: args.check_max_age,
    };
    let mut names = Vec::new();
    let mut problems = Vec::new();
    for (name, n) in view.machines() {
        if !args.name.is_empty() && !args.name.contains(name) {
            continue;
        }
        let status = NameStatus {
            name: name.clone(),
            last_capture: n.newest.as_ref().map(|s| s.time.clone()),
            last_drill_passed: n.last_good_drill.clone(),
            last_operation: n
                .last_operation
                .as_ref()
                .map(|r| format!("{:?} {}", r.operation, r.time).to_lowercase()),
            last_operation_failed: n.last_failed(),
            problems: n.problems(&limits, now),
        };
        problems.extend(status.problems.iter().map(|p| format!("{name}: {p}")));
        names.push(status);
    }
    let check = view.last_check.as_ref();
    problems.extend(view.check_problem(&limits, now));
    Ok(Report {
        ok: problems.is_empty(),
        names,
        last_check: check.map(|r| r.time.clone()),
        last_check_ok: check.map(|r| r.status == journal::Status::Ok),
        problems,
    })
}
