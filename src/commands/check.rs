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
    /// Read only this share of the chunks (as restic's `--read-data-subset N%`), a
    /// different share each day: over ceil(100/N) consecutive days every chunk is read.
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
    /// Which chunks to read today: (groups, today's group), chunks whose id falls in it.
    pub fn subset(&self) -> Option<(u32, u32)> {
        let n = self.read_data_subset? as u32;
        let groups = 100u32.div_ceil(n);
        let day = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() / 86_400)
            .unwrap_or(0);
        Some((groups, (day % groups as u64) as u32))
    }
}
