//! Content-defined chunking (FastCDC 2020) over a reader, in large sequential reads.

use std::io::{self, Read};

use std::sync::Arc;

use fastcdc::v2020::{cut_gear, logarithm2, MASKS};

use crate::crypt::Gear;

use super::ChunkerParams;

/// Size of the read buffer; one read fills what the last cut left free.
const BUFFER: usize = 8 << 20;

pub struct Chunker<R> {
    src: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    min: usize,
    avg: usize,
    max: usize,
    masks: (u64, u64, u64, u64),
    /// The gear table: FastCDC's standard one, or a keyed one (encrypted repositories).
    gear: Arc<Gear>,
    /// Where FastCDC cuts a run of zeros that starts a chunk. Its decision at each byte
    /// depends only on the bytes before it, so a chunk whose first `zero_cut` bytes are
    /// zero ends there: found without hashing them (free space and holes are much of a
    /// disk), at exactly the boundary the hashing would give.
    zero_cut: usize,
    /// Bytes handed out so far.
    pub position: u64,
}

impl<R: Read> Chunker<R> {
    pub fn new(src: R, p: &ChunkerParams, gear: Arc<Gear>) -> Self {
        // Normalization level 1, as the fastcdc crate's default.
        let bits = logarithm2(p.avg_size);
        let mask_s = MASKS[(bits + 1) as usize];
        let mask_l = MASKS[(bits - 1) as usize];
        let masks = (mask_s, mask_l, mask_s << 1, mask_l << 1);
        let zero_cut = {
            let zeros = vec![0u8; p.max_size as usize];
            let (ms, ml, msl, mll) = masks;
            let min = p.min_size as usize;
            let (avg, max) = (p.avg_size as usize, p.max_size as usize);
            cut_gear(
                &zeros,
                min,
                avg,
                max,
                ms,
                ml,
                msl,
                mll,
                &gear.gear,
                &gear.gear_ls,
            )
            .1
        };
        Chunker {
            src,
            buf: vec![0; BUFFER.max(2 * p.max_size as usize)],
            start: 0,
            end: 0,
            eof: false,
            min: p.min_size as usize,
            avg: p.avg_size as usize,
            max: p.max_size as usize,
            masks,
            gear,
            zero_cut,
            position: 0,
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        if self.end - self.start >= self.max || self.eof {
            return Ok(());
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while self.end < self.buf.len() {
            match self.src.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The next chunk's bytes, or None at the end of the source.
    pub fn next_chunk(&mut self) -> io::Result<Option<&[u8]>> {
        self.fill()?;
        if self.start == self.end {
            return Ok(None);
        }
        let data = &self.buf[self.start..self.end];
        let len = if data.len() >= self.zero_cut && is_zero(&data[..self.zero_cut]) {
            self.zero_cut
        } else {
            let (ms, ml, msl, mll) = self.masks;
            let g = &*self.gear;
            cut_gear(
                data, self.min, self.avg, self.max, ms, ml, msl, mll, &g.gear, &g.gear_ls,
            )
            .1
        };
        let chunk = &self.buf[self.start..self.start + len];
        self.start += len;
        self.position += len as u64;
        Ok(Some(chunk))
    }
}

/// Whether every byte is zero, a word at a time.
pub fn is_zero(data: &[u8]) -> bool {
    // SAFETY: u128 has no invalid bit patterns; align_to only reinterprets the middle.
    let (pre, mid, post) = unsafe { data.align_to::<u128>() };
    pre.iter().all(|&b| b == 0) && post.iter().all(|&b| b == 0) && mid.iter().all(|&w| w == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize, mut seed: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    }

    fn cuts(data: &[u8], p: &ChunkerParams) -> Vec<Vec<u8>> {
        cuts_with(data, p, Gear::shared_standard())
    }

    fn cuts_with(data: &[u8], p: &ChunkerParams, gear: Arc<Gear>) -> Vec<Vec<u8>> {
        let mut c = Chunker::new(data, p, gear);
        let mut out = Vec::new();
        while let Some(ch) = c.next_chunk().unwrap() {
            out.push(ch.to_vec());
        }
        out
    }

    #[test]
    fn chunks_cover_input_within_bounds() {
        let p = ChunkerParams::default();
        let data = pseudo_random(20 << 20, 7);
        let chunks = cuts(&data, &p);
        assert_eq!(chunks.concat(), data);
        for c in &chunks[..chunks.len() - 1] {
            assert!(c.len() >= p.min_size as usize && c.len() <= p.max_size as usize);
        }
        let avg = data.len() / chunks.len();
        assert!(
            avg > p.min_size as usize && avg < p.max_size as usize,
            "avg {avg}"
        );
    }

    #[test]
    fn zero_detection() {
        let mut v = vec![0u8; 4099];
        assert!(is_zero(&v));
        v[4098] = 1;
        assert!(!is_zero(&v));
        v[4098] = 0;
        v[1] = 1;
        assert!(!is_zero(&v[1..]));
    }

    /// The cuts FastCDC makes over `data`, hashing every byte.
    fn reference_cuts(data: &[u8], p: &ChunkerParams, g: &Gear) -> Vec<usize> {
        let bits = logarithm2(p.avg_size);
        let (ms, ml) = (MASKS[(bits + 1) as usize], MASKS[(bits - 1) as usize]);
        let (min, avg, max) = (
            p.min_size as usize,
            p.avg_size as usize,
            p.max_size as usize,
        );
        let mut out = Vec::new();
        let mut at = 0;
        while at < data.len() {
            let (_, len) = cut_gear(
                &data[at..],
                min,
                avg,
                max,
                ms,
                ml,
                ms << 1,
                ml << 1,
                &g.gear,
                &g.gear_ls,
            );
            at += len;
            out.push(len);
        }
        out
    }

    #[test]
    fn runs_of_zeros_are_cut_where_hashing_them_would_cut() {
        let p = ChunkerParams::default();
        let mut data = pseudo_random(12 << 20, 3);
        // Zero runs of many lengths, at chunk starts and in the middle of chunks, and
        // zeros ending just before and just after the zero cut.
        let mut at = 100_000;
        for len in [
            1usize,
            4096,
            65_537,
            262_143,
            262_144,
            262_145,
            1 << 20,
            3 << 20,
        ] {
            data[at..at + len].fill(0);
            at += len + 77_777;
        }
        data[10 << 20..].fill(0);
        let ours: Vec<usize> = cuts(&data, &p).iter().map(Vec::len).collect();
        assert_eq!(ours, reference_cuts(&data, &p, &Gear::standard()));
        assert!(
            ours.iter().filter(|&&l| l == 262_144).count() > 8,
            "{ours:?}"
        );
        // The same with a keyed table (an encrypted repository), whose cuts differ.
        let keyed = crate::crypt::Crypt::new(&crate::crypt::MasterKey::from_bytes([9; 32])).gear();
        let theirs: Vec<usize> = cuts_with(&data, &p, keyed.clone())
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(theirs, reference_cuts(&data, &p, &keyed));
        assert_ne!(theirs[..20], ours[..20], "a keyed table cuts elsewhere");
    }

    #[test]
    fn an_insertion_disturbs_only_nearby_chunks() {
        let p = ChunkerParams::default();
        let data = pseudo_random(16 << 20, 11);
        let mut shifted = data.clone();
        shifted.splice(5_000_000..5_000_000, b"inserted bytes".iter().copied());
        let a = cuts(&data, &p);
        let b = cuts(&shifted, &p);
        let set: std::collections::HashSet<_> = a.iter().collect();
        let shared = b.iter().filter(|c| set.contains(c)).count();
        assert!(
            shared + 3 >= a.len(),
            "only {shared} of {} chunks survived",
            a.len()
        );
    }
}
