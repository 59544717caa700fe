//! `lifeboat status`: is every machine protected? Per snapshot name: the last capture,
//! the last drill that passed, the last check; and Nagios's exit codes: 0 OK, 1 WARNING
//! (something is overdue), 2 CRITICAL (something failed, or a name has no snapshot), 3
//! UNKNOWN (the repository could not be read). `--no-drill NAME` records in the journal
//! that a name is not drilled.

use std::time::Duration;

use anyhow::{bail, Result};
use chrono::Utc;
use clap::Args;
use serde::Serialize;

use crate::journal::protection::{Limits, Problem, ProtectionView, Severity};
use crate::journal::{self, Operation, Subject};
use crate::repo::{RepoSpec, Repository};
use crate::time::shown;
use crate::ui::{Exit, Outcome};

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub repo: RepoSpec,
    /// A name whose newest snapshot is older than this is overdue (WARNING).
    #[arg(long, alias = "max-age", value_name = "DURATION", default_value = "26h", value_parser = crate::time::parse_duration)]
    pub capture_max_age: Duration,
    /// A name whose last passing drill is older than this (or that never passed one) is
    /// overdue (WARNING); `off`: drills are not asked for.
    #[arg(long, value_name = "DURATION|off", default_value = "8d", value_parser = drill_limit)]
    pub drill_max_age: DrillLimit,
    /// The repository's last check (any) older than this (WARNING).
    #[arg(long, value_name = "DURATION", default_value = "8d", value_parser = crate::time::parse_duration)]
    pub check_max_age: Duration,
    /// Only these names (repeatable).
    #[arg(long)]
    pub name: Vec<String>,
    /// Record in the journal that NAME is not drilled (a machine with nothing to boot), so
    /// that its drills are not asked for; `--drill NAME` undoes it (repeatable).
    #[arg(long, value_name = "NAME")]
    pub no_drill: Vec<String>,
    /// Ask for NAME's drills again (after `--no-drill NAME`).
    #[arg(long, value_name = "NAME")]
    pub drill: Vec<String>,
}

/// `--drill-max-age`: a duration, or off.
#[derive(Debug, Clone, Copy)]
pub struct DrillLimit(pub Option<Duration>);

fn drill_limit(s: &str) -> Result<DrillLimit, String> {
    match s {
        "off" | "never" => Ok(DrillLimit(None)),
        _ => crate::time::parse_duration(s).map(|d| DrillLimit(Some(d))),
    }
}

#[derive(Debug, Serialize)]
pub struct NameStatus {
    pub name: String,
    pub last_capture: Option<String>,
    pub last_drill_passed: Option<String>,
    /// Drills are not asked for (`--no-drill`).
    pub drill_off: bool,
    /// The newest operation of this name in the journal ("capture 2026-...Z"), and how it
    /// went.
    pub last_operation: Option<String>,
    pub last_operation_failed: bool,
    pub problems: Vec<Problem>,
}

/// Nagios's states, with their exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum State {
    Ok,
    Warning,
    Critical,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub state: State,
    pub names: Vec<NameStatus>,
    pub last_check: Option<String>,
    pub last_check_ok: Option<bool>,
    pub problems: Vec<Problem>,
    /// Names whose drills were turned off (`--no-drill`) or on (`--drill`) by this run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
}

impl Outcome for Report {
    fn print(&self) {
        for c in &self.changed {
            crate::outln!("{c}");
        }
        crate::outln!(
            "{:<20} {:<23} {:<23} STATUS",
            "NAME",
            "LAST CAPTURE (UTC)",
            "LAST GOOD DRILL"
        );
        let when = |t: &Option<String>| {
            t.as_deref()
                .map(|t| shown(t).trim_end_matches(" UTC").to_string())
                .unwrap_or_else(|| "never".into())
        };
        for n in &self.names {
            let texts: Vec<String> = n.problems.iter().map(|p| p.to_string()).collect();
            crate::outln!(
                "{:<20} {:<23} {:<23} {}",
                n.name,
                when(&n.last_capture),
                match n.drill_off {
                    true => "not drilled".into(),
                    false => when(&n.last_drill_passed),
                },
                if texts.is_empty() {
                    "ok".to_string()
                } else {
                    texts.join("; ")
                }
            );
        }
        crate::outln!(
            "last check: {}{}",
            when(&self.last_check),
            match self.last_check_ok {
                Some(false) => " (FAILED)",
                _ => "",
            }
        );
        crate::outln!("{:?}", self.state);
    }

    fn failure(&self) -> Option<String> {
        let texts: Vec<String> = self.problems.iter().map(|p| p.to_string()).collect();
        (self.state != State::Ok).then(|| {
            format!(
                "{}: not protected: {}",
                format!("{:?}", self.state).to_uppercase(),
                texts.join("; ")
            )
        })
    }

    fn exit_code(&self) -> Exit {
        match self.state {
            State::Ok => Exit::Ok,
            State::Warning => Exit::Failed,
            State::Critical => Exit::Critical,
        }
    }
}

pub fn run(args: &StatusArgs) -> Result<Report> {
    let repo = Repository::open(&args.repo)?;
    let changed = record_drill_choices(&repo, args)?;
    let now = Utc::now();
    let view = ProtectionView::read(&repo)?;
    let limits = Limits {
        capture: args.capture_max_age,
        drill: args.drill_max_age.0,
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
            drill_off: n.drill_off,
            last_operation: n
                .last_operation
                .as_ref()
                .map(|r| format!("{} {}", r.operation, r.time)),
            last_operation_failed: n.last_failed(),
            problems: n.problems(&limits, now),
        };
        problems.extend(status.problems.iter().map(|p| Problem {
            severity: p.severity,
            text: format!("{name}: {p}"),
        }));
        names.push(status);
    }
    let check = view.last_check.as_ref();
    problems.extend(view.check_problem(&limits, now));
    Ok(Report {
        state: match problems.iter().map(|p| p.severity).max() {
            None => State::Ok,
            Some(Severity::Warning) => State::Warning,
            Some(Severity::Critical) => State::Critical,
        },
        names,
        last_check: check.map(|r| r.time.clone()),
        last_check_ok: check.map(|r| r.status == journal::Status::Ok),
        problems,
        changed,
    })
}

/// `--no-drill` and `--drill`: one journal record per name, which the view reads.
fn record_drill_choices(repo: &Repository, args: &StatusArgs) -> Result<Vec<String>> {
    if let Some(n) = args.no_drill.iter().find(|n| args.drill.contains(n)) {
        bail!("--no-drill {n} and --drill {n}: choose one");
    }
    let mut changed = Vec::new();
    let choices = args
        .no_drill
        .iter()
        .map(|n| (n, Operation::DrillOff))
        .chain(args.drill.iter().map(|n| (n, Operation::DrillOn)));
    for (name, op) in choices {
        crate::repo::manifest::parse_name(name).map_err(anyhow::Error::msg)?;
        let subject = || {
            Some(Subject {
                name: Some(name.clone()),
                ..Subject::default()
            })
        };
        journal::recorded(repo, op, || journal::require_writable(repo), |_| subject())?;
        changed.push(match op {
            Operation::DrillOff => {
                format!("{name}: not drilled from now on (`--drill {name}` undoes it)")
            }
            _ => format!("{name}: drills asked for again"),
        });
    }
    Ok(changed)
}
