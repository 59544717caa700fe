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
use super::object::{Dir, Object};
use super::store::{Store, StoreError};

/// The directory of temporary files, in the repository's root.
const TMP_DIR: &str = "tmp";
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

    /// Where its temporary files are (never an object's directory).
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join(TMP_DIR)
    }

    /// Where an object's file is.
    pub fn path(&self, object: &Object) -> PathBuf {
        self.root.join(object.key())
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
    /// The names of the regular files and directories in `path`; none when it is absent.
    fn list_path(&self, path: &Path) -> Result<Vec<String>> {
        let rd = match fs::read_dir(path) {
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

    /// Write an object through a temporary file, renamed into place at the next flush:
    /// never over an existing file unless `replace`.
    fn write(&self, object: &Object, data: &[u8], replace: bool) -> Result<()> {
        let path = self.path(object);
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

/// A body written to a temporary file under the repository's `tmp/`, synced, with its
/// BLAKE3 hash; removed when dropped unless it was placed.
#[derive(Debug)]
pub struct Spooled {
    path: PathBuf,
    hash: blake3::Hash,
}

impl Spooled {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn hash(&self) -> &blake3::Hash {
        &self.hash
    }
}

impl Drop for Spooled {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

impl DirStore {
    /// Write `len` bytes of `r` to a new temporary file, hashing them on the way, and
    /// sync it: an object that may be large (a manifest, a pack) on its way in.
    pub fn spool(&self, r: &mut impl Read, len: u64) -> Result<Spooled> {
        let dir = self.tmp_dir();
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let path = dir.join(atomic::temp_name("put"));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("create {}", path.display()))?;
        let mut spooled = Spooled {
            path,
            hash: blake3::Hash::from_bytes([0; 32]),
        };
        let mut body = crate::io::HashingReader::new(r.take(len));
        let n = std::io::copy(&mut body, &mut file)
            .and_then(|n| file.sync_all().map(|_| n))
            .with_context(|| format!("write {}", spooled.path.display()))?;
        anyhow::ensure!(n == len, "the body ended early");
        spooled.hash = body.finish()?.0;
        Ok(spooled)
    }

    /// Rename a spooled file to `object`'s name and make the rename durable. Never over
    /// an object that is there: its name is its content's hash, so the one there is the
    /// same (or damaged, which check reports; a PUT does not repair it).
    pub fn place(&self, spooled: &Spooled, object: &Object) -> Result<()> {
        let path = self.path(object);
        let dir = path.parent().context("an object has a directory")?;
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        atomic::place_new(&spooled.path, &path)
            .with_context(|| format!("rename {} to {}", spooled.path.display(), path.display()))?;
        atomic::sync_dir(dir)
    }
}

impl Store for DirStore {
    fn get(&self, object: &Object) -> Result<Vec<u8>, StoreError> {
        self.get_at_most(object, u64::MAX)
    }

    fn get_at_most(&self, object: &Object, limit: u64) -> Result<Vec<u8>, StoreError> {
        let path = self.path(object);
        read_regular(&path, limit).map_err(|e| store_error(&path, e))
    }

    fn get_range(&self, object: &Object, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        use std::os::unix::fs::FileExt;
        let path = self.path(object);
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

    fn open(&self, object: &Object, limit: u64) -> Result<Box<dyn Read + Send + '_>, StoreError> {
        let path = self.path(object);
        let (f, _) = open_regular(&path, limit).map_err(|e| store_error(&path, e))?;
        Ok(Box::new(f))
    }

    fn size(&self, object: &Object) -> Result<Option<u64>> {
        let path = self.path(object);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("stat {}", path.display())),
        }
    }

    fn put(&self, object: &Object, data: &[u8]) -> Result<()> {
        self.write(object, data, false)
    }

    fn replace(&self, object: &Object, data: &[u8]) -> Result<()> {
        self.write(object, data, true)?;
        self.flush()
    }

    fn delete(&self, object: &Object) -> Result<()> {
        let path = self.path(object);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("delete {}", path.display())),
        }
        let dir = path.parent().context("a key has a directory")?;
        super::atomic::sync_dir(dir)
    }

    fn list(&self, dir: &Dir) -> Result<Vec<String>> {
        self.list_path(&self.root.join(dir.path()))
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

    fn location(&self, object: &Object) -> String {
        self.path(object).display().to_string()
    }

    fn dir_location(&self, dir: &Dir) -> String {
        format!("{}/", self.root.join(dir.path()).display())
    }

    fn clean_stale(&self) -> Result<usize> {
        let host = atomic::host();
        let mut n = 0;
        for name in self.list_path(&self.tmp_dir())? {
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
        let a = Object::Snapshot(crate::repo::SnapshotId::of(b"a"));
        store.put(&a, b"first").unwrap();
        store.flush().unwrap();
        store.put(&a, b"second").unwrap();
        store.flush().unwrap();
        assert_eq!(store.get(&a).unwrap(), b"first");
        assert_eq!(
            fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0,
            "the refused temporary file is gone"
        );
        store.put(&Object::Config, b"v1").unwrap();
        store.replace(&Object::Config, b"v2").unwrap();
        assert_eq!(store.get(&Object::Config).unwrap(), b"v2");
    }
}
