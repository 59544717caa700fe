//! Capture: read a disk's table and regions, cut them into content-defined chunks, store the
//! new ones, and record a manifest.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::Instant;

use anyhow::{Context, Result};
use crossbeam_channel::bounded;
use serde::Serialize;

use crate::disk::fs;
use crate::disk::layout::{read_layout, RegionPlan};
use crate::disk::Device;
use crate::io::{Progress, RangeReader};
use crate::repo::chunker::Chunker;
use crate::repo::manifest::{
    complement, ChunkRef, DiskInfo, FsUsage, Manifest, Region, RegionKind, SourceInfo, TableKind,
    MANIFEST_FORMAT, MANIFEST_VERSION,
};
use crate::repo::{treehash, ChunkId, Repository};
use crate::report;

pub struct Options {
    pub repo: crate::repo::RepoSpec,
    pub source: PathBuf,
    pub name: String,
    pub sector_size: Option<u32>,
    /// Read every block, even those a filesystem marks free.
    pub full: bool,
    /// zstd level for new chunks; None for the repository's.
    pub level: Option<i32>,
    pub quiet: bool,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub snapshot: String,
    pub name: String,
    pub source: String,
    pub table: String,
    pub logical_size: u64,
    /// Bytes read from the disk.
    pub bytes_read: u64,
    /// Bytes that filesystems mark free, not read.
    pub free_bytes_skipped: u64,
    pub data_bytes: u64,
    pub hole_bytes: u64,
    pub chunks: u64,
    pub new_chunks: u64,
    pub new_plain_bytes: u64,
    pub new_stored_bytes: u64,
    /// Data bytes per new plaintext byte stored (null when nothing was new).
    pub dedup_ratio: Option<f64>,
    /// New plaintext bytes per stored byte.
    pub compression_ratio: Option<f64>,
    pub duration_s: f64,
    pub throughput_mib_s: f64,
    pub notes: Vec<String>,
}

impl Summary {
    pub fn print(&self) {
        report::print_table(&[
            (
                "snapshot",
                format!("{} ({})", &self.snapshot[..8], self.name),
            ),
            (
                "source",
                format!(
                    "{} ({}, {} table)",
                    self.source,
                    report::bytes(self.logical_size),
                    self.table
                ),
            ),
            ("read", report::bytes(self.bytes_read)),
            (
                "data",
                format!(
                    "{} in {} chunks, {} zeros not stored",
                    report::bytes(self.data_bytes),
                    self.chunks,
                    report::bytes(self.hole_bytes)
                ),
            ),
            (
                "new",
                format!(
                    "{} chunks, {} stored as {}",
                    self.new_chunks,
                    report::bytes(self.new_plain_bytes),
                    report::bytes(self.new_stored_bytes)
                ),
            ),
            (
                "dedup",
                self.dedup_ratio
                    .map(|r| format!("{r:.1}x"))
                    .unwrap_or_else(|| "everything was already stored".into()),
            ),
            (
                "time",
                format!(
                    "{:.2} s, {:.1} MiB/s",
                    self.duration_s, self.throughput_mib_s
                ),
            ),
        ]);
        for n in &self.notes {
            println!("note: {n}");
        }
    }
}

fn is_zero(data: &[u8]) -> bool {
    let (pre, mid, post) = unsafe { data.align_to::<u128>() };
    pre.iter().all(|&b| b == 0) && post.iter().all(|&b| b == 0) && mid.iter().all(|&w| w == 0)
}

