//! An HTTP/1.1 server for a repository directory. Anyone may read; writes (a capture
//! pushing chunks and manifests) need the bearer token given at start. The server checks
//! what it is sent: a chunk must decompress to the bytes its name promises, a manifest
//! must hash to its name, parse, hold together, and name only chunks already stored.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use nix::sys::signal::{SigSet, Signal};

use super::pool::{self, Active, HEAD_DEADLINE};
use super::ServeArgs;
use crate::location::RepoLocation;
use crate::repo::pack::{PackId, MAX_PACK_BYTES};
use crate::repo::{chunk_key, snapshot_key, ChunkId, Manifest, RepoSpec, Repository, SnapshotId};

/// A request, its body read.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) head: Head,
    body: Body,
}

/// A request's body: in memory (a chunk, at most the repository's chunk limit), or
/// spooled to a temporary file in the repository (a manifest, which may be large).
#[derive(Debug)]
pub(crate) enum Body {
    Bytes(Vec<u8>),
    File(Spooled),
}

/// A request body written to a temporary file under the repository's `tmp/`, synced,
/// with its BLAKE3 hash; removed when dropped unless it was renamed into place.
#[derive(Debug)]
pub(crate) struct Spooled {
    path: PathBuf,
    hash: blake3::Hash,
}

impl Drop for Spooled {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Write `len` bytes of `r` to a new temporary file in `dir`, hashing them on the way.
fn spool(r: &mut impl Read, len: u64, dir: &Path) -> Result<Spooled> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let path = dir.join(crate::repo::atomic::temp_name("put"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("create {}", path.display()))?;
    let mut spooled = Spooled {
        path,
        hash: blake3::Hash::from_bytes([0; 32]),
    };
    let mut body = crate::io::HashingReader::new(r.take(len));
    let n = std::io::copy(&mut body, &mut file)
        .and_then(|n| file.sync_all().map(|_| n))
        .with_context(|| format!("write {}", spooled.path.display()))?;
    anyhow::ensure!(n == len, "the body ended early");
    spooled.hash = body.finish()?.0;
    Ok(spooled)
}

impl std::ops::Deref for Request {
    type Target = Head;
    fn deref(&self) -> &Head {
        &self.head
    }
}

struct Handler {
    repo: Repository,
    root: PathBuf,
    tokens: Tokens,
}

/// The bearer tokens a server takes: the append token adds objects and nothing else
/// (capturing machines, a PXE command line); the admin token may also add key files and
/// delete (key removal; the coming prune). An object is never replaced, whoever asks.
#[derive(Default)]
pub(crate) struct Tokens {
    pub append: Option<String>,
    pub admin: Option<String>,
}

/// What a request's token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    Anyone,
    Append,
    Admin,
}

enum Reply {
    /// A file, whole or (with the request's Range header) in part; with an ETag when
    /// its name is its content's hash (it never changes: caches may keep it for good).
    File(PathBuf, Option<String>, Option<String>),
    Bytes(u16, Vec<u8>, &'static str),
    Text(u16, String),
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// What a request path names, if it names anything a repository has.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Target {
    Config,
    SnapshotList,
    Snapshot(SnapshotId),
    /// A snapshot's signature by one key.
    Signature(SnapshotId, crate::crypt::signing::KeyId),
    ChunkList(Option<String>),
    Chunk(ChunkId),
    IndexList,
    /// An index file, by its 64 hex digits.
    Index(String),
    Pack(PackId),
    KeyList,
    /// A key file, by its 16 hex digits.
    Key(String),
    JournalList,
    /// A journal record, by its object name.
    Journal(String),
    ProtectedList,
    /// A snapshot's protection marker.
    Protected(SnapshotId),
    LeaseList,
    /// A running capture's or prune's lease.
    Lease(String),
    IntentList,
    /// A prune's intent.
    Intent(String),
    /// The repository's state in the Prometheus text format.
    Metrics,
}

pub(crate) fn parse_path(path: &str) -> Option<Target> {
    let path = path.split('?').next().unwrap_or("");
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["config.json"] => Some(Target::Config),
        ["metrics"] => Some(Target::Metrics),
        ["snapshots", ""] => Some(Target::SnapshotList),
        ["snapshots", name] if name.ends_with(".sig") => {
            let (id, key) = name.strip_suffix(".sig")?.split_once('.')?;
            if !is_hex(id, 64) || !is_hex(key, 16) {
                return None;
            }
            Some(Target::Signature(id.parse().ok()?, key.parse().ok()?))
        }
        ["snapshots", name] => name
            .strip_suffix(".json")
            .and_then(|id| id.parse().ok())
            .map(Target::Snapshot),
        ["chunks", ""] => Some(Target::ChunkList(None)),
        ["chunks", fan, ""] if is_hex(fan, 2) => Some(Target::ChunkList(Some(fan.to_string()))),
        ["chunks", fan, id] if is_hex(fan, 2) && is_hex(id, 64) && id.starts_with(fan) => {
            id.parse().ok().map(Target::Chunk)
        }
        ["index", ""] => Some(Target::IndexList),
        ["keys", ""] => Some(Target::KeyList),
        ["journal", ""] => Some(Target::JournalList),
        ["journal", name] if crate::journal::is_object_name(name) => {
            Some(Target::Journal(name.to_string()))
        }
        ["protected", ""] => Some(Target::ProtectedList),
        ["locks", ""] => Some(Target::LeaseList),
        ["locks", name] if crate::journal::is_object_name(name) => {
            Some(Target::Lease(name.to_string()))
        }
        ["prune", ""] => Some(Target::IntentList),
        ["prune", name] if crate::journal::is_object_name(name) => {
            Some(Target::Intent(name.to_string()))
        }
        ["protected", id] if is_hex(id, 64) => id.parse().ok().map(Target::Protected),
        ["keys", name] => name
            .strip_suffix(".json")
            .filter(|h| is_hex(h, 16))
            .map(|h| Target::Key(h.to_string())),
        ["index", name] => name
            .strip_suffix(".idx")
            .filter(|h| is_hex(h, 64))
            .map(|h| Target::Index(h.to_string())),
        ["packs", fan, name] if is_hex(fan, 2) => name
            .strip_suffix(".pack")
            .filter(|h| is_hex(h, 64) && h.starts_with(fan))
            .and_then(|h| h.parse::<ChunkId>().ok())
            .map(|c| Target::Pack(PackId(c.0))),
        _ => None,
    }
}

