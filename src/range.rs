//! Byte ranges on a disk: one type, one convention (an offset and a length), used by the
//! manifest, the filesystem readers, capture and restore alike.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The bytes [offset, offset + len) of a disk or file.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteRange {
    pub offset: u64,
    pub len: u64,
}

impl ByteRange {
    pub const fn new(offset: u64, len: u64) -> ByteRange {
        ByteRange { offset, len }
    }

    /// The range [start, end); empty when `end <= start`.
    pub fn between(start: u64, end: u64) -> ByteRange {
        ByteRange::new(start, end.saturating_sub(start))
    }

    /// One past the last byte.
    pub const fn end(&self) -> u64 {
        self.offset + self.len
    }

    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `other` lies wholly inside this range.
    pub fn contains(&self, other: ByteRange) -> bool {
        self.offset <= other.offset && other.end() <= self.end()
    }

    /// The bytes both ranges hold, if any.
    pub fn intersect(&self, other: ByteRange) -> Option<ByteRange> {
        let r = ByteRange::between(self.offset.max(other.offset), self.end().min(other.end()));
        (!r.is_empty()).then_some(r)
    }

    /// The same length, `by` bytes further on.
    pub fn shifted(&self, by: u64) -> ByteRange {
        ByteRange::new(self.offset + by, self.len)
    }
}

impl fmt::Debug for ByteRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {})", self.offset, self.end())
    }
}

/// Stored as `[offset, length]`, as the manifest format has always written it.
impl Serialize for ByteRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.offset, self.len).serialize(s)
    }
}

impl<'de> Deserialize<'de> for ByteRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (offset, len) = <(u64, u64)>::deserialize(d)?;
        Ok(ByteRange { offset, len })
    }
}

/// The parts of `within` that none of the sorted, disjoint `ranges` cover.
pub fn complement(ranges: &[ByteRange], within: ByteRange) -> Vec<ByteRange> {
    let mut out = Vec::new();
    let mut pos = within.offset;
    for r in ranges {
        if r.offset > pos {
            out.push(ByteRange::between(pos, r.offset.min(within.end())));
        }
        pos = pos.max(r.end());
    }
    if within.end() > pos {
        out.push(ByteRange::between(pos, within.end()));
    }
    out.retain(|r| !r.is_empty());
    out
}

/// Whether `r` lies wholly inside one of the sorted, disjoint `ranges`.
pub fn covered_by_one(ranges: &[ByteRange], r: ByteRange) -> bool {
    let i = ranges.partition_point(|x| x.end() <= r.offset);
    ranges.get(i).is_some_and(|x| x.contains(r))
}

/// Add `r` to ascending `ranges`, merged into the last one where they touch or overlap.
/// Empty ranges are dropped.
pub fn append_merged(ranges: &mut Vec<ByteRange>, r: ByteRange) {
    if r.is_empty() {
        return;
    }
    match ranges.last_mut() {
        Some(last) if last.end() >= r.offset => {
            last.len = last.end().max(r.end()) - last.offset;
        }
        _ => ranges.push(r),
    }
}

/// Sum of the lengths.
pub fn total(ranges: &[ByteRange]) -> u64 {
    ranges.iter().map(|r| r.len).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(o: u64, l: u64) -> ByteRange {
        ByteRange::new(o, l)
    }

    #[test]
    fn complement_of_ranges() {
        assert_eq!(
            complement(&[r(10, 5), r(20, 5)], r(0, 30)),
            vec![r(0, 10), r(15, 5), r(25, 5)]
        );
        assert_eq!(complement(&[], r(5, 10)), vec![r(5, 10)]);
        assert_eq!(complement(&[r(0, 30)], r(0, 30)), vec![]);
        // A range running past the end is cut at the end.
        assert_eq!(complement(&[r(40, 5)], r(0, 30)), vec![r(0, 30)]);
    }

    #[test]
    fn covered_by_one_range() {
        let rs = [r(0, 10), r(20, 10)];
        assert!(covered_by_one(&rs, r(2, 8)));
        assert!(covered_by_one(&rs, r(20, 10)));
        assert!(!covered_by_one(&rs, r(5, 10)), "spans a gap");
        assert!(!covered_by_one(&rs, r(12, 2)), "in the gap");
        assert!(!covered_by_one(&rs, r(29, 2)), "past the last");
    }

    #[test]
    fn intersection_and_bounds() {
        assert_eq!(r(0, 10).intersect(r(5, 10)), Some(r(5, 5)));
        assert_eq!(r(0, 10).intersect(r(10, 5)), None);
        assert_eq!(ByteRange::between(7, 3), r(7, 0));
        assert_eq!(r(4, 4).shifted(10), r(14, 4));
        assert_eq!(total(&[r(0, 3), r(9, 4)]), 7);
    }

    #[test]
    fn appending_merges_touching_ranges() {
        let mut v = Vec::new();
        append_merged(&mut v, r(0, 10));
        append_merged(&mut v, r(10, 5));
        append_merged(&mut v, r(12, 1));
        append_merged(&mut v, r(20, 0));
        append_merged(&mut v, r(30, 5));
        assert_eq!(v, vec![r(0, 15), r(30, 5)]);
    }

    #[test]
    fn serialised_as_offset_and_length() {
        assert_eq!(serde_json::to_string(&r(512, 4096)).unwrap(), "[512,4096]");
        let back: ByteRange = serde_json::from_str("[512,4096]").unwrap();
        assert_eq!(back, r(512, 4096));
    }
}
