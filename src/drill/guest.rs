//! A QEMU guest whose serial console arrives line by line and is logged to a file.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// A QEMU guest whose serial console arrives line by line, and is logged to a file.
pub struct Guest {
    child: Child,
    lines: Receiver<String>,
}

impl Guest {
    pub fn start(args: &[String], log: &Path, echo: bool) -> Result<Guest> {
        let mut child = Command::new("qemu-system-x86_64")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("start qemu-system-x86_64 (apt-get install qemu-system-x86)")?;
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().expect("piped");
        let err = child.stderr.take().expect("piped");
        let mut log = File::create(log).with_context(|| format!("create {}", log.display()))?;
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx2.send(format!("qemu: {line}"));
            }
        });
        std::thread::spawn(move || {
            let mut r = BufReader::new(out);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let _ = log.write_all(&buf);
                // Serial consoles carry escape sequences and carriage returns.
                let text: String = String::from_utf8_lossy(&buf)
                    .chars()
                    .filter(|c| *c != '\r' && *c != '\u{1b}')
                    .collect();
                if echo {
                    eprint!("  | {text}");
                }
                if tx.send(text.trim_end().to_string()).is_err() {
                    break;
                }
            }
        });
        Ok(Guest { child, lines: rx })
    }

    /// Wait for a line containing one of `patterns`; returns (pattern index, line), or
    /// None when QEMU ended or the time ran out (and why).
    pub fn wait_for(
        &mut self,
        patterns: &[&str],
        timeout: Duration,
    ) -> std::result::Result<(usize, String), String> {
        let deadline = Instant::now() + timeout;
        let mut last_qemu = String::new();
        loop {
            if let Some(i) = crate::io::interrupt::received() {
                return Err(i.to_string());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("nothing after {} s", timeout.as_secs()));
            }
            // A signal is noticed within a fifth of a second.
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok(line) => {
                    if line.starts_with("qemu: ") {
                        last_qemu = line.clone();
                    }
                    if let Some(i) = patterns.iter().position(|p| line.contains(p)) {
                        return Ok((i, line));
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                    return Err(format!("the guest ended ({status}) {last_qemu}")
                        .trim()
                        .to_string());
                }
            }
        }
    }

    /// Type a line on the guest's serial console.
    pub fn type_line(&mut self, text: &str) -> Result<()> {
        let stdin = self
            .child
            .stdin
            .as_mut()
            .context("the guest's console input")?;
        stdin
            .write_all(format!("{text}\r").as_bytes())
            .and_then(|_| stdin.flush())
            .context("type on the guest's console")
    }

    /// Let the guest power off by itself for a while, then stop it.
    pub fn end(mut self, grace: Duration) {
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
