//! The repository: a versioned config (`config`), zstd-compressed chunks named by BLAKE3
//! (`codec`, kept in packs by `chunks`), and the snapshot catalogue (`catalogue`), laid
//! out as `docs/repository-format.md` describes, on top of a [`Store`] whose objects
//! `object` names. `Repository` opens one (`spec` says how to reach it) and hands out
//! its chunks.

pub mod admit;
pub mod atomic;
mod catalogue;
pub mod chunker;
pub mod chunks;
pub mod codec;
pub mod config;
pub mod dir;
pub mod http;
pub mod id;
pub mod index;
pub mod keyfile;
pub mod keyring;
pub mod manifest;
pub mod migrate;
pub mod object;
pub mod pack;
pub mod protect;
pub mod runs;
pub mod spec;
pub mod store;
pub mod treehash;

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::crypt::{Kind, Protection};
use crate::location::RepoLocation;
use codec::Codec;
use pack::Seal;

pub use catalogue::{resolve_id, Snapshot};
pub use chunks::{ChunkWriter, Layout};
pub use config::{
    ChunkerAlgorithm, ChunkerParams, Compression, Config, EncryptionConfig, SigningConfig,
    MAX_CHUNK, MIN_CHUNK, REPO_FORMAT, REPO_VERSION, REPO_VERSIONS,
};
pub use id::{ChunkId, IndexId, SnapshotId};
pub use manifest::Manifest;
pub use object::{Dir, Object};
pub use spec::{RepoSpec, S3Keys};
pub use store::{Store, StoreError};

use dir::DirStore;

/// Why a chunk could not be had. Restore and check tell these apart.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("chunk {id} is missing ({location})")]
    Missing { id: ChunkId, location: String },
    #[error("chunk {id} is corrupt ({location}): {reason}")]
    Corrupt {
        id: ChunkId,
        location: String,
        reason: String,
    },
    #[error("chunk {id} could not be read: {cause:#}")]
    Unreadable {
        id: ChunkId,
        location: String,
        cause: anyhow::Error,
    },
}

impl ChunkError {
    pub fn id(&self) -> ChunkId {
        match self {
            ChunkError::Missing { id, .. }
            | ChunkError::Corrupt { id, .. }
            | ChunkError::Unreadable { id, .. } => *id,
        }
    }
}

pub struct Repository {
    store: Arc<dyn Store>,
    /// What the user named, for messages.
    pub display: String,
    pub config: Config,
    chunks: chunks::Chunks,
    codec: Codec,
    /// Whether the repository is encrypted, and its keys when this reader has them.
    protection: Protection,
}

/// What to do about a repository that is not there: first, that the name may be wrong.
fn hint(dir: &str) -> String {
    format!("check --repo (or LIFEBOAT_REPO) for a typo; to make a new one there: `lifeboat init --repo {dir}`")
}

impl Repository {
    /// Create a new repository in `dir` (absent or empty).
    pub fn init(dir: &Path, chunker: ChunkerParams, level: i32) -> Result<Repository> {
        Self::init_version(dir, chunker, level, REPO_VERSION)
    }

    /// Create a new repository of format `version` (see `REPO_VERSIONS`).
    pub fn init_version(
        dir: &Path,
        chunker: ChunkerParams,
        level: i32,
        version: u32,
    ) -> Result<Repository> {
        Self::create_dir(dir, Config::new(chunker, level, version)?, None)
    }

