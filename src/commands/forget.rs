//! `lifeboat forget`: remove snapshots by a retention policy (restic's flags and rules),
//! per snapshot name. A protected snapshot (`lifeboat protect`) is never removed, nor the
//! newest snapshot of each name that passed a drill ("last known bootable"). Only the
//! manifests (and their signatures) go: the data they alone used stays until prune.

use std::collections::{BTreeMap, HashSet};

use anyhow::{bail, Context, Result};
use chrono::Utc;
use clap::Args;
use serde::Serialize;

use crate::journal::protection::ProtectionView;
use crate::journal::{self, Operation, Subject};
use crate::repo::{Dir, Object, RepoSpec, Repository, Snapshot, SnapshotId};
use crate::retention::{self, Candidate, Policy};
use crate::time::Span;
use crate::ui::Outcome;

#[derive(Debug, Clone, Args)]
pub struct ForgetArgs {
    #[command(flatten)]
    pub repo: RepoSpec,
    /// Only these snapshot names (repeatable); all names by default, each on its own.
    #[arg(long)]
    pub name: Vec<String>,
    /// Keep the newest N snapshots (-1: all).
    #[arg(
        long,
        default_value_t = 0,
        allow_negative_numbers = true,
        value_name = "N"
    )]
    pub keep_last: i64,
    /// Keep the newest snapshot of each of the newest N hours that have one (-1: all).
    #[arg(
        long,
        default_value_t = 0,
        allow_negative_numbers = true,
        value_name = "N"
    )]
    pub keep_hourly: i64,
    /// ... days (UTC).
    #[arg(
        long,
        default_value_t = 0,
        allow_negative_numbers = true,
        value_name = "N"
    )]
    pub keep_daily: i64,
    /// ... ISO weeks.
    #[arg(
        long,
        default_value_t = 0,
        allow_negative_numbers = true,
        value_name = "N"
    )]
    pub keep_weekly: i64,
    /// ... months.
    #[arg(
        long,
        default_value_t = 0,
        allow_negative_numbers = true,
        value_name = "N"
    )]
    pub keep_monthly: i64,
    /// ... years.
    #[arg(
        long,
        default_value_t = 0,
        allow_negative_numbers = true,
        value_name = "N"
    )]
    pub keep_yearly: i64,
    /// Keep every snapshot within this span of the name's newest (restic's 1y6m, 7d, 36h).
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<Span>,
    /// Say what would be kept and removed, and why; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Then prune: delete the data no snapshot needs any longer.
    #[arg(long)]
    pub prune: bool,
}

/// What forget decided for one snapshot.
#[derive(Debug, Serialize)]
pub struct Decided {
    pub id: SnapshotId,
    pub name: String,
    pub time: String,
    pub keep: bool,
    pub reasons: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Forgotten {
    pub dry_run: bool,
    pub policy: String,
    /// Every snapshot of the names concerned, newest first within each name.
    pub snapshots: Vec<Decided>,
    pub removed: usize,
    pub kept: usize,
}

impl Outcome for Forgotten {
    fn print(&self) {
        crate::outln!("{}", self.policy);
        let mut name = None;
        for d in &self.snapshots {
            if name != Some(&d.name) {
                crate::outln!("{}:", d.name);
                name = Some(&d.name);
            }
            crate::outln!(
                "  {:<12} {}  {:<19}  {}",
                if d.keep {
                    "keep"
                } else if self.dry_run {
                    "would remove"
                } else {
                    "remove"
                },
                d.id.short(),
                d.time.get(..19).unwrap_or(&d.time),
                d.reasons.join(", ")
            );
        }
        crate::outln!(
            "{} kept, {} {}",
            self.kept,
            self.removed,
            if self.dry_run {
                "would be removed (dry run)"
            } else {
                "removed"
            }
        );
    }
}

impl ForgetArgs {
    /// The prune that `--prune` runs after forgetting.
    pub fn prune_args(&self) -> crate::prune::PruneArgs {
        crate::prune::PruneArgs {
            repo: self.repo.clone(),
            max_unused: 20,
            wait: std::time::Duration::from_secs(600),
            dry_run: self.dry_run,
        }
    }

