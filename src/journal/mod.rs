//! The journal: one small object per operation under `journal/` (capture, restore, check,
//! forget, protect, drill), appended by whoever ran it: who (host, user), what, when,
//! how long, sizes, ids, the result and the error. Objects are named by their start time
//! and a random tag, so they list in time order and never collide; in an encrypted
//! repository they are sealed like manifests. A record that cannot be written (a
//! read-only server, a full disk) is a warning, never the operation's failure.
//! `recorded` runs an operation and records it; `protection` is what the records and
//! the snapshots say of each machine.

pub mod protection;

use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::crypt::{Kind, Protection};
use crate::repo::admit::{Admission, Admitted, Refusal};
use crate::repo::id::SnapshotId;
use crate::repo::object::TimeName;
use crate::repo::{Dir, Object, Repository};

/// The most a record may hold.
pub const MAX_RECORD: u64 = 64 << 10;
/// A reader reads at most this many records (the newest).
const MAX_RECORDS: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Operation {
    Capture,
    Restore,
    Check,
    Forget,
    Prune,
    Drill,
    Protect,
    Unprotect,
    /// `status --no-drill NAME`: the name is not drilled (a machine with no disk to boot,
    /// a data volume), so `status` does not ask for its drills.
    DrillOff,
    /// `status --drill NAME`: its drills are asked for again.
    DrillOn,
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Operation::Capture => "capture",
            Operation::Restore => "restore",
            Operation::Check => "check",
            Operation::Forget => "forget",
            Operation::Prune => "prune",
            Operation::Drill => "drill",
            Operation::Protect => "protect",
            Operation::Unprotect => "unprotect",
            Operation::DrillOff => "drill-off",
            Operation::DrillOn => "drill-on",
        };
        f.write_str(name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Failed,
    /// Stopped by SIGINT or SIGTERM.
    Interrupted,
}

/// One record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub format: String,
    pub operation: Operation,
    /// RFC 3339, UTC: when it started.
    pub time: String,
    pub duration_s: f64,
    pub host: String,
    pub user: String,
    /// The snapshot name it concerns, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The snapshot it concerns, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotId>,
    /// `ok` or `failed`.
    #[serde(rename = "result")]
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the operation reports of itself (sizes, counts, ids, hashes).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
}

const FORMAT: &str = "lifeboat-journal-1";

/// What a record says of its operation besides when, who, how long and how it went.
#[derive(Debug, Default)]
pub struct Subject {
    /// The snapshot name it concerns.
    pub name: Option<String>,
    /// The snapshot it concerns.
    pub snapshot: Option<SnapshotId>,
    /// What it reports of itself.
    pub details: serde_json::Value,
    /// Why it failed though it ran to its end (a check that found problems, a drill
    /// whose disk did not boot): recorded as a failure with this error.
    pub failure: Option<String>,
}

/// The subject of an operation on the snapshot the user named (`web01`, an id or its
/// prefix), resolved again for the record of one that failed: its name and id when it
/// resolves, nothing otherwise.
pub fn named(repo: &Repository, wanted: &str) -> Subject {
    match repo.resolve(wanted) {
        Ok(s) => Subject {
            name: Some(s.manifest.name.clone()),
            snapshot: Some(s.id),
            ..Subject::default()
        },
        Err(_) => Subject::default(),
    }
}

/// Run an operation on `repo` and record it in the journal when it ends: ok, or failed
/// with its error. `describe` says what the record tells of it, its result in hand; None
/// records nothing (a dry run). The journal never fails the operation (see `note`).
pub fn recorded<T>(
    repo: &Repository,
    operation: Operation,
    run: impl FnOnce() -> Result<T>,
    describe: impl FnOnce(&Result<T>) -> Option<Subject>,
) -> Result<T> {
    let time = crate::time::now_rfc3339();
    let start = Instant::now();
    let result = run();
    if let Some(subject) = describe(&result) {
        let error = match &result {
            Ok(_) => subject.failure,
            Err(e) => Some(format!("{e:#}")),
        };
        let interrupted = result
            .as_ref()
            .err()
            .is_some_and(|e| crate::io::interrupt::of(e).is_some());
        let record = Record {
            format: FORMAT.into(),
            operation,
            time,
            duration_s: start.elapsed().as_secs_f64(),
            host: crate::who::hostname(),
            user: crate::who::username(),
            name: subject.name,
            snapshot: subject.snapshot,
            status: match error {
                None => Status::Ok,
                Some(_) if interrupted => Status::Interrupted,
                Some(_) => Status::Failed,
            },
            error,
            details: subject.details,
        };
        note(repo, &record);
    }
    result
}

