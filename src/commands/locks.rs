//! `lifeboat locks`: the leases of running captures and prunes, and prune intents; break
//! a dead one.

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;

use crate::prune::{intent, lease};
use crate::repo::{Object, RepoSpec, Repository};
use crate::ui::Outcome;

#[derive(Debug, Clone, Args)]
pub struct LocksArgs {
    #[command(flatten)]
    pub repo: RepoSpec,
    /// Remove this lease or intent (its object name, as listed): for one whose process
    /// died. A deletion: through `serve`, the append token may remove a lease, only the
    /// admin token an intent.
    #[arg(long = "break", value_name = "NAME")]
    pub break_: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Held {
    pub name: String,
    pub kind: String,
    pub host: String,
    pub pid: u32,
    pub started: String,
    pub expires: Option<String>,
    pub stale: bool,
}

#[derive(Debug, Serialize)]
pub struct Locks {
    pub held: Vec<Held>,
    pub broken: Option<String>,
}

impl Outcome for Locks {
    fn print(&self) {
        if let Some(b) = &self.broken {
            crate::outln!("removed {b}");
        }
        if self.held.is_empty() {
            crate::outln!("no leases and no prune intents");
        }
        for h in &self.held {
            crate::outln!(
                "{}  {:<7} {}  pid {}  since {}{}",
                h.name,
                h.kind,
                h.host,
                h.pid,
                h.started,
                if h.stale { "  STALE" } else { "" }
            );
        }
    }
}

pub fn run(args: &LocksArgs) -> Result<Locks> {
    let repo = Repository::open(&args.repo)?;
    let broken = match &args.break_ {
        Some(name) => {
            let object = match Object::parse(name) {
                Some(o @ (Object::Lease(_) | Object::Intent(_))) => o,
                _ => bail!("{name} is not a lease or an intent (locks/... or prune/...)"),
            };
            repo.store()
                .delete(&object)
                .with_context(|| format!("remove {}", repo.store().location(&object)))?;
            repo.store().flush()?;
            Some(name.clone())
        }
        None => None,
    };
    let now = chrono::Utc::now();
    let mut held: Vec<Held> = lease::list(&repo)?
        .into_iter()
        .map(|(object, l)| Held {
            stale: l.is_stale(now),
            name: object.to_string(),
            kind: l.kind,
            host: l.host,
            pid: l.pid,
            started: l.started,
            expires: Some(l.expires),
        })
        .collect();
    held.extend(intent::list(&repo)?.into_iter().map(|(name, i)| Held {
        name: Object::Intent(name).to_string(),
        kind: "intent".into(),
        host: i.host,
        pid: i.pid,
        started: i.time,
        expires: None,
        stale: false,
    }));
    Ok(Locks { held, broken })
}
