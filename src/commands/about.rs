//! What the binary says of itself: `lifeboat version` (with the commit it was built from),
//! `lifeboat completions SHELL` and `lifeboat man DIR`, both generated from the same
//! command-line definitions as the parser (clap_complete, clap_mangen).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;

use crate::ui::{print_table, Outcome};

/// The version line of `--version`: `0.1.0 (commit 1a2b3c4d5e6f)`.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("LIFEBOAT_COMMIT"),
    ")"
);

#[derive(Debug, Serialize)]
pub struct Version {
    pub version: &'static str,
    pub commit: &'static str,
    pub target: &'static str,
}

impl Outcome for Version {
    fn print(&self) {
        print_table(&[
            ("lifeboat", self.version.to_string()),
            ("commit", self.commit.to_string()),
            ("target", self.target.to_string()),
        ]);
    }
}

pub fn version() -> Version {
    Version {
        version: env!("CARGO_PKG_VERSION"),
        commit: env!("LIFEBOAT_COMMIT"),
        target: env!("LIFEBOAT_TARGET"),
    }
}

#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Print the completion script for a shell on stdout (`lifeboat completions bash >
/// /etc/bash_completion.d/lifeboat`).
pub fn completions(args: &CompletionsArgs, mut cmd: clap::Command) -> Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "lifeboat", &mut script);
    crate::ui::out(format_args!(
        "{}",
        String::from_utf8_lossy(&script).trim_end()
    ));
    Ok(())
}

#[derive(Debug, Clone, Args)]
pub struct ManArgs {
    /// The folder to write the pages into (lifeboat.1, lifeboat-capture.1, ...).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

#[derive(Debug, Serialize)]
pub struct ManPages {
    pub dir: PathBuf,
    pub pages: Vec<String>,
}

impl Outcome for ManPages {
    fn print(&self) {
        crate::outln!("{} man pages in {}", self.pages.len(), self.dir.display());
    }
}

/// Write a man page for the command and one for each subcommand.
pub fn man(args: &ManArgs, cmd: clap::Command) -> Result<ManPages> {
    std::fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    let mut pages = vec![page(&args.dir, "lifeboat", cmd.clone())?];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("lifeboat-{}", sub.get_name());
        pages.push(page(&args.dir, &name, sub.clone().name(name.clone()))?);
    }
    Ok(ManPages {
        dir: args.dir.clone(),
        pages,
    })
}

fn page(dir: &Path, name: &str, cmd: clap::Command) -> Result<String> {
    let file = format!("{name}.1");
    let path = dir.join(&file);
    let mut text = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut text)
        .with_context(|| format!("render {file}"))?;
    std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    Ok(file)
}
