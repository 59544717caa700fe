//! Capture: read a disk's table and regions, work out once which bytes the filesystems use
//! (`usage`), cut the regions into content-defined chunks on all cores and store the new
//! ones (`segments`), put each region back together with its holes and hash (`assemble`),
//! and record a manifest, after the chunks it names are durable.

mod args;
pub mod assemble;
pub mod live;
pub mod segments;
mod unlock;
pub mod usage;

use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::disk::layout::{read_layout, Layout};
use crate::disk::SourceDisk;
use crate::io::Progress;
use crate::journal::{self, Operation, Subject};
use crate::location::DiskLocation;
use crate::range;
use crate::repo::manifest::{
    Consistency, ConsistencyKind, DiskImage, Manifest, Region, SourceInfo, MANIFEST_FORMAT,
    MANIFEST_VERSION,
};
use crate::repo::{Repository, SnapshotId};
use crate::ui::{bytes, mib_per_s, print_table, Outcome, Ui};
pub use args::CaptureArgs;
use segments::{NewData, SegmentDone, Workers};
use usage::RegionUsage;

#[derive(Debug, Serialize, Deserialize)]
pub struct Summary {
    pub snapshot: SnapshotId,
    pub name: String,
    /// The disks read, as named ("a, b" for several).
    pub source: String,
    /// How many disks the snapshot holds.
    pub disks: usize,
    pub table: String,
    /// Of all its disks.
    pub disk_size: u64,
    /// Bytes read from the disk.
    pub bytes_read: u64,
    /// Bytes that filesystems mark free, not read.
    pub free_bytes_skipped: u64,
    pub data_bytes: u64,
    pub hole_bytes: u64,
    pub chunks: u64,
    pub new_chunks: u64,
    pub new_plain_bytes: u64,
    pub new_stored_bytes: u64,
    /// Data bytes per new plaintext byte stored (null when nothing was new).
    pub dedup_ratio: Option<f64>,
    /// New plaintext bytes per stored byte.
    pub compression_ratio: Option<f64>,
    pub duration_s: f64,
    pub throughput_mib_s: f64,
    /// The key id the snapshot was signed with (`--sign`).
    pub signed_by: Option<String>,
    pub notes: Vec<String>,
}

impl Outcome for Summary {
    fn print(&self) {
        print_table(&[
            (
                "snapshot",
                format!("{} ({})", self.snapshot.short(), self.name),
            ),
            (
                "source",
                match self.disks {
                    1 => format!(
                        "{} ({}, {} table)",
                        self.source,
                        bytes(self.disk_size),
                        self.table
                    ),
                    n => format!(
                        "{n} disks: {} ({} in all, {} tables)",
                        self.source,
                        bytes(self.disk_size),
                        self.table
                    ),
                },
            ),
            ("read", bytes(self.bytes_read)),
            (
                "data",
                format!(
                    "{} in {} chunks, {} zeros not stored",
                    bytes(self.data_bytes),
                    self.chunks,
                    bytes(self.hole_bytes)
                ),
            ),
            (
                "new",
                format!(
                    "{} chunks, {} stored as {}",
                    self.new_chunks,
                    bytes(self.new_plain_bytes),
                    bytes(self.new_stored_bytes)
                ),
            ),
            (
                "dedup",
                self.dedup_ratio
                    .map(|r| format!("{r:.1}x"))
                    .unwrap_or_else(|| "everything was already stored".into()),
            ),
            (
                "time",
                format!(
                    "{:.2} s, {:.1} MiB/s",
                    self.duration_s, self.throughput_mib_s
                ),
            ),
            (
                "signed",
                match &self.signed_by {
                    Some(k) => format!("by key {k}"),
                    None => "no (--sign)".into(),
                },
            ),
        ]);
        for n in &self.notes {
            crate::outln!("note: {n}");
        }
    }
}

pub fn run(args: &CaptureArgs, ui: &Ui) -> Result<Summary> {
    let start = Instant::now();
    let time = match &args.time {
        Some(t) => Some(crate::time::rfc3339(
            crate::time::parse_rfc3339(t).context("--time")?,
        )),
        None => None,
    };
    let repo = open_repository(args)?;
    journal::recorded(
        &repo,
        Operation::Capture,
        || capture_into(&repo, args, time, ui, start),
        |result| {
            Some(Subject {
                name: Some(args.name.clone()),
                snapshot: result.as_ref().ok().map(|s| s.snapshot),
                details: match result {
                    Ok(s) => serde_json::to_value(s).unwrap_or_default(),
                    Err(_) => serde_json::json!({ "source": sources(args) }),
                },
                failure: None,
            })
        },
    )
}

