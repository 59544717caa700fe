//! Where a repository keeps its chunks: one file each (format 1, `chunks/`), or appended
//! into pack files named by index files (format 2, `packs/` and `index/`). Everything above
//! (capture, restore, check, serve) sees stored chunks by id only.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use anyhow::{Context, Result};

use super::index::{self, ChunkIndex, IndexedPack};
use super::object::{Dir, Object};
use super::pack::{PackBuilder, PackId, Seal, SealedPack};
use super::store::{Store, StoreError};
use super::{ChunkId, IndexId};
use crate::crypt::{Kind, Protection};

/// How chunks are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Format 1: `chunks/<2 hex>/<id>`, one file per chunk.
    Files,
    /// Format 2: packs and index files.
    Packs,
}

/// A pack is sealed and written once its chunks reach this many bytes.
pub const PACK_TARGET: usize = 16 << 20;

/// How many times the index files are listed anew when one vanishes while they are read
/// (a prune replaced it).
const INDEX_LISTINGS: usize = 5;

/// An index file's id and the packs it names.
pub type IndexFile = (IndexId, Vec<IndexedPack>);

/// Why stored bytes could not be had.
#[derive(Debug)]
pub enum ReadError {
    Missing(String),
    Other(String, anyhow::Error),
}

#[derive(Default)]
struct Packer {
    /// Part-filled packs that no writer holds now.
    idle: Vec<PackBuilder>,
    /// Packs written since the last index file.
    written: Vec<IndexedPack>,
}

pub struct Chunks {
    pub layout: Layout,
    store: Arc<dyn Store>,
    max_plain: u32,
    max_stored: u64,
    /// Whether pack trailers and index files are sealed, and the key.
    protection: Protection,
    /// Format 2: every index file's entries, loaded on first use, and the packs written
    /// since.
    index: RwLock<Option<ChunkIndex>>,
    /// The index files `index` was loaded from.
    loaded_from: Mutex<Vec<IndexId>>,
    packer: Mutex<Packer>,
    /// Format 2: whether each pack asked about is in the store at the length its index
    /// gives (asked once per pack: a stat, or a HEAD).
    present: Mutex<HashMap<PackId, bool>>,
    /// Whole packs, for stores that ignore ranges.
    whole_packs: WholePacks,
    /// Chunks a prune has said it will drop: `has` calls them absent, so that a capture
    /// stores them again.
    excluded: RwLock<std::collections::HashSet<ChunkId>>,
    /// Chunks this process stored.
    stored: Mutex<std::collections::HashSet<ChunkId>>,
}

/// The last few whole packs read from a store that ignores ranges, so that a restore,
/// which reads a pack's chunks in order, reads each pack once. Each pack is read by one
/// thread while the others that want it wait; at most `MAX_BYTES` are kept.
#[derive(Default)]
struct WholePacks {
    packs: Mutex<VecDeque<(PackId, Arc<WholePack>)>>,
}

/// A pack read whole, once; None when it could not be (too large, or unreadable: the
/// ranged read that follows says why).
type WholePack = OnceLock<Option<Arc<Vec<u8>>>>;

impl WholePacks {
    /// Memory for whole packs, and the most one may take (a full pack is a little over
    /// `PACK_TARGET`).
    const MAX_BYTES: u64 = 60 << 20;
    const MAX_PACK: u64 = 20 << 20;

    fn get(
        &self,
        pack: &PackId,
        read: impl FnOnce(u64) -> Option<Vec<u8>>,
    ) -> Option<Arc<Vec<u8>>> {
        let cell = {
            let mut packs = self.packs.lock().unwrap_or_else(|p| p.into_inner());
            match packs.iter().find(|(id, _)| id == pack) {
                Some((_, cell)) => cell.clone(),
                None => {
                    let cell = Arc::new(WholePack::new());
                    packs.push_back((*pack, cell.clone()));
                    // Keep the newest within the budget; one being read counts in full.
                    let size = |c: &WholePack| match c.get() {
                        Some(Some(v)) => v.len() as u64,
                        Some(None) => 0,
                        None => Self::MAX_PACK,
                    };
                    while packs.iter().map(|(_, c)| size(c)).sum::<u64>() > Self::MAX_BYTES {
                        packs.pop_front();
                    }
                    cell
                }
            }
        };
        cell.get_or_init(|| read(Self::MAX_PACK).map(Arc::new))
            .clone()
    }
}

