//! Restores that reuse what is already there: an interrupted restore finishes by writing
//! only what is missing, a seed image or older snapshot spares fetching, and --grow fills
//! a larger disk.

mod common;

use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

fn summary(o: &std::process::Output) -> Value {
    assert!(o.status.success(), "{}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn an_interrupted_restore_finishes_by_writing_only_what_is_missing() {
    let env = Env::new();
    let src = env.disk("gpt", "src.img");
    env.init();
    let s = env.capture(&src, "web");
    let total_chunks = s["chunks"].as_u64().unwrap();
    // The target held something else entirely (random bytes: no chunk of the snapshot
    // is there by chance, so what a rerun finds in place is what the first attempt wrote).
    let target = env.path("target.img");
    sh(&format!(
        "head -c {} /dev/urandom > {}",
        std::fs::metadata(&src).unwrap().len(),
        target.display()
    ));

    // Stop the first attempt half way, as a pulled cable would.
    let mut child = Command::new(bin())
        .args([
            "restore",
            "--yes",
            "--repo",
            &env.repo(),
            "--snapshot",
            "web",
            "--target",
            path_str(&target),
            "--no-reuse",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed once about half its data is in place: when the middle one of the stored
    // chunks (written in disk order, give or take the batches in flight) is there.
    let m = env.manifest(s["snapshot"].as_str().unwrap());
    let mut stored: Vec<(u64, usize)> = m["regions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["chunks"].as_array().unwrap())
        .filter(|c| c["id"].is_string())
        .map(|c| {
            (
                c["offset"].as_u64().unwrap(),
                c["length"].as_u64().unwrap() as usize,
            )
        })
        .collect();
    stored.sort();
    let (middle, len) = stored[stored.len() / 2];
    let start = std::time::Instant::now();
    while read_at(&target, middle, len) != read_at(&src, middle, len)
        && child.try_wait().unwrap().is_none()
        && start.elapsed() < std::time::Duration::from_secs(60)
    {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        None,
        "the restore ended before it was killed"
    );
    // Half-restored: the table is wiped, so it cannot boot as if it were good.
    assert_ne!(&read_at(&target, 512, 8), b"EFI PART");

    let r = summary(&env.restore("web", &target, &["--yes", "--verify"]));
    let kept = r["kept_chunks"].as_u64().unwrap();
    let fetched = r["fetched_chunks"].as_u64().unwrap();
    eprintln!("resume: {kept} of {total_chunks} chunks already in place, {fetched} fetched");
    assert!(kept > total_chunks / 3, "{r}");
    assert_eq!(kept + fetched, total_chunks);
    assert_eq!(&read_at(&target, 512, 8), b"EFI PART");

    // Once complete, a rerun fetches only what lies in the first MiB and the backup GPT
    // (which a restore always rewrites last).
    let r = summary(&env.restore("web", &target, &["--yes", "--verify"]));
    assert!(r["fetched_chunks"].as_u64().unwrap() <= 20, "{r}");
    // And --no-reuse writes everything again.
    let r = summary(&env.restore("web", &target, &["--yes", "--no-reuse"]));
    assert_eq!(r["kept_chunks"], 0);
}

#[test]
fn seeds_spare_fetching_and_rewriting() {
    let env = Env::new();
    let src = env.disk("gpt", "src.img");
    let day1 = env.path("day1.img");
    std::fs::copy(&src, &day1).unwrap();
    env.init();
    let a = env.capture(&src, "a");
    // Day two: one new file in the root filesystem.
    let m = env.manifest(a["snapshot"].as_str().unwrap());
    let root = regions(&m).into_iter().find(|r| r.1 == Some(2)).unwrap();
    std::fs::write(env.path("new.txt"), "day two\n".repeat(20000)).unwrap();
    sh(&format!(
        "debugfs -w -R 'write {} /day-two.txt' '{}?offset={}'",
        env.path("new.txt").display(),
        src.display(),
        root.2
    ));
    let b = env.capture(&src, "b");
    let b_chunks = b["chunks"].as_u64().unwrap();

    // A seed image (yesterday's disk) for a new target: nearly every chunk comes from it.
    let t1 = env.path("t1.img");
    let r = summary(&env.restore("b", &t1, &["--seed", path_str(&day1), "--verify"]));
    let seeded = r["seeded_chunks"].as_u64().unwrap();
    eprintln!(
        "seed image: {seeded} of {b_chunks} chunks from the seed, {} fetched",
        r["fetched_chunks"]
    );
    assert!(seeded * 10 >= b_chunks * 9, "{r}");
    assert_eq!(hash_file(&t1), hash_file(&src));

    // A target known to hold snapshot a: only a's places are checked, the rest written.
    let t2 = env.path("t2.img");
    std::fs::copy(&day1, &t2).unwrap();
    let r = summary(&env.restore("b", &t2, &["--yes", "--seed", "a", "--verify"]));
    let kept = r["kept_chunks"].as_u64().unwrap();
    eprintln!(
        "seed snapshot: {kept} of {b_chunks} chunks kept in place, {} fetched",
        r["fetched_chunks"]
    );
    assert!(kept * 10 >= b_chunks * 8, "{r}");
    assert_eq!(hash_file(&t2), hash_file(&src));

    // The target itself is no seed.
    let o = env.restore("b", &t2, &["--yes", "--seed", path_str(&t2)]);
    assert!(
        stderr(&o).contains("is the target itself"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn grow_fills_a_larger_disk_and_its_ext4() {
    let env = Env::new();
    let src = env.path("small.img");
    let o = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/make-disk"))
        .args(["os", path_str(&src)])
        .env("OS_DISK_MIB", "200")
        .env("TREE_MIB", "20")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    env.init();
    env.capture(&src, "small");
    let big = env.path("big.img");
    sh(&format!("truncate -s 300M {}", big.display()));
    let r = summary(&env.restore("small", &big, &["--yes", "--grow", "--verify"]));
    assert_eq!(r["grown_partition"], 2);
    let fs = r["filesystem_resize"].as_str().unwrap();
    assert!(fs.contains("grown") && fs.contains("resize2fs"), "{fs}");

    let v = sh(&format!("sgdisk -v {}", big.display()));
    assert!(v.contains("No problems found"), "{v}");
    let last = sgdisk_sector(&big, 2, "Last sector");
    assert_eq!(last, (300 << 20) / 512 - 34);
    let first = sgdisk_sector(&big, 2, "First sector");
    let spec = format!("{}?offset={}", big.display(), first * 512);
    sh(&format!("e2fsck -fn '{spec}'"));
    let blocks: u64 = sh(&format!(
        "dumpe2fs -h '{spec}' 2>/dev/null | awk '/^Block count/ {{print $3}}'"
    ))
    .trim()
    .parse()
    .unwrap();
    assert_eq!(blocks, (last - first + 1) * 512 / 4096);
}
