//! `lifeboat migrate`: a format 1 repository (one file per chunk) moved forward to
//! format 2 (packs and index files), in place, in three steps ordered so that a crash at
//! any point leaves a repository that `check` passes and that `migrate` finishes when run
//! again:
//!
//! 1. every chunk a snapshot uses is read, verified (decompressed and hashed against its
//!    name) and appended, as it is stored, to packs, snapshot by snapshot in disk order;
//!    then the index files. A format 1 reader never looks at packs or index files; a
//!    second run finds the chunks already packed and skips them;
//! 2. `config.json` is replaced with one saying version 2 (an atomic rename): from here
//!    on the repository is format 2, and its chunk files are ignored;
//! 3. the chunk files are deleted (a second run deletes what a crash left).
//!
//! It needs the repository to itself (no capture into it meanwhile), and a local
//! directory: run it where the repository is.

use std::collections::HashSet;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::io::parallel::{map_ordered, Width};
use crate::io::Progress;
use crate::repo::{ChunkId, Config, Dir, Object, RepoSpec, Repository};
use crate::ui::{bytes, print_table, Outcome, Ui};

#[derive(Debug, Serialize)]
pub struct Summary {
    pub repository: String,
    pub from_version: u32,
    pub to_version: u32,
    pub snapshots: usize,
    /// Chunks read from their files, verified and written into packs.
    pub chunks_packed: u64,
    pub bytes_packed: u64,
    /// Chunks an earlier, interrupted run had packed already.
    pub chunks_already_packed: u64,
    /// Chunk files deleted once the repository was format 2.
    pub chunk_files_removed: u64,
    pub duration_s: f64,
}

impl Outcome for Summary {
    fn print(&self) {
        print_table(&[
            ("repository", self.repository.clone()),
            (
                "format",
                format!("{} -> {}", self.from_version, self.to_version),
            ),
            (
                "packed",
                format!(
                    "{} chunks ({}) of {} snapshots; {} packed before",
                    self.chunks_packed,
                    bytes(self.bytes_packed),
                    self.snapshots,
                    self.chunks_already_packed
                ),
            ),
            (
                "removed",
                format!("{} chunk files", self.chunk_files_removed),
            ),
            ("time", format!("{:.2} s", self.duration_s)),
        ]);
    }
}

/// Move the repository `spec` names forward to format 2 (see above).
pub fn run(spec: &RepoSpec, ui: &Ui) -> Result<Summary> {
    let start = Instant::now();
    let Some(dir) = spec.local_dir() else {
        bail!(
            "migrate works on a repository directory: run it on the machine that holds {}",
            spec.location
        );
    };
    let repo = Repository::open(spec)?;
    let from_version = repo.config.version;
    let mut summary = Summary {
        repository: repo.display.clone(),
        from_version,
        to_version: 2,
        snapshots: 0,
        chunks_packed: 0,
        bytes_packed: 0,
        chunks_already_packed: 0,
        chunk_files_removed: 0,
        duration_s: 0.0,
    };
    if from_version == 1 {
        let packed = Repository::with_store(
            repo.store().clone(),
            &repo.display,
            Config {
                version: 2,
                ..repo.config.clone()
            },
            crate::crypt::Protection::Plain,
        );
        pack_every_chunk(&repo, &packed, &mut summary, ui)?;
        switch_to_version_2(&packed)?;
    }
    summary.chunk_files_removed = remove_chunk_files(&dir.join(Dir::Chunks.path()))?;
    summary.duration_s = start.elapsed().as_secs_f64();
    Ok(summary)
}

/// Step 1: the chunks of every snapshot, oldest first, into packs (`to`), then the index.
fn pack_every_chunk(
    from: &Repository,
    to: &Repository,
    summary: &mut Summary,
    ui: &Ui,
) -> Result<()> {
    let mut seen = HashSet::new();
    let mut wanted: Vec<ChunkId> = Vec::new();
    for (id, snap) in from.snapshots()? {
        let snap = snap.with_context(|| format!("snapshot {id}: nothing was changed"))?;
        summary.snapshots += 1;
        for c in snap.manifest.chunk_ids() {
            if seen.insert(c) {
                if to.has_chunk(&c)? {
                    summary.chunks_already_packed += 1;
                } else {
                    wanted.push(c);
                }
            }
        }
    }
    drop(seen);
    let progress = Progress::items("migrate", wanted.len() as u64, ui);
    let mut writer = to.chunk_writer();
    // Read and verify in parallel; append in order, so that packs keep disk order.
    map_ordered(
        wanted,
        Width::new(from.concurrency(), 4),
        |id| {
            let raw = from.get_stored_chunk(&id)?;
            let plain = from.decode_chunk(&id, &raw)?;
            Ok((id, raw, plain.len() as u32))
        },
        |(id, raw, plain_len)| {
            writer.put(&id, &raw, plain_len)?;
            summary.chunks_packed += 1;
            summary.bytes_packed += raw.len() as u64;
            progress.inc(1);
            Ok(())
        },
    )?;
    progress.finish();
    drop(writer);
    to.flush().context("write the last pack and the index")
}

/// Step 2: the config that makes the repository format 2, written atomically.
fn switch_to_version_2(packed: &Repository) -> Result<()> {
    let mut data = serde_json::to_vec_pretty(&packed.config)?;
    data.push(b'\n');
    packed.store().replace(&Object::Config, &data)?;
    packed.store().flush()
}

/// Step 3: delete the chunk files (and their directories); returns how many there were.
fn remove_chunk_files(chunks: &std::path::Path) -> Result<u64> {
    if !chunks.exists() {
        return Ok(0);
    }
    let mut n = 0;
    for fan in std::fs::read_dir(chunks).with_context(|| format!("read {}", chunks.display()))? {
        let fan = fan
            .with_context(|| format!("read {}", chunks.display()))?
            .path();
        if fan.is_dir() {
            n += std::fs::read_dir(&fan)
                .with_context(|| format!("read {}", fan.display()))?
                .count() as u64;
        }
    }
    std::fs::remove_dir_all(chunks).with_context(|| format!("remove {}", chunks.display()))?;
    Ok(n)
}
