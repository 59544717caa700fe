//! `lifeboat serve` of a local repository for a guest, on an ephemeral port.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};

/// `lifeboat serve` of a local repository for the guest, on an ephemeral port.
pub struct Server {
    child: Child,
    pub port: u16,
}

impl Server {
    pub fn start(dir: &Path) -> Result<Server> {
        let exe = std::env::current_exe().context("find the running lifeboat binary")?;
        let mut child = Command::new(exe)
            .args(["serve", "-q", "--listen", "127.0.0.1:0", "--repo"])
            .arg(dir)
            .env("LIFEBOAT_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("start lifeboat serve")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .context("read the address of lifeboat serve")?;
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("lifeboat serve said {line:?}"))?;
        Ok(Server { child, port })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}
