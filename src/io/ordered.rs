//! A writer that takes pieces out of order (as parallel workers finish them), puts them
//! back in order, and writes runs of contiguous pieces in large aligned blocks.

use std::collections::BTreeMap;

use anyhow::Result;

use crate::disk::Device;

/// Writes go out in blocks of about this size, ending on a multiple of `ALIGN`.
const BLOCK: usize = 8 << 20;
const ALIGN: u64 = 1 << 20;

pub struct OrderedWriter<'a> {
    dev: &'a Device,
    next: u64,
    pending: BTreeMap<u64, (u64, Vec<u8>)>,
    buf: Vec<u8>,
    buf_offset: u64,
    /// Bytes written to the device so far.
    pub written: u64,
}

impl<'a> OrderedWriter<'a> {
    pub fn new(dev: &'a Device) -> Self {
        OrderedWriter {
            dev,
            next: 0,
            pending: BTreeMap::new(),
            buf: Vec::with_capacity(BLOCK + (1 << 20)),
            buf_offset: 0,
            written: 0,
        }
    }

    /// Piece number `seq` (numbered from 0 without gaps) belongs at `offset`. An empty
    /// piece only advances the order.
    pub fn push(&mut self, seq: u64, offset: u64, data: Vec<u8>) -> Result<()> {
        self.pending.insert(seq, (offset, data));
        while let Some((offset, data)) = self.pending.remove(&self.next) {
            self.next += 1;
            self.append(offset, &data)?;
        }
        Ok(())
    }

    /// The next piece number the writer waits for: every piece before it is written.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    fn append(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if !self.buf.is_empty() && self.buf_offset + self.buf.len() as u64 != offset {
            self.flush_all()?;
        }
        if self.buf.is_empty() {
            self.buf_offset = offset;
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() >= BLOCK {
            // Write up to the last aligned boundary; keep the rest for the next block.
            let end = self.buf_offset + self.buf.len() as u64;
            let cut = (end / ALIGN * ALIGN).max(self.buf_offset);
            let n = (cut - self.buf_offset) as usize;
            if n > 0 {
                self.dev.write_at(&self.buf[..n], self.buf_offset)?;
                self.dev.start_writeback(self.buf_offset, n as u64);
                self.written += n as u64;
                self.buf.drain(..n);
                self.buf_offset = cut;
            }
        }
        Ok(())
    }

    fn flush_all(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            self.dev.write_at(&self.buf, self.buf_offset)?;
            self.written += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    /// Write what is buffered; every piece pushed must have arrived.
    pub fn finish(mut self) -> Result<u64> {
        anyhow::ensure!(
            self.pending.is_empty(),
            "{} pieces never arrived in order",
            self.pending.len()
        );
        self.flush_all()?;
        Ok(self.written)
    }
}
