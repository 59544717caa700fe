//! Pieces of atomic writes: unique temporary names, renames that never replace, and
//! directory fsyncs.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// This host's name, as temporary file names carry it.
pub fn host() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().replace(['-', '/'], "_"))
        .unwrap_or_else(|_| "unknown".into())
}

/// A name for a temporary file that no other writer (thread, process or host) uses:
/// `w-<host>-<pid>-<n>.tmp`.
pub fn temp_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{}-{n}.tmp", host(), std::process::id())
}

/// Whether a temporary file was left by a writer on this host that is no longer running.
pub fn is_stale_temp(name: &str, host: &str) -> bool {
    let parts: Vec<&str> = name.trim_end_matches(".tmp").split('-').collect();
    if parts.len() != 4 || parts[1] != host {
        return false;
    }
    let Ok(pid) = parts[2].parse::<i32>() else {
        return false;
    };
    pid != std::process::id() as i32
        && matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        )
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsync directory {}", dir.display()))
}

/// Write a whole file atomically: a temporary file beside it, fsync, rename, fsync the
/// directory. Readers see the old content or the new, never a part.
pub fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = dir.join(temp_name(".w"));
    let result = (|| {
        let mut f = File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
        f.write_all(data)
            .and_then(|_| f.sync_all())
            .with_context(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("rename {} to {}", tmp.display(), path.display()))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Move a complete temporary file to its final name, unless that name exists: a
/// repository object is never replaced (its name is its content's hash, or unique), so an
/// object that is there already stays as it is and `from` is removed. Returns whether
/// `from` took the name. Atomic where the filesystem has `renameat2(RENAME_NOREPLACE)`
/// (ext4, XFS, btrfs, tmpfs, vfat); elsewhere a check, then a rename.
pub fn place_new(from: &Path, to: &Path) -> std::io::Result<bool> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    const RENAME_NOREPLACE: libc::c_uint = 1;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "a NUL in a path"))
    };
    let (old, new) = (c(from)?, c(to)?);
    // SAFETY: two valid NUL-terminated paths, relative to the working directory; the
    // raw syscall since musl has no wrapper for it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            old.as_ptr(),
            libc::AT_FDCWD,
            new.as_ptr(),
            RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EEXIST) => {
            std::fs::remove_file(from)?;
            Ok(false)
        }
        Some(libc::EINVAL | libc::ENOSYS) => {
            if to.exists() {
                std::fs::remove_file(from)?;
                Ok(false)
            } else {
                std::fs::rename(from, to)?;
                Ok(true)
            }
        }
        _ => Err(e),
    }
}
