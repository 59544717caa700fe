//! Check: prove that every chunk the snapshots need is there and, with `--read-data`, that
//! every stored chunk decompresses to the bytes its name promises.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::thread;

use anyhow::Result;
use serde::Serialize;

use crate::io::Progress;
use crate::repo::{ChunkError, ChunkId, Repository};

pub struct Options {
    pub repo: crate::repo::RepoSpec,
    pub read_data: bool,
    pub quiet: bool,
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
    pub id: String,
    pub error: String,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub repository: String,
    pub snapshots: usize,
    pub damaged_snapshots: Vec<DamagedSnapshot>,
    pub chunks_referenced: usize,
    pub chunks_stored: usize,
    pub chunks_read: usize,
    pub unreferenced_chunks: usize,
    pub missing: Vec<Problem>,
    pub corrupt: Vec<Problem>,
    pub ok: bool,
}

impl Report {
    pub fn print(&self) {
        for d in &self.damaged_snapshots {
            println!("unreadable manifest {}: {}", &d.id[..8], d.error);
        }
        for p in &self.missing {
            println!(
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
            println!("corrupt chunk {}: {}; needed by {users}", p.chunk, p.error);
        }
        println!(
            "{} snapshots, {} chunks referenced, {} stored, {} read and verified, {} unreferenced",
            self.snapshots,
            self.chunks_referenced,
            self.chunks_stored,
            self.chunks_read,
            self.unreferenced_chunks
        );
        println!(
            "{}",
            if self.ok {
                "no problems found".to_string()
            } else {
                self.problem_line()
            }
        );
    }

    pub fn problem_line(&self) -> String {
        format!(
            "{} unreadable manifests, {} missing chunks, {} corrupt chunks",
            self.damaged_snapshots.len(),
            self.missing.len(),
            self.corrupt.len()
        )
    }
}

pub fn run(opts: &Options) -> Result<Report> {
    let repo = Repository::open(&opts.repo)?;
    let mut users: HashMap<ChunkId, Vec<String>> = HashMap::new();
    let mut damaged = Vec::new();
    let all = repo.snapshots()?;
    for (id, s) in &all {
        match s {
            Ok(s) => {
                let label = format!("{} ({})", s.short_id(), s.manifest.name);
                for c in s.manifest.chunk_ids().collect::<HashSet<_>>() {
                    users.entry(c).or_default().push(label.clone());
                }
            }
            Err(e) => damaged.push(DamagedSnapshot {
                id: id.clone(),
                error: format!("{e:#}"),
            }),
        }
    }
    let stored: HashSet<ChunkId> = repo.list_chunks()?.into_iter().collect();
    let label_of = |id: &ChunkId| users.get(id).cloned().unwrap_or_default();
    let mut missing: BTreeMap<ChunkId, Problem> = BTreeMap::new();
    for id in users.keys() {
        if !stored.contains(id) {
            missing.insert(
                *id,
                Problem {
                    chunk: id.to_hex(),
                    location: repo.chunk_location(id),
                    error: "missing".into(),
                    snapshots: label_of(id),
                },
            );
        }
    }
    let mut corrupt: BTreeMap<ChunkId, Problem> = BTreeMap::new();
    let mut read = 0;
    if opts.read_data {
        // Every stored chunk: a corrupt unreferenced one would poison the next capture
        // that finds it by name.
        let ids: Vec<ChunkId> = stored.iter().copied().collect();
        let total: u64 = ids.len() as u64;
        let progress = Progress::items("check", total, opts.quiet);
        let next = Mutex::new(ids.into_iter());
        let errors: Mutex<Vec<ChunkError>> = Mutex::new(Vec::new());
        let workers = crate::repo::fetch_workers(&repo);
        thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let Some(id) = next.lock().unwrap().next() else {
                        break;
                    };
                    if let Err(e) = repo.get_chunk(&id) {
                        errors.lock().unwrap().push(e);
                    }
                    progress.inc(1);
                });
            }
        });
        progress.finish();
        read = total as usize;
        for e in errors.into_inner().unwrap() {
            let id = e.id();
            let p = Problem {
                chunk: id.to_hex(),
                location: repo.chunk_location(&id),
                error: format!("{e}"),
                snapshots: label_of(&id),
            };
            match e {
                ChunkError::Missing { .. } => missing.insert(id, p),
                _ => corrupt.insert(id, p),
            };
        }
    }
    let unreferenced = stored.iter().filter(|id| !users.contains_key(id)).count();
    let ok = damaged.is_empty() && missing.is_empty() && corrupt.is_empty();
    Ok(Report {
        repository: repo.display.clone(),
        snapshots: all.len(),
        damaged_snapshots: damaged,
        chunks_referenced: users.len(),
        chunks_stored: stored.len(),
        chunks_read: read,
        unreferenced_chunks: unreferenced,
        missing: missing.into_values().collect(),
        corrupt: corrupt.into_values().collect(),
        ok,
    })
}
