//! Restore: check everything before touching the target (`preflight`), work out from the
//! manifest alone what goes where (`plan`), stream the chunks onto the target from the
//! first source that has each, every one verified (`sources`, `pipeline`), and write the
//! partition tables last (`finish`). Once writing has begun, any failure wipes the tables
//! so that a half-restored disk cannot boot.

mod args;
pub mod dry_run;
pub mod finish;
mod lvm_grow;
mod lvm_tools;
mod partitions;
pub mod pipeline;
pub mod plan;
pub mod preflight;
mod resize;
pub mod shrink;
pub mod sources;
pub mod targets;

use std::time::Instant;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::disk::TargetDisk;
use crate::journal::{self, Operation, Subject};
use crate::repo::{Manifest, Repository, SnapshotId};
use crate::ui::{bytes, mib_per_s, print_table, Outcome, Ui};
pub use args::RestoreArgs;
use finish::Tables;
use pipeline::Counts;
use plan::{Choices, Deferred, Plan};
use preflight::{Checked, CheckedDisk};
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
    /// The disk was restored onto a larger target (its backup GPT moved to the end).
    pub grown: bool,
    /// The disk was restored onto a smaller target (its last partition shrunk).
    pub shrunk: bool,
    /// Every partition, volume and filesystem grown or shrunk, in words.
    pub resized: Vec<String>,
    /// `--partition`: the partitions restored (the table and the rest left as they were);
    /// empty when the whole disk was.
    pub partitions: Vec<String>,
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
    /// Each disk restored (one for a snapshot of one disk).
    pub disks: Vec<DiskRestored>,
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
            ("written", self.written_line()),
            ("chunks", self.chunks_line()),
            ("signature", self.signature.clone()),
            ("table", self.table_line()),
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
        for r in &self.resized {
            crate::outln!("resized    {r}");
        }
    }
}

impl Summary {
    /// What reached the target: bytes written, and zeros.
    fn written_line(&self) -> String {
        format!(
            "{} ({} of data in the snapshot; {} made zero)",
            bytes(self.written_bytes),
            bytes(self.data_bytes),
            bytes(self.zero_bytes)
        )
    }

    /// Where each of the chunks came from: every one verified by its hash.
    fn chunks_line(&self) -> String {
        let mut parts = vec![format!(
            "{} fetched from the repository",
            self.fetched_chunks
        )];
        if self.seeded_chunks > 0 {
            parts.push(format!("{} from the seed image", self.seeded_chunks));
        }
        if self.kept_chunks > 0 {
            parts.push(format!(
                "{} ({}) already in place, verified and kept",
                self.kept_chunks,
                bytes(self.kept_bytes)
            ));
        }
        format!("{}, every one verified: {}", self.chunks, parts.join(", "))
    }

    /// What became of the partition table.
    fn table_line(&self) -> String {
        if !self.partitions.is_empty() {
            return format!(
                "left as it was; restored only {}",
                self.partitions.join(", ")
            );
        }
        match (self.shrunk, self.grown) {
            (true, _) => "GPT rewritten for the smaller target (its last partition shrunk)".into(),
            (false, true) => "GPT moved to the end of the larger target".into(),
            (false, false) => "as captured".into(),
        }
    }
}

/// `--dry-run`: the preflight and the plan, nothing written (nor journaled).
pub fn dry_run(args: &RestoreArgs, ui: &Ui) -> Result<dry_run::DryRun> {
    let repo = Repository::open(&args.repo)?;
    dry_run::run(&repo, args, ui)
}

pub fn run(args: &RestoreArgs, ui: &Ui) -> Result<Summary> {
    let start = Instant::now();
    let repo = Repository::open(&args.repo)?;
    let what = format!("restore of {} onto {}", args.snapshot, targets(args));
    journal::recorded(
        &repo,
        Operation::Restore,
        || {
            restore_from(&repo, args, ui, start).map_err(|e| {
                let began = e.downcast_ref::<AfterWriting>().is_some();
                crate::io::interrupt::explain(e, &what, || match began {
                    true => format!(
                        "the partition tables of {} were wiped, so that a half-restored disk does not \
                         boot. Run the same command again: what is already in place is verified and \
                         kept, the rest fetched",
                        targets(args)
                    ),
                    false => format!("nothing was written to {}", targets(args)),
                })
            })
        },
        |result| {
            Some(match result {
                Ok(s) => Subject {
                    name: Some(s.name.clone()),
                    snapshot: Some(s.snapshot),
                    details: serde_json::to_value(s).unwrap_or_default(),
                    failure: None,
                },
                Err(_) => Subject {
                    details: serde_json::json!({ "snapshot": args.snapshot, "target": targets(args) }),
                    ..journal::named(&repo, &args.snapshot)
                },
            })
        },
    )
}