/// Append a record to the repository's journal (sealed when it is encrypted).
pub fn append(repo: &Repository, record: &Record) -> Result<Object> {
    let mut data = serde_json::to_vec(record)?;
    data.push(b'\n');
    let data = match repo.protection() {
        Protection::Plain => data,
        Protection::Unlocked(c) => c.seal(Kind::Journal, &data),
        Protection::Locked => bail!("the repository is encrypted and not unlocked"),
    };
    let key = Object::Journal(TimeName::new(crate::time::parse_rfc3339(&record.time)?)?);
    repo.store()
        .put(&key, &data)
        .with_context(|| format!("write journal record {}", repo.store().location(&key)))?;
    repo.store().flush()?;
    Ok(key)
}

/// Fail unless this client may write to the repository (for an operation whose only
/// effect is its record).
pub fn require_writable(repo: &Repository) -> Result<()> {
    if !repo.store().writable() {
        bail!(
            "{} is read-only for this client (a server needs --token-file with a token that may append)",
            repo.display
        );
    }
    Ok(())
}

/// Append, and only warn when it cannot be written: the journal never fails an
/// operation.
pub fn note(repo: &Repository, record: &Record) {
    if !repo.store().writable() {
        log::info!("not recorded in the journal: this client may not write to the repository");
        return;
    }
    if let Err(e) = append(repo, record) {
        log::warn!("the journal was not written: {e:#}");
    }
}

/// Parse one record's stored bytes (opened first when sealed).
pub fn parse(protection: &Protection, data: &[u8]) -> Result<Record> {
    let opened;
    let data = match protection {
        Protection::Plain => data,
        Protection::Unlocked(c) => {
            opened = c.open(Kind::Journal, data)?;
            &opened[..]
        }
        Protection::Locked => bail!("the journal is encrypted and this reader has no key"),
    };
    let r: Record = serde_json::from_slice(data).context("not a journal record")?;
    if r.format != FORMAT {
        bail!("not a journal record (format {:?})", r.format);
    }
    Ok(r)
}

/// A record a writer sends (`lifeboat serve`): a record, or in an encrypted repository
/// (whose server holds no key) shaped as a sealed one.
pub fn admit(admission: &Admission, name: &TimeName, body: &[u8]) -> Result<Admitted, Refusal> {
    let repo = admission.repo();
    let checked = if repo.is_encrypted() {
        crate::crypt::check_envelope(Kind::Journal, body).map_err(anyhow::Error::new)
    } else {
        parse(repo.protection(), body).map(|_| ())
    };
    if let Err(e) = checked {
        return Err(Refusal::Invalid(format!("not a journal record: {e:#}")));
    }
    admission.small(&Object::Journal(name.clone()), body)
}

/// Every record, oldest first; one that cannot be read is skipped with a warning.
pub fn read_all(repo: &Repository) -> Result<Vec<Record>> {
    let mut names: Vec<TimeName> = repo
        .store()
        .objects(&Dir::Journal)
        .context("list the journal")?
        .into_iter()
        .filter_map(|o| match o {
            Object::Journal(n) => Some(n),
            _ => None,
        })
        .collect();
    names.sort();
    if names.len() > MAX_RECORDS {
        names.drain(..names.len() - MAX_RECORDS);
    }
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        let key = Object::Journal(n);
        let read = repo
            .store()
            .get_at_most(&key, MAX_RECORD)
            .map_err(anyhow::Error::new)
            .and_then(|d| parse(repo.protection(), &d));
        match read {
            Ok(r) => out.push(r),
            Err(e) => log::warn!("{}: {e:#}", repo.store().location(&key)),
        }
    }
    out.sort_by(|a, b| a.time.cmp(&b.time));
    Ok(out)
}
