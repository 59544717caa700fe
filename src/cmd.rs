//! Running external programs: one helper that puts the command line and its stderr into
//! the error.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Run to completion; on failure the error holds the command line, the exit status and
/// what it printed on stderr. Returns stdout.
pub fn run(cmd: &mut Command) -> Result<String> {
    let line = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().with_context(|| format!("run {line}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let msg = String::from_utf8_lossy(&out.stdout);
        bail!(
            "{line} failed ({}): {}",
            out.status,
            if err.trim().is_empty() {
                msg.trim()
            } else {
                err.trim()
            }
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Find a program on PATH (and in the sbin directories, which a plain user's PATH may lack).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.is_file());
    found
}
