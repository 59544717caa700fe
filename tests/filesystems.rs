//! Filesystem-aware capture: free space full of old garbage is not read or stored, the
//! restored filesystems check clean and hold the same trees, free space is left alone or
//! zeroed on request, and doubtful metadata falls back to a full read.

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

/// (offset, length) of partition `n` in a snapshot's manifest.
fn partition(m: &Value, n: u64) -> (u64, u64) {
    let r = regions(m).into_iter().find(|r| r.1 == Some(n)).unwrap();
    (r.2, r.3)
}

/// A listing of every file with its mode, owner, size, mtime, link target and content
/// hash, under an ext4 partition mounted read-only.
fn ext4_tree(img: &Path, (off, len): (u64, u64), env: &Env, name: &str) -> String {
    let lo = Loop::attach_range(img, off, len);
    let mnt = env.path(name);
    std::fs::create_dir_all(&mnt).unwrap();
    // noload keeps a journal from being replayed; ext2 has none and refuses the option.
    sh(&format!(
        "mount -o ro,noload {0} {1} 2>/dev/null || mount -o ro {0} {1}",
        lo.dev,
        mnt.display()
    ));
    let _m = Mount { point: mnt.clone() };
    sh(&format!(
        "cd {} && find . -printf '%p %M %U %G %s %T@ %l\\n' | sort && find . -type f -exec sha256sum {{}} + | sort",
        mnt.display()
    ))
}

/// Every file of a FAT partition copied out with mtools, listed with content hashes.
fn fat_tree(img: &Path, off: u64, env: &Env, name: &str) -> String {
    let dir = env.path(name);
    std::fs::create_dir_all(&dir).unwrap();
    sh(&format!(
        "mcopy -s -p -n -i '{}@@{off}' ::/ {}",
        img.display(),
        dir.display()
    ));
    sh(&format!(
        "cd {} && find . -type f -exec sha256sum {{}} + | sort && find . | sort",
        dir.display()
    ))
}

fn fsck_ext4(img: &Path, (off, len): (u64, u64)) {
    let lo = Loop::attach_range(img, off, len);
    sh(&format!("e2fsck -fn {}", lo.dev));
}

fn fsck_fat(img: &Path, (off, len): (u64, u64), env: &Env) {
    let part = env.path("fat-part.img");
    sh(&format!(
        "dd if={} of={} bs=1M iflag=skip_bytes,count_bytes skip={off} count={len} status=none && fsck.fat -n {}",
        img.display(),
        part.display(),
        part.display()
    ));
}

#[test]
fn garbage_in_free_space_is_not_stored_and_trees_come_back() {
    let env = Env::new();
    let src = env.disk("garbage", "src.img");
    env.init();
    let s = env.capture(&src, "g");
    let notes = s["notes"].to_string();
    assert!(notes.contains("partition 1: vfat"), "{notes}");
    assert!(notes.contains("partition 2: ext4"), "{notes}");
    assert!(notes.contains("partition 3: swap, 4.0 KiB"), "{notes}");
    // 32 MiB of ESP free space, ~17 MiB of root free space and 8 MiB of swap are random:
    // none of it is read or stored.
    let read = s["bytes_read"].as_u64().unwrap();
    let stored = s["new_stored_bytes"].as_u64().unwrap();
    assert!(s["free_bytes_skipped"].as_u64().unwrap() > 50 << 20, "{s}");
    assert!(read < 46 << 20, "read {read}");

    // The same disk read in full, into another repository, stores the garbage.
    let full_repo = env.path("full").display().to_string();
    ok(&["init", "--repo", &full_repo]);
    let f: Value = serde_json::from_slice(
        &ok(&[
            "capture",
            "--json",
            "-q",
            "--full",
            "--repo",
            &full_repo,
            "--source",
            path_str(&src),
            "--name",
            "g",
        ])
        .stdout,
    )
    .unwrap();
    let full_stored = f["new_stored_bytes"].as_u64().unwrap();
    eprintln!("garbage disk: filesystem-aware read {read} B stored {stored} B; full read stored {full_stored} B");
    assert!(
        full_stored > stored + (50 << 20),
        "full {full_stored} vs aware {stored}"
    );

    let m = env.manifest(s["snapshot"].as_str().unwrap());
    assert_eq!(m["regions"][2]["filesystem"]["type"], "vfat");
    let dst = env.path("dst.img");
    let o = env.restore("g", &dst, &["--verify"]);
    assert!(o.status.success(), "{}", stderr(&o));

    let (p1, p2, p3) = (partition(&m, 1), partition(&m, 2), partition(&m, 3));
    fsck_ext4(&dst, p2);
    fsck_fat(&dst, p1, &env);
    assert_eq!(
        ext4_tree(&dst, p2, &env, "m-dst"),
        ext4_tree(&src, p2, &env, "m-src")
    );
    assert_eq!(
        fat_tree(&dst, p1.0, &env, "f-dst"),
        fat_tree(&src, p1.0, &env, "f-src")
    );
    assert_eq!(hash_range(&dst, p3.0, 4096), hash_range(&src, p3.0, 4096));
    // Everything outside the partitions (tables, boot code, gaps) is exact.
    for (kind, _, off, len) in regions(&m) {
        if kind != "partition" {
            assert_eq!(
                hash_range(&dst, off, len),
                hash_range(&src, off, len),
                "{kind} at {off}"
            );
        }
    }
}

