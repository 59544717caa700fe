//! Everything checked before the target is touched: the snapshot resolves and every chunk
//! it needs is in the repository; the target is a disk or image file that nothing uses,
//! is large enough and has the right sector size; the user said yes; a seed opens.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::Path;

use crate::trust::{Policy, Verdict};
use anyhow::{bail, Context, Result};

use super::plan::ChunkPlace;
use super::sources::{Seed, SeedImage};
use super::RestoreArgs;
use crate::disk::{guard, Identity, SourceDisk};
use crate::io::parallel::{map_ordered, Width};
use crate::io::Progress;
use crate::location::DiskLocation;
use crate::repo::{ChunkId, Manifest, Repository, Snapshot};
use crate::ui::{bytes, Ui};

/// What the preflight established.
pub struct Checked {
    pub snap: Snapshot,
    /// How the snapshot's signature was found.
    pub verdict: Verdict,
    /// The target does not exist yet: create an image file.
    pub create: bool,
    pub seed: Option<Seed>,
}

/// What the target is before the restore.
struct TargetState {
    create: bool,
    size: u64,
    identity: Identity,
}

pub fn check(repo: &Repository, args: &RestoreArgs, ui: &Ui) -> Result<Checked> {
    refuse_network_target(&args.target)?;
    let policy = Policy::new(&args.trust, repo)?;
    let (snap, verdict) = policy.resolve(repo, &args.snapshot)?;
    log::info!(
        "snapshot {} ({}): {verdict}",
        snap.short_id(),
        snap.manifest.name
    );
    all_chunks_present(repo, &snap)?;
    guard::check_target(&args.target, args.repo.local_dir())?;
    let state = examine_target(&args.target, &snap)?;
    if !state.create {
        confirm(args, &snap, &state)?;
    }
    let seed = match &args.seed {
        Some(spec) => Some(open_seed(repo, &snap.manifest, spec, &args.target, ui)?),
        None => None,
    };
    Ok(Checked {
        snap,
        verdict,
        create: state.create,
        seed,
    })
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
fn examine_target(target: &Path, snap: &Snapshot) -> Result<TargetState> {
    let m = &snap.manifest;
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
                snap.short_id(),
                m.disk.logical_sector_size
            );
        }
    }
    if dev.size < m.disk.size {
        bail!(
            "target {} is too small: {} ({} bytes); snapshot {} needs at least {} ({} bytes)",
            target.display(),
            bytes(dev.size),
            dev.size,
            snap.short_id(),
            bytes(m.disk.size),
            m.disk.size
        );
    }
    Ok(TargetState {
        create: false,
        size: dev.size,
        identity: dev.identity(),
    })
}

/// The user says yes: `--yes`, or by typing the target's serial (its name when it has none).
fn confirm(args: &RestoreArgs, snap: &Snapshot, state: &TargetState) -> Result<()> {
    if args.yes {
        return Ok(());
    }
    let target = &args.target;
    let Identity { model, serial } = &state.identity;
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
        snap.short_id(),
        snap.manifest.name,
        snap.manifest.time,
        snap.manifest.hostname,
        target.display(),
        bytes(state.size),
        model.as_ref().map(|m| format!(", {m}")).unwrap_or_default(),
        serial
            .as_ref()
            .map(|s| format!(", serial {s}"))
            .unwrap_or_default()
    );
    eprint!("Type {token} to continue: ");
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("read the confirmation")?;
    if line.trim() != token {
        bail!("confirmation did not match {token:?}");
    }
    Ok(())
}

/// Open the `--seed` given: an existing file or device is an image, anything else names an
/// older snapshot in the repository.
fn open_seed(repo: &Repository, m: &Manifest, spec: &str, target: &Path, ui: &Ui) -> Result<Seed> {
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
    let places = old
        .manifest
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
