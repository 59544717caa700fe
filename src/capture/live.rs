//! `capture --live`: a consistent capture of a running machine's disks without a kernel
//! module of our own. Veeam's blksnap, Datto's dattobd and UrBackup's drivers give a
//! copy-on-write view of any block device; Lifeboat uses the one Linux already has for
//! logical volumes: an LVM snapshot (`lvcreate --snapshot`), whose device-mapper suspend
//! freezes the filesystem on the volume for the instant the snapshot is taken.
//!
//! For each disk: every logical volume that is active on it is snapshotted (all of them
//! between the pre- and post-hook, so that the disks of one machine stand for one
//! moment), and the capture reads each volume's extents from its snapshot and the PV's
//! label and metadata as they were before the snapshots existed (so the snapshots are not
//! in the captured volume group). Active swap is read as always (its header only). A
//! filesystem mounted read-write directly on a partition has no copy-on-write view: the
//! capture is refused, saying so. The snapshots are removed when the capture ends,
//! whatever happened.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::disk::fs::Reader;
use crate::disk::guard::{self, InUse};
use crate::disk::source::{Overlay, OverlaySource};
use crate::disk::SourceDisk;
use crate::location::DiskLocation;
use crate::range::ByteRange;

/// The prefix of the snapshots a live capture takes.
pub const SNAPSHOT_PREFIX: &str = "lifeboat-live-";

/// The consistent views of a capture's disks, and the snapshots behind them.
pub struct Live {
    /// Per source disk, in order: what to read over it.
    pub views: Vec<Vec<Overlay>>,
    /// What was done, for the manifest.
    pub reasons: Vec<String>,
    snapshots: Snapshots,
}

/// Snapshots taken, removed when dropped.
struct Snapshots(Vec<String>);

impl Drop for Snapshots {
    fn drop(&mut self) {
        for snap in self.0.drain(..) {
            match crate::cmd::run(Command::new("lvremove").args(["-q", "-f", &snap])) {
                Ok(_) => log::info!("removed the snapshot {snap}"),
                Err(e) => log::warn!("could not remove the snapshot {snap}: {e:#}"),
            }
        }
    }
}

/// A logical volume to snapshot, where it lies on its PV's partition.
struct Volume {
    vg: String,
    lv: String,
    /// Its pieces, `pv_offset` here the offset on the disk.
    pieces: Vec<crate::disk::lvm::LvPiece>,
}

/// Take the snapshots of every source disk's active logical volumes, between the hooks.
pub fn prepare(
    sources: &[DiskLocation],
    pre_hook: Option<&str>,
    post_hook: Option<&str>,
) -> Result<Live> {
    let mut plans = Vec::with_capacity(sources.len());
    let mut reasons = Vec::new();
    for s in sources {
        let DiskLocation::Path(path) = s else {
            bail!("--live reads the block devices of this machine; {s} is not one");
        };
        plans.push(plan_disk(path, &mut reasons).with_context(|| format!("--live on {s}"))?);
    }
    if let Some(h) = pre_hook {
        hook("pre", h)?;
    }
    let mut snapshots = Snapshots(Vec::new());
    let taken = take_snapshots(&plans, &mut snapshots);
    if let Some(h) = post_hook {
        // Always, so that whatever the pre-hook paused resumes.
        let post = hook("post", h);
        taken.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
        post?;
    }
    taken?;
    for v in plans.iter().flat_map(|p| &p.volumes) {
        replay_journal(v, &mut reasons)?;
    }
    let mut views = Vec::with_capacity(plans.len());
    for p in plans {
        views.push(overlays(p, &mut reasons)?);
    }
    Ok(Live {
        views,
        reasons,
        snapshots,
    })
}

impl Live {
    /// The snapshots' names (vg/lv), while they exist.
    pub fn snapshots(&self) -> &[String] {
        &self.snapshots.0
    }
}

/// What one disk needs: its PVs' metadata as it is now, and its volumes to snapshot.
struct DiskPlan {
    metadata: Vec<Overlay>,
    volumes: Vec<Volume>,
}

fn plan_disk(path: &Path, reasons: &mut Vec<String>) -> Result<DiskPlan> {
    let disk = SourceDisk::open_path(path)?;
    ensure_block(&disk, path)?;
    let mut plan = DiskPlan {
        metadata: Vec::new(),
        volumes: Vec::new(),
    };
    // Mounts first: they are refused whatever else the disk holds.
    let mut uses = guard::uses(path)?;
    uses.sort_by_key(|u| !matches!(u, InUse::Mounted { .. }));
    for u in uses {
        match u {
            InUse::Mounted {
                writable: false, ..
            } => {}
            InUse::Mounted { device, points, .. } => bail!(
                "{device} is mounted read-write at {} directly, not on LVM: there is no \
                 copy-on-write view of it to read (Lifeboat has no snapshot driver of its \
                 own, as Veeam's blksnap or Datto's dattobd are). Capture from the rescue, \
                 remount it read-only for the capture, or accept --crash-consistent",
                points.join(", ")
            ),
            InUse::Swap { device } => {
                reasons.push(format!("{device}: active swap, its header alone is read"))
            }
            InUse::Held {
                idle_crypt: true, ..
            } => {}
            InUse::Held {
                device, holders, ..
            } => {
                plan_pv(&disk, &device, &holders, &mut plan, reasons)?;
            }
        }
    }
    Ok(plan)
}

