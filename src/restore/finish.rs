//! After the chunks: the partition tables last (the backup moved to the end of a larger
//! target, a partition grown when asked), then a read-back verification, then the
//! filesystem in a grown partition grown to fill it.

use std::io::Read;

use anyhow::{anyhow, bail, Context, Result};

use super::plan::Deferred;
use crate::disk::fs::{probe, FsKind, PROBE_BYTES};
use crate::disk::layout::relocate_gpt;
use crate::disk::TargetDisk;
use crate::io::RangeReader;
use crate::range::ByteRange;
use crate::repo::manifest::{RegionKind, TableKind};
use crate::repo::Manifest;
use crate::ui::bytes;

/// A partition `--grow` extended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrownPartition {
    pub number: u32,
    /// Its new size in bytes.
    pub size: u64,
}

/// How the tables were written.
#[derive(Debug, Default)]
pub struct Tables {
    /// The backup GPT was moved to the end of a larger target.
    pub relocated: bool,
    pub grown: Option<GrownPartition>,
    /// Where the backup area went.
    pub tail_at: u64,
    pub written_bytes: u64,
}

/// The backup table, then the first MiB, last; each made durable before the next.
pub fn write_tables(
    m: &Manifest,
    target: &TargetDisk,
    deferred: &mut Deferred,
    grow: bool,
) -> Result<Tables> {
    let ss = m.disk.logical_sector_size as u64;
    let aligned = target.size / ss * ss;
    let old_tail = deferred.layout.tail;
    let mut tables = Tables {
        tail_at: old_tail.offset,
        ..Default::default()
    };
    if m.disk.table == TableKind::Gpt && m.disk.gpt.is_some() && (aligned > m.disk.size || grow) {
        let moved = relocate_gpt(&mut deferred.head, ss as u32, aligned, grow)
            .context("move the backup GPT to the end of the target")?;
        // The old backup area is now mid-disk: clear it, then write the new one at the end.
        if moved.area_offset != old_tail.offset {
            target.zero(old_tail)?;
        }
        deferred.tail = moved.area;
        tables.tail_at = moved.area_offset;
        tables.relocated = true;
        tables.grown = moved
            .grown
            .map(|(number, size)| GrownPartition { number, size });
    } else if grow {
        bail!(
            "--grow needs a GPT disk; this snapshot has {}",
            m.disk.table
        );
    }
    target.write_at(&deferred.tail, tables.tail_at)?;
    target.sync()?;
    target.write_at(&deferred.head, 0)?;
    target.sync()?;
    tables.written_bytes = (deferred.tail.len() + deferred.head.len()) as u64;
    Ok(tables)
}

fn hash_range(
    target: &TargetDisk,
    r: ByteRange,
    free: &[ByteRange],
    key: Option<&[u8; 32]>,
) -> Result<String> {
    let mut reader = RangeReader::new(target, r.offset, r.len).with_zeros(free);
    let mut h = match key {
        Some(k) => blake3::Hasher::new_keyed(k),
        None => blake3::Hasher::new(),
    };
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = reader
            .read(&mut buf)
            .with_context(|| format!("read back {} at {}", target.path.display(), r.offset))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().to_hex().to_string())
}

/// Read every region back and compare with the manifest (or, for a moved GPT, with what
/// was written in its place). Free filesystem space reads as zeros, as at capture.
/// `key`: the region key of an encrypted repository, whose region hashes are keyed.
pub fn verify(
    m: &Manifest,
    target: &TargetDisk,
    d: &Deferred,
    tables: &Tables,
    key: Option<&[u8; 32]>,
) -> Result<()> {
    let hash = |b: &[u8]| match key {
        Some(k) => blake3::keyed_hash(k, b),
        None => blake3::hash(b),
    };
    for r in &m.regions {
        let (range, expected) = match (tables.relocated, r.kind) {
            (true, RegionKind::Table) => (
                r.range(),
                hash(&d.head[..r.length as usize]).to_hex().to_string(),
            ),
            (true, RegionKind::BackupTable) => (
                ByteRange::new(tables.tail_at, d.tail.len() as u64),
                hash(&d.tail).to_hex().to_string(),
            ),
            _ => (r.range(), r.blake3.clone()),
        };
        let actual = hash_range(target, range, &r.free_ranges(), key)?;
        if actual != expected {
            return Err(anyhow!(
                "verification failed: {} of {} reads back as {}, expected {}",
                r.label(),
                target.path.display(),
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
pub fn grow_filesystem(m: &Manifest, grown: GrownPartition, target: &TargetDisk) -> String {
    let GrownPartition { number, size } = grown;
    let Some(p) = m
        .disk
        .gpt
        .as_ref()
        .and_then(|g| g.partitions.iter().find(|p| p.number == number))
    else {
        return format!("partition {number} is not in the snapshot's table");
    };
    let offset = p.first_lba * m.disk.logical_sector_size as u64;
    let mut head = vec![0u8; PROBE_BYTES];
    if let Err(e) = target.read_at(&mut head, offset) {
        return format!("could not read partition {number}: {e:#}");
    }
    let kind = probe(&head);
    if kind == Some(FsKind::Lvm) {
        return super::lvm_grow::grow(target, number, ByteRange::new(offset, size));
    }
    if !kind.is_some_and(|k| k.is_ext()) {
        return format!(
            "partition {number} grown; its {} filesystem was left at its old size",
            kind.map(|k| k.name()).unwrap_or("unknown")
        );
    }
    let (Some(e2fsck), Some(resize2fs)) =
        (crate::cmd::which("e2fsck"), crate::cmd::which("resize2fs"))
    else {
        return format!("partition {number} grown; resize2fs is not available, so its ext4 filesystem keeps its old size (grow it later with resize2fs)");
    };
    match super::resize::resize_ext(
        target,
        ByteRange::new(offset, size),
        size,
        &e2fsck,
        &resize2fs,
    ) {
        Ok(_) => format!(
            "ext4 in partition {number} grown to {} with resize2fs",
            bytes(size)
        ),
        Err(e) => format!("partition {number} grown, but its filesystem was not: {e:#}"),
    }
}
