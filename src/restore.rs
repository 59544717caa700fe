//! Restore: check everything before touching the target, then stream the snapshot onto it
//! with every chunk verified, the partition table written last, and the table wiped if
//! anything fails after the first write.

use std::collections::{HashMap, HashSet};
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use crossbeam_channel::bounded;
use serde::Serialize;

use crate::disk::device::wipe_tables;
use crate::disk::layout::relocate_gpt;
use crate::disk::loopdev::LoopDevice;
use crate::disk::{guard, Device};
use crate::io::{OrderedWriter, Progress, RangeReader};
use crate::repo::chunker::Chunker;
use crate::repo::manifest::{RegionKind, TableKind};
use crate::repo::{ChunkId, Manifest, Repository, Snapshot};
use crate::report;

const MIB: u64 = 1 << 20;

pub struct Options {
    pub repo: crate::repo::RepoSpec,
    pub snapshot: String,
    pub target: PathBuf,
    pub yes: bool,
    pub verify: bool,
    pub quiet: bool,
    /// An image (file or device) or older snapshot to take chunks from or check in place.
    pub seed: Option<String>,
    /// Write everything, without first reading what an existing target holds.
    pub no_reuse: bool,
    /// Zero free filesystem space instead of leaving it as it is.
    pub zero_free: bool,
    /// Extend the last partition to the end of a larger target (and grow its ext4).
    pub grow: bool,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub snapshot: String,
    pub name: String,
    pub target: String,
    pub disk_size: u64,
    pub target_size: u64,
    pub data_bytes: u64,
    pub zero_bytes: u64,
    pub chunks: u64,
    /// Bytes written to the target (chunks and tables; not zeroed ranges).
    pub written_bytes: u64,
    /// Chunks the target already held, verified in place and not rewritten.
    pub kept_chunks: u64,
    pub kept_bytes: u64,
    /// Chunks taken from the seed image.
    pub seeded_chunks: u64,
    /// Chunks read from the repository.
    pub fetched_chunks: u64,
    /// The backup GPT was moved to the end of a larger target.
    pub grown: bool,
    /// `--grow`: the partition extended, and its new size.
    pub grown_partition: Option<u32>,
    pub grown_partition_size: Option<u64>,
    /// What happened to the filesystem in the grown partition.
    pub filesystem_resize: Option<String>,
    pub verified: bool,
    pub duration_s: f64,
    pub throughput_mib_s: f64,
}

impl Summary {
    pub fn print(&self) {
        report::print_table(&[
            (
                "snapshot",
                format!("{} ({})", &self.snapshot[..8], self.name),
            ),
            (
                "target",
                format!("{} ({})", self.target, report::bytes(self.target_size)),
            ),
            (
                "written",
                format!(
                    "{} in {} verified chunks, {} zeros",
                    report::bytes(self.data_bytes),
                    self.chunks,
                    report::bytes(self.zero_bytes)
                ),
            ),
            (
                "table",
                if self.grown {
                    "GPT moved to the end of the larger target".into()
                } else {
                    "as captured".to_string()
                },
            ),
            (
                "verify",
                if self.verified {
                    "read back, every region matches".into()
                } else {
                    "not requested (--verify)".to_string()
                },
            ),
            (
                "time",
                format!(
                    "{:.2} s, {:.1} MiB/s",
                    self.duration_s, self.throughput_mib_s
                ),
            ),
        ]);
    }
}

/// What the preflight established.
struct Plan {
    snap: Snapshot,
    /// The target does not exist yet: create an image file.
    create: bool,
}

