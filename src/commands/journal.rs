//! `lifeboat journal`: the record of every operation on a repository.

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use crate::journal::{Record, Status};
use crate::repo::{RepoSpec, Repository};
use crate::ui::Outcome;

#[derive(Debug, Clone, Args)]
pub struct JournalArgs {
    #[command(flatten)]
    pub repo: RepoSpec,
    /// Only records about these snapshot names (repeatable).
    #[arg(long)]
    pub name: Vec<String>,
    /// Only records since then: an RFC 3339 time, a date (2026-12-01), or a span back
    /// from now (7d, 36h, 2w).
    #[arg(long, value_name = "TIME_OR_SPAN", value_parser = since)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Serialize)]
pub struct Journal {
    pub records: Vec<Record>,
}

impl Outcome for Journal {
    fn print(&self) {
        for r in &self.records {
            crate::outln!(
                "{:<23}  {:<9}  {:<11}  {:>7.1} s  {}@{}  {}{}{}",
                crate::time::shown(&r.time),
                r.operation.to_string(),
                match r.status {
                    Status::Ok => "ok",
                    Status::Failed => "FAILED",
                    Status::Interrupted => "INTERRUPTED",
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

fn since(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    crate::time::parse_since(s).map_err(|e| format!("{e:#}"))
}

pub fn run(args: &JournalArgs) -> Result<Journal> {
    let repo = Repository::open(&args.repo)?;
    let from = args.since;
    let records = crate::journal::read_all(&repo)?
        .into_iter()
        .filter(|r| args.name.is_empty() || r.name.as_ref().is_some_and(|n| args.name.contains(n)))
        .filter(|r| match from {
            Some(f) => crate::time::parse_rfc3339(&r.time).is_ok_and(|t| t >= f),
            None => true,
        })
        .collect();
    Ok(Journal { records })
}
