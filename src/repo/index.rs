//! Index files (repository format 2): which pack holds each chunk, so that a capture or a
//! restore never lists the packs or reads their trailers. Each capture writes one index
//! file for the packs it wrote, after those packs are durable and before its manifest;
//! readers load every index file into one `ChunkIndex`.

use std::collections::HashMap;

use super::id::ChunkId;
use super::pack::{check_entries, PackEntry, PackId, ENTRY_BYTES, MAX_PACK_BYTES};
use crate::hex::encode as hex;

pub const INDEX_MAGIC: &[u8; 8] = b"LBINDX02";
/// No index file is larger than this (some 6 million chunks).
pub const MAX_INDEX_BYTES: u64 = 256 << 20;
const PACK_HEAD_BYTES: usize = 32 + 8 + 4;

/// The packs an index file describes, with their entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedPack {
    pub id: PackId,
    pub len: u64,
    pub entries: Vec<PackEntry>,
}

pub fn encode(packs: &[IndexedPack]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(INDEX_MAGIC);
    out.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    for p in packs {
        out.extend_from_slice(&p.id.0);
        out.extend_from_slice(&p.len.to_le_bytes());
        out.extend_from_slice(&(p.entries.len() as u32).to_le_bytes());
        for e in &p.entries {
            e.encode(&mut out);
        }
    }
    out
}

/// Parse an index file, checking every count against the bytes that remain before it
/// drives an allocation, and every pack's entries as a pack's own trailer is checked.
/// `overhead`: what a pack's trailer takes besides its entries (a sealed trailer's
/// envelope in an encrypted repository).
pub fn parse(
    data: &[u8],
    max_plain: u32,
    max_stored: u64,
    overhead: u64,
) -> Result<Vec<IndexedPack>, String> {
    if data.len() as u64 > MAX_INDEX_BYTES {
        return Err(format!(
            "{} bytes, over the {MAX_INDEX_BYTES} an index may hold",
            data.len()
        ));
    }
    if data.len() < 16 || &data[..8] != INDEX_MAGIC {
        return Err("not a Lifeboat index file (no magic)".into());
    }
    let u32_at = |o: usize| u32::from_le_bytes([data[o], data[o + 1], data[o + 2], data[o + 3]]);
    let count = u32_at(8) as usize;
    if count > (data.len() - 16) / PACK_HEAD_BYTES {
        return Err(format!(
            "it claims {count} packs, more than its size allows"
        ));
    }
    let mut packs = Vec::with_capacity(count);
    let mut pos = 16;
    for _ in 0..count {
        if data.len() - pos < PACK_HEAD_BYTES {
            return Err("it ends inside a pack's record".into());
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(&data[pos..pos + 32]);
        let mut len = [0u8; 8];
        len.copy_from_slice(&data[pos + 32..pos + 40]);
        let len = u64::from_le_bytes(len);
        let n = u32_at(pos + 40) as usize;
        pos += PACK_HEAD_BYTES;
        if len > MAX_PACK_BYTES || n > (data.len() - pos) / ENTRY_BYTES {
            return Err(format!(
                "pack {} claims {len} bytes and {n} chunks, more than can be",
                &hex(&id)[..16]
            ));
        }
        let entries: Vec<PackEntry> = data[pos..pos + n * ENTRY_BYTES]
            .chunks_exact(ENTRY_BYTES)
            .map(PackEntry::decode)
            .collect();
        pos += n * ENTRY_BYTES;
        check_entries(&entries, len, max_plain, max_stored, overhead)
            .map_err(|e| format!("pack {}: {e}", &hex(&id)[..16]))?;
        packs.push(IndexedPack {
            id: PackId(id),
            len,
            entries,
        });
    }
    if pos != data.len() {
        return Err(format!("{} bytes follow its last pack", data.len() - pos));
    }
    Ok(packs)
}

/// Where a chunk lies: in which pack, at which bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub pack: PackId,
    pub pack_len: u64,
    pub offset: u32,
    pub stored: u32,
    pub plain: u32,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    pack: u32,
    offset: u32,
    stored: u32,
    plain: u32,
}

/// Every chunk of a repository's packs, by id.
#[derive(Default)]
pub struct ChunkIndex {
    packs: Vec<(PackId, u64)>,
    chunks: HashMap<ChunkId, Slot>,
}

impl ChunkIndex {
    /// Add a pack's chunks; a chunk already known keeps its first place.
    pub fn add(&mut self, pack: &IndexedPack) {
        let n = self.packs.len() as u32;
        self.packs.push((pack.id, pack.len));
        for e in &pack.entries {
            self.chunks.entry(e.id).or_insert(Slot {
                pack: n,
                offset: e.offset,
                stored: e.stored,
                plain: e.plain,
            });
        }
    }

    pub fn contains(&self, id: &ChunkId) -> bool {
        self.chunks.contains_key(id)
    }

    pub fn get(&self, id: &ChunkId) -> Option<Location> {
        let s = self.chunks.get(id)?;
        let (pack, pack_len) = self.packs[s.pack as usize];
        Some(Location {
            pack,
            pack_len,
            offset: s.offset,
            stored: s.stored,
            plain: s.plain,
        })
    }

    /// The packs that index files name.
    pub fn pack_ids(&self) -> impl Iterator<Item = &PackId> {
        self.packs.iter().map(|(id, _)| id)
    }

    pub fn chunk_ids(&self) -> impl Iterator<Item = &ChunkId> {
        self.chunks.keys()
    }

    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::pack::PackBuilder;

    fn packs() -> Vec<IndexedPack> {
        (0..3)
            .map(|i| {
                let mut b = PackBuilder::default();
                for j in 0..4 {
                    let text = format!("chunk {i} {j}");
                    let stored = zstd::bulk::compress(text.as_bytes(), 3).unwrap();
                    b.add(ChunkId::of(text.as_bytes()), &stored, text.len() as u32);
                }
                let p = b.seal(crate::repo::pack::Seal::Plain);
                IndexedPack {
                    id: p.id,
                    len: p.bytes.len() as u64,
                    entries: p.entries,
                }
            })
            .collect()
    }

    #[test]
    fn an_index_reads_back_and_locates_every_chunk() {
        let p = packs();
        let data = encode(&p);
        let back = parse(&data, 1 << 20, 1 << 20, 0).unwrap();
        assert_eq!(back, p);
        let mut idx = ChunkIndex::default();
        back.iter().for_each(|p| idx.add(p));
        assert_eq!(idx.len(), 12);
        let loc = idx.get(&ChunkId::of(b"chunk 1 2")).unwrap();
        assert_eq!((loc.pack, loc.offset), (p[1].id, p[1].entries[2].offset));
        assert!(idx.get(&ChunkId::of(b"no such chunk")).is_none());
    }

    #[test]
    fn lying_or_cut_indexes_are_refused() {
        let data = encode(&packs());
        let parse = |d: &[u8]| parse(d, 1 << 20, 1 << 20, 0);
        for cut in [0, 8, 16, 60, data.len() - 1] {
            assert!(parse(&data[..cut]).is_err(), "cut at {cut}");
        }
        let mut d = data.clone();
        d[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse(&d).is_err(), "a pack count past the file");
        let mut d = data.clone();
        d[16 + 40..16 + 44].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse(&d).is_err(), "an entry count past the file");
        let mut d = data.clone();
        d[16 + 32..16 + 40].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(parse(&d).is_err(), "a pack over the limit");
        let mut d = data;
        d.push(0);
        assert!(parse(&d).is_err(), "trailing bytes");
    }
}
