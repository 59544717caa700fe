//! The names of a repository's objects, one home for them: every object is an [`Object`]
//! (its kind and id), and every directory a store lists is a [`Dir`]. Both build their
//! names and parse them back, here only: the stores, the server, prune, check and
//! every reader spell no object path of their own. `docs/repository-format.md` lists
//! the layout.

use std::fmt;

use anyhow::Result;
use chrono::{DateTime, Utc};

use super::id::{ChunkId, IndexId, SnapshotId};
use super::keyfile::KeyFileId;
use super::pack::PackId;
use crate::crypt::signing::KeyId;
use crate::hex;

/// One object of a repository.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Object {
    /// `config.json`: what makes a directory (or bucket prefix) a repository.
    Config,
    /// `snapshots/<id>.json`: a manifest, named by the BLAKE3 of its bytes.
    Snapshot(SnapshotId),
    /// `snapshots/<id>.<key id>.sig`: a snapshot's signature by one key.
    Signature(SnapshotId, KeyId),
    /// `chunks/<2 hex>/<id>`: a chunk in a file of its own (format 1).
    Chunk(ChunkId),
    /// `packs/<2 hex>/<id>.pack`: a pack of chunks (format 2).
    Pack(PackId),
    /// `index/<id>.idx`: an index file naming packs and their chunks (format 2).
    Index(IndexId),
    /// `keys/<16 hex>.json`: the master key under one passphrase (encrypted repositories).
    KeyFile(KeyFileId),
    /// `journal/<time name>`: one operation's record.
    Journal(TimeName),
    /// `protected/<snapshot id>`: a marker that forget never goes past.
    Protected(SnapshotId),
    /// `locks/<time name>`: a running capture's or prune's lease.
    Lease(TimeName),
    /// `prune/<time name>`: what a prune is about to delete.
    Intent(TimeName),
    /// `reports/<time>-<result>.json`: a rescue run's report, for people (never read back).
    Report(ReportName),
}

/// A directory of objects, as a store lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Manifests and their signatures.
    Snapshots,
    /// Format 1's chunk files: its entries are the 256 fans.
    Chunks,
    /// One fan of chunk files: those whose id starts with this byte.
    ChunkFan(u8),
    /// Packs: its entries are the 256 fans.
    Packs,
    /// One fan of packs.
    PackFan(u8),
    Index,
    Keys,
    Journal,
    Protected,
    Locks,
    Intents,
    Reports,
}

impl Object {
    /// The object's name in the store: `snapshots/<id>.json`, `packs/ab/ab…cd.pack`.
    pub fn key(&self) -> String {
        match self {
            Object::Config => "config.json".into(),
            Object::Snapshot(id) => format!("snapshots/{id}.json"),
            Object::Signature(id, key) => format!("snapshots/{id}.{key}.sig"),
            Object::Chunk(id) => format!("{}/{id}", Dir::ChunkFan(id.0[0]).path()),
            Object::Pack(id) => format!("{}/{id}.pack", Dir::PackFan(id.0[0]).path()),
            Object::Index(id) => format!("index/{id}.idx"),
            Object::KeyFile(id) => format!("keys/{id}.json"),
            Object::Journal(n) => format!("journal/{n}"),
            Object::Protected(id) => format!("protected/{id}"),
            Object::Lease(n) => format!("locks/{n}"),
            Object::Intent(n) => format!("prune/{n}"),
            Object::Report(n) => format!("reports/{n}"),
        }
    }

    /// The object a store key names, if it names one: exactly the names `key` builds.
    pub fn parse(key: &str) -> Option<Object> {
        if key == "config.json" {
            return Some(Object::Config);
        }
        let (dir, name) = key.rsplit_once('/')?;
        Dir::parse(dir)?.entry(name)
    }

    /// The directory the object is listed in.
    pub fn dir(&self) -> Option<Dir> {
        Some(match self {
            Object::Config => return None,
            Object::Snapshot(_) | Object::Signature(..) => Dir::Snapshots,
            Object::Chunk(id) => Dir::ChunkFan(id.0[0]),
            Object::Pack(id) => Dir::PackFan(id.0[0]),
            Object::Index(_) => Dir::Index,
            Object::KeyFile(_) => Dir::Keys,
            Object::Journal(_) => Dir::Journal,
            Object::Protected(_) => Dir::Protected,
            Object::Lease(_) => Dir::Locks,
            Object::Intent(_) => Dir::Intents,
            Object::Report(_) => Dir::Reports,
        })
    }

