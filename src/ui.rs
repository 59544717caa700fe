//! How results reach the user: for people (tables and sentences, progress bars on a
//! terminal, plain progress lines otherwise) or for machines (one JSON value on stdout).
//! One `Ui` value carries the choice to every command; every command's result implements
//! [`Outcome`].

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

/// The exit codes, as the README lists them. `status` speaks Nagios's (OK, WARNING,
/// CRITICAL, UNKNOWN); every other command 0, 1 or 2 (clap's usage error), and
/// 130/143 when SIGINT/SIGTERM stopped it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    /// The command failed (or, for `status`, something is overdue: Nagios's WARNING).
    Failed = 1,
    /// For `status`: an operation failed or a check found damage (Nagios's CRITICAL).
    /// For every command: the command line was wrong (clap).
    Critical = 2,
    /// For `status`: the repository could not be read (Nagios's UNKNOWN).
    Unknown = 3,
    /// SIGINT stopped the command (128 + 2).
    Interrupted = 130,
    /// SIGTERM stopped the command (128 + 15).
    Terminated = 143,
}

/// An error that carries its exit code (a failed outcome, an interrupt, `status`'s
/// verdicts); any other error exits [`Exit::Failed`].
#[derive(Debug, thiserror::Error)]
#[error("{why}")]
pub struct Failure {
    pub why: String,
    pub exit: Exit,
    /// Whether the result was already printed (so that `--json` prints one object).
    pub shown: bool,
}

impl Failure {
    pub fn new(exit: Exit, why: impl Into<String>) -> Failure {
        Failure {
            why: why.into(),
            exit,
            shown: false,
        }
    }
}

/// The exit code an error asks for.
pub fn exit_of(e: &anyhow::Error) -> Exit {
    e.chain()
        .find_map(|c| c.downcast_ref::<Failure>().map(|f| f.exit))
        .unwrap_or(Exit::Failed)
}

/// Whether the error's result was printed already.
pub fn shown(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| c.downcast_ref::<Failure>().is_some_and(|f| f.shown))
}

/// Set once stdout's reader has gone (`lifeboat journal | head -1`): later output is
/// dropped, and the command ends as it would have.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Write to stdout; a closed pipe stops the output, not the command. Every printer goes
/// through here (`crate::outln!` would panic on EPIPE).
pub fn out(args: std::fmt::Arguments) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_fmt(args).and_then(|_| o.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
        } else {
            log::warn!("writing to stdout: {e}");
        }
    }
}

/// `crate::outln!` that survives a closed pipe: see [`out`].
#[macro_export]
macro_rules! outln {
    () => { $crate::ui::out(format_args!("")) };
    ($($arg:tt)*) => { $crate::ui::out(format_args!($($arg)*)) };
}

/// The user's choices about output, from the global flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ui {
    /// One JSON value on stdout instead of the human summary.
    pub json: bool,
    /// No progress output.
    pub quiet: bool,
    /// Progress as plain lines even on a terminal (the rescue's serial console, which
    /// drills read line by line).
    pub plain: bool,
}

impl Ui {
    /// Whether progress is drawn as a bar.
    pub fn progress_bars(&self) -> bool {
        !self.quiet && !self.plain && std::io::stderr().is_terminal()
    }

    /// Print a command's result as asked, and fail when the result says so. Under
    /// `--json` the result is one object with `"ok"` set.
    pub fn show<T: Outcome>(&self, outcome: &T) -> Result<()> {
        let failure = outcome.failure();
        if self.json {
            print_json(&with_ok(outcome, failure.as_deref())?)?;
        } else {
            outcome.print();
        }
        match failure {
            Some(why) => Err(Failure {
                why,
                exit: outcome.exit_code(),
                shown: true,
            }
            .into()),
            None => Ok(()),
        }
    }
}

/// What a command produced: printable for people, serialisable for machines, and able to
/// say that it failed (a check that found problems, a drill that did not boot).
pub trait Outcome: Serialize {
    /// The human summary, on stdout.
    fn print(&self);
    /// Why the command failed although it ran to its end; None when it succeeded.
    fn failure(&self) -> Option<String> {
        None
    }
    /// The exit code of a failure.
    fn exit_code(&self) -> Exit {
        Exit::Failed
    }
}

/// The outcome as one JSON object with `"ok"` (and `"error"` when it failed).
fn with_ok<T: Serialize>(outcome: &T, failure: Option<&str>) -> Result<serde_json::Value> {
    let mut v = serde_json::to_value(outcome)?;
    let Some(o) = v.as_object_mut() else {
        anyhow::bail!("internal: a command's JSON result is not an object");
    };
    o.insert("ok".into(), failure.is_none().into());
    if let Some(why) = failure {
        o.entry("error").or_insert(why.into());
    }
    Ok(v)
}

/// The object `--json` prints when a command fails before it has a result.
pub fn error_json(e: &anyhow::Error, exit: Exit) -> serde_json::Value {
    serde_json::json!({
        "ok": false,
        "error": format!("{e:#}"),
        "exit_code": exit as u8,
    })
}

/// Print `value` as one JSON line on stdout.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> Result<()> {
    out(format_args!("{}", serde_json::to_string(value)?));
    Ok(())
}

/// Print aligned "key  value" lines.
pub fn print_table(rows: &[(&str, String)]) {
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    for (k, v) in rows {
        out(format_args!("{k:<w$}  {v}"));
    }
}

/// 1536 → "1.5 KiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn mib_per_s(n: u64, d: Duration) -> f64 {
    n as f64 / (1 << 20) as f64 / d.as_secs_f64().max(1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }

    #[derive(Serialize)]
    struct Drill {
        pass: bool,
    }

    impl Outcome for Drill {
        fn print(&self) {}
        fn failure(&self) -> Option<String> {
            (!self.pass).then(|| "the restored disk did not boot".into())
        }
    }

    #[test]
    fn a_failed_outcome_is_an_error_after_printing() {
        let ui = Ui {
            json: true,
            ..Default::default()
        };
        assert!(ui.show(&Drill { pass: true }).is_ok());
        let e = ui.show(&Drill { pass: false }).unwrap_err();
        assert_eq!(e.to_string(), "the restored disk did not boot");
        assert!((mib_per_s(3 << 20, Duration::from_secs(2)) - 1.5).abs() < 1e-9);
    }
}
