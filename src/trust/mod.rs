//! Trust in snapshots: the signature objects kept beside manifests (`signature`), what a
//! reader requires before it uses a snapshot (`policy`), and the newest signed snapshot
//! of each name this machine has seen (`heads`). The signing keys themselves are
//! `crypt::signing`'s: never the repository's encryption key, one per capturing host or
//! stick.

pub mod heads;
pub mod policy;
pub mod signature;

use anyhow::{Context, Result};

pub use policy::{AnchorSource, Policy, TrustArgs, Verdict};

use crate::crypt::signing::SigningKey;
use crate::repo::id::SnapshotId;
use crate::repo::{Object, Repository};

/// Sign a stored snapshot: the signature object is written after the manifest it
/// names, and never replaces another (one object per key).
pub fn sign(repo: &Repository, id: &SnapshotId, key: &SigningKey) -> Result<()> {
    let object = Object::Signature(*id, key.public().id());
    let file = signature::SignatureFile::sign(id, key);
    repo.store()
        .put(&object, &file.to_bytes())
        .with_context(|| format!("write signature {}", repo.store().location(&object)))?;
    repo.store().flush()
}