impl Chunks {
    pub fn new(
        layout: Layout,
        store: Arc<dyn Store>,
        max_plain: u32,
        max_stored: u64,
        protection: Protection,
    ) -> Chunks {
        Chunks {
            protection,
            layout,
            store,
            max_plain,
            max_stored,
            index: RwLock::new(None),
            loaded_from: Mutex::new(Vec::new()),
            packer: Mutex::new(Packer::default()),
            present: Mutex::new(HashMap::new()),
            whole_packs: WholePacks::default(),
            excluded: RwLock::new(Default::default()),
            stored: Mutex::new(Default::default()),
        }
    }

    /// Run `f` on the chunk index, loading it first if need be.
    fn with_index<R>(&self, f: impl FnOnce(&ChunkIndex) -> R) -> Result<R> {
        {
            let guard = self.index.read().unwrap_or_else(|p| p.into_inner());
            if let Some(idx) = guard.as_ref() {
                return Ok(f(idx));
            }
        }
        let mut guard = self.index.write().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(self.load_index()?);
        }
        Ok(f(guard.as_ref().expect("just loaded")))
    }

    /// Read every index file, each checked against its name and its own limits; with the
    /// packs this process wrote that no index file names yet.
    fn load_index(&self) -> Result<ChunkIndex> {
        let mut idx = ChunkIndex::default();
        let files = self.index_files()?;
        for (_, packs) in &files {
            packs.iter().for_each(|p| idx.add(p));
        }
        let packer = self.packer.lock().unwrap_or_else(|p| p.into_inner());
        packer.written.iter().for_each(|p| idx.add(p));
        *self.loaded_from.lock().unwrap_or_else(|p| p.into_inner()) =
            files.into_iter().map(|(key, _)| key).collect();
        Ok(idx)
    }

    /// After a chunk was not where the index puts it: a prune may have moved it (into a
    /// new pack, its index files replaced). Load the index again if its files are not
    /// those it was loaded from.
    fn reload_if_replaced(&self) -> Result<()> {
        let mut now: Vec<IndexId> = self
            .store
            .objects(&Dir::Index)
            .context("list the index files")?
            .into_iter()
            .filter_map(|o| match o {
                Object::Index(id) => Some(id),
                _ => None,
            })
            .collect();
        now.sort();
        let mut was = self
            .loaded_from
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        was.sort();
        if now != was {
            log::info!("the index files changed (a prune ran?): loading them again");
            let fresh = self.load_index()?;
            *self.index.write().unwrap_or_else(|p| p.into_inner()) = Some(fresh);
        }
        Ok(())
    }

    /// Where a chunk is, for messages.
    pub fn location(&self, id: &ChunkId) -> String {
        match self.layout {
            Layout::Files => self.store.location(&Object::Chunk(*id)),
            Layout::Packs => match self.with_index(|i| i.get(id)) {
                Ok(Some(l)) => format!(
                    "{} at byte {}",
                    self.store.location(&Object::Pack(l.pack)),
                    l.offset
                ),
                _ => format!(
                    "chunk {id} (named by no index file in {})",
                    self.store.dir_location(&Dir::Index)
                ),
            },
        }
    }

    /// Whether a chunk is stored: its file exists (format 1); an index names it and its
    /// pack is in the store at the length the index gives (format 2).
    pub fn has(&self, id: &ChunkId) -> Result<bool> {
        if self
            .excluded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(id)
        {
            return Ok(false);
        }
        match self.layout {
            Layout::Files => self.store.has(&Object::Chunk(*id)),
            Layout::Packs => match self.with_index(|i| i.get(id))? {
                Some(loc) => self.pack_present(&loc.pack, loc.pack_len),
                None => Ok(false),
            },
        }
    }

    /// Whether a pack is in the store at `len` bytes (asked once, then remembered).
    pub fn pack_present(&self, pack: &PackId, len: u64) -> Result<bool> {
        if let Some(&p) = self
            .present
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(pack)
        {
            return Ok(p);
        }
        let size = self.store.size(&Object::Pack(*pack))?;
        if size.is_some_and(|s| s != len) {
            log::warn!(
                "pack {} is {} bytes, not the {len} its index gives",
                self.store.location(&Object::Pack(*pack)),
                size.unwrap_or(0)
            );
        }
        let p = size == Some(len);
        self.present
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(*pack, p);
        Ok(p)
    }

    /// A chunk's stored (compressed) bytes, and its plain length where the layout
    /// records it.
    pub fn read(&self, id: &ChunkId) -> Result<(Vec<u8>, Option<u32>), ReadError> {
        let store_error = |e: StoreError| match e {
            StoreError::NotFound { location } => ReadError::Missing(location),
            StoreError::Other { location, cause } => {
                ReadError::Other(location.clone(), anyhow::anyhow!("{location}: {cause:#}"))
            }
        };
        match self.layout {
            Layout::Files => self
                .store
                .get_at_most(&Object::Chunk(*id), self.max_stored)
                .map(|raw| (raw, None))
                .map_err(store_error),
            Layout::Packs => {
                let locate = || {
                    self.with_index(|i| i.get(id))
                        .map_err(|e| ReadError::Other(self.store.dir_location(&Dir::Index), e))?
                        .ok_or_else(|| ReadError::Missing(self.location(id)))
                };
                let read = |loc: &index::Location| {
                    self.read_pack_range(&loc.pack, loc.offset as u64, loc.stored as u64)
                        .map(|raw| (raw, Some(loc.plain)))
                        .map_err(store_error)
                };
                let loc = locate()?;
                match read(&loc) {
                    // Its pack is gone: if a prune moved the chunk, the index files say
                    // where now (another thread may have loaded them again already).
                    Err(ReadError::Missing(at)) => {
                        self.reload_if_replaced().map_err(|e| {
                            ReadError::Other(self.store.dir_location(&Dir::Index), e)
                        })?;
                        match locate()? {
                            moved if moved.pack != loc.pack => read(&moved),
                            _ => Err(ReadError::Missing(at)),
                        }
                    }
                    other => other,
                }
            }
        }
    }

    /// Where each chunk lies (format 2; None for a chunk no index names, and for all in
    /// format 1).
    pub fn locate(&self, ids: &[ChunkId]) -> Result<Vec<Option<index::Location>>> {
        match self.layout {
            Layout::Files => Ok(vec![None; ids.len()]),
            Layout::Packs => self.with_index(|i| ids.iter().map(|id| i.get(id)).collect()),
        }
    }

    /// Read `len` bytes at `offset` of a pack: a ranged read, or, from a server that
    /// ignores ranges, a slice of the whole pack read once and kept while it is in use.
    pub fn read_pack_range(
        &self,
        pack: &PackId,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, StoreError> {
        if self.store.ignores_ranges() {
            if let Some(whole) = self.whole_packs.get(pack, |limit| {
                self.store.get_at_most(&Object::Pack(*pack), limit).ok()
            }) {
                let end = offset.checked_add(len).filter(|&e| e <= whole.len() as u64);
                if let Some(end) = end {
                    return Ok(whole[offset as usize..end as usize].to_vec());
                }
            }
        }
        self.store.get_range(&Object::Pack(*pack), offset, len)
    }

    /// Every stored chunk's id.
    pub fn list(&self) -> Result<Vec<ChunkId>> {
        match self.layout {
            Layout::Files => {
                let mut ids = Vec::new();
                for fan in self.fans(Dir::Chunks)? {
                    for o in self.store.objects(&fan)? {
                        if let Object::Chunk(id) = o {
                            ids.push(id);
                        }
                    }
                }
                Ok(ids)
            }
            Layout::Packs => {
                let all: Vec<(ChunkId, PackId, u64)> = self.with_index(|i| {
                    i.chunk_ids()
                        .filter_map(|id| i.get(id).map(|l| (*id, l.pack, l.pack_len)))
                        .collect()
                })?;
                let mut ids = Vec::with_capacity(all.len());
                for (id, pack, len) in all {
                    if self.pack_present(&pack, len)? {
                        ids.push(id);
                    }
                }
                Ok(ids)
            }
        }
    }

    /// Format 2: the pack files in the store that no index file names (left by a
    /// capture that stopped before its index was written: unused, for prune to delete).
    pub fn unindexed_packs(&self) -> Result<Vec<PackId>> {
        if self.layout != Layout::Packs {
            return Ok(Vec::new());
        }
        let named: std::collections::HashSet<PackId> =
            self.with_index(|i| i.pack_ids().copied().collect())?;
        let mut found = Vec::new();
        for fan in self.fans(Dir::Packs)? {
            for o in self.store.objects(&fan)? {
                match o {
                    Object::Pack(id) if !named.contains(&id) => found.push(id),
                    _ => {}
                }
            }
        }
        Ok(found)
    }

    /// The fans of `Dir::Chunks` or `Dir::Packs` that the store holds.
    fn fans(&self, dir: Dir) -> Result<Vec<Dir>> {
        Ok(self
            .store
            .list(&dir)?
            .iter()
            .filter_map(|n| dir.fan(n))
            .collect())
    }

    /// Make the chunks of packs named by a new index file known (a server that was sent
    /// one), if the index is loaded already (otherwise it will be read with the rest).
    pub fn learn(&self, packs: &[IndexedPack]) {
        if let Some(idx) = self
            .index
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            packs.iter().for_each(|p| idx.add(p));
        }
    }

    /// A pack known to be stored now (a server that was just sent it).
    pub fn mark_present(&self, pack: &PackId) {
        self.present
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(*pack, true);
    }

    /// Treat these chunks as absent (a prune will drop them).
    pub fn exclude(&self, ids: impl IntoIterator<Item = ChunkId>) {
        self.excluded
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .extend(ids);
    }

    /// The chunks this process stored.
    pub fn stored_here(&self) -> std::collections::HashSet<ChunkId> {
        self.stored
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Every index file, each checked and opened, with its packs.
    pub fn index_files(&self) -> Result<Vec<IndexFile>> {
        // A prune replaces an index file by writing its successor first and then deleting
        // it: a file listed and gone when read means the listing is out of date, and a
        // new one names the successor.
        for _ in 1..INDEX_LISTINGS {
            if let Some(files) = self.read_index_listing()? {
                return Ok(files);
            }
            log::info!("an index file was replaced while being read; listing them again");
        }
        self.read_index_listing()?.ok_or_else(|| {
            anyhow::anyhow!(
                "index files in {} were replaced while being read, {INDEX_LISTINGS} times over: is a prune running in a loop?",
                self.store.dir_location(&Dir::Index)
            )
        })
    }

    /// Every index file of one listing, or None if one of them was gone when read.
    fn read_index_listing(&self) -> Result<Option<Vec<IndexFile>>> {
        let mut out = Vec::new();
        for object in self
            .store
            .objects(&Dir::Index)
            .context("list the index files")?
        {
            let Object::Index(id) = object else {
                continue;
            };
            let data = match self.store.get_at_most(&object, index::MAX_INDEX_BYTES) {
                Ok(d) => d,
                Err(StoreError::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(anyhow::Error::new(e).context("read an index file")),
            };
            if IndexId::of(&data) != id {
                anyhow::bail!(
                    "index file {} is damaged: its content does not hash to its name",
                    self.store.location(&object)
                );
            }
            out.push((id, self.parse_index_file(&object, data)?));
        }
        Ok(Some(out))
    }

    fn parse_index_file(&self, object: &Object, data: Vec<u8>) -> Result<Vec<IndexedPack>> {
        let location = self.store.location(object);
        let data = match &self.protection {
            Protection::Plain => data,
            Protection::Unlocked(c) => c
                .open(Kind::Index, &data)
                .map_err(|e| anyhow::anyhow!("index file {location}: {e}"))?,
            Protection::Locked => {
                anyhow::bail!("the index files are encrypted, and this reader has no key")
            }
        };
        let overhead = Seal::of(&self.protection).overhead();
        index::parse(&data, self.max_plain, self.max_stored, overhead)
            .map_err(|e| anyhow::anyhow!("index file {location} is damaged: {e}"))
    }

    /// Write an index file naming `packs` (sealed when encrypted), durably; its id.
    pub fn write_index(&self, packs: &[IndexedPack]) -> Result<IndexId> {
        let mut data = index::encode(packs);
        if let Some(c) = self.protection.key() {
            data = c.seal(Kind::Index, &data);
        }
        let id = IndexId::of(&data);
        let object = Object::Index(id);
        self.store
            .put(&object, &data)
            .with_context(|| format!("write index file {}", self.store.location(&object)))?;
        self.store.flush()?;
        Ok(id)
    }

    pub fn limits(&self) -> (u32, u64) {
        (self.max_plain, self.max_stored)
    }

    /// A writer of new chunks (one per thread: each fills a pack of its own).
    pub fn writer(&self) -> ChunkWriter<'_> {
        ChunkWriter {
            chunks: self,
            pack: None,
        }
    }

    /// Write a sealed pack, and make its chunks known (to `has` and `read`) at once.
    fn write_pack(&self, builder: PackBuilder) -> Result<()> {
        let SealedPack { id, bytes, entries } = builder.seal(Seal::of(&self.protection));
        self.store
            .put(&Object::Pack(id), &bytes)
            .with_context(|| format!("write pack {}", self.store.location(&Object::Pack(id))))?;
        let pack = IndexedPack {
            id,
            len: bytes.len() as u64,
            entries,
        };
        self.present
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, true);
        self.with_index(|_| ())?;
        if let Some(idx) = self
            .index
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            idx.add(&pack);
        }
        self.packer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .written
            .push(pack);
        Ok(())
    }

    /// Make every chunk written so far durable: part-filled packs are sealed and written,
    /// the store flushed, then one index file names the new packs, and is flushed too.
    pub fn flush(&self) -> Result<()> {
        let idle = std::mem::take(&mut self.packer.lock().unwrap_or_else(|p| p.into_inner()).idle);
        for b in idle.into_iter().filter(|b| !b.is_empty()) {
            self.write_pack(b)?;
        }
        self.store.flush()?;
        let written = std::mem::take(
            &mut self
                .packer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .written,
        );
        if !written.is_empty() {
            self.write_index(&written)?;
        }
        Ok(())
    }
}

