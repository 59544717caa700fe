//! `lifeboat migrate`: its options.

use clap::Args;

use crate::repo::RepoSpec;

#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub repo: RepoSpec,
}
