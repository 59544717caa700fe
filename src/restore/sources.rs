//! Where a chunk can come from, tried in order for each one (as desync's `writeChunk`):
//! the target itself (when it already holds the chunk there), a seed image, and last the
//! repository. Every source verifies what it hands over against the chunk's id.

use std::collections::{HashMap, HashSet};

use anyhow::{bail, Context, Result};

use super::plan::{ChunkPlace, Job};
use crate::disk::{SourceDisk, TargetDisk};
use crate::io::{Progress, RangeReader};
use crate::range::ByteRange;
use crate::repo::{ChunkId, Manifest, Repository};

/// Which source a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The target already held it: nothing to write.
    InPlace,
    Seed,
    Repository,
}

/// A chunk from one of the sources.
#[derive(Debug)]
pub struct Got {
    pub origin: Origin,
    /// The chunk's bytes; empty for `InPlace`.
    pub data: Vec<u8>,
}

/// One place chunks may be found.
pub trait ChunkSource: Sync {
    /// The chunk of `job`, verified; None when this source does not have it.
    fn fetch(&self, job: &Job) -> Result<Option<Got>>;

    /// Hand each chunk of `jobs` (in disk order) that this source has to `found`, with
    /// its index in `jobs`, in any order; a source that can read neighbours together
    /// does so.
    fn fetch_each(
        &self,
        jobs: &[&Job],
        found: &mut dyn FnMut(usize, Got) -> Result<()>,
    ) -> Result<()> {
        for (k, job) in jobs.iter().enumerate() {
            if let Some(got) = self.fetch(job)? {
                found(k, got)?;
            }
        }
        Ok(())
    }
}

/// The target, read where the plan says it may already hold the chunk.
pub struct InPlace<'a> {
    pub target: &'a TargetDisk,
    /// Whose chunk ids (keyed in an encrypted repository) the jobs carry.
    pub repo: &'a Repository,
}

impl ChunkSource for InPlace<'_> {
    fn fetch(&self, job: &Job) -> Result<Option<Got>> {
        if !job.check_in_place {
            return Ok(None);
        }
        let there = read_range(|b, o| self.target.read_at(b, o), job.range())?;
        Ok((self.repo.chunk_id(&there) == job.id).then(|| Got {
            origin: Origin::InPlace,
            data: Vec::new(),
        }))
    }
}

/// An image (file or device) cut the way the snapshot's regions are: chunk id → place.
pub struct SeedImage {
    disk: SourceDisk,
    index: HashMap<ChunkId, ByteRange>,
    /// How the repository protects its chunks (an encrypted one keys their ids).
    protection: crate::crypt::Protection,
}

impl SeedImage {
    /// Cut `disk` along the snapshot's regions with the repository's chunker and index
    /// what it holds.
    pub fn index(
        repo: &Repository,
        m: &Manifest,
        disk: SourceDisk,
        progress: &Progress,
    ) -> Result<SeedImage> {
        let mut index = HashMap::new();
        for r in &m.regions {
            if r.offset >= disk.size {
                break;
            }
            let len = r.length.min(disk.size - r.offset);
            let mut c = repo.chunker(RangeReader::new(&disk, r.offset, len));
            loop {
                let at = r.offset + c.position;
                let Some(data) = c
                    .next_chunk()
                    .with_context(|| format!("read seed {} at {at}", disk.path.display()))?
                else {
                    break;
                };
                index
                    .entry(repo.chunk_id(data))
                    .or_insert(ByteRange::new(at, data.len() as u64));
                progress.inc(data.len() as u64);
            }
        }
        Ok(SeedImage {
            disk,
            index,
            protection: repo.protection().clone(),
        })
    }

    /// Bytes the seed covers of the snapshot's regions.
    pub fn coverage(m: &Manifest, size: u64) -> u64 {
        m.regions
            .iter()
            .map(|r| r.length.min(size.saturating_sub(r.offset)))
            .sum()
    }
}

impl ChunkSource for SeedImage {
    fn fetch(&self, job: &Job) -> Result<Option<Got>> {
        let Some(&at) = self.index.get(&job.id).filter(|r| r.len == job.range().len) else {
            return Ok(None);
        };
        let data = read_range(|b, o| self.disk.read_at(b, o), at)?;
        // The seed may have changed since it was indexed: use it only if it still holds
        // the chunk.
        let id = ChunkId::under(&self.protection, &data);
        Ok((id == job.id).then_some(Got {
            origin: Origin::Seed,
            data,
        }))
    }
}

/// The repository: always has the chunk, or the restore fails naming it.
pub struct FromRepository<'a> {
    pub repo: &'a Repository,
}

