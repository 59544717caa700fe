//! What a request may do, and who may ask: anyone reads; the append token adds objects
//! and nothing else (capturing machines, a PXE command line), and removes a lease; the
//! admin token also adds key files and prune intents, and deletes. An object is never
//! replaced, whoever asks. Each write goes to the repository's admission rules
//! (`repo::admit`, and the journal's and signatures' own), which decide what is stored.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::pool::{Active, HEAD_DEADLINE};
use super::wire::{read_body, read_head, send, Body, Head, Reply, Request, MIN_BODY_RATE};
use crate::repo::admit::{Admission, Admitted, Refusal};
use crate::repo::{Dir, Object};

/// What a request path names: an object, a directory's listing, or the metrics.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Target {
    Object(Object),
    List(Dir),
    /// The repository's state in the Prometheus text format.
    Metrics,
}

/// What a request path names, if it names anything this server serves (never the
/// rescue's reports nor temporary files).
pub(crate) fn parse_path(path: &str) -> Option<Target> {
    let path = path.split('?').next().unwrap_or("");
    let path = path.trim_start_matches('/');
    if path == "metrics" {
        return Some(Target::Metrics);
    }
    let target = match path.strip_suffix('/') {
        Some(dir) => Target::List(Dir::parse(dir)?),
        None => Target::Object(Object::parse(path)?),
    };
    match target {
        Target::List(Dir::Reports | Dir::PackFan(_) | Dir::Packs)
        | Target::Object(Object::Report(_)) => None,
        t => Some(t),
    }
}

/// The bearer tokens a server takes.
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

/// Who may write an object: key files and prune intents change what others may do, so
/// the admin; anything else, the append token.
fn writer_of(object: &Object) -> Role {
    match object {
        Object::KeyFile(_) | Object::Intent(_) => Role::Admin,
        _ => Role::Append,
    }
}

/// Constant-time comparison, so that a wrong token's timing says nothing about the right one.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) struct Handler {
    pub(crate) admission: Admission,
    pub(crate) tokens: Tokens,
}

impl Handler {
    /// The listing of `dir`: the objects in it (the fans of format 1's `chunks/`).
    fn list(&self, dir: Dir) -> Reply {
        let store = self.admission.repo().store();
        let names = match dir {
            Dir::Chunks => store.list(&dir).map(|n| {
                n.iter()
                    .filter(|n| dir.fan(n).is_some())
                    .map(|n| format!("{n}/"))
                    .collect()
            }),
            _ => store
                .list(&dir)
                .map(|n| n.into_iter().filter(|n| dir.entry(n).is_some()).collect()),
        };
        match names {
            Ok(n) => listing(n),
            Err(e) => Reply::Text(500, format!("{e:#}\n")),
        }
    }

    /// Whether a request's body may be read, and how long it is; otherwise the reply that
    /// refuses it, sent without reading the body: writing needs the token, and a body
    /// may be no longer than what it can be.
    pub(crate) fn admit_body(&self, head: &Head) -> Result<u64, Reply> {
        let len = head
            .content_length()
            .map_err(|e| Reply::Text(400, format!("{e:#}\n")))?;
        if len == 0 {
            return Ok(0);
        }
        let written = match (head.method.as_str(), parse_path(&head.path)) {
            ("PUT", Some(Target::Object(o))) => limit(&o, self).map(|l| (o, l)),
            ("PUT", _) => None,
            _ => return Err(Reply::Text(400, "only a PUT has a body\n".into())),
        };
        let Some((object, limit)) = written else {
            return Err(Reply::Text(
                405,
                "only chunks, packs, index files, snapshots, signatures and key files are written\n"
                    .into(),
            ));
        };
        self.allow(head, writer_of(&object))?;
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
        if self.tokens.append.is_none() && self.tokens.admin.is_none() {
            return Err(Reply::Text(
                403,
                "this server is read-only: it was started without --token-file or --admin-token-file\n"
                    .into(),
            ));
        }
        Err(match (needs, has) {
            (Role::Admin, Role::Append) => Reply::Text(
                403,
                "the append token only adds objects: this needs the admin token\n".into(),
            ),
            (Role::Admin, _) => Reply::Text(
                401,
                "this needs the server's admin token, and the request carried no token it knows\n"
                    .into(),
            ),
            _ => Reply::Text(
                401,
                "writing needs the server's token, and the request carried no token it knows \
                 (--token-file)\n"
                    .into(),
            ),
        })
    }

