//! NTFS: the clusters in use, from `$Bitmap` (MFT record 6) read through its run list.
//!
//! Checked first, and read in full otherwise: the boot sector's geometry; each MFT
//! record's signature, update sequence (fixups) and attribute bounds; `$Volume` not
//! marked dirty; `$LogFile` empty or its newest restart area clean (Windows' Fast Startup
//! and a crash leave it otherwise); `$Bitmap` without an attribute list, as long as the
//! volume's clusters, marking the clusters of `$MFT`, `$Bitmap`, `$LogFile` and the boot
//! sector as used; no hibernation file (`hiberfil.sys` starting `hibr` or `wake`) in the
//! root directory. The backup boot sector in the volume's last sector, outside every
//! cluster, is always read.
//!
//! ntfsclone (ntfs-3g) and partclone's ntfsclone-ng read the same bitmap through libntfs;
//! like them this refuses a dirty or hibernated volume, but without their `--force`.

use crate::disk::endian::{le16, le32, le64};
use anyhow::{bail, ensure, Context, Result};

use super::{FsKind, Reader, Usage};
use crate::range::{append_merged, ByteRange};

const OEM: &[u8; 8] = b"NTFS    ";
const RECORD_MFT: u64 = 0;
const RECORD_LOGFILE: u64 = 2;
const RECORD_VOLUME: u64 = 3;
const RECORD_ROOT: u64 = 5;
const RECORD_BITMAP: u64 = 6;
const ATTR_LIST: u32 = 0x20;
const ATTR_VOLUME_INFORMATION: u32 = 0x70;
const ATTR_DATA: u32 = 0x80;
const ATTR_INDEX_ROOT: u32 = 0x90;
const ATTR_INDEX_ALLOCATION: u32 = 0xA0;
const ATTR_END: u32 = 0xFFFF_FFFF;
const VOLUME_IS_DIRTY: u16 = 0x0001;
const RESTART_VOLUME_IS_CLEAN: u16 = 0x0002;
const LOGFILE_NO_CLIENT: u16 = 0xFFFF;
/// Fixups protect each 512-byte stride of a multi-sector record.
const STRIDE: usize = 512;
/// The most clusters a volume may have here (2^40: 4 PiB at 4 KiB), bounding the bitmap.
const MAX_CLUSTERS: u64 = 1 << 40;
/// The most index blocks of the root directory read to look for a hibernation file.
const MAX_ROOT_INDEX_BYTES: u64 = 16 << 20;

#[derive(Debug)]
struct Boot {
    cluster: u64,
    /// Clusters in the volume.
    clusters: u64,
    mft_lcn: u64,
    record_size: usize,
    index_size: usize,
}

impl Boot {
    fn parse(b: &[u8], len: u64) -> Result<Boot> {
        ensure!(
            &b[3..11] == OEM && le16(b, 0x1FE) == 0xAA55,
            "no NTFS boot sector"
        );
        let sector = le16(b, 0x0B) as u64;
        ensure!(
            sector.is_power_of_two() && (256..=4096).contains(&sector),
            "sector size {sector}"
        );
        let spc = match b[0x0D] {
            v @ 1..=128 => v as u64,
            v @ 244..=255 => 1 << (256 - v as u32),
            v => bail!("sectors per cluster {v}"),
        };
        ensure!(spc.is_power_of_two(), "sectors per cluster {spc}");
        let cluster = sector * spc;
        ensure!(cluster <= 2 << 20, "clusters of {cluster} bytes");
        let size = |v: u8| -> Result<usize> {
            let s = match v as i8 {
                n @ 1..=127 => cluster.checked_mul(n as u64).context("record size")?,
                n @ -31..=-9 => 1u64 << (-(n as i32)),
                n => bail!("record size code {n}"),
            };
            ensure!((512..=65536).contains(&s), "records of {s} bytes");
            Ok(s as usize)
        };
        let sectors = le64(b, 0x28);
        let bytes = sectors.checked_mul(sector).context("volume size")?;
        ensure!(
            bytes.checked_add(sector).is_some_and(|e| e <= len),
            "the volume ({bytes} bytes and a backup boot sector) is larger than its partition \
             ({len} bytes)"
        );
        let clusters = bytes / cluster;
        ensure!(
            (16..=MAX_CLUSTERS).contains(&clusters),
            "{clusters} clusters"
        );
        let mft_lcn = le64(b, 0x30);
        ensure!(
            mft_lcn < clusters,
            "the MFT at cluster {mft_lcn} lies outside it"
        );
        Ok(Boot {
            cluster,
            clusters,
            mft_lcn,
            record_size: size(b[0x40])?,
            index_size: size(b[0x44])?,
        })
    }
}