    /// Create a new repository with `config` in `dir` (absent or empty).
    /// With `master`, the repository is encrypted: its first key file is written (under
    /// `pass`) before the config that makes the directory a repository.
    pub fn create_dir(
        dir: &Path,
        config: Config,
        encrypt: Option<(&crate::crypt::MasterKey, &crate::crypt::Passphrase)>,
    ) -> Result<Repository> {
        let version = config.version;
        if dir.exists() {
            let mut entries = std::fs::read_dir(dir)
                .with_context(|| format!("read directory {}", dir.display()))?;
            if entries.next().is_some() {
                if dir.join(Object::Config.key()).exists() {
                    bail!("{} already holds a repository", dir.display());
                }
                bail!(
                    "{} is not empty; a repository needs an empty or new directory",
                    dir.display()
                );
            }
        }
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let store = DirStore::new(dir);
        let subs: &[Dir] = if version == 1 {
            &[Dir::Chunks, Dir::Snapshots]
        } else {
            &[Dir::Packs, Dir::Index, Dir::Snapshots, Dir::Keys]
        };
        let paths = subs.iter().map(|d| dir.join(d.path()));
        for sub in paths.chain([store.tmp_dir()]) {
            std::fs::create_dir_all(&sub).with_context(|| format!("create {}", sub.display()))?;
        }
        let mut data = serde_json::to_vec_pretty(&config)?;
        data.push(b'\n');
        // config.json is written last: a directory is a repository once it exists.
        if let Some((master, pass)) = encrypt {
            keyring::add(&store, &config, master, pass)?;
        }
        store.flush()?;
        atomic::sync_dir(dir)?;
        store.put(&Object::Config, &data)?;
        store.flush()?;
        let repo = Self::with_store(
            Arc::new(store),
            &dir.display().to_string(),
            config,
            Protection::Plain,
        );
        Ok(match encrypt {
            Some((master, _)) => repo.with_key(master),
            None => repo,
        })
    }

    fn with_store(
        store: Arc<dyn Store>,
        display: &str,
        config: Config,
        protection: Protection,
    ) -> Repository {
        let layout = if config.version >= 2 {
            Layout::Packs
        } else {
            Layout::Files
        };
        let chunks = chunks::Chunks::new(
            layout,
            store.clone(),
            config.chunker.max_size,
            Self::chunk_limit_of(&config),
            protection.clone(),
        );
        Repository {
            store,
            display: display.to_string(),
            codec: Codec::new(
                config.compression.level,
                config.chunker.max_size,
                protection.clone(),
            ),
            config,
            chunks,
            protection,
        }
    }

    /// The most a stored chunk may take: zstd never grows data by more than a small
    /// fraction; encryption adds its tag.
    fn chunk_limit_of(config: &Config) -> u64 {
        let max = config.chunker.max_size as u64;
        let tag = if config.encryption.is_some() {
            crate::crypt::CHUNK_OVERHEAD as u64
        } else {
            0
        };
        max + max / 128 + (64 << 10) + tag
    }

    /// Unlock an encrypted repository with the passphrase `spec` gives (or asks for). A
    /// passphrase given for a repository that is not encrypted is not used, with a note
    /// (a global LIFEBOAT_PASSWORD_FILE meets plain repositories too); but a writer that
    /// was given one refuses it: the config may have been altered to make it store data
    /// in the clear.
    fn unlock(self, spec: &RepoSpec) -> Result<Repository> {
        if self.config.encryption.is_none() {
            if spec.has_password() && spec.writes_data {
                bail!(
                    "repository {} is not encrypted, yet a passphrase was given: refusing to write \
                     data there in the clear (if it was created encrypted, its config.json has been \
                     altered; if it is meant to be plain, give no --password-file or \
                     LIFEBOAT_PASSWORD_FILE for it)",
                    self.display
                );
            }
            if spec.has_password() && !keyring::list(&*self.store)?.is_empty() {
                bail!(
                    "repository {} says it is not encrypted, yet it holds key files (keys/): its \
                     config.json has been altered; refusing it",
                    self.display
                );
            }
            if spec.has_password() {
                log::warn!(
                    "repository {} is not encrypted: the passphrase given (--password-file or \
                     LIFEBOAT_PASSWORD_FILE) is not used",
                    self.display
                );
            }
            return Ok(self);
        }
        if let Some(k) = &spec.key {
            return Ok(self.with_key(&k.0));
        }
        let pass = spec.passphrase()?;
        let (master, _) = keyring::unlock(&*self.store, &self.config, &self.display, &pass)?;
        Ok(self.with_key(&master))
    }

