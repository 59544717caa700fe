//! The writing phase: holes zeroed first, then the chunks fetched from the source chain
//! by parallel workers, verified, and written in disk order through one coalescing
//! writer. Memory in flight is bounded by the window of batches; the held-back bytes (the
//! tables) are kept aside for the finish.

use anyhow::Result;

use super::plan::{Deferred, Job, Plan, BATCH_BYTES};
use super::sources::{Chain, Origin};
use crate::disk::TargetDisk;
use crate::io::parallel::{map_ordered, Width};
use crate::io::{CoalescingWriter, Progress};
use crate::range::ByteRange;

/// At most this many bytes of chunks are between the repository and the disk at once,
/// wherever they are: queued, in a worker, or waiting for the one before them.
const BYTES_IN_FLIGHT: u64 = 16 << 20;

const MIB: u64 = 1 << 20;

/// What the writing phase did.
#[derive(Debug, Default)]
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
}

/// How the pipeline runs.
pub struct Settings {
    /// Workers fetching chunks at once.
    pub workers: usize,
    /// Read holes on a block device before zeroing them, and leave those that already are.
    pub check_zeros: bool,
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
    progress.inc(plan.hole_bytes);
    let window = (BYTES_IN_FLIGHT / BATCH_BYTES) as usize;
    let width = Width::new(settings.workers, 1).with_window(window);
    let mut writer = CoalescingWriter::new(target);
    map_ordered(
        plan.batches,
        width,
        |batch: Vec<Job>| chain.fetch_batch(batch),
        |fetched| {
            for (job, got) in fetched {
                progress.inc(job.length as u64);
                counts.count(&job, got.origin);
                if got.origin == Origin::InPlace {
                    continue;
                }
                let r = job.range();
                if plan.deferred.touches(r) {
                    deferred.keep(r, &got.data);
                }
                if let Some(d) = plan.deferred.direct_part(r) {
                    let from = (d.offset - r.offset) as usize;
                    writer.write(d.offset, &got.data[from..from + d.len as usize])?;
                }
            }
            Ok(())
        },
    )?;
    counts.written_bytes = writer.finish()?;
    target.sync()?;
    Ok(counts)
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