pub fn run(opts: &Options) -> Result<Summary> {
    let start = Instant::now();
    let repo = Repository::open(&opts.repo)?;
    let plan = preflight(&repo, opts).with_context(|| {
        format!(
            "preflight failed; nothing was written to {}",
            opts.target.display()
        )
    })?;
    let m = &plan.snap.manifest;
    let seed = match &opts.seed {
        Some(spec) => Some(
            open_seed(&repo, m, spec, &opts.target, opts.quiet).with_context(|| {
                format!(
                    "preflight failed; nothing was written to {}",
                    opts.target.display()
                )
            })?,
        ),
        None => None,
    };
    let dev = if plan.create {
        Device::create_image(&opts.target, m.disk.size)?
    } else {
        Device::open_write(&opts.target)?
    };
    // The point of no return: from here a failure wipes the table.
    let result = wipe_tables(&dev)
        .context("wipe the old partition table")
        .and_then(|_| write_snapshot(&repo, &plan, &dev, opts, seed.as_ref()));
    let out = match result {
        Ok(r) => r,
        Err(e) => {
            let what = match wipe_tables(&dev) {
                Ok(()) => format!(
                    "restore failed after writing began; the partition table on {} was wiped so the disk cannot boot half-restored",
                    opts.target.display()
                ),
                Err(w) => format!(
                    "restore failed after writing began, and wiping the partition table failed too ({w:#}): do not boot {}",
                    opts.target.display()
                ),
            };
            return Err(e.context(what));
        }
    };
    dev.reread_partitions();
    let filesystem_resize = out.grown_partition.map(|g| grow_filesystem(m, g, &dev));
    let elapsed = start.elapsed();
    let data_bytes = m.data_bytes();
    Ok(Summary {
        snapshot: plan.snap.id.clone(),
        name: m.name.clone(),
        target: opts.target.display().to_string(),
        disk_size: m.disk.size,
        target_size: dev.size,
        data_bytes,
        zero_bytes: out.zero_bytes,
        chunks: m.chunk_ids().count() as u64,
        written_bytes: out.written_bytes,
        kept_chunks: out.kept_chunks,
        kept_bytes: out.kept_bytes,
        seeded_chunks: out.seeded_chunks,
        fetched_chunks: out.fetched_chunks,
        grown: out.relocated,
        grown_partition: out.grown_partition.map(|g| g.0),
        grown_partition_size: out.grown_partition.map(|g| g.1),
        filesystem_resize,
        verified: opts.verify,
        duration_s: elapsed.as_secs_f64(),
        throughput_mib_s: report::mib_per_s(m.disk.size, elapsed),
    })
}

fn preflight(repo: &Repository, opts: &Options) -> Result<Plan> {
    if opts.target.to_string_lossy().contains("://") {
        bail!(
            "target {}: restores go to a block device or an image file",
            opts.target.display()
        );
    }
    let snap = repo.resolve(&opts.snapshot)?;
    let m = &snap.manifest;
    // Every chunk present: asked by as many threads as fetch chunks later (over HTTP
    // each question is a round trip).
    let unique: HashSet<ChunkId> = m.chunk_ids().collect();
    let ids: Vec<ChunkId> = unique.iter().copied().collect();
    let per = ids.len().div_ceil(crate::repo::fetch_workers(repo)).max(1);
    let mut missing: Vec<ChunkId> = thread::scope(|s| {
        let handles: Vec<_> = ids
            .chunks(per)
            .map(|part| {
                s.spawn(move || -> Result<Vec<ChunkId>> {
                    let mut gone = Vec::new();
                    for id in part {
                        if !repo.has_chunk(id)? {
                            gone.push(*id);
                        }
                    }
                    Ok(gone)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow!("a preflight thread panicked"))?
            })
            .collect::<Result<Vec<Vec<ChunkId>>>>()
    })?
    .into_iter()
    .flatten()
    .collect();
    if !missing.is_empty() {
        missing.sort();
        let list: Vec<String> = missing
            .iter()
            .take(5)
            .map(|id| repo.chunk_location(id))
            .collect();
        bail!(
            "snapshot {} is incomplete: {} of its {} chunks are missing from {} (first: {}); run `lifeboat check`",
            snap.short_id(),
            missing.len(),
            unique.len(),
            repo.display,
            list.join(", ")
        );
    }
    // The target: size, sector size, not busy.
    let repo_dir = opts.repo.local_dir();
    guard::check_target(&opts.target, repo_dir)?;
    let (create, target_size, ident) = match std::fs::metadata(&opts.target) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = opts
                .target
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if !parent.is_dir() {
                bail!(
                    "target {} does not exist and neither does its directory",
                    opts.target.display()
                );
            }
            (true, m.disk.size, None)
        }
        Err(e) => return Err(e).with_context(|| format!("stat {}", opts.target.display())),
        Ok(_) => {
            let dev = Device::open_read(&opts.target)?;
            if let Some(ss) = dev.sector_size {
                if ss != m.disk.logical_sector_size {
                    bail!(
                        "target {} has {ss}-byte logical sectors but snapshot {} was captured from a disk with {}-byte sectors; its partition table would not be valid there",
                        opts.target.display(),
                        snap.short_id(),
                        m.disk.logical_sector_size
                    );
                }
            }
            if dev.size < m.disk.size {
                bail!(
                    "target {} is too small: {} ({} bytes); snapshot {} needs at least {} ({} bytes)",
                    opts.target.display(),
                    report::bytes(dev.size),
                    dev.size,
                    snap.short_id(),
                    report::bytes(m.disk.size),
                    m.disk.size
                );
            }
            let (model, serial) = dev.identity();
            (false, dev.size, Some((model, serial)))
        }
    };
    if !create {
        confirm(opts, &snap, target_size, ident.unwrap_or((None, None)))?;
    }
    Ok(Plan { snap, create })
}

