//! The command line: the global flags and the commands (each command's options are its
//! own `Args` struct under `commands/`).

use clap::Parser;

use crate::commands::Command;
use crate::ui::Ui;

/// Lifeboat: bare-metal backup and restore.
///
/// Captures whole disks into a deduplicated, verified chunk repository and restores them
/// exactly, onto the same disk or a larger one.
#[derive(Debug, Parser)]
#[command(name = "lifeboat", version, propagate_version = true)]
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
    #[command(subcommand)]
    pub command: Command,
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
