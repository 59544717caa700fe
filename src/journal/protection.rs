//! The one view of what protects each machine, from its snapshots and the journal: per
//! snapshot name its newest snapshot, its last drill and last good drill, and its newest
//! capture, drill or restore with how it went; each snapshot's last drill; and the
//! repository's last check. With the rules that call a name overdue or failed. `status`,
//! `/metrics`, `forget` (last known bootable) and `snapshots` read it.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Operation, Record, Status};
use crate::repo::{Repository, Snapshot, SnapshotId};
use crate::time::{age, human, shown};

/// A drill's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Drilled {
    pub time: String,
    pub passed: bool,
}

/// A name's newest snapshot.
#[derive(Debug, Clone)]
pub struct Newest {
    pub id: SnapshotId,
    pub time: String,
    /// Its disks' size, all together.
    pub size: u64,
    pub data_bytes: u64,
}

/// What protects one snapshot name.
#[derive(Debug, Clone, Default)]
pub struct NameView {
    /// Its newest snapshot (by time).
    pub newest: Option<Newest>,
    /// Whether the journal records a capture of it (a name whose every capture failed has
    /// no snapshot).
    pub captured: bool,
    /// Its last drill, whatever it found.
    pub last_drill: Option<Drilled>,
    /// When a drill of it last passed.
    pub last_good_drill: Option<String>,
    /// Its newest capture, drill or restore, however it went.
    pub last_operation: Option<Record>,
    /// Not drilled, by choice (`status --no-drill NAME`).
    pub drill_off: bool,
}

/// How bad a problem is: Nagios's WARNING (something is overdue) or CRITICAL (something
/// failed, or there is nothing to restore).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Critical,
}

/// One thing wrong with a name or the repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub severity: Severity,
    pub text: String,
}

impl Problem {
    fn warning(text: impl Into<String>) -> Problem {
        Problem {
            severity: Severity::Warning,
            text: text.into(),
        }
    }

