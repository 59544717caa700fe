//! The filesystems of servers: XFS, btrfs and NTFS, each made by its own mkfs over old
//! garbage and filled with real files, are captured reading only their used blocks; the
//! garbage is not stored, the restored filesystem passes its own checker and holds the
//! same tree; doubtful metadata falls back to a full read with the reason.

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

/// (offset, length) of partition 1, the filesystem, in a snapshot's manifest.
fn partition(m: &Value) -> (u64, u64) {
    let r = regions(m).into_iter().find(|r| r.1 == Some(1)).unwrap();
    (r.2, r.3)
}

/// Every file with its type, mode, size and content hash, under the filesystem at
/// (off, len) of `img` mounted read-only with `mount` (a command taking DEV and DIR).
fn tree(img: &Path, (off, len): (u64, u64), env: &Env, name: &str, mount: &str) -> String {
    let lo = Loop::attach_range(img, off, len);
    let mnt = env.path(name);
    std::fs::create_dir_all(&mnt).unwrap();
    sh(&format!("{mount} {} {}", lo.dev, mnt.display()));
    let _m = Mount { point: mnt.clone() };
    sh(&format!(
        "cd {} && find . -printf '%p %y %M %s %l\\n' | sort && find . -type f -exec sha256sum {{}} + | sort",
        mnt.display()
    ))
}

/// What a filesystem-aware capture and a full one of `src` stored.
struct Stored {
    summary: Value,
    aware: u64,
    full: u64,
}

fn capture_both(env: &Env, src: &Path, what: &str) -> Stored {
    env.init();
    let summary = env.capture(src, "s");
    let full_repo = env.path("full").display().to_string();
    ok(&["init", "-q", "--repo", &full_repo]);
    let mut args = capture_args(&full_repo, src, "s").to_vec();
    args.push("--full");
    let f: Value = serde_json::from_slice(&ok(&args).stdout).unwrap();
    let stored = Stored {
        aware: summary["new_stored_bytes"].as_u64().unwrap(),
        full: f["new_stored_bytes"].as_u64().unwrap(),
        summary,
    };
    eprintln!(
        "{what}: read {} B, stored {} B aware of the filesystem; {} B read in full",
        stored.summary["bytes_read"], stored.aware, stored.full
    );
    stored
}

fn flip(img: &Path, at: u64) {
    let mut byte = read_at(img, at, 1);
    byte[0] ^= 0x01;
    let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &byte, at).unwrap();
}

fn notes(s: &Value) -> String {
    s["notes"].to_string()
}