#[test]
fn free_space_is_left_alone_unless_zero_free() {
    let env = Env::new();
    let src = env.disk("garbage", "src.img");
    env.init();
    let s = env.capture(&src, "g");
    let m = env.manifest(s["snapshot"].as_str().unwrap());
    // A free range of the root filesystem, at least a block long.
    let root = m["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["partition"] == 2)
        .unwrap();
    let used: Vec<(u64, u64)> = serde_json::from_value(root["filesystem"]["used"].clone()).unwrap();
    let end = root["offset"].as_u64().unwrap() + root["length"].as_u64().unwrap();
    let mut bounds: Vec<u64> = used.iter().flat_map(|u| [u.0, u.0 + u.1]).collect();
    bounds.push(end);
    // A block well inside a free run: more than a maximal chunk (256 KiB) from its ends,
    // since a chunk that straddles used and free space is written whole.
    let run = bounds[1..]
        .chunks(2)
        .map(|w| (w[0], w[1]))
        .find(|g| g.1 - g.0 >= 2 << 20)
        .unwrap();
    let gap = ((run.0 + run.1) / 2 / 4096 * 4096, 0);

    // The target holds another machine's disk: its bytes in that range are its own.
    let target = env.path("target.img");
    make_disk("garbage", &target);
    let before = hash_range(&target, gap.0, 4096);
    let o = env.restore("g", &target, &["--yes", "--verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        hash_range(&target, gap.0, 4096),
        before,
        "free space was rewritten"
    );
    fsck_ext4(&target, partition(&m, 2));

    let o = env.restore("g", &target, &["--yes", "--verify", "--zero-free"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        read_at(&target, gap.0, 4096).iter().all(|&b| b == 0),
        "free space not zeroed"
    );
    fsck_ext4(&target, partition(&m, 2));
}

#[test]
fn doubtful_ext4_metadata_falls_back_to_a_full_read() {
    let env = Env::new();
    let src = env.disk("gpt", "src.img");
    env.init();
    let first = env.capture(&src, "a");
    let m = env.manifest(first["snapshot"].as_str().unwrap());
    let (off, _len) = partition(&m, 2);
    let spec = format!("{}?offset={off}", src.display());

    // A journal that needs recovery: the bitmaps may be stale.
    sh(&format!("debugfs -w -R 'feature needs_recovery' '{spec}'"));
    let s = env.capture(&src, "b");
    assert!(
        s["notes"].to_string().contains("journal needs recovery"),
        "{}",
        s["notes"]
    );
    let dst = env.path("b.img");
    assert!(env.restore("b", &dst, &[]).status.success());
    assert_eq!(hash_file(&dst), hash_file(&src));
    sh(&format!("debugfs -w -R 'feature ^needs_recovery' '{spec}'"));

    // A block bitmap whose checksum no longer matches.
    let bitmap_block: u64 = sh(&format!(
        "dumpe2fs '{spec}' 2>/dev/null | awk '/Block bitmap at/ {{print $4; exit}}'"
    ))
    .trim()
    .trim_end_matches(',')
    .parse()
    .unwrap();
    let at = off + bitmap_block * 4096 + 100;
    let mut byte = read_at(&src, at, 1);
    byte[0] ^= 0x01;
    let f = std::fs::OpenOptions::new().write(true).open(&src).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &byte, at).unwrap();
    let s = env.capture(&src, "c");
    assert!(
        s["notes"]
            .to_string()
            .contains("bitmap checksum does not match"),
        "{}",
        s["notes"]
    );
    let dst = env.path("c.img");
    assert!(env.restore("c", &dst, &[]).status.success());
    assert_eq!(hash_file(&dst), hash_file(&src));
}

#[test]
fn mbr_partitions_are_read_filesystem_aware_too() {
    let env = Env::new();
    let src = env.disk("mbr", "src.img");
    env.init();
    let s = env.capture(&src, "m");
    assert!(
        s["notes"].to_string().contains("MBR partition 1: ext4"),
        "{}",
        s["notes"]
    );
    assert!(s["free_bytes_skipped"].as_u64().unwrap() > 0);
    let dst = env.path("dst.img");
    assert!(env.restore("m", &dst, &["--verify"]).status.success());
    assert_eq!(hash_file(&dst), hash_file(&src));
}

/// An MBR disk whose one partition holds the filesystem `mkfs` makes over `tree`, with old
/// garbage under it; returns the disk and the partition's (offset, length).
fn mbr_disk_with(
    env: &Env,
    name: &str,
    mkfs: &str,
    part_mib: u64,
) -> (std::path::PathBuf, (u64, u64)) {
    let disk = env.path(&format!("{name}.img"));
    let part = env.path(&format!("{name}.part"));
    let tree = env.path("tree");
    if !tree.exists() {
        std::fs::create_dir_all(tree.join("docs")).unwrap();
        sh(&format!("cp -r /usr/share/doc/e2fsprogs /usr/share/doc/dosfstools {}/docs/ 2>/dev/null; for i in $(seq 1 40); do head -c $((i * 3000)) /dev/urandom > {}/f$i; done", tree.display(), tree.display()));
    }
    sh(&format!(
        "head -c {}M /dev/urandom > {}",
        part_mib,
        part.display()
    ));
    sh(&mkfs
        .replace("PART", path_str(&part))
        .replace("TREE", path_str(&tree)));
    let off = 1u64 << 20;
    sh(&format!(
        "truncate -s {}M {d} && printf 'label: dos\\nstart=2048, type=83\\n' | sfdisk -q {d} && dd if={p} of={d} bs=1M seek=1 conv=notrunc status=none",
        part_mib + 2,
        d = disk.display(),
        p = part.display()
    ));
    let len = (part_mib + 1) << 20;
    (disk, (off, len))
}

#[test]
fn ext4_variants_and_fat12_are_read_filesystem_aware_and_come_back_clean() {
    let env = Env::new();
    env.init();
    let cases = [
        (
            "metabg",
            "mkfs.ext4 -q -F -E nodiscard -O meta_bg,^resize_inode -d TREE PART",
            "ext4",
        ),
        (
            "uninitbg",
            "mkfs.ext4 -q -F -E nodiscard -O ^metadata_csum,uninit_bg -d TREE PART",
            "ext4",
        ),
        ("ext2", "mkfs.ext2 -q -F -E nodiscard -d TREE PART", "ext2"),
        (
            "ext4-1k",
            "mkfs.ext4 -q -F -E nodiscard -b 1024 -d TREE PART",
            "ext4",
        ),
        (
            "fat12",
            "mkfs.vfat -F 12 PART >/dev/null && mcopy -s -i PART TREE/docs ::/",
            "vfat",
        ),
    ];
    for (name, mkfs, kind) in cases {
        let (src, p) = mbr_disk_with(&env, name, mkfs, 24);
        let s = env.capture(&src, name);
        let notes = s["notes"].to_string();
        assert!(
            notes.contains(&format!("MBR partition 1: {kind}")),
            "{name}: {notes}"
        );
        // The random bytes under the filesystem are mostly free space: not stored.
        assert!(
            s["new_stored_bytes"].as_u64().unwrap() < 12 << 20,
            "{name}: {s}"
        );
        let dst = env.path(&format!("{name}-dst.img"));
        let o = env.restore(name, &dst, &["--verify"]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        if kind == "vfat" {
            fsck_fat(&dst, p, &env);
            assert_eq!(
                fat_tree(&dst, p.0, &env, &format!("{name}-d")),
                fat_tree(&src, p.0, &env, &format!("{name}-s"))
            );
        } else {
            let lo = Loop::attach_range(&dst, p.0, p.1);
            sh(&format!("e2fsck -fn {}", lo.dev));
            drop(lo);
            assert_eq!(
                ext4_tree(&dst, p, &env, &format!("{name}-d")),
                ext4_tree(&src, p, &env, &format!("{name}-s")),
                "{name}"
            );
        }
    }
}
