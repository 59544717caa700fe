//! Putting a region back together from its segments: the chunks in order, zero runs
//! merged into holes (marked free where the filesystem said so), and the region's hash
//! combined from its segments' subtrees.

use super::segments::SegmentDone;
use super::usage::RegionUsage;
use crate::disk::layout::RegionPlan;
use crate::range::{covered_by_one, ByteRange};
use crate::repo::manifest::{ChunkRef, Region};
use crate::repo::treehash;

/// The region's manifest entry from its segments, which come in disk order.
pub fn region(
    plan: &RegionPlan,
    usage: RegionUsage,
    done: Vec<SegmentDone>,
    key: Option<&[u8; 32]>,
) -> Region {
    let segments: Vec<_> = done.iter().map(|d| d.hash.clone()).collect();
    let hash = treehash::combine(&segments, key);
    let chunks = merge_holes(done.into_iter().flat_map(|d| d.chunks), &usage.free);
    Region {
        kind: plan.kind,
        partition: plan.partition,
        offset: plan.offset,
        length: plan.length,
        blake3: hash.to_hex().to_string(),
        filesystem: usage.fs,
        chunks,
    }
}

/// Mark holes that lie in free space as free, and merge neighbouring holes of the same
/// kind (up to the largest length a chunk reference holds).
pub fn merge_holes(
    chunks: impl IntoIterator<Item = ChunkRef>,
    free: &[ByteRange],
) -> Vec<ChunkRef> {
    let mut merged: Vec<ChunkRef> = Vec::new();
    for mut c in chunks {
        if c.id.is_none() {
            c.free = covered_by_one(free, ByteRange::new(c.offset, c.length as u64));
        }
        match merged.last_mut() {
            Some(last)
                if last.id.is_none()
                    && c.id.is_none()
                    && last.free == c.free
                    && last.length as u64 + c.length as u64 <= u32::MAX as u64 =>
            {
                last.length += c.length
            }
            _ => merged.push(c),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::ChunkId;

    fn c(offset: u64, length: u32, id: Option<u8>) -> ChunkRef {
        ChunkRef {
            offset,
            length,
            id: id.map(|n| ChunkId([n; 32])),
            free: false,
        }
    }

    #[test]
    fn holes_merge_by_kind_and_chunks_stay() {
        let free = [ByteRange::new(300, 200)];
        let out = merge_holes(
            vec![
                c(0, 100, Some(1)),
                c(100, 100, None),
                c(200, 100, None),
                c(300, 100, None),
                c(400, 100, None),
                c(500, 100, Some(2)),
            ],
            &free,
        );
        let shape: Vec<(u64, u32, bool, bool)> = out
            .iter()
            .map(|c| (c.offset, c.length, c.id.is_some(), c.free))
            .collect();
        assert_eq!(
            shape,
            vec![
                (0, 100, true, false),
                (100, 200, false, false),
                (300, 200, false, true),
                (500, 100, true, false),
            ]
        );
    }

    #[test]
    fn a_hole_that_reaches_past_free_space_is_not_free() {
        let out = merge_holes(vec![c(250, 100, None)], &[ByteRange::new(300, 200)]);
        assert!(!out[0].free);
    }
}