/// Constant-time comparison, so that a wrong token's timing says nothing about the right one.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Handler {
    /// The listing of `dir`, names kept by `keep`.
    fn list_dir(&self, dir: &str, keep: impl Fn(&str) -> bool) -> Reply {
        match self.repo.store().list(dir) {
            Ok(n) => self.listing(n.into_iter().filter(|n| keep(n)).collect()),
            Err(e) => Reply::Text(500, format!("{e:#}\n")),
        }
    }

    fn listing(&self, names: Vec<String>) -> Reply {
        let mut page = String::from("<!DOCTYPE html>\n<html><body><ul>\n");
        for n in names {
            page.push_str(&format!("<li><a href=\"{n}\">{n}</a></li>\n"));
        }
        page.push_str("</ul></body></html>\n");
        Reply::Bytes(200, page.into_bytes(), "text/html; charset=utf-8")
    }

    /// Whether a request's body may be read, and how long it is; otherwise the reply that
    /// refuses it, sent without reading the body: writing needs the token, and a body
    /// may be no longer than what it can be.
    fn admit_body(&self, head: &Head) -> Result<u64, Reply> {
        let len = head
            .content_length()
            .map_err(|e| Reply::Text(400, format!("{e:#}\n")))?;
        if len == 0 {
            return Ok(0);
        }
        let limit = match (head.method.as_str(), parse_path(&head.path)) {
            ("PUT", Some(Target::Chunk(_))) => self.repo.chunk_limit(),
            ("PUT", Some(Target::Snapshot(_))) => MAX_MANIFEST_PUT,
            ("PUT", Some(Target::Pack(_))) => MAX_PACK_BYTES,
            ("PUT", Some(Target::Index(_))) => crate::repo::index::MAX_INDEX_BYTES,
            ("PUT", Some(Target::Signature(..))) => crate::trust::signature::MAX_SIGNATURE_BYTES,
            ("PUT", Some(Target::Key(_))) => crate::repo::keyfile::MAX_KEY_FILE,
            ("PUT", Some(Target::Journal(_))) => crate::journal::MAX_RECORD,
            ("PUT", Some(Target::Protected(_))) => crate::repo::protect::MAX_MARKER,
            ("PUT", Some(Target::Lease(_))) => 4096,
            ("PUT", Some(Target::Intent(_))) => 64 << 20,
            ("PUT", _) => {
                return Err(Reply::Text(
                    405,
                    "only chunks, packs, index files, snapshots, signatures and key files are written\n"
                        .into(),
                ))
            }
            _ => return Err(Reply::Text(400, "only a PUT has a body\n".into())),
        };
        let needs = match parse_path(&head.path) {
            Some(Target::Key(_) | Target::Intent(_)) => Role::Admin,
            _ => Role::Append,
        };
        self.allow(head, needs)?;
        if len > limit {
            return Err(Reply::Text(
                413,
                format!("a body of {len} bytes is over the {limit} such a file may hold\n"),
            ));
        }
        Ok(len)
    }

    /// What the request's bearer token allows.
    fn role(&self, req: &Head) -> Role {
        let Some(given) = req
            .header("Authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|g| g.trim().as_bytes())
        else {
            return Role::Anyone;
        };
        let is = |t: &Option<String>| t.as_ref().is_some_and(|t| same(given, t.as_bytes()));
        if is(&self.tokens.admin) {
            Role::Admin
        } else if is(&self.tokens.append) {
            Role::Append
        } else {
            Role::Anyone
        }
    }

    /// Whether the request may do what needs `needs`; the refusal otherwise.
    fn allow(&self, req: &Head, needs: Role) -> Result<(), Reply> {
        let has = self.role(req);
        if has >= needs {
            return Ok(());
        }
        Err(match (needs, has) {
            (Role::Admin, Role::Append) => Reply::Text(
                403,
                "the append token only adds objects: this needs the admin token\n".into(),
            ),
            (Role::Admin, _) => Reply::Text(401, "this needs the server's admin token\n".into()),
            _ => Reply::Text(401, "writing needs the server's bearer token\n".into()),
        })
    }

    fn route(&self, req: &Request) -> Reply {
        let Some(target) = parse_path(&req.path) else {
            return Reply::Text(404, "not found\n".into());
        };
        let read = req.method == "GET" || req.method == "HEAD";
        let range = req.header("Range").map(str::to_string);
        let file = |key: String, etag: Option<String>| {
            Reply::File(self.root.join(key), range.clone(), etag)
        };
        match (req.method.as_str(), target) {
            (_, Target::Config) if read => file("config.json".into(), None),
            (_, Target::Snapshot(id)) if read => file(snapshot_key(&id), Some(id.to_hex())),
            (_, Target::Chunk(id)) if read => file(chunk_key(&id), Some(id.to_hex())),
            (_, Target::Pack(id)) if read => file(id.key(), Some(id.to_hex())),
            (_, Target::Index(hex)) if read => file(format!("index/{hex}.idx"), Some(hex)),
            (_, Target::Signature(id, key)) if read => {
                file(crate::trust::signature::signature_key(&id, &key), None)
            }
            (_, Target::Key(name)) if read => file(crate::repo::keyring::key_path(&name), None),
            (_, Target::Journal(name)) if read => file(format!("journal/{name}"), None),
            (_, Target::Protected(id)) if read => file(crate::repo::protect::key(&id), None),
            ("GET", Target::JournalList) => {
                self.list_dir("journal", crate::journal::is_object_name)
            }
            (_, Target::Lease(name)) if read => file(format!("locks/{name}"), None),
            (_, Target::Intent(name)) if read => file(format!("prune/{name}"), None),
            ("GET", Target::Metrics) => match super::metrics::render(&self.repo) {
                Ok(text) => Reply::Bytes(
                    200,
                    text.into_bytes(),
                    "text/plain; version=0.0.4; charset=utf-8",
                ),
                Err(e) => Reply::Text(500, format!("{e:#}\n")),
            },
            ("GET", Target::LeaseList) => self.list_dir("locks", crate::journal::is_object_name),
            ("GET", Target::IntentList) => self.list_dir("prune", crate::journal::is_object_name),
            // A capture removes its own lease: the append token may delete a lease (and
            // nothing else).
            ("DELETE", Target::Lease(name)) => {
                if let Err(r) = self.allow(req, Role::Append) {
                    return r;
                }
                self.delete(Target::Lease(name))
            }
            ("PUT", t @ (Target::Lease(_) | Target::Intent(_))) => {
                let needs = if matches!(t, Target::Intent(_)) {
                    Role::Admin
                } else {
                    Role::Append
                };
                if let Err(r) = self.allow(req, needs) {
                    return r;
                }
                let key = match &t {
                    Target::Lease(n) => format!("locks/{n}"),
                    Target::Intent(n) => format!("prune/{n}"),
                    _ => unreachable!("matched above"),
                };
                let body: &[u8] = match &req.body {
                    Body::Bytes(b) => b,
                    Body::File(_) => return Reply::Text(500, "not read into memory\n".into()),
                };
                if serde_json::from_slice::<serde_json::Value>(body).is_err() {
                    return Reply::Text(422, "not JSON\n".into());
                }
                match self
                    .repo
                    .store()
                    .put(&key, body)
                    .and_then(|_| self.repo.store().flush())
                {
                    Ok(()) => Reply::Text(201, "stored\n".into()),
                    Err(e) => Reply::Text(500, format!("{e:#}\n")),
                }
            }
            ("GET", Target::ProtectedList) => self.list_dir("protected", |n| is_hex(n, 64)),
            ("PUT", t @ (Target::Journal(_) | Target::Protected(_))) => {
                if let Err(r) = self.allow(req, Role::Append) {
                    return r;
                }
                match &req.body {
                    Body::Bytes(b) => self.put_small(t, b),
                    Body::File(_) => Reply::Text(500, "a record was not read into memory\n".into()),
                }
            }
            ("GET", Target::KeyList) => self.list_dir("keys", |n| n.ends_with(".json")),
            ("DELETE", t) => {
                if let Err(r) = self.allow(req, Role::Admin) {
                    return r;
                }
                self.delete(t)
            }
            ("PUT", Target::Key(name)) => {
                if let Err(r) = self.allow(req, Role::Admin) {
                    return r;
                }
                match &req.body {
                    Body::Bytes(b) => self.put_key(&name, b),
                    Body::File(_) => {
                        Reply::Text(500, "a key file was not read into memory\n".into())
                    }
                }
            }
            ("PUT", Target::Signature(id, key)) => {
                if let Err(r) = self.allow(req, Role::Append) {
                    return r;
                }
                match &req.body {
                    Body::Bytes(b) => self.put_signature(&id, &key, b),
                    Body::File(_) => {
                        Reply::Text(500, "a signature was not read into memory\n".into())
                    }
                }
            }
            ("GET", Target::IndexList) => self.list_dir("index", |n| n.ends_with(".idx")),
            ("GET", Target::SnapshotList) => {
                self.list_dir("snapshots", |n| n.ends_with(".json") || n.ends_with(".sig"))
            }
            ("GET", Target::ChunkList(fan)) => {
                let dir = fan
                    .map(|f| format!("chunks/{f}"))
                    .unwrap_or_else(|| "chunks".into());
                match self.repo.store().list(&dir) {
                    Ok(n) => self.listing(
                        n.into_iter()
                            .map(|n| if dir == "chunks" { format!("{n}/") } else { n })
                            .collect(),
                    ),
                    Err(e) => Reply::Text(500, format!("{e:#}\n")),
                }
            }
            (
                "PUT",
                t @ (Target::Chunk(_) | Target::Snapshot(_) | Target::Pack(_) | Target::Index(_)),
            ) => {
                if let Err(r) = self.allow(req, Role::Append) {
                    return r;
                }
                let local;
                let spooled = match (&t, &req.body) {
                    (Target::Chunk(id), Body::Bytes(b)) => return self.put_chunk(id, b),
                    (Target::Chunk(_), Body::File(_)) => {
                        return Reply::Text(500, "a chunk's body was not read into memory\n".into())
                    }
                    (_, Body::File(f)) => f,
                    (_, Body::Bytes(b)) => {
                        match spool(&mut &b[..], b.len() as u64, &self.root.join("tmp")) {
                            Ok(f) => {
                                local = f;
                                &local
                            }
                            Err(e) => return Reply::Text(500, format!("{e:#}\n")),
                        }
                    }
                };
                match t {
                    Target::Snapshot(id) => self.put_manifest(&id, spooled),
                    Target::Pack(id) => self.put_pack(&id, spooled),
                    Target::Index(hex) => self.put_index(&hex, spooled),
                    _ => Reply::Text(405, "not written here\n".into()),
                }
            }
            ("PUT", _) => Reply::Text(
                405,
                "only chunks, packs, index files and snapshots are written\n".into(),
            ),
            _ => Reply::Text(405, "method not allowed\n".into()),
        }
    }

    /// Store a snapshot's signature: it must be a valid signature of that snapshot by
    /// the key its name gives, and the manifest must be stored already.
    fn put_signature(
        &self,
        id: &SnapshotId,
        key: &crate::crypt::signing::KeyId,
        body: &[u8],
    ) -> Reply {
        use crate::trust::signature::{signature_key, SignatureFile};
        let claimed = match serde_json::from_slice::<SignatureFile>(body) {
            Ok(f) => f.key,
            Err(e) => return Reply::Text(422, format!("the signature does not parse: {e}\n")),
        };
        if claimed.id() != *key {
            return Reply::Text(
                422,
                format!("the signature is by key {}, not {key}\n", claimed.id()),
            );
        }
        if let Err(e) = SignatureFile::parse_and_verify(body, id, &claimed) {
            return Reply::Text(422, format!("the signature is not valid: {e:#}\n"));
        }
        let object = signature_key(id, key);
        match std::fs::read(self.root.join(&object)) {
            Ok(there) if there == body => return Reply::Text(200, "already stored\n".into()),
            Ok(_) => {
                return Reply::Text(
                    409,
                    format!("{object} exists, with other content: objects are never replaced\n"),
                )
            }
            Err(_) => {}
        }
        match self.repo.store().has(&snapshot_key(id)) {
            Ok(true) => {}
            Ok(false) => {
                return Reply::Text(409, format!("snapshot {id} is not stored; push it first\n"))
            }
            Err(e) => return Reply::Text(500, format!("{e:#}\n")),
        }
        match self
            .repo
            .store()
            .put(&object, body)
            .and_then(|_| self.repo.store().flush())
        {
            Ok(()) => Reply::Text(201, "stored\n".into()),
            Err(e) => Reply::Text(500, format!("{e:#}\n")),
        }
    }

    /// Delete an object (admin token only).
    fn delete(&self, t: Target) -> Reply {
        let key = match t {
            Target::Snapshot(id) => snapshot_key(&id),
            Target::Signature(id, k) => crate::trust::signature::signature_key(&id, &k),
            Target::Chunk(id) => chunk_key(&id),
            Target::Pack(id) => id.key(),
            Target::Index(hex) => format!("index/{hex}.idx"),
            Target::Key(name) => crate::repo::keyring::key_path(&name),
            Target::Journal(name) => format!("journal/{name}"),
            Target::Protected(id) => crate::repo::protect::key(&id),
            Target::Lease(name) => format!("locks/{name}"),
            Target::Intent(name) => format!("prune/{name}"),
            _ => return Reply::Text(405, "a listing is not deleted\n".into()),
        };
        match self.repo.store().has(&key) {
            Ok(false) => return Reply::Text(404, "not found\n".into()),
            Ok(true) => {}
            Err(e) => return Reply::Text(500, format!("{e:#}\n")),
        }
        match self.repo.store().delete(&key) {
            Ok(()) => {
                log::warn!("deleted {key}");
                Reply::Text(200, "deleted\n".into())
            }
            Err(e) => Reply::Text(500, format!("{e:#}\n")),
        }
    }

    /// Store a journal record (a record, or sealed as one in an encrypted repository) or
    /// a protection marker (of a stored snapshot).
    fn put_small(&self, t: Target, body: &[u8]) -> Reply {
        let key = match &t {
            Target::Journal(name) => {
                let checked = if self.repo.is_encrypted() {
                    crate::crypt::check_envelope(crate::crypt::Kind::Journal, body)
                        .map_err(anyhow::Error::new)
                } else {
                    crate::journal::parse(self.repo.protection(), body).map(|_| ())
                };
                if let Err(e) = checked {
                    return Reply::Text(422, format!("not a journal record: {e:#}\n"));
                }
                format!("journal/{name}")
            }
            Target::Protected(id) => {
                match self.repo.store().has(&snapshot_key(id)) {
                    Ok(true) => {}
                    Ok(false) => return Reply::Text(409, format!("snapshot {id} is not stored\n")),
                    Err(e) => return Reply::Text(500, format!("{e:#}\n")),
                }
                crate::repo::protect::key(id)
            }
            _ => return Reply::Text(405, "not written here\n".into()),
        };
        self.store_small(&key, body)
    }

    /// Write a small object whole and durably.
    fn store_small(&self, key: &str, body: &[u8]) -> Reply {
        match self
            .repo
            .store()
            .put(key, body)
            .and_then(|_| self.repo.store().flush())
        {
            Ok(()) => Reply::Text(201, "stored\n".into()),
            Err(e) => Reply::Text(500, format!("{e:#}\n")),
        }
    }

    /// Store a key file (admin token only): named by its hash, and a key file.
    fn put_key(&self, name: &str, body: &[u8]) -> Reply {
        use crate::repo::keyfile::KeyFile;
        if KeyFile::name(body) != name {
            return Reply::Text(422, "the key file does not hash to its name\n".into());
        }
        if let Err(e) = KeyFile::parse(body) {
            return Reply::Text(422, format!("not a key file: {e}\n"));
        }
        let key = crate::repo::keyring::key_path(name);
        self.store_small(&key, body)
    }

    fn put_chunk(&self, id: &ChunkId, body: &[u8]) -> Reply {
        if let Err(e) = self.repo.decode_chunk(id, body) {
            return Reply::Text(422, format!("{e}\n"));
        }
        match self.repo.store().put(&chunk_key(id), body) {
            Ok(()) => Reply::Text(201, "stored\n".into()),
            Err(e) => Reply::Text(500, format!("{e:#}\n")),
        }
    }

    /// Store a manifest spooled to a temporary file: it must hash to its name, parse (as
    /// it streams from the file), hold together and name only chunks already stored;
    /// then it is renamed into place, after the chunks it names are durable.
    fn put_manifest(&self, id: &SnapshotId, body: &Spooled) -> Reply {
        let actual = SnapshotId(*body.hash.as_bytes());
        if actual != *id {
            return Reply::Text(
                422,
                format!("the manifest hashes to {actual}, not to its name\n"),
            );
        }
        if self.repo.is_encrypted() {
            // Sealed: this server has no key. It checks the name (above) and the shape;
            // the writer orders its data before it (readers check the rest).
            return self.put_sealed(&body.path, crate::crypt::Kind::Manifest, &snapshot_key(id));
        }
        let parsed = std::fs::File::open(&body.path).map(|f| {
            serde_json::from_reader::<_, Manifest>(BufReader::with_capacity(256 << 10, f))
        });
        let m = match parsed {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => return Reply::Text(422, format!("the manifest does not parse: {e}\n")),
            Err(e) => return Reply::Text(500, format!("read {}: {e}\n", body.path.display())),
        };
        if let Err(e) = self.repo.check_manifest(&m) {
            return Reply::Text(422, format!("the manifest is inconsistent: {e:#}\n"));
        }
        // Chunks before the manifest: make the pushed chunks durable, then insist on all.
        if let Err(e) = self.repo.store().flush() {
            return Reply::Text(500, format!("{e:#}\n"));
        }
        for c in m.chunk_ids() {
            match self.repo.has_chunk(&c) {
                Ok(true) => {}
                Ok(false) => {
                    return Reply::Text(409, format!("chunk {c} is not stored; push it first\n"))
                }
                Err(e) => return Reply::Text(500, format!("{e:#}\n")),
            }
        }
        match self.place(&body.path, &snapshot_key(id)) {
            Ok(()) => Reply::Text(201, "stored\n".into()),
            Err(e) => Reply::Text(500, format!("{e:#}\n")),
        }
    }

    /// Store a pack spooled to a temporary file: it must hash to its name, its trailer
    /// hold, and every chunk in it decompress to its stated length and hash to its id;
    /// only then is it renamed into place.
    fn put_pack(&self, id: &PackId, body: &Spooled) -> Reply {
        if body.hash.as_bytes() != &id.0 {
            return Reply::Text(
                422,
                format!(
                    "the pack hashes to {}, not to its name\n",
                    body.hash.to_hex()
                ),
            );
        }
        match std::fs::File::open(&body.path) {
            Ok(f) => {
                if let Err(e) = self.repo.verify_pack(&f) {
                    return Reply::Text(422, format!("{e:#}\n"));
                }
            }
            Err(e) => return Reply::Text(500, format!("read {}: {e}\n", body.path.display())),
        }
        match self.place(&body.path, &id.key()) {
            Ok(()) => {
                self.repo.note_pack_stored(id);
                Reply::Text(201, "stored\n".into())
            }
            Err(e) => Reply::Text(500, format!("{e:#}\n")),
        }
    }

    /// Store an index file: it must hash to its name and parse, and every pack it names
    /// must be stored already at the length it gives (data before what names it); then
    /// this server's own index learns it.
    fn put_index(&self, hex: &str, body: &Spooled) -> Reply {
        if body.hash.to_hex().as_str() != hex {
            return Reply::Text(
                422,
                format!(
                    "the index hashes to {}, not to its name\n",
                    body.hash.to_hex()
                ),
            );
        }
        let data = match std::fs::read(&body.path) {
            Ok(d) => d,
            Err(e) => return Reply::Text(500, format!("read {}: {e}\n", body.path.display())),
        };
        if self.repo.is_encrypted() {
            return self.put_sealed(
                &body.path,
                crate::crypt::Kind::Index,
                &format!("index/{hex}.idx"),
            );
        }
        let packs = match self.repo.parse_index(&data) {
            Ok(p) => p,
            Err(e) => return Reply::Text(422, format!("the index file is malformed: {e}\n")),
        };
        if let Err(e) = self.repo.store().flush() {
            return Reply::Text(500, format!("{e:#}\n"));
        }
        for p in &packs {
            match self.repo.pack_present(&p.id, p.len) {
                Ok(true) => {}
                Ok(false) => {
                    return Reply::Text(
                        409,
                        format!("pack {} is not stored; push it first\n", p.id),
                    )
                }
                Err(e) => return Reply::Text(500, format!("{e:#}\n")),
            }
        }
        match self.place(&body.path, &format!("index/{hex}.idx")) {
            Ok(()) => {
                self.repo.learn_index(&packs);
                Reply::Text(201, "stored\n".into())
            }
            Err(e) => Reply::Text(500, format!("{e:#}\n")),
        }
    }

    /// Store a sealed object of an encrypted repository: it hashes to its name (checked
    /// by the caller) and is shaped as a sealed object of its kind.
    fn put_sealed(&self, tmp: &Path, kind: crate::crypt::Kind, key: &str) -> Reply {
        let head = {
            let mut b = vec![0u8; crate::crypt::ENVELOPE_OVERHEAD];
            match std::fs::File::open(tmp).and_then(|mut f| f.read_exact(&mut b)) {
                Ok(()) => b,
                Err(_) => return Reply::Text(422, "shorter than a sealed object\n".into()),
            }
        };
        if let Err(e) = crate::crypt::check_envelope(kind, &head) {
            return Reply::Text(422, format!("{e}\n"));
        }
        if let Err(e) = self.repo.store().flush() {
            return Reply::Text(500, format!("{e:#}\n"));
        }
        match self.place(tmp, key) {
            Ok(()) => Reply::Text(201, "stored\n".into()),
            Err(e) => Reply::Text(500, format!("{e:#}\n")),
        }
    }

    /// Rename a synced temporary file to `key` and make the rename durable.
    fn place(&self, tmp: &Path, key: &str) -> Result<()> {
        let path = self.root.join(key);
        let dir = path.parent().context("a key has a directory")?;
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        // Never over an object that is there: its name is its content's hash, so the one
        // there is the same (or damaged, which check reports; a PUT does not repair it).
        crate::repo::atomic::place_new(tmp, &path)
            .with_context(|| format!("rename {} to {}", tmp.display(), path.display()))?;
        crate::repo::atomic::sync_dir(dir)
    }

    /// Answer one request whole: (status, content type, body). For tests.
    #[cfg(test)]
    fn answer(&self, req: &Request) -> (u16, &'static str, Vec<u8>) {
        let mut o = Outgoing::from(self.route(req));
        let mut body = Vec::new();
        o.body.read_to_end(&mut body).expect("read the reply");
        (o.code, o.kind, body)
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        206 => "Partial Content",
        416 => "Range Not Satisfiable",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        422 => "Unprocessable Content",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// The most a request line and its headers may take together.
const MAX_HEAD: u64 = pool::MAX_HEAD as u64;
/// A request body must arrive at least this fast (after the head's deadline).
const MIN_BODY_RATE: u64 = 64 << 10;
/// The most a manifest PUT may carry (a chunk's limit is the repository's own).
const MAX_MANIFEST_PUT: u64 = crate::repo::manifest::MAX_MANIFEST_BYTES;

/// A request's line and headers.
#[derive(Debug)]
pub struct Head {
    pub(crate) method: String,
    pub(crate) path: String,
    /// HTTP/1.0: the connection closes after the reply unless the client asks otherwise.
    http10: bool,
    headers: Vec<(String, String)>,
}

impl Head {
    /// The Range header, if any.
    pub(crate) fn range(&self) -> Option<&str> {
        self.header("Range")
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the connection stays open after this request's reply.
    fn keep_alive(&self) -> bool {
        let connection = self.header("Connection").map(str::to_ascii_lowercase);
        match connection.as_deref() {
            Some("close") => false,
            Some("keep-alive") => true,
            _ => !self.http10,
        }
    }

    fn content_length(&self) -> Result<u64> {
        anyhow::ensure!(
            self.header("Transfer-Encoding").is_none(),
            "chunked request bodies are not accepted"
        );
        Ok(self
            .header("Content-Length")
            .map(|v| v.parse::<u64>())
            .transpose()?
            .unwrap_or(0))
    }
}

/// One line of the head, within what is left of the head's budget.
fn read_head_line(r: &mut impl BufRead, budget: &mut u64) -> Result<Option<String>> {
    let mut line = Vec::new();
    let n = r.take(*budget).read_until(b'\n', &mut line)? as u64;
    if n == 0 {
        return Ok(None);
    }
    *budget -= n;
    anyhow::ensure!(
        line.ends_with(b"\n"),
        if *budget == 0 {
            "request headers over 64 KiB"
        } else {
            "connection closed in the headers"
        }
    );
    Ok(Some(String::from_utf8_lossy(&line).into_owned()))
}

/// Read a request's line and headers (64 KiB at most); None when the client closed the
/// connection between requests.
pub(crate) fn read_head(r: &mut impl BufRead) -> Result<Option<Head>> {
    let mut budget = MAX_HEAD;
    let Some(line) = read_head_line(r, &mut budget)? else {
        return Ok(None);
    };
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        anyhow::bail!("bad request line {line:?}");
    };
    let http10 = parts.next() == Some("HTTP/1.0");
    let mut headers = Vec::new();
    loop {
        let Some(h) = read_head_line(r, &mut budget)? else {
            anyhow::bail!("connection closed in the headers");
        };
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok(Some(Head {
        method: method.to_string(),
        path: path.to_string(),
        http10,
        headers,
    }))
}

fn read_body(r: &mut impl Read, len: u64) -> Result<Vec<u8>> {
    let mut body = Vec::with_capacity(len as usize);
    r.take(len).read_to_end(&mut body)?;
    anyhow::ensure!(body.len() as u64 == len, "the body ended early");
    Ok(body)
}

/// Read one whole request, its body at most `body_limit` bytes; None when the client
/// closed the connection between requests.
pub(crate) fn read_request(r: &mut impl BufRead, body_limit: u64) -> Result<Option<Request>> {
    let Some(head) = read_head(r)? else {
        return Ok(None);
    };
    let len = head.content_length()?;
    anyhow::ensure!(len <= body_limit, "body of {len} bytes is over the limit");
    let body = Body::Bytes(read_body(r, len)?);
    Ok(Some(Request { head, body }))
}

/// Open a repository file to send: a regular file only (no symlink out of the
/// repository, no FIFO), with its length.
fn open_regular(path: &Path) -> std::io::Result<(std::fs::File, u64)> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::ErrorKind::NotFound.into());
    }
    Ok((f, meta.len()))
}

