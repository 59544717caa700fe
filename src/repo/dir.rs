//! The directory backend: a repository in a local directory (a disk, a USB stick, an NFS mount).
//!
//! Writes are made durable in batches: each file is written under `tmp/` without an fsync;
//! `flush` (called before any file that refers to others, and whenever the batch grows
//! large) syncs the filesystem once, renames the batch into place and fsyncs the
//! directories. A file's content is thus durable before its name exists, at one sync per
//! batch instead of one per chunk.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};

use super::atomic;
use super::store::{Store, StoreError};

/// Flush by itself once this many bytes wait in `tmp/`: what a killed capture can lose.
const BATCH_BYTES: u64 = 64 << 20;

#[derive(Default)]
struct Pending {
    /// (temporary file, final name, whether it may replace a file of that name)
    renames: Vec<(PathBuf, PathBuf, bool)>,
    bytes: u64,
}

pub struct DirStore {
    root: PathBuf,
    pending: Mutex<Pending>,
    /// Directories known to exist, to spare a mkdir per chunk.
    made_dirs: Mutex<HashSet<PathBuf>>,
    /// Serialises flushes, so a flush returns only when everything before it is durable.
    flushing: Mutex<()>,
}

impl DirStore {
    pub fn new(root: &Path) -> Self {
        DirStore {
            root: root.to_path_buf(),
            pending: Mutex::new(Pending::default()),
            made_dirs: Mutex::new(HashSet::new()),
            flushing: Mutex::new(()),
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
        }
        self.made_dirs.lock().unwrap().insert(dir.to_path_buf());
        Ok(())
    }
}

/// Open a regular file of at most `limit` bytes: a symlink, FIFO or device where a
/// repository file should be is refused before it is read (it could point anywhere,
/// block, or never end); no more is read than the file's size when opened.
fn open_regular(path: &Path, limit: u64) -> std::io::Result<(std::io::Take<File>, u64)> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(nix::libc::ELOOP) => std::io::Error::other(
                "a symbolic link, where a repository holds regular files only",
            ),
            _ => e,
        })?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other(
            "not a regular file (a FIFO, device or directory), where a repository holds regular files only",
        ));
    }
    if meta.len() > limit {
        return Err(std::io::Error::other(format!(
            "{} bytes, larger than the {limit} such a file may hold",
            meta.len()
        )));
    }
    Ok((f.take(meta.len()), meta.len()))
}

/// Read a regular file whole (see `open_regular`).
fn read_regular(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let (mut f, len) = open_regular(path, limit)?;
    let mut data = Vec::with_capacity(len as usize);
    f.read_to_end(&mut data)?;
    Ok(data)
}

fn store_error(path: &Path, e: std::io::Error) -> StoreError {
    let location = path.display().to_string();
    if e.kind() == ErrorKind::NotFound {
        StoreError::NotFound { location }
    } else {
        StoreError::Other {
            location,
            cause: anyhow::Error::new(e).context("read"),
        }
    }
}

impl DirStore {
    /// Write `key` through a temporary file, renamed into place at the next flush: never
    /// over an existing file unless `replace`.
    fn write(&self, key: &str, data: &[u8], replace: bool) -> Result<()> {
        let path = self.path(key);
        self.ensure_dir(path.parent().expect("keys have a parent"))?;
        let tmp_dir = self.tmp_dir();
        self.ensure_dir(&tmp_dir)?;
        let tmp = tmp_dir.join(atomic::temp_name("w"));
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .and_then(|mut f| f.write_all(data))
            .with_context(|| format!("write {}", tmp.display()));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        let full = {
            let mut p = self.pending.lock().unwrap();
            p.renames.push((tmp, path, replace));
            p.bytes += data.len() as u64;
            p.bytes >= BATCH_BYTES
        };
        if full {
            self.flush()?;
        }
        Ok(())
    }
}