pub fn run(opts: &Options) -> Result<Summary> {
    let start = Instant::now();
    let mut repo = Repository::open(&opts.repo)?;
    if let Some(level) = opts.level {
        repo.config.compression.level = level;
    }
    let stale = repo
        .store()
        .clean_stale()
        .context("clean up after interrupted writers")?;
    if stale > 0 {
        log::info!("removed {stale} temporary files left by interrupted captures");
    }
    let dev = Device::open_read(&opts.source)?;
    let layout = read_layout(&dev, opts.sector_size)
        .with_context(|| format!("read the partition table of {}", opts.source.display()))?;
    for n in &layout.notes {
        log::warn!("{n}");
    }
    let mut notes = layout.notes.clone();
    let usage: Vec<Option<FsUsage>> = layout
        .regions
        .iter()
        .map(|r| {
            if opts.full {
                None
            } else {
                region_usage(&dev, &layout.disk, r, &mut notes)
            }
        })
        .collect();
    let free: Vec<Vec<(u64, u64)>> = layout
        .regions
        .iter()
        .zip(&usage)
        .map(|(r, u)| {
            u.as_ref()
                .map(|u| u.free_ranges(r.offset, r.offset + r.length))
                .unwrap_or_default()
        })
        .collect();
    let free_bytes: u64 = free.iter().flatten().map(|f| f.1).sum();
    let params = repo.config.chunker;
    let total: u64 = layout.regions.iter().map(|r| r.length).sum();
    let progress = Progress::new("capture", total, opts.quiet);
    let workers = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);

    // Every region cut into segments; workers take them in order, each reading, chunking,
    // hashing and storing a whole segment.
    let seg = params.segment_size;
    let segments: Vec<SegmentJob> = layout
        .regions
        .iter()
        .enumerate()
        .flat_map(|(ri, r)| {
            (0..r.length.div_ceil(seg)).map(move |k| SegmentJob {
                region: ri,
                index: k as usize,
                offset: r.offset + k * seg,
                length: seg.min(r.length - k * seg),
                whole_region: r.length <= seg,
            })
        })
        .collect();
    let next = AtomicUsize::new(0);
    let abort = AtomicBool::new(false);
    let seen: Mutex<HashSet<ChunkId>> = Mutex::new(HashSet::new());
    let (res_tx, res_rx) = bounded::<Result<SegmentDone>>(workers * 2);
    let mut per_region: Vec<Vec<SegmentDone>> =
        (0..layout.regions.len()).map(|_| Vec::new()).collect();
    let mut new_plain = 0u64;
    let mut new_stored = 0u64;
    let mut new_chunks = 0u64;
    let mut first_err: Option<anyhow::Error> = None;
    thread::scope(|s| {
        for _ in 0..workers {
            let res_tx = res_tx.clone();
            let w = Worker {
                dev: &dev,
                repo: &repo,
                seen: &seen,
                params: &params,
                free: &free,
                progress: &progress,
            };
            let (segments, next, abort) = (&segments, &next, &abort);
            s.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= segments.len() || abort.load(Ordering::Relaxed) {
                    break;
                }
                if res_tx.send(w.segment(&segments[i])).is_err() {
                    break;
                }
            });
        }
        drop(res_tx);
        for r in res_rx.iter() {
            match r {
                Ok(d) => {
                    new_plain += d.new_plain;
                    new_stored += d.new_stored;
                    new_chunks += d.new_chunks;
                    per_region[d.region].push(d);
                }
                Err(e) => {
                    abort.store(true, Ordering::Relaxed);
                    first_err.get_or_insert(e);
                }
            }
        }
    });
    progress.finish();
    if let Some(e) = first_err {
        return Err(e);
    }

    let mut regions = Vec::with_capacity(layout.regions.len());
    let mut chunks = 0u64;
    for ((plan, mut done), (fs, free)) in layout
        .regions
        .iter()
        .zip(per_region)
        .zip(usage.into_iter().zip(&free))
    {
        done.sort_by_key(|d| d.index);
        let hash = treehash::combine(&done.iter().map(|d| d.hash.clone()).collect::<Vec<_>>());
        let mut merged: Vec<ChunkRef> = Vec::new();
        for mut c in done.into_iter().flat_map(|d| d.chunks) {
            if c.id.is_some() {
                chunks += 1;
            } else {
                c.free = within(free, c.offset, c.length as u64);
            }
            match merged.last_mut() {
                Some(last)
                    if last.id.is_none()
                        && c.id.is_none()
                        && last.free == c.free
                        && last.length as u64 + c.length as u64 <= u32::MAX as u64 =>
                {
                    last.length += c.length
                }
                _ => merged.push(c),
            }
        }
        regions.push(Region {
            kind: plan.kind,
            partition: plan.partition,
            offset: plan.offset,
            length: plan.length,
            blake3: hash.to_hex().to_string(),
            filesystem: fs,
            chunks: merged,
        });
    }
    let (model, serial) = dev.identity();
    let manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        version: MANIFEST_VERSION,
        name: opts.name.clone(),
        time: crate::repo::now_rfc3339(),
        hostname: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        source: SourceInfo {
            path: opts.source.display().to_string(),
            model,
            serial,
        },
        disk: layout.disk.clone(),
        chunker: params,
        regions,
    };
    // Chunks are durable before the manifest that names them (save_manifest flushes first).
    let id = repo
        .save_manifest(&manifest)
        .context("save the snapshot manifest")?;
    let data_bytes = manifest.data_bytes();
    let elapsed = start.elapsed();
    Ok(Summary {
        snapshot: id,
        name: opts.name.clone(),
        source: opts.source.display().to_string(),
        table: format!("{:?}", manifest.disk.table).to_lowercase(),
        logical_size: manifest.disk.size,
        bytes_read: total - free_bytes,
        free_bytes_skipped: free_bytes,
        data_bytes,
        hole_bytes: manifest
            .regions
            .iter()
            .flat_map(|r| &r.chunks)
            .filter(|c| c.id.is_none() && !c.free)
            .map(|c| c.length as u64)
            .sum(),
        chunks,
        new_chunks,
        new_plain_bytes: new_plain,
        new_stored_bytes: new_stored,
        dedup_ratio: (new_plain > 0).then(|| data_bytes as f64 / new_plain as f64),
        compression_ratio: (new_stored > 0).then(|| new_plain as f64 / new_stored as f64),
        duration_s: elapsed.as_secs_f64(),
        throughput_mib_s: report::mib_per_s(total, elapsed),
        notes,
    })
}

