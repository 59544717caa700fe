//! The command line: the global flags and the commands (each command's options are an
//! `Args` struct of its subsystem, or of `commands/`).

use clap::Parser;

use crate::commands::Command;
use crate::ui::Ui;

/// Lifeboat: bare-metal backup and restore.
///
/// Captures whole disks into a deduplicated, verified chunk repository and restores them
/// exactly, onto the same disk or a larger one.
#[derive(Debug, Parser)]
#[command(after_long_help = EXIT_CODES)]
#[command(name = "lifeboat", version = crate::commands::about::VERSION, propagate_version = true)]
pub struct Cli {
    /// Print results as one JSON object (or array) on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress output.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// More diagnostics on stderr (-v info, -vv debug).
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Seconds a network read or write may stall (HTTP repositories, NBD); every other
    /// network deadline follows from it: connecting (at most 10 s), a whole request (2x,
    /// plus its body at 64 KiB/s), an NBD reply (2x), no new retry after 3x.
    #[arg(long, global = true, env = "LIFEBOAT_IO_TIMEOUT", value_name = "DURATION", default_value = "30s", value_parser = io_timeout)]
    pub io_timeout: std::time::Duration,
    /// Move at most this many KiB/s from network repositories (HTTP, S3), all
    /// transfers together (restic's option).
    #[arg(long, global = true, env = "LIFEBOAT_LIMIT_DOWNLOAD", value_name = "KiB/s", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit_download: Option<u64>,
    /// Send at most this many KiB/s to network repositories (HTTP, S3).
    #[arg(long, global = true, env = "LIFEBOAT_LIMIT_UPLOAD", value_name = "KiB/s", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit_upload: Option<u64>,
    #[command(subcommand)]
    pub command: Command,
}

/// The exit codes, as `--help` and the man page list them (and the README).
const EXIT_CODES: &str = "Exit codes:
  0    success
  1    the command failed: its error on stderr (with --json, {\"ok\": false, \"error\": ...} on stdout)
  2    the command line is wrong
  130  stopped by SIGINT (Ctrl-C); 143 by SIGTERM. It says what is left; the same command resumes
  status exits as Nagios reads it: 0 OK, 1 WARNING (overdue), 2 CRITICAL (failed, or no snapshot), 3 UNKNOWN (unreadable)

Durations (--max-age, --wait, --keep-within, --since, ...) are numbers with units ms, s, min, h, d, w, mo, y: 90s, 10min, 36h, 2w, 1y6mo. A bare m is refused (minutes or months?). --since also takes a date (2026-12-01) or an RFC 3339 time.";

/// `--io-timeout`: 0.1 s to a day (a bare number is seconds).
fn io_timeout(s: &str) -> Result<std::time::Duration, String> {
    let d = crate::time::parse_seconds_or_duration(s)?;
    match (0.1..=86_400.0).contains(&d.as_secs_f64()) {
        true => Ok(d),
        false => Err(format!("{s:?} is not from 0.1 s to a day")),
    }
}

impl Cli {
    pub fn ui(&self) -> Ui {
        Ui {
            json: self.json,
            quiet: self.quiet,
            plain: false,
        }
    }

    /// How much to log: a server logs every request by default.
    pub fn log_level(&self) -> log::LevelFilter {
        match self.verbose {
            0 if self.command.is_server() => log::LevelFilter::Info,
            0 => log::LevelFilter::Warn,
            1 => log::LevelFilter::Info,
            _ => log::LevelFilter::Debug,
        }
    }
}
