//! The repository: a versioned config, zstd-compressed chunks named by BLAKE3, and snapshot
//! manifests, laid out as `docs/repository-format.md` describes, on top of a [`Store`].

pub mod admit;
pub mod atomic;
pub mod chunker;
pub mod chunks;
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
pub mod store;
pub mod treehash;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::crypt::{Kind, Protection};
use crate::location::RepoLocation;
use pack::Seal;

pub use chunks::{ChunkWriter, Layout};
pub use id::{ChunkId, IndexId, SnapshotId};
pub use manifest::Manifest;
pub use object::{Dir, Object};
pub use store::{Store, StoreError};

use dir::DirStore;

pub const REPO_FORMAT: &str = "lifeboat-repository";
/// The version `init` writes: 1 keeps a file per chunk, 2 packs them (`chunks::Layout`).
pub const REPO_VERSION: u32 = 2;
/// The versions this build reads and writes.
pub const REPO_VERSIONS: [u32; 2] = [1, 2];
/// A config is a few hundred bytes; more is not a config.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

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

/// The bounds every chunker setting must keep, whoever wrote it (a repository config and
/// a manifest are outside input): chunks of 1 KiB to 16 MiB, segments a power of two from
/// 1 MiB to 1 GiB holding at least two of the largest chunks.
pub const MIN_CHUNK: u32 = 1 << 10;
pub const MAX_CHUNK: u32 = 16 << 20;
const MIN_SEGMENT: u64 = 1 << 20;
const MAX_SEGMENT: u64 = 1 << 30;

impl ChunkerParams {
    /// Refuse settings outside the bounds, before anything is sized or divided by them.
    pub fn validate(&self) -> Result<()> {
        let (min, avg, max, seg) = (
            self.min_size,
            self.avg_size,
            self.max_size,
            self.segment_size,
        );
        anyhow::ensure!(
            MIN_CHUNK <= min && min <= avg && avg <= max && max <= MAX_CHUNK,
            "chunk sizes min {min}, average {avg}, max {max} are not within {MIN_CHUNK} <= min <= average <= max <= {MAX_CHUNK}"
        );
        anyhow::ensure!(
            seg.is_power_of_two()
                && (MIN_SEGMENT..=MAX_SEGMENT).contains(&seg)
                && seg >= 2 * max as u64,
            "segment size {seg} is not a power of two from {MIN_SEGMENT} to {MAX_SEGMENT} holding two {max}-byte chunks"
        );
        Ok(())
    }
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
    /// Keys whose signatures readers that bring no trust anchor of their own require
    /// (`init --require-signed`). The config is not authenticated: a reader with its own
    /// anchors (`--trust`) ignores this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<SigningConfig>,
    /// Present in an encrypted repository (`init --encrypt`): its algorithms. The master
    /// key is in `keys/`, wrapped under passphrases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionConfig>,
}

/// The algorithms of an encrypted repository (see `crate::crypt`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptionConfig {
    /// `"aes-256-gcm-siv"`: chunks and metadata.
    pub algorithm: String,
    /// `"blake3-keyed"`: chunk ids, the gear table and region hashes.
    pub ids: String,
    /// `"argon2id"`: the key files' passphrases.
    pub kdf: String,
}

