//! Linux swap: only the header page matters; the rest is scratch that the next boot
//! overwrites. A swap area holding a hibernation image has another signature, which the
//! probe does not call swap, so it is read in full.

use anyhow::{ensure, Result};

use super::{FsKind, Reader, Usage};
use crate::range::ByteRange;

pub fn scan(r: &Reader, len: u64) -> Result<Usage> {
    let head = r.read(0, 65536.min(len as usize))?;
    let page = [4096usize, 8192, 16384, 65536]
        .into_iter()
        .find(|&p| head.len() >= p && &head[p - 10..p] == b"SWAPSPACE2");
    ensure!(page.is_some(), "no SWAPSPACE2 signature");
    let page = page.unwrap() as u64;
    Ok(Usage {
        kind: FsKind::Swap,
        block_size: page as u32,
        used: vec![ByteRange::new(0, page)],
        note: None,
    })
}
