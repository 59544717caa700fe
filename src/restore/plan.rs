//! The restore plan, worked out from the manifest alone (no I/O): which bytes are held
//! back and written last (the partition tables), which ranges are zeroed, and which
//! chunk goes where, in batches for the pipeline.

use std::collections::HashSet;

use crate::range::ByteRange;
use crate::repo::manifest::{RegionKind, TableKind};
use crate::repo::{ChunkId, Manifest};

const MIB: u64 = 1 << 20;

/// A worker takes the chunks of about this many bytes of the disk at a time: enough that
/// they lie in long runs in packs (one ranged read each), few enough that the workers
/// stay busy to the end.
pub const BATCH_BYTES: u64 = 8 << 20;

/// A chunk the target held at an offset in an older snapshot (`--seed SNAPSHOT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkPlace {
    pub offset: u64,
    pub id: ChunkId,
}

/// What the plan depends on besides the manifest.
#[derive(Debug, Default)]
pub struct Choices<'a> {
    /// The target is a new image file: it reads as zeros already.
    pub create: bool,
    /// Read what an existing target holds before writing, and keep what is already right.
    pub reuse: bool,
    /// Zero free filesystem space too (by default it is left as it is).
    pub zero_free: bool,
    /// The target holds this older snapshot: check in place only where it had the chunk.
    pub seed_places: Option<&'a HashSet<ChunkPlace>>,
}

/// One stored chunk to put in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub offset: u64,
    pub length: u32,
    pub id: ChunkId,
    /// Read the target there first: if it already holds the chunk, leave it.
    pub check_in_place: bool,
}

impl Job {
    pub fn range(&self) -> ByteRange {
        ByteRange::new(self.offset, self.length as u64)
    }
}

/// Where the held-back bytes are: the first MiB (boot code, MBR, primary GPT; more when
/// the table region is larger) and the backup GPT area at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeferredLayout {
    pub head: ByteRange,
    pub tail: ByteRange,
}

impl DeferredLayout {
    pub fn of(m: &Manifest) -> DeferredLayout {
        let size = m.disk.size;
        let ss = m.disk.logical_sector_size as u64;
        let table_len = m
            .regions
            .iter()
            .find(|r| r.kind == RegionKind::Table)
            .map(|r| r.length)
            .unwrap_or(0);
        let head_len = MIB.max(table_len).min(size);
        let tail_start = match (&m.disk.gpt, m.disk.table) {
            (Some(g), TableKind::Gpt) => ((g.last_usable_lba + 1) * ss).min(size).max(head_len),
            _ => size,
        };
        DeferredLayout {
            head: ByteRange::new(0, head_len),
            tail: ByteRange::between(tail_start, size),
        }
    }

    /// Whether any byte of `r` is held back.
    pub fn touches(&self, r: ByteRange) -> bool {
        r.offset < self.head.end() || r.end() > self.tail.offset
    }

    /// The part of `r` written directly (between head and tail), if any.
    pub fn direct_part(&self, r: ByteRange) -> Option<ByteRange> {
        r.intersect(ByteRange::between(self.head.end(), self.tail.offset))
    }
}

/// The held-back bytes themselves, filled as the chunks covering them go by.
pub struct Deferred {
    pub layout: DeferredLayout,
    pub head: Vec<u8>,
    pub tail: Vec<u8>,
}

impl Deferred {
    pub fn new(layout: DeferredLayout) -> Deferred {
        Deferred {
            layout,
            head: vec![0; layout.head.len as usize],
            tail: vec![0; layout.tail.len as usize],
        }
    }

    /// Keep the parts of `data` (the bytes of `r`) that are held back.
    pub fn keep(&mut self, r: ByteRange, data: &[u8]) {
        for (area, buf) in [
            (self.layout.head, &mut self.head),
            (self.layout.tail, &mut self.tail),
        ] {
            if let Some(x) = r.intersect(area) {
                let dst = (x.offset - area.offset) as usize;
                let src = (x.offset - r.offset) as usize;
                buf[dst..dst + x.len as usize].copy_from_slice(&data[src..src + x.len as usize]);
            }
        }
    }
}

/// Everything the restore writes, in order.
#[derive(Debug)]
pub struct Plan {
    pub deferred: DeferredLayout,
    /// Ranges to make zero before the chunks are written (holes, and free space with
    /// `--zero-free`), outside the held-back bytes. Empty for a new image file.
    pub zero: Vec<ByteRange>,
    /// Bytes of holes and free space, zeroed or not.
    pub hole_bytes: u64,
    /// The chunks, in disk order, in batches of about `BATCH_BYTES`.
    pub batches: Vec<Vec<Job>>,
}

impl Plan {
    pub fn new(m: &Manifest, c: &Choices) -> Plan {
        let deferred = DeferredLayout::of(m);
        let mut zero: Vec<ByteRange> = Vec::new();
        let mut hole_bytes = 0;
        let mut jobs = Vec::new();
        for chunk in m.regions.iter().flat_map(|r| &r.chunks) {
            let r = ByteRange::new(chunk.offset, chunk.length as u64);
            match chunk.id {
                Some(id) => jobs.push(Job {
                    offset: chunk.offset,
                    length: chunk.length,
                    id,
                    check_in_place: !deferred.touches(r)
                        && match c.seed_places {
                            Some(places) => places.contains(&ChunkPlace {
                                offset: chunk.offset,
                                id,
                            }),
                            None => c.reuse,
                        },
                }),
                None => {
                    hole_bytes += r.len;
                    let wanted = !c.create && (!chunk.free || c.zero_free);
                    if let Some(d) = deferred.direct_part(r).filter(|_| wanted) {
                        match zero.last_mut() {
                            Some(last) if last.end() == d.offset => last.len += d.len,
                            _ => zero.push(d),
                        }
                    }
                }
            }
        }
        Plan {
            deferred,
            zero,
            hole_bytes,
            batches: batches(jobs, BATCH_BYTES),
        }
    }

