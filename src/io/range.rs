//! A `Read` over one byte range of a file, by positioned reads (no shared file offset).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

pub struct RangeReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl<'a> RangeReader<'a> {
    pub fn new(file: &'a File, offset: u64, length: u64) -> Self {
        RangeReader {
            file,
            pos: offset,
            end: offset + length,
        }
    }
}

impl Read for RangeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min((self.end - self.pos) as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
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
