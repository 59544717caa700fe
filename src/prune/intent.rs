//! Prune intents: before it deletes anything, a prune writes under `prune/` the chunks
//! it will drop and the packs it will remove or rewrite. A capture that begins later
//! reads them and treats those chunks as absent (it stores them again), and a capture
//! that began earlier is waited for (its lease), then its snapshot is counted; one whose
//! lease went stale or was removed checks, before saving its manifest, that every chunk
//! it used without storing is still stored, and fails rather than save a snapshot with
//! missing data.

use std::collections::HashSet;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::repo::object::TimeName;
use crate::repo::{ChunkId, Dir, Object, Repository};

/// An intent lists at most a few million ids.
const MAX_INTENT: u64 = 64 << 20;
const FORMAT: &str = "lifeboat-prune-intent-1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Intent {
    pub format: String,
    /// RFC 3339: when it was written.
    pub time: String,
    pub host: String,
    pub pid: u32,
    /// Packs the prune will delete or rewrite (hex ids).
    pub packs: Vec<String>,
    /// Chunks that will not survive it.
    pub drop: Vec<ChunkId>,
}

impl Intent {
    pub fn new(packs: Vec<String>, drop: Vec<ChunkId>) -> Intent {
        Intent {
            format: FORMAT.into(),
            time: crate::time::now_rfc3339(),
            host: crate::who::hostname(),
            pid: std::process::id(),
            packs,
            drop,
        }
    }
}

/// Write an intent; returns its name.
pub fn write(repo: &Repository, intent: &Intent) -> Result<TimeName> {
    let name = TimeName::new(chrono::Utc::now())?;
    let key = Object::Intent(name.clone());
    let mut data = serde_json::to_vec(intent)?;
    data.push(b'\n');
    repo.store()
        .put(&key, &data)
        .with_context(|| format!("write prune intent {}", repo.store().location(&key)))?;
    repo.store().flush()?;
    Ok(name)
}

/// Every intent, with its name, oldest first.
pub fn list(repo: &Repository) -> Result<Vec<(TimeName, Intent)>> {
    let mut names: Vec<TimeName> = repo
        .store()
        .objects(&Dir::Intents)
        .context("list the prune intents")?
        .into_iter()
        .filter_map(|o| match o {
            Object::Intent(n) => Some(n),
            _ => None,
        })
        .collect();
    names.sort();
    let mut out = Vec::new();
    for n in names {
        let key = Object::Intent(n.clone());
        let raw = match repo.store().get_at_most(&key, MAX_INTENT) {
            Ok(r) => r,
            Err(crate::repo::store::StoreError::NotFound { .. }) => continue,
            Err(e) => return Err(anyhow::Error::new(e).context("read a prune intent")),
        };
        let i: Intent = serde_json::from_slice(&raw)
            .with_context(|| format!("{} is not a prune intent", repo.store().location(&key)))?;
        if i.format != FORMAT {
            bail!(
                "{}: unknown prune intent format {:?}",
                repo.store().location(&key),
                i.format
            );
        }
        out.push((n, i));
    }
    Ok(out)
}

/// The chunks that intents drop: a capture stores these again instead of using them.
pub fn dropped(intents: &[(TimeName, Intent)]) -> HashSet<ChunkId> {
    intents
        .iter()
        .flat_map(|(_, i)| i.drop.iter().copied())
        .collect()
}

/// Before a capture whose lease was not held all along (it went stale, or was removed)
/// saves its manifest: every chunk the manifest names that this capture did not store
/// itself must still be stored, as a fresh look at the index files and packs finds it
/// (a prune may have dropped it without waiting for this capture).
pub fn check_capture(
    repo: &Repository,
    used: impl Iterator<Item = ChunkId>,
    stored: &HashSet<ChunkId>,
) -> Result<()> {
    let fresh = repo.reloaded();
    let reused: HashSet<ChunkId> = used.filter(|c| !stored.contains(c)).collect();
    for c in reused {
        if !fresh.has_chunk(&c)? {
            bail!(
                "chunk {c}, which this capture uses without storing it, is no longer in the repository: a prune ran while this capture's lease was not held; nothing was saved, capture again"
            );
        }
    }
    Ok(())
}
