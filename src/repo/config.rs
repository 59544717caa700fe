//! A repository's config (`config.json`): its format and version, its id, how it cuts
//! and compresses chunks, and, when it is encrypted or wants signatures, how. It is
//! outside input: every setting is checked before anything is sized by it.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

pub const REPO_FORMAT: &str = "lifeboat-repository";
/// The version `init` writes: 1 keeps a file per chunk, 2 packs them (`chunks::Layout`).
pub const REPO_VERSION: u32 = 2;
/// The versions this build reads and writes.
pub const REPO_VERSIONS: [u32; 2] = [1, 2];
/// A config is a few hundred bytes; more is not a config.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

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
}