/// The targets named, for messages.
fn targets(args: &RestoreArgs) -> String {
    let t: Vec<String> = args.target.iter().map(|t| t.target.to_string()).collect();
    t.join(", ")
}

/// The restore itself, from an open repository: every disk's preflight, then each disk
/// in turn. A failure once writing has begun wipes the tables of every target.
fn restore_from(repo: &Repository, args: &RestoreArgs, ui: &Ui, start: Instant) -> Result<Summary> {
    if !args.partition.is_empty() {
        return restore_partitions(repo, args, ui, start);
    }
    let checked = preflight::check(repo, args, ui)
        .with_context(|| format!("preflight failed; nothing was written to {}", targets(args)))?;
    // A disk that must shrink is restored and shrunk on a scratch copy first: a failure
    // there leaves every target untouched.
    let mut shrunk = Vec::with_capacity(checked.disks.len());
    for d in &checked.disks {
        shrunk.push(match d.shrink {
            Some(s) => Some(shrink_on_scratch(repo, d, s, args, ui)?),
            None => None,
        });
    }
    let mut opened = Vec::with_capacity(checked.disks.len());
    for d in &checked.disks {
        opened.push(match d.create {
            true => TargetDisk::create_image(&d.target, d.manifest.disk.size)?,
            false => TargetDisk::open(&d.target)?,
        });
    }
    // The point of no return: from here a failure wipes the tables.
    let written = wipe_on_failure(&opened, || {
        let mut out = Vec::with_capacity(opened.len());
        for ((d, target), scratch) in checked.disks.iter().zip(&opened).zip(&shrunk) {
            target
                .wipe_tables()
                .context("wipe the old partition table")?;
            let done = match (scratch, d.shrink) {
                (Some((image, counts, _)), Some(s)) => {
                    write_shrunk(d, image, *counts, target, s, args)
                }
                _ => write_snapshot(repo, d, target, args, ui),
            }
            .with_context(|| format!("disk {} onto {}", d.index, d.target.display()))?;
            out.push(done);
        }
        Ok(out)
    })?;
    drop(shrunk);
    let mut disks = Vec::with_capacity(written.len());
    for ((d, target), (counts, tables)) in checked.disks.iter().zip(&opened).zip(written) {
        target.reread_partitions();
        let resize = match d.shrink {
            Some(s) => Some(shrink::said(&s)),
            None => tables
                .grown
                .map(|g| finish::grow_filesystem(&d.manifest, g, target)),
        };
        disks.push(summarise_disk(d, target, counts, tables, resize));
    }
    let mut summary = summarise(&checked, args, disks, start);
    summary.requests = repo.store().requests();
    summary.signature = checked.verdict.to_string();
    Ok(summary)
}

/// Run `write`; if it fails, wipe every target's tables again so that none can boot
/// half-restored, and say so in the error.
fn wipe_on_failure<T>(targets: &[TargetDisk], write: impl FnOnce() -> Result<T>) -> Result<T> {
    write().map_err(|e| {
        let names: Vec<String> = targets
            .iter()
            .map(|t| t.path.display().to_string())
            .collect();
        let failed: Vec<String> = targets
            .iter()
            .filter_map(|t| {
                t.wipe_tables()
                    .err()
                    .map(|w| format!("{}: {w:#}", t.path.display()))
            })
            .collect();
        let what = if failed.is_empty() {
            format!(
                "restore failed after writing began; the partition table on {} was wiped so the disk cannot boot half-restored",
                names.join(", ")
            )
        } else {
            format!(
                "restore failed after writing began, and wiping the partition table failed too ({}): do not boot {}",
                failed.join("; "),
                names.join(", ")
            )
        };
        e.context(AfterWriting(what))
    })
}

/// The context of a failure once writing had begun (the tables then wiped).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct AfterWriting(String);

