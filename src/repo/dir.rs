//! The directory backend: a repository in a local directory (a disk, a USB stick, an NFS mount).

use std::collections::HashSet;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};

use super::atomic;
use super::store::{Store, StoreError};

pub struct DirStore {
    root: PathBuf,
    /// Directories that received a rename since the last flush.
    dirty_dirs: Mutex<HashSet<PathBuf>>,
    /// Directories known to exist, to spare a mkdir per chunk.
    made_dirs: Mutex<HashSet<PathBuf>>,
}

impl DirStore {
    pub fn new(root: &Path) -> Self {
        DirStore {
            root: root.to_path_buf(),
            dirty_dirs: Mutex::new(HashSet::new()),
            made_dirs: Mutex::new(HashSet::new()),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn ensure_dir(&self, dir: &Path) -> Result<()> {
        if self.made_dirs.lock().unwrap().contains(dir) {
            return Ok(());
        }
        if !dir.is_dir() {
            fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
            if let Some(parent) = dir.parent() {
                self.dirty_dirs.lock().unwrap().insert(parent.to_path_buf());
            }
        }
        self.made_dirs.lock().unwrap().insert(dir.to_path_buf());
        Ok(())
    }
}

impl Store for DirStore {
    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.path(key);
        fs::read(&path).map_err(|e| {
            let location = path.display().to_string();
            if e.kind() == ErrorKind::NotFound {
                StoreError::NotFound { location }
            } else {
                StoreError::Other {
                    location,
                    source: anyhow::Error::new(e).context("read"),
                }
            }
        })
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        let path = self.path(key);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("stat {}", path.display())),
        }
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        let path = self.path(key);
        let dir = path.parent().expect("keys have a parent").to_path_buf();
        self.ensure_dir(&dir)?;
        let tmp = self.tmp_dir();
        self.ensure_dir(&tmp)?;
        atomic::write_file(&tmp, &path, data, false)?;
        self.dirty_dirs.lock().unwrap().insert(dir);
        Ok(())
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        let path = self.path(dir);
        let rd = match fs::read_dir(&path) {
            Ok(rd) => rd,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("list {}", path.display())),
        };
        let mut names = Vec::new();
        for entry in rd {
            let entry = entry.with_context(|| format!("list {}", path.display()))?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    fn flush(&self) -> Result<()> {
        let dirs: Vec<PathBuf> = self.dirty_dirs.lock().unwrap().drain().collect();
        // Deepest first, so a new fan-out directory's entry is durable after its contents.
        let mut dirs = dirs;
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            atomic::sync_dir(&d)?;
        }
        Ok(())
    }

    fn location(&self, key: &str) -> String {
        self.path(key).display().to_string()
    }
}
