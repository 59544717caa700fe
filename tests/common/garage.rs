//! A three-node Garage cluster on 127.0.0.1 (replication factor 3) for the tests, started
//! by `scripts/garage-cluster` from the Garage that `scripts/test` builds into
//! `.cache/tools`, and stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use super::bin;

pub struct Garage {
    dir: PathBuf,
    env: Vec<(String, String)>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/garage-cluster")
}

impl Garage {
    pub fn start(dir: &Path) -> Garage {
        let garage = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/tools/bin/garage");
        assert!(
            garage.exists(),
            "{} is missing: scripts/test builds it",
            garage.display()
        );
        // Ports of our own (base + 10..33): from this process's id and a count of the
        // clusters it started, so that tests running side by side never share one; all
        // below 32768, where the kernel picks no ephemeral port (an outgoing connection
        // of another test cannot take one first).
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let n = STARTED.fetch_add(1, Ordering::SeqCst) % 4;
        let base = 20_000 + (std::process::id() % 60) * 200 + n * 50;
        let o = Command::new(script())
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

    pub fn var(&self, k: &str) -> &str {
        &self.env.iter().find(|(n, _)| n == k).unwrap().1
    }

    /// The endpoint, region and key, as a client takes them from its environment.
    pub fn vars(&self) -> &[(String, String)] {
        &self.env
    }

    /// lifeboat with the cluster's endpoint, region and key.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.args(args);
        c
    }

    /// lifeboat with the cluster's endpoint, region and key (or `key` and `secret`).
    pub fn lifeboat(&self, args: &[&str], key: Option<(&str, &str)>) -> Output {
        let mut c = self.command(args);
        if let Some((id, secret)) = key {
            c.env("AWS_ACCESS_KEY_ID", id)
                .env("AWS_SECRET_ACCESS_KEY", secret);
        }
        c.output().unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> Output {
        let o = self.lifeboat(args, None);
        assert!(
            o.status.success(),
            "lifeboat {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }

    /// lifeboat started in the background with the cluster's settings.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Kill node `n` (1 to 3) at once, as a crash would.
    pub fn kill_node(&self, n: u32) {
        let pid = std::fs::read_to_string(self.dir.join(format!("node{n}/pid"))).unwrap();
        let pid: i32 = pid.trim().parse().unwrap();
        // SAFETY: kill(2) on a process of our own.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        let _ = std::fs::remove_file(self.dir.join(format!("node{n}/pid")));
    }

    /// Start node `n` again.
    pub fn restart_node(&self, n: u32) {
        let o = Command::new(script())
            .arg("--restart")
            .arg(&self.dir)
            .arg(n.to_string())
            .env(
                "GARAGE",
                Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/tools/bin/garage"),
            )
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("--stop").arg(&self.dir).status();
    }
}