/// A disk to shrink, restored whole onto a scratch image and its last filesystem shrunk
/// there: the image (removed when dropped), the counts of its restore.
fn shrink_on_scratch(
    repo: &Repository,
    d: &CheckedDisk,
    s: shrink::Shrink,
    args: &RestoreArgs,
    ui: &Ui,
) -> Result<(ScratchImage, Counts, Tables)> {
    let dir = args.scratch.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = shrink::Scratch::in_dir(&dir);
    let image =
        TargetDisk::create_image(&scratch.path, d.manifest.disk.size).with_context(|| {
            format!(
                "create the scratch copy for shrinking in {} (--scratch DIR puts it elsewhere; it \
             takes about the snapshot's data, {})",
                dir.display(),
                bytes(d.manifest.data_bytes())
            )
        })?;
    let (counts, tables) = write_disk(repo, &d.manifest, true, None, &image, args, false, ui)
        .context("restore onto the scratch copy")?;
    let shrunk = shrink::shrink_filesystem(&image, &s)?;
    Ok((
        ScratchImage {
            disk: image,
            shrunk,
            _file: scratch,
        },
        counts,
        tables,
    ))
}

/// A scratch image and the file it lives in (removed when dropped).
struct ScratchImage {
    disk: TargetDisk,
    /// Where the filesystem that was shrunk is, if one was.
    shrunk: Option<crate::range::ByteRange>,
    _file: shrink::Scratch,
}

/// Copy a shrunk scratch image onto its target, tables last; verify its filesystem.
fn write_shrunk(
    d: &CheckedDisk,
    image: &ScratchImage,
    mut counts: Counts,
    target: &TargetDisk,
    s: shrink::Shrink,
    args: &RestoreArgs,
) -> Result<(Counts, Tables)> {
    let tables =
        shrink::write_target(&image.disk, target, &s, d.manifest.disk.logical_sector_size)?;
    counts.written_bytes = tables.written_bytes;
    if let (true, Some(fs)) = (args.verify, image.shrunk) {
        shrink::check_filesystem(target, fs)?;
    }
    Ok((counts, tables))
}

/// Plan, put every chunk of one disk in place, then its tables, then verify when asked.
fn write_snapshot(
    repo: &Repository,
    d: &CheckedDisk,
    target: &TargetDisk,
    args: &RestoreArgs,
    ui: &Ui,
) -> Result<(Counts, Tables)> {
    write_disk(
        repo,
        &d.manifest,
        d.create,
        d.seed.as_ref(),
        target,
        args,
        args.grow,
        ui,
    )
}

/// Restore the disk `m` onto `target` (`create`: a new image file; `grow`: the last
/// partition to the end of a larger target).
#[allow(clippy::too_many_arguments)]
fn write_disk(
    repo: &Repository,
    m: &Manifest,
    create: bool,
    seed: Option<&Seed>,
    target: &TargetDisk,
    args: &RestoreArgs,
    grow: bool,
    ui: &Ui,
) -> Result<(Counts, Tables)> {
    // A fresh image file reads as zeros already; anything else gets its holes zeroed.
    // An existing target is read before it is written: what it already holds stays.
    let reuse = !create && !args.no_reuse;
    let seed_places = match seed {
        Some(Seed::Snapshot(places)) => Some(places),
        _ => None,
    };
    let plan = Plan::new(
        m,
        &Choices {
            create,
            reuse,
            zero_free: args.zero_free,
            seed_places,
        },
    );
    let in_place = InPlace { target, repo };
    let from_repo = FromRepository { repo };
    let mut sources: Vec<&dyn ChunkSource> = vec![&in_place];
    if let Some(Seed::Image(image)) = seed {
        sources.push(image);
    }
    sources.push(&from_repo);
    let mut deferred = Deferred::new(plan.deferred);
    let progress = crate::io::Progress::new("restore", plan.chunk_bytes(), ui);
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
    let tables = finish::write_tables(m, target, &mut deferred, grow)?;
    counts.written_bytes += tables.written_bytes;
    if args.verify {
        finish::verify(m, target, &deferred, &tables, repo.region_key())?;
    }
    Ok((counts, tables))
}