    /// Whether the object's name is the hash of its content (it never changes: a cache
    /// may keep it for good).
    pub fn content_hash(&self) -> Option<String> {
        match self {
            Object::Snapshot(id) => Some(id.to_hex()),
            Object::Chunk(id) => Some(id.to_hex()),
            Object::Pack(id) => Some(id.to_hex()),
            Object::Index(id) => Some(id.to_hex()),
            _ => None,
        }
    }
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

impl Dir {
    /// The directory's name in the store: `snapshots`, `chunks/ab`.
    pub fn path(&self) -> String {
        match self {
            Dir::Snapshots => "snapshots".into(),
            Dir::Chunks => "chunks".into(),
            Dir::ChunkFan(b) => format!("chunks/{}", hex::encode(&[*b])),
            Dir::Packs => "packs".into(),
            Dir::PackFan(b) => format!("packs/{}", hex::encode(&[*b])),
            Dir::Index => "index".into(),
            Dir::Keys => "keys".into(),
            Dir::Journal => "journal".into(),
            Dir::Protected => "protected".into(),
            Dir::Locks => "locks".into(),
            Dir::Intents => "prune".into(),
            Dir::Reports => "reports".into(),
        }
    }

    /// The directory a path names (without a trailing slash), if it names one.
    pub fn parse(path: &str) -> Option<Dir> {
        let fan = |s: &str| hex::canonical::<1>(s).map(|b| b[0]);
        Some(match path.split_once('/') {
            None => match path {
                "snapshots" => Dir::Snapshots,
                "chunks" => Dir::Chunks,
                "packs" => Dir::Packs,
                "index" => Dir::Index,
                "keys" => Dir::Keys,
                "journal" => Dir::Journal,
                "protected" => Dir::Protected,
                "locks" => Dir::Locks,
                "prune" => Dir::Intents,
                "reports" => Dir::Reports,
                _ => return None,
            },
            Some(("chunks", f)) => Dir::ChunkFan(fan(f)?),
            Some(("packs", f)) => Dir::PackFan(fan(f)?),
            _ => return None,
        })
    }

    /// The object a name listed in this directory is; None for anything else (a fan of
    /// `Chunks` or `Packs`, a temporary file, a stranger's file).
    pub fn entry(&self, name: &str) -> Option<Object> {
        fn id<T: std::str::FromStr>(s: &str) -> Option<T> {
            s.parse().ok()
        }
        match self {
            Dir::Snapshots => match name.strip_suffix(".sig") {
                Some(sig) => {
                    let (snap, key) = sig.split_once('.')?;
                    if !hex::is_canonical(key, 16) {
                        return None;
                    }
                    Some(Object::Signature(id(snap)?, key.parse().ok()?))
                }
                None => Some(Object::Snapshot(id(name.strip_suffix(".json")?)?)),
            },
            Dir::ChunkFan(b) => {
                let c: ChunkId = id(name)?;
                (c.0[0] == *b).then_some(Object::Chunk(c))
            }
            Dir::PackFan(b) => {
                let p: PackId = id(name.strip_suffix(".pack")?)?;
                (p.0[0] == *b).then_some(Object::Pack(p))
            }
            Dir::Index => Some(Object::Index(id(name.strip_suffix(".idx")?)?)),
            Dir::Keys => Some(Object::KeyFile(id(name.strip_suffix(".json")?)?)),
            Dir::Journal => Some(Object::Journal(TimeName::parse(name)?)),
            Dir::Protected => Some(Object::Protected(id(name)?)),
            Dir::Locks => Some(Object::Lease(TimeName::parse(name)?)),
            Dir::Intents => Some(Object::Intent(TimeName::parse(name)?)),
            Dir::Reports => Some(Object::Report(ReportName::parse(name)?)),
            Dir::Chunks | Dir::Packs => None,
        }
    }

    /// A fan of `Chunks` or `Packs`, by the name it is listed under.
    pub fn fan(&self, name: &str) -> Option<Dir> {
        let b = hex::canonical::<1>(name)?[0];
        match self {
            Dir::Chunks => Some(Dir::ChunkFan(b)),
            Dir::Packs => Some(Dir::PackFan(b)),
            _ => None,
        }
    }
}

impl fmt::Display for Dir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/", self.path())
    }
}

/// The name of an object named by when it was made and a random tag (journal records,
/// leases, prune intents): `20261207T161228.123456Z-1a2b3c4d.json`. Such names sort by
/// time and never collide.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimeName(String);

impl TimeName {
    /// A new name for an object made at `time`.
    pub fn new(time: DateTime<Utc>) -> Result<TimeName> {
        let mut tag = [0u8; 4];
        getrandom::fill(&mut tag).map_err(|e| anyhow::anyhow!("random source: {e}"))?;
        Ok(TimeName(format!(
            "{}-{}.json",
            crate::time::compact(time),
            hex::encode(&tag)
        )))
    }

