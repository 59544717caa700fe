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

/// Catch SIGINT and SIGTERM for the rest of the process (once, by `main`).
pub fn install() -> Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART | SaFlags::SA_RESETHAND,
        SigSet::empty(),
    );
    for s in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { signal::sigaction(s, &action) }.with_context(|| format!("catch {s}"))?;
    }
    Ok(())
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

/// The interrupt in an error's chain, if that is what stopped it.
pub fn of(e: &anyhow::Error) -> Option<Interrupted> {
    e.chain()
        .find_map(|c| c.downcast_ref::<Interrupted>().copied())
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