    pub(crate) fn route(&self, req: &Request) -> Reply {
        let Some(target) = parse_path(&req.path) else {
            return Reply::Text(404, "not found\n".into());
        };
        let read = req.method == "GET" || req.method == "HEAD";
        match (req.method.as_str(), target) {
            (_, Target::Object(o)) if read => self.file(&o, req),
            ("GET", Target::List(dir)) => self.list(dir),
            ("GET", Target::Metrics) => match super::metrics::render(self.admission.repo()) {
                Ok(text) => Reply::Bytes(
                    200,
                    text.into_bytes(),
                    "text/plain; version=0.0.4; charset=utf-8",
                ),
                Err(e) => Reply::Text(500, format!("{e:#}\n")),
            },
            ("DELETE", t) => self.delete(t, req),
            ("PUT", Target::Object(o)) if o != Object::Config => {
                if let Err(r) = self.allow(req, writer_of(&o)) {
                    return r;
                }
                reply(self.write(o, &req.body))
            }
            ("PUT", _) => Reply::Text(
                405,
                "only chunks, packs, index files and snapshots are written\n".into(),
            ),
            _ => Reply::Text(405, "method not allowed\n".into()),
        }
    }

    /// An object's file, whole or in part.
    fn file(&self, object: &Object, req: &Request) -> Reply {
        Reply::File(
            self.admission.files().path(object),
            req.header("Range").map(str::to_string),
            object.content_hash(),
        )
    }

    /// Delete an object: a lease with the append token (a capture removes its own),
    /// anything else with the admin token.
    fn delete(&self, target: Target, req: &Request) -> Reply {
        let needs = match &target {
            Target::Object(Object::Lease(_)) => Role::Append,
            _ => Role::Admin,
        };
        if let Err(r) = self.allow(req, needs) {
            return r;
        }
        let object = match target {
            Target::Object(o) if o != Object::Config => o,
            _ => return Reply::Text(405, "a listing is not deleted\n".into()),
        };
        match self.admission.delete(&object) {
            Ok(true) => Reply::Text(200, "deleted\n".into()),
            Ok(false) => Reply::Text(404, "not found\n".into()),
            Err(e) => Reply::Text(500, format!("{e:#}\n")),
        }
    }

    /// An object sent, through the admission rules of its kind.
    fn write(&self, object: Object, body: &Body) -> Result<Admitted, Refusal> {
        let a = &self.admission;
        match (object, body) {
            (Object::Chunk(id), Body::Bytes(b)) => a.chunk(&id, b),
            (Object::Snapshot(id), b) => a.manifest(&id, &*self.spooled(b)?),
            (Object::Pack(id), b) => a.pack(&id, &*self.spooled(b)?),
            (Object::Index(id), b) => a.index(&id, &*self.spooled(b)?),
            (Object::Signature(id, key), Body::Bytes(b)) => {
                crate::trust::signature::admit(a, &id, &key, b)
            }
            (Object::KeyFile(id), Body::Bytes(b)) => a.key_file(&id, b),
            (Object::Journal(name), Body::Bytes(b)) => crate::journal::admit(a, &name, b),
            (Object::Protected(id), Body::Bytes(b)) => a.protected(&id, b),
            (o @ (Object::Lease(_) | Object::Intent(_)), Body::Bytes(b)) => a.json(&o, b),
            (_, Body::File(_)) => Err(Refusal::Failed(anyhow::anyhow!(
                "the body was not read into memory"
            ))),
            (_, Body::Bytes(_)) => Err(Refusal::Failed(anyhow::anyhow!("not written here"))),
        }
    }

    /// A body as a spooled file (read into memory already: spooled now).
    fn spooled<'a>(&self, body: &'a Body) -> Result<Spool<'a>, Refusal> {
        match body {
            Body::File(f) => Ok(Spool::Borrowed(f)),
            Body::Bytes(b) => Ok(Spool::Owned(
                self.admission.files().spool(&mut &b[..], b.len() as u64)?,
            )),
        }
    }

    /// Answer one request whole: (status, content type, body). For tests.
    #[cfg(test)]
    fn answer(&self, req: &Request) -> (u16, &'static str, Vec<u8>) {
        use std::io::Read;
        let mut o = super::wire::Outgoing::from(self.route(req));
        let mut body = Vec::new();
        o.body.read_to_end(&mut body).expect("read the reply");
        (o.code, o.kind, body)
    }
}

/// A spooled body, whether the request's own or spooled for the occasion.
enum Spool<'a> {
    Borrowed(&'a crate::repo::dir::Spooled),
    Owned(crate::repo::dir::Spooled),
}

impl std::ops::Deref for Spool<'_> {
    type Target = crate::repo::dir::Spooled;
    fn deref(&self) -> &crate::repo::dir::Spooled {
        match self {
            Spool::Borrowed(s) => s,
            Spool::Owned(s) => s,
        }
    }
}