fn ensure_block(disk: &SourceDisk, path: &Path) -> Result<()> {
    if !disk.is_block {
        bail!(
            "{} is not a block device: --live is for the disks of this running machine",
            path.display()
        );
    }
    Ok(())
}

/// A partition held by device mapper: an LVM physical volume whose active volumes are
/// snapshotted; anything else (md, dm-crypt) has no snapshot here.
fn plan_pv(
    disk: &SourceDisk,
    device: &str,
    holders: &[String],
    plan: &mut DiskPlan,
    reasons: &mut Vec<String>,
) -> Result<()> {
    for h in holders {
        let uuid = fs::read_to_string(format!("/sys/block/{h}/dm/uuid")).unwrap_or_default();
        if !uuid.starts_with("LVM-") {
            bail!(
                "{device} is held by {h} ({}), which --live cannot snapshot: capture from \
                 the rescue, or accept --crash-consistent",
                uuid.split('-')
                    .next()
                    .filter(|s| !s.is_empty())
                    .unwrap_or("not LVM")
            );
        }
    }
    let name = device.trim_start_matches("/dev/");
    let start = read_u64(&format!("/sys/class/block/{name}/start"))? * 512;
    let size = read_u64(&format!("/sys/class/block/{name}/size"))? * 512;
    let pv = crate::disk::lvm::layout(&Reader::new(disk, start, size))
        .with_context(|| format!("read the LVM metadata of {device}"))?;
    // The label and metadata before any snapshot is recorded in them.
    let mut head = vec![0u8; pv.pe_start as usize];
    disk.read_at(&mut head, start)?;
    plan.metadata.push(Overlay {
        range: ByteRange::new(start, pv.pe_start),
        source: OverlaySource::Bytes(head),
    });
    let vg = lvm_query(&["pvs", "--noheadings", "-o", "vg_name", device])?;
    let active = lvm_query(&[
        "lvs",
        "--noheadings",
        "--separator",
        "|",
        "-o",
        "lv_name,lv_attr,lv_kernel_major,lv_kernel_minor",
        vg.trim(),
    ])?;
    // Active swap devices, as major:minor.
    let swaps: Vec<String> = crate::disk::detect::swaps()
        .iter()
        .filter_map(|p| fs::metadata(p).ok())
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            let r = m.rdev();
            format!("{}:{}", nix::sys::stat::major(r), nix::sys::stat::minor(r))
        })
        .collect();
    for crate::disk::lvm::LvOnPv { name: lv, pieces } in pv.volumes {
        let fields: Vec<&str> = active
            .lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(&format!("{lv}|")))
            .map(|rest| rest.split('|').map(str::trim).collect())
            .unwrap_or_default();
        let attr = fields.first().copied().unwrap_or("");
        let dev = match fields.as_slice() {
            [_, major, minor] => format!("{major}:{minor}"),
            _ => String::new(),
        };
        // attr[4] is 'a' for an active volume; attr[0] '-' for a plain one.
        let a: Vec<char> = attr.chars().collect();
        if a.get(4) != Some(&'a') {
            continue;
        }
        // Active swap: its header alone is read, as for a swap partition.
        if swaps.contains(&dev) {
            reasons.push(format!(
                "LV {}/{lv}: active swap, its header alone is read",
                vg.trim()
            ));
            continue;
        }
        if a.first() != Some(&'-') && a.first() != Some(&'o') {
            bail!(
                "logical volume {}/{lv} (attributes {attr}) is not a plain volume: --live \
                 snapshots plain and linear volumes only",
                vg.trim()
            );
        }
        refuse_btrfs(disk, start, &pieces, vg.trim(), &lv)?;
        plan.volumes.push(Volume {
            vg: vg.trim().to_string(),
            lv,
            pieces: pieces
                .into_iter()
                .map(|p| crate::disk::lvm::LvPiece {
                    pv_offset: start + p.pv_offset,
                    ..p
                })
                .collect(),
        });
    }
    Ok(())
}

