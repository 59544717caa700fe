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
    /// Read only this share of the chunks (as restic's `--read-data-subset N%`), the next
    /// share at each run (the journal remembers the last): over ceil(100/N) runs every
    /// chunk is read, whatever the schedule.
    #[arg(long, value_name = "N%", value_parser = parse_share, conflicts_with = "read_data")]
    pub read_data_subset: Option<u8>,
}

/// `N%`, 1 to 100.
fn parse_share(s: &str) -> Result<u8, String> {
    let n: u8 = s
        .strip_suffix('%')
        .and_then(|n| n.parse().ok())
        .filter(|n| (1..=100).contains(n))
        .ok_or_else(|| format!("{s}: a share from 1% to 100%"))?;
    Ok(n)
}

impl CheckArgs {
    /// How many groups the chunks fall into for `--read-data-subset`.
    pub fn subset_groups(&self) -> Option<u32> {
        Some(100u32.div_ceil(self.read_data_subset? as u32))
    }
}