/// One run of a non-resident attribute: `len` clusters at `lcn` (None: sparse).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    lcn: Option<u64>,
    len: u64,
}

/// Decode a run list (mapping pairs), checking every run lies inside the volume.
fn runs(b: &[u8], clusters: u64) -> Result<Vec<Run>> {
    let mut out = Vec::new();
    let (mut at, mut lcn, mut vcns) = (0usize, 0i64, 0u64);
    loop {
        let h = *b.get(at).context("a run list without its end")?;
        if h == 0 {
            return Ok(out);
        }
        let (nl, no) = ((h & 0xF) as usize, (h >> 4) as usize);
        ensure!((1..=8).contains(&nl) && no <= 8, "run header {h:#x}");
        let field = b
            .get(at + 1..at + 1 + nl + no)
            .context("a run list cut short")?;
        let len = field[..nl]
            .iter()
            .rev()
            .fold(0u64, |a, &x| (a << 8) | x as u64);
        ensure!(len > 0 && len <= clusters, "a run of {len} clusters");
        vcns = vcns.checked_add(len).context("run lengths overflow")?;
        ensure!(vcns <= clusters, "runs longer than the volume");
        let run = if no == 0 {
            Run { lcn: None, len }
        } else {
            let raw = field[nl..]
                .iter()
                .rev()
                .fold(0u64, |a, &x| (a << 8) | x as u64);
            // Sign-extend from `no` bytes.
            let shift = 64 - 8 * no as u32;
            let delta = ((raw << shift) as i64) >> shift;
            lcn = lcn.checked_add(delta).context("run offsets overflow")?;
            ensure!(
                lcn >= 0 && (lcn as u64).checked_add(len).is_some_and(|e| e <= clusters),
                "a run at cluster {lcn} of {len} lies outside the volume"
            );
            Run {
                lcn: Some(lcn as u64),
                len,
            }
        };
        out.push(run);
        at += 1 + nl + no;
    }
}

/// An attribute of an MFT record.
struct Attr<'a> {
    kind: u32,
    name_len: u8,
    body: &'a [u8],
}

impl Attr<'_> {
    fn resident_value(&self) -> Result<&[u8]> {
        ensure!(
            self.body[8] == 0,
            "attribute {:#x} is not resident",
            self.kind
        );
        ensure!(
            self.body.len() >= 24,
            "a resident attribute of {} bytes",
            self.body.len()
        );
        let len = le32(self.body, 16) as usize;
        let off = le16(self.body, 20) as usize;
        self.body
            .get(off..off.checked_add(len).context("value bounds")?)
            .with_context(|| format!("attribute {:#x}'s value lies outside it", self.kind))
    }

    /// A non-resident attribute's run list and data size.
    fn runs(&self, clusters: u64) -> Result<(Vec<Run>, u64)> {
        ensure!(self.body[8] == 1, "attribute {:#x} is resident", self.kind);
        ensure!(
            self.body.len() >= 64,
            "a non-resident attribute of {} bytes",
            self.body.len()
        );
        ensure!(
            le64(self.body, 16) == 0,
            "attribute {:#x} is split over records",
            self.kind
        );
        let off = le16(self.body, 32) as usize;
        let pairs = self
            .body
            .get(off..)
            .context("run list outside its attribute")?;
        Ok((runs(pairs, clusters)?, le64(self.body, 48)))
    }
}

/// An MFT record, its fixups applied.
struct Record(Vec<u8>);

