//! Which stored chunks are read together: the chunks a reader wants, grouped into runs of
//! one pack that one ranged read fetches (an HTTP `Range`, an S3 ranged GET, a `pread`).
//! Requests cost far more than bytes on an object store (the bench disk from Garage: 1,412
//! GETs of about 85 KiB took 10.6 s, 307 of up to 4 MiB 2.7 s), so a run reads over small
//! gaps between wanted chunks, and is as long as `MAX_RUN` allows.

use std::collections::HashMap;

use super::index::Location;
use super::pack::PackId;

/// The most one run reads: its body is allowed to take `timeouts::body` (a minute at
/// the slowest accepted rate), and each reader holds one run at a time.
pub const MAX_RUN: u64 = 4 << 20;

/// A run reads over at most this many unwanted bytes between two wanted chunks (a chunk
/// that another snapshot wrote there, or one wanted elsewhere) rather than make another
/// request.
pub const MAX_GAP: u64 = 256 << 10;

/// One chunk of a run, and the wanted items it serves (a chunk may be wanted at
/// several places).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunChunk {
    pub loc: Location,
    pub wanted: Vec<usize>,
}

/// Chunks of one pack read with one ranged read: `offset..offset+len` of the pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub pack: PackId,
    pub offset: u64,
    pub len: u64,
    pub chunks: Vec<RunChunk>,
}

/// Group wanted chunks (`(location, item)`, in the order they are wanted) into runs.
/// Packs come in the order they are first wanted and chunks in pack order, so a restore,
/// whose chunks were packed in disk order, still writes nearly in disk order.
pub fn plan(wanted: &[(Location, usize)]) -> Vec<Run> {
    let mut rank: HashMap<PackId, usize> = HashMap::new();
    for (l, _) in wanted {
        let next = rank.len();
        rank.entry(l.pack).or_insert(next);
    }
    let mut sorted: Vec<&(Location, usize)> = wanted.iter().collect();
    sorted.sort_by_key(|(l, item)| (rank[&l.pack], l.offset, *item));
    let mut runs: Vec<Run> = Vec::new();
    for &(l, item) in sorted {
        let start = l.offset as u64;
        let end = start + l.stored as u64;
        if let Some(run) = runs.last_mut().filter(|r| r.pack == l.pack) {
            let last = run.chunks.last_mut().expect("a run has a chunk");
            if last.loc.offset == l.offset {
                last.wanted.push(item);
                continue;
            }
            let run_end = run.offset + run.len;
            if start >= run_end && start - run_end <= MAX_GAP && end - run.offset <= MAX_RUN {
                run.len = end - run.offset;
                run.chunks.push(RunChunk {
                    loc: l,
                    wanted: vec![item],
                });
                continue;
            }
        }
        runs.push(Run {
            pack: l.pack,
            offset: start,
            len: end - start,
            chunks: vec![RunChunk {
                loc: l,
                wanted: vec![item],
            }],
        });
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(pack: u8, offset: u32, stored: u32) -> Location {
        Location {
            pack: PackId([pack; 32]),
            pack_len: 64 << 20,
            offset,
            stored,
            plain: stored * 3,
        }
    }

    fn shape(runs: &[Run]) -> Vec<(u8, u64, u64, Vec<Vec<usize>>)> {
        runs.iter()
            .map(|r| {
                (
                    r.pack.0[0],
                    r.offset,
                    r.len,
                    r.chunks.iter().map(|c| c.wanted.clone()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn neighbours_and_small_gaps_make_one_run_and_a_repeated_chunk_is_read_once() {
        let wanted = [
            (loc(7, 0, 100), 0),
            (loc(7, 100, 100), 1),
            // A gap of 1000 bytes (a chunk some other snapshot wanted) is read over.
            (loc(7, 1200, 100), 2),
            // The first chunk again, wanted at another place.
            (loc(7, 0, 100), 3),
        ];
        assert_eq!(
            shape(&plan(&wanted)),
            vec![(7, 0, 1300, vec![vec![0, 3], vec![1], vec![2]])]
        );
    }

    #[test]
    fn packs_keep_their_first_wanted_order_and_runs_end_at_gaps_and_at_the_limit() {
        let big = (MAX_RUN / 2) as u32;
        let far = 100 + MAX_GAP as u32 + 1;
        let wanted = [
            (loc(9, 0, 100), 0),
            (loc(9, far, 100), 1),
            (loc(2, 0, big), 2),
            (loc(2, big, big), 3),
            (loc(2, 2 * big, 1), 4),
            (loc(9, far + 100, 100), 5),
        ];
        assert_eq!(
            shape(&plan(&wanted)),
            vec![
                (9, 0, 100, vec![vec![0]]),
                (9, far as u64, 200, vec![vec![1], vec![5]]),
                (2, 0, MAX_RUN, vec![vec![2], vec![3]]),
                (2, MAX_RUN, 1, vec![vec![4]]),
            ]
        );
        assert!(plan(&[]).is_empty());
    }
}
