//! `lifeboat journal`: the record of every operation on a repository.

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;

use crate::journal::{Record, Status};
use crate::repo::{RepoSpec, Repository};
use crate::time::Span;
use crate::ui::Outcome;

#[derive(Debug, Clone, Args)]
pub struct JournalArgs {
    #[command(flatten)]
    pub repo: RepoSpec,
    /// Only records about these snapshot names (repeatable).
    #[arg(long)]
    pub name: Vec<String>,
    /// Only records since then: an RFC 3339 time, or a span back from now (7d, 36h).
    #[arg(long, value_name = "TIME_OR_SPAN")]
    pub since: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct Journal(pub Vec<Record>);

impl Outcome for Journal {
    fn print(&self) {
        for r in &self.0 {
            println!(
                "{:<19}  {:<9}  {:<6}  {:>7.1} s  {}@{}  {}{}{}",
                r.time.get(..19).unwrap_or(&r.time),
                format!("{:?}", r.operation).to_lowercase(),
                if r.status == Status::Ok {
                    "ok"
                } else {
                    "FAILED"
                },
                r.duration_s,
                r.user,
                r.host,
                r.name
                    .as_deref()
                    .map(|n| format!("{n} "))
                    .unwrap_or_default(),
                r.snapshot.map(|s| s.short()).unwrap_or_default(),
                r.error
                    .as_deref()
                    .map(|e| format!("  {e}"))
                    .unwrap_or_default(),
            );
        }
    }
}

/// The start of the window `since` names.
fn since(s: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = crate::time::parse_rfc3339(s) {
        return Ok(t);
    }
    let span: Span = s
        .parse()
        .with_context(|| format!("--since {s}: an RFC 3339 time or a span such as 7d"))?;
    Ok(span.before(chrono::Utc::now()))
}

pub fn run(args: &JournalArgs) -> Result<Journal> {
    let repo = Repository::open(&args.repo)?;
    let from = args.since.as_deref().map(since).transpose()?;
    let records = crate::journal::read_all(&repo)?
        .into_iter()
        .filter(|r| args.name.is_empty() || r.name.as_ref().is_some_and(|n| args.name.contains(n)))
        .filter(|r| match from {
            Some(f) => crate::time::parse_rfc3339(&r.time).is_ok_and(|t| t >= f),
            None => true,
        })
        .collect();
    Ok(Journal(records))
}