impl Store for DirStore {
    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        self.get_at_most(key, u64::MAX)
    }

    fn get_at_most(&self, key: &str, limit: u64) -> Result<Vec<u8>, StoreError> {
        let path = self.path(key);
        read_regular(&path, limit).map_err(|e| store_error(&path, e))
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        use std::os::unix::fs::FileExt;
        let path = self.path(key);
        let (f, size) = open_regular(&path, u64::MAX).map_err(|e| store_error(&path, e))?;
        if offset.checked_add(len).is_none_or(|e| e > size) {
            return Err(StoreError::Other {
                location: path.display().to_string(),
                cause: anyhow::anyhow!("{size} bytes, too short for {len} bytes at {offset}"),
            });
        }
        let mut buf = vec![0u8; len as usize];
        f.get_ref()
            .read_exact_at(&mut buf, offset)
            .map_err(|e| store_error(&path, e))?;
        Ok(buf)
    }

    fn open(&self, key: &str, limit: u64) -> Result<Box<dyn Read + Send + '_>, StoreError> {
        let path = self.path(key);
        let (f, _) = open_regular(&path, limit).map_err(|e| store_error(&path, e))?;
        Ok(Box::new(f))
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
        self.write(key, data, false)
    }

    fn replace(&self, key: &str, data: &[u8]) -> Result<()> {
        self.write(key, data, true)?;
        self.flush()
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("delete {}", path.display())),
        }
        let dir = path.parent().context("a key has a directory")?;
        super::atomic::sync_dir(dir)
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
            // Only what a reader would read: regular files, and directories (the chunk
            // fan-out). A symlink or FIFO among them is as good as absent.
            let kind = entry
                .file_type()
                .with_context(|| format!("list {}", path.display()))?;
            if !(kind.is_file() || kind.is_dir()) {
                log::warn!("{} is not a regular file; ignored", entry.path().display());
                continue;
            }
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    fn flush(&self) -> Result<()> {
        let _one_at_a_time = self.flushing.lock().unwrap();
        let batch = std::mem::take(&mut *self.pending.lock().unwrap());
        if batch.renames.is_empty() {
            return Ok(());
        }
        // 1. Contents durable: one syncfs for the whole batch.
        let root =
            File::open(&self.root).with_context(|| format!("open {}", self.root.display()))?;
        nix::unistd::syncfs(root.as_raw_fd())
            .with_context(|| format!("syncfs {}", self.root.display()))?;
        // 2. Names: rename each into place, then fsync every directory that gained one.
        let mut dirs = HashSet::new();
        for (tmp, dest, replace) in &batch.renames {
            if *replace {
                fs::rename(tmp, dest)
            } else {
                atomic::place_new(tmp, dest).map(|_| ())
            }
            .with_context(|| format!("rename {} to {}", tmp.display(), dest.display()))?;
            // The directory that gained the name, and its parent inside the repository
            // (which gained the directory, when it is a new chunk fan-out).
            let dir = dest.parent().unwrap().to_path_buf();
            if let Some(parent) = dir
                .parent()
                .filter(|p| p.starts_with(&self.root) && *p != dir)
            {
                dirs.insert(parent.to_path_buf());
            }
            dirs.insert(dir);
        }
        let mut dirs: Vec<PathBuf> = dirs.into_iter().collect();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            atomic::sync_dir(&d)?;
        }
        Ok(())
    }

    fn location(&self, key: &str) -> String {
        self.path(key).display().to_string()
    }

    fn clean_stale(&self) -> Result<usize> {
        let host = atomic::host();
        let mut n = 0;
        for name in self.list("tmp")? {
            if atomic::is_stale_temp(&name, &host) {
                let p = self.tmp_dir().join(&name);
                match fs::remove_file(&p) {
                    Ok(()) => n += 1,
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(e).with_context(|| format!("remove {}", p.display())),
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_is_never_replaced_but_the_config_may_be() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path());
        store.put("snapshots/a.json", b"first").unwrap();
        store.flush().unwrap();
        store.put("snapshots/a.json", b"second").unwrap();
        store.flush().unwrap();
        assert_eq!(store.get("snapshots/a.json").unwrap(), b"first");
        assert_eq!(
            fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0,
            "the refused temporary file is gone"
        );
        store.put("config.json", b"v1").unwrap();
        store.replace("config.json", b"v2").unwrap();
        assert_eq!(store.get("config.json").unwrap(), b"v2");
    }
}