/// The capture itself, into an open repository.
fn capture_into(
    repo: &Repository,
    args: &CaptureArgs,
    time: Option<String>,
    ui: &Ui,
    start: Instant,
) -> Result<Summary> {
    // The key is read before anything is: a wrong one stops the capture at once.
    let key = signing_key(args)?;
    let mut consistency = match args.live {
        true => None,
        false => consistency(args)?,
    };
    // A lease first, then the prune intents: a prune that marks data after this reads
    // them waits for this capture (see prune::intent).
    let lease = crate::prune::lease::Lease::take(repo, "capture")?;
    let intents = crate::prune::intent::list(repo)?;
    repo.exclude_chunks(crate::prune::intent::dropped(&intents));
    let lineage = Lineage::of(repo, &args.name)?;
    let mut live = match args.live {
        true => Some(live::prepare(
            &args.source,
            args.pre_hook.as_deref(),
            args.post_hook.as_deref(),
        )?),
        false => None,
    };
    let Captured {
        disks,
        size,
        new,
        mut notes,
    } = capture_disks(repo, args, live.as_mut(), ui)
        .map_err(|e| keep_on_interrupt(repo, args, e))?;
    if let Some(l) = live {
        log::info!("removing the snapshots {}", l.snapshots().join(", "));
        consistency = Some(Consistency {
            kind: ConsistencyKind::Live,
            reasons: l.reasons.clone(),
        });
        drop(l);
    }
    let mut manifest = manifest(args, repo, disks, lineage);
    if let Some(c) = consistency {
        notes.push(format!(
            "{}: read while in use ({})",
            c.kind,
            c.reasons.join("; ")
        ));
        manifest.consistency = Some(c);
    }
    if let Some(t) = time {
        manifest.time = t;
    }
    repo.flush()?;
    // A prune waits for this capture while its lease is fresh; if it ever went stale, a
    // prune may not have, and what this capture used must still be there.
    if !lease.held_throughout() {
        crate::prune::intent::check_capture(repo, manifest.chunk_ids(), &repo.stored_here())?;
    }
    // Chunks are durable before the manifest that names them (save_manifest flushes
    // first), and the manifest before its signature.
    let id = repo
        .save_manifest(&manifest)
        .context("save the snapshot manifest")?;
    if let Some(k) = &key {
        crate::trust::sign(repo, &id, k)?;
    }
    let mut summary = summarise(args, id, &manifest, size, new, notes, start);
    summary.signed_by = key.map(|k| k.public().id().to_string());
    Ok(summary)
}

/// An interrupted capture keeps what it stored: its packs so far are written and named
/// by an index file (under its lease still), so that the same command, run again, sends
/// only what is not there yet.
fn keep_on_interrupt(repo: &Repository, args: &CaptureArgs, e: anyhow::Error) -> anyhow::Error {
    let what = format!("capture of {}", args.name);
    crate::io::interrupt::explain(e, &what, || {
        let stored = repo.stored_here().len();
        match repo.flush() {
            Ok(()) => format!(
                "no snapshot was saved; the {stored} new chunks stored so far are kept. Run the same \
                 command again: it resumes, sending only what is not stored yet (or `lifeboat prune` \
                 frees them)"
            ),
            Err(f) => format!(
                "no snapshot was saved, and the chunks stored so far could not be indexed ({f:#}); \
                 the same command, run again, stores them again, and `lifeboat prune` frees the \
                 packs left"
            ),
        }
    })
}

/// The signing key `--sign` names, its passphrase read as `--sign-password-file` says.
fn signing_key(args: &CaptureArgs) -> Result<Option<crate::crypt::signing::SigningKey>> {
    args.sign
        .as_deref()
        .map(|path| {
            crate::crypt::signing::SigningKey::load(path, || {
                crate::crypt::passphrase::get(
                    args.sign_password_file.as_deref(),
                    &format!("passphrase of {}", path.display()),
                    &format!(
                        "{} is sealed under a passphrase: give --sign-password-file",
                        path.display()
                    ),
                )
            })
        })
        .transpose()
}

/// A machine's disks, read and stored.
struct Captured {
    disks: Vec<DiskImage>,
    size: Sizes,
    new: NewData,
    /// Prefixed with the disk's number when there are several.
    notes: Vec<String>,
}