    /// This repository with its master key in hand.
    pub fn with_key(self, master: &crate::crypt::MasterKey) -> Repository {
        let crypt = Arc::new(crate::crypt::Crypt::new(master));
        Self::with_store(
            self.store,
            &self.display,
            self.config,
            Protection::Unlocked(crypt),
        )
    }

    /// The same repository seen afresh: its index read again on first use.
    pub fn reloaded(&self) -> Repository {
        Self::with_store(
            self.store.clone(),
            &self.display,
            self.config.clone(),
            self.protection.clone(),
        )
    }

    /// Whether the repository is encrypted (whether or not this reader holds its key).
    pub fn is_encrypted(&self) -> bool {
        self.protection.is_encrypted()
    }

    pub fn protection(&self) -> &Protection {
        &self.protection
    }

    /// A chunk's id: the BLAKE3 of its bytes, keyed in an encrypted repository.
    pub fn chunk_id(&self, plain: &[u8]) -> ChunkId {
        self.codec.id(plain)
    }

    /// The chunker's gear table: keyed in an encrypted repository.
    pub fn gear(&self) -> Arc<crate::crypt::Gear> {
        match self.protection.key() {
            Some(c) => c.gear(),
            None => crate::crypt::Gear::shared_standard(),
        }
    }

    /// A chunker of this repository over `src`.
    pub fn chunker<R: std::io::Read>(&self, src: R) -> chunker::Chunker<R> {
        chunker::Chunker::new(src, &self.config.chunker, self.gear())
    }

    /// The key of region hashes (encrypted repositories).
    pub fn region_key(&self) -> Option<&[u8; 32]> {
        self.protection.key().map(|c| c.region_key())
    }

    /// Open the repository named on the command line (a directory, an http(s) URL or
    /// s3://), unlocking it when it is encrypted.
    pub fn open(spec: &RepoSpec) -> Result<Repository> {
        Self::open_without_key(spec)?.unlock(spec)
    }

    /// Open a repository without unlocking it: an encrypted one can then be checked for
    /// names and shapes only (a server), or have its key files read.
    pub fn open_without_key(spec: &RepoSpec) -> Result<Repository> {
        let display = spec.location.to_string();
        match &spec.location {
            RepoLocation::Http(url) => {
                let token = match &spec.token_file {
                    Some(f) => Some(
                        std::fs::read_to_string(f)
                            .with_context(|| format!("read token file {}", f.display()))?
                            .trim()
                            .to_string(),
                    ),
                    None => None,
                };
                let store = http::HttpStore::new(url, spec.cacert.as_deref(), token)?;
                Self::open_store(Arc::new(store), &display)
            }
            RepoLocation::Dir(dir) => Ok(Self::open_dir(dir)?.0),
            RepoLocation::S3(_) => Self::open_store(Arc::new(spec.s3_store()?), &display),
        }
    }