/// The user says yes: `--yes`, or by typing the target's serial (its name when it has none).
fn confirm(
    opts: &Options,
    snap: &Snapshot,
    size: u64,
    (model, serial): (Option<String>, Option<String>),
) -> Result<()> {
    if opts.yes {
        return Ok(());
    }
    let token = serial.clone().unwrap_or_else(|| {
        opts.target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| opts.target.display().to_string())
    });
    if !std::io::stdin().is_terminal() {
        bail!(
            "refusing to overwrite {} without confirmation: pass --yes (there is no terminal to ask on)",
            opts.target.display()
        );
    }
    eprintln!(
        "Restoring snapshot {} ({}) will ERASE everything on {} ({}{}{}).",
        snap.short_id(),
        snap.manifest.name,
        opts.target.display(),
        report::bytes(size),
        model.map(|m| format!(", {m}")).unwrap_or_default(),
        serial.map(|s| format!(", serial {s}")).unwrap_or_default()
    );
    eprint!("Type {token} to continue: ");
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("read the confirmation")?;
    if line.trim() != token {
        bail!("confirmation did not match {token:?}");
    }
    Ok(())
}

/// The bytes a restore holds back and writes last: the first MiB (boot code, MBR, primary
/// GPT) and the backup GPT area.
struct Deferred {
    head: Vec<u8>,
    tail_start: u64,
    tail: Vec<u8>,
}

impl Deferred {
    /// Take the parts of [offset, offset+len) that fall in a deferred range; return the
    /// ranges left to write directly, as (start, end).
    fn split(&mut self, offset: u64, len: u64, data: Option<&[u8]>) -> Option<(u64, u64)> {
        let end = offset + len;
        let head_end = self.head.len() as u64;
        let tail_end = self.tail_start + self.tail.len() as u64;
        let copy = |buf: &mut [u8], base: u64, lo: u64, hi: u64| {
            if lo < hi {
                if let Some(d) = data {
                    buf[(lo - base) as usize..(hi - base) as usize]
                        .copy_from_slice(&d[(lo - offset) as usize..(hi - offset) as usize]);
                }
            }
        };
        copy(&mut self.head, 0, offset, end.min(head_end));
        copy(
            &mut self.tail,
            self.tail_start,
            offset.max(self.tail_start),
            end.min(tail_end),
        );
        let lo = offset.max(head_end);
        let hi = end.min(self.tail_start);
        (hi > lo).then_some((lo, hi))
    }
}

/// What the writing phase did.
#[derive(Debug, Default)]
struct Outcome {
    /// The partition `--grow` extended: (number, new size in bytes).
    grown_partition: Option<(u32, u64)>,
    relocated: bool,
    zero_bytes: u64,
    written_bytes: u64,
    kept_chunks: u64,
    kept_bytes: u64,
    seeded_chunks: u64,
    fetched_chunks: u64,
}

/// One stored chunk to put in place.
struct Job {
    seq: u64,
    offset: u64,
    length: u32,
    id: ChunkId,
    /// Read the target there first: if it already holds the chunk, leave it.
    check_in_place: bool,
}

