//! Passphrases: held wiped from memory, from a file (first line), or asked on the
//! terminal without echo.

use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use zeroize::Zeroizing;

/// A passphrase, wiped from memory when dropped and never shown by `Debug`.
#[derive(Clone)]
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    pub fn new(text: String) -> Passphrase {
        Passphrase(Zeroizing::new(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(..)")
    }
}

/// The most a passphrase file may hold.
const MAX_FILE: u64 = 4096;

/// The passphrase in `file` (its first line, without the newline), or, with no file,
/// asked on the terminal (`prompt`); without a terminal, an error saying what to give
/// (`hint`).
pub fn get(file: Option<&Path>, prompt: &str, hint: &str) -> Result<String> {
    if let Some(f) = file {
        let meta = std::fs::metadata(f).with_context(|| format!("read {}", f.display()))?;
        if !meta.is_file() || meta.len() > MAX_FILE {
            bail!(
                "{} is not a passphrase file (a small regular file)",
                f.display()
            );
        }
        let text = std::fs::read_to_string(f).with_context(|| format!("read {}", f.display()))?;
        let line = text.lines().next().unwrap_or("").to_string();
        if line.is_empty() {
            bail!("{} holds an empty passphrase", f.display());
        }
        return Ok(line);
    }
    if !std::io::stdin().is_terminal() {
        bail!("{hint} (there is no terminal to ask on)");
    }
    ask(prompt)
}

/// A new passphrase: from `file`, or asked twice on the terminal (the two must match).
pub fn get_new(file: Option<&Path>, prompt: &str, hint: &str) -> Result<String> {
    if file.is_some() || !std::io::stdin().is_terminal() {
        return get(file, prompt, hint);
    }
    let first = ask(prompt)?;
    if ask(&format!("{prompt} (again)"))? != first {
        bail!("the two passphrases differ");
    }
    Ok(first)
}

/// Ask on the terminal with echo off.
pub fn ask(prompt: &str) -> Result<String> {
    ask_announced(None, prompt)
}

/// Ask on the terminal with echo off, first printing `announce` as a whole line on
/// stdout once echo is off (the rescue's console, which a drill reads line by line and
/// answers).
pub fn ask_announced(announce: Option<&str>, prompt: &str) -> Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).context("read the terminal's settings")?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    // Echo off before the prompt: what is typed as soon as it shows is not echoed.
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet).context("turn off the terminal's echo")?;
    if let Some(a) = announce {
        crate::outln!("{a}");
        std::io::stdout().flush().ok();
    }
    eprint!("{prompt}: ");
    std::io::stderr().flush().ok();
    // Echo comes back whatever happens, a Ctrl-C included.
    let read = crate::io::interrupt::read_line();
    let _ = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
    eprintln!();
    let line = read.context("read the passphrase")?;
    let line = line.trim_end_matches(['\r', '\n']).to_string();
    if line.is_empty() {
        bail!("an empty passphrase");
    }
    Ok(line)
}
