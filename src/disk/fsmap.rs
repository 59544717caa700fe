//! The kernel's map of a mounted filesystem's space (`FS_IOC_GETFSMAP`, ext4 and XFS):
//! which bytes of its data device are free, as the running filesystem knows them, when
//! the on-disk bitmaps cannot be trusted (a journal or log still to replay).
//!
//! Only what the kernel calls free space is skipped; anything it reports under another
//! owner, or does not report at all, is read.

use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::range::ByteRange;

/// `struct fsmap` of <linux/fsmap.h>.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct Fsmap {
    device: u32,
    flags: u32,
    physical: u64,
    owner: u64,
    offset: u64,
    length: u64,
    reserved: [u64; 3],
}

/// `struct fsmap_head` without its flexible array of records, which follows it.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct FsmapHead {
    iflags: u32,
    oflags: u32,
    count: u32,
    entries: u32,
    reserved: [u64; 6],
    keys: [Fsmap; 2],
}

/// The records asked for per call.
const BATCH: usize = 256;
/// The most records read in all: a filesystem more fragmented than this is read whole.
const MAX_RECORDS: usize = 4 << 20;
/// `fmr_flags`: the owner is a special one (`FMR_OWN_*`), and the last record.
const OF_SPECIAL_OWNER: u32 = 0x10;
const OF_LAST: u32 = 0x20;
/// `FMR_OWN_FREE`: `FMR_OWNER(0, 1)` (special owners have type 0).
const OWN_FREE: u64 = 1;

/// A buffer laid out as `struct fsmap_head` followed by `BATCH` records.
#[repr(C)]
struct Request {
    head: FsmapHead,
    recs: [Fsmap; BATCH],
}

/// The free ranges the kernel reports for the data device `dev` (as `st_dev` gives it) of
/// the filesystem mounted at `point`, relative to the device's start, ascending. Dirty
/// data is written out first (`syncfs`), so that delayed allocations are made.
pub fn free_ranges(point: &Path, dev: u64) -> Result<Vec<ByteRange>> {
    let dir = std::fs::File::open(point).with_context(|| format!("open {}", point.display()))?;
    nix::unistd::syncfs(dir.as_raw_fd()).with_context(|| format!("syncfs {}", point.display()))?;
    let mut req = Box::new(Request {
        head: FsmapHead::default(),
        recs: [Fsmap::default(); BATCH],
    });
    req.head.keys[1] = Fsmap {
        device: u32::MAX,
        flags: u32::MAX,
        physical: u64::MAX,
        owner: u64::MAX,
        offset: u64::MAX,
        ..Fsmap::default()
    };
    let mut free: Vec<ByteRange> = Vec::new();
    let mut seen = 0usize;
    loop {
        req.head.count = BATCH as u32;
        req.head.entries = 0;
        call(&dir, &mut req).with_context(|| format!("FS_IOC_GETFSMAP on {}", point.display()))?;
        let n = (req.head.entries as usize).min(BATCH);
        if n == 0 {
            break;
        }
        seen += n;
        if seen > MAX_RECORDS {
            bail!("more than {MAX_RECORDS} extents");
        }
        for r in &req.recs[..n] {
            if encoded(dev) != r.device {
                continue;
            }
            if r.flags & OF_SPECIAL_OWNER != 0 && r.owner == OWN_FREE && r.length > 0 {
                let end = r
                    .physical
                    .checked_add(r.length)
                    .context("a free extent past 2^64")?;
                if free.last().is_some_and(|l| l.end() > r.physical) {
                    bail!("free extents out of order at byte {}", r.physical);
                }
                free.push(ByteRange::between(r.physical, end));
            }
        }
        let last = req.recs[n - 1];
        if last.flags & OF_LAST != 0 {
            break;
        }
        // The next call continues after the last record returned.
        req.head.keys[0] = last;
    }
    Ok(free)
}

/// `st_dev` as the kernel encodes `fmr_device` (`new_encode_dev`).
fn encoded(dev: u64) -> u32 {
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    ((minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)) as u32
}

fn call(dir: &std::fs::File, req: &mut Request) -> Result<()> {
    let code = nix::request_code_readwrite!(b'X', 59, std::mem::size_of::<FsmapHead>());
    // SAFETY: `req` is a fsmap_head followed by `count` records, as the ioctl expects,
    // and lives across the call.
    let rc = unsafe { libc::ioctl(dir.as_raw_fd(), code as _, req as *mut Request) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_the_kernels() {
        assert_eq!(std::mem::size_of::<Fsmap>(), 64);
        assert_eq!(std::mem::size_of::<FsmapHead>(), 192);
        // FS_IOC_GETFSMAP as <linux/fsmap.h> defines it on x86_64.
        assert_eq!(
            nix::request_code_readwrite!(b'X', 59, std::mem::size_of::<FsmapHead>()) as u32,
            0xc0c0_583b
        );
        assert_eq!(encoded(nix::sys::stat::makedev(7, 0)), 0x700);
        assert_eq!(
            encoded(nix::sys::stat::makedev(259, 300)),
            (259 << 8) | 44 | (256 << 12)
        );
    }
}
