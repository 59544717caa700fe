//! An HTTP/1.1 server for a repository directory. Anyone may read; writes (a capture
//! pushing chunks and manifests) need the bearer token given at start. The server checks
//! what it is sent: a chunk must decompress to the bytes its name promises, a manifest
//! must hash to its name, parse, hold together, and name only chunks already stored.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use nix::sys::signal::{SigSet, Signal};

use super::ServeArgs;
use crate::location::RepoLocation;
use crate::repo::{chunk_key, snapshot_key, ChunkId, Manifest, RepoSpec, Repository, SnapshotId};

/// A parsed request.
#[derive(Debug)]
pub struct Request {
    pub(crate) method: String,
    pub(crate) path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Handler {
    repo: Repository,
    root: PathBuf,
    token: Option<String>,
}

enum Reply {
    File(PathBuf),
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
    ChunkList(Option<String>),
    Chunk(ChunkId),
}

pub(crate) fn parse_path(path: &str) -> Option<Target> {
    let path = path.split('?').next().unwrap_or("");
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["config.json"] => Some(Target::Config),
        ["snapshots", ""] => Some(Target::SnapshotList),
        ["snapshots", name] => name
            .strip_suffix(".json")
            .and_then(|id| id.parse().ok())
            .map(Target::Snapshot),
        ["chunks", ""] => Some(Target::ChunkList(None)),
        ["chunks", fan, ""] if is_hex(fan, 2) => Some(Target::ChunkList(Some(fan.to_string()))),
        ["chunks", fan, id] if is_hex(fan, 2) && is_hex(id, 64) && id.starts_with(fan) => {
            id.parse().ok().map(Target::Chunk)
        }
        _ => None,
    }
}

/// Constant-time comparison, so that a wrong token's timing says nothing about the right one.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Handler {
    fn listing(&self, names: Vec<String>) -> Reply {
        let mut page = String::from("<!DOCTYPE html>\n<html><body><ul>\n");
        for n in names {
            page.push_str(&format!("<li><a href=\"{n}\">{n}</a></li>\n"));
        }
        page.push_str("</ul></body></html>\n");
        Reply::Bytes(200, page.into_bytes(), "text/html; charset=utf-8")
    }

    fn authorized(&self, req: &Request) -> bool {
        let Some(token) = &self.token else {
            return false;
        };
        req.header("Authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| same(given.trim().as_bytes(), token.as_bytes()))
    }

    fn route(&self, req: &Request) -> Reply {
        let Some(target) = parse_path(&req.path) else {
            return Reply::Text(404, "not found\n".into());
        };
        let read = req.method == "GET" || req.method == "HEAD";
        match (req.method.as_str(), target) {
            (_, Target::Config) if read => Reply::File(self.root.join("config.json")),
            (_, Target::Snapshot(id)) if read => Reply::File(self.root.join(snapshot_key(&id))),
            (_, Target::Chunk(id)) if read => Reply::File(self.root.join(chunk_key(&id))),
            ("GET", Target::SnapshotList) => match self.repo.store().list("snapshots") {
                Ok(n) => self.listing(n.into_iter().filter(|n| n.ends_with(".json")).collect()),
                Err(e) => Reply::Text(500, format!("{e:#}\n")),
            },
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
            ("PUT", t @ (Target::Chunk(_) | Target::Snapshot(_))) => {
                if !self.authorized(req) {
                    return Reply::Text(401, "writing needs the server's bearer token\n".into());
                }
                match t {
                    Target::Chunk(id) => self.put_chunk(&id, &req.body),
                    Target::Snapshot(id) => self.put_manifest(&id, &req.body),
                    _ => unreachable!(),
                }
            }
            ("PUT", _) => Reply::Text(405, "only chunks and snapshots are written\n".into()),
            _ => Reply::Text(405, "method not allowed\n".into()),
        }
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

    fn put_manifest(&self, id: &SnapshotId, body: &[u8]) -> Reply {
        let actual = SnapshotId::of(body);
        if actual != *id {
            return Reply::Text(
                422,
                format!("the manifest hashes to {actual}, not to its name\n"),
            );
        }
        let m: Manifest = match serde_json::from_slice(body) {
            Ok(m) => m,
            Err(e) => return Reply::Text(422, format!("the manifest does not parse: {e}\n")),
        };
        if let Err(e) = m.validate() {
            return Reply::Text(422, format!("the manifest is inconsistent: {e:#}\n"));
        }
        // Chunks before the manifest: make the pushed chunks durable, then insist on all.
        let store = self.repo.store();
        if let Err(e) = store.flush() {
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
        match store
            .put(&snapshot_key(id), body)
            .and_then(|_| store.flush())
        {
            Ok(()) => Reply::Text(201, "stored\n".into()),
            Err(e) => Reply::Text(500, format!("{e:#}\n")),
        }
    }

    /// Answer one request: (status, content type, body, extra header).
    fn answer(&self, req: &Request) -> (u16, &'static str, Vec<u8>) {
        match self.route(req) {
            Reply::File(path) => match std::fs::read(&path) {
                Ok(data) => (200, "application/octet-stream", data),
                Err(_) => (404, "text/plain", b"not found\n".to_vec()),
            },
            Reply::Bytes(code, body, kind) => (code, kind, body),
            Reply::Text(code, text) => (code, "text/plain", text.into_bytes()),
        }
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
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

/// Read one request; None when the client closed the connection between requests.
pub(crate) fn read_request(r: &mut impl BufRead, body_limit: u64) -> Result<Option<Request>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        anyhow::bail!("bad request line {line:?}");
    };
    let mut headers = Vec::new();
    let mut head_bytes = line.len();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            anyhow::bail!("connection closed in the headers");
        }
        head_bytes += h.len();
        anyhow::ensure!(head_bytes < 64 * 1024, "request headers over 64 KiB");
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut req = Request {
        method: method.to_string(),
        path: path.to_string(),
        headers,
        body: Vec::new(),
    };
    anyhow::ensure!(
        req.header("Transfer-Encoding").is_none(),
        "chunked request bodies are not accepted"
    );
    let len: u64 = req
        .header("Content-Length")
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(0);
    anyhow::ensure!(len <= body_limit, "body of {len} bytes is over the limit");
    r.take(len).read_to_end(&mut req.body)?;
    anyhow::ensure!(req.body.len() as u64 == len, "the body ended early");
    Ok(Some(req))
}

/// Serve requests on one connection until the client closes it, stops, or idles out.
fn serve_connection<S: Read + Write>(
    stream: S,
    peer: &str,
    handler: &Handler,
    stop: &AtomicBool,
) -> Result<()> {
    let mut r = BufReader::with_capacity(64 * 1024, stream);
    let limit = (1u64 << 30).max(2 * handler.repo.config.chunker.max_size as u64 + 4096);
    while !stop.load(Ordering::Relaxed) {
        let Some(req) = read_request(&mut r, limit)? else {
            return Ok(());
        };
        let start = Instant::now();
        let (code, kind, body) = handler.answer(&req);
        let close = req
            .header("Connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let mut out = format!(
            "HTTP/1.1 {code} {}\r\nServer: lifeboat\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n{}{}\r\n",
            reason(code),
            body.len(),
            if code == 401 { "WWW-Authenticate: Bearer\r\n" } else { "" },
            if close { "Connection: close\r\n" } else { "" },
        )
        .into_bytes();
        if req.method != "HEAD" {
            out.extend_from_slice(&body);
        }
        let stream = r.get_mut();
        stream.write_all(&out)?;
        stream.flush()?;
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        log::info!(
            "{peer} {} {} {code} {} {ms:.1}ms",
            req.method,
            req.path,
            body.len()
        );
        if close {
            break;
        }
    }
    Ok(())
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
    let spec = RepoSpec::at(RepoLocation::Dir(args.repo.clone()));
    let repo = Repository::open(&spec)?;
    let token = args
        .write_token_file
        .as_deref()
        .map(load_token)
        .transpose()?;
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
        if token.is_some() {
            "writes with the token"
        } else {
            "read-only"
        }
    );
    std::io::stdout().flush().ok();
    if let Some(l) = nbd {
        let exports = Arc::new(crate::nbd::server::Exports::new(Arc::new(
            Repository::open(&spec)?,
        )));
        std::thread::spawn(move || crate::nbd::server::run(l, exports));
    }
    let handler = Arc::new(Handler {
        repo,
        root: args.repo.clone(),
        token,
    });
    accept(&listener, &handler, tls, &stop, args.threads.max(1));
    handler
        .repo
        .store()
        .flush()
        .context("make the last writes durable")?;
    Ok(())
}

