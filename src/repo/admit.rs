//! What a repository directory accepts from a writer it does not trust (a server's PUT):
//! each kind of object is checked against its name and its rules before it is placed,
//! and data goes before what names it (a manifest only once its chunks are stored, an
//! index file only once its packs are). The server routes; these are the rules. An
//! encrypted repository's server holds no key: it checks names and shapes only. The
//! journal's records and the signatures beside manifests are checked by their owners
//! (`journal::admit`, `trust::signature::admit`) through [`Admission::small`].

use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};

use super::dir::{DirStore, Spooled};
use super::keyfile::{KeyFile, KeyFileId};
use super::pack::PackId;
use super::{ChunkId, IndexId, Manifest, Object, Repository, SnapshotId};
use crate::crypt::Kind;

/// An object accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// Stored now.
    Stored,
    /// The very same object was there already.
    AlreadyStored,
}

/// Why an object is not stored. A server tells the cases apart (422, 409, 500).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// It is not what its name and kind say.
    #[error("{0}")]
    Invalid(String),
    /// Something it names is not stored yet, or an object of its name holds other
    /// content: data goes first, and objects are never replaced.
    #[error("{0}")]
    Conflict(String),
    /// It could not be checked or stored.
    #[error("{0:#}")]
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Refusal {
    fn from(e: anyhow::Error) -> Refusal {
        Refusal::Failed(e)
    }
}

/// A repository directory taking objects from writers.
pub struct Admission {
    repo: Repository,
    files: Arc<DirStore>,
}

impl Admission {
    /// The repository in `dir`, opened without its key.
    pub fn open(dir: &Path) -> Result<Admission> {
        let (repo, files) = Repository::open_dir(dir)?;
        Ok(Admission { repo, files })
    }

    pub fn repo(&self) -> &Repository {
        &self.repo
    }

    /// The directory's files: where an object lives, and its temporary files.
    pub fn files(&self) -> &DirStore {
        &self.files
    }

    /// A chunk (format 1): it must decompress to the bytes its name promises.
    pub fn chunk(&self, id: &ChunkId, body: &[u8]) -> Result<Admitted, Refusal> {
        if let Err(e) = self.repo.decode_chunk(id, body) {
            return Err(Refusal::Invalid(e.to_string()));
        }
        self.repo.store().put(&Object::Chunk(*id), body)?;
        Ok(Admitted::Stored)
    }