impl Record {
    fn parse(mut b: Vec<u8>, number: u64) -> Result<Record> {
        let at = format!("MFT record {number}");
        ensure!(&b[..4] == b"FILE", "{at}: bad signature");
        fixup(&mut b).with_context(|| at.clone())?;
        ensure!(le16(&b, 0x16) & 1 != 0, "{at}: not in use");
        let used = le32(&b, 0x18) as usize;
        ensure!(
            (0x38..=b.len()).contains(&used),
            "{at}: {used} bytes in use"
        );
        b.truncate(used);
        Ok(Record(b))
    }

    fn attrs(&self) -> Result<Vec<Attr<'_>>> {
        let b = &self.0;
        let mut at = le16(b, 0x14) as usize;
        let mut out = Vec::new();
        loop {
            ensure!(at + 4 <= b.len(), "attributes run past the record");
            let kind = le32(b, at);
            if kind == ATTR_END {
                return Ok(out);
            }
            ensure!(at + 16 <= b.len(), "attributes run past the record");
            let len = le32(b, at + 4) as usize;
            ensure!(
                len >= 16 && len.is_multiple_of(8) && at + len <= b.len(),
                "an attribute of {len} bytes at {at}"
            );
            out.push(Attr {
                kind,
                name_len: b[at + 9],
                body: &b[at..at + len],
            });
            at += len;
        }
    }

    /// The unnamed attribute of this type (there must be at most one).
    fn attr(&self, kind: u32) -> Result<Option<Attr<'_>>> {
        let mut found = self
            .attrs()?
            .into_iter()
            .filter(|a| a.kind == kind && a.name_len == 0);
        let first = found.next();
        ensure!(found.next().is_none(), "two attributes {kind:#x}");
        Ok(first)
    }
}

/// Apply a multi-sector record's update sequence: the last two bytes of each 512-byte
/// stride must hold the sequence number, and get back their saved values.
fn fixup(b: &mut [u8]) -> Result<()> {
    let off = le16(b, 4) as usize;
    let count = le16(b, 6) as usize;
    ensure!(
        count >= 2 && count - 1 == b.len() / STRIDE && off + 2 * count <= b.len(),
        "update sequence of {count} at {off}"
    );
    let usn = le16(b, off);
    for i in 1..count {
        let end = i * STRIDE - 2;
        ensure!(
            le16(b, end) == usn,
            "a torn write (update sequence mismatch in stride {i})"
        );
        let saved = [b[off + 2 * i], b[off + 2 * i + 1]];
        b[end..end + 2].copy_from_slice(&saved);
    }
    Ok(())
}

struct Ntfs<'a> {
    r: &'a Reader<'a>,
    boot: Boot,
}

