//! Pack files (repository format 2): stored chunks, each compressed on its own, appended
//! one after another, then a trailer naming each (id, offset, stored and plain length),
//! then a fixed tail (entry count, CRC-32 of the trailer, magic). A pack is named by the
//! BLAKE3 hash of all its bytes. `docs/repository-format.md` specifies it byte by byte.

use std::fmt;

use super::id::ChunkId;
use crate::crypt::Protection;
use crate::hex::encode as hex;

pub const PACK_MAGIC: &[u8; 8] = b"LBPACK02";
/// The magic of a pack whose trailer is sealed (an encrypted repository).
pub const SEALED_PACK_MAGIC: &[u8; 8] = b"LBPACKS2";
/// One trailer entry: id, offset, stored length, plain length.
pub const ENTRY_BYTES: usize = 32 + 4 + 4 + 4;
/// The tail: entry count, CRC-32 of the entries, magic.
pub const TAIL_BYTES: usize = 4 + 4 + 8;
/// No pack is larger than this: offsets and lengths fit 32 bits with room to spare.
pub const MAX_PACK_BYTES: u64 = 1 << 30;
/// A stored chunk is at least this long (a zstd frame's header and one block).
const MIN_STORED: u32 = 4;

/// How a repository's pack trailers are kept, and so what a reader can check.
#[derive(Clone, Copy)]
pub enum Seal<'a> {
    /// In the clear.
    Plain,
    /// Sealed, and the reader has no key (a server): the trailer's length and CRC are
    /// checked, its entries cannot be.
    Keyless,
    /// Sealed under this key.
    Key(&'a crate::crypt::Crypt),
}

impl Seal<'_> {
    /// How a reader with `protection` keeps pack trailers.
    pub fn of(protection: &Protection) -> Seal<'_> {
        match protection {
            Protection::Plain => Seal::Plain,
            Protection::Locked => Seal::Keyless,
            Protection::Unlocked(c) => Seal::Key(c),
        }
    }

    /// Bytes the trailer takes besides its entries.
    pub fn overhead(&self) -> u64 {
        match self {
            Seal::Plain => 0,
            _ => crate::crypt::ENVELOPE_OVERHEAD as u64,
        }
    }

    fn magic(&self) -> &'static [u8; 8] {
        match self {
            Seal::Plain => PACK_MAGIC,
            _ => SEALED_PACK_MAGIC,
        }
    }
}

/// A pack's name: the BLAKE3 hash of its bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackId(pub [u8; 32]);

impl PackId {
    pub fn of(data: &[u8]) -> PackId {
        PackId(*blake3::hash(data).as_bytes())
    }
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl std::str::FromStr for PackId {
    type Err = super::id::BadId;
    fn from_str(s: &str) -> Result<PackId, super::id::BadId> {
        crate::hex::canonical::<32>(s)
            .map(PackId)
            .ok_or_else(|| super::id::BadId(s.to_string()))
    }
}

impl fmt::Display for PackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PackId({})", &self.to_hex()[..16])
    }
}

/// Where one chunk lies in its pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    pub id: ChunkId,
    pub offset: u32,
    pub stored: u32,
    pub plain: u32,
}

impl PackEntry {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.0);
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.stored.to_le_bytes());
        out.extend_from_slice(&self.plain.to_le_bytes());
    }

    /// One entry from exactly `ENTRY_BYTES` bytes.
    pub fn decode(b: &[u8]) -> PackEntry {
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let mut id = [0u8; 32];
        id.copy_from_slice(&b[..32]);
        PackEntry {
            id: ChunkId(id),
            offset: u32_at(32),
            stored: u32_at(36),
            plain: u32_at(40),
        }
    }

    pub fn end(&self) -> u64 {
        self.offset as u64 + self.stored as u64
    }
}

/// Why a pack (or an index's account of one) is not what it must be.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("{0}")]
    Malformed(String),
}

fn bad(why: impl Into<String>) -> PackError {
    PackError::Malformed(why.into())
}

/// Check a pack's entries against its length and the repository's limits: they tile the
/// data part from offset 0 without gaps or overlaps, each within `max_plain` and
/// `max_stored`.
pub fn check_entries(
    entries: &[PackEntry],
    pack_len: u64,
    max_plain: u32,
    max_stored: u64,
    overhead: u64,
) -> Result<(), PackError> {
    if entries.is_empty() {
        return Err(bad("a pack holds no chunk"));
    }
    let data_len = (entries.len() as u64)
        .checked_mul(ENTRY_BYTES as u64)
        .and_then(|t| t.checked_add(TAIL_BYTES as u64 + overhead))
        .and_then(|t| pack_len.checked_sub(t))
        .ok_or_else(|| {
            bad(format!(
                "{} entries do not fit a pack of {pack_len} bytes",
                entries.len()
            ))
        })?;
    let mut pos = 0u64;
    for e in entries {
        if e.offset as u64 != pos {
            return Err(bad(format!(
                "chunk {} starts at {} where the previous one ends at {pos}",
                e.id.short(),
                e.offset
            )));
        }
        if e.stored < MIN_STORED
            || e.stored as u64 > max_stored
            || e.plain == 0
            || e.plain > max_plain
        {
            return Err(bad(format!(
                "chunk {} claims {} stored and {} plain bytes, outside the limits ({max_stored}, {max_plain})",
                e.id.short(),
                e.stored,
                e.plain
            )));
        }
        pos = e.end();
    }
    if pos != data_len {
        return Err(bad(format!(
            "the chunks end at {pos} but the pack's data part is {data_len} bytes"
        )));
    }
    Ok(())
}

