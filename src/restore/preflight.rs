//! Everything checked before the target is touched: the snapshot resolves and every chunk
//! it needs is in the repository; the target is a disk or image file that nothing uses,
//! is large enough and has the right sector size; the user said yes; a seed opens.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use crate::trust::{Policy, Verdict};
use anyhow::{bail, Context, Result};

use super::plan::ChunkPlace;
use super::shrink::Shrink;
use super::sources::{Seed, SeedImage};
use super::targets::{self, Machine, Target};
use super::RestoreArgs;
use crate::disk::{guard, Identity, SourceDisk};
use crate::io::parallel::{map_ordered, Width};
use crate::io::Progress;
use crate::location::DiskLocation;
use crate::repo::{ChunkId, Manifest, Repository, Snapshot, SnapshotId};
use crate::ui::{bytes, Ui};

/// What the preflight established.
pub struct Checked {
    pub id: SnapshotId,
    pub name: String,
    /// How the snapshot's signature was found.
    pub verdict: Verdict,
    /// The disks to restore, each with its target.
    pub disks: Vec<CheckedDisk>,
}

/// One disk of the snapshot and where it goes.
pub struct CheckedDisk {
    /// Its number in the snapshot.
    pub index: usize,
    /// The snapshot of this disk alone.
    pub manifest: Manifest,
    pub target: PathBuf,
    /// The target does not exist yet: create an image file.
    pub create: bool,
    pub seed: Option<Seed>,
    /// The target is smaller: how its last partition is shrunk to fit.
    pub shrink: Option<Shrink>,
}

/// What the target is before the restore.
struct TargetState {
    create: bool,
    size: u64,
    identity: Identity,
    shrink: Option<Shrink>,
}

pub fn check(repo: &Repository, args: &RestoreArgs, ui: &Ui) -> Result<Checked> {
    for t in &args.target {
        if let Target::Path(p) = &t.target {
            refuse_network_target(p)?;
        }
    }
    let policy = Policy::new(&args.trust, repo)?;
    let (snap, verdict) = policy.resolve(repo, &args.snapshot)?;
    log::info!(
        "snapshot {} ({}): {verdict}",
        snap.short_id(),
        snap.manifest.name
    );
    let mapping = targets::map(snap.manifest.disk_count(), &args.target)
        .map_err(|e| anyhow::anyhow!("snapshot {}: {e}", snap.short_id()))?;
    let recorded: Vec<_> = snap
        .manifest
        .disks()
        .map(|(s, d)| (s.clone(), d.size))
        .collect();
    let machine = Machine {
        excluded: &[],
        disks_only: false,
    };
    let chosen = targets::resolve(&mapping, Some(&recorded), machine)
        .context("find the target disks by their hints")?;
    if args.seed.is_some() && mapping.len() != 1 {
        bail!("--seed applies to the restore of one disk; restore the others apart");
    }
    all_chunks_present(repo, &snap)?;
    let Snapshot { id, manifest } = snap;
    let name = manifest.name.clone();
    let mut by_index: Vec<Option<Manifest>> = manifest.into_disks().into_iter().map(Some).collect();
    let mut disks = Vec::with_capacity(mapping.len());
    for ((index, _), target) in mapping.into_iter().zip(chosen) {
        let m = by_index[index].take().context("each disk is mapped once")?;
        let d = check_disk(repo, args, &id, index, m, target.path, ui)
            .with_context(|| format!("disk {index}"))?;
        disks.push(d);
    }
    Ok(Checked {
        id,
        name,
        verdict,
        disks,
    })
}

/// One disk's target: nothing uses it, it fits, the user says yes, its seed opens.
fn check_disk(
    repo: &Repository,
    args: &RestoreArgs,
    id: &SnapshotId,
    index: usize,
    manifest: Manifest,
    target: PathBuf,
    ui: &Ui,
) -> Result<CheckedDisk> {
    guard::check_target(&target, args.repo.local_dir())?;
    refuse_failing_disk(&target, args.force)?;
    let state = examine_target(&target, id, &manifest)?;
    if !state.create && !args.dry_run {
        confirm(args.yes, &target, id, &manifest, &state)?;
    }
    let seed = match &args.seed {
        Some(spec) => Some(open_seed(repo, &manifest, index, spec, &target, ui)?),
        None => None,
    };
    if state.shrink.is_some() && seed.is_some() {
        bail!("--seed and a smaller target do not go together");
    }
    Ok(CheckedDisk {
        index,
        manifest,
        create: state.create,
        target,
        seed,
        shrink: state.shrink,
    })
}

/// A block device whose own health says it is failing (an NVMe critical warning, an ATA
/// SMART threshold exceeded) is no
/// target unless `--force`: restoring a server onto a dying disk loses it again.
fn refuse_failing_disk(target: &Path, force: bool) -> Result<()> {
    let Some(disk) = crate::disk::detect::list_disks()
        .unwrap_or_default()
        .into_iter()
        .find(|d| Path::new(&d.path) == target)
    else {
        return Ok(());
    };
    let health = crate::diagnose::health::read(&disk);
    match (health.is_failing(), force) {
        (false, _) => Ok(()),
        (true, true) => {
            log::warn!("{}: {health}; restoring anyway (--force)", target.display());
            Ok(())
        }
        (true, false) => bail!(
            "target {} says it is failing: {health}; nothing was written (--force, or lifeboat.force=1 in the rescue, restores onto it anyway)",
            target.display()
        ),
    }
}

fn refuse_network_target(target: &Path) -> Result<()> {
    let local = target
        .to_str()
        .map(|s| matches!(s.parse::<DiskLocation>(), Ok(DiskLocation::Path(_))))
        .unwrap_or(true);
    if !local {
        bail!(
            "target {}: restores go to a block device or an image file",
            target.display()
        );
    }
    Ok(())
}