/// A reply's status, content type, length, extra header lines and body, ready to send.
struct Outgoing {
    code: u16,
    kind: &'static str,
    len: u64,
    headers: String,
    body: Box<dyn Read>,
}

/// What a Range header asks of a file of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RangeAsk {
    /// The whole file (no header, or one this server does not serve in part: several
    /// ranges, or another unit).
    Whole,
    /// Bytes `start..=last`.
    Part { start: u64, last: u64 },
    /// Nothing of it can be sent (416).
    Unsatisfiable,
}

/// Parse a Range header value (`bytes=A-B`, `bytes=A-`, `bytes=-N`) against a length.
pub(crate) fn parse_range(value: Option<&str>, len: u64) -> RangeAsk {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return RangeAsk::Whole;
    };
    if spec.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeAsk::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| s.parse::<u64>().ok();
    let (start, last) = match (a.is_empty(), b.is_empty()) {
        (false, true) => match num(a) {
            Some(s) => (s, len.saturating_sub(1)),
            None => return RangeAsk::Whole,
        },
        (false, false) => match (num(a), num(b)) {
            (Some(s), Some(e)) if e >= s => (s, e.min(len.saturating_sub(1))),
            _ => return RangeAsk::Whole,
        },
        (true, false) => match num(b) {
            Some(0) => return RangeAsk::Unsatisfiable,
            Some(n) => (len.saturating_sub(n), len.saturating_sub(1)),
            None => return RangeAsk::Whole,
        },
        (true, true) => return RangeAsk::Whole,
    };
    if len == 0 || start >= len {
        return RangeAsk::Unsatisfiable;
    }
    RangeAsk::Part { start, last }
}