impl EncryptionConfig {
    pub fn current() -> EncryptionConfig {
        EncryptionConfig {
            algorithm: crate::crypt::ALGORITHM.into(),
            ids: "blake3-keyed".into(),
            kdf: "argon2id".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SigningConfig {
    pub keys: Vec<crate::crypt::signing::PublicKey>,
}

impl Config {
    /// A new repository's config: a random id, now, zstd at `level`.
    pub fn new(chunker: ChunkerParams, level: i32, version: u32) -> Result<Config> {
        anyhow::ensure!(
            REPO_VERSIONS.contains(&version),
            "format version {version} is not one of {REPO_VERSIONS:?}"
        );
        Ok(Config {
            format: REPO_FORMAT.into(),
            version,
            id: uuid::Uuid::new_v4().simple().to_string(),
            created: crate::time::now_rfc3339(),
            chunker,
            compression: Compression {
                algorithm: "zstd".into(),
                level,
            },
            signing: None,
            encryption: None,
        })
    }

    /// Read a repository's config.json (found at `location`), refusing what is not a
    /// Lifeboat repository of this version.
    pub fn parse(raw: &[u8], location: &str, display: &str) -> Result<Config> {
        let value: serde_json::Value = serde_json::from_slice(raw)
            .with_context(|| format!("{location} is not valid JSON: not a lifeboat repository"))?;
        if value.get("format").and_then(|f| f.as_str()) != Some(REPO_FORMAT) {
            bail!(
                "{location} does not describe a lifeboat repository (format is not {REPO_FORMAT:?})"
            );
        }
        let version = value.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
        if !REPO_VERSIONS.iter().any(|&v| v as u64 == version) {
            bail!(
                "repository {display} has format version {version}; this lifeboat reads versions {REPO_VERSIONS:?}"
            );
        }
        let config: Config =
            serde_json::from_value(value).with_context(|| format!("parse {location}"))?;
        config
            .chunker
            .validate()
            .with_context(|| format!("{location}: the chunker settings are unusable"))?;
        if let Some(e) = &config.encryption {
            if *e != EncryptionConfig::current() {
                bail!(
                    "repository {display} is encrypted with {}/{}/{}; this lifeboat knows {:?}",
                    e.algorithm,
                    e.ids,
                    e.kdf,
                    EncryptionConfig::current()
                );
            }
            if config.version < 2 {
                bail!("{location}: an encrypted repository is of format 2 or later");
            }
        }
        Ok(config)
    }
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

/// A repository and how to reach it, as every command that reads or writes one takes it.
#[derive(Debug, Clone, clap::Args)]
pub struct RepoSpec {
    /// Repository: a local directory, or http(s)://HOST:PORT/ of `lifeboat serve` or any
    /// static web server holding one.
    #[arg(long = "repo", env = "LIFEBOAT_REPO", value_name = "DIR_OR_URL")]
    pub location: RepoLocation,
    /// CA certificates (PEM) to trust for an https repository.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// File holding the bearer token that `lifeboat serve` wants for writes.
    #[arg(long, env = "LIFEBOAT_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The S3 endpoint of an s3:// repository (credentials come from AWS_ACCESS_KEY_ID
    /// and AWS_SECRET_ACCESS_KEY, the region from AWS_REGION).
    #[arg(long, env = "AWS_ENDPOINT_URL", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// S3 credentials given other than by the environment (the rescue's orders).
    #[arg(skip)]
    pub s3_keys: Option<S3Keys>,
    /// File whose first line is the passphrase of an encrypted repository (asked on the
    /// terminal when there is one and this is not given).
    #[arg(long, env = "LIFEBOAT_PASSWORD_FILE", value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// The passphrase itself, when a caller has it already (the rescue, which asks on its
    /// console).
    #[arg(skip)]
    pub password: Option<crate::crypt::Passphrase>,
    /// The master key itself, unlocked already by this process (the rescue).
    #[arg(skip)]
    pub key: Option<crate::crypt::SharedKey>,
}

/// An S3 access key, and the region to sign for.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Keys {
    pub key_id: String,
    pub secret: String,
    pub region: Option<String>,
}

impl std::fmt::Debug for S3Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret: Debug output ends up in logs.
        write!(f, "S3Keys({}, region {:?})", self.key_id, self.region)
    }
}

impl RepoSpec {
    /// A repository reached with no CA or token of its own.
    pub fn at(location: RepoLocation) -> RepoSpec {
        RepoSpec {
            location,
            cacert: None,
            token_file: None,
            s3_endpoint: None,
            s3_keys: None,
            password_file: None,
            password: None,
            key: None,
        }
    }

    /// Whether a passphrase was given (a reader that was given one expects encryption).
    pub fn has_password(&self) -> bool {
        self.password.is_some() || self.password_file.is_some()
    }

    /// The passphrase of an encrypted repository: given, from the file, or asked.
    pub fn passphrase(&self) -> Result<crate::crypt::Passphrase> {
        if let Some(p) = &self.password {
            return Ok(p.clone());
        }
        let text = crate::crypt::passphrase::get(
            self.password_file.as_deref(),
            &format!("passphrase of repository {}", self.location),
            &format!(
                "repository {} is encrypted: give its passphrase with --password-file or LIFEBOAT_PASSWORD_FILE",
                self.location
            ),
        )?;
        Ok(crate::crypt::Passphrase::new(text))
    }

