//! `GET /metrics`: the repository in the Prometheus text format (version 0.0.4): per
//! snapshot name the newest capture's time and sizes, the last drill's time and result;
//! the last check's; and the repository's size, snapshot, chunk and pack counts. An
//! encrypted repository's server holds no key: it reports counts only.

use std::collections::BTreeMap;
use std::fmt::Write;

use anyhow::Result;

use crate::journal::protection::{Drilled, Newest, ProtectionView};
use crate::journal::Status;
use crate::repo::Repository;

/// A label value, escaped as the format wants (backslash, quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn seconds(t: &str) -> Option<f64> {
    crate::time::parse_rfc3339(t)
        .ok()
        .map(|t| t.timestamp_micros() as f64 / 1e6)
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn head(&mut self, name: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} gauge");
    }
    fn value(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        let l: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
            .collect();
        let l = if l.is_empty() {
            String::new()
        } else {
            format!("{{{}}}", l.join(","))
        };
        let _ = writeln!(self.out, "{name}{l} {v}");
    }
}

pub fn render(repo: &Repository) -> Result<String> {
    let mut out = String::new();
    let mut f = Family { out: &mut out };
    f.head(
        "lifeboat_encrypted",
        "1 when the repository is encrypted (then only counts are known to the server).",
    );
    f.value(
        "lifeboat_encrypted",
        &[],
        if repo.is_encrypted() { 1.0 } else { 0.0 },
    );
    let ids = repo.snapshot_ids()?;
    f.head("lifeboat_snapshots", "Snapshots in the repository.");
    f.value("lifeboat_snapshots", &[], ids.len() as f64);
    if repo.is_encrypted() {
        return Ok(out);
    }
    let files = repo.index_files()?;
    let mut packs = BTreeMap::new();
    let mut chunks = std::collections::HashSet::new();
    for (_, ps) in &files {
        for p in ps {
            packs.insert(p.id, p.len);
            chunks.extend(p.entries.iter().map(|e| e.id));
        }
    }
    f.head(
        "lifeboat_repository_size_bytes",
        "Bytes of the repository's packs.",
    );
    f.value(
        "lifeboat_repository_size_bytes",
        &[],
        packs.values().sum::<u64>() as f64,
    );
    f.head("lifeboat_packs", "Pack files the index files name.");
    f.value("lifeboat_packs", &[], packs.len() as f64);
    f.head("lifeboat_chunks", "Chunks the index files name.");
    f.value("lifeboat_chunks", &[], chunks.len() as f64);
    let view = ProtectionView::new(&crate::journal::read_all(repo)?, &repo.snapshots()?);
    newest_captures(&mut f, &view);
    last_drills(&mut f, &view);
    if let Some(c) = &view.last_check {
        f.head(
            "lifeboat_last_check_timestamp_seconds",
            "Time of the repository's last check.",
        );
        f.value(
            "lifeboat_last_check_timestamp_seconds",
            &[],
            seconds(&c.time).unwrap_or(0.0),
        );
        f.head(
            "lifeboat_last_check_success",
            "1 when the last check found no problem.",
        );
        f.value(
            "lifeboat_last_check_success",
            &[],
            if c.status == Status::Ok { 1.0 } else { 0.0 },
        );
    }
    Ok(out)
}

/// Per name, its newest snapshot's time and sizes.
fn newest_captures(f: &mut Family, view: &ProtectionView) {
    let newest: Vec<(&String, &Newest)> = view
        .names
        .iter()
        .filter_map(|(name, n)| Some((name, n.newest.as_ref()?)))
        .collect();
    f.head(
        "lifeboat_last_capture_timestamp_seconds",
        "Time of the newest snapshot of each name.",
    );
    for (name, n) in &newest {
        f.value(
            "lifeboat_last_capture_timestamp_seconds",
            &[("name", name)],
            seconds(&n.time).unwrap_or(0.0),
        );
    }
    f.head(
        "lifeboat_last_capture_disk_bytes",
        "Size of the newest snapshot's disk, per name.",
    );
    for (name, n) in &newest {
        f.value(
            "lifeboat_last_capture_disk_bytes",
            &[("name", name)],
            n.size as f64,
        );
    }
    f.head(
        "lifeboat_last_capture_data_bytes",
        "Data bytes (not holes, not free space) of the newest snapshot, per name.",
    );
    for (name, n) in &newest {
        f.value(
            "lifeboat_last_capture_data_bytes",
            &[("name", name)],
            n.data_bytes as f64,
        );
    }
}

/// Per name, its last drill's time and result.
fn last_drills(f: &mut Family, view: &ProtectionView) {
    let drills: Vec<(&String, &Drilled)> = view
        .names
        .iter()
        .filter_map(|(name, n)| Some((name, n.last_drill.as_ref()?)))
        .collect();
    f.head(
        "lifeboat_last_drill_timestamp_seconds",
        "Time of the last drill of each name.",
    );
    for (name, d) in &drills {
        f.value(
            "lifeboat_last_drill_timestamp_seconds",
            &[("name", name)],
            seconds(&d.time).unwrap_or(0.0),
        );
    }
    f.head(
        "lifeboat_last_drill_success",
        "1 when the last drill of the name passed (the restored disk booted).",
    );
    for (name, d) in &drills {
        f.value(
            "lifeboat_last_drill_success",
            &[("name", name)],
            if d.passed { 1.0 } else { 0.0 },
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn label_values_are_escaped() {
        assert_eq!(super::label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
