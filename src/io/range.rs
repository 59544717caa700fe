//! A `Read` over one byte range of a file, by positioned reads (no shared file offset).
//! Ranges given to `with_zeros` read as zeros without touching the file: free filesystem
//! space that a capture skips and a verify ignores.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use crate::range::ByteRange;

/// Positioned reads: a file, or a device (which may be an NBD export).
pub trait ReadAt: Sync {
    /// Read up to `buf.len()` bytes at `offset`; 0 only at the end.
    fn read_partial(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl ReadAt for File {
    fn read_partial(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.read_at(buf, offset)
    }
}

pub struct RangeReader<'a> {
    file: &'a dyn ReadAt,
    pos: u64,
    end: u64,
    /// Ascending, non-overlapping ranges that read as zeros.
    zeros: Vec<ByteRange>,
    next_zero: usize,
}

impl<'a> RangeReader<'a> {
    pub fn new(file: &'a dyn ReadAt, offset: u64, length: u64) -> Self {
        RangeReader {
            file,
            pos: offset,
            end: offset + length,
            zeros: Vec::new(),
            next_zero: 0,
        }
    }

    pub fn with_zeros(mut self, zeros: &[ByteRange]) -> Self {
        self.zeros = zeros.to_vec();
        self
    }
}

impl Read for RangeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(z) = self.zeros.get(self.next_zero) {
            if z.end() <= self.pos {
                self.next_zero += 1;
            } else {
                break;
            }
        }
        let mut want = buf.len().min((self.end - self.pos) as usize);
        if want == 0 {
            return Ok(0);
        }
        if let Some(z) = self.zeros.get(self.next_zero) {
            if z.offset <= self.pos {
                let n = want.min((z.end() - self.pos) as usize);
                buf[..n].fill(0);
                self.pos += n as u64;
                return Ok(n);
            }
            want = want.min((z.offset - self.pos) as usize);
        }
        let n = self.file.read_partial(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the disk ended at byte {} before the expected {}",
                    self.pos, self.end
                ),
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn zero_ranges_read_as_zeros() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[7u8; 100]).unwrap();
        let zeros = [
            ByteRange::new(5, 10),
            ByteRange::new(40, 5),
            ByteRange::new(85, 50),
        ];
        let mut r = RangeReader::new(&f, 10, 80).with_zeros(&zeros);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        let mut want = vec![7u8; 80];
        want[..5].fill(0); // 10..15
        want[30..35].fill(0); // 40..45
        want[75..].fill(0); // 85..90
        assert_eq!(out, want);
    }

    #[test]
    fn a_short_file_is_an_error_not_a_short_read() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[1u8; 10]).unwrap();
        let mut r = RangeReader::new(&f, 0, 20);
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