    /// A name of this shape: `<digits>T<digits>[.digits]Z-<8 hex>.json`.
    pub fn parse(name: &str) -> Option<TimeName> {
        let stem = name.strip_suffix(".json")?;
        let (time, tag) = stem.rsplit_once('-')?;
        let ok = hex::is_canonical(tag, 8)
            && time.len() <= 40
            && time.ends_with('Z')
            && time.contains('T')
            && time
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'T' || b == b'Z' || b == b'.');
        ok.then(|| TimeName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TimeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A rescue report's name: when it was written and how the run ended,
/// `2026-12-07T161228.123456Z-ok.json` (`-failed` when it failed).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReportName(String);

impl ReportName {
    pub fn new(time: DateTime<Utc>, succeeded: bool) -> ReportName {
        ReportName(format!(
            "{}-{}.json",
            crate::time::rfc3339(time).replace(':', ""),
            if succeeded { "ok" } else { "failed" }
        ))
    }

    pub fn parse(name: &str) -> Option<ReportName> {
        let stem = name.strip_suffix(".json")?;
        let time = stem
            .strip_suffix("-ok")
            .or_else(|| stem.strip_suffix("-failed"))?;
        let ok = time.len() <= 40
            && time.ends_with('Z')
            && time
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'T' | b'Z' | b'.'));
        ok.then(|| ReportName(name.to_string()))
    }
}

impl fmt::Display for ReportName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_kind() -> Vec<Object> {
        let snap = SnapshotId::of(b"manifest");
        let key: KeyId = "0123456789abcdef".parse().unwrap();
        let name = TimeName::new(Utc::now()).unwrap();
        vec![
            Object::Config,
            Object::Snapshot(snap),
            Object::Signature(snap, key),
            Object::Chunk(ChunkId::of(b"chunk")),
            Object::Pack(PackId::of(b"pack")),
            Object::Index(IndexId::of(b"index")),
            Object::KeyFile(KeyFileId([0xab; 8])),
            Object::Journal(name.clone()),
            Object::Protected(snap),
            Object::Lease(name.clone()),
            Object::Intent(name),
            Object::Report(ReportName::new(Utc::now(), true)),
        ]
    }

    #[test]
    fn every_name_parses_back_to_its_object_and_lists_in_its_directory() {
        for o in every_kind() {
            let key = o.key();
            assert_eq!(Object::parse(&key), Some(o.clone()), "{key}");
            if let Some(dir) = o.dir() {
                let (path, name) = key.rsplit_once('/').unwrap();
                assert_eq!(path, dir.path());
                assert_eq!(Dir::parse(path), Some(dir));
                assert_eq!(dir.entry(name), Some(o.clone()), "{key}");
            }
        }
        let pack = PackId::of(b"pack");
        assert!(Object::Pack(pack)
            .key()
            .starts_with(&format!("packs/{}/", &pack.to_hex()[..2])));
        assert_eq!(
            Dir::Packs.fan(&pack.to_hex()[..2]),
            Object::Pack(pack).dir()
        );
    }

    #[test]
    fn names_that_no_object_has_are_refused() {
        let id = ChunkId::of(b"x").to_hex();
        let snap = SnapshotId::of(b"m").to_hex();
        for bad in [
            "".to_string(),
            "config".into(),
            "../config.json".into(),
            "snapshots/abc.json".into(),
            format!("snapshots/{}.json", snap.to_uppercase()),
            format!("snapshots/{snap}.0123.sig"),
            format!("chunks/00/{id}"),
            format!("chunks//{id}"),
            format!("chunks/{}/{id}/x", &id[..2]),
            format!("packs/{}/{id}", &id[..2]),
            format!("index/{}.idx", &id[..60]),
            "keys/0123.json".into(),
            "journal/x.json".into(),
            "locks/2026Z-zzzzzzzz.json".into(),
            "tmp/w-host-1-0.tmp".into(),
            "reports/x".into(),
        ] {
            assert_eq!(Object::parse(&bad), None, "{bad}");
        }
    }

    #[test]
    fn time_names_sort_by_time() {
        let a = TimeName::new(crate::time::parse_rfc3339("2026-12-02T16:31:40.123456Z").unwrap())
            .unwrap();
        let b = TimeName::new(crate::time::parse_rfc3339("2026-12-02T16:31:41.000001Z").unwrap())
            .unwrap();
        assert!(a < b, "{a} {b}");
        assert!(a.as_str().starts_with("20261202T163140.123456Z-"), "{a}");
        assert_eq!(TimeName::parse(a.as_str()), Some(a));
        for bad in [
            "x.json",
            "2026Z-zzzzzzzz.json",
            "../a-12345678.json",
            "20261202T1Z-1234567.json",
        ] {
            assert_eq!(TimeName::parse(bad), None, "{bad}");
        }
    }
}
