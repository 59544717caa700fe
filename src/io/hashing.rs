//! A reader that hashes (BLAKE3) and counts everything read through it, so that a file
//! can be parsed as it streams in and its name checked once it has all been read.

use std::io::{self, Read};

pub struct HashingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
    read: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: blake3::Hasher::new(),
            read: 0,
        }
    }

    /// Read (and hash) whatever is left, then the hash of everything and its length.
    pub fn finish(mut self) -> io::Result<(blake3::Hash, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((self.hasher.finalize(), self.read))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_what_was_read_and_what_was_left() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut r = HashingReader::new(&data[..]);
        let mut head = [0u8; 1000];
        r.read_exact(&mut head).unwrap();
        let (hash, n) = r.finish().unwrap();
        assert_eq!((hash, n), (blake3::hash(&data), data.len() as u64));
    }
}
