//! `restore --dry-run`: the whole preflight (snapshot, signature, every chunk present,
//! every target fit and unused), then each disk's plan without writing anything: what
//! goes where, what the target already holds (read and verified, as the restore would
//! keep it), what would be fetched and zeroed, and what would be grown or shrunk.

use anyhow::{Context, Result};
use serde::Serialize;

use super::plan::{Choices, Plan};
use super::preflight::{self, CheckedDisk};
use super::RestoreArgs;
use crate::disk::SourceDisk;
use crate::range::ByteRange;
use crate::repo::{Repository, SnapshotId};
use crate::ui::{bytes, Outcome, Ui};

#[derive(Debug, Serialize)]
pub struct DryRun {
    pub dry_run: bool,
    pub snapshot: SnapshotId,
    pub name: String,
    pub signature: String,
    pub disks: Vec<DiskPlan>,
}

/// One disk: where it goes and what would be done there.
#[derive(Debug, Serialize)]
pub struct DiskPlan {
    pub disk: usize,
    pub target: String,
    /// The target does not exist: an image file would be created.
    pub create: bool,
    pub disk_size: u64,
    pub target_size: u64,
    /// Its regions as captured: "partition 1 (ext4): 511.0 MiB at 1.0 MiB".
    pub regions: Vec<String>,
    pub chunks: u64,
    pub chunk_bytes: u64,
    /// Chunks the target holds already (read and verified): kept, not written.
    pub kept_chunks: u64,
    pub kept_bytes: u64,
    /// Chunks that would be written (from the repository, or a seed).
    pub write_chunks: u64,
    pub write_bytes: u64,
    /// Ranges of holes that would be made zero on an existing target.
    pub zero_bytes: u64,
    /// A smaller target: the partition shrunk, from and to.
    pub shrink: Option<String>,
    /// A larger target: what becomes of the table and the last partition.
    pub grow: Option<String>,
}

impl Outcome for DryRun {
    fn print(&self) {
        crate::outln!(
            "dry run: snapshot {} ({}), signature {}; nothing is written",
            self.snapshot.short(),
            self.name,
            self.signature
        );
        for d in &self.disks {
            crate::outln!(
                "disk {} ({}) -> {} ({}{})",
                d.disk,
                bytes(d.disk_size),
                d.target,
                bytes(d.target_size),
                if d.create { ", a new image file" } else { "" }
            );
            for r in &d.regions {
                crate::outln!("  {r}");
            }
            crate::outln!(
                "  would write {} chunks ({}), keep {} already in place ({}, verified), zero {}",
                d.write_chunks,
                bytes(d.write_bytes),
                d.kept_chunks,
                bytes(d.kept_bytes),
                bytes(d.zero_bytes)
            );
            for change in d.shrink.iter().chain(&d.grow) {
                crate::outln!("  {change}");
            }
            crate::outln!("  partition table written last, once every chunk is in place");
        }
    }
}

pub fn run(repo: &Repository, args: &RestoreArgs, ui: &Ui) -> Result<DryRun> {
    let checked = preflight::check(repo, args, ui).context("preflight failed")?;
    let mut disks = Vec::with_capacity(checked.disks.len());
    for d in &checked.disks {
        disks.push(plan_disk(repo, d, args).with_context(|| format!("disk {}", d.index))?);
    }
    Ok(DryRun {
        dry_run: true,
        snapshot: checked.id,
        name: checked.name.clone(),
        signature: checked.verdict.to_string(),
        disks,
    })
}

const MIB: u64 = 1 << 20;

/// One disk's plan, the target read where the restore would read it.
fn plan_disk(repo: &Repository, d: &CheckedDisk, args: &RestoreArgs) -> Result<DiskPlan> {
    let m = &d.manifest;
    let plan = Plan::new(
        m,
        &Choices {
            create: d.create,
            reuse: !d.create && !args.no_reuse && d.shrink.is_none(),
            zero_free: args.zero_free,
            seed_places: None,
        },
    );
    let there = match d.create {
        true => None,
        false => Some(SourceDisk::open_path(&d.target)?),
    };
    let target_size = there.as_ref().map_or(m.disk.size, |t| t.size);
    // The restore wipes the first and last MiB before it writes (the tables): what is
    // there is not kept.
    let wiped = [
        ByteRange::new(0, MIB.min(target_size)),
        ByteRange::between(target_size.saturating_sub(MIB), target_size),
    ];
    let (mut kept_chunks, mut kept_bytes) = (0, 0);
    for job in plan
        .batches
        .iter()
        .flatten()
        .filter(|j| j.check_in_place && wiped.iter().all(|w| w.intersect(j.range()).is_none()))
    {
        crate::io::interrupt::check()?;
        let Some(dev) = &there else { break };
        let mut buf = vec![0; job.length as usize];
        dev.read_at(&mut buf, job.offset)?;
        if repo.chunk_id(&buf) == job.id {
            kept_chunks += 1;
            kept_bytes += job.length as u64;
        }
    }
    let chunks = plan.chunk_count() as u64;
    let chunk_bytes = plan.chunk_bytes();
    Ok(DiskPlan {
        disk: d.index,
        target: d.target.display().to_string(),
        create: d.create,
        disk_size: m.disk.size,
        target_size,
        regions: m
            .regions
            .iter()
            .map(|r| {
                let fs = r.filesystem.as_ref().map(|f| format!(" ({})", f.kind));
                format!(
                    "{}{}: {} at {}",
                    r.label(),
                    fs.unwrap_or_default(),
                    bytes(r.length),
                    bytes(r.offset)
                )
            })
            .collect(),
        chunks,
        chunk_bytes,
        kept_chunks,
        kept_bytes,
        write_chunks: chunks - kept_chunks,
        write_bytes: chunk_bytes - kept_bytes,
        zero_bytes: plan.zero.iter().map(|r| r.len).sum(),
        shrink: d.shrink.map(|s| {
            format!(
                "partition {} would be shrunk from {} to {} (restored on a scratch copy first)",
                s.number,
                bytes(s.old_len),
                bytes(s.new_len)
            )
        }),
        grow: (target_size > m.disk.size).then(|| match args.grow {
            true => "the backup GPT moved to the end, and the last partition grown to fill the disk (--grow)".into(),
            false => "the backup GPT moved to the end; the partitions keep their sizes (--grow extends the last)".into(),
        }),
    })
}
