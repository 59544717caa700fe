//! Atomic file writes: temporary file in the repository's `tmp/`, fsync, rename, fsync the directory.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name for a temporary file that no other writer (thread or process) uses.
pub fn temp_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}.tmp", std::process::id())
}

/// Write `data` to `dest` atomically: a reader sees either no file or the whole file.
/// `tmp_dir` must be on the same filesystem as `dest`. When `sync_dir` is false the caller
/// takes on fsyncing `dest`'s directory before anything that depends on the file is written.
pub fn write_file(tmp_dir: &Path, dest: &Path, data: &[u8], sync_dir: bool) -> Result<()> {
    let tmp = tmp_dir.join(temp_name("w"));
    let result = (|| -> Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .with_context(|| format!("create {}", tmp.display()))?;
        f.write_all(data)
            .with_context(|| format!("write {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("fsync {}", tmp.display()))?;
        drop(f);
        fs::rename(&tmp, dest)
            .with_context(|| format!("rename {} to {}", tmp.display(), dest.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    if sync_dir {
        sync_dir_of(dest)?;
    }
    Ok(())
}

/// fsync the directory holding `path`, so that a rename into it is durable.
pub fn sync_dir_of(path: &Path) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    sync_dir(dir)
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsync directory {}", dir.display()))
}