/// A file's reply: whole (200), in part (206), or 416; every file says it takes ranges,
/// and a content-addressed one (with `etag`) that it never changes.
fn file_reply(mut f: std::fs::File, len: u64, range: Option<&str>, etag: Option<&str>) -> Outgoing {
    use std::io::{Seek, SeekFrom};
    let mut headers = String::from("Accept-Ranges: bytes\r\n");
    if let Some(tag) = etag {
        headers.push_str(&format!(
            "ETag: \"{tag}\"\r\nCache-Control: public, max-age=31536000, immutable\r\n"
        ));
    }
    match parse_range(range, len) {
        RangeAsk::Whole => Outgoing {
            code: 200,
            kind: "application/octet-stream",
            len,
            headers,
            body: Box::new(f.take(len)),
        },
        RangeAsk::Part { start, last } => {
            if f.seek(SeekFrom::Start(start)).is_err() {
                return Reply::Text(500, "seek failed\n".into()).into();
            }
            let n = last - start + 1;
            headers.push_str(&format!("Content-Range: bytes {start}-{last}/{len}\r\n"));
            Outgoing {
                code: 206,
                kind: "application/octet-stream",
                len: n,
                headers,
                body: Box::new(f.take(n)),
            }
        }
        RangeAsk::Unsatisfiable => {
            headers.push_str(&format!("Content-Range: bytes */{len}\r\n"));
            Outgoing {
                code: 416,
                kind: "text/plain",
                len: 0,
                headers,
                body: Box::new(std::io::empty()),
            }
        }
    }
}

