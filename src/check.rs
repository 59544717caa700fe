//! `lifeboat check`: prove that every chunk the snapshots need is there and, with `--read-data`, that
//! every stored chunk decompresses to the bytes its name promises.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use crate::io::parallel::{map_ordered, Width};
use crate::io::Progress;
use crate::journal::{self, Operation, Subject};
use crate::repo::{ChunkError, ChunkId, RepoSpec, Repository, SnapshotId};
use crate::ui::{Outcome, Ui};

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub repo: RepoSpec,
    #[command(flatten)]
    pub trust: crate::trust::TrustArgs,
    /// Decompress and hash every stored chunk.
    #[arg(long)]
    pub read_data: bool,
    /// Read only this share of the chunks (as restic's `--read-data-subset N%`), the next
    /// share at each run (the journal remembers the last): over ceil(100/N) runs every
    /// chunk is read, whatever the schedule.
    #[arg(long, value_name = "N%", value_parser = parse_share, conflicts_with = "read_data")]
    pub read_data_subset: Option<u8>,
}

/// `N%`, 1 to 100.
fn parse_share(s: &str) -> Result<u8, String> {
    let n: u8 = s
        .strip_suffix('%')
        .and_then(|n| n.parse().ok())
        .filter(|n| (1..=100).contains(n))
        .ok_or_else(|| format!("{s}: a share from 1% to 100%"))?;
    Ok(n)
}

impl CheckArgs {
    /// How many groups the chunks fall into for `--read-data-subset`.
    pub fn subset_groups(&self) -> Option<u32> {
        Some(100u32.div_ceil(self.read_data_subset? as u32))
    }
}

#[derive(Debug, Serialize)]
pub struct Problem {
    pub chunk: String,
    pub location: String,
    pub error: String,
    /// Snapshots (short id and name) that cannot be restored without this chunk.
    pub snapshots: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct DamagedSnapshot {
    pub id: SnapshotId,
    pub error: String,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub repository: String,
    pub snapshots: usize,
    pub damaged_snapshots: Vec<DamagedSnapshot>,
    /// With a trust anchor (`--trust`, or keys the repository records): snapshots that
    /// are unsigned, signed by another or a revoked key, badly signed, or bound to
    /// another repository.
    pub untrusted_snapshots: Vec<DamagedSnapshot>,
    pub chunks_referenced: usize,
    pub chunks_stored: usize,
    pub chunks_read: usize,
    pub unreferenced_chunks: usize,
    /// Format 2: pack files no index file names (a capture that stopped before its
    /// index: their chunks are not part of the repository; prune deletes them).
    pub unindexed_packs: Vec<String>,
    pub missing: Vec<Problem>,
    pub corrupt: Vec<Problem>,
    pub ok: bool,
    pub duration_s: f64,
}

impl Outcome for Report {
    fn failure(&self) -> Option<String> {
        (!self.ok).then(|| format!("check found problems: {}", self.problem_line()))
    }