impl Ntfs<'_> {
    /// One of the first MFT records (they lie together where the boot sector says).
    fn record(&self, n: u64) -> Result<Record> {
        let size = self.boot.record_size;
        let at = self.boot.mft_lcn * self.boot.cluster + n * size as u64;
        Record::parse(self.r.read(at, size)?, n)
    }

    /// The bytes of a non-resident attribute's first `len` bytes.
    fn read_runs(&self, runs: &[Run], len: u64) -> Result<Vec<u8>> {
        let total: u64 = runs.iter().map(|r| r.len * self.boot.cluster).sum();
        ensure!(len <= total, "{len} bytes in runs of {total}");
        let mut out = Vec::with_capacity(len as usize);
        for run in runs {
            let want = (run.len * self.boot.cluster).min(len - out.len() as u64) as usize;
            match run.lcn {
                Some(lcn) => out.extend(self.r.read(lcn * self.boot.cluster, want)?),
                None => out.resize(out.len() + want, 0),
            }
            if out.len() as u64 == len {
                break;
            }
        }
        Ok(out)
    }

    fn check_volume_clean(&self) -> Result<()> {
        let vol = self.record(RECORD_VOLUME)?;
        let info = vol
            .attr(ATTR_VOLUME_INFORMATION)?
            .context("$Volume has no volume information")?;
        let v = info.resident_value()?;
        ensure!(v.len() >= 12, "volume information of {} bytes", v.len());
        if le16(v, 10) & VOLUME_IS_DIRTY != 0 {
            bail!("it is marked dirty (not cleanly unmounted: run chkdsk)");
        }
        Ok(())
    }

    /// `$LogFile` must be empty (all 0xFF, as ntfs-3g and mkntfs leave it) or its newest
    /// restart area clean.
    fn check_log_clean(&self) -> Result<()> {
        let rec = self.record(RECORD_LOGFILE)?;
        let data = rec.attr(ATTR_DATA)?.context("$LogFile has no data")?;
        let (runs, size) = data.runs(self.boot.clusters)?;
        let page = 8192.min(size);
        let head = self.read_runs(&runs, page)?;
        if head.iter().all(|&b| b == 0xFF) {
            return Ok(());
        }
        let mut newest: Option<(u64, bool)> = None;
        for half in head.chunks(4096) {
            if let Ok(area) = restart_area(half) {
                if newest.is_none_or(|(lsn, _)| area.0 > lsn) {
                    newest = Some(area);
                }
            }
        }
        match newest {
            Some((_, true)) => Ok(()),
            Some((_, false)) => bail!(
                "its $LogFile holds unfinished transactions (Windows' Fast Startup or \
                 hibernation, or not cleanly shut down)"
            ),
            None => bail!("its $LogFile has no valid restart page"),
        }
    }

    /// Refuse a root directory holding a hibernation file that is in use.
    fn check_not_hibernated(&self) -> Result<()> {
        let root = self.record(RECORD_ROOT)?;
        let mut entries = Vec::new();
        if let Some(ir) = root.attr_named(ATTR_INDEX_ROOT, "$I30")? {
            let v = ir.resident_value()?;
            ensure!(v.len() >= 32, "an index root of {} bytes", v.len());
            index_entries(&v[16..], &mut entries)?;
        }
        if let Some(ia) = root.attr_named(ATTR_INDEX_ALLOCATION, "$I30")? {
            let (runs, size) = ia.runs(self.boot.clusters)?;
            ensure!(size <= MAX_ROOT_INDEX_BYTES, "a root index of {size} bytes");
            let all = self.read_runs(&runs, size)?;
            for block in all.chunks_exact(self.boot.index_size) {
                if &block[..4] != b"INDX" {
                    continue;
                }
                let mut block = block.to_vec();
                fixup(&mut block).context("root directory index block")?;
                index_entries(&block[24..], &mut entries)?;
            }
        }
        let Some(mft_ref) = entries
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("hiberfil.sys"))
            .map(|e| e.1)
        else {
            return Ok(());
        };
        let hib = self.mft_record(mft_ref & 0xFFFF_FFFF_FFFF)?;
        let head = match hib.attr(ATTR_DATA)? {
            Some(a) if a.body[8] == 0 => a.resident_value()?.get(..4).unwrap_or(&[]).to_vec(),
            Some(a) => {
                let (runs, size) = a.runs(self.boot.clusters)?;
                self.read_runs(&runs, size.min(4))?
            }
            None => Vec::new(),
        };
        if head.eq_ignore_ascii_case(b"hibr") || head.eq_ignore_ascii_case(b"wake") {
            bail!("Windows is hibernated on it (hiberfil.sys is in use; Fast Startup?)");
        }
        Ok(())
    }

    /// Any MFT record, through `$MFT`'s own run list.
    fn mft_record(&self, n: u64) -> Result<Record> {
        let mft = self.record(RECORD_MFT)?;
        let data = mft.attr(ATTR_DATA)?.context("$MFT has no data")?;
        let (runs, size) = data.runs(self.boot.clusters)?;
        let size_rec = self.boot.record_size as u64;
        let at = n.checked_mul(size_rec).filter(|&a| a + size_rec <= size);
        let mut at = at.with_context(|| format!("MFT record {n} is beyond the MFT"))?;
        for run in runs {
            let bytes = run.len * self.boot.cluster;
            if at < bytes {
                let lcn = run.lcn.context("MFT record in a sparse run")?;
                let b = self
                    .r
                    .read(lcn * self.boot.cluster + at, size_rec as usize)?;
                return Record::parse(b, n);
            }
            at -= bytes;
        }
        bail!("MFT record {n} is beyond the MFT's runs")
    }
}