    /// The bytes of the chunks to fetch or verify in place: the work progress counts.
    pub fn chunk_bytes(&self) -> u64 {
        self.batches.iter().flatten().map(|j| j.length as u64).sum()
    }

    pub fn chunk_count(&self) -> usize {
        self.batches.iter().map(Vec::len).sum()
    }
}

/// Cut `jobs` into runs of at least `bytes` (the last may be shorter).
fn batches(jobs: Vec<Job>, bytes: u64) -> Vec<Vec<Job>> {
    let mut out: Vec<Vec<Job>> = Vec::new();
    let mut size = bytes;
    for j in jobs {
        if size >= bytes {
            out.push(Vec::new());
            size = 0;
        }
        size += j.length as u64;
        out.last_mut().expect("a batch was just started").push(j);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::manifest::tests::sample_manifest;

    fn id(n: u8) -> ChunkId {
        ChunkId([n; 32])
    }

    #[test]
    fn tables_are_held_back_at_both_ends() {
        let m = sample_manifest();
        let d = DeferredLayout::of(&m);
        assert_eq!(d.head, ByteRange::new(0, MIB));
        // last usable LBA 8158 of a 4 MiB disk with 512-byte sectors: the backup GPT
        // entries and header follow it.
        assert_eq!(d.tail, ByteRange::between(8159 * 512, 4 << 20));
        assert!(d.touches(ByteRange::new(MIB - 512, 1024)));
        assert!(!d.touches(ByteRange::new(MIB, 4096)));
        assert_eq!(
            d.direct_part(ByteRange::new(MIB - 512, 1024)),
            Some(ByteRange::new(MIB, 512))
        );
    }

    #[test]
    fn holes_are_zeroed_outside_the_tables_and_free_space_only_when_asked() {
        let m = sample_manifest();
        let plan = Plan::new(
            &m,
            &Choices {
                reuse: true,
                ..Default::default()
            },
        );
        // The hole at 2 MiB (64 KiB) is zeroed; the free run at 3 MiB is left alone; the
        // zeros inside the first MiB are part of the held-back head.
        assert_eq!(plan.zero, vec![ByteRange::new(2 * MIB, 64 << 10)]);
        let with_free = Plan::new(
            &m,
            &Choices {
                zero_free: true,
                ..Default::default()
            },
        );
        assert_eq!(
            with_free.zero,
            vec![
                ByteRange::new(2 * MIB, 64 << 10),
                ByteRange::new(3 * MIB, 512 << 10)
            ]
        );
        let new_image = Plan::new(
            &m,
            &Choices {
                create: true,
                zero_free: true,
                ..Default::default()
            },
        );
        assert!(new_image.zero.is_empty(), "a new image reads as zeros");
        assert_eq!(plan.hole_bytes, with_free.hole_bytes);
    }

    #[test]
    fn chunks_in_the_tables_are_never_checked_in_place() {
        let m = sample_manifest();
        let plan = Plan::new(
            &m,
            &Choices {
                reuse: true,
                ..Default::default()
            },
        );
        let jobs: Vec<&Job> = plan.batches.iter().flatten().collect();
        assert_eq!(jobs.len(), plan.chunk_count());
        for j in &jobs {
            let deferred = plan.deferred.touches(j.range());
            assert_eq!(j.check_in_place, !deferred, "{:?}", j.range());
        }
        assert!(jobs.iter().any(|j| j.check_in_place));
        assert!(
            jobs.windows(2).all(|w| w[0].offset < w[1].offset),
            "disk order"
        );
    }

    #[test]
    fn an_older_snapshot_says_where_to_check_in_place() {
        let m = sample_manifest();
        let first_direct = m
            .regions
            .iter()
            .flat_map(|r| &r.chunks)
            .find(|c| c.id.is_some() && c.offset >= MIB)
            .unwrap();
        let places: HashSet<ChunkPlace> = [ChunkPlace {
            offset: first_direct.offset,
            id: first_direct.id.unwrap(),
        }]
        .into();
        let plan = Plan::new(
            &m,
            &Choices {
                seed_places: Some(&places),
                ..Default::default()
            },
        );
        let checked: Vec<u64> = plan
            .batches
            .iter()
            .flatten()
            .filter(|j| j.check_in_place)
            .map(|j| j.offset)
            .collect();
        assert_eq!(checked, vec![first_direct.offset]);
    }

    #[test]
    fn batches_hold_about_the_batch_size() {
        let jobs: Vec<Job> = (0..10u64)
            .map(|i| Job {
                offset: i * 1000,
                length: 1000,
                id: id(i as u8),
                check_in_place: false,
            })
            .collect();
        let b = batches(jobs.clone(), 2500);
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), vec![3, 3, 3, 1]);
        assert_eq!(b.concat(), jobs);
        assert!(batches(Vec::new(), 2500).is_empty());
    }

    #[test]
    fn deferred_bytes_are_kept_from_the_chunks_that_cover_them() {
        let layout = DeferredLayout {
            head: ByteRange::new(0, 8),
            tail: ByteRange::new(24, 8),
        };
        let mut d = Deferred::new(layout);
        d.keep(ByteRange::new(4, 8), &[1; 8]);
        d.keep(ByteRange::new(20, 8), &[2; 8]);
        d.keep(ByteRange::new(12, 4), &[3; 4]);
        assert_eq!(d.head, [0, 0, 0, 0, 1, 1, 1, 1]);
        assert_eq!(d.tail, [2, 2, 2, 2, 0, 0, 0, 0]);
    }
}