    fn critical(text: impl Into<String>) -> Problem {
        Problem {
            severity: Severity::Critical,
            text: text.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// What protects every machine a repository holds.
#[derive(Debug, Clone, Default)]
pub struct ProtectionView {
    pub names: BTreeMap<String, NameView>,
    /// Each drilled snapshot's last drill.
    pub drills: HashMap<SnapshotId, Drilled>,
    /// The repository's last check.
    pub last_check: Option<Record>,
}

/// How recent each kind of proof must be.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A name's newest snapshot.
    pub capture: Duration,
    /// A name's last drill that passed; None: drills are not asked for.
    pub drill: Option<Duration>,
    /// The repository's last check.
    pub check: Duration,
}

impl ProtectionView {
    /// Read the journal and every snapshot (one that cannot be read is said on stderr).
    pub fn read(repo: &Repository) -> Result<ProtectionView> {
        let records = super::read_all(repo)?;
        let snapshots = repo.snapshots()?;
        for (id, s) in &snapshots {
            if let Err(e) = s {
                log::warn!("snapshot {}: {e:#}", id.short());
            }
        }
        Ok(ProtectionView::new(&records, &snapshots))
    }

    /// The view of these records (oldest first) and snapshots.
    pub fn new(records: &[Record], snapshots: &[(SnapshotId, Result<Snapshot>)]) -> ProtectionView {
        let mut view = ProtectionView::default();
        for (id, s) in snapshots {
            let Ok(s) = s else { continue };
            let m = &s.manifest;
            let name = view.names.entry(m.name.clone()).or_default();
            if name.newest.as_ref().is_none_or(|n| m.time > n.time) {
                name.newest = Some(Newest {
                    id: *id,
                    time: m.time.clone(),
                    size: m.total_size(),
                    data_bytes: m.data_bytes(),
                });
            }
        }
        for r in records {
            view.add(r);
        }
        view
    }

    /// One record, newer than those before it.
    fn add(&mut self, r: &Record) {
        if r.operation == Operation::Check {
            self.last_check = Some(r.clone());
        }
        let drill = (r.operation == Operation::Drill).then(|| Drilled {
            time: r.time.clone(),
            passed: r.status == Status::Ok,
        });
        if let (Some(d), Some(id)) = (&drill, r.snapshot) {
            self.drills.insert(id, d.clone());
        }
        let Some(n) = &r.name else { return };
        let name = self.names.entry(n.clone()).or_default();
        match r.operation {
            Operation::Capture => name.captured = true,
            Operation::DrillOff => name.drill_off = r.status == Status::Ok,
            Operation::DrillOn => name.drill_off = false,
            Operation::Drill => {
                if r.status == Status::Ok {
                    name.last_good_drill = Some(r.time.clone());
                }
                name.last_drill = drill;
            }
            _ => {}
        }
        if matches!(
            r.operation,
            Operation::Capture | Operation::Drill | Operation::Restore
        ) {
            name.last_operation = Some(r.clone());
        }
    }

    /// The names that were ever captured (with or without a snapshot now).
    pub fn machines(&self) -> impl Iterator<Item = (&String, &NameView)> {
        self.names
            .iter()
            .filter(|(_, n)| n.newest.is_some() || n.captured)
    }

    /// What is wrong with the repository's last check: none, failed, or too old.
    pub fn check_problem(&self, limits: &Limits, now: DateTime<Utc>) -> Option<Problem> {
        match &self.last_check {
            None => Some(Problem::warning("the repository was never checked")),
            Some(r) if r.status == Status::Failed => Some(Problem::critical(format!(
                "the last check ({}) failed: {}",
                shown(&r.time),
                r.error.as_deref().unwrap_or("")
            ))),
            Some(r) if r.status == Status::Interrupted => Some(Problem::warning(format!(
                "the last check ({}) was interrupted",
                shown(&r.time)
            ))),
            Some(r) => age(&r.time, now)
                .filter(|a| *a > limits.check)
                .map(|a| Problem::warning(format!("the last check is {} old", human(a)))),
        }
    }
}

impl NameView {
    /// Whether its newest capture, drill or restore failed.
    pub fn last_failed(&self) -> bool {
        self.last_operation
            .as_ref()
            .is_some_and(|r| r.status != Status::Ok)
    }

    /// What is overdue or failed about this name.
    pub fn problems(&self, limits: &Limits, now: DateTime<Utc>) -> Vec<Problem> {
        let mut problems = Vec::new();
        match &self.newest {
            None => problems.push(Problem::critical("no snapshot")),
            Some(n) => {
                if let Some(a) = age(&n.time, now).filter(|a| *a > limits.capture) {
                    problems.push(Problem::warning(format!("last capture {} ago", human(a))));
                }
            }
        }
        if let Some(max) = limits.drill.filter(|_| !self.drill_off) {
            match &self.last_good_drill {
                None => problems.push(Problem::warning(
                    "never drilled successfully (if it is not to be drilled: `lifeboat status --no-drill NAME`)",
                )),
                Some(t) => {
                    if let Some(a) = age(t, now).filter(|a| *a > max) {
                        problems.push(Problem::warning(format!("last good drill {} ago", human(a))));
                    }
                }
            }
        }
        if let Some(r) = self.last_operation.as_ref().filter(|_| self.last_failed()) {
            problems.push(match r.status {
                Status::Interrupted => Problem::warning(format!(
                    "the last {} ({}) was interrupted",
                    r.operation,
                    shown(&r.time)
                )),
                _ => Problem::critical(format!(
                    "the last {} ({}) failed: {}",
                    r.operation,
                    shown(&r.time),
                    r.error.as_deref().unwrap_or("")
                )),
            });
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(operation: Operation, name: &str, time: &str, ok: bool) -> Record {
        Record {
            format: super::super::FORMAT.into(),
            operation,
            time: time.into(),
            duration_s: 1.0,
            host: "h".into(),
            user: "u".into(),
            name: Some(name.into()),
            snapshot: Some(SnapshotId::of(time.as_bytes())),
            status: if ok { Status::Ok } else { Status::Failed },
            error: (!ok).then(|| "it broke".to_string()),
            details: serde_json::Value::Null,
        }
    }

    #[test]
    fn a_name_is_judged_by_its_newest_capture_last_good_drill_and_last_operation() {
        let now = crate::time::parse_rfc3339("2026-12-07T12:00:00Z").unwrap();
        let limits = Limits {
            capture: Duration::from_secs(26 * 3600),
            drill: Some(Duration::from_secs(8 * 86400)),
            check: Duration::from_secs(8 * 86400),
        };
        let records = [
            record(Operation::Capture, "web", "2026-12-07T01:00:00Z", true),
            record(Operation::Drill, "web", "2026-12-07T02:00:00Z", true),
            record(Operation::Drill, "web", "2026-12-07T03:00:00Z", false),
            record(Operation::Capture, "db", "2026-12-01T01:00:00Z", false),
        ];
        let view = ProtectionView::new(&records, &[]);
        let web = &view.names["web"];
        assert_eq!(web.last_good_drill.as_deref(), Some("2026-12-07T02:00:00Z"));
        assert!(!web.last_drill.as_ref().unwrap().passed);
        assert!(web.last_failed());
        let p = web.problems(&limits, now);
        assert_eq!(p[0], Problem::critical("no snapshot"));
        assert!(
            p[1].text
                .starts_with("the last drill (2026-12-07 03:00:00 UTC)")
                && p[1].text.ends_with("failed: it broke"),
            "{p:?}"
        );
        let db = &view.names["db"];
        let p = db.problems(&limits, now);
        assert_eq!(p[0], Problem::critical("no snapshot"));
        assert!(p[1].text.starts_with("never drilled successfully"), "{p:?}");
        assert_eq!(p[1].severity, Severity::Warning);
        assert_eq!(view.machines().count(), 2);
        assert_eq!(
            view.check_problem(&limits, now),
            Some(Problem::warning("the repository was never checked"))
        );
        // Drills off for every name, or for one.
        let off = Limits {
            drill: None,
            ..limits
        };
        let undrilled = |p: Vec<Problem>| !p.iter().any(|p| p.text.contains("drilled"));
        assert_eq!(db.problems(&limits, now).len(), 3);
        assert!(undrilled(db.problems(&off, now)));
        assert_eq!(db.problems(&off, now).len(), 2);
        let mut records = records.to_vec();
        records.push(record(
            Operation::DrillOff,
            "db",
            "2026-12-07T04:00:00Z",
            true,
        ));
        let view = ProtectionView::new(&records, &[]);
        assert!(view.names["db"].drill_off);
        assert!(undrilled(view.names["db"].problems(&limits, now)));
        assert_eq!(view.drills.len(), 2);
    }
}
