//! How results reach the user: for people (tables and sentences, progress bars on a
//! terminal, plain progress lines otherwise) or for machines (one JSON value on stdout).
//! One `Ui` value carries the choice to every command; every command's result implements
//! [`Outcome`].

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

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

    /// Print a command's result as asked, and fail when the result says so.
    pub fn show<T: Outcome>(&self, outcome: &T) -> Result<()> {
        if self.json {
            print_json(outcome)?;
        } else {
            outcome.print();
        }
        match outcome.failure() {
            Some(why) => Err(anyhow::anyhow!(why)),
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
}

/// Print `value` as one JSON line on stdout.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

/// Print aligned "key  value" lines.
pub fn print_table(rows: &[(&str, String)]) {
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("{k:<w$}  {v}");
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
