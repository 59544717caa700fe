//! The `Store` trait: the immutable objects (config, manifests, packs, ...) a repository
//! lives in, each named by an [`Object`] and listed by a [`Dir`]. Backends implement only
//! get/size/put/list; verification of what is read belongs to the repository layer above.

use anyhow::Result;

use super::object::{Dir, Object};

/// Why a file could not be read from a store. Callers tell "missing" apart from the rest.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{location} does not exist")]
    NotFound { location: String },
    /// The cause is part of the message (and not also a `source`, which would print it
    /// twice in an error chain).
    #[error("{location}: {cause:#}")]
    Other {
        location: String,
        cause: anyhow::Error,
    },
}

/// The error for a file over the size its kind may have.
pub fn too_large(location: String, limit: u64) -> StoreError {
    StoreError::Other {
        location,
        cause: anyhow::anyhow!("larger than the {limit} bytes such a file may hold"),
    }
}

pub trait Store: Send + Sync {
    /// Read a whole object.
    fn get(&self, object: &Object) -> Result<Vec<u8>, StoreError>;
    /// Read a whole file of at most `limit` bytes; a larger one is an error, found without
    /// reading it whole where the backend can tell its size first.
    fn get_at_most(&self, object: &Object, limit: u64) -> Result<Vec<u8>, StoreError> {
        let data = self.get(object)?;
        if data.len() as u64 > limit {
            return Err(too_large(self.location(object), limit));
        }
        Ok(data)
    }
    /// Read `len` bytes at `offset` of a file (a chunk in a pack). A file shorter than
    /// that is an error.
    fn get_range(&self, object: &Object, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        let data = self.get(object)?;
        let end = offset.checked_add(len).filter(|&e| e <= data.len() as u64);
        match end {
            Some(e) => Ok(data[offset as usize..e as usize].to_vec()),
            None => Err(StoreError::Other {
                location: self.location(object),
                cause: anyhow::anyhow!(
                    "{} bytes, too short for {len} bytes at {offset}",
                    data.len()
                ),
            }),
        }
    }
    /// Open a file of at most `limit` bytes to stream it (a manifest, parsed as it
    /// arrives instead of held whole); reading past `limit` fails with `InvalidData`.
    fn open(
        &self,
        object: &Object,
        limit: u64,
    ) -> Result<Box<dyn std::io::Read + Send + '_>, StoreError> {
        Ok(Box::new(std::io::Cursor::new(
            self.get_at_most(object, limit)?,
        )))
    }
    /// The file's size, or None when it does not exist.
    fn size(&self, object: &Object) -> Result<Option<u64>>;
    /// Does the object exist?
    fn has(&self, object: &Object) -> Result<bool> {
        Ok(self.size(object)?.is_some())
    }
    /// Write a whole new file atomically: readers see nothing or the complete file. A
    /// repository object is never replaced: names are content hashes (or unique), so a
    /// file that exists already is kept as it is. (A local directory enforces this with
    /// `renameat2(RENAME_NOREPLACE)`; `lifeboat serve` likewise; on S3 it takes a bucket
    /// policy, see the README.)
    fn put(&self, object: &Object, data: &[u8]) -> Result<()>;
    /// Replace a file atomically (`config.json` only, when `migrate` moves a repository
    /// forward), durably.
    fn replace(&self, object: &Object, data: &[u8]) -> Result<()> {
        self.put(object, data)?;
        self.flush()
    }
    /// Delete a file, durably (`key remove`; later prune). Deleting what is absent is
    /// not an error. Only the admin of a store may: `lifeboat serve` wants its admin
    /// token, and an S3 key with only the rights to add objects is refused.
    fn delete(&self, object: &Object) -> Result<()> {
        anyhow::bail!("{}: this store cannot delete", self.location(object))
    }
    /// Whether this client may write at all (an HTTP repository without a token may not).
    fn writable(&self) -> bool {
        true
    }
    /// Names of the entries directly under `dir` (not recursive: `Dir::Packs` lists its
    /// fans), as stored; empty when `dir` is absent.
    fn list(&self, dir: &Dir) -> Result<Vec<String>>;
    /// The objects directly under `dir` (entries that name none are passed over).
    fn objects(&self, dir: &Dir) -> Result<Vec<Object>> {
        Ok(self
            .list(dir)?
            .iter()
            .filter_map(|n| dir.entry(n))
            .collect())
    }
    /// Make every `put` so far durable. Must be called before writing a file that refers to
    /// earlier ones (a manifest after its chunks).
    fn flush(&self) -> Result<()>;
    /// Where an object lives, for messages: a path or a URL.
    fn location(&self, object: &Object) -> String;
    /// Where a directory lives, for messages.
    fn dir_location(&self, dir: &Dir) -> String;
    /// Delete temporary files that writers which are no longer running left behind;
    /// returns how many. Backends without temporary files have nothing to do.
    fn clean_stale(&self) -> Result<usize> {
        Ok(0)
    }
    /// Whether reads cross a network (where a chunk that fails verification is fetched
    /// again before it is called corrupt: the damage may have happened on the way).
    fn is_remote(&self) -> bool {
        false
    }
    /// Whether the store has been seen to answer a ranged read with the whole file (a
    /// web server without Range support): readers then read what they need whole, once.
    fn ignores_ranges(&self) -> bool {
        false
    }
    /// Requests sent so far, for a network store.
    fn requests(&self) -> Option<u64> {
        None
    }
    /// How many requests this store wants in flight at once: one per core for a local
    /// disk; a network store says more, since each request mostly waits.
    fn concurrency(&self) -> usize {
        crate::io::parallel::cores()
    }
}
