//! What this machine has seen of each snapshot name: the highest `sequence` among the
//! snapshots of that name in that repository that verified against a trust anchor (as
//! TUF's timestamp role gives a client a version it never goes below). A server that
//! hides the newest signed snapshot of a name and serves an older one is then refused.
//! Kept in `heads.json` in the state directory (`--state-dir`, `LIFEBOAT_STATE_DIR`, else
//! `$XDG_STATE_HOME/lifeboat` or `~/.local/state/lifeboat`); a rescue, which has no
//! state, does without.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The most the file may hold (a few dozen bytes a name).
const MAX_FILE: u64 = 16 << 20;

/// The state directory to use, if any.
pub fn default_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("lifeboat"));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty() && h != "/")?;
    Some(PathBuf::from(home).join(".local/state/lifeboat"))
}

fn file(dir: &Path) -> PathBuf {
    dir.join("heads.json")
}

fn load(dir: &Path) -> Result<BTreeMap<String, u64>> {
    let path = file(dir);
    match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        Ok(m) if !m.is_file() || m.len() > MAX_FILE => {
            bail!("{} is not a heads file", path.display())
        }
        Ok(_) => {}
    }
    let raw = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_slice(&raw).with_context(|| format!("{} does not parse", path.display()))
}

fn key(repository: &str, name: &str) -> String {
    format!("{repository}/{name}")
}

/// The highest sequence seen for `name` in `repository`.
pub fn seen(dir: &Path, repository: &str, name: &str) -> Result<Option<u64>> {
    Ok(load(dir)?.get(&key(repository, name)).copied())
}

/// Remember `sequence` for `name` in `repository` if it is higher than what was seen.
pub fn record(dir: &Path, repository: &str, name: &str, sequence: u64) -> Result<()> {
    let mut heads = load(dir)?;
    let k = key(repository, name);
    if heads.get(&k).is_some_and(|&s| s >= sequence) {
        return Ok(());
    }
    heads.insert(k, sequence);
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let data = serde_json::to_vec_pretty(&heads)?;
    crate::repo::atomic::write_file(&file(dir), &data)
        .with_context(|| format!("write {}", file(dir).display()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn heads_only_go_up() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("state");
        assert_eq!(super::seen(&d, "r", "web").unwrap(), None);
        super::record(&d, "r", "web", 5).unwrap();
        super::record(&d, "r", "web", 3).unwrap();
        super::record(&d, "r", "db", 1).unwrap();
        assert_eq!(super::seen(&d, "r", "web").unwrap(), Some(5));
        assert_eq!(super::seen(&d, "r", "db").unwrap(), Some(1));
        assert_eq!(super::seen(&d, "other", "web").unwrap(), None);
    }
}
