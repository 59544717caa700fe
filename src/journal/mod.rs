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
use crate::hex::encode as hex;
use crate::repo::id::SnapshotId;
use crate::repo::Repository;

pub const DIR: &str = "journal";
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

/// The object name of a record: its start time (compact, sortable) and a random tag.
fn object_name(time: &str) -> Result<String> {
    let compact: String = time
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
        .collect();
    let mut tag = [0u8; 4];
    getrandom::fill(&mut tag).map_err(|e| anyhow::anyhow!("random source: {e}"))?;
    Ok(format!("{compact}-{}.json", hex(&tag)))
}

/// Whether `name` is a journal object's name: `<digits>T<digits>[.digits]Z-<8 hex>.json`.
pub fn is_object_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".json") else {
        return false;
    };
    let Some((time, tag)) = stem.rsplit_once('-') else {
        return false;
    };
    tag.len() == 8
        && tag.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && time.len() <= 40
        && time.ends_with('Z')
        && time.contains('T')
        && time
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'T' || b == b'Z' || b == b'.')
}

/// Append a record to the repository's journal (sealed when it is encrypted).
pub fn append(repo: &Repository, record: &Record) -> Result<String> {
    let mut data = serde_json::to_vec(record)?;
    data.push(b'\n');
    let data = match repo.protection() {
        Protection::Plain => data,
        Protection::Unlocked(c) => c.seal(Kind::Journal, &data),
        Protection::Locked => bail!("the repository is encrypted and not unlocked"),
    };
    let key = format!("{DIR}/{}", object_name(&record.time)?);
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

/// Every record, oldest first; one that cannot be read is skipped with a warning.
pub fn read_all(repo: &Repository) -> Result<Vec<Record>> {
    let mut names: Vec<String> = repo
        .store()
        .list(DIR)
        .context("list the journal")?
        .into_iter()
        .filter(|n| is_object_name(n))
        .collect();
    names.sort();
    if names.len() > MAX_RECORDS {
        names.drain(..names.len() - MAX_RECORDS);
    }
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        let key = format!("{DIR}/{n}");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_sort_by_time_and_are_recognised() {
        let a = object_name("2026-12-02T16:31:40.123456Z").unwrap();
        let b = object_name("2026-12-02T16:31:41.000001Z").unwrap();
        assert!(a < b, "{a} {b}");
        assert!(a.starts_with("20261202T163140.123456Z-"), "{a}");
        assert!(is_object_name(&a));
        for bad in [
            "x.json",
            "2026Z-zzzzzzzz.json",
            "../a-12345678.json",
            "20261202T1Z-1234567.json",
        ] {
            assert!(!is_object_name(bad), "{bad}");
        }
    }
}
