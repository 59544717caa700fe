//! Restore: check everything before touching the target (`preflight`), work out from the
//! manifest alone what goes where (`plan`), stream the chunks onto the target from the
//! first source that has each, every one verified (`sources`, `pipeline`), and write the
//! partition tables last (`finish`). Once writing has begun, any failure wipes the tables
//! so that a half-restored disk cannot boot.

pub mod finish;
pub mod pipeline;
pub mod plan;
pub mod preflight;
pub mod sources;

use std::time::Instant;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub use crate::commands::restore::RestoreArgs;
use crate::disk::TargetDisk;
use crate::repo::{Repository, SnapshotId};
use crate::ui::{bytes, mib_per_s, print_table, Outcome, Ui};
use finish::Tables;
use pipeline::Counts;
use plan::{Choices, Deferred, Plan};
use preflight::Checked;
use sources::{Chain, ChunkSource, FromRepository, InPlace, Seed};

#[derive(Debug, Serialize, Deserialize)]
pub struct Summary {
    pub snapshot: SnapshotId,
    pub name: String,
    pub target: String,
    pub disk_size: u64,
    pub target_size: u64,
    pub data_bytes: u64,
    pub zero_bytes: u64,
    pub chunks: u64,
    /// Bytes written to the target (chunks and tables; not zeroed ranges).
    pub written_bytes: u64,
    /// Chunks the target already held, verified in place and not rewritten.
    pub kept_chunks: u64,
    pub kept_bytes: u64,
    /// Chunks taken from the seed image.
    pub seeded_chunks: u64,
    /// Chunks read from the repository.
    pub fetched_chunks: u64,
    /// The backup GPT was moved to the end of a larger target.
    pub grown: bool,
    /// `--grow`: the partition extended, and its new size.
    pub grown_partition: Option<u32>,
    pub grown_partition_size: Option<u64>,
    /// What happened to the filesystem in the grown partition.
    pub filesystem_resize: Option<String>,
    pub verified: bool,
    pub duration_s: f64,
    pub throughput_mib_s: f64,
    /// Requests sent to a network repository (retries included).
    pub requests: Option<u64>,
    /// How the snapshot's signature was checked.
    pub signature: String,
}

impl Outcome for Summary {
    fn print(&self) {
        print_table(&[
            (
                "snapshot",
                format!("{} ({})", self.snapshot.short(), self.name),
            ),
            (
                "target",
                format!("{} ({})", self.target, bytes(self.target_size)),
            ),
            (
                "written",
                format!(
                    "{} in {} verified chunks, {} zeros",
                    bytes(self.data_bytes),
                    self.chunks,
                    bytes(self.zero_bytes)
                ),
            ),
            ("signature", self.signature.clone()),
            (
                "table",
                if self.grown {
                    "GPT moved to the end of the larger target".into()
                } else {
                    "as captured".to_string()
                },
            ),
            (
                "verify",
                if self.verified {
                    "read back, every region matches".into()
                } else {
                    "not requested (--verify)".to_string()
                },
            ),
            (
                "time",
                format!(
                    "{:.2} s, {:.1} MiB/s",
                    self.duration_s, self.throughput_mib_s
                ),
            ),
        ]);
    }
}

pub fn run(args: &RestoreArgs, ui: &Ui) -> Result<Summary> {
    let start = Instant::now();
    let repo = Repository::open(&args.repo)?;
    let entry = crate::journal::Entry::begin(crate::journal::Operation::Restore);
    let result = restore_from(&repo, args, ui, start);
    let (name, snapshot, details) = match &result {
        Ok(s) => (
            Some(s.name.clone()),
            Some(s.snapshot),
            serde_json::to_value(s).unwrap_or_default(),
        ),
        Err(_) => (
            None,
            None,
            serde_json::json!({ "snapshot": args.snapshot, "target": args.target }),
        ),
    };
    crate::journal::note(
        &repo,
        &entry.record(&result, name.as_deref(), snapshot, details),
    );
    result
}