impl From<Reply> for Outgoing {
    fn from(reply: Reply) -> Outgoing {
        match reply {
            Reply::File(path, range, etag) => match open_regular(&path) {
                Ok((f, len)) => file_reply(f, len, range.as_deref(), etag.as_deref()),
                Err(_) => Reply::Text(404, "not found\n".into()).into(),
            },
            Reply::Bytes(code, b, kind) => Outgoing {
                code,
                kind,
                len: b.len() as u64,
                headers: String::new(),
                body: Box::new(std::io::Cursor::new(b)),
            },
            Reply::Text(code, t) => Outgoing {
                code,
                kind: "text/plain",
                len: t.len() as u64,
                headers: String::new(),
                body: Box::new(std::io::Cursor::new(t.into_bytes())),
            },
        }
    }
}

/// Write a reply: the head, then (but for HEAD) the body, a file streamed from disk.
fn send<W: Write>(out: &mut W, method: &str, reply: Reply, close: bool) -> Result<(u16, u64)> {
    let mut o = Outgoing::from(reply);
    let head =
        format!(
        "HTTP/1.1 {} {}\r\nServer: lifeboat\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}{}{}\r\n",
        o.code,
        reason(o.code),
        o.kind,
        o.len,
        o.headers,
        if o.code == 401 { "WWW-Authenticate: Bearer\r\n" } else { "" },
        if close { "Connection: close\r\n" } else { "" },
    );
    out.write_all(head.as_bytes())?;
    if method != "HEAD" {
        let n = std::io::copy(&mut o.body, out)?;
        anyhow::ensure!(n == o.len, "the file shrank while it was sent");
    }
    out.flush()?;
    Ok((o.code, o.len))
}