/// Parse a pack's trailer from its last bytes (`tail_bytes`: at least `TAIL_BYTES`, and
/// ideally the whole trailer) knowing the pack's length. Returns the entries, or how many
/// bytes from the end the whole trailer takes when `tail_bytes` is too short for it.
pub fn parse_trailer(
    tail_bytes: &[u8],
    pack_len: u64,
    max_plain: u32,
    max_stored: u64,
    seal: Seal<'_>,
) -> Result<Result<Vec<PackEntry>, usize>, PackError> {
    if pack_len > MAX_PACK_BYTES || (tail_bytes.len() as u64) > pack_len {
        return Err(bad(format!(
            "a pack of {pack_len} bytes is over the limit of {MAX_PACK_BYTES}"
        )));
    }
    let n = tail_bytes.len();
    if n < TAIL_BYTES {
        return Err(bad("shorter than a pack's tail"));
    }
    let tail = &tail_bytes[n - TAIL_BYTES..];
    if &tail[8..16] != seal.magic() {
        return Err(bad(
            if &tail[8..16] == PACK_MAGIC || &tail[8..16] == SEALED_PACK_MAGIC {
                "its trailer is sealed where the repository's are not, or the other way round"
            } else {
                "no pack magic at its end"
            },
        ));
    }
    let count = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) as u64;
    let crc = u32::from_le_bytes([tail[4], tail[5], tail[6], tail[7]]);
    // At least one stored byte per entry, or the count is a lie: checked before any
    // allocation it drives.
    let trailer = count * ENTRY_BYTES as u64 + TAIL_BYTES as u64 + seal.overhead();
    if count == 0 || trailer + count * MIN_STORED as u64 > pack_len {
        return Err(bad(format!(
            "a pack of {pack_len} bytes cannot hold the {count} chunks its tail claims"
        )));
    }
    if (n as u64) < trailer {
        return Ok(Err(trailer as usize));
    }
    let raw = &tail_bytes[n - trailer as usize..n - TAIL_BYTES];
    if crc32fast::hash(raw) != crc {
        return Err(bad("the pack's trailer fails its CRC"));
    }
    let opened;
    let raw = match seal {
        Seal::Plain => raw,
        Seal::Keyless => {
            crate::crypt::check_envelope(crate::crypt::Kind::PackTrailer, raw)
                .map_err(|e| bad(format!("its trailer: {e}")))?;
            return Ok(Ok(Vec::new()));
        }
        Seal::Key(c) => {
            opened = c
                .open(crate::crypt::Kind::PackTrailer, raw)
                .map_err(|e| bad(format!("its trailer: {e}")))?;
            &opened[..]
        }
    };
    if raw.len() as u64 != count * ENTRY_BYTES as u64 {
        return Err(bad(
            "its trailer holds another number of entries than its tail says",
        ));
    }
    let entries: Vec<PackEntry> = raw
        .chunks_exact(ENTRY_BYTES)
        .map(PackEntry::decode)
        .collect();
    check_entries(&entries, pack_len, max_plain, max_stored, seal.overhead())?;
    Ok(Ok(entries))
}

/// A pack being filled: stored chunks appended in the order given.
#[derive(Default)]
pub struct PackBuilder {
    data: Vec<u8>,
    entries: Vec<PackEntry>,
}

/// A finished pack: its bytes, name and entries.
pub struct SealedPack {
    pub id: PackId,
    pub bytes: Vec<u8>,
    pub entries: Vec<PackEntry>,
}

