//! `lifeboat migrate`: its options; `repo::migrate` does the work.

use clap::Args;

use crate::repo::RepoSpec;

#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub repo: RepoSpec,
}
