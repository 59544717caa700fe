//! The journal: one small object per operation under `journal/` (capture, restore, check,
//! forget, protect, drill), appended by whoever ran it: who (host, user), what, when,
//! how long, sizes, ids, the result and the error. Objects are named by their start time
//! and a random tag, so they list in time order and never collide; in an encrypted
//! repository they are sealed like manifests. A record that cannot be written (a
//! read-only server, a full disk) is a warning, never the operation's failure.

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
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Capture,
    Restore,
    Check,
    Forget,
    Prune,
    Drill,
    Protect,
    Unprotect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Failed,
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

/// An operation being timed, to be recorded when it ends.
pub struct Entry {
    operation: Operation,
    time: String,
    start: Instant,
}

impl Entry {
    pub fn begin(operation: Operation) -> Entry {
        Entry {
            operation,
            time: crate::time::now_rfc3339(),
            start: Instant::now(),
        }
    }

    /// The record of the operation's end: ok, or failed with its error.
    pub fn record<T>(
        &self,
        result: &Result<T>,
        name: Option<&str>,
        snapshot: Option<SnapshotId>,
        details: serde_json::Value,
    ) -> Record {
        Record {
            format: FORMAT.into(),
            operation: self.operation,
            time: self.time.clone(),
            duration_s: self.start.elapsed().as_secs_f64(),
            host: crate::who::hostname(),
            user: crate::who::username(),
            name: name.map(str::to_string),
            snapshot,
            status: if result.is_ok() {
                Status::Ok
            } else {
                Status::Failed
            },
            error: result.as_ref().err().map(|e| format!("{e:#}")),
            details,
        }
    }
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

/// A snapshot's last drill.
#[derive(Debug, Clone, Serialize)]
pub struct Drilled {
    pub time: String,
    pub passed: bool,
}

/// Each drilled snapshot's last drill, from the records (oldest first).
pub fn last_drills(records: &[Record]) -> std::collections::HashMap<SnapshotId, Drilled> {
    let mut out = std::collections::HashMap::new();
    for r in records.iter().filter(|r| r.operation == Operation::Drill) {
        if let Some(id) = r.snapshot {
            out.insert(
                id,
                Drilled {
                    time: r.time.clone(),
                    passed: r.status == Status::Ok,
                },
            );
        }
    }
    out
}