impl PackBuilder {
    pub fn with_capacity(bytes: usize) -> PackBuilder {
        PackBuilder {
            data: Vec::with_capacity(bytes),
            entries: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of stored chunks so far.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn add(&mut self, id: ChunkId, stored: &[u8], plain_len: u32) {
        self.entries.push(PackEntry {
            id,
            offset: self.data.len() as u32,
            stored: stored.len() as u32,
            plain: plain_len,
        });
        self.data.extend_from_slice(stored);
    }

    /// Append the trailer (sealed, in an encrypted repository) and tail, and name the pack.
    pub fn seal(self, seal: Seal<'_>) -> SealedPack {
        let PackBuilder { mut data, entries } = self;
        let start = data.len();
        for e in &entries {
            e.encode(&mut data);
        }
        if let Seal::Key(c) = seal {
            let sealed = c.seal(crate::crypt::Kind::PackTrailer, &data[start..]);
            data.truncate(start);
            data.extend_from_slice(&sealed);
        }
        let crc = crc32fast::hash(&data[start..]);
        data.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        data.extend_from_slice(&crc.to_le_bytes());
        data.extend_from_slice(seal.magic());
        SealedPack {
            id: PackId::of(&data),
            bytes: data,
            entries,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SealedPack {
        let mut b = PackBuilder::default();
        for (i, text) in [&b"first chunk"[..], b"second", b"third and last"]
            .iter()
            .enumerate()
        {
            let stored = zstd::bulk::compress(text, 3).unwrap();
            b.add(ChunkId::of(text), &stored, text.len() as u32);
            assert_eq!(b.entries.len(), i + 1);
        }
        b.seal(Seal::Plain)
    }

    #[test]
    fn a_sealed_pack_reads_back_from_its_trailer() {
        let p = sample();
        let len = p.bytes.len() as u64;
        let entries = parse_trailer(&p.bytes, len, 1 << 20, 1 << 20, Seal::Plain)
            .unwrap()
            .unwrap();
        assert_eq!(entries, p.entries);
        for e in &entries {
            let stored = &p.bytes[e.offset as usize..e.end() as usize];
            let plain = zstd::bulk::decompress(stored, e.plain as usize).unwrap();
            assert_eq!(ChunkId::of(&plain), e.id);
        }
        // From the tail alone: how much more to read.
        let want = parse_trailer(
            &p.bytes[p.bytes.len() - TAIL_BYTES..],
            len,
            1 << 20,
            1 << 20,
            Seal::Plain,
        )
        .unwrap()
        .unwrap_err();
        assert_eq!(want, 3 * ENTRY_BYTES + TAIL_BYTES);
        assert_eq!(PackId::of(&p.bytes), p.id);
    }

    #[test]
    fn damaged_or_lying_trailers_are_refused() {
        let p = sample();
        let len = p.bytes.len() as u64;
        let parse = |b: &[u8], len: u64| parse_trailer(b, len, 1 << 20, 1 << 20, Seal::Plain);
        // A flipped entry byte: the CRC.
        let mut b = p.bytes.clone();
        let at = b.len() - TAIL_BYTES - 5;
        b[at] ^= 1;
        assert!(parse(&b, len).is_err());
        // A count of 2^32-1 in a small pack: refused before anything is allocated.
        let mut b = p.bytes.clone();
        let at = b.len() - TAIL_BYTES;
        b[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse(&b, len).is_err());
        // No magic, too short, over the limit.
        let mut b = p.bytes.clone();
        let n = b.len();
        b[n - 1] = b'x';
        assert!(parse(&b, len).is_err());
        assert!(parse(&p.bytes[..8], len).is_err());
        assert!(parse(&p.bytes, MAX_PACK_BYTES + 1).is_err());
        // Entries that overlap, leave a gap or claim too much.
        let max = |e: &[PackEntry]| check_entries(e, len, 1 << 20, 1 << 20, 0);
        let mut e = p.entries.clone();
        e[1].offset += 1;
        assert!(max(&e).is_err());
        let mut e = p.entries.clone();
        e[2].plain = 2 << 20;
        assert!(max(&e).is_err());
        assert!(max(&[]).is_err());
    }

    #[test]
    fn sealed_trailers_open_with_the_key_and_are_only_shaped_for_a_server() {
        use crate::crypt::{Crypt, MasterKey};
        let c = Crypt::new(&MasterKey::from_bytes([3; 32]));
        let mut b = PackBuilder::default();
        for text in [&b"first chunk"[..], b"second"] {
            b.add(
                ChunkId(c.chunk_id(text)),
                &zstd::bulk::compress(text, 3).unwrap(),
                text.len() as u32,
            );
        }
        let entries = b.entries.clone();
        let p = b.seal(Seal::Key(&c));
        let len = p.bytes.len() as u64;
        assert!(
            !p.bytes.windows(32).any(|w| w == entries[0].id.0),
            "ids are sealed"
        );
        let parse = |b: &[u8], seal| parse_trailer(b, len, 1 << 20, 1 << 20, seal);
        assert_eq!(parse(&p.bytes, Seal::Key(&c)).unwrap().unwrap(), entries);
        assert!(parse(&p.bytes, Seal::Keyless).unwrap().unwrap().is_empty());
        assert!(parse(&p.bytes, Seal::Plain).is_err());
        let other = Crypt::new(&MasterKey::from_bytes([4; 32]));
        assert!(parse(&p.bytes, Seal::Key(&other)).is_err());
        assert!(parse(&sample().bytes, Seal::Key(&c)).is_err());
    }
}
