//! The capture's workers: every region cut into segments of the chunker's segment size,
//! each segment read (free space as zeros, without reading it), cut into chunks, hashed as
//! a BLAKE3 subtree, and its new chunks stored.

use std::collections::HashSet;
use std::sync::Mutex;

use anyhow::{Context, Result};

use super::usage::RegionUsage;
use crate::disk::layout::RegionPlan;
use crate::disk::SourceDisk;
use crate::io::parallel::{cores, map_ordered, Width};
use crate::io::{Progress, RangeReader};
use crate::range::ByteRange;
use crate::repo::chunker::is_zero;
use crate::repo::manifest::ChunkRef;
use crate::repo::{treehash, ChunkId, ChunkerParams, Repository};

/// One segment of a region, for one worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentJob {
    pub region: usize,
    /// The segment's number within its region.
    pub index: usize,
    pub offset: u64,
    pub length: u64,
    pub whole_region: bool,
}

/// What a worker made of a segment.
pub struct SegmentDone {
    pub region: usize,
    pub chunks: Vec<ChunkRef>,
    pub hash: treehash::Segment,
    pub new: NewData,
}

/// What a capture added to the repository.
#[derive(Debug, Default, Clone, Copy)]
pub struct NewData {
    pub chunks: u64,
    pub plain_bytes: u64,
    pub stored_bytes: u64,
}

impl NewData {
    pub fn add(&mut self, other: NewData) {
        self.chunks += other.chunks;
        self.plain_bytes += other.plain_bytes;
        self.stored_bytes += other.stored_bytes;
    }
}

/// Every region cut into segments of `seg` bytes from its start, in disk order, made as
/// the workers ask for them.
pub fn segments(regions: &[RegionPlan], seg: u64) -> impl Iterator<Item = SegmentJob> + Send + '_ {
    regions.iter().enumerate().flat_map(move |(ri, r)| {
        (0..r.length.div_ceil(seg)).map(move |k| SegmentJob {
            region: ri,
            index: k as usize,
            offset: r.offset + k * seg,
            length: seg.min(r.length - k * seg),
            whole_region: r.length <= seg,
        })
    })
}

/// Everything a worker needs.
pub struct Workers<'a> {
    pub dev: &'a SourceDisk,
    pub repo: &'a Repository,
    pub params: &'a ChunkerParams,
    pub usage: &'a [RegionUsage],
    pub progress: &'a Progress,
    /// The chunks this capture has stored or found stored, on every disk so far: a chunk
    /// stored into a pack not yet indexed is not stored twice.
    pub seen: &'a Mutex<HashSet<ChunkId>>,
}

impl Workers<'_> {
    /// Run every segment on all cores; `sink` gets them back in disk order.
    pub fn run(
        &self,
        jobs: impl Iterator<Item = SegmentJob> + Send,
        sink: impl FnMut(SegmentDone) -> Result<()>,
    ) -> Result<()> {
        map_ordered(
            jobs,
            Width::new(cores(), 2),
            |job| self.segment(&job, self.seen),
            sink,
        )
    }

    /// Read a segment, cut it into chunks, hash it, and store the chunks the repository
    /// lacks.
    fn segment(&self, s: &SegmentJob, seen: &Mutex<HashSet<ChunkId>>) -> Result<SegmentDone> {
        let region_offset = s.offset - s.index as u64 * self.params.segment_size;
        let reader =
            RangeReader::new(self.dev, s.offset, s.length).with_zeros(&self.usage[s.region].free);
        let mut chunker = self.repo.chunker(reader);
        let mut hasher = treehash::segment_hasher(s.offset - region_offset, self.repo.region_key());
        let mut chunks = Vec::new();
        let mut new = NewData::default();
        // One writer per segment: in a repository of packs, a segment's new chunks go
        // into one pack in disk order.
        let mut writer = self.repo.chunk_writer();
        let segment = ByteRange::new(s.offset, s.length);
        let free_here: Vec<ByteRange> = self.usage[s.region]
            .free
            .iter()
            .filter_map(|f| f.intersect(segment))
            .collect();
        loop {
            let offset = s.offset + chunker.position;
            let Some(data) = chunker
                .next_chunk()
                .with_context(|| format!("read {} at byte {offset}", self.dev.path.display()))?
            else {
                break;
            };
            hasher.update(data);
            let length = data.len() as u32;
            let id = if is_zero(data) {
                None
            } else {
                let id = self.repo.chunk_id(data);
                let first_time = seen.lock().unwrap_or_else(|p| p.into_inner()).insert(id);
                if first_time && !self.repo.has_chunk(&id)? {
                    let stored = self
                        .repo
                        .put_chunk_with(&mut writer, &id, data)
                        .with_context(|| format!("store chunk {id}"))?;
                    new.add(NewData {
                        chunks: 1,
                        plain_bytes: length as u64,
                        stored_bytes: stored,
                    });
                }
                Some(id)
            };
            chunks.push(ChunkRef {
                offset,
                length,
                id,
                free: false,
            });
            let read = ByteRange::new(offset, length as u64);
            let skipped: u64 = free_here
                .iter()
                .filter_map(|f| f.intersect(read))
                .map(|f| f.len)
                .sum();
            self.progress.inc(length as u64 - skipped);
        }
        Ok(SegmentDone {
            region: s.region,
            chunks,
            hash: treehash::finish(&hasher, s.length, s.whole_region),
            new,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::manifest::RegionKind;

    #[test]
    fn regions_are_cut_into_segments_from_their_start() {
        let region = |offset, length| RegionPlan {
            kind: RegionKind::Partition,
            partition: Some(1),
            offset,
            length,
        };
        let regions = [region(0, 100), region(100, 250)];
        let cut: Vec<(usize, usize, u64, u64, bool)> = segments(&regions, 100)
            .map(|j| (j.region, j.index, j.offset, j.length, j.whole_region))
            .collect();
        assert_eq!(
            cut,
            vec![
                (0, 0, 0, 100, true),
                (1, 0, 100, 100, false),
                (1, 1, 200, 100, false),
                (1, 2, 300, 50, false),
            ]
        );
    }
}
