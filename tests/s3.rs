//! Repositories on a real distributed object store: a three-node Garage cluster on
//! 127.0.0.1 (replication factor 3), started by `scripts/garage-cluster` from the Garage
//! that `scripts/test` builds into `.cache/tools`.

mod common;

use std::process::Child;
use std::time::{Duration, Instant};

use common::garage::Garage;
use common::*;

#[test]
fn repositories_on_a_three_node_garage_cluster() {
    let env = Env::new();
    let g = Garage::start(&env.path("garage"));
    let src = env.disk("gpt", "src.img");
    let repo = "s3://lifeboat/fleet/web01";
    g.ok(&["init", "-q", "--repo", repo]);
    let capture = || -> serde_json::Value {
        let o = g.ok(&capture_args(repo, &src, "web"));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let s = capture();
    assert!(s["new_chunks"].as_u64().unwrap() > 100, "{s}");
    let r: serde_json::Value = serde_json::from_slice(
        &g.ok(&["check", "--read-data", "--json", "-q", "--repo", repo])
            .stdout,
    )
    .unwrap();
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["chunks_read"], s["new_chunks"], "{r}");
    let dst = env.path("dst.img");
    g.ok(&restore_args(repo, "web", &dst));
    assert_eq!(hash_file(&dst), hash_file(&src));
    sixteen_restores_at_once_are_all_exact(&env, &g, repo, &hash_file(&src));
    // The same disk again: nothing new stored.
    let again = capture();
    assert_eq!(again["new_chunks"], 0, "{again}");

    // Wrong credentials, a missing bucket: one clear error each.
    let bad = g.lifeboat(
        &["snapshots", "--repo", repo],
        Some((
            g.var("AWS_ACCESS_KEY_ID"),
            "0000000000000000000000000000000000000000000000000000000000000000",
        )),
    );
    let e = String::from_utf8_lossy(&bad.stderr).to_string();
    assert!(!bad.status.success());
    assert!(e.contains("HTTP 403") && e.contains("access denied"), "{e}");
    assert_eq!(e.matches("lifeboat: error").count(), 1, "{e}");
    let missing = g.lifeboat(&["snapshots", "--repo", "s3://no-such-bucket/x"], None);
    let e = String::from_utf8_lossy(&missing.stderr).to_string();
    assert!(!missing.status.success());
    assert!(e.contains("the bucket does not exist"), "{e}");
}

/// Sixteen clients restore the same snapshot from the cluster at the same time.
fn sixteen_restores_at_once_are_all_exact(env: &Env, g: &Garage, repo: &str, want: &str) {
    let targets: Vec<_> = (0..16).map(|i| env.path(&format!("many{i}.img"))).collect();
    let children: Vec<Child> = targets
        .iter()
        .map(|t| g.spawn(&restore_args(repo, "web", t)))
        .collect();
    for (i, c) in children.into_iter().enumerate() {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "restore {i}: {}", stderr(&o));
        assert_eq!(hash_file(&targets[i]), want, "restore {i}");
        std::fs::remove_file(&targets[i]).unwrap();
    }
}

/// Bytes a process has read or written so far (`rchar` or `wchar` of /proc/PID/io).
fn io_bytes(child: &Child, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/io", child.id()))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(": ")?.parse().ok())
        .unwrap_or(0)
}

/// Wait until `child` has moved `bytes` (so that what follows happens in its middle).
fn wait_for_progress(child: &mut Child, field: &str, bytes: u64) {
    let start = Instant::now();
    while io_bytes(child, field) < bytes {
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before {bytes} bytes: make the disk larger"
        );
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_garage_node_killed_in_the_middle_of_a_capture_or_a_restore_costs_nothing() {
    let env = Env::new();
    let g = Garage::start(&env.path("garage"));
    let src = env.path("big.img");
    sh(&format!("head -c 192M /dev/urandom > {}", src.display()));
    let repo = "s3://lifeboat/crash";
    g.ok(&["init", "-q", "--repo", repo]);

    // Node 3 dies a third of the way into the capture; nodes 1 and 2 are a quorum.
    let mut c = g.spawn(&capture_args(repo, &src, "big"));
    wait_for_progress(&mut c, "rchar", 64 << 20);
    g.kill_node(3);
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success(), "capture: {}", stderr(&o));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(s["new_chunks"].as_u64().unwrap() > 1000, "{s}");

    // Node 3 back (it catches up by itself); node 2 dies a third of the way into a restore.
    g.restart_node(3);
    let dst = env.path("dst.img");
    let mut r = g.spawn(&restore_args(repo, "big", &dst));
    wait_for_progress(&mut r, "wchar", 64 << 20);
    g.kill_node(2);
    let o = r.wait_with_output().unwrap();
    assert!(o.status.success(), "restore: {}", stderr(&o));
    assert_eq!(hash_file(&dst), hash_file(&src));
    let r: serde_json::Value = serde_json::from_slice(
        &g.ok(&["check", "--read-data", "--json", "-q", "--repo", repo])
            .stdout,
    )
    .unwrap();
    assert_eq!(r["ok"], true, "{r}");
}
