//! The writing phase: holes zeroed first, then the chunks of each batch fetched from the
//! source chain by one of several workers, verified, and written by that worker through a
//! coalescing writer of its own as soon as they arrive; what the workers did comes back
//! in disk order, with the held-back bytes (the tables) kept aside for the finish.
//!
//! Memory is bounded by design, not by batch counts: each worker holds at most one run
//! of stored bytes (`runs::MAX_RUN`), one chunk and its writer's block, whatever the
//! batch or the store.

use anyhow::Result;

use super::plan::{Deferred, Job, Plan};
use super::sources::{Chain, Got, Origin};
use crate::disk::TargetDisk;
use crate::io::parallel::{map_ordered, Width};
use crate::io::{CoalescingWriter, Progress};
use crate::range::ByteRange;

const MIB: u64 = 1 << 20;

/// What the writing phase did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub zero_bytes: u64,
    pub written_bytes: u64,
    pub kept_chunks: u64,
    pub kept_bytes: u64,
    pub seeded_chunks: u64,
    pub fetched_chunks: u64,
}

impl Counts {
    fn count(&mut self, job: &Job, origin: Origin) {
        match origin {
            Origin::InPlace => {
                self.kept_chunks += 1;
                self.kept_bytes += job.length as u64;
            }
            Origin::Seed => self.seeded_chunks += 1,
            Origin::Repository => self.fetched_chunks += 1,
        }
    }

    fn add(&mut self, o: &Counts) {
        self.zero_bytes += o.zero_bytes;
        self.written_bytes += o.written_bytes;
        self.kept_chunks += o.kept_chunks;
        self.kept_bytes += o.kept_bytes;
        self.seeded_chunks += o.seeded_chunks;
        self.fetched_chunks += o.fetched_chunks;
    }
}

/// How the pipeline runs.
pub struct Settings {
    /// Workers fetching and writing batches at once.
    pub workers: usize,
    /// Read holes on a block device before zeroing them, and leave those that already are.
    pub check_zeros: bool,
}

/// What a worker did with one batch: its counts, and the pieces of chunks that belong
/// to the held-back bytes.
struct BatchDone {
    counts: Counts,
    held_back: Vec<(ByteRange, Vec<u8>)>,
}

/// Zero the plan's holes, then put every chunk in place; the held-back bytes end up in
/// `deferred`, not on the disk.
pub fn write(
    plan: Plan,
    target: &TargetDisk,
    chain: &Chain,
    deferred: &mut Deferred,
    settings: &Settings,
    progress: &Progress,
) -> Result<Counts> {
    let mut counts = Counts::default();
    for r in &plan.zero {
        counts.zero_bytes += zero(target, *r, settings.check_zeros)?;
    }
    let layout = plan.deferred;
    map_ordered(
        plan.batches,
        Width::new(settings.workers, 2),
        |batch: Vec<Job>| write_batch(&batch, chain, target, layout, progress),
        |done: BatchDone| {
            counts.add(&done.counts);
            for (r, data) in &done.held_back {
                deferred.keep(*r, data);
            }
            Ok(())
        },
    )?;
    target.sync()?;
    Ok(counts)
}

/// Fetch one batch's chunks and write each as it arrives.
fn write_batch(
    batch: &[Job],
    chain: &Chain,
    target: &TargetDisk,
    layout: super::plan::DeferredLayout,
    progress: &Progress,
) -> Result<BatchDone> {
    let mut done = BatchDone {
        counts: Counts::default(),
        held_back: Vec::new(),
    };
    let mut writer = CoalescingWriter::new(target);
    chain.fetch_batch(batch, &mut |job: &Job, got: Got| {
        progress.inc(job.length as u64);
        done.counts.count(job, got.origin);
        if got.origin == Origin::InPlace {
            return Ok(());
        }
        let r = job.range();
        if layout.touches(r) {
            done.held_back.push((r, got.data.clone()));
        }
        if let Some(d) = layout.direct_part(r) {
            let from = (d.offset - r.offset) as usize;
            writer.write(d.offset, &got.data[from..from + d.len as usize])?;
        }
        Ok(())
    })?;
    done.counts.written_bytes = writer.finish()?;
    Ok(done)
}

/// Make `r` zero. With `check`, read first and leave pieces that already are. Returns the
/// bytes actually zeroed.
fn zero(target: &TargetDisk, r: ByteRange, check: bool) -> Result<u64> {
    if !check {
        target.zero(r)?;
        return Ok(r.len);
    }
    let mut done = 0;
    let mut pos = r.offset;
    let mut buf = vec![0u8; MIB as usize];
    while pos < r.end() {
        let n = (r.end() - pos).min(MIB) as usize;
        target.read_at(&mut buf[..n], pos)?;
        if buf[..n].iter().any(|&b| b != 0) {
            target.zero(ByteRange::new(pos, n as u64))?;
            done += n as u64;
        }
        pos += n as u64;
    }
    Ok(done)
}