/// What was done to one disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiskRestored {
    /// Its number in the snapshot.
    pub disk: usize,
    pub target: String,
    pub disk_size: u64,
    pub target_size: u64,
    pub data_bytes: u64,
    pub written_bytes: u64,
    /// Restored onto a larger target (its backup GPT moved to the end).
    pub grown: bool,
    /// Restored onto a smaller target (its last partition shrunk).
    pub shrunk: bool,
    pub grown_partition: Option<u32>,
    pub grown_partition_size: Option<u64>,
    pub filesystem_resize: Option<String>,
}

fn summarise_disk(
    d: &CheckedDisk,
    target: &TargetDisk,
    counts: Counts,
    tables: Tables,
    filesystem_resize: Option<String>,
) -> (DiskRestored, Counts) {
    let m = &d.manifest;
    (
        DiskRestored {
            disk: d.index,
            target: d.target.display().to_string(),
            disk_size: m.disk.size,
            target_size: target.size,
            data_bytes: m.data_bytes(),
            written_bytes: counts.written_bytes,
            grown: tables.relocated && target.size > m.disk.size,
            shrunk: d.shrink.is_some(),
            grown_partition: tables.grown.map(|g| g.number),
            grown_partition_size: tables.grown.map(|g| g.size),
            filesystem_resize,
        },
        counts,
    )
}

/// `--partition`: the chosen partitions only, into the target's own table.
fn restore_partitions(
    repo: &Repository,
    args: &RestoreArgs,
    ui: &Ui,
    start: Instant,
) -> Result<Summary> {
    let done = partitions::run(repo, args, ui)?;
    let d = &done.checked.disks[0];
    let target = TargetDisk::open(&d.target)?;
    let disk = summarise_disk(d, &target, done.counts, Tables::default(), None);
    let mut summary = summarise(&done.checked, args, vec![disk], start);
    summary.chunks =
        done.counts.kept_chunks + done.counts.seeded_chunks + done.counts.fetched_chunks;
    summary.partitions = done.partitions;
    summary.requests = repo.store().requests();
    summary.signature = done.checked.verdict.to_string();
    Ok(summary)
}

/// The whole restore: its disks, and their sums.
fn summarise(
    checked: &Checked,
    args: &RestoreArgs,
    disks: Vec<(DiskRestored, Counts)>,
    start: Instant,
) -> Summary {
    let elapsed = start.elapsed();
    let sum = |f: &dyn Fn(&Counts) -> u64| disks.iter().map(|(_, c)| f(c)).sum::<u64>();
    let size: u64 = disks.iter().map(|(d, _)| d.disk_size).sum();
    let grown = disks.iter().find(|(d, _)| d.grown_partition.is_some());
    Summary {
        snapshot: checked.id,
        name: checked.name.clone(),
        target: checked
            .disks
            .iter()
            .map(|d| d.target.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        disk_size: size,
        target_size: disks.iter().map(|(d, _)| d.target_size).sum(),
        data_bytes: disks.iter().map(|(d, _)| d.data_bytes).sum(),
        zero_bytes: sum(&|c| c.zero_bytes),
        chunks: checked
            .disks
            .iter()
            .map(|d| d.manifest.chunk_ids().count() as u64)
            .sum(),
        written_bytes: sum(&|c| c.written_bytes),
        kept_chunks: sum(&|c| c.kept_chunks),
        kept_bytes: sum(&|c| c.kept_bytes),
        seeded_chunks: sum(&|c| c.seeded_chunks),
        fetched_chunks: sum(&|c| c.fetched_chunks),
        grown: disks.iter().any(|(d, _)| d.grown),
        shrunk: disks.iter().any(|(d, _)| d.shrunk),
        partitions: Vec::new(),
        resized: disks
            .iter()
            .filter_map(|(d, _)| d.filesystem_resize.clone())
            .collect(),
        grown_partition: grown.and_then(|(d, _)| d.grown_partition),
        grown_partition_size: grown.and_then(|(d, _)| d.grown_partition_size),
        filesystem_resize: grown.and_then(|(d, _)| d.filesystem_resize.clone()),
        verified: args.verify,
        duration_s: elapsed.as_secs_f64(),
        throughput_mib_s: mib_per_s(size, elapsed),
        requests: None,
        signature: String::new(),
        disks: disks.into_iter().map(|(d, _)| d).collect(),
    }
}