    pub fn local_dir(&self) -> Option<&Path> {
        self.location.local_dir()
    }

    /// The endpoint and key of an s3:// location: from the flags (or the rescue's
    /// orders) and the AWS_* environment.
    pub fn s3_access(&self) -> Result<(String, S3Keys)> {
        let endpoint = self
            .s3_endpoint
            .clone()
            .context("an s3:// repository needs its endpoint: --s3-endpoint or AWS_ENDPOINT_URL")?;
        let var = |name: &str| {
            std::env::var(name).with_context(|| format!("an s3:// repository needs {name}"))
        };
        let keys = match &self.s3_keys {
            Some(k) => k.clone(),
            None => S3Keys {
                key_id: var("AWS_ACCESS_KEY_ID")?,
                secret: var("AWS_SECRET_ACCESS_KEY")?,
                region: std::env::var("AWS_REGION").ok(),
            },
        };
        Ok((endpoint, keys))
    }

    /// The store of an s3:// location.
    pub fn s3_store(&self) -> Result<http::HttpStore> {
        let RepoLocation::S3(url) = &self.location else {
            bail!("{} is not an s3:// repository", self.location);
        };
        let (endpoint, keys) = self.s3_access()?;
        http::HttpStore::s3(
            url,
            &endpoint,
            keys.region.as_deref().unwrap_or("us-east-1"),
            &keys.key_id,
            &keys.secret,
            self.cacert.as_deref(),
        )
    }
}

pub struct Repository {
    store: Arc<dyn Store>,
    /// What the user named, for messages.
    pub display: String,
    pub config: Config,
    chunks: chunks::Chunks,
    /// Whether the repository is encrypted, and its keys when this reader has them.
    protection: Protection,
}

/// Why a manifest could not be read: the transfer (worth another try on a network), or
/// the manifest itself.
enum ManifestRead {
    Transfer(anyhow::Error),
    Bad(anyhow::Error),
}

/// A manifest with the id it is stored under.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub id: SnapshotId,
    pub manifest: Manifest,
}