/// Free runs shorter than this are read anyway. Skipping them saves little, and blocks
/// freed by a day's file changes would turn from their old (unchanged) bytes into zeros,
/// so that the chunks around them change and the next capture stores them again.
const MIN_SKIP: u64 = 1 << 20;

/// Whether [offset, offset+len) lies inside one of the sorted, disjoint `ranges`.
fn within(ranges: &[(u64, u64)], offset: u64, len: u64) -> bool {
    let i = ranges.partition_point(|r| r.0 + r.1 <= offset);
    ranges
        .get(i)
        .is_some_and(|r| r.0 <= offset && offset + len <= r.0 + r.1)
}

/// The bytes of a region that its filesystems use, when they can be known: a GPT
/// partition's own, or those of the primary partitions of an MBR disk captured whole.
fn region_usage(
    dev: &Device,
    disk: &DiskInfo,
    r: &RegionPlan,
    notes: &mut Vec<String>,
) -> Option<FsUsage> {
    let parts: Vec<(String, u64, u64)> = match (r.kind, &disk.mbr) {
        (RegionKind::Partition, _) => vec![(
            format!("partition {}", r.partition.unwrap_or(0)),
            r.offset,
            r.length,
        )],
        (RegionKind::Disk, Some(mbr)) if disk.table == TableKind::Mbr => mbr
            .entries
            .iter()
            .filter(|e| ![0x05, 0x0F, 0x85, 0xEE].contains(&e.os_type) && e.sectors > 0)
            .map(|e| {
                let ss = disk.logical_sector_size as u64;
                (
                    format!("MBR partition {}", e.index),
                    e.first_lba as u64 * ss,
                    e.sectors as u64 * ss,
                )
            })
            .filter(|(_, o, l)| o + l <= r.offset + r.length)
            .collect(),
        _ => return None,
    };
    let mut free: Vec<(u64, u64)> = Vec::new();
    let mut kinds = Vec::new();
    let mut block_size = u32::MAX;
    for (label, off, len) in parts {
        match fs::scan(dev, off, len) {
            fs::Scan::Used(u) => {
                let used: u64 = u.used_bytes();
                notes.push(format!(
                    "{label}: {}, {} of {} in use; free runs of 1 MiB or more not read",
                    u.kind,
                    report::bytes(used),
                    report::bytes(len)
                ));
                let abs = FsUsage {
                    kind: u.kind.into(),
                    block_size: u.block_size,
                    used_bytes: used,
                    used: u.used.iter().map(|&(o, l)| (off + o, l)).collect(),
                };
                free.extend(
                    abs.free_ranges(off, off + len)
                        .into_iter()
                        .filter(|f| f.1 >= MIN_SKIP),
                );
                kinds.push(u.kind);
                block_size = block_size.min(u.block_size);
            }
            fs::Scan::Whole(why) => notes.push(format!("{label}: {why}; read in full")),
        }
    }
    if kinds.is_empty() {
        return None;
    }
    free.sort_unstable();
    // Read = the region less every partition's skipped free space.
    let used = complement(&free, r.offset, r.offset + r.length);
    Some(FsUsage {
        kind: kinds.join("+"),
        block_size,
        used_bytes: used.iter().map(|u| u.1).sum(),
        used,
    })
}