impl Record {
    fn attr_named(&self, kind: u32, name: &str) -> Result<Option<Attr<'_>>> {
        for a in self.attrs()? {
            if a.kind != kind {
                continue;
            }
            let off = le16(a.body, 10) as usize;
            let units = a
                .body
                .get(off..off + 2 * a.name_len as usize)
                .context("attribute name outside it")?;
            let n: Vec<u16> = units.chunks(2).map(|c| le16(c, 0)).collect();
            if String::from_utf16_lossy(&n) == name {
                return Ok(Some(a));
            }
        }
        Ok(None)
    }
}

/// The entries of an index node (its header first): (file name, MFT reference).
fn index_entries(node: &[u8], out: &mut Vec<(String, u64)>) -> Result<()> {
    ensure!(node.len() >= 16, "an index node of {} bytes", node.len());
    let (first, used) = (le32(node, 0) as usize, le32(node, 4) as usize);
    ensure!(
        first <= used && used <= node.len(),
        "index entries {first}..{used}"
    );
    let mut at = first;
    while at + 16 <= used {
        let len = le16(node, at + 8) as usize;
        let key_len = le16(node, at + 10) as usize;
        let flags = le16(node, at + 12);
        ensure!(
            len >= 16 && at + len <= used,
            "an index entry of {len} bytes"
        );
        if flags & 2 != 0 {
            break; // the last entry holds no key
        }
        let key = node
            .get(at + 16..at + 16 + key_len)
            .context("an index key outside its entry")?;
        if key.len() >= 66 {
            let n = key[64] as usize;
            if let Some(units) = key.get(66..66 + 2 * n) {
                let name: Vec<u16> = units.chunks(2).map(|c| le16(c, 0)).collect();
                out.push((String::from_utf16_lossy(&name), le64(node, at)));
            }
        }
        at += len;
    }
    Ok(())
}

/// A restart page's (current LSN, clean).
fn restart_area(page: &[u8]) -> Result<(u64, bool)> {
    ensure!(
        &page[..4] == b"RSTR" || &page[..4] == b"CHKD",
        "no restart page"
    );
    let sys_page = le32(page, 0x10) as usize;
    ensure!(sys_page == page.len(), "a restart page of {sys_page} bytes");
    let mut p = page.to_vec();
    fixup(&mut p)?;
    let ra = le16(&p, 0x18) as usize;
    ensure!(ra + 16 <= p.len(), "restart area at {ra}");
    let lsn = le64(&p, ra);
    let in_use = le16(&p, ra + 12);
    let flags = le16(&p, ra + 14);
    Ok((
        lsn,
        in_use == LOGFILE_NO_CLIENT || flags & RESTART_VOLUME_IS_CLEAN != 0,
    ))
}

/// Find which bytes of an NTFS volume are in use.
pub fn scan(r: &Reader, len: u64) -> Result<Usage> {
    let boot = Boot::parse(&r.read(0, 512)?, len)?;
    let fs = Ntfs { r, boot };
    fs.check_volume_clean()?;
    fs.check_log_clean()?;
    fs.check_not_hibernated().context("its root directory")?;
    let mut used = fs.bitmap_ranges()?;
    let b = &fs.boot;
    // The clusters of the files the volume needs to be read at all must be in use.
    let mut needed = vec![Run {
        lcn: Some(0),
        len: 1,
    }];
    for n in [RECORD_MFT, RECORD_BITMAP, RECORD_LOGFILE] {
        let rec = fs.record(n)?;
        let data = rec.attr(ATTR_DATA)?.context("no data attribute")?;
        needed.extend(data.runs(b.clusters)?.0);
    }
    for run in needed {
        let Some(lcn) = run.lcn else { continue };
        let bytes = ByteRange::new(lcn * b.cluster, run.len * b.cluster);
        ensure!(
            crate::range::covered_by_one(&used, bytes),
            "$Bitmap marks system clusters {lcn}..{} as free",
            lcn + run.len
        );
    }
    // Past the last whole cluster: the backup boot sector, and whatever follows the
    // volume in its partition.
    append_merged(&mut used, ByteRange::between(b.clusters * b.cluster, len));
    Ok(Usage {
        kind: FsKind::Ntfs,
        block_size: b.cluster as u32,
        used,
        note: None,
    })
}