enum Got {
    /// The target already holds it.
    Kept,
    Data {
        data: Vec<u8>,
        from_seed: bool,
    },
}

/// Where an older copy of the chunks may be found.
pub enum Seed {
    /// An image file or device cut the way the snapshot's regions are: chunk id → place.
    Image {
        dev: Device,
        index: HashMap<ChunkId, (u64, u32)>,
    },
    /// The target holds this older snapshot: where it had the same chunk at the same
    /// offset, check in place; elsewhere, write without reading.
    Snapshot(HashSet<(u64, ChunkId)>),
}

/// Cut `dev` along the snapshot's regions with the repository's chunker and index what it
/// holds.
fn index_seed_image(repo: &Repository, m: &Manifest, path: &Path, quiet: bool) -> Result<Seed> {
    let dev = Device::open_read(path)?;
    let mut index = HashMap::new();
    let total: u64 = m
        .regions
        .iter()
        .map(|r| r.length.min(dev.size.saturating_sub(r.offset)))
        .sum();
    let progress = Progress::new("index seed", total, quiet);
    for r in &m.regions {
        if r.offset >= dev.size {
            break;
        }
        let len = r.length.min(dev.size - r.offset);
        let mut c = Chunker::new(RangeReader::new(&dev, r.offset, len), &repo.config.chunker);
        loop {
            let at = r.offset + c.position;
            let Some(data) = c
                .next_chunk()
                .with_context(|| format!("read seed {} at {at}", path.display()))?
            else {
                break;
            };
            index
                .entry(ChunkId::of(data))
                .or_insert((at, data.len() as u32));
            progress.inc(data.len() as u64);
        }
    }
    progress.finish();
    Ok(Seed::Image { dev, index })
}

/// Open the `--seed` given: an existing file or device is an image, anything else names an
/// older snapshot in the repository.
fn open_seed(
    repo: &Repository,
    m: &Manifest,
    spec: &str,
    target: &Path,
    quiet: bool,
) -> Result<Seed> {
    let path = Path::new(spec);
    if path.exists() {
        let same = match (std::fs::canonicalize(path), std::fs::canonicalize(target)) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if same {
            bail!("--seed {spec} is the target itself, which a restore always reuses; name another image");
        }
        return index_seed_image(repo, m, path, quiet)
            .with_context(|| format!("index seed image {spec}"));
    }
    let old = repo
        .resolve(spec)
        .with_context(|| format!("--seed {spec} is neither a file nor a snapshot"))?;
    let places = old
        .manifest
        .regions
        .iter()
        .flat_map(|r| r.chunks.iter())
        .filter_map(|c| c.id.map(|id| (c.offset, id)))
        .collect();
    Ok(Seed::Snapshot(places))
}

fn read_range(dev: &Device, offset: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    dev.read_at(&mut buf, offset)?;
    Ok(buf)
}

/// Make [lo, hi) zero. With `check`, read first and leave pieces that already are.
/// Returns the bytes actually zeroed.
fn zero_range(dev: &Device, lo: u64, hi: u64, check: bool) -> Result<u64> {
    if !check {
        dev.zero_range(lo, hi - lo)?;
        return Ok(hi - lo);
    }
    let mut done = 0;
    let mut pos = lo;
    let mut buf = vec![0u8; MIB as usize];
    while pos < hi {
        let n = (hi - pos).min(MIB) as usize;
        dev.read_at(&mut buf[..n], pos)?;
        if buf[..n].iter().any(|&b| b != 0) {
            dev.zero_range(pos, n as u64)?;
            done += n as u64;
        }
        pos += n as u64;
    }
    Ok(done)
}

fn fetch(repo: &Repository, dev: &Device, seed: Option<&Seed>, j: &Job) -> Result<Got> {
    let len = j.length as usize;
    if j.check_in_place {
        let there = read_range(dev, j.offset, len)?;
        if ChunkId::of(&there) == j.id {
            return Ok(Got::Kept);
        }
    }
    if let Some(Seed::Image { dev: sdev, index }) = seed {
        if let Some(&(at, slen)) = index.get(&j.id) {
            if slen == j.length {
                let data = read_range(sdev, at, len)?;
                // The seed may have changed since it was indexed: use it only if it still
                // holds the chunk.
                if ChunkId::of(&data) == j.id {
                    return Ok(Got::Data {
                        data,
                        from_seed: true,
                    });
                }
            }
        }
    }
    let data = repo.get_chunk(&j.id)?;
    if data.len() != len {
        bail!(
            "chunk {} holds {} bytes but the manifest says {} at offset {}",
            j.id,
            data.len(),
            j.length,
            j.offset
        );
    }
    Ok(Got::Data {
        data,
        from_seed: false,
    })
}

