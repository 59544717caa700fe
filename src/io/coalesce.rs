//! A writer that takes pieces in disk order (as the restore pipeline hands them over) and
//! writes runs of contiguous pieces as large blocks that end on aligned boundaries, asking
//! the kernel to start writing each back at once.

use anyhow::Result;

use crate::range::ByteRange;

/// Positioned writes: a target disk, or a recorder in tests.
pub trait WriteAt {
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()>;
    /// Start writing `r` back without waiting; best effort.
    fn start_writeback(&self, _r: ByteRange) {}
}

/// Writes go out in blocks of about this size, ending on a multiple of `ALIGN`.
const BLOCK: usize = 1 << 20;
const ALIGN: u64 = 1 << 20;

pub struct CoalescingWriter<'a, W: WriteAt + ?Sized> {
    out: &'a W,
    buf: Vec<u8>,
    buf_offset: u64,
    /// Bytes written so far.
    written: u64,
}

impl<'a, W: WriteAt + ?Sized> CoalescingWriter<'a, W> {
    pub fn new(out: &'a W) -> Self {
        Self::with_capacity(out, BLOCK + ALIGN as usize)
    }

    fn with_capacity(out: &'a W, cap: usize) -> Self {
        CoalescingWriter {
            out,
            buf: Vec::with_capacity(cap),
            buf_offset: 0,
            written: 0,
        }
    }

    /// `data` belongs at `offset`. A piece that does not continue the previous one ends
    /// the current run.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if !self.buf.is_empty() && self.buf_offset + self.buf.len() as u64 != offset {
            self.flush()?;
        }
        if self.buf.is_empty() {
            self.buf_offset = offset;
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() >= BLOCK {
            self.write_aligned_part()?;
        }
        Ok(())
    }

    /// Write up to the last aligned boundary; keep the rest for the next block.
    fn write_aligned_part(&mut self) -> Result<()> {
        let end = self.buf_offset + self.buf.len() as u64;
        let cut = (end / ALIGN * ALIGN).max(self.buf_offset);
        let n = (cut - self.buf_offset) as usize;
        if n > 0 {
            self.out.write_at(&self.buf[..n], self.buf_offset)?;
            self.out
                .start_writeback(ByteRange::new(self.buf_offset, n as u64));
            self.written += n as u64;
            self.buf.drain(..n);
            self.buf_offset = cut;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            self.out.write_at(&self.buf, self.buf_offset)?;
            self.written += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    /// Write what is buffered; returns the bytes written in all.
    pub fn finish(mut self) -> Result<u64> {
        self.flush()?;
        Ok(self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Records every write.
    #[derive(Default)]
    struct Recorder {
        writes: RefCell<Vec<(u64, Vec<u8>)>>,
    }

    impl WriteAt for Recorder {
        fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
            self.writes.borrow_mut().push((offset, buf.to_vec()));
            Ok(())
        }
    }

    fn image(writes: &[(u64, Vec<u8>)], size: usize) -> Vec<u8> {
        let mut img = vec![0u8; size];
        for (o, d) in writes {
            img[*o as usize..*o as usize + d.len()].copy_from_slice(d);
        }
        img
    }

    #[test]
    fn contiguous_pieces_become_one_write() {
        let r = Recorder::default();
        let mut w = CoalescingWriter::new(&r);
        for i in 0..10u64 {
            w.write(i * 100, &[i as u8; 100]).unwrap();
        }
        assert_eq!(w.finish().unwrap(), 1000);
        let writes = r.writes.borrow();
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].0, 0);
        assert_eq!(writes[0].1.len(), 1000);
    }

    #[test]
    fn a_gap_ends_the_run() {
        let r = Recorder::default();
        let mut w = CoalescingWriter::new(&r);
        w.write(0, &[1; 10]).unwrap();
        w.write(10, &[2; 10]).unwrap();
        w.write(50, &[3; 10]).unwrap();
        w.write(60, &[]).unwrap();
        assert_eq!(w.finish().unwrap(), 30);
        let writes = r.writes.borrow();
        assert_eq!(
            writes
                .iter()
                .map(|(o, d)| (*o, d.len()))
                .collect::<Vec<_>>(),
            vec![(0, 20), (50, 10)]
        );
        let img = image(&writes, 60);
        assert_eq!(&img[..20], &[[1u8; 10], [2u8; 10]].concat()[..]);
        assert_eq!(&img[50..], &[3u8; 10]);
    }

    #[test]
    fn large_runs_are_written_in_aligned_blocks() {
        let r = Recorder::default();
        let mut w = CoalescingWriter::new(&r);
        // 20 MiB from an unaligned start, in 300 KiB pieces.
        let start = 4096u64;
        let piece = 300 << 10;
        let mut data = Vec::new();
        let mut pos = start;
        while pos < start + (20 << 20) {
            let d: Vec<u8> = (0..piece)
                .map(|i| ((pos as usize + i) % 251) as u8)
                .collect();
            w.write(pos, &d).unwrap();
            data.extend_from_slice(&d);
            pos += piece as u64;
        }
        assert_eq!(w.finish().unwrap(), data.len() as u64);
        let writes = r.writes.borrow();
        assert!(writes.len() >= 2, "written in more than one block");
        for (o, d) in &writes[..writes.len() - 1] {
            assert_eq!((o + d.len() as u64) % ALIGN, 0, "a block ends aligned");
            assert!(d.len() <= BLOCK + ALIGN as usize);
        }
        let img = image(&writes, start as usize + data.len());
        assert_eq!(&img[start as usize..], &data[..]);
    }
}
