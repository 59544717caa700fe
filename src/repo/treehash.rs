//! The BLAKE3 of a whole region, computed in parallel: each segment (a power-of-two size,
//! at a multiple of that size into the region) is a complete BLAKE3 subtree, hashed by
//! whichever worker read it; the subtrees are merged as BLAKE3's tree prescribes. The
//! result equals `blake3::hash` of the region's bytes, or `blake3::keyed_hash` under the
//! region key of an encrypted repository.

use blake3::hazmat::{
    left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};
use blake3::Hasher;

/// A hasher for the segment that starts `offset` bytes into its region (keyed with `key`).
pub fn segment_hasher(offset: u64, key: Option<&[u8; 32]>) -> Hasher {
    let mut h = match key {
        Some(k) => Hasher::new_keyed(k),
        None => Hasher::new(),
    };
    if offset > 0 {
        h.set_input_offset(offset);
    }
    h
}

/// A finished segment: the root hash when the segment is the whole region, otherwise its
/// chaining value.
#[derive(Clone, Debug)]
pub enum Segment {
    Whole(blake3::Hash),
    Part { len: u64, cv: ChainingValue },
}

pub fn finish(h: &Hasher, len: u64, whole_region: bool) -> Segment {
    if whole_region {
        Segment::Whole(h.finalize())
    } else {
        Segment::Part {
            len,
            cv: h.finalize_non_root(),
        }
    }
}

/// The region's hash from its segments, in order (hashed with `key`, if any).
pub fn combine(segments: &[Segment], key: Option<&[u8; 32]>) -> blake3::Hash {
    if let [Segment::Whole(h)] = segments {
        return *h;
    }
    let parts: Vec<(u64, ChainingValue)> = segments
        .iter()
        .map(|s| match s {
            Segment::Part { len, cv } => (*len, *cv),
            Segment::Whole(_) => panic!("a whole-region segment among others"),
        })
        .collect();
    let mode = match key {
        Some(k) => Mode::KeyedHash(k),
        None => Mode::Hash,
    };
    let (root, _) = merge(&parts, true, mode);
    root.expect("two or more segments merge to a root")
}

/// Merge consecutive subtrees into one: the root hash when `root`, else a chaining value.
fn merge(
    parts: &[(u64, ChainingValue)],
    root: bool,
    mode: Mode<'_>,
) -> (Option<blake3::Hash>, ChainingValue) {
    if parts.len() == 1 {
        return (None, parts[0].1);
    }
    let total: u64 = parts.iter().map(|p| p.0).sum();
    let left_len = left_subtree_len(total);
    let mut acc = 0;
    let split = parts
        .iter()
        .position(|p| {
            acc += p.0;
            acc >= left_len
        })
        .expect("segments are subtree-aligned")
        + 1;
    let (_, l) = merge(&parts[..split], false, mode);
    let (_, r) = merge(&parts[split..], false, mode);
    if root {
        (Some(merge_subtrees_root(&l, &r, mode)), [0; 32])
    } else {
        (None, merge_subtrees_non_root(&l, &r, mode))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equals_plain_blake3_for_every_shape() {
        let seg = 8 * 1024u64;
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        for len in [
            1u64, 1000, 1024, 8192, 8193, 16384, 20000, 24576, 33000, 65536, 99_999,
        ] {
            let input = &data[..len as usize];
            let whole = len <= seg;
            let key = [5u8; 32];
            for k in [None, Some(&key)] {
                let segments: Vec<Segment> = input
                    .chunks(seg as usize)
                    .enumerate()
                    .map(|(i, part)| {
                        let mut h = segment_hasher(i as u64 * seg, k);
                        h.update(part);
                        finish(&h, part.len() as u64, whole)
                    })
                    .collect();
                let want = match k {
                    Some(k) => blake3::keyed_hash(k, input),
                    None => blake3::hash(input),
                };
                assert_eq!(combine(&segments, k), want, "length {len}");
            }
        }
    }
}