/// Serve one request on a connection whose head has arrived (see `pool`); whether the
/// connection may carry another.
fn serve_one(conn: &mut Active, handler: &Handler) -> Result<bool> {
    let Some(head) = read_head(conn)? else {
        return Ok(false);
    };
    let start = Instant::now();
    let mut close = !head.keep_alive();
    let (method, path) = (head.method.clone(), head.path.clone());
    let reply = match handler.admit_body(&head) {
        Ok(len) => {
            conn.set_deadline(HEAD_DEADLINE + Duration::from_secs(len / MIN_BODY_RATE));
            let body = match parse_path(&head.path) {
                Some(Target::Snapshot(_) | Target::Pack(_) | Target::Index(_)) => {
                    Body::File(spool(conn, len, &handler.root.join("tmp"))?)
                }
                _ => Body::Bytes(read_body(conn, len)?),
            };
            handler.route(&Request { head, body })
        }
        // Refused before its body was read: the body is left unread, so the connection
        // cannot carry another request.
        Err(refusal) => {
            close = true;
            refusal
        }
    };
    let (code, len) = send(conn, &method, reply, close)?;
    log::info!(
        "{} {method} {path} {code} {len} {:.1}ms",
        conn.peer,
        start.elapsed().as_secs_f64() * 1000.0
    );
    Ok(!close)
}

fn read_file(p: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("read {what} {}", p.display()))
}