impl Snapshot {
    pub fn short_id(&self) -> String {
        self.id.short()
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
    /// passphrase given for a repository that is not encrypted is refused: its config
    /// may have been altered to make a writer store data in the clear.
    fn unlock(self, spec: &RepoSpec) -> Result<Repository> {
        if self.config.encryption.is_none() {
            if spec.has_password() {
                bail!(
                    "repository {} is not encrypted, yet a passphrase was given: refusing it (if it was created encrypted, its config.json has been altered)",
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
        ChunkId::under(&self.protection, plain)
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
            RepoLocation::Dir(dir) => {
                if !dir.is_dir() {
                    bail!("repository {display} does not exist; {}", hint(&display));
                }
                Self::open_store(Arc::new(DirStore::new(dir)), &display)
            }
            RepoLocation::S3(_) => Self::open_store(Arc::new(spec.s3_store()?), &display),
        }
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
        let raw = match store.get_at_most(&Object::Config, MAX_CONFIG_BYTES) {
            Ok(raw) => raw,
            Err(StoreError::NotFound { .. }) => bail!(
                "{display} is not a lifeboat repository (it has no config.json); {}",
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
        let mut stored = self.compress(plain)?;
        match &self.protection {
            Protection::Plain => {}
            Protection::Unlocked(c) => c.seal_chunk(&id.0, &mut stored),
            Protection::Locked => {
                bail!("repository {} is encrypted and not unlocked", self.display)
            }
        }
        Ok(stored)
    }

    /// Compress a chunk as this repository stores it.
    fn compress(&self, plain: &[u8]) -> Result<Vec<u8>> {
        let level = self.config.compression.level;
        COMPRESSOR.with(|c| -> Result<Vec<u8>> {
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

    /// Decompress stored bytes and check that they hash to `id`.
    pub fn decode_chunk(&self, id: &ChunkId, raw: &[u8]) -> Result<Vec<u8>, ChunkError> {
        let corrupt = |reason: String| ChunkError::Corrupt {
            id: *id,
            location: self.chunk_location(id),
            reason,
        };
        let max = self.config.chunker.max_size as usize;
        let opened;
        let raw = match &self.protection {
            Protection::Plain => raw,
            Protection::Unlocked(c) => {
                let mut buf = raw.to_vec();
                c.open_chunk(&id.0, &mut buf)
                    .map_err(|e| corrupt(e.to_string()))?;
                opened = buf;
                &opened[..]
            }
            Protection::Locked => {
                return Err(corrupt("encrypted, and this reader has no key".into()))
            }
        };
        let plain = DECOMPRESSOR
            .with(|d| -> std::io::Result<Vec<u8>> {
                let mut d = d.borrow_mut();
                if d.is_none() {
                    *d = Some(zstd::bulk::Decompressor::new()?);
                }
                d.as_mut().unwrap().decompress(raw, max)
            })
            .map_err(|e| corrupt(format!("zstd: {e}")))?;
        let actual = self.chunk_id(&plain);
        if actual != *id {
            return Err(corrupt(format!("its content hashes to {}", actual.short())));
        }
        Ok(plain)
    }

    /// All chunk ids present in the store.
    /// Format 2: pack files that no index file names.
    pub fn unindexed_packs(&self) -> Result<Vec<String>> {
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

    /// Store a manifest (after its chunks, which must be flushed) and return its id.
    pub fn save_manifest(&self, manifest: &Manifest) -> Result<SnapshotId> {
        manifest
            .validate()
            .context("refusing to save an inconsistent manifest")?;
        let mut data = serde_json::to_vec(manifest)?;
        data.push(b'\n');
        match &self.protection {
            Protection::Plain => {}
            Protection::Unlocked(c) => {
                let packed = zstd::bulk::compress(&data, 3).context("compress the manifest")?;
                data = c.seal(Kind::Manifest, &packed);
            }
            Protection::Locked => {
                bail!("repository {} is encrypted and not unlocked", self.display)
            }
        }
        let id = SnapshotId::of(&data);
        self.flush()?;
        self.store.put(&Object::Snapshot(id), &data)?;
        self.store.flush()?;
        Ok(id)
    }

    /// Load one manifest by full id, verifying that its content still hashes to its name.
    /// It is parsed as it streams in (never held whole), and used only once all of it has
    /// been read and found to hash to its name. A transfer cut on the way is tried again
    /// (twice) on a network store.
    pub fn load_snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        let key = Object::Snapshot(*id);
        let location = self.store.location(&key);
        let attempts = if self.store.is_remote() { 3 } else { 1 };
        let mut attempt = 1;
        let manifest = loop {
            match self.read_manifest(id, &key, &location) {
                Err(ManifestRead::Transfer(e)) if attempt < attempts => {
                    log::info!("{location}: {e:#}; reading it again");
                    attempt += 1;
                }
                Err(ManifestRead::Transfer(e) | ManifestRead::Bad(e)) => return Err(e),
                Ok(m) => break m,
            }
        };
        self.check_manifest(&manifest)
            .with_context(|| format!("snapshot manifest {location} is inconsistent"))?;
        Ok(Snapshot { id: *id, manifest })
    }

    /// Stream, parse and hash one manifest (see `load_snapshot`).
    fn read_manifest(
        &self,
        id: &SnapshotId,
        key: &Object,
        location: &str,
    ) -> Result<Manifest, ManifestRead> {
        let transfer = |e: anyhow::Error| {
            ManifestRead::Transfer(e.context(format!("read snapshot manifest {location}")))
        };
        if self.protection.is_encrypted() {
            return self.read_sealed_manifest(id, key, location);
        }
        let reader = match self.store.open(key, manifest::MAX_MANIFEST_BYTES) {
            Ok(r) => r,
            Err(e @ StoreError::NotFound { .. }) => {
                return Err(ManifestRead::Bad(
                    anyhow::Error::new(e).context("read snapshot manifest"),
                ))
            }
            Err(e) => return Err(transfer(anyhow::Error::new(e))),
        };
        let mut hashing = crate::io::HashingReader::new(reader);
        let parsed: serde_json::Result<Manifest> =
            serde_json::from_reader(std::io::BufReader::with_capacity(256 << 10, &mut hashing));
        if let Err(e) = &parsed {
            if let Some(io) = e.io_error_kind() {
                return Err(transfer(anyhow::anyhow!("{e} ({io})")));
            }
        }
        let (hash, _) = hashing.finish().map_err(|e| transfer(e.into()))?;
        let actual = SnapshotId(*hash.as_bytes());
        if actual != *id {
            return Err(ManifestRead::Bad(anyhow::anyhow!(
                "snapshot manifest {location} is damaged: its content hashes to {}, not to its name (truncated or altered)",
                actual.short()
            )));
        }
        parsed
            .with_context(|| format!("snapshot manifest {location} does not parse"))
            .map_err(ManifestRead::Bad)
    }

    /// Read, check and open a sealed manifest (an encrypted repository): it is read
    /// whole (compressed, at most `MAX_SEALED_MANIFEST_BYTES`), must hash to its name and
    /// open under the key, and is decompressed as it is parsed, never held whole in plain.
    fn read_sealed_manifest(
        &self,
        id: &SnapshotId,
        key: &Object,
        location: &str,
    ) -> Result<Manifest, ManifestRead> {
        let sealed = match self
            .store
            .get_at_most(key, manifest::MAX_SEALED_MANIFEST_BYTES)
        {
            Ok(b) => b,
            Err(e @ StoreError::NotFound { .. }) => {
                return Err(ManifestRead::Bad(
                    anyhow::Error::new(e).context("read snapshot manifest"),
                ))
            }
            Err(e) => {
                return Err(ManifestRead::Transfer(
                    anyhow::Error::new(e).context(format!("read snapshot manifest {location}")),
                ))
            }
        };
        let actual = SnapshotId::of(&sealed);
        if actual != *id {
            return Err(ManifestRead::Bad(anyhow::anyhow!(
                "snapshot manifest {location} is damaged: its content hashes to {}, not to its name (truncated or altered)",
                actual.short()
            )));
        }
        let Some(c) = self.protection.key() else {
            return Err(ManifestRead::Bad(anyhow::anyhow!(
                "snapshot manifest {location} is encrypted, and this reader has no key"
            )));
        };
        let packed = c
            .open(Kind::Manifest, &sealed)
            .map_err(|e| ManifestRead::Bad(anyhow::anyhow!("snapshot manifest {location}: {e}")))?;
        drop(sealed);
        let bad = |e: anyhow::Error| {
            ManifestRead::Bad(e.context(format!("snapshot manifest {location} does not parse")))
        };
        let decoder = zstd::stream::read::Decoder::new(&packed[..]).map_err(|e| bad(e.into()))?;
        let limited = std::io::Read::take(decoder, manifest::MAX_MANIFEST_BYTES);
        serde_json::from_reader(std::io::BufReader::with_capacity(256 << 10, limited))
            .map_err(|e| bad(e.into()))
    }

    /// A manifest holds together (`Manifest::validate`) and fits this repository: it
    /// cannot raise its own chunk limit past the config's (no chunk decompresses past
    /// that, so such a snapshot would fail only once a restore had begun writing).
    pub fn check_manifest(&self, m: &Manifest) -> Result<()> {
        m.validate()?;
        let max = self.config.chunker.max_size;
        let over = m
            .all_regions()
            .flat_map(|r| &r.chunks)
            .find(|c| c.id.is_some() && c.length > max);
        if let Some(c) = over {
            bail!(
                "it names a {}-byte chunk at offset {}, over the repository's maximum of {max} bytes: forged, or from another repository",
                c.length,
                c.offset
            );
        }
        Ok(())
    }

    /// Ids of all stored manifests.
    pub fn snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        Ok(self
            .store
            .objects(&Dir::Snapshots)?
            .into_iter()
            .filter_map(|o| match o {
                Object::Snapshot(id) => Some(id),
                _ => None,
            })
            .collect())
    }

    /// Every snapshot, each loaded or with the error that stopped it, oldest first.
    pub fn snapshots(&self) -> Result<Vec<(SnapshotId, Result<Snapshot>)>> {
        let mut all: Vec<(SnapshotId, Result<Snapshot>)> = self
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
        if let Some(id) = resolve_id(&ids, spec)? {
            return self.load_snapshot(&id);
        }
        let mut newest: Option<Snapshot> = None;
        let mut damaged = Vec::new();
        for (id, s) in self.snapshots()? {
            match s {
                Ok(s) if s.manifest.name == spec => newest = Some(s),
                Ok(_) => {}
                Err(e) => damaged.push(format!("{}: {e:#}", id.short())),
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

/// The id `spec` names among `ids`: itself when it is a full id there, or the one id it
/// is a prefix of (4 hex digits or more, any case). None when it names no id, so that it
/// may still be a snapshot name; an error when a prefix names several.
pub fn resolve_id(ids: &[SnapshotId], spec: &str) -> Result<Option<SnapshotId>> {
    if let Ok(id) = spec.parse::<SnapshotId>() {
        if ids.contains(&id) {
            return Ok(Some(id));
        }
    }
    let lower = spec.to_ascii_lowercase();
    if spec.len() < 4 || !lower.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let matches: Vec<&SnapshotId> = ids
        .iter()
        .filter(|i| i.to_hex().starts_with(&lower))
        .collect();
    match matches.as_slice() {
        [one] => Ok(Some(**one)),
        [] => Ok(None),
        many => bail!(
            "snapshot id prefix {spec} is ambiguous: {} snapshots match",
            many.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunker_settings_out_of_bounds_are_refused() {
        assert!(ChunkerParams::default().validate().is_ok());
        let bad = |f: &dyn Fn(&mut ChunkerParams)| {
            let mut p = ChunkerParams::default();
            f(&mut p);
            p.validate().is_err()
        };
        assert!(bad(&|p| p.avg_size = 0));
        assert!(bad(&|p| p.avg_size = 1 << 31));
        assert!(bad(&|p| p.max_size = u32::MAX));
        assert!(bad(&|p| p.min_size = 0));
        assert!(bad(&|p| p.segment_size = 0));
        assert!(bad(&|p| p.segment_size = (64 << 20) + 1));
        assert!(bad(&|p| p.segment_size = 1 << 40));
        let mut config: serde_json::Value = serde_json::to_value(Config {
            format: REPO_FORMAT.into(),
            version: REPO_VERSION,
            id: "x".into(),
            created: "now".into(),
            chunker: ChunkerParams::default(),
            compression: Compression {
                algorithm: "zstd".into(),
                level: 3,
            },
            signing: None,
            encryption: None,
        })
        .unwrap();
        assert!(Config::parse(config.to_string().as_bytes(), "c", "r").is_ok());
        config["chunker"]["avg_size"] = 0.into();
        let e = Config::parse(config.to_string().as_bytes(), "c", "r").unwrap_err();
        assert!(
            format!("{e:#}").contains("chunker settings are unusable"),
            "{e:#}"
        );
    }

    #[test]
    fn snapshots_are_found_by_full_id_or_unique_prefix() {
        let a = SnapshotId::of(b"a");
        let b = SnapshotId::of(b"b");
        let ids = [a, b];
        assert_eq!(resolve_id(&ids, &a.to_hex()).unwrap(), Some(a));
        assert_eq!(resolve_id(&ids, &b.to_hex()[..6]).unwrap(), Some(b));
        assert_eq!(
            resolve_id(&ids, &b.to_hex()[..6].to_uppercase()).unwrap(),
            Some(b)
        );
        assert_eq!(
            resolve_id(&ids, &a.to_hex()[..3]).unwrap(),
            None,
            "too short"
        );
        assert_eq!(resolve_id(&ids, "web01").unwrap(), None, "a name");
        let unknown = SnapshotId::of(b"c");
        assert_eq!(resolve_id(&ids, &unknown.to_hex()).unwrap(), None);
    }

    #[test]
    fn a_prefix_of_several_is_ambiguous() {
        let mut other = [0xabu8; 32];
        other[31] = 0;
        let ids = [SnapshotId([0xab; 32]), SnapshotId(other)];
        let e = resolve_id(&ids, "abab").unwrap_err().to_string();
        assert!(e.contains("ambiguous: 2 snapshots match"), "{e}");
        assert_eq!(resolve_id(&ids, &ids[1].to_hex()).unwrap(), Some(ids[1]));
    }

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
            .contains("does not exist"));
    }
}
