//! Protected snapshots: a marker object `protected/<snapshot id>` that `forget` (and
//! prune) never goes past. Adding one needs only the right to add objects; removing one
//! is a deletion (the admin token of `serve`).

use std::collections::HashSet;

use anyhow::{Context, Result};

use super::{Dir, Object, Repository, SnapshotId};

/// A marker holds a line of JSON (who and when), at most this much.
pub const MAX_MARKER: u64 = 4096;

/// The protected snapshots.
pub fn list(repo: &Repository) -> Result<HashSet<SnapshotId>> {
    Ok(repo
        .store()
        .objects(&Dir::Protected)
        .context("list the protected snapshots")?
        .into_iter()
        .filter_map(|o| match o {
            Object::Protected(id) => Some(id),
            _ => None,
        })
        .collect())
}

/// Protect a snapshot.
pub fn add(repo: &Repository, id: &SnapshotId) -> Result<()> {
    let marker = serde_json::json!({
        "snapshot": id,
        "time": crate::time::now_rfc3339(),
        "host": crate::who::hostname(),
    });
    let mut data = serde_json::to_vec(&marker)?;
    data.push(b'\n');
    let marker = Object::Protected(*id);
    repo.store()
        .put(&marker, &data)
        .with_context(|| format!("write {}", repo.store().location(&marker)))?;
    repo.store().flush()
}

/// Remove a snapshot's protection.
pub fn remove(repo: &Repository, id: &SnapshotId) -> Result<()> {
    let marker = Object::Protected(*id);
    repo.store()
        .delete(&marker)
        .with_context(|| format!("remove {}", repo.store().location(&marker)))?;
    repo.store().flush()
}
