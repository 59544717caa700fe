//! `restore --partition N`: chosen partitions of a snapshot back onto a disk that has
//! the same partition table already (the rest of the disk, and the table itself, are
//! left as they are). The preflight is the restore's, and then the target's table must
//! place each chosen partition where the snapshot had it, with its size.

use anyhow::{bail, Context, Result};

use super::pipeline::{self, Counts};
use super::plan::{Choices, Deferred, Plan};
use super::preflight::{self, CheckedDisk};
use super::sources::{Chain, ChunkSource, FromRepository, InPlace};
use super::RestoreArgs;
use crate::disk::layout::read_layout;
use crate::disk::{SourceDisk, TargetDisk};
use crate::range::ByteRange;
use crate::repo::manifest::RegionKind;
use crate::repo::{Manifest, Repository};
use crate::ui::{bytes, Ui};

/// What a partition restore did, for the summary.
pub struct Restored {
    pub checked: preflight::Checked,
    pub counts: Counts,
    pub partitions: Vec<String>,
}

pub fn run(repo: &Repository, args: &RestoreArgs, ui: &Ui) -> Result<Restored> {
    let checked =
        preflight::check(repo, args, ui).context("preflight failed; nothing was written")?;
    let [d] = checked.disks.as_slice() else {
        bail!("--partition restores partitions of one disk: name one --target");
    };
    if d.create {
        bail!(
            "--partition writes into the partitions of an existing disk; {} does not exist \
             (restore the whole snapshot to create it)",
            d.target.display()
        );
    }
    if d.shrink.is_some() {
        bail!("--partition needs a target at least as large as the snapshot's disk");
    }
    let chosen = chosen_regions(&d.manifest, &args.partition)?;
    check_table(d, &chosen).context("preflight failed; nothing was written")?;
    let target = TargetDisk::open(&d.target)?;
    let counts = write(repo, d, &chosen, &target, args, ui)
        .with_context(|| format!("restore partitions onto {}", d.target.display()))?;
    let partitions = chosen
        .iter()
        .map(|(n, r)| format!("partition {n}: {} at {}", bytes(r.len), bytes(r.offset)))
        .collect();
    Ok(Restored {
        checked,
        counts,
        partitions,
    })
}

/// The snapshot's chosen partitions, by number, with their ranges.
fn chosen_regions(m: &Manifest, wanted: &[u32]) -> Result<Vec<(u32, ByteRange)>> {
    let mut out = Vec::new();
    for n in wanted {
        let r = m
            .regions
            .iter()
            .find(|r| r.kind == RegionKind::Partition && r.partition == Some(*n))
            .with_context(|| {
                let have: Vec<String> = m
                    .regions
                    .iter()
                    .filter_map(|r| r.partition.map(|p| p.to_string()))
                    .collect();
                format!(
                    "the snapshot has no partition {n} (it has: {})",
                    have.join(", ")
                )
            })?;
        out.push((*n, ByteRange::new(r.offset, r.length)));
    }
    Ok(out)
}

/// The target's own table puts each chosen partition where the snapshot had it.
fn check_table(d: &CheckedDisk, chosen: &[(u32, ByteRange)]) -> Result<()> {
    let dev = SourceDisk::open_path(&d.target)?;
    let layout = read_layout(&dev, Some(d.manifest.disk.logical_sector_size))
        .with_context(|| format!("read the partition table of {}", d.target.display()))?;
    for (n, want) in chosen {
        let there = layout
            .regions
            .iter()
            .find(|r| r.kind == RegionKind::Partition && r.partition == Some(*n));
        match there {
            Some(r) if r.offset == want.offset && r.length == want.len => {}
            Some(r) => bail!(
                "partition {n} of {} is {} at byte {}, the snapshot's {} at byte {}: the tables \
                 differ (restore the whole disk instead)",
                d.target.display(),
                r.length,
                r.offset,
                want.len,
                want.offset
            ),
            None => bail!(
                "{} has no partition {n} in its table (restore the whole disk instead)",
                d.target.display()
            ),
        }
    }
    Ok(())
}

/// The chosen partitions' chunks (and holes), onto the target; nothing else is touched.
fn write(
    repo: &Repository,
    d: &CheckedDisk,
    chosen: &[(u32, ByteRange)],
    target: &TargetDisk,
    args: &RestoreArgs,
    ui: &Ui,
) -> Result<Counts> {
    let mut m = d.manifest.clone();
    m.regions.retain(|r| {
        r.partition
            .is_some_and(|p| chosen.iter().any(|(n, _)| *n == p))
    });
    let plan = Plan::new(
        &m,
        &Choices {
            create: false,
            reuse: !args.no_reuse,
            zero_free: args.zero_free,
            seed_places: None,
        },
    );
    let in_place = InPlace { target, repo };
    let from_repo = FromRepository { repo };
    let sources: Vec<&dyn ChunkSource> = vec![&in_place, &from_repo];
    let mut deferred = Deferred::new(plan.deferred);
    let progress = crate::io::Progress::new("restore", plan.chunk_bytes(), ui);
    let settings = pipeline::Settings {
        workers: repo.concurrency(),
        check_zeros: !args.no_reuse && target.is_block,
    };
    let mut counts = pipeline::write(
        plan,
        target,
        &Chain::new(sources),
        &mut deferred,
        &settings,
        &progress,
    )?;
    progress.finish();
    // Bytes of a chosen partition that lie in the table areas were held back: they go
    // now, and only they.
    for (area, buf) in [
        (deferred.layout.head, &deferred.head),
        (deferred.layout.tail, &deferred.tail),
    ] {
        for (_, r) in chosen {
            if let Some(x) = r.intersect(area) {
                let from = (x.offset - area.offset) as usize;
                target.write_at(&buf[from..from + x.len as usize], x.offset)?;
                counts.written_bytes += x.len;
            }
        }
    }
    target.sync()?;
    Ok(counts)
}