    pub fn policy(&self) -> Policy {
        Policy {
            last: self.keep_last,
            hourly: self.keep_hourly,
            daily: self.keep_daily,
            weekly: self.keep_weekly,
            monthly: self.keep_monthly,
            yearly: self.keep_yearly,
            within: self.keep_within,
        }
    }
}

fn describe(p: &Policy) -> String {
    let mut parts = Vec::new();
    for (n, what) in [
        (p.last, "latest"),
        (p.hourly, "hourly"),
        (p.daily, "daily"),
        (p.weekly, "weekly"),
        (p.monthly, "monthly"),
        (p.yearly, "yearly"),
    ] {
        match n {
            -1 => parts.push(format!("all {what}")),
            n if n > 0 => parts.push(format!("{n} {what}")),
            _ => {}
        }
    }
    if let Some(w) = p.within {
        parts.push(format!("all within {w} of the newest"));
    }
    format!(
        "keep {}, every protected snapshot and each name's last known bootable",
        parts.join(", ")
    )
}

pub fn run(args: &ForgetArgs) -> Result<Forgotten> {
    let policy = args.policy();
    if policy.is_empty() {
        bail!("no policy given: nothing would be forgotten (give --keep-last, --keep-daily, ... or --keep-within)");
    }
    for n in [
        policy.last,
        policy.hourly,
        policy.daily,
        policy.weekly,
        policy.monthly,
        policy.yearly,
    ] {
        if n < -1 {
            bail!("a --keep-* count is a number of snapshots, or -1 for all");
        }
    }
    let repo = Repository::open(&args.repo)?;
    journal::recorded(
        &repo,
        Operation::Forget,
        || forget(&repo, args, &policy),
        |result| {
            (!args.dry_run).then(|| Subject {
                details: match result {
                    Ok(f) => serde_json::json!({
                        "policy": f.policy,
                        "dry_run": f.dry_run,
                        "removed": f.snapshots.iter().filter(|d| !d.keep).map(|d| d.id).collect::<Vec<_>>(),
                        "kept": f.kept,
                    }),
                    Err(_) => serde_json::Value::Null,
                },
                ..Subject::default()
            })
        },
    )
}

/// A name's snapshots as the policy sees them, with their times as recorded.
type ByName = BTreeMap<String, Vec<(Candidate, String)>>;

fn forget(repo: &Repository, args: &ForgetArgs, policy: &Policy) -> Result<Forgotten> {
    let snapshots = repo.snapshots()?;
    let by_name = candidates(&snapshots, args)?;
    let protected = crate::repo::protect::list(repo)?;
    let view = ProtectionView::new(&journal::read_all(repo)?, &snapshots);
    let bootable = last_known_bootable(&view, &by_name);
    let now = Utc::now();
    let mut out = Vec::new();
    for (name, list) in &by_name {
        let candidates: Vec<Candidate> = list.iter().map(|(c, _)| *c).collect();
        for d in retention::apply(&candidates, policy, now) {
            let mut reasons = d.reasons;
            if protected.contains(&d.id) {
                reasons.push("protected".into());
            }
            if bootable.contains(&d.id) {
                reasons.push("last known bootable (newest drilled good)".into());
            }
            let time = list
                .iter()
                .find(|(c, _)| c.id == d.id)
                .map(|(_, t)| t.clone())
                .unwrap_or_default();
            out.push(Decided {
                id: d.id,
                name: name.clone(),
                time,
                keep: !reasons.is_empty(),
                reasons,
            });
        }
    }
    if !args.dry_run {
        remove(repo, out.iter().filter(|d| !d.keep).map(|d| d.id))?;
    }
    let removed = out.iter().filter(|d| !d.keep).count();
    Ok(Forgotten {
        dry_run: args.dry_run,
        policy: describe(policy),
        kept: out.len() - removed,
        removed,
        snapshots: out,
    })
}

/// The snapshots of the names concerned, by name; a damaged one is left alone.
fn candidates(snapshots: &[(SnapshotId, Result<Snapshot>)], args: &ForgetArgs) -> Result<ByName> {
    let mut by_name = ByName::new();
    for (id, s) in snapshots {
        let id = *id;
        let s = match s {
            Ok(s) => s,
            Err(e) => {
                log::warn!("snapshot {}: {e:#}; left alone", id.short());
                continue;
            }
        };
        let m = &s.manifest;
        if !args.name.is_empty() && !args.name.contains(&m.name) {
            continue;
        }
        let time = crate::time::parse_rfc3339(&m.time)
            .with_context(|| format!("snapshot {}", id.short()))?;
        by_name
            .entry(m.name.clone())
            .or_default()
            .push((Candidate { id, time }, m.time.clone()));
    }
    Ok(by_name)
}

/// For each name, the newest snapshot whose last drill passed (from the journal).
fn last_known_bootable(view: &ProtectionView, by_name: &ByName) -> HashSet<SnapshotId> {
    let drills = &view.drills;
    let mut out = HashSet::new();
    for list in by_name.values() {
        let newest_good = list
            .iter()
            .filter(|(c, _)| drills.get(&c.id).is_some_and(|d| d.passed))
            .max_by_key(|(c, _)| c.time);
        if let Some((c, _)) = newest_good {
            out.insert(c.id);
        }
    }
    out
}

/// Remove snapshots: each manifest first (the snapshot is gone at once), then its
/// signatures and its protection marker if any.
fn remove(repo: &Repository, ids: impl Iterator<Item = SnapshotId>) -> Result<()> {
    let store = repo.store();
    let listed = store
        .objects(&Dir::Snapshots)
        .context("list the snapshots")?;
    for id in ids {
        let key = Object::Snapshot(id);
        store
            .delete(&key)
            .with_context(|| format!("remove snapshot {}", store.location(&key)))?;
        for sig in listed
            .iter()
            .filter(|o| matches!(o, Object::Signature(s, _) if *s == id))
        {
            store
                .delete(sig)
                .with_context(|| format!("remove signature {}", store.location(sig)))?;
        }
        log::info!("removed snapshot {}", id.short());
    }
    store.flush()
}