/// The most a body sent for `object` may hold; None for what is never written.
fn limit(object: &Object, handler: &Handler) -> Option<u64> {
    Some(match object {
        Object::Chunk(_) => handler.admission.repo().chunk_limit(),
        Object::Snapshot(_) => crate::repo::manifest::MAX_MANIFEST_BYTES,
        Object::Pack(_) => crate::repo::pack::MAX_PACK_BYTES,
        Object::Index(_) => crate::repo::index::MAX_INDEX_BYTES,
        Object::Signature(..) => crate::trust::signature::MAX_SIGNATURE_BYTES,
        Object::KeyFile(_) => crate::repo::keyfile::MAX_KEY_FILE,
        Object::Journal(_) => crate::journal::MAX_RECORD,
        Object::Protected(_) => crate::repo::protect::MAX_MARKER,
        Object::Lease(_) => 4096,
        Object::Intent(_) => 64 << 20,
        Object::Config | Object::Report(_) => return None,
    })
}

/// The reply to an admission.
fn reply(outcome: Result<Admitted, Refusal>) -> Reply {
    match outcome {
        Ok(Admitted::Stored) => Reply::Text(201, "stored\n".into()),
        Ok(Admitted::AlreadyStored) => Reply::Text(200, "already stored\n".into()),
        Err(Refusal::Invalid(why)) => Reply::Text(422, format!("{why}\n")),
        Err(Refusal::Conflict(why)) => Reply::Text(409, format!("{why}\n")),
        Err(Refusal::Failed(e)) => Reply::Text(500, format!("{e:#}\n")),
    }
}

/// A directory listing as a static web server writes one: a page of links.
fn listing(names: Vec<String>) -> Reply {
    let mut page = String::from("<!DOCTYPE html>\n<html><body><ul>\n");
    for n in names {
        page.push_str(&format!("<li><a href=\"{n}\">{n}</a></li>\n"));
    }
    page.push_str("</ul></body></html>\n");
    Reply::Bytes(200, page.into_bytes(), "text/html; charset=utf-8")
}

/// Serve one request on a connection whose head has arrived (see `pool`); whether the
/// connection may carry another.
pub(crate) fn serve_one(conn: &mut Active, handler: &Handler) -> Result<bool> {
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
                Some(Target::Object(Object::Snapshot(_) | Object::Pack(_) | Object::Index(_))) => {
                    Body::File(handler.admission.files().spool(conn, len)?)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::{ChunkId, ChunkerParams, Repository, SnapshotId};
    use std::path::Path;

    #[test]
    fn paths_name_only_what_a_repository_has() {
        let id = ChunkId::of(b"x");
        let hex = id.to_hex();
        let snap = SnapshotId::of(b"m");
        assert_eq!(
            parse_path("/config.json"),
            Some(Target::Object(Object::Config))
        );
        assert_eq!(
            parse_path("/snapshots/"),
            Some(Target::List(Dir::Snapshots))
        );
        assert_eq!(
            parse_path(&format!("/snapshots/{snap}.json")),
            Some(Target::Object(Object::Snapshot(snap)))
        );
        assert_eq!(parse_path("/chunks/"), Some(Target::List(Dir::Chunks)));
        assert_eq!(
            parse_path(&format!("/chunks/{}/", &hex[..2])),
            Some(Target::List(Dir::ChunkFan(id.0[0])))
        );
        assert_eq!(
            parse_path(&format!("/chunks/{}/{hex}?x=1", &hex[..2])),
            Some(Target::Object(Object::Chunk(id)))
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

    #[test]
    fn bodies_are_admitted_only_with_the_token_and_within_their_limit() {
        let dir = tempfile::tempdir().unwrap();
        let h = handler(dir.path(), Some("0123456789abcdef"));
        let chunk = format!("/{}", Object::Chunk(ChunkId::of(b"x")));
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
    fn tokens_compare_whole() {
        assert!(same(b"secret-token-123", b"secret-token-123"));
        assert!(!same(b"secret-token-123", b"secret-token-124"));
        assert!(!same(b"secret", b"secret-token-123"));
    }

    fn handler(dir: &Path, token: Option<&str>) -> Handler {
        Repository::init(&dir.join("repo"), ChunkerParams::default(), 3).unwrap();
        Handler {
            admission: Admission::open(&dir.join("repo")).unwrap(),
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
        let key = format!("/{}", Object::Chunk(id));
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
            !h.admission.repo().has_chunk(&id).unwrap(),
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
        let wrong_name = format!("/{}", Object::Snapshot(SnapshotId::of(b"other")));
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
        let key = format!("/{}", Object::Chunk(ChunkId::of(&data)));
        let (code, _, body) = h.answer(&put(key, data, Some("anything-at-all-1")));
        assert_eq!(code, 403);
        assert!(String::from_utf8_lossy(&body).contains("read-only"));
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