/// A block-level snapshot of a mounted btrfs is a second device with its filesystem's id:
/// btrfs may then take one for the other. Never take one.
fn refuse_btrfs(
    disk: &SourceDisk,
    pv_start: u64,
    pieces: &[crate::disk::lvm::LvPiece],
    vg: &str,
    lv: &str,
) -> Result<()> {
    let map: Vec<(u64, u64)> = pieces
        .iter()
        .map(|p| (pv_start + p.pv_offset, p.len))
        .collect();
    let r = Reader::mapped(disk, &map);
    let head = r.read(0, crate::disk::fs::PROBE_BYTES.min(r.len() as usize))?;
    if crate::disk::fs::probe(&head) == Some(crate::disk::fs::FsKind::Btrfs) {
        bail!(
            "logical volume {vg}/{lv} holds btrfs: an LVM snapshot of it would be a second \
             device with the same filesystem id while it is mounted, which btrfs can confuse \
             with the first. Capture it from the rescue (or read its btrfs snapshots with \
             btrfs's own tools)"
        );
    }
    Ok(())
}

fn read_u64(path: &str) -> Result<u64> {
    fs::read_to_string(path)
        .with_context(|| format!("read {path}"))?
        .trim()
        .parse()
        .with_context(|| format!("parse {path}"))
}

fn lvm_query(args: &[&str]) -> Result<String> {
    crate::cmd::run(Command::new(args[0]).args(&args[1..]))
}

fn hook(which: &str, cmd: &str) -> Result<()> {
    log::info!("running the {which}-hook: {cmd}");
    crate::cmd::run(Command::new("sh").args(["-c", cmd]))
        .with_context(|| format!("--{which}-hook failed"))?;
    Ok(())
}

/// A snapshot of a mounted XFS holds a log that needs replaying (and an ext4 whose
/// freeze left its journal flagged, a journal): mount the snapshot once, which replays
/// it into the snapshot alone, so that its free-space map can be trusted and only its
/// used blocks are read.
fn replay_journal(v: &Volume, reasons: &mut Vec<String>) -> Result<()> {
    let snap = format!("/dev/{}/{SNAPSHOT_PREFIX}{}", v.vg, v.lv);
    let disk = SourceDisk::open_path(Path::new(&snap))?;
    let head = {
        let r = Reader::new(&disk, 0, disk.size);
        r.read(0, crate::disk::fs::PROBE_BYTES.min(disk.size as usize))?
    };
    let (fstype, opts) = match crate::disk::fs::probe(&head) {
        Some(crate::disk::fs::FsKind::Xfs) => ("xfs", "nouuid"),
        Some(k) if k.is_ext() && head.get(0x460).is_some_and(|b| b & 0x4 != 0) => ("ext4", ""),
        _ => return Ok(()),
    };
    crate::disk::mount::TempMount::new(Path::new(&snap), fstype, opts)
        .and_then(|m| m.close())
        .with_context(|| format!("replay the {fstype} log of the snapshot {snap}"))?;
    reasons.push(format!(
        "LV {}/{}: its {fstype} log replayed into its snapshot (mounted once)",
        v.vg, v.lv
    ));
    Ok(())
}

/// Each snapshot gets an equal share of its volume group's free extents: a snapshot
/// holds the old content of every block written to its volume while the capture runs,
/// and one that fills up is lost (its reads fail, naming it).
fn take_snapshots(plans: &[DiskPlan], taken: &mut Snapshots) -> Result<()> {
    let volumes: Vec<&Volume> = plans.iter().flat_map(|p| &p.volumes).collect();
    for (i, v) in volumes.iter().enumerate() {
        let left_in_vg = volumes[i..].iter().filter(|w| w.vg == v.vg).count();
        let name = format!("{SNAPSHOT_PREFIX}{}", v.lv);
        crate::cmd::run(Command::new("lvcreate").args([
            "-q",
            "--snapshot",
            "--extents",
            &format!("{}%FREE", 100 / left_in_vg),
            "--name",
            &name,
            &format!("{}/{}", v.vg, v.lv),
        ]))
        .with_context(|| {
            format!(
                "snapshot {}/{} (its volume group needs free extents to hold what is \
                 written during the capture)",
                v.vg, v.lv
            )
        })?;
        taken.0.push(format!("{}/{name}", v.vg));
    }
    Ok(())
}

/// What to read over one disk: each volume from its snapshot, the PVs' heads as they were.
fn overlays(plan: DiskPlan, reasons: &mut Vec<String>) -> Result<Vec<Overlay>> {
    let mut out = plan.metadata;
    for v in plan.volumes {
        let snap = PathBuf::from(format!("/dev/{}/{SNAPSHOT_PREFIX}{}", v.vg, v.lv));
        let f = File::open(&snap).with_context(|| format!("open {}", snap.display()))?;
        for p in v.pieces {
            out.push(Overlay {
                range: ByteRange::new(p.pv_offset, p.len),
                source: OverlaySource::File(
                    f.try_clone().context("open the snapshot again")?,
                    p.lv_offset,
                ),
            });
        }
        reasons.push(format!(
            "LV {}/{} read from an LVM snapshot (device mapper froze its filesystem as it \
             was taken)",
            v.vg, v.lv
        ));
    }
    Ok(out)
}