/// The restore itself, from an open repository.
fn restore_from(repo: &Repository, args: &RestoreArgs, ui: &Ui, start: Instant) -> Result<Summary> {
    let checked = preflight::check(repo, args, ui).with_context(|| {
        format!(
            "preflight failed; nothing was written to {}",
            args.target.display()
        )
    })?;
    let m = &checked.snap.manifest;
    let target = if checked.create {
        TargetDisk::create_image(&args.target, m.disk.size)?
    } else {
        TargetDisk::open(&args.target)?
    };
    // The point of no return: from here a failure wipes the table.
    let (counts, tables) = wipe_on_failure(&target, || {
        target
            .wipe_tables()
            .context("wipe the old partition table")?;
        write_snapshot(repo, &checked, &target, args, ui)
    })?;
    target.reread_partitions();
    let filesystem_resize = tables.grown.map(|g| finish::grow_filesystem(m, g, &target));
    let mut summary = summarise(
        &checked,
        args,
        &target,
        counts,
        tables,
        filesystem_resize,
        start,
    );
    summary.requests = repo.store().requests();
    summary.signature = checked.verdict.to_string();
    Ok(summary)
}

/// Run `write`; if it fails, wipe the target's tables again so that it cannot boot
/// half-restored, and say so in the error.
fn wipe_on_failure<T>(target: &TargetDisk, write: impl FnOnce() -> Result<T>) -> Result<T> {
    write().map_err(|e| {
        let what = match target.wipe_tables() {
            Ok(()) => format!(
                "restore failed after writing began; the partition table on {} was wiped so the disk cannot boot half-restored",
                target.path.display()
            ),
            Err(w) => format!(
                "restore failed after writing began, and wiping the partition table failed too ({w:#}): do not boot {}",
                target.path.display()
            ),
        };
        e.context(what)
    })
}

/// Plan, put every chunk in place, then the tables, then verify when asked.
fn write_snapshot(
    repo: &Repository,
    checked: &Checked,
    target: &TargetDisk,
    args: &RestoreArgs,
    ui: &Ui,
) -> Result<(Counts, Tables)> {
    let m = &checked.snap.manifest;
    // A fresh image file reads as zeros already; anything else gets its holes zeroed.
    // An existing target is read before it is written: what it already holds stays.
    let reuse = !checked.create && !args.no_reuse;
    let seed_places = match &checked.seed {
        Some(Seed::Snapshot(places)) => Some(places),
        _ => None,
    };
    let plan = Plan::new(
        m,
        &Choices {
            create: checked.create,
            reuse,
            zero_free: args.zero_free,
            seed_places,
        },
    );
    let in_place = InPlace { target, repo };
    let from_repo = FromRepository { repo };
    let mut sources: Vec<&dyn ChunkSource> = vec![&in_place];
    if let Some(Seed::Image(image)) = &checked.seed {
        sources.push(image);
    }
    sources.push(&from_repo);
    let mut deferred = Deferred::new(plan.deferred);
    let progress = crate::io::Progress::new("restore", m.disk.size, ui);
    let settings = pipeline::Settings {
        workers: repo.concurrency(),
        check_zeros: reuse && target.is_block,
    };
    let counts = pipeline::write(
        plan,
        target,
        &Chain::new(sources),
        &mut deferred,
        &settings,
        &progress,
    );
    progress.finish();
    let mut counts = counts?;
    let tables = finish::write_tables(m, target, &mut deferred, args.grow)?;
    counts.written_bytes += tables.written_bytes;
    if args.verify {
        finish::verify(m, target, &deferred, &tables, repo.region_key())?;
    }
    Ok((counts, tables))
}

fn summarise(
    checked: &Checked,
    args: &RestoreArgs,
    target: &TargetDisk,
    counts: Counts,
    tables: Tables,
    filesystem_resize: Option<String>,
    start: Instant,
) -> Summary {
    let m = &checked.snap.manifest;
    let elapsed = start.elapsed();
    Summary {
        snapshot: checked.snap.id,
        name: m.name.clone(),
        target: args.target.display().to_string(),
        disk_size: m.disk.size,
        target_size: target.size,
        data_bytes: m.data_bytes(),
        zero_bytes: counts.zero_bytes,
        chunks: m.chunk_ids().count() as u64,
        written_bytes: counts.written_bytes,
        kept_chunks: counts.kept_chunks,
        kept_bytes: counts.kept_bytes,
        seeded_chunks: counts.seeded_chunks,
        fetched_chunks: counts.fetched_chunks,
        grown: tables.relocated,
        grown_partition: tables.grown.map(|g| g.number),
        grown_partition_size: tables.grown.map(|g| g.size),
        filesystem_resize,
        verified: args.verify,
        duration_s: elapsed.as_secs_f64(),
        throughput_mib_s: mib_per_s(m.disk.size, elapsed),
        requests: None,
        signature: String::new(),
    }
}
