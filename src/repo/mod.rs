//! The repository: a versioned config, zstd-compressed chunks named by BLAKE3, and snapshot
//! manifests, laid out as `docs/repository-format.md` describes, on top of a [`Store`].

pub mod atomic;
pub mod chunker;
pub mod dir;
pub mod http;
pub mod id;
pub mod manifest;
pub mod store;
pub mod treehash;

use std::cell::RefCell;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

pub use id::ChunkId;
pub use manifest::Manifest;
pub use store::{Store, StoreError};

use dir::DirStore;

pub const REPO_FORMAT: &str = "lifeboat-repository";
pub const REPO_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    pub algorithm: ChunkerAlgorithm,
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
    /// Regions are cut into segments of this many bytes (a power of two) from their start,
    /// each chunked on its own, so that all cores can chunk at once. A disk's bytes do
    /// not shift, so the forced cut at a segment's end falls at the same place every time.
    #[serde(default = "default_segment")]
    pub segment_size: u64,
}

fn default_segment() -> u64 {
    64 << 20
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkerAlgorithm {
    /// FastCDC as published in 2020 (the `fastcdc` crate's v2020 module), normalization level 1,
    /// gear table seed 0.
    #[serde(rename = "fastcdc-2020")]
    FastCdc2020,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams {
            algorithm: ChunkerAlgorithm::FastCdc2020,
            min_size: 16 * 1024,
            avg_size: 64 * 1024,
            max_size: 256 * 1024,
            segment_size: default_segment(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    pub format: String,
    pub version: u32,
    pub id: String,
    pub created: String,
    pub chunker: ChunkerParams,
    pub compression: Compression,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Compression {
    pub algorithm: String,
    pub level: i32,
}

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
    #[error("chunk {id} could not be read ({location}): {source:#}")]
    Unreadable {
        id: ChunkId,
        location: String,
        #[source]
        source: anyhow::Error,
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

pub fn chunk_key(id: &ChunkId) -> String {
    let hex = id.to_hex();
    format!("chunks/{}/{}", &hex[..2], hex)
}

pub fn snapshot_key(id: &str) -> String {
    format!("snapshots/{id}.json")
}

/// Where a repository is, as the command line gave it.
#[derive(Debug, Clone, Default)]
pub struct RepoSpec {
    /// A directory or an http(s) URL.
    pub location: String,
    /// CA certificates (PEM) to trust for https, instead of the usual roots.
    pub cacert: Option<std::path::PathBuf>,
    /// A file holding the bearer token for writing to `lifeboat serve`.
    pub token_file: Option<std::path::PathBuf>,
}

impl RepoSpec {
    pub fn local_dir(&self) -> Option<&Path> {
        (!self.location.contains("://")).then(|| Path::new(&self.location))
    }
}

pub struct Repository {
    store: Arc<dyn Store>,
    /// What the user named, for messages.
    pub display: String,
    pub config: Config,
}

/// A manifest with the id it is stored under.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub id: String,
    pub manifest: Manifest,
}

impl Snapshot {
    pub fn short_id(&self) -> &str {
        &self.id[..8]
    }
}

thread_local! {
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
}

fn hint(dir: &str) -> String {
    format!("create one with `lifeboat init --repo {dir}`")
}

impl Repository {
    /// Create a new repository in `dir` (absent or empty).
    pub fn init(dir: &Path, chunker: ChunkerParams, level: i32) -> Result<Repository> {
        if dir.exists() {
            let mut entries = std::fs::read_dir(dir)
                .with_context(|| format!("read directory {}", dir.display()))?;
            if entries.next().is_some() {
                if dir.join("config.json").exists() {
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
        for sub in ["chunks", "snapshots", "tmp"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("create {}", dir.join(sub).display()))?;
        }
        let config = Config {
            format: REPO_FORMAT.into(),
            version: REPO_VERSION,
            id: uuid::Uuid::new_v4().simple().to_string(),
            created: now_rfc3339(),
            chunker,
            compression: Compression {
                algorithm: "zstd".into(),
                level,
            },
        };
        let mut data = serde_json::to_vec_pretty(&config)?;
        data.push(b'\n');
        // config.json is written last: a directory is a repository once it exists.
        store.flush()?;
        atomic::sync_dir(dir)?;
        store.put("config.json", &data)?;
        store.flush()?;
        Ok(Repository {
            store: Arc::new(store),
            display: dir.display().to_string(),
            config,
        })
    }

    /// Open the repository named on the command line: a directory, or an http(s) URL.
    pub fn open(spec: &RepoSpec) -> Result<Repository> {
        let loc = spec.location.as_str();
        if loc.starts_with("http://") || loc.starts_with("https://") {
            let token = match &spec.token_file {
                Some(f) => Some(
                    std::fs::read_to_string(f)
                        .with_context(|| format!("read token file {}", f.display()))?
                        .trim()
                        .to_string(),
                ),
                None => None,
            };
            let store = http::HttpStore::new(loc, spec.cacert.as_deref(), token)?;
            return Self::open_store(Arc::new(store), loc);
        }
        if loc.contains("://") {
            bail!("repository {loc}: unknown scheme (a directory, http:// or https://)");
        }
        let spec = loc;
        let dir = Path::new(spec);
        if !dir.is_dir() {
            bail!("repository {spec} does not exist; {}", hint(spec));
        }
        let store: Arc<dyn Store> = Arc::new(DirStore::new(dir));
        Self::open_store(store, spec)
    }

    pub fn open_store(store: Arc<dyn Store>, display: &str) -> Result<Repository> {
        let raw = match store.get("config.json") {
            Ok(raw) => raw,
            Err(StoreError::NotFound { .. }) => bail!(
                "{display} is not a lifeboat repository (it has no config.json); {}",
                hint(display)
            ),
            Err(e) => return Err(e).context("read repository config"),
        };
        let value: serde_json::Value = serde_json::from_slice(&raw).with_context(|| {
            format!(
                "{} is not valid JSON: not a lifeboat repository",
                store.location("config.json")
            )
        })?;
        if value.get("format").and_then(|f| f.as_str()) != Some(REPO_FORMAT) {
            bail!(
                "{} does not describe a lifeboat repository (format is not {REPO_FORMAT:?})",
                store.location("config.json")
            );
        }
        let version = value.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
        if version != REPO_VERSION as u64 {
            bail!(
                "repository {display} has format version {version}; this lifeboat reads version {REPO_VERSION} only"
            );
        }
        let config: Config = serde_json::from_value(value)
            .with_context(|| format!("parse {}", store.location("config.json")))?;
        Ok(Repository {
            store,
            display: display.to_string(),
            config,
        })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn chunk_location(&self, id: &ChunkId) -> String {
        self.store.location(&chunk_key(id))
    }

    pub fn has_chunk(&self, id: &ChunkId) -> Result<bool> {
        self.store.has(&chunk_key(id))
    }

    /// Compress and store a chunk; returns the bytes stored.
    pub fn put_chunk(&self, id: &ChunkId, plain: &[u8]) -> Result<u64> {
        let level = self.config.compression.level;
        let packed = COMPRESSOR.with(|c| -> Result<Vec<u8>> {
            let mut c = c.borrow_mut();
            if c.as_ref().map(|(l, _)| *l) != Some(level) {
                *c = Some((level, zstd::bulk::Compressor::new(level)?));
            }
            let comp = &mut c.as_mut().unwrap().1;
            comp.include_checksum(false)?;
            comp.include_contentsize(true)?;
            Ok(comp.compress(plain)?)
        })?;
        self.store.put(&chunk_key(id), &packed)?;
        Ok(packed.len() as u64)
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

    fn get_chunk_once(&self, id: &ChunkId) -> Result<Vec<u8>, ChunkError> {
        let key = chunk_key(id);
        let raw = self.store.get(&key).map_err(|e| match e {
            StoreError::NotFound { location } => ChunkError::Missing { id: *id, location },
            StoreError::Other { location, source } => ChunkError::Unreadable {
                id: *id,
                location,
                source,
            },
        })?;
        self.decode_chunk(id, &raw)
    }

    /// Decompress stored bytes and check that they hash to `id`.
    pub fn decode_chunk(&self, id: &ChunkId, raw: &[u8]) -> Result<Vec<u8>, ChunkError> {
        let corrupt = |reason: String| ChunkError::Corrupt {
            id: *id,
            location: self.chunk_location(id),
            reason,
        };
        let max = self.config.chunker.max_size as usize;
        let plain = DECOMPRESSOR
            .with(|d| -> std::io::Result<Vec<u8>> {
                let mut d = d.borrow_mut();
                if d.is_none() {
                    *d = Some(zstd::bulk::Decompressor::new()?);
                }
                d.as_mut().unwrap().decompress(raw, max)
            })
            .map_err(|e| corrupt(format!("zstd: {e}")))?;
        let actual = ChunkId::of(&plain);
        if actual != *id {
            return Err(corrupt(format!("its content hashes to {}", actual.short())));
        }
        Ok(plain)
    }

    /// All chunk ids present in the store.
    pub fn list_chunks(&self) -> Result<Vec<ChunkId>> {
        let mut ids = Vec::new();
        for fan in self.store.list("chunks")? {
            for name in self.store.list(&format!("chunks/{fan}"))? {
                if let Ok(id) = name.parse::<ChunkId>() {
                    ids.push(id);
                }
            }
        }
        Ok(ids)
    }

    /// Make all chunk writes durable; call before saving a manifest that names them.
    pub fn flush(&self) -> Result<()> {
        self.store.flush()
    }

    /// Store a manifest (after its chunks, which must be flushed) and return its id.
    pub fn save_manifest(&self, manifest: &Manifest) -> Result<String> {
        manifest
            .validate()
            .context("refusing to save an inconsistent manifest")?;
        let mut data = serde_json::to_vec(manifest)?;
        data.push(b'\n');
        let id = id::hex(blake3::hash(&data).as_bytes());
        self.store.flush()?;
        self.store.put(&snapshot_key(&id), &data)?;
        self.store.flush()?;
        Ok(id)
    }

    /// Load one manifest by full id, verifying that its content still hashes to its name.
    pub fn load_snapshot(&self, id: &str) -> Result<Snapshot> {
        let key = snapshot_key(id);
        let location = self.store.location(&key);
        let data = self
            .store
            .get(&key)
            .map_err(anyhow::Error::new)
            .context("read snapshot manifest")?;
        let actual = id::hex(blake3::hash(&data).as_bytes());
        if actual != id {
            bail!(
                "snapshot manifest {location} is damaged: its content hashes to {}, not to its name (truncated or altered)",
                &actual[..8]
            );
        }
        let manifest: Manifest = serde_json::from_slice(&data)
            .with_context(|| format!("snapshot manifest {location} does not parse"))?;
        manifest
            .validate()
            .with_context(|| format!("snapshot manifest {location} is inconsistent"))?;
        Ok(Snapshot {
            id: id.to_string(),
            manifest,
        })
    }

    /// Ids of all stored manifests.
    pub fn snapshot_ids(&self) -> Result<Vec<String>> {
        Ok(self
            .store
            .list("snapshots")?
            .into_iter()
            .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
            .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
            .collect())
    }

    /// Every snapshot, each loaded or with the error that stopped it, oldest first.
    pub fn snapshots(&self) -> Result<Vec<(String, Result<Snapshot>)>> {
        let mut all: Vec<(String, Result<Snapshot>)> = self
            .snapshot_ids()?
            .into_iter()
            .map(|id| {
                let s = self.load_snapshot(&id);
                (id, s)
            })
            .collect();
        all.sort_by(|a, b| {
            let ta =
                a.1.as_ref()
                    .map(|s| s.manifest.time.clone())
                    .unwrap_or_default();
            let tb =
                b.1.as_ref()
                    .map(|s| s.manifest.time.clone())
                    .unwrap_or_default();
            ta.cmp(&tb).then(a.0.cmp(&b.0))
        });
        Ok(all)
    }

    /// Find a snapshot by full id, unique id prefix (4 digits or more) or name (the newest).
    pub fn resolve(&self, spec: &str) -> Result<Snapshot> {
        let ids = self.snapshot_ids()?;
        if ids.iter().any(|i| i == spec) {
            return self.load_snapshot(spec);
        }
        let lower = spec.to_ascii_lowercase();
        if spec.len() >= 4 && lower.bytes().all(|b| b.is_ascii_hexdigit()) {
            let matches: Vec<&String> = ids.iter().filter(|i| i.starts_with(&lower)).collect();
            match matches.len() {
                1 => return self.load_snapshot(matches[0]),
                0 => {}
                n => bail!("snapshot id prefix {spec} is ambiguous: {n} snapshots match"),
            }
        }
        let mut newest: Option<Snapshot> = None;
        let mut damaged = Vec::new();
        for (id, s) in self.snapshots()? {
            match s {
                Ok(s) if s.manifest.name == spec => newest = Some(s),
                Ok(_) => {}
                Err(e) => damaged.push(format!("{}: {e:#}", &id[..8])),
            }
        }
        match newest {
            Some(s) => Ok(s),
            None if !damaged.is_empty() => bail!(
                "no readable snapshot named or with id {spec:?} in {}; damaged manifests: {}",
                self.display,
                damaged.join("; ")
            ),
            None => bail!(
                "no snapshot named or with id {spec:?} in {} (see `lifeboat snapshots`)",
                self.display
            ),
        }
    }
}

/// Now, in RFC 3339 UTC with microseconds, so that snapshots taken within one second
/// still sort in the order they were taken.
/// How many chunk reads to keep in flight: one per core locally; more over a network,
/// where each read mostly waits.
pub fn fetch_workers(repo: &Repository) -> usize {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    if repo.store().is_remote() {
        16.max(cores)
    } else {
        cores
    }
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}