/// Every disk of the machine, in order, each read through its `--live` views if any.
fn capture_disks(
    repo: &Repository,
    args: &CaptureArgs,
    mut live: Option<&mut live::Live>,
    ui: &Ui,
) -> Result<Captured> {
    let several = args.source.len() > 1;
    let mut notes = Vec::new();
    let mut size = Sizes { total: 0, free: 0 };
    let mut new = NewData::default();
    let mut disks = Vec::with_capacity(args.source.len());
    let seen = Seen::default();
    for (i, location) in args.source.iter().enumerate() {
        let overlays = live
            .as_mut()
            .map(|l| std::mem::take(&mut l.views[i]))
            .unwrap_or_default();
        let d = capture_disk(repo, args, location, overlays, &seen, ui)?;
        let prefix = if several {
            format!("disk {i}: ")
        } else {
            String::new()
        };
        notes.extend(d.notes.iter().map(|n| format!("{prefix}{n}")));
        size.total += d.size.total;
        size.free += d.size.free;
        new.add(d.new);
        disks.push(d.image);
    }
    Ok(Captured {
        disks,
        size,
        new,
        notes,
    })
}

/// The chunks a capture has stored or found stored so far, over all its disks.
type Seen = std::sync::Mutex<std::collections::HashSet<crate::repo::ChunkId>>;

/// One disk, read and stored.
struct CapturedDisk {
    image: DiskImage,
    size: Sizes,
    new: NewData,
    notes: Vec<String>,
}

/// Read one disk's table, work out what its filesystems use, and store its regions.
fn capture_disk(
    repo: &Repository,
    args: &CaptureArgs,
    location: &DiskLocation,
    overlays: Vec<crate::disk::source::Overlay>,
    seen: &Seen,
    ui: &Ui,
) -> Result<CapturedDisk> {
    let mut dev = SourceDisk::open(location)?;
    for o in overlays {
        dev.add_overlay(o);
    }
    let layout = read_layout(&dev, args.sector_size)
        .with_context(|| format!("read the partition table of {location}"))?;
    for n in &layout.notes {
        log::warn!("{n}");
    }
    let mut notes = layout.notes.clone();
    let usage: Vec<RegionUsage> = layout
        .regions
        .iter()
        .map(|r| match args.full {
            true => Ok(RegionUsage::default()),
            false => usage::region_usage(&dev, &layout.disk, r, &args.luks_keyfile, &mut notes),
        })
        .collect::<Result<_>>()?;
    let size = Sizes {
        total: layout.regions.iter().map(|r| r.length).sum(),
        free: usage.iter().map(|u| range::total(&u.free)).sum(),
    };
    // The bytes read: free space is skipped, not read.
    let progress = Progress::new("capture", size.total.saturating_sub(size.free), ui);
    let read = read_regions(repo, &dev, &layout, usage, &progress, seen);
    progress.finish();
    let (regions, new) = read?;
    let identity = dev.identity();
    Ok(CapturedDisk {
        image: DiskImage {
            source: SourceInfo {
                path: location.to_string(),
                model: identity.model,
                serial: identity.serial,
                wwn: identity.wwn,
            },
            disk: layout.disk,
            regions,
        },
        size,
        new,
        notes,
    })
}

/// Refuse a source that may change while it is read, unless the user accepts a
/// crash-consistent image; what was using it is then recorded.
fn consistency(args: &CaptureArgs) -> Result<Option<Consistency>> {
    let mut uses: Vec<String> = Vec::new();
    for location in &args.source {
        // An NBD export: what serves it is the judge of its consistency.
        let DiskLocation::Path(path) = location else {
            continue;
        };
        uses.extend(
            crate::disk::guard::uses(path)?
                .into_iter()
                .filter(|u| u.may_change())
                .map(|u| u.to_string()),
        );
    }
    if uses.is_empty() {
        return Ok(None);
    }
    if !args.crash_consistent {
        bail!(
            "source {} is in use and may change while it is read: {}. An image read now \
             would match no moment of the disk. Capture it from the rescue (boot it with \
             lifeboat.action=capture), unmount or remount it read-only first, or accept a \
             crash-consistent image with --crash-consistent",
            sources(args),
            uses.join("; ")
        );
    }
    log::warn!(
        "{} is in use ({}): capturing a crash-consistent image, as --crash-consistent asks",
        sources(args),
        uses.join("; ")
    );
    Ok(Some(Consistency {
        kind: ConsistencyKind::CrashConsistent,
        reasons: uses,
    }))
}

/// Where a new snapshot stands among those of its name: the newest (its parent) and
/// the sequence number that follows.
struct Lineage {
    parent: Option<SnapshotId>,
    sequence: u64,
}

impl Lineage {
    fn of(repo: &Repository, name: &str) -> Result<Lineage> {
        let mut parent = None;
        let mut sequence = 1;
        for (id, s) in repo.snapshots().context("list the snapshots")? {
            let Ok(s) = s else { continue };
            if s.manifest.name == name {
                sequence = sequence.max(s.manifest.sequence.unwrap_or(0) + 1);
                parent = Some(id);
            }
        }
        Ok(Lineage { parent, sequence })
    }
}