/// Every chunk present: asked by as many threads as the store wants requests in flight
/// (over HTTP each question is a round trip).
fn all_chunks_present(repo: &Repository, snap: &Snapshot) -> Result<()> {
    let unique: HashSet<ChunkId> = snap.manifest.chunk_ids().collect();
    let mut missing = Vec::new();
    map_ordered(
        unique.iter().copied(),
        Width::new(repo.concurrency(), 4),
        |id| Ok((id, repo.has_chunk(&id)?)),
        |(id, present)| {
            if !present {
                missing.push(id);
            }
            Ok(())
        },
    )?;
    if missing.is_empty() {
        return Ok(());
    }
    missing.sort();
    let list: Vec<String> = missing
        .iter()
        .take(5)
        .map(|id| repo.chunk_location(id))
        .collect();
    bail!(
        "snapshot {} is incomplete: {} of its {} chunks are missing from {} (first: {}); run `lifeboat check`",
        snap.short_id(),
        missing.len(),
        unique.len(),
        repo.display,
        list.join(", ")
    )
}

/// The target: size, sector size; or, when it does not exist, where it will be created.
fn examine_target(target: &Path, id: &SnapshotId, m: &Manifest) -> Result<TargetState> {
    match std::fs::metadata(target) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = target
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if !parent.is_dir() {
                bail!(
                    "target {} does not exist and neither does its directory",
                    target.display()
                );
            }
            return Ok(TargetState {
                create: true,
                size: m.disk.size,
                identity: Identity::default(),
                shrink: None,
            });
        }
        Err(e) => return Err(e).with_context(|| format!("stat {}", target.display())),
        Ok(_) => {}
    }
    let dev = SourceDisk::open_path(target)?;
    if let Some(ss) = dev.sector_size {
        if ss != m.disk.logical_sector_size {
            bail!(
                "target {} has {ss}-byte logical sectors but snapshot {} was captured from a disk with {}-byte sectors; its partition table would not be valid there",
                target.display(),
                id.short(),
                m.disk.logical_sector_size
            );
        }
    }
    let shrink = if dev.size < m.disk.size {
        let s = super::shrink::plan(m, dev.size).with_context(|| {
            format!(
                "target {} is too small: {} ({} bytes); snapshot {} was captured from a disk of \
                 {} ({} bytes), and cannot be shrunk to fit this one",
                target.display(),
                bytes(dev.size),
                dev.size,
                id.short(),
                bytes(m.disk.size),
                m.disk.size
            )
        })?;
        log::info!(
            "target {} is smaller than the snapshot's disk: partition {} will be shrunk from \
             {} to {}",
            target.display(),
            s.number,
            bytes(s.old_len),
            bytes(s.new_len)
        );
        Some(s)
    } else {
        None
    };
    Ok(TargetState {
        create: false,
        size: dev.size,
        identity: dev.identity(),
        shrink,
    })
}

/// The user says yes: `--yes`, or by typing the target's serial (its name when it has none).
fn confirm(
    yes: bool,
    target: &Path,
    id: &SnapshotId,
    m: &Manifest,
    state: &TargetState,
) -> Result<()> {
    if yes {
        return Ok(());
    }
    let Identity { model, serial, .. } = &state.identity;
    let token = serial.clone().unwrap_or_else(|| {
        target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| target.display().to_string())
    });
    if !std::io::stdin().is_terminal() {
        bail!(
            "refusing to overwrite {} without confirmation: pass --yes (there is no terminal to ask on)",
            target.display()
        );
    }
    eprintln!(
        "Restoring snapshot {} ({}, taken {} on {}) will ERASE everything on {} ({}{}{}).",
        id.short(),
        m.name,
        m.time,
        m.hostname,
        target.display(),
        bytes(state.size),
        model.as_ref().map(|m| format!(", {m}")).unwrap_or_default(),
        serial
            .as_ref()
            .map(|s| format!(", serial {s}"))
            .unwrap_or_default()
    );
    eprint!("Type {token} to continue: ");
    let line = crate::io::interrupt::read_line().context("read the confirmation")?;
    if line.trim() != token {
        bail!("confirmation did not match {token:?}");
    }
    Ok(())
}

/// Open the `--seed` given: an existing file or device is an image, anything else names an
/// older snapshot in the repository.
fn open_seed(
    repo: &Repository,
    m: &Manifest,
    index: usize,
    spec: &str,
    target: &Path,
    ui: &Ui,
) -> Result<Seed> {
    let path = Path::new(spec);
    if path.exists() {
        let same = match (std::fs::canonicalize(path), std::fs::canonicalize(target)) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if same {
            bail!("--seed {spec} is the target itself, which a restore always reuses; name another image");
        }
        let disk =
            SourceDisk::open_path(path).with_context(|| format!("index seed image {spec}"))?;
        let progress = Progress::new("index seed", SeedImage::coverage(m, disk.size), ui);
        let seed = SeedImage::index(repo, m, disk, &progress)
            .with_context(|| format!("index seed image {spec}"))?;
        progress.finish();
        return Ok(Seed::Image(seed));
    }
    let old = repo
        .resolve(spec)
        .with_context(|| format!("--seed {spec} is neither a file nor a snapshot"))?;
    // The same disk of the older snapshot.
    let old = old
        .manifest
        .into_disks()
        .into_iter()
        .nth(index)
        .with_context(|| format!("--seed {spec} has no disk {index}"))?;
    let places = old
        .regions
        .iter()
        .flat_map(|r| r.chunks.iter())
        .filter_map(|c| {
            c.id.map(|id| ChunkPlace {
                offset: c.offset,
                id,
            })
        })
        .collect();
    Ok(Seed::Snapshot(places))
}