    /// Open the repository in a local directory without unlocking it, with its store.
    pub fn open_dir(dir: &Path) -> Result<(Repository, Arc<DirStore>)> {
        let display = RepoLocation::Dir(dir.to_path_buf()).to_string();
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => bail!(
                "{display} is a file, not a repository (a repository is a directory, a URL or s3://...)"
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("there is no repository at {display}: nothing there; {}", hint(&display))
            }
            Err(e) => bail!("repository {display}: {e}"),
        }
        let files = Arc::new(DirStore::new(dir));
        Ok((Self::open_store(files.clone(), &display)?, files))
    }

    /// Create a new repository in an empty store (an S3 bucket or prefix).
    pub fn init_in(
        store: Arc<dyn Store>,
        display: &str,
        chunker: ChunkerParams,
        level: i32,
        version: u32,
    ) -> Result<Repository> {
        Self::create_in(store, display, Config::new(chunker, level, version)?, None)
    }

    /// Create a new repository with `config` in an empty store.
    pub fn create_in(
        store: Arc<dyn Store>,
        display: &str,
        config: Config,
        encrypt: Option<(&crate::crypt::MasterKey, &crate::crypt::Passphrase)>,
    ) -> Result<Repository> {
        if store.has(&Object::Config)? {
            bail!("{display} already holds a repository");
        }
        let mut data = serde_json::to_vec_pretty(&config)?;
        data.push(b'\n');
        if let Some((master, pass)) = encrypt {
            keyring::add(&*store, &config, master, pass)?;
        }
        store.put(&Object::Config, &data)?;
        store.flush()?;
        let repo = Self::with_store(store, display, config, Protection::Plain);
        Ok(match encrypt {
            Some((master, _)) => repo.with_key(master),
            None => repo,
        })
    }

    pub fn open_store(store: Arc<dyn Store>, display: &str) -> Result<Repository> {
        let raw = match store.get_at_most(&Object::Config, config::MAX_CONFIG_BYTES) {
            Ok(raw) => raw,
            Err(StoreError::NotFound { .. }) => bail!(
                "{display} is not a lifeboat repository (it has no config.json): {}",
                hint(display)
            ),
            Err(e) => return Err(e).context("read repository config"),
        };
        let config = Config::parse(&raw, &store.location(&Object::Config), display)?;
        let protection = if config.encryption.is_some() {
            Protection::Locked
        } else {
            Protection::Plain
        };
        Ok(Self::with_store(store, display, config, protection))
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// How many requests to keep in flight against this repository's store.
    pub fn concurrency(&self) -> usize {
        self.store.concurrency()
    }

    pub fn chunk_location(&self, id: &ChunkId) -> String {
        self.chunks.location(id)
    }

    /// How this repository lays out its chunks.
    pub fn layout(&self) -> Layout {
        self.chunks.layout
    }

    pub fn has_chunk(&self, id: &ChunkId) -> Result<bool> {
        self.chunks.has(id)
    }

    /// A writer of new chunks, for one thread (see `ChunkWriter`).
    pub fn chunk_writer(&self) -> ChunkWriter<'_> {
        self.chunks.writer()
    }

    /// A chunk as this repository stores it: compressed, then sealed when encrypted.
    pub fn encode_chunk(&self, id: &ChunkId, plain: &[u8]) -> Result<Vec<u8>> {
        match self.codec.encode(id, plain)? {
            Ok(stored) => Ok(stored),
            Err(codec::Locked) => {
                bail!("repository {} is encrypted and not unlocked", self.display)
            }
        }
    }

    /// Decompress stored bytes and check that they hash to `id`.
    pub fn decode_chunk(&self, id: &ChunkId, raw: &[u8]) -> Result<Vec<u8>, ChunkError> {
        self.codec
            .decode(id, raw)
            .map_err(|reason| ChunkError::Corrupt {
                id: *id,
                location: self.chunk_location(id),
                reason,
            })
    }

    /// Compress and store a chunk through `writer`; returns the bytes stored.
    pub fn put_chunk_with(
        &self,
        writer: &mut ChunkWriter<'_>,
        id: &ChunkId,
        plain: &[u8],
    ) -> Result<u64> {
        let packed = self.encode_chunk(id, plain)?;
        writer.put(id, &packed, plain.len() as u32)?;
        Ok(packed.len() as u64)
    }

    /// Compress and store one chunk; returns the bytes stored.
    pub fn put_chunk(&self, id: &ChunkId, plain: &[u8]) -> Result<u64> {
        self.put_chunk_with(&mut self.chunk_writer(), id, plain)
    }

    /// Read, decompress and verify a chunk. From a remote store, a chunk that fails
    /// verification is fetched twice more before it is called corrupt: the damage may have
    /// happened on the way.
    pub fn get_chunk(&self, id: &ChunkId) -> Result<Vec<u8>, ChunkError> {
        let tries = if self.store.is_remote() { 3 } else { 1 };
        let mut result = self.get_chunk_once(id);
        for _ in 1..tries {
            match &result {
                Err(ChunkError::Corrupt { .. }) => {
                    log::info!("chunk {id} failed verification; fetching it again");
                    result = self.get_chunk_once(id);
                }
                _ => break,
            }
        }
        result
    }

    /// Read, decompress and verify several chunks and hand each to `found` with its
    /// index in `ids`, as soon as it is had, in no set order; the first that cannot be
    /// had ends it. In a repository of packs the chunks are read in runs (`runs::plan`:
    /// one ranged read of up to `runs::MAX_RUN` bytes per run of neighbours in a pack), so
    /// a reader holds at most one run and one chunk at a time.
    pub fn read_chunks(
        &self,
        ids: &[ChunkId],
        found: &mut dyn FnMut(usize, Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        let locs = self.chunks.locate(ids)?;
        let mut placed = Vec::with_capacity(ids.len());
        for (k, loc) in locs.into_iter().enumerate() {
            match loc {
                Some(l) => placed.push((l, k)),
                // Format 1, or a chunk no index names: alone, with its precise error.
                None => found(k, self.get_chunk(&ids[k])?)?,
            }
        }
        for run in runs::plan(&placed) {
            self.read_run(ids, &run, found)?;
        }
        Ok(())
    }

    /// The chunks of one run. A run that cannot be read is an error of its first chunk
    /// (the store has retried it already), unless its pack is gone: then each chunk is
    /// read alone (a prune may have moved them). One that was read but holds a damaged
    /// chunk has that chunk read again alone, with its own retries and precise error.
    fn read_run(
        &self,
        ids: &[ChunkId],
        run: &runs::Run,
        found: &mut dyn FnMut(usize, Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        let bytes = if run.chunks.len() > 1 {
            let first = ids[run.chunks[0].wanted[0]];
            match self.chunks.read_pack_range(&run.pack, run.offset, run.len) {
                Ok(b) => Some(b),
                // The pack is gone (a prune may have moved its chunks): each chunk alone,
                // which finds it where the index files now say, or says it is missing.
                Err(StoreError::NotFound { .. }) => None,
                Err(StoreError::Other { location, cause }) => {
                    return Err(ChunkError::Unreadable {
                        id: first,
                        cause: anyhow::anyhow!("{location}: {cause:#}"),
                        location,
                    }
                    .into())
                }
            }
        } else {
            None
        };
        for c in &run.chunks {
            let id = &ids[c.wanted[0]];
            let from_run = bytes.as_ref().and_then(|b| {
                let at = (c.loc.offset as u64 - run.offset) as usize;
                let plain = self
                    .decode_chunk(id, b.get(at..at + c.loc.stored as usize)?)
                    .ok()?;
                (plain.len() == c.loc.plain as usize).then_some(plain)
            });
            let plain = match from_run {
                Some(p) => p,
                None => self.get_chunk(id)?,
            };
            let (last, others) = c.wanted.split_last().expect("a run chunk is wanted");
            for &k in others {
                found(k, plain.clone())?;
            }
            found(*last, plain)?;
        }
        Ok(())
    }

    /// Bytes the chunks take as stored (compressed): from the index in a repository of
    /// packs, from each file's size in format 1. A chunk that is not there counts 0.
    pub fn stored_bytes(&self, ids: &[ChunkId]) -> Result<u64> {
        match self.chunks.layout {
            Layout::Packs => Ok(self
                .chunks
                .locate(ids)?
                .iter()
                .flatten()
                .map(|l| l.stored as u64)
                .sum()),
            Layout::Files => {
                let mut total = 0;
                for id in ids {
                    total += self.store.size(&Object::Chunk(*id))?.unwrap_or(0);
                }
                Ok(total)
            }
        }
    }

    /// The most a stored (compressed) chunk may take: zstd never grows data by more than
    /// a small fraction.
    pub fn chunk_limit(&self) -> u64 {
        Self::chunk_limit_of(&self.config)
    }

    fn get_chunk_once(&self, id: &ChunkId) -> Result<Vec<u8>, ChunkError> {
        let (raw, plain_len) = self.read_stored(id)?;
        let plain = self.decode_chunk(id, &raw)?;
        if plain_len.is_some_and(|n| n as usize != plain.len()) {
            return Err(ChunkError::Corrupt {
                id: *id,
                location: self.chunk_location(id),
                reason: format!("the index says {} plain bytes", plain_len.unwrap_or(0)),
            });
        }
        Ok(plain)
    }

    /// A chunk as stored (compressed), unverified: `decode_chunk` checks it.
    pub fn get_stored_chunk(&self, id: &ChunkId) -> Result<Vec<u8>, ChunkError> {
        Ok(self.read_stored(id)?.0)
    }

    fn read_stored(&self, id: &ChunkId) -> Result<(Vec<u8>, Option<u32>), ChunkError> {
        self.chunks.read(id).map_err(|e| match e {
            chunks::ReadError::Missing(location) => ChunkError::Missing { id: *id, location },
            chunks::ReadError::Other(location, cause) => ChunkError::Unreadable {
                id: *id,
                location,
                cause,
            },
        })
    }

    /// All chunk ids present in the store.
    /// Format 2: pack files that no index file names.
    pub fn unindexed_packs(&self) -> Result<Vec<pack::PackId>> {
        self.chunks.unindexed_packs()
    }

    /// `ids` in the order they lie in the store (pack by pack, offset by offset), so
    /// that reading them all reads each pack front to back.
    pub fn in_storage_order(&self, mut ids: Vec<ChunkId>) -> Result<Vec<ChunkId>> {
        let locs = self.chunks.locate(&ids)?;
        let mut keyed: Vec<_> = ids
            .drain(..)
            .zip(locs)
            .map(|(id, l)| (l.map(|l| (l.pack, l.offset)), id))
            .collect();
        keyed.sort();
        Ok(keyed.into_iter().map(|(_, id)| id).collect())
    }

    pub fn list_chunks(&self) -> Result<Vec<ChunkId>> {
        self.chunks.list()
    }

    /// Whether a pack is stored at `len` bytes.
    pub fn pack_present(&self, id: &pack::PackId, len: u64) -> Result<bool> {
        self.chunks.pack_present(id, len)
    }

    /// A pack known to be stored now (see `Chunks::mark_present`).
    pub fn note_pack_stored(&self, id: &pack::PackId) {
        self.chunks.mark_present(id)
    }

    /// Parse an index file within this repository's limits.
    pub fn parse_index(&self, data: &[u8]) -> Result<Vec<index::IndexedPack>, String> {
        let (plain, stored) = self.chunks.limits();
        let opened;
        let data = match &self.protection {
            Protection::Plain => data,
            Protection::Unlocked(c) => {
                opened = c.open(Kind::Index, data).map_err(|e| e.to_string())?;
                &opened[..]
            }
            Protection::Locked => {
                crate::crypt::check_envelope(Kind::Index, data).map_err(|e| e.to_string())?;
                return Ok(Vec::new());
            }
        };
        index::parse(data, plain, stored, Seal::of(&self.protection).overhead())
    }

    /// Treat these chunks as absent: a capture stores them again (a prune drops them).
    pub fn exclude_chunks(&self, ids: impl IntoIterator<Item = ChunkId>) {
        self.chunks.exclude(ids)
    }

    /// The chunks this process stored.
    pub fn stored_here(&self) -> std::collections::HashSet<ChunkId> {
        self.chunks.stored_here()
    }

    /// Format 2: every index file with its packs.
    pub fn index_files(&self) -> Result<Vec<chunks::IndexFile>> {
        self.chunks.index_files()
    }

    /// Format 2: write an index file naming `packs`; its key.
    pub fn write_index(&self, packs: &[index::IndexedPack]) -> Result<IndexId> {
        self.chunks.write_index(packs)
    }

    /// Make a new index file's packs known to this process.
    pub fn learn_index(&self, packs: &[index::IndexedPack]) {
        self.chunks.learn(packs)
    }

    /// Check a whole pack file: its trailer, and every chunk in it against its id and
    /// length, reading a chunk at a time (never the pack whole).
    pub fn verify_pack(&self, file: &std::fs::File) -> Result<Vec<pack::PackEntry>> {
        use std::os::unix::fs::FileExt;
        let len = file.metadata().context("stat the pack")?.len();
        let (plain, stored) = self.chunks.limits();
        let malformed = |e: pack::PackError| anyhow::anyhow!("the pack is malformed: {e}");
        // The tail first, then the whole trailer it announces: read from the end, each
        // size checked by `parse_trailer` before it is read.
        let read_end = |n: u64| -> Result<Vec<u8>> {
            let n = n.min(len);
            let mut b = vec![0u8; n as usize];
            file.read_exact_at(&mut b, len - n)
                .context("read the pack")?;
            Ok(b)
        };
        let tail = read_end(pack::TAIL_BYTES as u64)?;
        let entries =
            match pack::parse_trailer(&tail, len, plain, stored, Seal::of(&self.protection))
                .map_err(malformed)?
            {
                Ok(e) => e,
                Err(need) => pack::parse_trailer(
                    &read_end(need as u64)?,
                    len,
                    plain,
                    stored,
                    Seal::of(&self.protection),
                )
                .map_err(malformed)?
                .map_err(|_| anyhow::anyhow!("the pack is malformed: its trailer is cut"))?,
            };
        for e in &entries {
            let mut frame = vec![0u8; e.stored as usize];
            file.read_exact_at(&mut frame, e.offset as u64)
                .context("read the pack")?;
            let got = self
                .decode_chunk(&e.id, &frame)
                .map_err(anyhow::Error::new)?;
            anyhow::ensure!(
                got.len() == e.plain as usize,
                "chunk {} is {} bytes, not the {} its entry gives",
                e.id,
                got.len(),
                e.plain
            );
        }
        Ok(entries)
    }

    /// Make all chunk writes durable (format 2: seal the packs, write them, then their
    /// index file); call before saving a manifest that names them.
    pub fn flush(&self) -> Result<()> {
        self.chunks.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repository_is_created_once_and_opened_by_its_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r");
        // Chunk files (format 1), which this test edits by hand.
        let r = Repository::init_version(&path, ChunkerParams::default(), 3, 1).unwrap();
        assert!(Repository::init(&path, ChunkerParams::default(), 3)
            .err()
            .unwrap()
            .to_string()
            .contains("already holds a repository"));
        let spec = RepoSpec::at(RepoLocation::Dir(path.clone()));
        let opened = Repository::open(&spec).unwrap();
        assert_eq!(opened.config.id, r.config.id);
        let data = vec![7u8; 5000];
        let id = ChunkId::of(&data);
        opened.put_chunk(&id, &data).unwrap();
        opened.flush().unwrap();
        assert_eq!(opened.get_chunk(&id).unwrap(), data);
        // A stored chunk whose bytes do not hash to its name is corrupt, and named.
        let wrong = ChunkId::of(b"not these bytes");
        let file = |id: &ChunkId| path.join(Object::Chunk(*id).key());
        std::fs::create_dir_all(file(&wrong).parent().unwrap()).unwrap();
        std::fs::copy(file(&id), file(&wrong)).unwrap();
        assert!(matches!(
            opened.get_chunk(&wrong),
            Err(ChunkError::Corrupt { .. })
        ));
        assert!(matches!(
            opened.get_chunk(&ChunkId::of(b"absent")),
            Err(ChunkError::Missing { .. })
        ));
        let missing = RepoSpec::at(RepoLocation::Dir(dir.path().join("nope")));
        assert!(Repository::open(&missing)
            .err()
            .unwrap()
            .to_string()
            .contains("there is no repository at"));
    }
}