impl Ntfs<'_> {
    /// The byte ranges `$Bitmap` marks in use (one bit per cluster), ascending, read a
    /// piece at a time.
    fn bitmap_ranges(&self) -> Result<Vec<ByteRange>> {
        let rec = self.record(RECORD_BITMAP)?;
        if rec.attrs()?.iter().any(|a| a.kind == ATTR_LIST) {
            bail!("$Bitmap has an attribute list");
        }
        let data = rec.attr(ATTR_DATA)?.context("$Bitmap has no data")?;
        let (runs, size) = data.runs(self.boot.clusters)?;
        let need = self.boot.clusters.div_ceil(8);
        ensure!(
            size >= need && size <= need + self.boot.cluster,
            "$Bitmap holds {size} bytes for {} clusters",
            self.boot.clusters
        );
        let cluster = self.boot.cluster;
        let mut used = Vec::new();
        let mut byte = 0u64; // of the bitmap
        for run in &runs {
            let mut left = (run.len * cluster).min(need - byte);
            let mut at = run.lcn.map(|l| l * cluster);
            while left > 0 {
                let n = left.min(PIECE);
                let piece = match at {
                    Some(a) => self.r.read(a, n as usize)?,
                    None => vec![0; n as usize],
                };
                for (i, &bits) in piece.iter().enumerate() {
                    let first = (byte + i as u64) * 8;
                    match bits {
                        0 => {}
                        0xFF => push_clusters(&mut used, first, 8, self.boot.clusters, cluster),
                        _ => {
                            for k in 0..8 {
                                if bits & (1 << k) != 0 {
                                    push_clusters(
                                        &mut used,
                                        first + k,
                                        1,
                                        self.boot.clusters,
                                        cluster,
                                    );
                                }
                            }
                        }
                    }
                }
                byte += n;
                left -= n;
                at = at.map(|a| a + n);
            }
            if byte == need {
                break;
            }
        }
        ensure!(
            byte == need,
            "$Bitmap's runs hold {byte} of its {need} bytes"
        );
        Ok(used)
    }
}

/// How much of `$Bitmap` is read at a time.
const PIECE: u64 = 1 << 20;

/// Mark `n` clusters from `first` in use (those before `clusters`, the volume's end).
fn push_clusters(used: &mut Vec<ByteRange>, first: u64, n: u64, clusters: u64, cluster: u64) {
    let end = (first + n).min(clusters);
    if end > first {
        append_merged(
            used,
            ByteRange::new(first * cluster, (end - first) * cluster),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_lists_decode_with_signed_offsets_and_sparse_runs() {
        // 0x18 clusters at 0x5634, then 0x10 sparse, then 4 at 0x5634 - 0x34.
        let b = [0x21, 0x18, 0x34, 0x56, 0x01, 0x10, 0x11, 0x04, 0xCC, 0x00];
        assert_eq!(
            runs(&b, 1 << 20).unwrap(),
            vec![
                Run {
                    lcn: Some(0x5634),
                    len: 0x18
                },
                Run {
                    lcn: None,
                    len: 0x10
                },
                Run {
                    lcn: Some(0x5634 - 0x34),
                    len: 4
                },
            ]
        );
        // A run beyond the volume, a list without its end.
        assert!(runs(&b, 0x5000).is_err());
        assert!(runs(&b[..4], 1 << 20).is_err());
    }

    #[test]
    fn fixups_restore_stride_ends_and_catch_torn_writes() {
        let mut r = vec![0u8; 1024];
        r[4..6].copy_from_slice(&0x30u16.to_le_bytes());
        r[6..8].copy_from_slice(&3u16.to_le_bytes());
        r[0x30..0x36].copy_from_slice(&[7, 0, 0xAA, 0xBB, 0xCC, 0xDD]);
        r[510..512].copy_from_slice(&[7, 0]);
        r[1022..1024].copy_from_slice(&[7, 0]);
        let mut ok = r.clone();
        fixup(&mut ok).unwrap();
        assert_eq!(
            (&ok[510..512], &ok[1022..1024]),
            (&[0xAA, 0xBB][..], &[0xCC, 0xDD][..])
        );
        r[1022] = 8;
        assert!(fixup(&mut r).is_err());
    }
}
