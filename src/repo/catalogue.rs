//! The snapshot catalogue: manifests stored under their ids (after the chunks they
//! name), read back verified against their names (streamed, never held whole), listed
//! and found by id, id prefix or name.

use anyhow::{bail, Context, Result};

use super::Dir;
use super::{manifest, Manifest, Object, Repository, SnapshotId, StoreError};
use crate::crypt::{Kind, Protection};

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

impl Repository {
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
            None if is_short_prefix(&ids, spec) => bail!(
                "no snapshot named {spec:?} in {}; an id prefix needs at least 4 hex digits \
                 (`lifeboat snapshots` shows 8)",
                self.display
            ),
            None => bail!(
                "no snapshot named or with id {spec:?} in {} (see `lifeboat snapshots`)",
                self.display
            ),
        }
    }
}

/// Whether `spec` is 1 to 3 hex digits that begin some snapshot's id: a prefix too short
/// to name one.
fn is_short_prefix(ids: &[SnapshotId], spec: &str) -> bool {
    let lower = spec.to_ascii_lowercase();
    (1..4).contains(&spec.len())
        && lower.bytes().all(|b| b.is_ascii_hexdigit())
        && ids.iter().any(|i| i.to_hex().starts_with(&lower))
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
}