/// A rustls server config from a PEM certificate chain and private key.
fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>> {
    let certs = rustls_pemfile::certs(&mut read_file(cert, "certificate")?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parse {}", cert.display()))?;
    let key = rustls_pemfile::private_key(&mut read_file(key, "private key")?.as_slice())
        .with_context(|| format!("parse {}", key.display()))?
        .ok_or_else(|| anyhow!("{} holds no private key", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("TLS certificate and key")?;
    Ok(Arc::new(cfg))
}

/// The write token from its file: at least 16 characters.
fn load_token(file: &Path) -> Result<String> {
    let t =
        String::from_utf8(read_file(file, "token file")?).context("the token file is not UTF-8")?;
    let t = t.trim().to_string();
    anyhow::ensure!(
        t.len() >= 16,
        "the write token in {} is shorter than 16 characters",
        file.display()
    );
    Ok(t)
}

/// A thread that waits for SIGTERM or SIGINT, then sets `stop` and wakes the accept loop.
fn stop_on_signal(addr: SocketAddr) -> Result<Arc<AtomicBool>> {
    // Signals are taken by a waiting thread: block them everywhere first.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.thread_block().context("block SIGTERM and SIGINT")?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        if let Ok(sig) = signals.wait() {
            log::warn!("{sig:?}: stopping");
        }
        flag.store(true, Ordering::Relaxed);
        // Wake the accept loop.
        let _ = TcpStream::connect(addr);
    });
    Ok(stop)
}

