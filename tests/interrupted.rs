//! A capture killed with SIGKILL at any point leaves a repository that checks clean, and a
//! rerun completes.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Chunk files written so far: in place, or (with `pid`) waiting in tmp/ for that writer's
/// batch to be synced.
fn count_chunks(repo: &std::path::Path, pid: Option<u32>) -> usize {
    let in_place: usize = match std::fs::read_dir(repo.join("chunks")) {
        Ok(fans) => fans
            .filter_map(|f| f.ok())
            .map(|f| std::fs::read_dir(f.path()).map(|d| d.count()).unwrap_or(0))
            .sum(),
        Err(_) => 0,
    };
    let mine = |n: &str| pid.map(|p| n.contains(&format!("-{p}-"))).unwrap_or(false);
    let waiting = std::fs::read_dir(repo.join("tmp"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| mine(&e.file_name().to_string_lossy()))
                .count()
        })
        .unwrap_or(0);
    in_place + waiting
}

#[test]
fn killed_captures_leave_a_sound_repository() {
    let env = Env::new();
    let src = env.disk("gpt", "src.img");
    // Chunk files (format 1), counted as they land; tests/packs.rs kills packed captures.
    let repo = env.init_version(1);
    let repo_path = env.path("repo");
    let mut kills = Vec::new();
    // Kill at once, then once 1, 40 and 120 chunk files exist.
    for threshold in [0usize, 1, 40, 120] {
        let mut child = Command::new(bin())
            .args([
                "capture",
                "--quiet",
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
        let start = Instant::now();
        let before = count_chunks(&repo_path, None);
        while count_chunks(&repo_path, Some(child.id())) < before + threshold
            && start.elapsed() < Duration::from_secs(60)
        {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        kills.push((
            threshold,
            count_chunks(&repo_path, Some(child.id())) - before,
            status.code(),
        ));
        eprintln!("checking after a kill at {threshold} chunks");
        check_clean(&repo);
    }
    eprintln!("kills (threshold, chunks present, exit code): {kills:?}");
    // At least the later kills landed mid-capture, not after it.
    assert!(
        kills.iter().filter(|k| k.2.is_none()).count() >= 3,
        "{kills:?}"
    );

    let s = env.capture(&src, "k");
    // The completed capture removed what the killed ones left in tmp/.
    assert_eq!(std::fs::read_dir(repo_path.join("tmp")).unwrap().count(), 0);
    check_clean(&repo);
    // The killed runs left no snapshot: only the rerun's exists.
    let list: serde_json::Value = serde_json::from_slice::<serde_json::Value>(
        &ok(&["snapshots", "--json", "--repo", &repo]).stdout,
    )
    .unwrap()["snapshots"]
        .clone();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], s["snapshot"]);

    let dst = env.path("dst.img");
    assert!(env.restore("k", &dst, &[]).status.success());
    assert_eq!(hash_file(&dst), hash_file(&src));
}