/// Stores new chunks: format 1 writes each as a file; format 2 appends them to a pack
/// of this writer's own (so a pack holds runs of chunks in the order they were given),
/// written once full, or given back for the next writer (or `flush`) when dropped.
pub struct ChunkWriter<'a> {
    chunks: &'a Chunks,
    pack: Option<PackBuilder>,
}

impl ChunkWriter<'_> {
    pub fn put(&mut self, id: &ChunkId, stored: &[u8], plain_len: u32) -> Result<()> {
        let c = self.chunks;
        match c.layout {
            Layout::Files => c.store.put(&Object::Chunk(*id), stored),
            Layout::Packs => {
                let pack = self.pack.get_or_insert_with(|| {
                    c.packer
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .idle
                        .pop()
                        .unwrap_or_else(|| {
                            // Room for the last chunk and the trailer: sealing never
                            // moves the pack to a larger buffer.
                            PackBuilder::with_capacity(
                                PACK_TARGET + c.max_stored as usize + (1 << 20),
                            )
                        })
                });
                pack.add(*id, stored, plain_len);
                c.stored
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(*id);
                if pack.len() >= PACK_TARGET {
                    let full = self.pack.take().expect("just filled");
                    c.write_pack(full)?;
                }
                Ok(())
            }
        }
    }
}

