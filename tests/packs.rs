//! Repository format 2: chunks in pack files named by index files. A capture writes a few
//! files instead of one per chunk, restores and checks exactly as format 1 does, and every
//! damage (a flipped byte in a pack, a pack gone, a capture killed part way) is found and
//! named, or leaves a repository that checks clean.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Files under `dir`, not counting the journal (a record per operation).
fn files_under(dir: &std::path::Path) -> usize {
    let mut n = 0;
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().is_some_and(|n| n == "journal") {
            continue;
        }
        n += if p.is_dir() { files_under(&p) } else { 1 };
    }
    n
}

#[test]
fn a_packed_repository_captures_into_few_files_and_restores_exactly() {
    let env = Env::new();
    let src = env.disk("gpt", "src.img");
    env.init_version(2);
    let s = env.capture(&src, "web");
    let new_chunks = s["new_chunks"].as_u64().unwrap();
    let files = files_under(&env.path("repo"));
    println!("{new_chunks} chunks in {files} files");
    // config, one manifest, one index, and packs of 16 MiB.
    let stored = s["new_stored_bytes"].as_u64().unwrap();
    assert!(new_chunks > 100, "{s}");
    assert!(
        files <= 3 + 2 + (stored >> 24) as usize * 2,
        "{files} files"
    );
    assert!(!env.path("repo/chunks").exists());
    let r = check_clean(&env.repo());
    assert_eq!(r["chunks_read"].as_u64(), Some(new_chunks), "{r}");
    let dst = env.path("dst.img");
    assert!(env.restore("web", &dst, &[]).status.success());
    assert_eq!(hash_file(&dst), hash_file(&src));

    // The same disk again stores nothing new and writes no pack.
    let again = env.capture(&src, "web");
    assert_eq!(again["new_chunks"], 0, "{again}");
    assert_eq!(
        files_under(&env.path("repo")),
        files + 1,
        "one more manifest only"
    );
}

#[test]
fn a_flipped_byte_in_a_pack_is_named_and_a_missing_pack_refused_before_writing() {
    let env = Env::new();
    let src = env.disk("gpt", "src.img");
    env.init_version(2);
    let snap = env.capture(&src, "web")["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let m = env.manifest(&snap);
    let bad = first_chunk_of_partition(&m, 1);
    let (pack, offset, len) = env.stored_chunk(&bad);
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&pack)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset + len / 2).unwrap();
    f.write_all_at(&[b[0] ^ 0x40], offset + len / 2).unwrap();
    let o = run(&[
        "check",
        "--read-data",
        "--json",
        "-q",
        "--repo",
        &env.repo(),
    ]);
    assert!(!o.status.success());
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let corrupt = r["corrupt"].as_array().unwrap();
    assert_eq!(corrupt.len(), 1, "{r}");
    assert_eq!(corrupt[0]["chunk"], bad.as_str());
    assert!(
        corrupt[0]["location"]
            .as_str()
            .unwrap()
            .contains(".pack at byte"),
        "{r}"
    );

    // The pack gone: the preflight finds every chunk it held missing, and writes nothing.
    fs::remove_file(&pack).unwrap();
    let target = env.path("t.img");
    fs::write(&target, vec![0x5a; 100 << 20]).unwrap();
    let before = hash_file(&target);
    let e = fails(&[
        "restore",
        "-q",
        "--yes",
        "--repo",
        &env.repo(),
        "--snapshot",
        &snap,
        "--target",
        path_str(&target),
    ]);
    assert!(e.contains("missing") && e.contains(".pack"), "{e}");
    assert_eq!(hash_file(&target), before, "the target is untouched");
}

/// Files a capture has written so far: packs and index files in place, and (with `pid`)
/// that writer's files waiting in tmp/.
fn written(repo: &std::path::Path, pid: Option<u32>) -> usize {
    let placed = ["packs", "index"]
        .iter()
        .map(|d| repo.join(d))
        .filter(|d| d.exists())
        .map(|d| files_under(&d))
        .sum::<usize>();
    let mine = |n: &str| pid.is_some_and(|p| n.contains(&format!("-{p}-")));
    let waiting = fs::read_dir(repo.join("tmp"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| mine(&e.file_name().to_string_lossy()))
                .count()
        })
        .unwrap_or(0);
    placed + waiting
}