    fn print(&self) {
        for d in &self.damaged_snapshots {
            crate::outln!("unreadable manifest {}: {}", d.id.short(), d.error);
        }
        for d in &self.untrusted_snapshots {
            crate::outln!("untrusted snapshot {}: {}", d.id.short(), d.error);
        }
        for p in &self.missing {
            crate::outln!(
                "missing chunk {} ({}), needed by {}",
                p.chunk,
                p.location,
                p.snapshots.join(", ")
            );
        }
        for p in &self.corrupt {
            let users = if p.snapshots.is_empty() {
                "no snapshot".to_string()
            } else {
                p.snapshots.join(", ")
            };
            crate::outln!("corrupt chunk {}: {}; needed by {users}", p.chunk, p.error);
        }
        crate::outln!(
            "{} snapshots, {} chunks referenced, {} stored, {} read and verified, {} unreferenced",
            self.snapshots,
            self.chunks_referenced,
            self.chunks_stored,
            self.chunks_read,
            self.unreferenced_chunks
        );
        if !self.unindexed_packs.is_empty() {
            crate::outln!(
                "{} pack files named by no index file (left by a capture that was killed; not used: `lifeboat prune` deletes them)",
                self.unindexed_packs.len()
            );
        }
        crate::outln!(
            "{}",
            if self.ok {
                "no problems found".to_string()
            } else {
                self.problem_line()
            }
        );
    }
}

impl Report {
    pub fn problem_line(&self) -> String {
        format!(
            "{} unreadable manifests, {} untrusted snapshots, {} missing chunks, {} corrupt chunks",
            self.damaged_snapshots.len(),
            self.untrusted_snapshots.len(),
            self.missing.len(),
            self.corrupt.len()
        )
    }
}

pub fn run(args: &CheckArgs, ui: &Ui) -> Result<Report> {
    let repo = Repository::open(&args.repo)?;
    let subset = match args.subset_groups() {
        Some(groups) => Some((groups, next_group(&repo, groups)?)),
        None => None,
    };
    journal::recorded(
        &repo,
        Operation::Check,
        || {
            check(&repo, args, subset, ui).map_err(|e| {
                crate::io::interrupt::explain(e, "check", || {
                    "it changes nothing; run it again (with --read-data-subset to read a share at a time)"
                        .into()
                })
            })
        },
        |result| Some(recorded_as(args, subset, result)),
    )
}

/// What the journal says of a check. One that ran to its end and found problems is a
/// failed check.
fn recorded_as(args: &CheckArgs, subset: Option<(u32, u32)>, result: &Result<Report>) -> Subject {
    let Ok(r) = result else {
        return Subject::default();
    };
    Subject {
        details: serde_json::json!({
            "read_data": args.read_data,
            "read_data_subset": args.read_data_subset,
            "subset": subset.map(|(groups, group)| serde_json::json!({"groups": groups, "group": group})),
            "snapshots": r.snapshots,
            "chunks_referenced": r.chunks_referenced,
            "chunks_read": r.chunks_read,
            "missing": r.missing.len(),
            "corrupt": r.corrupt.len(),
            "damaged_snapshots": r.damaged_snapshots.len(),
        }),
        failure: (!r.ok).then(|| format!("check found problems: {}", r.problem_line())),
        ..Subject::default()
    }
}

/// The share of the chunks a `--read-data-subset` run reads: the one after the last
/// recorded run's with the same number of groups (the first one otherwise).
fn next_group(repo: &Repository, groups: u32) -> Result<u32> {
    let last = journal::read_all(repo)?
        .into_iter()
        .rev()
        .filter(|r| r.operation == Operation::Check)
        .find_map(|r| {
            let s = r.details.get("subset")?;
            (s.get("groups")?.as_u64()? == groups as u64).then(|| s.get("group")?.as_u64())?
        });
    Ok(last.map(|g| (g as u32 + 1) % groups).unwrap_or(0))
}

/// `subset`: with `--read-data-subset`, (groups, the group this run reads).
fn check(
    repo: &Repository,
    args: &CheckArgs,
    subset: Option<(u32, u32)>,
    ui: &Ui,
) -> Result<Report> {
    let start = std::time::Instant::now();
    let policy = crate::trust::Policy::new(&args.trust, repo)?;
    let mut users: HashMap<ChunkId, Vec<String>> = HashMap::new();
    let mut damaged = Vec::new();
    let mut untrusted = Vec::new();
    let all = repo.snapshots()?;
    for (id, s) in &all {
        match s {
            Ok(s) => {
                if let Err(e) = policy.verify(repo, s) {
                    untrusted.push(DamagedSnapshot {
                        id: *id,
                        error: format!("{e:#}"),
                    });
                }
                let label = format!("{} ({})", s.short_id(), s.manifest.name);
                for c in s.manifest.chunk_ids().collect::<HashSet<_>>() {
                    users.entry(c).or_default().push(label.clone());
                }
            }
            Err(e) => damaged.push(DamagedSnapshot {
                id: *id,
                error: format!("{e:#}"),
            }),
        }
    }
    let stored: HashSet<ChunkId> = repo.list_chunks()?.into_iter().collect();
    let problem = |id: &ChunkId, error: String| Problem {
        chunk: id.to_hex(),
        location: repo.chunk_location(id),
        error,
        snapshots: users.get(id).cloned().unwrap_or_default(),
    };
    let mut missing: BTreeMap<ChunkId, Problem> = users
        .keys()
        .filter(|id| !stored.contains(id))
        .map(|id| (*id, problem(id, "missing".into())))
        .collect();
    let mut corrupt: BTreeMap<ChunkId, Problem> = BTreeMap::new();
    let mut read = 0;
    let to_read: Option<HashSet<ChunkId>> = if args.read_data {
        // Every stored chunk: a corrupt unreferenced one would poison the next capture
        // that finds it by name.
        Some(stored.clone())
    } else {
        subset.map(|(groups, today)| {
            stored
                .iter()
                .filter(|id| {
                    u32::from_le_bytes([id.0[0], id.0[1], id.0[2], id.0[3]]) % groups == today
                })
                .copied()
                .collect()
        })
    };
    if let Some(to_read) = to_read {
        read = to_read.len();
        for e in read_every_chunk(repo, &to_read, ui)? {
            let id = e.id();
            let p = problem(&id, format!("{e}"));
            match e {
                ChunkError::Missing { .. } => missing.insert(id, p),
                _ => corrupt.insert(id, p),
            };
        }
    }
    let unreferenced = stored.iter().filter(|id| !users.contains_key(id)).count();
    let unindexed_packs = repo
        .unindexed_packs()?
        .into_iter()
        .map(|p| repo.store().location(&crate::repo::Object::Pack(p)))
        .collect();
    let ok = damaged.is_empty() && untrusted.is_empty() && missing.is_empty() && corrupt.is_empty();
    Ok(Report {
        repository: repo.display.clone(),
        snapshots: all.len(),
        damaged_snapshots: damaged,
        untrusted_snapshots: untrusted,
        chunks_referenced: users.len(),
        chunks_stored: stored.len(),
        chunks_read: read,
        unreferenced_chunks: unreferenced,
        unindexed_packs,
        missing: missing.into_values().collect(),
        corrupt: corrupt.into_values().collect(),
        ok,
        duration_s: start.elapsed().as_secs_f64(),
    })
}

/// Read, decompress and verify every chunk in `ids`; returns the ones that failed.
fn read_every_chunk(repo: &Repository, ids: &HashSet<ChunkId>, ui: &Ui) -> Result<Vec<ChunkError>> {
    let progress = Progress::items("check", ids.len() as u64, ui);
    let mut errors = Vec::new();
    let ordered = repo.in_storage_order(ids.iter().copied().collect())?;
    let result = map_ordered(
        ordered,
        Width::new(repo.concurrency(), 4),
        |id| Ok(repo.get_chunk(&id).err()),
        |failed| {
            progress.inc(1);
            errors.extend(failed);
            Ok(())
        },
    );
    progress.finish();
    result.map(|_| errors)
}