/// Take connections until `stop`, each on a thread of its own, at most `max` at once.
fn accept(
    listener: &TcpListener,
    handler: &Arc<Handler>,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: &Arc<AtomicBool>,
    max: usize,
) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let Ok(mut sock) = conn else { continue };
        let peer = sock.peer_addr().map(|a| a.to_string()).unwrap_or_default();
        // One write per reply, sent at once: no waiting on the client's delayed ACK.
        let _ = sock.set_nodelay(true);
        let _ = sock.set_read_timeout(Some(Duration::from_secs(30)));
        if active.load(Ordering::Relaxed) >= max {
            let _ = sock.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            log::info!("{peer}: {max} connections already served; refused");
            continue;
        }
        active.fetch_add(1, Ordering::Relaxed);
        let (handler, stop, active, tls) =
            (handler.clone(), stop.clone(), active.clone(), tls.clone());
        let gone = active.clone();
        let started = std::thread::Builder::new()
            .name("http".into())
            .spawn(move || {
                let result = match tls {
                    Some(cfg) => rustls::ServerConnection::new(cfg)
                        .map_err(anyhow::Error::new)
                        .and_then(|c| {
                            serve_connection(
                                rustls::StreamOwned::new(c, sock),
                                &peer,
                                &handler,
                                &stop,
                            )
                        }),
                    None => serve_connection(sock, &peer, &handler, &stop),
                };
                if let Err(e) = result {
                    log::info!("{peer}: {e:#}");
                }
                active.fetch_sub(1, Ordering::Relaxed);
            });
        // No thread for this connection: it is closed (dropped with the closure); the
        // server goes on.
        if let Err(e) = started {
            gone.fetch_sub(1, Ordering::Relaxed);
            log::warn!("connection refused: no thread for it ({e})");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::{ChunkerParams, Repository};

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
        assert_eq!(r.body, b"hello");
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
            token: token.map(str::to_string),
        }
    }

    fn put(path: String, body: Vec<u8>, auth: Option<&str>) -> Request {
        Request {
            method: "PUT".into(),
            path,
            headers: auth
                .map(|t| vec![("Authorization".to_string(), format!("Bearer {t}"))])
                .unwrap_or_default(),
            body,
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
            method: "GET".into(),
            path: "/config.json".into(),
            headers: vec![],
            body: vec![],
        };
        let (code, _, body) = h.answer(&get);
        assert_eq!(code, 200);
        assert!(String::from_utf8(body)
            .unwrap()
            .contains("lifeboat-repository"));
    }
}