/// Write everything.
fn write_snapshot(
    repo: &Repository,
    plan: &Plan,
    dev: &Device,
    opts: &Options,
    seed: Option<&Seed>,
) -> Result<Outcome> {
    let m = &plan.snap.manifest;
    let ss = m.disk.logical_sector_size as u64;
    let table_len = m
        .regions
        .iter()
        .find(|r| r.kind == RegionKind::Table)
        .map(|r| r.length)
        .unwrap_or(0);
    let head_len = MIB.max(table_len).min(m.disk.size);
    let tail_start = match (&m.disk.gpt, m.disk.table) {
        (Some(g), TableKind::Gpt) => ((g.last_usable_lba + 1) * ss)
            .min(m.disk.size)
            .max(head_len),
        _ => m.disk.size,
    };
    let mut deferred = Deferred {
        head: vec![0; head_len as usize],
        tail_start,
        tail: vec![0; (m.disk.size - tail_start) as usize],
    };
    let progress = Progress::new("restore", m.disk.size, opts.quiet);
    // A fresh image file reads as zeros already; anything else gets its holes zeroed.
    // An existing target is read before it is written: what it already holds stays.
    let reuse = !plan.create && !opts.no_reuse;
    let mut out = Outcome::default();

    // Holes and free space first (no repository reads), then the chunks through the workers.
    let mut jobs: Vec<Job> = Vec::new();
    for r in &m.regions {
        for c in &r.chunks {
            match c.id {
                Some(id) => {
                    let in_deferred =
                        c.offset < head_len || c.offset + c.length as u64 > tail_start;
                    let check_in_place = !in_deferred
                        && match seed {
                            Some(Seed::Snapshot(places)) => places.contains(&(c.offset, id)),
                            _ => reuse,
                        };
                    jobs.push(Job {
                        seq: jobs.len() as u64,
                        offset: c.offset,
                        length: c.length,
                        id,
                        check_in_place,
                    });
                }
                None => {
                    if let Some((lo, hi)) = deferred.split(c.offset, c.length as u64, None) {
                        let zero = !plan.create && (!c.free || opts.zero_free);
                        if zero {
                            out.zero_bytes += zero_range(dev, lo, hi, reuse && dev.is_block)?;
                        }
                    }
                    progress.inc(c.length as u64);
                }
            }
        }
    }

    let workers = crate::repo::fetch_workers(repo);
    let abort = AtomicBool::new(false);
    // Chunks travel in batches of about BATCH bytes: one channel operation per batch, not
    // per chunk. In flight at most: 2 batches queued per worker each way, one in each
    // worker, and what the ordered writer holds back.
    const BATCH: u64 = 2 << 20;
    // At most WINDOW batches (~32 MiB) are between the producer and the disk, wherever
    // they are: queued, in a worker, or held by the ordered writer behind a slow one.
    const WINDOW: usize = 16;
    let mut batches: Vec<Vec<Job>> = Vec::new();
    let mut bytes = BATCH;
    for j in jobs {
        if bytes >= BATCH {
            batches.push(Vec::new());
            bytes = 0;
        }
        bytes += j.length as u64;
        batches.last_mut().unwrap().push(j);
    }
    // The seq just past each batch: the batch is written once the writer gets there.
    let batch_ends: Vec<u64> = batches
        .iter()
        .map(|b| b.last().map(|j| j.seq + 1).unwrap_or(0))
        .collect();
    let (token_tx, token_rx) = bounded::<()>(WINDOW);
    for _ in 0..WINDOW {
        token_tx.send(()).expect("room for the first tokens");
    }
    // Dropped on failure, so that a producer waiting for a token stops.
    let mut token_tx = Some(token_tx);
    let mut batches_done = 0;
    let (job_tx, job_rx) = bounded::<Vec<Job>>(WINDOW);
    let (res_tx, res_rx) = bounded::<Result<Vec<(Job, Got)>>>(WINDOW);
    let mut writer = OrderedWriter::new(dev);
    let mut first_err: Option<anyhow::Error> = None;
    thread::scope(|s| {
        let abort = &abort;
        s.spawn(move || {
            for batch in batches {
                if token_rx.recv().is_err()
                    || abort.load(Ordering::Relaxed)
                    || job_tx.send(batch).is_err()
                {
                    return;
                }
            }
        });
        for _ in 0..workers {
            let (job_rx, res_tx) = (job_rx.clone(), res_tx.clone());
            s.spawn(move || {
                for batch in job_rx.iter() {
                    if abort.load(Ordering::Relaxed) {
                        break;
                    }
                    let r = batch
                        .into_iter()
                        .map(|j| fetch(repo, dev, seed, &j).map(|g| (j, g)))
                        .collect::<Result<Vec<_>>>();
                    if res_tx.send(r).is_err() {
                        break;
                    }
                }
            });
        }
        drop(res_tx);
        drop(job_rx);
        for r in res_rx.iter().flat_map(|batch| match batch {
            Ok(items) => items.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(e) => vec![Err(e)],
        }) {
            if first_err.is_some() {
                continue;
            }
            let r = r.and_then(|(j, got)| {
                progress.inc(j.length as u64);
                match got {
                    Got::Kept => {
                        out.kept_chunks += 1;
                        out.kept_bytes += j.length as u64;
                        writer.push(j.seq, j.offset, Vec::new())
                    }
                    Got::Data { data, from_seed } => {
                        if from_seed {
                            out.seeded_chunks += 1;
                        } else {
                            out.fetched_chunks += 1;
                        }
                        match deferred.split(j.offset, data.len() as u64, Some(&data)) {
                            Some((lo, hi))
                                if lo == j.offset && hi == j.offset + data.len() as u64 =>
                            {
                                writer.push(j.seq, j.offset, data)
                            }
                            Some((lo, hi)) => writer.push(
                                j.seq,
                                lo,
                                data[(lo - j.offset) as usize..(hi - j.offset) as usize].to_vec(),
                            ),
                            None => writer.push(j.seq, j.offset, Vec::new()),
                        }
                    }
                }
            });
            if let Err(e) = r {
                abort.store(true, Ordering::Relaxed);
                first_err = Some(e);
                token_tx = None;
            }
            while batches_done < batch_ends.len() && batch_ends[batches_done] <= writer.next_seq() {
                batches_done += 1;
                if let Some(t) = &token_tx {
                    let _ = t.send(());
                }
            }
        }
    });
    progress.finish();
    if let Some(e) = first_err {
        return Err(e);
    }
    out.written_bytes = writer.finish()?;
    dev.sync()?;

    // The backup table, then the first MiB, last.
    let aligned = dev.size / ss * ss;
    let mut tail_at = deferred.tail_start;
    if m.disk.table == TableKind::Gpt
        && m.disk.gpt.is_some()
        && (aligned > m.disk.size || opts.grow)
    {
        let moved = relocate_gpt(&mut deferred.head, ss as u32, aligned, opts.grow)
            .context("move the backup GPT to the end of the target")?;
        // The old backup area is now mid-disk: clear it, then write the new one at the end.
        if moved.area_offset != deferred.tail_start {
            dev.zero_range(deferred.tail_start, deferred.tail.len() as u64)?;
        }
        deferred.tail = moved.area;
        tail_at = moved.area_offset;
        out.relocated = true;
        out.grown_partition = moved.grown;
    } else if opts.grow {
        bail!(
            "--grow needs a GPT disk; this snapshot has {:?}",
            m.disk.table
        );
    }
    dev.write_at(&deferred.tail, tail_at)?;
    dev.sync()?;
    dev.write_at(&deferred.head, 0)?;
    dev.sync()?;
    out.written_bytes += (deferred.tail.len() + deferred.head.len()) as u64;

    if opts.verify {
        verify(m, dev, &deferred, tail_at, out.relocated)?;
    }
    Ok(out)
}

