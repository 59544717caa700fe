//! Byte-exact round trips of each kind of sample disk, and the growth of a GPT onto a
//! larger target.

mod common;

use common::*;

#[test]
fn gpt_512_round_trip_is_exact() {
    let env = Env::new();
    let src = env.disk("gpt", "src.img");
    env.init();
    let s = env.capture(&src, "web01");
    assert_eq!(s["table"], "gpt");
    assert_eq!(s["disk_size"], 96 << 20);
    // Zeros and free space are not stored: the disk is 96 MiB, its data well under that.
    let not_stored = s["hole_bytes"].as_u64().unwrap() + s["free_bytes_skipped"].as_u64().unwrap();
    assert!(not_stored > 50 << 20, "{s}");
    assert_eq!(
        s["bytes_read"].as_u64().unwrap() + s["free_bytes_skipped"].as_u64().unwrap(),
        96 << 20,
        "{s}"
    );
    assert!(s["data_bytes"].as_u64().unwrap() < 40 << 20, "{s}");
    let id = s["snapshot"].as_str().unwrap();

    let m = env.manifest(id);
    let kinds: Vec<(String, Option<u64>)> = regions(&m).into_iter().map(|r| (r.0, r.1)).collect();
    assert_eq!(
        kinds,
        vec![
            ("table".into(), None),
            ("gap".into(), None),
            ("partition".into(), Some(1)),
            ("partition".into(), Some(2)),
            ("gap".into(), None),
            ("partition".into(), Some(3)),
            ("gap".into(), None),
            ("backup-table".into(), None),
        ]
    );
    let names: Vec<&str> = m["disk"]["gpt"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["EFI System", "root", "data"]);
    assert_eq!(m["disk"]["mbr"]["kind"], "protective");
    // Each region's hash is the hash of those bytes of the source.
    for (_, _, off, len) in regions(&m).iter().take(4) {
        let r = m["regions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["offset"] == *off)
            .unwrap();
        assert_eq!(r["blake3"].as_str().unwrap(), hash_range(&src, *off, *len));
    }

    let dst = env.path("dst.img");
    let o = env.restore("web01", &dst, &["--verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["verified"], true);
    assert_eq!(hash_file(&dst), hash_file(&src));
    assert_eq!(std::fs::metadata(&dst).unwrap().len(), 96 << 20);
}

#[test]
fn gpt_4k_round_trip_between_block_devices() {
    let env = Env::new();
    let src = env.disk("gpt4k", "src.img");
    env.init();
    // From the image file: the sector size is found from the GPT.
    let s = env.capture(&src, "img");
    let m = env.manifest(s["snapshot"].as_str().unwrap());
    assert_eq!(m["disk"]["logical_sector_size"], 4096);
    assert_eq!(m["disk"]["gpt"]["partitions"].as_array().unwrap().len(), 3);
    // From a 4K-sector block device: the kernel's sector size.
    let src_loop = Loop::attach(&src, 4096);
    let s2 = env.capture(src_loop.path(), "blk");
    assert_eq!(s2["new_chunks"], 0, "same bytes, nothing new: {s2}");
    drop(src_loop);

    // Onto a 4K-sector block device of the same size.
    let dst = env.path("dst.img");
    sh(&format!("truncate -s 96M {}", dst.display()));
    let dst_loop = Loop::attach(&dst, 4096);
    let o = env.restore("blk", dst_loop.path(), &["--yes", "--verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
    drop(dst_loop);
    assert_eq!(hash_file(&dst), hash_file(&src));

    // A 512-byte-sector device cannot take a 4K table.
    let other = env.path("other.img");
    sh(&format!("truncate -s 96M {}", other.display()));
    let before = hash_file(&other);
    let l512 = Loop::attach(&other, 512);
    let o = env.restore("blk", l512.path(), &["--yes"]);
    drop(l512);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("512-byte logical sectors"),
        "{}",
        stderr(&o)
    );
    assert_eq!(hash_file(&other), before);
}

#[test]
fn mbr_disk_is_one_region_and_round_trips() {
    let env = Env::new();
    let src = env.disk("mbr", "src.img");
    env.init();
    let s = env.capture(&src, "old");
    assert_eq!(s["table"], "mbr");
    let m = env.manifest(s["snapshot"].as_str().unwrap());
    assert_eq!(regions(&m), vec![("disk".into(), None, 0, 96 << 20)]);
    assert_eq!(m["disk"]["mbr"]["kind"], "dos");
    assert_eq!(m["disk"]["mbr"]["entries"].as_array().unwrap().len(), 2);
    let dst = env.path("dst.img");
    let o = env.restore("old", &dst, &["--verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(hash_file(&dst), hash_file(&src));
}

#[test]
fn bare_disk_without_table_round_trips_with_relative_paths() {
    let env = Env::new();
    let src = env.path("bare.img");
    sh(&format!(
        "truncate -s 24M {0} && mkfs.ext4 -q -F {0}",
        src.display()
    ));
    // Everything relative to the working directory, as a user types it.
    let run_here = |args: &[&str]| {
        let o = std::process::Command::new(bin())
            .args(args)
            .current_dir(env.dir.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        o
    };
    run_here(&["init", "--repo", "repo"]);
    let o = run_here(&[
        "capture", "--json", "-q", "--repo", "repo", "--source", "bare.img", "--name", "bare",
    ]);
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["table"], "none");
    run_here(&[
        "restore",
        "-q",
        "--repo",
        "repo",
        "--snapshot",
        "bare",
        "--target",
        "dst.img",
        "--verify",
    ]);
    assert_eq!(hash_file(&env.path("dst.img")), hash_file(&src));
}

#[test]
fn larger_target_gets_the_backup_gpt_at_its_end() {
    let env = Env::new();
    let src = env.disk("gpt", "src.img");
    env.init();
    env.capture(&src, "small");
    let dst = env.path("big.img");
    sh(&format!("truncate -s 160M {}", dst.display()));
    let o = env.restore("small", &dst, &["--yes", "--verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["grown"], true);
    // sgdisk finds both headers valid and the backup at the very end.
    let v = sh(&format!("sgdisk -v {}", dst.display()));
    assert!(v.contains("No problems found"), "{v}");
    let last = (160u64 << 20) - 512;
    assert_eq!(&read_at(&dst, last, 8), b"EFI PART");
    let p = sh(&format!("sgdisk -p {}", dst.display()));
    assert!(p.contains("last usable sector is 327646"), "{p}");
    // Partitions and gaps are byte-identical; only the table moved.
    let m = env.manifest(r["snapshot"].as_str().unwrap());
    for (kind, _, off, len) in regions(&m) {
        if kind == "partition" || kind == "gap" {
            assert_eq!(
                hash_range(&dst, off, len),
                hash_range(&src, off, len),
                "{kind} at {off}"
            );
        }
    }
    // The partition entries are the same as the source's.
    let entries = |f: &std::path::Path| {
        sh(&format!(
            "sgdisk -p {} | sed -n '/^Number/,$p'",
            f.display()
        ))
    };
    assert_eq!(entries(&dst), entries(&src));
}

#[test]
fn a_name_restores_its_newest_snapshot_even_within_one_second() {
    let env = Env::new();
    let a = env.disk("mbr", "a.img");
    let b = env.path("b.img");
    std::fs::copy(&a, &b).unwrap();
    // Change one sector of b.
    let f = std::fs::OpenOptions::new().write(true).open(&b).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0x5a; 512], 50 << 20).unwrap();
    env.init();
    env.capture(&a, "host");
    let second = env.capture(&b, "host");
    let dst = env.path("dst.img");
    let o = env.restore("host", &dst, &[]);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["snapshot"], second["snapshot"]);
    assert_eq!(hash_file(&dst), hash_file(&b));
}

#[test]
fn a_machine_of_two_disks_is_one_snapshot_and_restores_by_order_or_by_number() {
    let env = Env::new();
    let (a, b) = (env.disk("gpt", "a.img"), env.disk("mbr", "b.img"));
    let repo = env.init();
    let mut args = capture_args(&repo, &a, "pair").to_vec();
    args.extend(["--source", path_str(&b)]);
    let s: serde_json::Value = serde_json::from_slice(&ok(&args).stdout).unwrap();
    assert_eq!(s["disks"], 2, "{s}");
    let size = std::fs::metadata(&a).unwrap().len() + std::fs::metadata(&b).unwrap().len();
    assert_eq!(s["disk_size"], size);
    let m = env.manifest(s["snapshot"].as_str().unwrap());
    assert_eq!(m["version"], 2);
    assert_eq!(m["more_disks"][0]["disk"]["table"], "mbr");
    let list: serde_json::Value = serde_json::from_slice::<serde_json::Value>(
        &ok(&["snapshots", "--json", "--repo", &repo]).stdout,
    )
    .unwrap()["snapshots"]
        .clone();
    assert_eq!(list[0]["disks"], 2);
    assert_eq!(list[0]["disk_size"], size);
    check_clean(&repo);

    // One target for two disks: refused before anything is written.
    let lone = env.path("lone.img");
    let err = String::from_utf8_lossy(&env.restore("pair", &lone, &[]).stderr).into_owned();
    assert!(err.contains("holds 2 disk(s) and 1 --target"), "{err}");
    assert!(!lone.exists());

    // By order: disk 0 to the first target, disk 1 to the second.
    let (x0, x1) = (env.path("x0.img"), env.path("x1.img"));
    let mut r = restore_args(&repo, "pair", &x0);
    r.extend(["--target", path_str(&x1), "--verify"]);
    ok(&r);
    assert_eq!(hash_file(&x0), hash_file(&a));
    assert_eq!(hash_file(&x1), hash_file(&b));

    // By number: disk 1 alone.
    let y1 = env.path("y1.img");
    let spec = format!("1={}", y1.display());
    ok(&[
        "restore",
        "-q",
        "--repo",
        &repo,
        "--snapshot",
        "pair",
        "--target",
        &spec,
        "--yes",
    ]);
    assert_eq!(hash_file(&y1), hash_file(&b));
}

/// On a machine with disks of its own (a QEMU guest, virtio disks with serial numbers),
/// a two-disk snapshot's targets are given by hints: `auto` puts each disk on the
/// smallest empty disk it fits, `N=serial:S` on the disk with that serial; once no empty
/// disk is left, `auto` is refused before anything is written.
#[test]
fn targets_are_found_by_hints_on_the_machine_restored() {
    let env = Env::new();
    let (a, b) = (env.path("a.img"), env.path("b.img"));
    sh(&format!(
        "head -c 24M /dev/urandom > {} && head -c 40M /dev/urandom > {}",
        a.display(),
        b.display()
    ));
    let repo = env.init();
    let mut args = capture_args(&repo, &a, "pair").to_vec();
    args.extend(["--source", path_str(&b)]);
    ok(&args);
    let repo_disk = env.path("repo-disk.img");
    sh(&format!(
        "mkfs.ext4 -q -d {} {} 100M",
        env.path("repo").display(),
        repo_disk.display()
    ));
    let blank = |name: &str, mib: u64, serial: &str| {
        let p = env.path(name);
        sh(&format!("truncate -s {mib}M {}", p.display()));
        std::path::PathBuf::from(format!("{},serial={serial}", p.display()))
    };
    let disks = [
        repo_disk.clone(),
        blank("big.img", 64, "BIG"),
        blank("small.img", 32, "SMALL"),
        blank("mid.img", 48, "MID"),
    ];
    let refs: Vec<&std::path::Path> = disks.iter().map(|p| p.as_path()).collect();
    let out = guest(
        &env,
        "mkdir -p /r && mount /dev/vda /r
lifeboat restore --repo /r --snapshot pair --target auto --target auto --yes
echo auto restored
lifeboat restore -q --repo /r --snapshot pair --target 1=serial:BIG --yes
echo serial restored
lifeboat restore -q --repo /r --snapshot pair --target auto --target auto --yes 2>&1 || echo refused
for d in vdb vdc vdd; do echo $d $(head -c 25165824 /dev/$d | sha256sum) $(head -c 41943040 /dev/$d | sha256sum); done
umount /r",
        &refs,
    );
    // The report names the disks chosen.
    assert!(
        out.contains("target     /dev/vdc, /dev/vdd (80.0 MiB)"),
        "{out}"
    );
    for step in ["auto restored", "serial restored", "refused"] {
        assert!(out.contains(step), "{out}");
    }
    assert!(
        out.contains("no disk for the snapshot's disk 0 (serial -, 24.0 MiB): none has its serial or WWN, and no empty disk is large enough"),
        "{out}"
    );
    let sum = |p: &std::path::Path, mib: u64| {
        sh(&format!("head -c {mib}M {} | sha256sum", p.display()))
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    let line = |d: &str| out.lines().find(|l| l.starts_with(d)).unwrap().to_string();
    // disk 0 (24 MiB) went to SMALL (vdc, 32 MiB), disk 1 (40 MiB) to MID (vdd, 48 MiB),
    // and disk 1 again to BIG (vdb).
    assert!(line("vdc ").contains(&sum(&a, 24)), "{out}");
    assert!(line("vdd ").contains(&sum(&b, 40)), "{out}");
    assert!(line("vdb ").contains(&sum(&b, 40)), "{out}");
}
