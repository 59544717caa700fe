//! `lifeboat snapshots`: list the snapshots in a repository.

use std::collections::HashSet;

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use crate::journal::protection::{Drilled, ProtectionView};
use crate::repo::{RepoSpec, Repository, SnapshotId};
use crate::ui::{bytes, Outcome};

#[derive(Debug, Clone, Args)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    pub repo: RepoSpec,
    #[command(flatten)]
    pub trust: crate::trust::TrustArgs,
}

/// Every snapshot, oldest first.
#[derive(Debug, Serialize)]
pub struct Listing {
    pub snapshots: Vec<Entry>,
}

#[derive(Debug, Serialize)]
pub struct Entry {
    pub id: SnapshotId,
    pub name: String,
    pub time: String,
    pub hostname: String,
    /// Its disks' sources ("a, b" for a machine of several).
    pub source: String,
    /// How many disks it holds.
    pub disks: usize,
    pub table: String,
    /// Of all its disks.
    pub disk_size: u64,
    /// Each disk's size.
    pub disk_sizes: Vec<u64>,
    pub data_bytes: u64,
    /// Bytes of the chunk files this snapshot refers to (shared chunks counted in full):
    /// what it uses.
    pub stored_bytes: u64,
    /// Of those, the bytes of chunks no older snapshot refers to: what it added.
    pub added_bytes: u64,
    /// With a trust anchor: "signed by trusted key K", or why the snapshot is not
    /// trusted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// Its last drill (from the journal): when, and whether it passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_drill: Option<Drilled>,
    /// Protected from forget (`lifeboat protect`).
    pub protected: bool,
    /// "crash-consistent" when the disk was read while in use, with what used it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consistency: Option<crate::repo::manifest::Consistency>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub fn run(args: &SnapshotsArgs) -> Result<Listing> {
    let repo = Repository::open(&args.repo)?;
    let policy = crate::trust::Policy::new(&args.trust, &repo)?;
    let snapshots = repo.snapshots()?;
    let drills = ProtectionView::new(&crate::journal::read_all(&repo)?, &snapshots).drills;
    let protected = crate::repo::protect::list(&repo)?;
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (id, s) in snapshots {
        match s {
            Ok(s) => {
                let m = &s.manifest;
                let unique: Vec<_> = m.chunk_ids().collect::<HashSet<_>>().into_iter().collect();
                let stored = repo.stored_bytes(&unique)?;
                let new: Vec<_> = unique
                    .iter()
                    .filter(|c| seen.insert(**c))
                    .copied()
                    .collect();
                let added = repo.stored_bytes(&new)?;
                out.push(Entry {
                    id,
                    name: m.name.clone(),
                    time: m.time.clone(),
                    hostname: m.hostname.clone(),
                    source: m.joined(|s, _| s.path.clone()),
                    disks: m.disk_count(),
                    table: m.joined(|_, d| d.table.to_string()),
                    disk_size: m.total_size(),
                    disk_sizes: m.disks().map(|(_, d)| d.size).collect(),
                    data_bytes: m.data_bytes(),
                    stored_bytes: stored,
                    added_bytes: added,
                    signature: policy.required().then(|| match policy.verify(&repo, &s) {
                        Ok(v) => v.to_string(),
                        Err(e) => format!("NOT TRUSTED: {e:#}"),
                    }),
                    last_drill: drills.get(&id).cloned(),
                    protected: protected.contains(&id),
                    consistency: m.consistency.clone(),
                    error: None,
                })
            }
            Err(e) => out.push(Entry {
                id,
                name: String::new(),
                time: String::new(),
                hostname: String::new(),
                source: String::new(),
                disks: 0,
                table: String::new(),
                disk_size: 0,
                disk_sizes: Vec::new(),
                data_bytes: 0,
                stored_bytes: 0,
                added_bytes: 0,
                signature: None,
                last_drill: None,
                protected: false,
                consistency: None,
                error: Some(format!("{e:#}")),
            }),
        }
    }
    Ok(Listing { snapshots: out })
}

impl Outcome for Listing {
    fn print(&self) {
        print(&self.snapshots)
    }
}

fn print(entries: &[Entry]) {
    crate::outln!(
        "{:<8}  {:<23}  {:<16}  {:<24}  {:>10}  {:>10}  {:>10}  {:>10}",
        "ID",
        "TIME (UTC)",
        "NAME",
        "SOURCE",
        "SIZE",
        "DATA",
        "ADDED",
        "USES"
    );
    for e in entries {
        match &e.error {
            None => crate::outln!(
                "{:<8}  {:<23}  {:<16}  {:<24}  {:>10}  {:>10}  {:>10}  {:>10}",
                e.id.short(),
                crate::time::shown(&e.time),
                e.name,
                e.source,
                bytes(e.disk_size),
                bytes(e.data_bytes),
                bytes(e.added_bytes),
                bytes(e.stored_bytes)
            ),
            Some(err) => crate::outln!("{:<8}  DAMAGED: {err}", e.id.short()),
        }
        if let Some(sig) = &e.signature {
            crate::outln!("{:<8}  {sig}", "");
        }
        if let Some(d) = &e.last_drill {
            crate::outln!(
                "{:<8}  last drill {}: {}",
                "",
                crate::time::shown(&d.time),
                if d.passed {
                    "passed (it boots)"
                } else {
                    "FAILED"
                }
            );
        }
        if e.protected {
            crate::outln!("{:<8}  protected", "");
        }
        if let Some(c) = &e.consistency {
            crate::outln!(
                "{:<8}  {}: read while in use ({})",
                "",
                c.kind.to_string().to_uppercase(),
                c.reasons.join("; ")
            );
        }
    }
}