fn hash_range(dev: &Device, offset: u64, len: u64, free: &[(u64, u64)]) -> Result<String> {
    let mut r = RangeReader::new(dev, offset, len).with_zeros(free);
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = r
            .read(&mut buf)
            .with_context(|| format!("read back {} at {offset}", dev.path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().to_hex().to_string())
}

/// Read every region back and compare with the manifest (or, for a moved GPT, with what
/// was written in its place). Free filesystem space reads as zeros, as at capture.
fn verify(m: &Manifest, dev: &Device, d: &Deferred, tail_at: u64, relocated: bool) -> Result<()> {
    for r in &m.regions {
        let (offset, len, expected) = match (relocated, r.kind) {
            (true, RegionKind::Table) => (
                r.offset,
                r.length,
                blake3::hash(&d.head[..r.length as usize])
                    .to_hex()
                    .to_string(),
            ),
            (true, RegionKind::BackupTable) => (
                tail_at,
                d.tail.len() as u64,
                blake3::hash(&d.tail).to_hex().to_string(),
            ),
            _ => (r.offset, r.length, r.blake3.clone()),
        };
        let free = r
            .filesystem
            .as_ref()
            .map(|f| f.free_ranges(r.offset, r.end()))
            .unwrap_or_default();
        let actual = hash_range(dev, offset, len, &free)?;
        if actual != expected {
            return Err(anyhow!(
                "verification failed: {} of {} reads back as {}, expected {}",
                r.label(),
                dev.path.display(),
                &actual[..16],
                &expected[..16]
            ));
        }
    }
    Ok(())
}

/// After `--grow`: grow an ext2/3/4 filesystem in the grown partition to fill it, with the
/// system's e2fsck and resize2fs. Returns what happened, in words; nothing here fails the
/// restore, which is complete and verified by now.
fn grow_filesystem(m: &Manifest, (number, size): (u32, u64), dev: &Device) -> String {
    let Some(p) = m
        .disk
        .gpt
        .as_ref()
        .and_then(|g| g.partitions.iter().find(|p| p.number == number))
    else {
        return format!("partition {number} is not in the snapshot's table");
    };
    let offset = p.first_lba * m.disk.logical_sector_size as u64;
    let mut head = vec![0u8; crate::disk::fs::PROBE_BYTES];
    if let Err(e) = dev.read_at(&mut head, offset) {
        return format!("could not read partition {number}: {e:#}");
    }
    let kind = crate::disk::fs::probe(&head);
    if !matches!(kind, Some("ext2" | "ext3" | "ext4")) {
        return format!(
            "partition {number} grown; its {} filesystem was left at its old size",
            kind.unwrap_or("unknown")
        );
    }
    let (Some(e2fsck), Some(resize2fs)) =
        (crate::cmd::which("e2fsck"), crate::cmd::which("resize2fs"))
    else {
        return format!("partition {number} grown; resize2fs is not available, so its ext4 filesystem keeps its old size (grow it later with resize2fs)");
    };
    // On a block device, e2fsprogs' "PATH?offset=N" names the filesystem in place. An
    // image file goes through a loop device: resize2fs truncates a regular file to the
    // filesystem's new size, which would cut off the rest of the disk.
    let grown = (|| -> Result<()> {
        let lo = if dev.is_block {
            None
        } else {
            Some(LoopDevice::attach(&dev.path, offset, size)?)
        };
        let spec = match &lo {
            Some(l) => l.path().display().to_string(),
            None => format!("{}?offset={offset}", dev.path.display()),
        };
        crate::cmd::run(std::process::Command::new(&e2fsck).args(["-f", "-p", &spec]))?;
        crate::cmd::run(
            std::process::Command::new(&resize2fs)
                .args([spec.as_str(), &format!("{}K", size / 1024)]),
        )?;
        if let Some(l) = lo {
            l.close()?;
        }
        Ok(())
    })();
    match grown {
        Ok(_) => format!(
            "ext4 in partition {number} grown to {} with resize2fs",
            report::bytes(size)
        ),
        Err(e) => format!("partition {number} grown, but its filesystem was not: {e:#}"),
    }
}
