//! Repositories on a real distributed object store: a three-node Garage cluster on
//! 127.0.0.1 (replication factor 3), started by `scripts/garage-cluster` from the Garage
//! that `scripts/test` builds into `.cache/tools`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

/// The cluster: stopped when dropped.
struct Garage {
    dir: PathBuf,
    env: Vec<(String, String)>,
}

impl Garage {
    fn start(dir: &Path) -> Garage {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let garage = root.join(".cache/tools/bin/garage");
        assert!(
            garage.exists(),
            "{} is missing: scripts/test builds it",
            garage.display()
        );
        // Ports of our own: base + 10..33, from this process's id.
        let base = 20_000 + (std::process::id() % 400) * 100;
        let o = Command::new(root.join("scripts/garage-cluster"))
            .arg(dir)
            .arg(base.to_string())
            .env("GARAGE", &garage)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        let g = Garage {
            dir: dir.to_path_buf(),
            env: out
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
                .collect(),
        };
        assert!(
            o.status.success(),
            "garage-cluster: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        g
    }

    fn var(&self, k: &str) -> &str {
        &self.env.iter().find(|(n, _)| n == k).unwrap().1
    }

    /// lifeboat with the cluster's endpoint, region and key (or `key` and `secret`).
    fn lifeboat(&self, args: &[&str], key: Option<(&str, &str)>) -> Output {
        let mut c = Command::new(bin());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        if let Some((id, secret)) = key {
            c.env("AWS_ACCESS_KEY_ID", id)
                .env("AWS_SECRET_ACCESS_KEY", secret);
        }
        c.args(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> Output {
        let o = self.lifeboat(args, None);
        assert!(
            o.status.success(),
            "lifeboat {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let _ = Command::new(root.join("scripts/garage-cluster"))
            .arg("--stop")
            .arg(&self.dir)
            .status();
    }
}

#[test]
fn repositories_on_a_three_node_garage_cluster() {
    let env = Env::new();
    let g = Garage::start(&env.path("garage"));
    let src = env.disk("gpt", "src.img");
    let repo = "s3://lifeboat/fleet/web01";
    g.ok(&["init", "-q", "--repo", repo]);
    let capture = || -> serde_json::Value {
        let o = g.ok(&[
            "capture",
            "--json",
            "-q",
            "--repo",
            repo,
            "--source",
            path_str(&src),
            "--name",
            "web",
        ]);
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
    g.ok(&[
        "restore",
        "-q",
        "--repo",
        repo,
        "--snapshot",
        "web",
        "--target",
        path_str(&dst),
    ]);
    assert_eq!(hash_file(&dst), hash_file(&src));
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