/// The bytes of a disk's regions, and those of them not read (free filesystem space).
#[derive(Debug, Clone, Copy)]
struct Sizes {
    total: u64,
    free: u64,
}

/// The repository, with the level asked for and what interrupted writers left cleaned up.
fn open_repository(args: &CaptureArgs) -> Result<Repository> {
    let spec = crate::repo::RepoSpec {
        writes_data: true,
        ..args.repo.clone()
    };
    let mut repo = Repository::open(&spec)?;
    if !repo.store().writable() {
        bail!(
            "a capture writes to the repository, and {} is read-only for this client: give the \
             server's token with --token-file (or LIFEBOAT_TOKEN_FILE)",
            repo.display
        );
    }
    if let Some(level) = args.level {
        repo.config.compression.level = level;
    }
    let stale = repo
        .store()
        .clean_stale()
        .context("clean up after interrupted writers")?;
    if stale > 0 {
        log::info!("removed {stale} temporary files left by interrupted captures");
    }
    Ok(repo)
}

/// Read, chunk and store every region; returns the regions as the manifest has them.
fn read_regions(
    repo: &Repository,
    dev: &SourceDisk,
    layout: &Layout,
    usage: Vec<RegionUsage>,
    progress: &Progress,
    seen: &Seen,
) -> Result<(Vec<Region>, NewData)> {
    let params = repo.config.chunker;
    let workers = Workers {
        dev,
        repo,
        params: &params,
        usage: &usage,
        progress,
        seen,
    };
    let mut per_region: Vec<Vec<SegmentDone>> =
        (0..layout.regions.len()).map(|_| Vec::new()).collect();
    let mut new = NewData::default();
    workers.run(
        segments::segments(&layout.regions, params.segment_size),
        |done| {
            new.add(done.new);
            per_region[done.region].push(done);
            Ok(())
        },
    )?;
    let regions = layout
        .regions
        .iter()
        .zip(usage)
        .zip(per_region)
        .map(|((plan, usage), done)| assemble::region(plan, usage, done, repo.region_key()))
        .collect();
    Ok((regions, new))
}

/// The sources named, for messages: "a.img, b.img".
fn sources(args: &CaptureArgs) -> String {
    let names: Vec<String> = args.source.iter().map(|s| s.to_string()).collect();
    names.join(", ")
}

fn manifest(
    args: &CaptureArgs,
    repo: &Repository,
    disks: Vec<DiskImage>,
    lineage: Lineage,
) -> Manifest {
    let mut disks = disks.into_iter();
    let first = disks.next().expect("clap requires one --source");
    let mut m = Manifest {
        format: MANIFEST_FORMAT.into(),
        version: MANIFEST_VERSION,
        name: args.name.clone(),
        time: crate::time::now_rfc3339(),
        hostname: crate::who::hostname(),
        repository: Some(repo.config.id.clone()),
        parent: lineage.parent,
        sequence: Some(lineage.sequence),
        consistency: None,
        source: first.source,
        disk: first.disk,
        chunker: repo.config.chunker,
        regions: first.regions,
        more_disks: Vec::new(),
    };
    for d in disks {
        m.push_disk(d);
    }
    m
}

fn summarise(
    args: &CaptureArgs,
    id: SnapshotId,
    m: &Manifest,
    size: Sizes,
    new: NewData,
    notes: Vec<String>,
    start: Instant,
) -> Summary {
    let data_bytes = m.data_bytes();
    let elapsed = start.elapsed();
    Summary {
        snapshot: id,
        name: args.name.clone(),
        source: sources(args),
        disks: m.disk_count(),
        table: m.joined(|_, d| d.table.to_string()),
        disk_size: m.total_size(),
        bytes_read: size.total - size.free,
        free_bytes_skipped: size.free,
        data_bytes,
        hole_bytes: m
            .all_regions()
            .flat_map(|r| &r.chunks)
            .filter(|c| c.id.is_none() && !c.free)
            .map(|c| c.length as u64)
            .sum(),
        chunks: m.chunk_ids().count() as u64,
        new_chunks: new.chunks,
        new_plain_bytes: new.plain_bytes,
        new_stored_bytes: new.stored_bytes,
        dedup_ratio: (new.plain_bytes > 0).then(|| data_bytes as f64 / new.plain_bytes as f64),
        compression_ratio: (new.stored_bytes > 0)
            .then(|| new.plain_bytes as f64 / new.stored_bytes as f64),
        duration_s: elapsed.as_secs_f64(),
        throughput_mib_s: mib_per_s(size.total, elapsed),
        signed_by: None,
        notes,
    }
}