#[test]
fn killed_packed_captures_leave_a_sound_repository() {
    let env = Env::new();
    let src = env.disk("gpt", "src.img");
    let repo = env.init_version(2);
    let repo_path = env.path("repo");
    let mut kills = Vec::new();
    // Kill at once; once a pack is being written; once one is in place (its index not
    // yet); and once two files are (a pack and its index, or two packs).
    for threshold in [0usize, 1, 1, 2] {
        let mut child = Command::new(bin())
            .args([
                "capture",
                "-q",
                "--repo",
                &repo,
                "--source",
                path_str(&src),
                "--name",
                "k",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let before = written(&repo_path, None);
        let start = std::time::Instant::now();
        while written(&repo_path, Some(child.id())) < before + threshold
            && start.elapsed() < Duration::from_secs(60)
        {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let _ = child.kill();
        let status = child.wait().unwrap();
        kills.push((threshold, status.code()));
        check_clean(&repo);
    }
    eprintln!("kills (threshold, exit code): {kills:?}");
    assert!(
        kills.iter().filter(|k| k.1.is_none()).count() >= 3,
        "most kills landed mid-capture: {kills:?}"
    );
    let s = env.capture(&src, "k");
    // Packs of the killed captures that no index names are counted, not used.
    let r = check_clean(&repo);
    let unindexed = r["unindexed_packs"].as_array().unwrap();
    eprintln!("{} unindexed packs", unindexed.len());
    for p in unindexed {
        assert!(std::path::Path::new(p.as_str().unwrap()).exists(), "{p}");
    }
    assert!(unindexed.len() < files_under(&repo_path.join("packs")));
    let dst = env.path("dst.img");
    assert!(env
        .restore(s["snapshot"].as_str().unwrap(), &dst, &[])
        .status
        .success());
    assert_eq!(hash_file(&dst), hash_file(&src));
}

/// `lifeboat migrate` moves a format 1 repository to packs in place. Interrupted after
/// the packs are written (here: config.json cannot be replaced, as if the machine died
/// just before), the repository is still format 1, sound, and restores; run again, it
/// packs nothing twice, finishes, and every snapshot restores exactly from packs.
#[test]
fn migrate_moves_a_chunk_file_repository_to_packs_and_survives_an_interruption() {
    let env = Env::new();
    let (src, first) = env.with_snapshot_v1("gpt", "web");
    // A second snapshot that shares most chunks with the first.
    let changed = env.path("changed.img");
    fs::copy(&src, &changed).unwrap();
    let f = fs::OpenOptions::new().write(true).open(&changed).unwrap();
    f.write_all_at(&[0x5a; 300_000], 40 << 20).unwrap();
    drop(f);
    let second = env.capture(&changed, "web")["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let repo = env.repo();
    let chunk_files = files_under(&env.path("repo/chunks"));

    // Interrupted between writing the packs and switching config.json over.
    let config = env.path("repo/config.json");
    sh(&format!("chattr +i {}", config.display()));
    let o = run(&["migrate", "--repo", &repo]);
    sh(&format!("chattr -i {}", config.display()));
    assert!(
        !o.status.success(),
        "migrate could not switch config.json, yet succeeded"
    );
    assert!(fs::read_to_string(&config)
        .unwrap()
        .contains("\"version\": 1"));
    assert_eq!(check_clean(&repo)["ok"], true);
    let t = env.path("mid.img");
    assert!(env.restore(&first, &t, &[]).status.success());
    assert_eq!(hash_file(&t), hash_file(&src));

    // Again: the packs of the first run are used, and the rest is done.
    let o = ok(&["migrate", "--json", "--repo", &repo]);
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(m["from_version"], 1, "{m}");
    assert_eq!(m["chunks_packed"], 0, "{m}");
    assert!(m["chunks_already_packed"].as_u64().unwrap() > 100, "{m}");
    assert_eq!(
        m["chunk_files_removed"].as_u64().unwrap() as usize,
        chunk_files,
        "{m}"
    );
    assert!(fs::read_to_string(&config)
        .unwrap()
        .contains("\"version\": 2"));
    assert!(!env.path("repo/chunks").exists());
    assert!(
        files_under(&env.path("repo")) < 20,
        "{} files",
        files_under(&env.path("repo"))
    );
    let r = ok(&["check", "--read-data", "--json", "-q", "--repo", &repo]);
    let r: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["unreferenced_chunks"], 0, "{r}");
    for (id, want) in [(&first, &src), (&second, &changed)] {
        let t = env.path("after.img");
        let _ = fs::remove_file(&t);
        assert!(env.restore(id, &t, &[]).status.success());
        assert_eq!(hash_file(&t), hash_file(want));
    }
    // A format 2 repository: nothing to do.
    let again: serde_json::Value =
        serde_json::from_slice(&ok(&["migrate", "--json", "--repo", &repo]).stdout).unwrap();
    assert_eq!(again["from_version"], 2, "{again}");
    assert_eq!(again["chunks_packed"], 0, "{again}");
}