/// One segment of a region, for one worker.
struct SegmentJob {
    region: usize,
    index: usize,
    offset: u64,
    length: u64,
    whole_region: bool,
}

struct SegmentDone {
    region: usize,
    index: usize,
    chunks: Vec<ChunkRef>,
    hash: treehash::Segment,
    new_chunks: u64,
    new_plain: u64,
    new_stored: u64,
}

struct Worker<'a> {
    dev: &'a Device,
    repo: &'a Repository,
    seen: &'a Mutex<HashSet<ChunkId>>,
    params: &'a crate::repo::ChunkerParams,
    free: &'a [Vec<(u64, u64)>],
    progress: &'a Progress,
}

impl Worker<'_> {
    /// Read a segment (free space as zeros, without reading it), cut it into chunks, hash
    /// it as a BLAKE3 subtree, and store the chunks the repository lacks.
    fn segment(&self, s: &SegmentJob) -> Result<SegmentDone> {
        let region_offset = s.offset - s.index as u64 * self.params.segment_size;
        let reader =
            RangeReader::new(self.dev, s.offset, s.length).with_zeros(&self.free[s.region]);
        let mut chunker = Chunker::new(reader, self.params);
        let mut hasher = treehash::segment_hasher(s.offset - region_offset);
        let mut out = SegmentDone {
            region: s.region,
            index: s.index,
            chunks: Vec::new(),
            hash: treehash::Segment::Whole(blake3::hash(b"")),
            new_chunks: 0,
            new_plain: 0,
            new_stored: 0,
        };
        loop {
            let offset = s.offset + chunker.position;
            let Some(data) = chunker
                .next_chunk()
                .with_context(|| format!("read {} at byte {offset}", self.dev.path.display()))?
            else {
                break;
            };
            hasher.update(data);
            let length = data.len() as u32;
            let id = if is_zero(data) {
                None
            } else {
                let id = ChunkId::of(data);
                let first_time = self.seen.lock().unwrap().insert(id);
                if first_time && !self.repo.has_chunk(&id)? {
                    let stored = self
                        .repo
                        .put_chunk(&id, data)
                        .with_context(|| format!("store chunk {id}"))?;
                    out.new_chunks += 1;
                    out.new_plain += length as u64;
                    out.new_stored += stored;
                }
                Some(id)
            };
            out.chunks.push(ChunkRef {
                offset,
                length,
                id,
                free: false,
            });
            self.progress.inc(length as u64);
        }
        out.hash = treehash::finish(&hasher, s.length, s.whole_region);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn zero_detection() {
        let mut v = vec![0u8; 4099];
        assert!(super::is_zero(&v));
        v[4098] = 1;
        assert!(!super::is_zero(&v));
        v[4098] = 0;
        v[1] = 1;
        assert!(!super::is_zero(&v[1..]));
    }
}