#[test]
fn xfs_is_read_by_its_free_space_trees_and_checks_clean() {
    let env = Env::new();
    let src = env.disk("xfs", "src.img");
    let s = capture_both(&env, &src, "xfs");
    assert!(
        notes(&s.summary).contains("partition 1: xfs"),
        "{}",
        notes(&s.summary)
    );
    // 320 MiB of garbage under some 90 MiB in use (20 MiB of files, a 64 MiB log):
    // at least 200 MiB of it is neither read nor stored.
    assert!(s.summary["free_bytes_skipped"].as_u64().unwrap() > 200 << 20);
    assert!(s.full > s.aware + (200 << 20), "{} vs {}", s.full, s.aware);

    let m = env.manifest(s.summary["snapshot"].as_str().unwrap());
    let part = partition(&m);
    let dst = env.path("dst.img");
    let o = env.restore("s", &dst, &["--verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
    {
        let lo = Loop::attach_range(&dst, part.0, part.1);
        sh(&format!("xfs_repair -n {}", lo.dev));
    }
    let mount = "mount -o ro,norecovery";
    assert_eq!(
        tree(&dst, part, &env, "m-dst", mount),
        tree(&src, part, &env, "m-src", mount)
    );

    // XFS cannot shrink: a smaller target is refused, saying so, and left as it was.
    let small = env.path("small.img");
    std::fs::write(&small, vec![0x5a; 200 << 20]).unwrap();
    let before = hash_file(&small);
    let err = stderr(&env.restore("s", &small, &["--yes"]));
    assert!(err.contains("XFS, which cannot shrink"), "{err}");
    assert_eq!(hash_file(&small), before);

    // A corrupt allocation-group header: that filesystem is read in full, saying why,
    // and comes back byte for byte.
    let sb = read_at(&src, part.0, 512);
    let be32 = |o: usize| u32::from_be_bytes(sb[o..o + 4].try_into().unwrap()) as u64;
    let (block, ag_blocks, sector) = (be32(4), be32(84), (be32(100) & 0xFFFF));
    flip(&src, part.0 + ag_blocks * block + sector + 52);
    let c = env.capture(&src, "c");
    let n = notes(&c);
    assert!(
        n.contains("xfs metadata not usable (allocation group 1: the AGF's checksum does not match); read in full"),
        "{n}"
    );
    let dst = env.path("c.img");
    assert!(env.restore("c", &dst, &[]).status.success());
    assert_eq!(hash_file(&dst), hash_file(&src));
    flip(&src, part.0 + ag_blocks * block + sector + 52);

    // Mounted read-write and just written to, its log needs recovery and its on-disk
    // free-space trees lag behind: the capture (asked for knowingly) takes the free space
    // from the kernel, and the new file, in blocks free on disk, comes back.
    let lo = Loop::attach_range(&src, part.0, part.1);
    let m = Mount::new(&lo.dev, &env.path("rw"));
    sh(&format!(
        "head -c 24M /dev/urandom > {0}/new-file && sha256sum < {0}/new-file > {1} && sync -f {0}/new-file",
        m.point.display(),
        env.path("new-file.sum").display()
    ));
    let repo = env.repo();
    let mut args = capture_args(&repo, &src, "d").to_vec();
    args.push("--crash-consistent");
    let d: Value = serde_json::from_slice(&ok(&args).stdout).unwrap();
    drop(m);
    drop(lo);
    let n = notes(&d);
    assert!(
        n.contains(&format!(
            "partition 1: mounted read-write at {}: its free space as the kernel reports it (FS_IOC_GETFSMAP)",
            env.path("rw").display()
        )),
        "{n}"
    );
    assert!(d["free_bytes_skipped"].as_u64().unwrap() > 150 << 20, "{d}");
    eprintln!(
        "xfs mounted read-write, FS_IOC_GETFSMAP: read {} B, skipped {} B",
        d["bytes_read"], d["free_bytes_skipped"]
    );
    let dst = env.path("d.img");
    assert!(env.restore("d", &dst, &[]).status.success());
    // Mounting the restored copy replays its log, as a crashed machine's would be.
    let lo = Loop::attach_range(&dst, part.0, part.1);
    let m = Mount::new(&lo.dev, &env.path("back"));
    let sum = sh(&format!("sha256sum < {}/new-file", m.point.display()));
    assert_eq!(
        sum,
        std::fs::read_to_string(env.path("new-file.sum")).unwrap()
    );
    drop(m);
    sh(&format!("xfs_repair -n {}", lo.dev));
}

#[test]
fn btrfs_is_read_by_its_chunks_and_extents_and_checks_clean() {
    let env = Env::new();
    let src = env.disk("btrfs", "src.img");
    let s = capture_both(&env, &src, "btrfs");
    let n = notes(&s.summary);
    assert!(n.contains("partition 1: btrfs"), "{n}");
    // 160 MiB over garbage: btrfs allocates some 120 MiB of chunks (DUP metadata) for
    // 25 MiB of extents. Neither the unallocated space nor the empty insides of the
    // chunks are stored.
    assert!(s.summary["free_bytes_skipped"].as_u64().unwrap() > 110 << 20);
    assert!(s.full > s.aware + (100 << 20), "{} vs {}", s.full, s.aware);

    let m = env.manifest(s.summary["snapshot"].as_str().unwrap());
    let part = partition(&m);
    let dst = env.path("dst.img");
    let o = env.restore("s", &dst, &["--verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
    {
        let lo = Loop::attach_range(&dst, part.0, part.1);
        sh(&format!("btrfs check --readonly {}", lo.dev));
    }
    let mount = "mount -o ro";
    assert_eq!(
        tree(&dst, part, &env, "m-dst", mount),
        tree(&src, part, &env, "m-src", mount)
    );

    // The device item's bytes_used no longer what its chunks take (the superblock's
    // checksum made right again): read in full, saying why, and back byte for byte.
    let sb_at = part.0 + 0x10000;
    let mut sb = read_at(&src, sb_at, 4096);
    sb[0xc9 + 16] ^= 0x10;
    let crc = !lifeboat::disk::fs::crc::crc32c(!0, &sb[0x20..]);
    sb[..4].copy_from_slice(&crc.to_le_bytes());
    let f = std::fs::OpenOptions::new().write(true).open(&src).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &sb, sb_at).unwrap();
    let c = env.capture(&src, "c");
    let n = notes(&c);
    assert!(
        n.contains("btrfs metadata not usable (its chunks take ")
            && n.contains("its device item says"),
        "{n}"
    );
    let dst = env.path("c.img");
    assert!(env.restore("c", &dst, &[]).status.success());
    assert_eq!(hash_file(&dst), hash_file(&src));
}

#[test]
fn btrfs_with_a_pending_log_tree_is_read_by_its_chunks() {
    let env = Env::new();
    let src = env.disk("btrfs", "src.img");
    env.init();
    let m = env.manifest(env.capture(&src, "s")["snapshot"].as_str().unwrap());
    let part = partition(&m);
    // Mounted and written to with fsync: a log tree is pending.
    let lo = Loop::attach_range(&src, part.0, part.1);
    let mnt = Mount::new(&lo.dev, &env.path("rw"));
    sh(&format!(
        "dd if=/dev/urandom of={}/new bs=64k count=4 conv=fsync status=none",
        mnt.point.display()
    ));
    let repo = env.repo();
    // btrfs reports its own device number for a mount: the mount is found all the same.
    let err = fails(&capture_args(&repo, &src, "d"));
    assert!(
        err.contains(&format!("{} is mounted read-write at", lo.dev)),
        "{err}"
    );
    let mut args = capture_args(&repo, &src, "d").to_vec();
    args.push("--crash-consistent");
    let d: Value = serde_json::from_slice(&ok(&args).stdout).unwrap();
    let n = notes(&d);
    assert!(n.contains("partition 1: a log tree is pending"), "{n}");
    // Whole chunks, still not the unallocated garbage.
    let skipped = d["free_bytes_skipped"].as_u64().unwrap();
    assert!(skipped > 20 << 20 && skipped < 60 << 20, "{skipped}");
}

#[test]
fn ntfs_is_read_by_its_bitmap_and_checks_clean() {
    let env = Env::new();
    let src = env.disk("ntfs", "src.img");
    let s = capture_both(&env, &src, "ntfs");
    let n = notes(&s.summary);
    assert!(n.contains("partition 1: ntfs"), "{n}");
    // 128 MiB over garbage, some 27 MiB in use.
    assert!(s.summary["free_bytes_skipped"].as_u64().unwrap() > 80 << 20);
    assert!(s.full > s.aware + (80 << 20), "{} vs {}", s.full, s.aware);

    let m = env.manifest(s.summary["snapshot"].as_str().unwrap());
    let part = partition(&m);
    let dst = env.path("dst.img");
    let o = env.restore("s", &dst, &["--verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The backup boot sector, in the partition's last sector, outside every cluster.
    let last = part.0 + part.1 - 512;
    assert_eq!(hash_range(&dst, last, 512), hash_range(&src, last, 512));
    {
        let lo = Loop::attach_range(&dst, part.0, part.1);
        let out = sh(&format!("ntfsfix -n {} 2>&1", lo.dev));
        assert!(
            out.contains("NTFS partition") && !out.contains("FAILED"),
            "{out}"
        );
    }
    let mount = "ntfs-3g -o ro";
    assert_eq!(
        tree(&dst, part, &env, "m-dst", mount),
        tree(&src, part, &env, "m-src", mount)
    );

    // Mounted read-write by ntfs-3g (FUSE): the capture is refused, naming the mount.
    let lo = Loop::attach_range(&src, part.0, part.1);
    let mnt = env.path("rw");
    std::fs::create_dir_all(&mnt).unwrap();
    sh(&format!("ntfs-3g {} {}", lo.dev, mnt.display()));
    let mounted = Mount { point: mnt.clone() };
    let err = fails(&capture_args(&env.repo(), &src, "rw"));
    assert!(
        err.contains(&format!("{} is mounted read-write at", lo.dev)),
        "{err}"
    );
    // A hibernation file in use in the root directory (Windows' Fast Startup leaves one):
    // read in full, saying why, and back byte for byte.
    sh(&format!(
        "(printf hibr; head -c 65536 /dev/urandom) > {}/hiberfil.sys",
        mnt.display()
    ));
    drop(mounted);
    drop(lo);
    let c = env.capture(&src, "c");
    let n = notes(&c);
    assert!(
        n.contains("ntfs metadata not usable (its root directory: Windows is hibernated"),
        "{n}"
    );
    let dst = env.path("c.img");
    assert!(env.restore("c", &dst, &[]).status.success());
    assert_eq!(hash_file(&dst), hash_file(&src));

    // Marked dirty (as Windows leaves a volume it did not unmount cleanly): read in full,
    // saying why, and back byte for byte.
    set_ntfs_dirty(&src, part.0);
    let d = env.capture(&src, "d");
    let n = notes(&d);
    assert!(
        n.contains(
            "ntfs metadata not usable (it is marked dirty (not cleanly unmounted: run chkdsk))"
        ),
        "{n}"
    );
    let dst = env.path("d.img");
    assert!(env.restore("d", &dst, &[]).status.success());
    assert_eq!(hash_file(&dst), hash_file(&src));
}

/// Set VOLUME_IS_DIRTY in the volume information of `$Volume` (MFT record 3) of the NTFS
/// at byte `part` of `img`, as `chkdsk` would find it after a crash.
fn set_ntfs_dirty(img: &Path, part: u64) {
    use std::os::unix::fs::FileExt;
    let le = |b: &[u8], at: usize, n: usize| -> u64 {
        b[at..at + n]
            .iter()
            .rev()
            .fold(0, |v, &x| v << 8 | x as u64)
    };
    let boot = read_at(img, part, 512);
    let cluster = le(&boot, 0x0B, 2) * boot[0x0D] as u64;
    let record_size = match boot[0x40] as i8 {
        n if n < 0 => 1u64 << -n,
        n => n as u64 * cluster,
    };
    let record_at = part + le(&boot, 0x30, 8) * cluster + 3 * record_size;
    let record = read_at(img, record_at, record_size as usize);
    assert_eq!(&record[..4], b"FILE");
    let mut at = le(&record, 0x14, 2) as usize;
    while le(&record, at, 4) != 0x70 {
        assert_ne!(le(&record, at, 4), 0xFFFF_FFFF, "no volume information");
        at += le(&record, at + 4, 4) as usize;
    }
    let flags = at + le(&record, at + 0x14, 2) as usize + 10;
    // Not where the update sequence numbers replace the last bytes of each sector.
    assert!(flags % 512 < 510, "{flags}");
    let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    let v = le(&record, flags, 2) as u16 | 1;
    f.write_all_at(&v.to_le_bytes(), record_at + flags as u64)
        .unwrap();
}

/// The segments (offset in the PV, length) of logical volume `lv` on the PV that `dev`
/// is, from lvm2's own tools (no activation, no device mapper).
fn lv_segments(dev: &str, lv: &str) -> Vec<(u64, u64)> {
    let q = |what: &str| lvm_query(dev, what);
    let pe_start: u64 = q(&format!(
        "pvs --noheadings --units b --nosuffix -o pe_start {dev}"
    ))
    .trim()
    .parse()
    .unwrap();
    let extent: u64 = q("vgs --noheadings --units b --nosuffix -o vg_extent_size")
        .trim()
        .parse()
        .unwrap();
    q("lvs --noheadings --segments -o lv_name,seg_pe_ranges")
        .lines()
        .filter(|l| l.split_whitespace().next() == Some(lv))
        .map(|l| {
            let range = l.split(':').next_back().unwrap().trim();
            let (a, b) = range.split_once('-').unwrap();
            let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
            (pe_start + a * extent, (b - a + 1) * extent)
        })
        .collect()
}

/// An lvm2 command's output, seeing only the PV `dev` and activating nothing.
fn lvm_query(dev: &str, what: &str) -> String {
    let conf = format!("devices {{ filter=[\"a|^{dev}$|\",\"r|.*|\"] }} global {{ activation=0 }}");
    sh(&format!(
        "LVM_SUPPRESS_FD_WARNINGS=1 {what} --config '{conf}' 2>/dev/null"
    ))
}

/// The free bytes of the volume group on the PV `dev`.
fn vg_free(dev: &str) -> u64 {
    lvm_query(dev, "vgs --noheadings --units b --nosuffix -o vg_free")
        .trim()
        .parse()
        .unwrap()
}

/// The bytes of a logical volume's segments, in order, into a file of their own.
fn assemble(img: &Path, part: u64, segs: &[(u64, u64)], out: &Path) {
    let mut data = Vec::new();
    for &(off, len) in segs {
        data.extend(read_at(img, part + off, len as usize));
    }
    std::fs::write(out, data).unwrap();
}

#[test]
fn lvm_volumes_are_read_through_their_segments_and_come_back() {
    let env = Env::new();
    let src = env.disk("lvm", "src.img");
    let s = capture_both(&env, &src, "lvm");
    let n = notes(&s.summary);
    for lv in ["LV root: xfs", "LV data: ext4", "LV swap: swap"] {
        assert!(n.contains(lv), "{n}");
    }
    // 520 MiB of garbage: some 100 MiB is in use (files, XFS's log, metadata); the
    // removed volume's extents, the free extents and the free space inside each
    // filesystem are neither read nor stored.
    assert!(s.summary["free_bytes_skipped"].as_u64().unwrap() > 380 << 20);
    assert!(s.full > s.aware + (380 << 20), "{} vs {}", s.full, s.aware);

    let m = env.manifest(s.summary["snapshot"].as_str().unwrap());
    let part = partition(&m);
    let dst = env.path("dst.img");
    let o = env.restore("s", &dst, &["--verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // lvm2 reads the restored volume group as it was: no vgcfgrestore.
    let (segs, data_segs, free) = {
        let lo = Loop::attach_range(&dst, part.0, part.1);
        let segs = lv_segments(&lo.dev, "root");
        let data = lv_segments(&lo.dev, "data");
        assert_eq!((segs.len(), data.len()), (1, 2), "{segs:?} {data:?}");
        assert!(lv_segments(&lo.dev, "tmp").is_empty());
        (segs, data, vg_free(&lo.dev))
    };
    let root = (part.0 + segs[0].0, segs[0].1);
    {
        let lo = Loop::attach_range(&dst, root.0, root.1);
        sh(&format!("xfs_repair -n {}", lo.dev));
    }
    let mount = "mount -o ro,norecovery";
    assert_eq!(
        tree(&dst, root, &env, "root-dst", mount),
        tree(&src, root, &env, "root-src", mount)
    );
    // The ext4 volume in two segments, put together: it checks clean and holds the same.
    let (a, b) = (env.path("data-src.img"), env.path("data-dst.img"));
    assemble(&src, part.0, &data_segs, &a);
    assemble(&dst, part.0, &data_segs, &b);
    sh(&format!("e2fsck -fn {}", b.display()));
    let len = std::fs::metadata(&a).unwrap().len();
    assert_eq!(
        tree(&b, (0, len), &env, "data-dst", "mount -o ro,noload"),
        tree(&a, (0, len), &env, "data-src", "mount -o ro,noload")
    );

    // Onto a disk 200 MiB larger with --grow: the partition, the PV and the volume at
    // its end (data, whose second piece is last) grow by what the PV gained, and the
    // group keeps its free extents (room for snapshots); the ext4 in data is in two
    // pieces, which only device mapper joins, so it is left, saying how to grow it.
    let big = env.path("big.img");
    let fs = restore_grown(
        &env,
        &big,
        std::fs::metadata(&src).unwrap().len() + (200 << 20),
    );
    assert!(
        fs.contains("LVM physical volume in partition 1 and ")
            && fs.contains("/data grown by 200.0 MiB; its filesystem was left at its old size: the volume is in 2 pieces"),
        "{fs}"
    );
    let first = sgdisk_sector(&big, 1, "First sector") * 512;
    let end = (sgdisk_sector(&big, 1, "Last sector") + 1) * 512;
    let lo = Loop::attach_range(&big, first, end - first);
    let data = lv_segments(&lo.dev, "data");
    assert_eq!(data.len(), 2, "{data:?}");
    assert_eq!(data[1].1, data_segs[1].1 + (200 << 20));
    assert_eq!(lv_segments(&lo.dev, "root"), segs);
    assert_eq!(vg_free(&lo.dev), free);
    assert!(free > 64 << 20, "{free}");
}

/// A digest of every file under /mnt, and the filesystem's check, in the guest.
const TREE_DIGEST: &str =
    "(cd /mnt && find . -type f | sort | xargs sha256sum | sha256sum | sed 's/^/digest /')";

#[test]
fn md_mirrors_are_read_through_their_members_and_the_halves_deduplicate() {
    let env = Env::new();
    // Two disks, each with three partitions over garbage (md's resync copies it from one
    // half to the other, as it would on a server): md0 (superblock 1.2, at 4 KiB),
    // md1 (superblock 1.0, at the end: the filesystem starts where the partition does,
    // so a reader that took it for the filesystem would drop the superblock) and md2
    // (0.90, as old installers made, also at the end).
    let disks: Vec<std::path::PathBuf> = ["a.img", "b.img"].iter().map(|n| env.path(n)).collect();
    for d in &disks {
        sh(&format!(
            "truncate -s 260M {0} && sgdisk -o -n 1:2048:+96M -t 1:fd00 -n 2:0:+96M -t 2:fd00 \
               -n 3:0:+64M -t 3:fd00 {0} >/dev/null && \
             dd if=/dev/urandom of={0} bs=1M seek=1 count=256 conv=notrunc status=none",
            d.display()
        ));
    }
    let make = format!(
        "for n in 0 1 2; do
           meta=1.2; [ $n = 1 ] && meta=1.0; [ $n = 2 ] && meta=0.90
           p=$((n + 1))
           mdadm --create /dev/md$n --run --level=1 --raid-devices=2 --metadata=$meta /dev/vda$p /dev/vdb$p 2>/dev/null
           mkfs.ext4 -q -E nodiscard -L md$n /dev/md$n
           mount /dev/md$n /mnt
           what='/sbin /lib'; [ $n = 2 ] && what=/sbin
           cp -a $what /mnt/ && echo md$n > /mnt/name
           {TREE_DIGEST}
           umount /mnt
           mdadm --wait /dev/md$n || true
           mdadm --stop /dev/md$n 2>/dev/null
         done"
    );
    let refs: Vec<&Path> = disks.iter().map(|p| p.as_path()).collect();
    let made = guest(&env, &make, &refs);
    let digests: Vec<&str> = made.lines().filter(|l| l.starts_with("digest")).collect();
    assert_eq!(digests.len(), 3, "{made}");

    // One member alone, then the machine's two disks: the second half adds little.
    let one_repo = env.path("one").display().to_string();
    ok(&["init", "-q", "--repo", &one_repo]);
    let one: Value =
        serde_json::from_slice(&ok(&capture_args(&one_repo, &disks[0], "one")).stdout).unwrap();
    let repo = env.init();
    let mut args = capture_args(&repo, &disks[0], "pair").to_vec();
    args.extend(["--source", path_str(&disks[1])]);
    let both: Value = serde_json::from_slice(&ok(&args).stdout).unwrap();
    let n = notes(&both);
    for v in ["1.2", "1.0"] {
        assert!(
            n.contains(&format!(
                "md RAID1 member (superblock {v}, 2 devices) holding ext4"
            )),
            "{n}"
        );
    }
    assert!(
        n.contains("partition 3: an md member with a 0.90 superblock (level 1) is read whole"),
        "{n}"
    );
    let (a, ab) = (
        one["new_stored_bytes"].as_u64().unwrap(),
        both["new_stored_bytes"].as_u64().unwrap(),
    );
    eprintln!("md: one member stored {a} B, both members {ab} B");

    assert!(
        ab < a + a / 4,
        "the mirror's halves did not deduplicate: {a} vs {ab}"
    );
    // 4 x 96 MiB of arrays over garbage, each about half full (the guest's /sbin and
    // /lib): the garbage in the other half is not read (the 0.90 members are read whole).
    assert!(
        both["free_bytes_skipped"].as_u64().unwrap() > 120 << 20,
        "{both}"
    );

    // Restored onto blank disks, both arrays assemble, check clean and hold the same.
    let (x, y) = (env.path("x.img"), env.path("y.img"));
    let mut r = restore_args(&repo, "pair", &x);
    r.extend(["--target", path_str(&y), "--verify"]);
    ok(&r);
    let check = format!(
        "for n in 0 1 2; do
           p=$((n + 1))
           mdadm --assemble --run /dev/md$n /dev/vda$p /dev/vdb$p 2>/dev/null
           e2fsck -fn /dev/md$n >/dev/null
           mount -o ro /dev/md$n /mnt
           {TREE_DIGEST}
           umount /mnt
           mdadm --stop /dev/md$n 2>/dev/null
         done"
    );
    let checked = guest(&env, &check, &[&x, &y]);
    let again: Vec<&str> = checked
        .lines()
        .filter(|l| l.starts_with("digest"))
        .collect();
    assert_eq!(again, digests, "{checked}");
}

#[test]
fn a_striped_md_member_is_never_taken_for_the_filesystem_it_starts_with() {
    let env = Env::new();
    // RAID0 with its superblock at the end (1.0): the first member starts with the
    // array's ext4 superblock, but holds only every other stripe of it.
    let disks: Vec<std::path::PathBuf> = ["a.img", "b.img"].iter().map(|n| env.path(n)).collect();
    for d in &disks {
        sh(&format!(
            "truncate -s 100M {0} && sgdisk -o -n 1:2048:+96M -t 1:fd00 {0} >/dev/null && \
             dd if=/dev/urandom of={0} bs=1M seek=1 count=96 conv=notrunc status=none",
            d.display()
        ));
    }
    let refs: Vec<&Path> = disks.iter().map(|p| p.as_path()).collect();
    let made = guest(
        &env,
        &format!(
            "mdadm --create /dev/md0 --run --level=0 --raid-devices=2 --metadata=1.0 /dev/vda1 /dev/vdb1 2>/dev/null
mkfs.ext4 -q -E nodiscard /dev/md0
mount /dev/md0 /mnt && cp -a /sbin /mnt/
{TREE_DIGEST}
umount /mnt
mdadm --stop /dev/md0 2>/dev/null"
        ),
        &refs,
    );
    let digest = made.lines().find(|l| l.starts_with("digest")).unwrap();
    // The first member's first bytes are an ext4 superblock.
    let head = read_at(&disks[0], (1 << 20) + 1024 + 0x38, 2);
    assert_eq!(head, [0x53, 0xEF]);
    let repo = env.init();
    let mut args = capture_args(&repo, &disks[0], "stripes").to_vec();
    args.extend(["--source", path_str(&disks[1])]);
    let s: Value = serde_json::from_slice(&ok(&args).stdout).unwrap();
    let n = notes(&s);
    assert!(
        n.contains(
            "an md RAID0 member of 2 devices: what it holds spans them, so it is read whole"
        ),
        "{n}"
    );
    assert!(!n.contains("ext4"), "{n}");
    let (x, y) = (env.path("x.img"), env.path("y.img"));
    let mut r = restore_args(&repo, "stripes", &x);
    r.extend(["--target", path_str(&y)]);
    ok(&r);
    assert_eq!(hash_file(&x), hash_file(&disks[0]));
    assert_eq!(hash_file(&y), hash_file(&disks[1]));
    let checked = guest(
        &env,
        &format!(
            "mdadm --assemble --run /dev/md0 /dev/vda1 /dev/vdb1 2>/dev/null
e2fsck -fn /dev/md0 >/dev/null
mount -o ro /dev/md0 /mnt
{TREE_DIGEST}
umount /mnt"
        ),
        &[&x, &y],
    );
    assert!(checked.contains(digest), "{checked}");
}

/// A GPT disk of `mib` MiB whose one partition (over garbage) is an LVM PV of group `vg`
/// holding `volumes` (name, MiB) in that order, the last made `mkfs` (a command) and
/// filled with files; the partition's and the last volume's (offset, length) on the disk.
fn lvm_pv_disk(
    img: &Path,
    mib: u64,
    vg: &str,
    volumes: &[(&str, u64)],
    mkfs: &str,
    env: &Env,
) -> ((u64, u64), (u64, u64)) {
    sh(&format!(
        "truncate -s {mib}M {0} && sgdisk -o -n 1:2048:0 -t 1:8e00 {0} >/dev/null && \
         dd if=/dev/urandom of={0} bs=1M seek=1 count={1} conv=notrunc status=none",
        img.display(),
        mib - 4
    ));
    let part = {
        let first = sgdisk_sector(img, 1, "First sector") * 512;
        (
            first,
            (sgdisk_sector(img, 1, "Last sector") + 1) * 512 - first,
        )
    };
    let (last, _) = volumes.last().unwrap();
    let root = {
        let lo = Loop::attach_range(img, part.0, part.1);
        lvm_query(&lo.dev, &format!("pvcreate -q -ff -y {}", lo.dev));
        lvm_query(&lo.dev, &format!("vgcreate -q {vg} {}", lo.dev));
        for (name, size) in volumes {
            lvm_query(
                &lo.dev,
                &format!("lvcreate -q -an -Zn -L {size}M -n {name} {vg}"),
            );
        }
        let segs = lv_segments(&lo.dev, last);
        assert_eq!(segs.len(), 1, "{segs:?}");
        (part.0 + segs[0].0, segs[0].1)
    };
    let lo = Loop::attach_range(img, root.0, root.1);
    sh(&format!("{mkfs} {}", lo.dev));
    let m = Mount::new(&lo.dev, &env.path("fill"));
    sh(&format!(
        "cp -a /usr/share/zoneinfo/. {0}/ && head -c 24M /dev/urandom > {0}/blob",
        m.point.display()
    ));
    (part, root)
}

/// Snapshot "s" restored with `--grow` onto a new image `big` of `size` bytes; what the
/// restore says it did to the filesystem in the grown partition.
fn restore_grown(env: &Env, big: &Path, size: u64) -> String {
    sh(&format!("truncate -s {size} {}", big.display()));
    let o = env.restore("s", big, &["--yes", "--grow"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    let fs = r["filesystem_resize"].as_str().unwrap().to_string();
    eprintln!("lvm --grow: {fs}");
    fs
}

/// The last partition's (offset, length) on a GPT disk image.
fn last_partition(img: &Path) -> (u64, u64) {
    let first = sgdisk_sector(img, 1, "First sector") * 512;
    (
        first,
        (sgdisk_sector(img, 1, "Last sector") + 1) * 512 - first,
    )
}

/// A PV holding swap and, at its end, an XFS root volume in one run of extents (as an
/// installer lays it out), restored onto a larger disk with --grow: the partition, the PV,
/// the root volume and its XFS grow (`xfs_growfs`), and it checks clean with its files.
#[test]
fn an_lvm_root_at_the_end_of_its_pv_grows_with_its_xfs() {
    let env = Env::new();
    let src = env.path("src.img");
    let vg = format!("grow{}", std::process::id());
    let volumes = [("swap", 64), ("root", 320)];
    let (part, root) = lvm_pv_disk(&src, 480, &vg, &volumes, "mkfs.xfs -q -f -K -L root", &env);
    env.init();
    env.capture(&src, "s");
    let big = env.path("big.img");
    let fs = restore_grown(&env, &big, 680 << 20);
    assert!(
        fs.contains(&format!(
            "{vg}/root grown by 200.0 MiB; its XFS grown to 520.0 MiB with xfs_growfs"
        )),
        "{fs}"
    );
    let grown_part = last_partition(&big);
    let grown = {
        let lo = Loop::attach_range(&big, grown_part.0, grown_part.1);
        let segs = lv_segments(&lo.dev, "root");
        assert_eq!(segs, [(root.0 - part.0, root.1 + (200 << 20))]);
        (grown_part.0 + segs[0].0, segs[0].1)
    };
    let lo = Loop::attach_range(&big, grown.0, grown.1);
    sh(&format!("xfs_repair -n {}", lo.dev));
    let dblocks: u64 = sh(&format!("xfs_db -r -c 'sb 0' -c 'p dblocks' {}", lo.dev))
        .trim()
        .trim_start_matches("dblocks = ")
        .parse()
        .unwrap();
    assert_eq!(dblocks * 4096, grown.1);
    drop(lo);
    let mount = "mount -o ro,nouuid";
    assert_eq!(
        tree(&big, grown, &env, "dst", mount),
        tree(&src, root, &env, "src", mount)
    );
}

/// A PV whose last volume holds an ext4 with room to spare, restored onto a smaller
/// disk: on a scratch copy, the ext4 is shrunk (resize2fs), its volume reduced and the PV
/// resized by lvm2's tools; the target gets the result, which lvm2 reads, checks clean
/// and holds the same files.
#[test]
fn an_lvm_volume_at_the_end_of_its_pv_shrinks_onto_a_smaller_disk() {
    let env = Env::new();
    let src = env.path("src.img");
    let vg = format!("shrink{}", std::process::id());
    let volumes = [("swap", 32), ("root", 240)];
    let mkfs = "mkfs.ext4 -q -F -E nodiscard -L root";
    let (_, root) = lvm_pv_disk(&src, 300, &vg, &volumes, mkfs, &env);
    env.init();
    env.capture(&src, "s");
    let small = env.path("small.img");
    sh(&format!("truncate -s 200M {}", small.display()));
    let o = env.restore("s", &small, &["--yes", "--verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::metadata(&small).unwrap().len(), 200 << 20);
    let part = last_partition(&small);
    let lo = Loop::attach_range(&small, part.0, part.1);
    let pv_size: u64 = lvm_query(
        &lo.dev,
        &format!(
            "pvs --noheadings --units b --nosuffix -o pv_size {}",
            lo.dev
        ),
    )
    .trim()
    .parse()
    .unwrap();
    assert!(pv_size <= part.1, "{pv_size} > {}", part.1);
    let segs = lv_segments(&lo.dev, "root");
    assert_eq!(segs.len(), 1, "{segs:?}");
    assert!(segs[0].1 < root.1 && part.0 + segs[0].0 + segs[0].1 <= part.0 + part.1);
    eprintln!(
        "lvm shrink: root volume {} B -> {} B, PV {pv_size} B in a partition of {} B",
        root.1, segs[0].1, part.1
    );
    drop(lo);
    let shrunk = (part.0 + segs[0].0, segs[0].1);
    let lo = Loop::attach_range(&small, shrunk.0, shrunk.1);
    sh(&format!("e2fsck -fn {}", lo.dev));
    drop(lo);
    let mount = "mount -o ro,noload";
    assert_eq!(
        tree(&small, shrunk, &env, "dst", mount),
        tree(&src, root, &env, "src", mount)
    );
}
