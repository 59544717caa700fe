//! A capture killed with SIGKILL at any point leaves a repository that checks clean, and a
//! rerun completes.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn count_chunks(repo: &std::path::Path) -> usize {
    let Ok(fans) = std::fs::read_dir(repo.join("chunks")) else {
        return 0;
    };
    fans.filter_map(|f| f.ok())
        .map(|f| std::fs::read_dir(f.path()).map(|d| d.count()).unwrap_or(0))
        .sum()
}

#[test]
fn killed_captures_leave_a_sound_repository() {
    let env = Env::new();
    let src = env.disk("gpt", "src.img");
    let repo = env.init();
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
        while count_chunks(&repo_path) < threshold && start.elapsed() < Duration::from_secs(60) {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        kills.push((threshold, count_chunks(&repo_path), status.code()));
        let o = ok(&["check", "--read-data", "--json", "--quiet", "--repo", &repo]);
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(r["ok"], true, "after a kill at {threshold} chunks: {r}");
    }
    eprintln!("kills (threshold, chunks present, exit code): {kills:?}");
    // At least the later kills landed mid-capture, not after it.
    assert!(
        kills.iter().filter(|k| k.2.is_none()).count() >= 3,
        "{kills:?}"
    );

    let s = env.capture(&src, "k");
    let o = ok(&["check", "--read-data", "--json", "--quiet", "--repo", &repo]);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["ok"], true);
    assert!(
        s["new_chunks"].as_u64().unwrap() < s["chunks"].as_u64().unwrap(),
        "the rerun reused what the killed runs stored: {s}"
    );
    let dst = env.path("dst.img");
    assert!(env.restore("k", &dst, &[]).status.success());
    assert_eq!(hash_file(&dst), hash_file(&src));
}
