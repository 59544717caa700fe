//! `lifeboat check`: its options.

use clap::Args;

use crate::repo::RepoSpec;

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub repo: RepoSpec,
    /// Decompress and hash every stored chunk.
    #[arg(long)]
    pub read_data: bool,
}