impl Drop for ChunkWriter<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.pack.take() {
            if !p.is_empty() {
                self.chunks
                    .packer
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .idle
                    .push(p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::dir::DirStore;

    /// A store in which a prune replaces the first index file read just before it is
    /// read: the successor (naming the packs of every index file, as a prune joining
    /// them would) is written, the file deleted.
    struct ReplacedWhileRead {
        inner: Arc<DirStore>,
        successor: Mutex<Option<Vec<IndexedPack>>>,
        chunks: OnceLock<Arc<Chunks>>,
    }

    impl Store for ReplacedWhileRead {
        fn get(&self, object: &Object) -> Result<Vec<u8>, StoreError> {
            if let Object::Index(_) = object {
                if let Some(packs) = self.successor.lock().unwrap().take() {
                    let writer = self.chunks.get().expect("set");
                    writer.write_index(&packs).unwrap();
                    self.inner.delete(object).unwrap();
                }
            }
            self.inner.get(object)
        }
        fn size(&self, object: &Object) -> Result<Option<u64>> {
            self.inner.size(object)
        }
        fn put(&self, object: &Object, data: &[u8]) -> Result<()> {
            self.inner.put(object, data)
        }
        fn delete(&self, object: &Object) -> Result<()> {
            self.inner.delete(object)
        }
        fn list(&self, dir: &Dir) -> Result<Vec<String>> {
            self.inner.list(dir)
        }
        fn flush(&self) -> Result<()> {
            self.inner.flush()
        }
        fn location(&self, object: &Object) -> String {
            self.inner.location(object)
        }
        fn dir_location(&self, dir: &Dir) -> String {
            self.inner.dir_location(dir)
        }
    }

    #[test]
    fn a_chunk_moved_by_a_prune_after_the_index_was_read_is_found_in_its_new_pack() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(DirStore::new(dir.path()));
        let (a, b) = (ChunkId::of(b"first"), ChunkId::of(b"second"));
        let before = chunks(store.clone());
        before.writer().put(&a, b"first", 5).unwrap();
        before.flush().unwrap();
        let reader = chunks(store.clone());
        assert!(reader.has(&a).unwrap(), "the index is loaded");
        let old: Vec<Object> = store.objects(&Dir::Index).unwrap();
        let old_pack = reader.with_index(|i| i.get(&a)).unwrap().unwrap().pack;

        // A prune rewrites the pack: the chunk into a new one (with another), a new index
        // file, then the old index file and pack deleted.
        let prune = chunks(store.clone());
        let mut w = prune.writer();
        w.put(&b, b"second", 6).unwrap();
        w.put(&a, b"first", 5).unwrap();
        drop(w);
        prune.flush().unwrap();
        for object in old {
            store.delete(&object).unwrap();
        }
        store.delete(&Object::Pack(old_pack)).unwrap();

        let (raw, plain) = reader.read(&a).unwrap();
        assert_eq!((raw.as_slice(), plain), (&b"first"[..], Some(5)));
        assert!(matches!(
            reader.read(&ChunkId::of(b"never stored")),
            Err(ReadError::Missing(_))
        ));
    }

    fn chunks(store: Arc<dyn Store>) -> Chunks {
        Chunks::new(Layout::Packs, store, 1 << 20, 2 << 20, Protection::Plain)
    }

    #[test]
    fn an_index_file_replaced_while_the_index_is_read_is_read_in_its_successor() {
        let dir = tempfile::tempdir().unwrap();
        let inner = Arc::new(DirStore::new(dir.path()));
        let (a, b) = (ChunkId::of(b"first"), ChunkId::of(b"second"));
        let first = chunks(inner.clone());
        for (id, data) in [(&a, &b"first"[..]), (&b, &b"second"[..])] {
            first.writer().put(id, data, data.len() as u32).unwrap();
            first.flush().unwrap();
        }
        let files = first.index_files().unwrap();
        assert_eq!(files.len(), 2);
        let joined: Vec<IndexedPack> = files.into_iter().flat_map(|(_, p)| p).collect();

        let store = Arc::new(ReplacedWhileRead {
            inner: inner.clone(),
            successor: Mutex::new(Some(joined)),
            chunks: OnceLock::new(),
        });
        let _ = store.chunks.set(Arc::new(chunks(inner.clone())));
        let reader = chunks(store.clone());
        assert!(reader.has(&a).unwrap() && reader.has(&b).unwrap());
        assert!(store.successor.lock().unwrap().is_none(), "it was replaced");
        assert_eq!(
            inner.objects(&Dir::Index).unwrap().len(),
            2,
            "successor and the other"
        );
    }
}
