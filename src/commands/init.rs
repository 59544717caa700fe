//! `lifeboat init`: create a repository.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use crate::repo::{ChunkerParams, Config, Repository};
use crate::ui::Outcome;

#[derive(Debug, Clone, Args)]
pub struct InitArgs {
    /// Directory to create (must be absent or empty).
    #[arg(long, value_name = "DIR")]
    pub repo: PathBuf,
    /// Average chunk size in KiB (minimum is a quarter, maximum four times this).
    #[arg(long, default_value_t = 64, value_name = "KIB")]
    pub chunk_avg_kib: u32,
    /// zstd compression level for chunks.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(-7..=19))]
    pub level: i32,
    /// Repository format: 1 keeps a file per chunk; 2 appends chunks into pack files of
    /// about 16 MiB named by index files (see docs/repository-format.md).
    #[arg(long, default_value_t = crate::repo::REPO_VERSION, value_parser = clap::value_parser!(u32).range(1..=2))]
    pub format_version: u32,
}

/// The new repository's config, as stored.
#[derive(Debug, serde::Serialize)]
#[serde(transparent)]
pub struct Created {
    #[serde(skip)]
    pub dir: PathBuf,
    pub config: Config,
}

impl Outcome for Created {
    fn print(&self) {
        println!(
            "created repository {} (id {})",
            self.dir.display(),
            self.config.id
        );
    }
}

pub fn run(args: &InitArgs) -> Result<Created> {
    if !(4..=1024).contains(&args.chunk_avg_kib) {
        bail!("--chunk-avg-kib must be between 4 and 1024");
    }
    let avg = args.chunk_avg_kib * 1024;
    let params = ChunkerParams {
        min_size: avg / 4,
        avg_size: avg,
        max_size: avg * 4,
        ..Default::default()
    };
    let r = Repository::init_version(&args.repo, params, args.level, args.format_version)?;
    Ok(Created {
        dir: args.repo.clone(),
        config: r.config,
    })
}
