//! `lifeboat protect`: keep a snapshot whatever the retention policy (or, with
//! `--remove`, no longer).

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use crate::journal::{self, Operation, Subject};
use crate::repo::{protect, RepoSpec, Repository, SnapshotId};
use crate::ui::Outcome;

#[derive(Debug, Clone, Args)]
pub struct ProtectArgs {
    #[command(flatten)]
    pub repo: RepoSpec,
    /// The snapshot: a full id, a unique id prefix, or a name (its newest snapshot).
    pub snapshot: String,
    /// Remove the protection instead (a deletion: through `serve`, the admin token).
    #[arg(long)]
    pub remove: bool,
}

#[derive(Debug, Serialize)]
pub struct Protected {
    pub snapshot: SnapshotId,
    pub name: String,
    pub protected: bool,
}

impl Outcome for Protected {
    fn print(&self) {
        crate::outln!(
            "snapshot {} ({}) is {}",
            self.snapshot.short(),
            self.name,
            if self.protected {
                "protected: forget keeps it whatever the policy"
            } else {
                "no longer protected"
            }
        );
    }
}

pub fn run(args: &ProtectArgs) -> Result<Protected> {
    let repo = Repository::open(&args.repo)?;
    let snap = repo.resolve(&args.snapshot)?;
    let operation = match args.remove {
        true => Operation::Unprotect,
        false => Operation::Protect,
    };
    journal::recorded(
        &repo,
        operation,
        || match args.remove {
            true => protect::remove(&repo, &snap.id),
            false => protect::add(&repo, &snap.id),
        },
        |_| {
            Some(Subject {
                name: Some(snap.manifest.name.clone()),
                snapshot: Some(snap.id),
                ..Subject::default()
            })
        },
    )?;
    Ok(Protected {
        snapshot: snap.id,
        name: snap.manifest.name.clone(),
        protected: !args.remove,
    })
}
