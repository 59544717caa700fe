//! Restore: check everything before touching the target, then stream the snapshot onto it
//! with every chunk verified, the partition table written last, and the table wiped if
//! anything fails after the first write.

use std::collections::HashSet;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use crossbeam_channel::{bounded, unbounded};
use serde::Serialize;

use crate::disk::device::wipe_tables;
use crate::disk::layout::relocate_gpt;
use crate::disk::{guard, Device};
use crate::io::{Progress, RangeReader};
use crate::repo::manifest::{RegionKind, TableKind};
use crate::repo::{ChunkId, Repository, Snapshot};
use crate::report;

const MIB: u64 = 1 << 20;

pub struct Options {
    pub repo: String,
    pub snapshot: String,
    pub target: PathBuf,
    pub yes: bool,
    pub verify: bool,
    pub quiet: bool,
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
    pub grown: bool,
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
    let dev = if plan.create {
        Device::create_image(&opts.target, m.disk.size)?
    } else {
        Device::open_write(&opts.target)?
    };
    // The point of no return: from here a failure wipes the table.
    let result = wipe_tables(&dev)
        .context("wipe the old partition table")
        .and_then(|_| write_snapshot(&repo, &plan, &dev, opts));
    let (grown, zero_bytes) = match result {
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
    let elapsed = start.elapsed();
    let data_bytes = m.data_bytes();
    Ok(Summary {
        snapshot: plan.snap.id.clone(),
        name: m.name.clone(),
        target: opts.target.display().to_string(),
        disk_size: m.disk.size,
        target_size: dev.size,
        data_bytes,
        zero_bytes,
        chunks: m.chunk_ids().count() as u64,
        grown,
        verified: opts.verify,
        duration_s: elapsed.as_secs_f64(),
        throughput_mib_s: report::mib_per_s(m.disk.size, elapsed),
    })
}

fn preflight(repo: &Repository, opts: &Options) -> Result<Plan> {
    let snap = repo.resolve(&opts.snapshot)?;
    let m = &snap.manifest;
    // Every chunk present.
    let unique: HashSet<ChunkId> = m.chunk_ids().collect();
    let mut missing = Vec::new();
    for id in &unique {
        if !repo.has_chunk(id)? {
            missing.push(*id);
        }
    }
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
    let repo_dir = (!opts.repo.contains("://")).then(|| Path::new(&opts.repo));
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

/// Write everything; returns (grown, zero bytes written).
fn write_snapshot(
    repo: &Repository,
    plan: &Plan,
    dev: &Device,
    opts: &Options,
) -> Result<(bool, u64)> {
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
    let zero_holes = !plan.create;
    let mut zero_bytes = 0u64;

    // Holes first (cheap, no repository reads), then the chunks through the workers.
    let mut jobs: Vec<(u64, u32, ChunkId)> = Vec::new();
    for r in &m.regions {
        for c in &r.chunks {
            match c.id {
                Some(id) => jobs.push((c.offset, c.length, id)),
                None => {
                    if let Some((lo, hi)) = deferred.split(c.offset, c.length as u64, None) {
                        if zero_holes {
                            dev.zero_range(lo, hi - lo)?;
                            zero_bytes += hi - lo;
                        }
                    }
                    progress.inc(c.length as u64);
                }
            }
        }
    }

    let workers = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let abort = AtomicBool::new(false);
    let (job_tx, job_rx) = bounded::<(u64, u32, ChunkId)>(workers * 4);
    let (res_tx, res_rx) = unbounded::<Result<(u64, Vec<u8>)>>();
    let mut first_err: Option<anyhow::Error> = None;
    thread::scope(|s| {
        let abort = &abort;
        s.spawn(move || {
            for j in jobs {
                if abort.load(Ordering::Relaxed) || job_tx.send(j).is_err() {
                    break;
                }
            }
        });
        for _ in 0..workers {
            let (job_rx, res_tx) = (job_rx.clone(), res_tx.clone());
            s.spawn(move || {
                for (offset, length, id) in job_rx.iter() {
                    if abort.load(Ordering::Relaxed) {
                        break;
                    }
                    let r = repo.get_chunk(&id).map_err(anyhow::Error::new).and_then(|data| {
                        if data.len() != length as usize {
                            bail!("chunk {id} holds {} bytes but the manifest says {length} at offset {offset}", data.len());
                        }
                        Ok((offset, data))
                    });
                    if res_tx.send(r).is_err() {
                        break;
                    }
                }
            });
        }
        drop(res_tx);
        for r in res_rx.iter() {
            if first_err.is_some() {
                continue;
            }
            let r = r.and_then(|(offset, data)| {
                if let Some((lo, hi)) = deferred.split(offset, data.len() as u64, Some(&data)) {
                    dev.write_at(&data[(lo - offset) as usize..(hi - offset) as usize], lo)?;
                }
                progress.inc(data.len() as u64);
                Ok(())
            });
            if let Err(e) = r {
                abort.store(true, Ordering::Relaxed);
                first_err = Some(e);
            }
        }
    });
    progress.finish();
    if let Some(e) = first_err {
        return Err(e);
    }
    dev.sync()?;

    // The backup table, then the first MiB, last.
    let aligned = dev.size / ss * ss;
    let grown = m.disk.table == TableKind::Gpt && m.disk.gpt.is_some() && aligned > m.disk.size;
    let mut tail_at = deferred.tail_start;
    if grown {
        let (area, at) = relocate_gpt(&mut deferred.head, ss as u32, aligned)
            .context("move the backup GPT to the end of the larger target")?;
        // The old backup area is now mid-disk: clear it, then write the new one at the end.
        dev.zero_range(deferred.tail_start, deferred.tail.len() as u64)?;
        deferred.tail = area;
        tail_at = at;
    }
    dev.write_at(&deferred.tail, tail_at)?;
    dev.sync()?;
    dev.write_at(&deferred.head, 0)?;
    dev.sync()?;

    if opts.verify {
        verify(m, dev, &deferred, tail_at, grown)?;
    }
    Ok((grown, zero_bytes))
}

fn hash_range(dev: &Device, offset: u64, len: u64) -> Result<String> {
    let mut r = RangeReader::new(&dev.file, offset, len);
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
/// was written in its place).
fn verify(
    m: &crate::repo::Manifest,
    dev: &Device,
    d: &Deferred,
    tail_at: u64,
    grown: bool,
) -> Result<()> {
    for r in &m.regions {
        let (offset, len, expected) = match (grown, r.kind) {
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
        let actual = hash_range(dev, offset, len)?;
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
