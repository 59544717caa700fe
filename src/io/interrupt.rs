//! SIGINT and SIGTERM: the first asks the running command to stop at its next step (the
//! loops of capture, restore, check and prune, and every wait, ask [`check`]); it then
//! unwinds as from any error, so that its guards clear the progress bar, release its
//! lease and remove its temporary files, and its journal record says `interrupted`. A
//! second signal ends the process at once (the handler is reset after the first).

use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};

/// The signal received, or 0.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// The error of a command stopped by a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("interrupted by {}", self.name())]
pub struct Interrupted {
    /// The signal's number (2 or 15).
    pub signal: i32,
}

impl Interrupted {
    pub fn name(&self) -> &'static str {
        match self.signal {
            15 => "SIGTERM",
            _ => "SIGINT (Ctrl-C)",
        }
    }
}

extern "C" fn on_signal(sig: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    let _ = RECEIVED.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
}

/// Catch SIGINT and SIGTERM for the rest of the process (once, by `main`). A signal
/// the process was started ignoring (a background job, `nohup`) stays ignored.
pub fn install() -> Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART | SaFlags::SA_RESETHAND,
        SigSet::empty(),
    );
    for s in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic; an ignored signal is put back.
        let old = unsafe { signal::sigaction(s, &action) }.with_context(|| format!("catch {s}"))?;
        if old.handler() == SigHandler::SigIgn {
            // SAFETY: restores the disposition the process started with.
            unsafe { signal::sigaction(s, &old) }.with_context(|| format!("ignore {s} again"))?;
        }
    }
    Ok(())
}

/// A command stopped by a signal, with what it leaves and how to go on: the one line an
/// interrupted command ends with.
#[derive(Debug, thiserror::Error)]
#[error("{what} stopped by {}: {left}", self.by.name())]
pub struct Stopped {
    pub by: Interrupted,
    /// What stopped: "capture of web01".
    pub what: String,
    /// What is left, and that the same command resumes (or what else to do).
    pub left: String,
}

/// `e` as a [`Stopped`] when a signal stopped the command (`left` says what is left),
/// or as it is.
pub fn explain(e: anyhow::Error, what: &str, left: impl FnOnce() -> String) -> anyhow::Error {
    match of(&e) {
        Some(by) => {
            log::info!("{what}: {e:#}");
            anyhow::Error::new(Stopped {
                by,
                what: what.to_string(),
                left: left(),
            })
        }
        None => e,
    }
}

/// The signal received so far, if any.
pub fn received() -> Option<Interrupted> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(Interrupted { signal }),
    }
}

/// Stop here if a signal asked for it.
pub fn check() -> Result<(), Interrupted> {
    match received() {
        Some(i) => Err(i),
        None => Ok(()),
    }
}

/// Sleep for `d`, or less when a signal arrives.
pub fn sleep(d: Duration) -> Result<(), Interrupted> {
    let end = Instant::now() + d;
    loop {
        check()?;
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// Read a line from stdin (a prompt's answer), stopping at a signal: a read would wait
/// on, as SIGINT's handler lets it, so stdin is polled and the flag asked in between.
pub fn read_line() -> Result<String> {
    use std::io::BufRead;
    loop {
        check()?;
        let mut fds = [libc::pollfd {
            fd: libc::STDIN_FILENO,
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one pollfd, which outlives the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, 100) };
        if n > 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        if n < 0 && e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e).context("wait for the terminal");
        }
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("read the terminal")?;
    Ok(line)
}

/// The interrupt that stopped a command which ended in `e`: one in its chain, or a
/// signal received meanwhile (whatever the error then says, from a read cut short by it).
pub fn of(e: &anyhow::Error) -> Option<Interrupted> {
    e.chain()
        .find_map(|c| {
            c.downcast_ref::<Interrupted>()
                .copied()
                .or_else(|| c.downcast_ref::<Stopped>().map(|s| s.by))
        })
        .or_else(received)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupt_is_found_in_an_error_chain_and_names_its_signal() {
        let e = anyhow::Error::new(Interrupted { signal: 15 }).context("capture web01");
        assert_eq!(of(&e), Some(Interrupted { signal: 15 }));
        assert_eq!(format!("{e:#}"), "capture web01: interrupted by SIGTERM");
        assert_eq!(of(&anyhow::anyhow!("disk full")), None);
    }
}
