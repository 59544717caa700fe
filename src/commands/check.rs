//! `lifeboat check`: its options.

use clap::Args;

use crate::repo::RepoSpec;

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub repo: RepoSpec,
    #[command(flatten)]
    pub trust: crate::trust::TrustArgs,
    /// Decompress and hash every stored chunk.
    #[arg(long)]
    pub read_data: bool,
}
