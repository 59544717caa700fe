//! Content-defined chunking (FastCDC 2020) over a reader, in large sequential reads.

use std::io::{self, Read};

use fastcdc::v2020::{cut, logarithm2, MASKS};

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
    /// Bytes handed out so far.
    pub position: u64,
}

impl<R: Read> Chunker<R> {
    pub fn new(src: R, p: &ChunkerParams) -> Self {
        // Normalization level 1, as the fastcdc crate's default.
        let bits = logarithm2(p.avg_size);
        let mask_s = MASKS[(bits + 1) as usize];
        let mask_l = MASKS[(bits - 1) as usize];
        Chunker {
            src,
            buf: vec![0; BUFFER.max(2 * p.max_size as usize)],
            start: 0,
            end: 0,
            eof: false,
            min: p.min_size as usize,
            avg: p.avg_size as usize,
            max: p.max_size as usize,
            masks: (mask_s, mask_l, mask_s << 1, mask_l << 1),
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
        let (ms, ml, msl, mll) = self.masks;
        let (_, len) = cut(data, self.min, self.avg, self.max, ms, ml, msl, mll);
        let chunk = &self.buf[self.start..self.start + len];
        self.start += len;
        self.position += len as u64;
        Ok(Some(chunk))
    }
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
        let mut c = Chunker::new(data, p);
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