    /// A manifest: it must hash to its name, parse (as it streams from its file), hold
    /// together and name only chunks already stored; then it is placed, after the chunks
    /// it names are durable.
    pub fn manifest(&self, id: &SnapshotId, body: &Spooled) -> Result<Admitted, Refusal> {
        let actual = SnapshotId(*body.hash().as_bytes());
        if actual != *id {
            return Err(Refusal::Invalid(format!(
                "the manifest hashes to {actual}, not to its name"
            )));
        }
        let object = Object::Snapshot(*id);
        if self.repo.is_encrypted() {
            // Sealed: this server has no key. It checks the name (above) and the shape;
            // the writer orders its data before it (readers check the rest).
            return self.sealed(body, Kind::Manifest, &object);
        }
        let parsed = std::fs::File::open(body.path()).map(|f| {
            serde_json::from_reader::<_, Manifest>(BufReader::with_capacity(256 << 10, f))
        });
        let m = match parsed {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                return Err(Refusal::Invalid(format!(
                    "the manifest does not parse: {e}"
                )))
            }
            Err(e) => return Err(read_failed(body, e)),
        };
        if let Err(e) = self.repo.check_manifest(&m) {
            return Err(Refusal::Invalid(format!(
                "the manifest is inconsistent: {e:#}"
            )));
        }
        // Chunks before the manifest: make the pushed chunks durable, then insist on all.
        self.repo.store().flush()?;
        for c in m.chunk_ids() {
            if !self.repo.has_chunk(&c)? {
                return Err(Refusal::Conflict(format!(
                    "chunk {c} is not stored; push it first"
                )));
            }
        }
        self.files.place(body, &object)?;
        Ok(Admitted::Stored)
    }

    /// A pack: it must hash to its name, its trailer hold, and every chunk in it
    /// decompress to its stated length and hash to its id; only then is it placed.
    pub fn pack(&self, id: &PackId, body: &Spooled) -> Result<Admitted, Refusal> {
        if body.hash().as_bytes() != &id.0 {
            return Err(Refusal::Invalid(format!(
                "the pack hashes to {}, not to its name",
                body.hash().to_hex()
            )));
        }
        let f = std::fs::File::open(body.path()).map_err(|e| read_failed(body, e))?;
        if let Err(e) = self.repo.verify_pack(&f) {
            return Err(Refusal::Invalid(format!("{e:#}")));
        }
        self.files.place(body, &Object::Pack(*id))?;
        self.repo.note_pack_stored(id);
        Ok(Admitted::Stored)
    }

    /// An index file: it must hash to its name and parse, and every pack it names must
    /// be stored already at the length it gives (data before what names it); then this
    /// server's own index learns it.
    pub fn index(&self, id: &IndexId, body: &Spooled) -> Result<Admitted, Refusal> {
        if body.hash().as_bytes() != &id.0 {
            return Err(Refusal::Invalid(format!(
                "the index hashes to {}, not to its name",
                body.hash().to_hex()
            )));
        }
        let data = std::fs::read(body.path()).map_err(|e| read_failed(body, e))?;
        let object = Object::Index(*id);
        if self.repo.is_encrypted() {
            return self.sealed(body, Kind::Index, &object);
        }
        let packs = self
            .repo
            .parse_index(&data)
            .map_err(|e| Refusal::Invalid(format!("the index file is malformed: {e}")))?;
        self.repo.store().flush()?;
        for p in &packs {
            if !self.repo.pack_present(&p.id, p.len)? {
                return Err(Refusal::Conflict(format!(
                    "pack {} is not stored; push it first",
                    p.id
                )));
            }
        }
        self.files.place(body, &object)?;
        self.repo.learn_index(&packs);
        Ok(Admitted::Stored)
    }

    /// A sealed object of an encrypted repository: it hashes to its name (checked by the
    /// caller) and is shaped as a sealed object of its kind.
    fn sealed(&self, body: &Spooled, kind: Kind, object: &Object) -> Result<Admitted, Refusal> {
        let mut head = vec![0u8; crate::crypt::ENVELOPE_OVERHEAD];
        let read = std::fs::File::open(body.path())
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head));
        if read.is_err() {
            return Err(Refusal::Invalid("shorter than a sealed object".into()));
        }
        if let Err(e) = crate::crypt::check_envelope(kind, &head) {
            return Err(Refusal::Invalid(e.to_string()));
        }
        self.repo.store().flush()?;
        self.files.place(body, object)?;
        Ok(Admitted::Stored)
    }

    /// A key file: named by its hash, and a key file.
    pub fn key_file(&self, id: &KeyFileId, body: &[u8]) -> Result<Admitted, Refusal> {
        if KeyFile::name(body) != *id {
            return Err(Refusal::Invalid(
                "the key file does not hash to its name".into(),
            ));
        }
        if let Err(e) = KeyFile::parse(body) {
            return Err(Refusal::Invalid(format!("not a key file: {e}")));
        }
        self.small(&Object::KeyFile(*id), body)
    }

    /// A protection marker, of a stored snapshot.
    pub fn protected(&self, id: &SnapshotId, body: &[u8]) -> Result<Admitted, Refusal> {
        self.require(&Object::Snapshot(*id), || {
            format!("snapshot {id} is not stored")
        })?;
        self.small(&Object::Protected(*id), body)
    }

    /// A lease or a prune intent: a JSON object.
    pub fn json(&self, object: &Object, body: &[u8]) -> Result<Admitted, Refusal> {
        if serde_json::from_slice::<serde_json::Value>(body).is_err() {
            return Err(Refusal::Invalid("not JSON".into()));
        }
        self.small(object, body)
    }

    /// That `object` is stored (what another names must be there first); the refusal
    /// says `missing` otherwise.
    pub fn require(
        &self,
        object: &Object,
        missing: impl FnOnce() -> String,
    ) -> Result<(), Refusal> {
        match self.repo.store().has(object)? {
            true => Ok(()),
            false => Err(Refusal::Conflict(missing())),
        }
    }

    /// The object stored under `object` now, if any (an object is never replaced: a
    /// second writer of the same is told so).
    pub fn existing(&self, object: &Object) -> Option<Vec<u8>> {
        self.repo.store().get(object).ok()
    }

    /// Write a small object, checked already, whole and durably.
    pub fn small(&self, object: &Object, body: &[u8]) -> Result<Admitted, Refusal> {
        self.repo.store().put(object, body)?;
        self.repo.store().flush()?;
        Ok(Admitted::Stored)
    }

    /// Delete an object (what only the admin may ask); false when it is not there.
    pub fn delete(&self, object: &Object) -> Result<bool> {
        if !self.repo.store().has(object)? {
            return Ok(false);
        }
        self.repo.store().delete(object)?;
        log::warn!("deleted {object}");
        Ok(true)
    }

    /// Make the last writes durable (the server is stopping).
    pub fn flush(&self) -> Result<()> {
        self.repo
            .store()
            .flush()
            .context("make the last writes durable")
    }
}

fn read_failed(body: &Spooled, e: std::io::Error) -> Refusal {
    Refusal::Failed(anyhow::anyhow!("read {}: {e}", body.path().display()))
}
