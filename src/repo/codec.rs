//! How a repository stores a chunk's bytes and reads them back: zstd at the repository's
//! level (no checksum: the chunk's id is one), then, in an encrypted repository, sealed
//! under the chunk's keyed id; read back, opened, decompressed within the chunk limit and
//! hashed against the id. One compressor and decompressor per thread.

use std::cell::RefCell;

use super::ChunkId;
use crate::crypt::Protection;

thread_local! {
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
}

/// A chunk's encoding in one repository.
#[derive(Clone)]
pub struct Codec {
    /// zstd's level for new chunks.
    level: i32,
    /// The most a chunk decompresses to.
    max_plain: usize,
    protection: Protection,
}

/// The repository is encrypted, and this reader has no key.
#[derive(Debug)]
pub struct Locked;

impl Codec {
    pub fn new(level: i32, max_plain: u32, protection: Protection) -> Codec {
        Codec {
            level,
            max_plain: max_plain as usize,
            protection,
        }
    }

    /// A chunk's id: the BLAKE3 of its bytes, keyed in an encrypted repository.
    pub fn id(&self, plain: &[u8]) -> ChunkId {
        ChunkId::under(&self.protection, plain)
    }

    /// A chunk as the repository stores it: compressed, then sealed when encrypted.
    pub fn encode(&self, id: &ChunkId, plain: &[u8]) -> anyhow::Result<Result<Vec<u8>, Locked>> {
        let mut stored = self.compress(plain)?;
        match &self.protection {
            Protection::Plain => {}
            Protection::Unlocked(c) => c.seal_chunk(&id.0, &mut stored),
            Protection::Locked => return Ok(Err(Locked)),
        }
        Ok(Ok(stored))
    }

    fn compress(&self, plain: &[u8]) -> anyhow::Result<Vec<u8>> {
        let level = self.level;
        COMPRESSOR.with(|c| -> anyhow::Result<Vec<u8>> {
            let mut c = c.borrow_mut();
            if c.as_ref().map(|(l, _)| *l) != Some(level) {
                *c = Some((level, zstd::bulk::Compressor::new(level)?));
            }
            let comp = &mut c.as_mut().expect("just made").1;
            comp.include_checksum(false)?;
            comp.include_contentsize(true)?;
            Ok(comp.compress(plain)?)
        })
    }

    /// Stored bytes back to the chunk they hold, which must hash to `id`; the reason
    /// they do not otherwise.
    pub fn decode(&self, id: &ChunkId, raw: &[u8]) -> Result<Vec<u8>, String> {
        let opened;
        let raw = match &self.protection {
            Protection::Plain => raw,
            Protection::Unlocked(c) => {
                let mut buf = raw.to_vec();
                c.open_chunk(&id.0, &mut buf).map_err(|e| e.to_string())?;
                opened = buf;
                &opened[..]
            }
            Protection::Locked => return Err("encrypted, and this reader has no key".into()),
        };
        let plain = DECOMPRESSOR
            .with(|d| -> std::io::Result<Vec<u8>> {
                let mut d = d.borrow_mut();
                if d.is_none() {
                    *d = Some(zstd::bulk::Decompressor::new()?);
                }
                d.as_mut().unwrap().decompress(raw, self.max_plain)
            })
            .map_err(|e| format!("zstd: {e}"))?;
        let actual = self.id(&plain);
        if actual != *id {
            return Err(format!("its content hashes to {}", actual.short()));
        }
        Ok(plain)
    }
}