/// Serve until SIGTERM or SIGINT. Prints `listening on ADDR` on stdout once ready.
pub fn run(args: &ServeArgs) -> Result<()> {
    let spec = RepoSpec {
        password_file: args.password_file.clone(),
        ..RepoSpec::at(RepoLocation::Dir(args.repo.clone()))
    };
    // The server itself holds no key: it checks names and shapes, never content it
    // cannot read. Only the NBD export, which serves plain disks, needs the passphrase.
    let repo = Repository::open_without_key(&spec)?;
    let tokens = Tokens {
        append: args
            .write_token_file
            .as_deref()
            .map(load_token)
            .transpose()?,
        admin: args
            .admin_token_file
            .as_deref()
            .map(load_token)
            .transpose()?,
    };
    if tokens.append.is_some() && tokens.append == tokens.admin {
        anyhow::bail!("the append and admin tokens must differ");
    }
    let listener =
        TcpListener::bind(&args.listen).with_context(|| format!("listen on {}", args.listen))?;
    let addr: SocketAddr = listener.local_addr().context("listening address")?;
    let stop = stop_on_signal(addr)?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls_config(cert, key)?),
        (None, None) => None,
        _ => anyhow::bail!("--tls-cert and --tls-key go together"),
    };
    let nbd = match &args.nbd {
        Some(a) => Some(TcpListener::bind(a).with_context(|| format!("listen for NBD on {a}"))?),
        None => None,
    };
    println!("listening on {addr}");
    if let Some(l) = &nbd {
        println!(
            "nbd listening on {}",
            l.local_addr().context("NBD address")?
        );
    }
    log::warn!(
        "serving {} at {}://{addr}/ ({})",
        args.repo.display(),
        if tls.is_some() { "https" } else { "http" },
        match (&tokens.append, &tokens.admin) {
            (_, Some(_)) => "appends with a token, deletes with the admin token",
            (Some(_), None) => "appends with the token, never deletes",
            (None, None) => "read-only",
        }
    );
    std::io::stdout().flush().ok();
    if let Some(l) = nbd {
        let repo = Repository::open(&spec)?;
        let policy = crate::trust::Policy::new(&args.trust, &repo)?;
        let exports = Arc::new(crate::nbd::server::Exports::new(Arc::new(repo), policy));
        std::thread::spawn(move || crate::nbd::server::run(l, exports));
    }
    let handler = Arc::new(Handler {
        repo,
        root: args.repo.clone(),
        tokens,
    });
    let h = handler.clone();
    let serve: Arc<pool::Serve> = Arc::new(move |conn: &mut Active| serve_one(conn, &h));
    pool::run(&listener, serve, tls, &stop, args.threads.max(1))?;
    handler
        .repo
        .store()
        .flush()
        .context("make the last writes durable")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::{ChunkerParams, Repository};

    #[test]
    fn ranges_are_parsed_against_the_length() {
        use RangeAsk::*;
        let p = |v: &str| parse_range(Some(v), 100);
        assert_eq!(parse_range(None, 100), Whole);
        assert_eq!(p("bytes=0-9"), Part { start: 0, last: 9 });
        assert_eq!(
            p("bytes=90-"),
            Part {
                start: 90,
                last: 99
            }
        );
        assert_eq!(
            p("bytes=95-200"),
            Part {
                start: 95,
                last: 99
            }
        );
        assert_eq!(
            p("bytes=-10"),
            Part {
                start: 90,
                last: 99
            }
        );
        assert_eq!(p("bytes=-1000"), Part { start: 0, last: 99 });
        assert_eq!(p("bytes=100-"), Unsatisfiable);
        assert_eq!(p("bytes=-0"), Unsatisfiable);
        for whole in [
            "bytes=5-1",
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=x-1",
            "bytes=-",
            "bytes=18446744073709551616-",
        ] {
            assert_eq!(p(whole), Whole, "{whole}");
        }
        assert_eq!(parse_range(Some("bytes=0-0"), 0), Unsatisfiable);
    }

    #[test]
    fn paths_name_only_what_a_repository_has() {
        let id = ChunkId::of(b"x");
        let hex = id.to_hex();
        let snap = SnapshotId::of(b"m");
        assert_eq!(parse_path("/config.json"), Some(Target::Config));
        assert_eq!(parse_path("/snapshots/"), Some(Target::SnapshotList));
        assert_eq!(
            parse_path(&format!("/snapshots/{snap}.json")),
            Some(Target::Snapshot(snap))
        );
        assert_eq!(parse_path("/chunks/"), Some(Target::ChunkList(None)));
        assert_eq!(
            parse_path(&format!("/chunks/{}/", &hex[..2])),
            Some(Target::ChunkList(Some(hex[..2].to_string())))
        );
        assert_eq!(
            parse_path(&format!("/chunks/{}/{hex}?x=1", &hex[..2])),
            Some(Target::Chunk(id))
        );
        for bad in [
            "/".to_string(),
            "/../config.json".into(),
            "/snapshots/abc.json".into(),
            format!("/snapshots/{}.json", snap.to_hex().to_uppercase()),
            format!("/chunks/00/{hex}"),
            format!("/chunks//{hex}"),
            format!("/chunks/{}/{hex}/x", &hex[..2]),
            "/tmp/w-1".into(),
            "/reports/".into(),
        ] {
            assert_eq!(parse_path(&bad), None, "{bad}");
        }
    }

    fn request(raw: &str, limit: u64) -> Result<Option<Request>> {
        read_request(&mut std::io::Cursor::new(raw.as_bytes().to_vec()), limit)
    }

    #[test]
    fn requests_are_parsed_with_their_bodies() {
        let r = request(
            "PUT /chunks/ab/x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nauthorization: Bearer t\r\n\r\nhello",
            100,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("PUT", "/chunks/ab/x")
        );
        assert_eq!(r.header("Authorization"), Some("Bearer t"));
        assert!(matches!(&r.body, Body::Bytes(b) if b == b"hello"));
        assert!(
            request("", 100).unwrap().is_none(),
            "closed between requests"
        );
    }

    #[test]
    fn bad_requests_are_refused() {
        let refused = |raw: &str| request(raw, 100).unwrap_err().to_string();
        assert!(refused("PUT / HTTP/1.1\r\nContent-Length: 500\r\n\r\n").contains("over the limit"));
        assert!(
            refused("PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").contains("chunked")
        );
        assert!(refused("PUT / HTTP/1.1\r\nContent-Length: 9\r\n\r\nabc").contains("ended early"));
        assert!(refused("GARBAGE\r\n\r\n").contains("bad request line"));
        assert!(refused("GET / HTTP/1.1\r\nHost: x\r\n").contains("closed in the headers"));
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(70_000));
        assert!(refused(&huge).contains("64 KiB"));
        assert!(refused("PUT / HTTP/1.1\r\nContent-Length: -1\r\n\r\n").contains("invalid digit"));
    }

    #[test]
    fn bodies_are_admitted_only_with_the_token_and_within_their_limit() {
        let dir = tempfile::tempdir().unwrap();
        let h = handler(dir.path(), Some("0123456789abcdef"));
        let chunk = format!("/{}", chunk_key(&ChunkId::of(b"x")));
        let code = |r: &Request| match h.admit_body(&r.head) {
            Ok(len) => len as u16,
            Err(Reply::Text(code, _)) => code,
            Err(_) => 0,
        };
        // A gigabyte announced without the token: refused before a byte of it is read.
        let mut big = put(chunk.clone(), vec![], None);
        big.head.headers[0].1 = (1u64 << 30).to_string();
        assert_eq!(code(&big), 401);
        big.head
            .headers
            .push(("Authorization".into(), "Bearer 0123456789abcdef".into()));
        assert_eq!(code(&big), 413);
        assert_eq!(
            code(&put(chunk, vec![0; 100], Some("0123456789abcdef"))),
            100
        );
        assert_eq!(
            code(&put(
                "/config.json".into(),
                vec![0; 10],
                Some("0123456789abcdef")
            )),
            405
        );
    }

    #[test]
    fn http10_closes_unless_asked_and_11_keeps_alive_unless_asked() {
        let head = |raw: &str| {
            read_head(&mut std::io::Cursor::new(raw.as_bytes()))
                .unwrap()
                .unwrap()
        };
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive());
        assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive());
        assert!(head("GET / HTTP/1.1\r\n\r\n").keep_alive());
        assert!(!head("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive());
        // A request line that never ends is cut at the head's limit, not read whole.
        let endless = "GET /".to_string() + &"a".repeat(200_000);
        let e = read_head(&mut std::io::Cursor::new(endless.as_bytes())).unwrap_err();
        assert!(e.to_string().contains("64 KiB"), "{e}");
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"secret-token-123", b"secret-token-123"));
        assert!(!same(b"secret-token-123", b"secret-token-124"));
        assert!(!same(b"secret", b"secret-token-123"));
    }

    fn handler(dir: &Path, token: Option<&str>) -> Handler {
        let repo = Repository::init(&dir.join("repo"), ChunkerParams::default(), 3).unwrap();
        Handler {
            repo,
            root: dir.join("repo"),
            tokens: Tokens {
                append: token.map(str::to_string),
                admin: None,
            },
        }
    }

    fn put(path: String, body: Vec<u8>, auth: Option<&str>) -> Request {
        let mut headers = vec![("Content-Length".to_string(), body.len().to_string())];
        headers.extend(auth.map(|t| ("Authorization".to_string(), format!("Bearer {t}"))));
        Request {
            head: Head {
                method: "PUT".into(),
                path,
                http10: false,
                headers,
            },
            body: Body::Bytes(body),
        }
    }

    #[test]
    fn writes_need_the_token_and_must_match_their_names() {
        let dir = tempfile::tempdir().unwrap();
        let h = handler(dir.path(), Some("0123456789abcdef"));
        let data = b"a chunk of data".to_vec();
        let id = ChunkId::of(&data);
        let packed = zstd::bulk::compress(&data, 3).unwrap();
        let key = format!("/{}", chunk_key(&id));
        let code = |r: &Request| h.answer(r).0;
        assert_eq!(code(&put(key.clone(), packed.clone(), None)), 401);
        assert_eq!(
            code(&put(key.clone(), packed.clone(), Some("wrong-token-xxxxx"))),
            401
        );
        let other = zstd::bulk::compress(b"something else", 3).unwrap();
        assert_eq!(
            code(&put(key.clone(), other, Some("0123456789abcdef"))),
            422
        );
        assert!(
            !h.repo.has_chunk(&id).unwrap(),
            "nothing stored on a refusal"
        );
        assert_eq!(code(&put(key, packed, Some("0123456789abcdef"))), 201);
        assert_eq!(
            code(&put(
                "/config.json".into(),
                vec![],
                Some("0123456789abcdef")
            )),
            405
        );
        let manifest = b"{}".to_vec();
        let wrong_name = format!("/{}", snapshot_key(&SnapshotId::of(b"other")));
        assert_eq!(
            code(&put(wrong_name, manifest, Some("0123456789abcdef"))),
            422
        );
    }

    #[test]
    fn a_server_without_a_token_is_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let h = handler(dir.path(), None);
        let data = b"x".to_vec();
        let key = format!("/{}", chunk_key(&ChunkId::of(&data)));
        assert_eq!(h.answer(&put(key, data, Some("anything-at-all-1"))).0, 401);
        let get = Request {
            head: Head {
                method: "GET".into(),
                path: "/config.json".into(),
                http10: false,
                headers: vec![],
            },
            body: Body::Bytes(vec![]),
        };
        let (code, _, body) = h.answer(&get);
        assert_eq!(code, 200);
        assert!(String::from_utf8(body)
            .unwrap()
            .contains("lifeboat-repository"));
    }
}