impl FromRepository<'_> {
    /// A chunk read for `job`, checked against the length the manifest gives.
    fn got(&self, job: &Job, data: Vec<u8>) -> Result<Got> {
        if data.len() as u64 != job.range().len {
            bail!(
                "chunk {} holds {} bytes but the manifest says {} at offset {}",
                job.id,
                data.len(),
                job.length,
                job.offset
            );
        }
        Ok(Got {
            origin: Origin::Repository,
            data,
        })
    }
}

impl ChunkSource for FromRepository<'_> {
    fn fetch(&self, job: &Job) -> Result<Option<Got>> {
        let data = self.repo.get_chunk(&job.id)?;
        self.got(job, data).map(Some)
    }

    fn fetch_each(
        &self,
        jobs: &[&Job],
        found: &mut dyn FnMut(usize, Got) -> Result<()>,
    ) -> Result<()> {
        let ids: Vec<ChunkId> = jobs.iter().map(|j| j.id).collect();
        self.repo
            .read_chunks(&ids, &mut |k, data| found(k, self.got(jobs[k], data)?))
    }
}

/// What the target is known to hold before the restore, from `--seed`.
pub enum Seed {
    /// An image to take chunks from.
    Image(SeedImage),
    /// The target holds this older snapshot: where it had the same chunk at the same
    /// offset, check in place; elsewhere, write without reading.
    Snapshot(HashSet<ChunkPlace>),
}

/// The sources, tried in order.
pub struct Chain<'a> {
    sources: Vec<&'a dyn ChunkSource>,
}

impl<'a> Chain<'a> {
    pub fn new(sources: Vec<&'a dyn ChunkSource>) -> Chain<'a> {
        Chain { sources }
    }

    /// Hand each chunk of `jobs` (in disk order) to `sink`, from the first source that
    /// has it, as soon as it is had; each source is asked for all the chunks the ones
    /// before it lacked at once.
    pub fn fetch_batch(
        &self,
        jobs: &[Job],
        sink: &mut dyn FnMut(&Job, Got) -> Result<()>,
    ) -> Result<()> {
        let mut done = vec![false; jobs.len()];
        for s in &self.sources {
            let pending: Vec<usize> = (0..jobs.len()).filter(|&i| !done[i]).collect();
            if pending.is_empty() {
                break;
            }
            let asked: Vec<&Job> = pending.iter().map(|&i| &jobs[i]).collect();
            s.fetch_each(&asked, &mut |k, got| {
                let i = pending[k];
                if std::mem::replace(&mut done[i], true) {
                    return Ok(());
                }
                sink(&jobs[i], got)
            })?;
        }
        match done.iter().position(|d| !d) {
            Some(i) => bail!(
                "no source holds chunk {} (at offset {})",
                jobs[i].id,
                jobs[i].offset
            ),
            None => Ok(()),
        }
    }
}

fn read_range(read: impl Fn(&mut [u8], u64) -> Result<()>, r: ByteRange) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; r.len as usize];
    read(&mut buf, r.offset)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Has the chunks it was given, and counts its calls.
    struct Fake {
        has: Vec<ChunkId>,
        origin: Origin,
        calls: AtomicUsize,
    }

    impl ChunkSource for Fake {
        fn fetch(&self, job: &Job) -> Result<Option<Got>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(self.has.contains(&job.id).then(|| Got {
                origin: self.origin,
                data: vec![1],
            }))
        }
    }

    fn job(n: u8) -> Job {
        Job {
            offset: 0,
            length: 1,
            id: ChunkId([n; 32]),
            check_in_place: true,
        }
    }

    #[test]
    fn the_first_source_that_has_the_chunk_wins() {
        let fake = |has: Vec<u8>, origin| Fake {
            has: has.into_iter().map(|n| ChunkId([n; 32])).collect(),
            origin,
            calls: AtomicUsize::new(0),
        };
        let target = fake(vec![1], Origin::InPlace);
        let seed = fake(vec![1, 2], Origin::Seed);
        let repo = fake(vec![1, 2, 3], Origin::Repository);
        let chain = Chain::new(vec![&target, &seed, &repo]);
        let mut origins = Vec::new();
        chain
            .fetch_batch(&[job(1), job(2), job(3)], &mut |j, g| {
                origins.push((j.id.0[0], g.origin));
                Ok(())
            })
            .unwrap();
        assert_eq!(
            origins,
            [
                (1, Origin::InPlace),
                (2, Origin::Seed),
                (3, Origin::Repository)
            ]
        );
        assert_eq!(
            repo.calls.load(Ordering::SeqCst),
            1,
            "asked only when needed"
        );
        let e = chain
            .fetch_batch(&[job(4)], &mut |_, _| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no source holds chunk"), "{e}");
    }
}
