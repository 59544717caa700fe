//! The HTTP backend: a repository behind `lifeboat serve` or any static web server.
//!
//! Reads are plain GETs (and HEADs for sizes); listings come from the server's directory
//! index (the links in an HTML page, as `lifeboat serve`, `python3 -m http.server`,
//! nginx's autoindex and Apache give). Writes are PUTs with a bearer token, which only
//! `lifeboat serve` accepts. Connection errors, cut transfers, 5xx and 429 are retried with
//! exponential backoff.

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

mod answer;

use super::object::{Dir, Object};
use super::store::{Store, StoreError};
use crate::io::bandwidth::{self, Paced};
use crate::io::{interrupt, timeouts, LimitedReader};
use crate::location::{HttpUrl, S3Url};
use rusty_s3::S3Action;

const ATTEMPTS: u32 = 7;
/// Requests kept in flight: each mostly waits on the network.
const REQUESTS_IN_FLIGHT: usize = 8;
/// Largest body read whole into memory (a directory listing, a chunk); manifests are
/// streamed (`open`) with their own limit.
const MAX_BODY: u64 = 1 << 30;

pub struct HttpStore {
    addressing: Addressing,
    agent: ureq::Agent,
    /// Set once a ranged GET came back whole (200): the server has no Range support.
    ranges_ignored: AtomicBool,
    /// Requests sent, retries included.
    requests: AtomicU64,
    /// Set once the server has answered anything: before that, a refused connection is a
    /// wrong URL or a server that is not running, not worth waiting for.
    reached: AtomicBool,
}

/// How requests are addressed and authorised (one per store: its size does not matter).
#[allow(clippy::large_enum_variant)]
enum Addressing {
    /// `lifeboat serve` or a static web server: URLs under a base; writes with a token.
    Plain {
        base: HttpUrl,
        token: Option<String>,
    },
    /// An S3 bucket (path-style, as self-hosted stores want): every request a URL
    /// presigned with AWS Signature Version 4.
    S3 {
        bucket: rusty_s3::Bucket,
        credentials: rusty_s3::Credentials,
        url: S3Url,
    },
}

/// What a request does, for presigning.
#[derive(Clone, Copy)]
enum Verb {
    Get,
    Head,
    Put,
    Delete,
}

/// How long a presigned URL stays valid: longer than any request may take.
const PRESIGNED_FOR: Duration = Duration::from_secs(3600);

/// A TLS client config trusting the certificates in a PEM file (and nothing else).
fn tls_with_ca(path: &Path) -> Result<ureq::tls::TlsConfig> {
    let pem = std::fs::read(path).with_context(|| format!("read CA file {}", path.display()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        if let ureq::tls::PemItem::Certificate(c) =
            item.with_context(|| format!("parse {}", path.display()))?
        {
            certs.push(c);
        }
    }
    if certs.is_empty() {
        bail!("{} holds no PEM certificate", path.display());
    }
    Ok(ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
        .build())
}

/// A response, whatever its status (statuses are judged by `HttpStore::judge`).
type Answer = ureq::http::Response<ureq::Body>;

/// A header's value, if it is text.
fn header<'a>(r: &'a Answer, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

enum Attempt<T> {
    Done(T),
    /// Failed in a way that may pass: try again (a few times).
    Retry(String),
    /// The server is busy and asked to be asked again after this long.
    Busy(Duration, String),
    Fail(StoreError),
}

/// `d` and up to half of it again, at random, so that clients sent away together do not
/// all come back together.
fn jittered(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos() as u64)
        .unwrap_or(0);
    let half = d.as_millis() as u64 / 2;
    d + Duration::from_millis(nanos % (half + 1))
}

impl HttpStore {
    /// GET `key` whole: an object, or a directory's listing page.
    fn fetch(&self, key: &str, limit: u64) -> Result<Vec<u8>, StoreError> {
        let limit = limit.min(MAX_BODY);
        self.with_retries(key, || match self.start_get(key, limit) {
            Ok((mut body, expected)) => {
                // Sized from the header: growing by doubling would leave every chunk buffer
                // up to twice its size.
                let mut buf = Vec::with_capacity(expected.unwrap_or(0) as usize);
                match body.read_to_end(&mut buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                        Attempt::Fail(super::store::too_large(self.url(key), limit))
                    }
                    Err(e) => Attempt::Retry(format!("transfer cut: {e}")),
                    Ok(n) if expected.is_some_and(|x| x != n as u64) => Attempt::Retry(format!(
                        "transfer cut after {n} of {} bytes",
                        expected.unwrap_or(0)
                    )),
                    Ok(_) => Attempt::Done(buf),
                }
            }
            Err(a) => a,
        })
    }

    pub fn new(url: &HttpUrl, cacert: Option<&Path>, token: Option<String>) -> Result<HttpStore> {
        let addressing = Addressing::Plain {
            base: url.clone(),
            token,
        };
        Ok(HttpStore {
            addressing,
            agent: Self::agent(cacert)?,
            ranges_ignored: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            reached: AtomicBool::new(false),
        })
    }

    /// A bucket of an S3 store at `endpoint` (path-style addressing), with credentials.
    pub fn s3(
        url: &S3Url,
        endpoint: &str,
        region: &str,
        key_id: &str,
        secret: &str,
        cacert: Option<&Path>,
    ) -> Result<HttpStore> {
        let endpoint: url::Url = endpoint
            .parse()
            .with_context(|| format!("S3 endpoint {endpoint:?} is not a URL"))?;
        let bucket = rusty_s3::Bucket::new(
            endpoint,
            rusty_s3::UrlStyle::Path,
            url.bucket.clone(),
            region.to_string(),
        )
        .map_err(|e| anyhow!("S3 bucket {}: {e}", url.bucket))?;
        let addressing = Addressing::S3 {
            bucket,
            credentials: rusty_s3::Credentials::new(key_id, secret),
            url: url.clone(),
        };
        Ok(HttpStore {
            addressing,
            agent: Self::agent(cacert)?,
            ranges_ignored: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            reached: AtomicBool::new(false),
        })
    }

    fn agent(cacert: Option<&Path>) -> Result<ureq::Agent> {
        // A server has `timeouts::answer` to begin its answer, whatever the body's size,
        // and then `timeouts::body` for the body, which must also keep the minimum rate
        // (`LimitedReader`): a silent server costs seconds, not the time a long body
        // would be allowed, and a trickling one cannot hold a restore by sending a byte
        // now and then.
        let mut b = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(timeouts::connect()))
            .timeout_send_request(Some(timeouts::io()))
            .timeout_recv_response(Some(timeouts::answer()))
            .timeout_recv_body(Some(timeouts::body(MAX_BODY)))
            .timeout_send_body(Some(timeouts::body(MAX_BODY)))
            .max_idle_connections(64)
            .max_idle_connections_per_host(64)
            .user_agent(concat!("lifeboat/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = cacert {
            b = b.tls_config(tls_with_ca(ca)?);
        }
        Ok(b.build().into())
    }

    /// Where `key` is, for messages: a URL, or s3://BUCKET/PREFIX/KEY.
    fn url(&self, key: &str) -> String {
        match &self.addressing {
            Addressing::Plain { base, .. } => base.join(key),
            Addressing::S3 { url, .. } => format!("s3://{}/{}", url.bucket, url.key(key)),
        }
    }

    /// The URL a request for `key` goes to.
    fn request_url(&self, verb: Verb, key: &str) -> String {
        match &self.addressing {
            Addressing::Plain { base, .. } => base.join(key),
            Addressing::S3 {
                bucket,
                credentials,
                url,
            } => {
                let object = url.key(key);
                let c = Some(credentials);
                match verb {
                    Verb::Get => bucket.get_object(c, &object).sign(PRESIGNED_FOR),
                    Verb::Head => bucket.head_object(c, &object).sign(PRESIGNED_FOR),
                    Verb::Put => bucket.put_object(c, &object).sign(PRESIGNED_FOR),
                    Verb::Delete => bucket.delete_object(c, &object).sign(PRESIGNED_FOR),
                }
                .to_string()
            }
        }
    }

    /// Run one request with retries; `f` says what each attempt came to. Failures are
    /// tried again with backoff and jitter, a few times within the retry budget; a
    /// server that says it is busy (503 or 429 with `Retry-After`) is waited for as it
    /// asks, within the longer overload budget, without using up the attempts.
    fn with_retries<T>(&self, key: &str, f: impl Fn() -> Attempt<T>) -> Result<T, StoreError> {
        let mut last = String::new();
        let start = std::time::Instant::now();
        let mut failures = 0u32;
        let mut busy: Option<Duration> = None;
        let give_up = |why: String| StoreError::Other {
            location: self.url(key),
            cause: anyhow!(why),
        };
        loop {
            if let Some(asked) = busy.take() {
                if start.elapsed() + asked > timeouts::overload_budget() {
                    return Err(give_up(format!(
                        "the server stayed busy for {} s: {last}",
                        start.elapsed().as_secs()
                    )));
                }
                log::warn!(
                    "{}: {last}; waiting {} as the server asks (until {}; then it gives up; Ctrl-C stops)",
                    self.url(key),
                    crate::time::exact(asked),
                    crate::time::shown_at(start + timeouts::overload_budget()),
                );
                interrupt::sleep(jittered(asked)).map_err(|i| give_up(i.to_string()))?;
            } else if failures > 0 {
                if start.elapsed() > timeouts::retry_budget() {
                    return Err(give_up(format!(
                        "gave up after {failures} attempt{} in {} s: {last}",
                        if failures == 1 { "" } else { "s" },
                        start.elapsed().as_secs()
                    )));
                }
                // Exponential, with jitter so that many clients told to slow down (S3's
                // 503 SlowDown) do not all come back at once.
                let wait = jittered(Duration::from_millis((50u64 << failures.min(7)).min(2500)));
                log::warn!(
                    "{}: {last}; retrying in {} (attempt {} of {ATTEMPTS}, at most until {}; --io-timeout sets how long; Ctrl-C stops)",
                    self.url(key),
                    crate::time::exact(wait),
                    failures + 1,
                    crate::time::shown_at(start + timeouts::retry_budget()),
                );
                interrupt::sleep(wait).map_err(|i| give_up(i.to_string()))?;
            }
            self.requests.fetch_add(1, Ordering::Relaxed);
            match f() {
                Attempt::Done(v) => return Ok(v),
                Attempt::Fail(e) => return Err(e),
                Attempt::Busy(asked, why) => {
                    last = why;
                    busy = Some(asked);
                }
                Attempt::Retry(why) => {
                    last = why;
                    failures += 1;
                    if failures >= ATTEMPTS {
                        return Err(give_up(format!(
                            "gave up after {ATTEMPTS} attempts: {last}"
                        )));
                    }
                }
            }
        }
    }

    /// Send a GET and take its head: the body (at most `limit` bytes, at the minimum
    /// rate) and its announced length. A body announced over `limit` is refused unread.
    #[allow(clippy::type_complexity)]
    fn start_get<T>(
        &self,
        key: &str,
        limit: u64,
    ) -> Result<(Box<dyn Read + Send + 'static>, Option<u64>), Attempt<T>> {
        let sent = self
            .agent
            .get(&self.request_url(Verb::Get, key))
            .config()
            .timeout_recv_body(Some(timeouts::body(limit)))
            .build()
            .call();
        let r = self.judge(key, sent)?;
        let expected: Option<u64> = header(&r, "Content-Length").and_then(|v| v.parse().ok());
        if expected.is_some_and(|n| n > limit) {
            return Err(Attempt::Fail(super::store::too_large(self.url(key), limit)));
        }
        let body = LimitedReader::new(
            Paced(r.into_body().into_reader()),
            limit,
            timeouts::io(),
            timeouts::min_rate(),
        );
        Ok((Box::new(body), expected))
    }

    /// The names under `dir/` in a bucket: objects, and the next level of "directories"
    /// (common prefixes), page by page.
    fn list_s3(&self, dir: &str) -> Result<Vec<String>> {
        let Addressing::S3 {
            bucket,
            credentials,
            url,
        } = &self.addressing
        else {
            unreachable!("only an S3 store lists this way")
        };
        let prefix = url.key(&format!("{dir}/"));
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..100_000 {
            let mut action = bucket.list_objects_v2(Some(credentials));
            action.with_prefix(prefix.as_str());
            action.with_delimiter("/");
            if let Some(t) = &token {
                action.with_continuation_token(t.as_str());
            }
            let signed = action.sign(PRESIGNED_FOR).to_string();
            let key = format!("{dir}/");
            let page = self.with_retries(&key, || {
                const MAX_PAGE: u64 = 16 << 20;
                let sent = self
                    .agent
                    .get(&signed)
                    .config()
                    .timeout_recv_body(Some(timeouts::body(MAX_PAGE)))
                    .build()
                    .call();
                let r = match self.judge(&key, sent) {
                    Ok(r) => r,
                    Err(a) => return a,
                };
                let mut body = String::new();
                let mut reader = LimitedReader::new(
                    Paced(r.into_body().into_reader()),
                    MAX_PAGE,
                    timeouts::io(),
                    timeouts::min_rate(),
                );
                match reader.read_to_string(&mut body) {
                    Ok(_) => Attempt::Done(body),
                    Err(e) => Attempt::Retry(format!("transfer cut: {e}")),
                }
            })?;
            let parsed = rusty_s3::actions::ListObjectsV2::parse_response(&page)
                .map_err(|e| anyhow!("{}: a listing that does not parse: {e}", self.url(&key)))?;
            for c in &parsed.contents {
                names.extend(c.key.strip_prefix(prefix.as_str()).map(str::to_string));
            }
            for p in &parsed.common_prefixes {
                if let Some(n) = p.prefix.strip_prefix(prefix.as_str()) {
                    names.push(n.trim_end_matches('/').to_string());
                }
            }
            match parsed.next_continuation_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        names.retain(|n| !n.is_empty() && !n.contains('/'));
        names.sort();
        names.dedup();
        Ok(names)
    }
}

impl Store for HttpStore {
    fn get(&self, object: &Object) -> Result<Vec<u8>, StoreError> {
        self.get_at_most(object, MAX_BODY)
    }

    fn get_at_most(&self, object: &Object, limit: u64) -> Result<Vec<u8>, StoreError> {
        self.fetch(&object.key(), limit)
    }

    fn get_range(&self, object: &Object, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        let key = &object.key();
        let Some(last) = offset.checked_add(len).and_then(|e| e.checked_sub(1)) else {
            return Ok(Vec::new());
        };
        let range = format!("bytes={offset}-{last}");
        self.with_retries(key, || {
            let sent = self
                .agent
                .get(&self.request_url(Verb::Get, key))
                .header("Range", &range)
                .config()
                .timeout_recv_body(Some(timeouts::body(len)))
                .build()
                .call();
            let r = match self.judge(key, sent) {
                Ok(r) => r,
                Err(a) => return a,
            };
            // 206: the range asked for; 200: a server that ignores ranges sends the
            // whole file, of which the range is kept (read no further than its end).
            let partial = r.status().as_u16() == 206;
            let wanted = format!("bytes {offset}-{last}/");
            if partial && !header(&r, "Content-Range").is_some_and(|v| v.starts_with(&wanted)) {
                return Attempt::Fail(StoreError::Other {
                    location: self.url(key),
                    cause: anyhow!(
                        "asked for {range}, sent {:?}",
                        header(&r, "Content-Range").unwrap_or("no Content-Range")
                    ),
                });
            }
            if !partial && !self.ranges_ignored.swap(true, Ordering::Relaxed) {
                log::warn!(
                    "{}: the server ignores Range requests, so packs are read whole (and \
                     only while a few fit in memory); lifeboat serve, nginx or S3 read only \
                     what a restore needs",
                    self.url("")
                );
            }
            let skip = if partial { 0 } else { offset };
            let whole: Option<u64> = header(&r, "Content-Length").and_then(|v| v.parse().ok());
            if !partial && whole.is_some_and(|n| n < offset + len) {
                return Attempt::Fail(StoreError::Other {
                    location: self.url(key),
                    cause: anyhow!(
                        "{} bytes, too short for {len} bytes at {offset}",
                        whole.unwrap_or(0)
                    ),
                });
            }
            let mut body = LimitedReader::new(
                Paced(r.into_body().into_reader()),
                skip + len,
                timeouts::io(),
                timeouts::min_rate(),
            );
            if skip > 0 {
                if let Err(e) = std::io::copy(&mut (&mut body).take(skip), &mut std::io::sink()) {
                    return Attempt::Retry(format!("transfer cut: {e}"));
                }
            }
            let mut buf = vec![0u8; len as usize];
            match body.read_exact(&mut buf) {
                Ok(()) => Attempt::Done(buf),
                Err(e) => Attempt::Retry(format!("transfer cut: {e}")),
            }
        })
    }

    fn open(&self, object: &Object, limit: u64) -> Result<Box<dyn Read + Send + '_>, StoreError> {
        let key = &object.key();
        let (body, _) = self.with_retries(key, || match self.start_get(key, limit) {
            Ok(started) => Attempt::Done(started),
            Err(a) => a,
        })?;
        Ok(body)
    }

    fn size(&self, object: &Object) -> Result<Option<u64>> {
        let key = &object.key();
        let url = self.request_url(Verb::Head, key);
        let r = self.with_retries(key, || match self.agent.head(&url).call() {
            Ok(r) if r.status().as_u16() == 404 => Attempt::Done(None),
            sent => match self.judge(key, sent) {
                Ok(r) => Attempt::Done(Some(
                    header(&r, "Content-Length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                )),
                Err(a) => a,
            },
        });
        r.map_err(anyhow::Error::new)
    }

    fn put(&self, object: &Object, data: &[u8]) -> Result<()> {
        let key = &object.key();
        let auth = match &self.addressing {
            Addressing::Plain { token: Some(t), .. } => Some(format!("Bearer {t}")),
            Addressing::Plain { token: None, .. } => bail!(
                "this client may only read: writing to a server needs its token (--token-file \
                 or LIFEBOAT_TOKEN_FILE)"
            ),
            Addressing::S3 { .. } => None,
        };
        self.with_retries(key, || {
            bandwidth::upload(data.len() as u64);
            let mut req = self.agent.put(&self.request_url(Verb::Put, key));
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            let sent = req
                .config()
                .timeout_send_body(Some(timeouts::body(data.len() as u64)))
                .build()
                .send(data);
            match self.judge(key, sent) {
                Ok(_) => Attempt::Done(()),
                Err(a) => a,
            }
        })
        .map_err(without_location)
    }

    fn writable(&self) -> bool {
        !matches!(self.addressing, Addressing::Plain { token: None, .. })
    }

    fn delete(&self, object: &Object) -> Result<()> {
        let key = &object.key();
        let auth = match &self.addressing {
            Addressing::Plain { token: Some(t), .. } => Some(format!("Bearer {t}")),
            Addressing::Plain { token: None, .. } => bail!(
                "this client may only read: deleting from a server needs its admin token \
                 (--token-file or LIFEBOAT_TOKEN_FILE)"
            ),
            Addressing::S3 { .. } => None,
        };
        let done = self.with_retries(key, || {
            let mut req = self.agent.delete(&self.request_url(Verb::Delete, key));
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            match self.judge(key, req.call()) {
                Ok(_) => Attempt::Done(()),
                Err(a) => a,
            }
        });
        match done {
            Ok(()) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(without_location(e)),
        }
    }

    fn list(&self, dir: &Dir) -> Result<Vec<String>> {
        let dir = &dir.path();
        if let Addressing::S3 { .. } = self.addressing {
            return self.list_s3(dir);
        }
        let key = format!("{dir}/");
        let page = match self.fetch(&key, MAX_BODY) {
            Ok(p) => p,
            Err(StoreError::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e).context("list"),
        };
        let page = String::from_utf8_lossy(&page);
        // Entries are the page's relative links: files, and directories with a trailing
        // slash; parent links, absolute links, queries and other hosts are not entries.
        let mut names: Vec<String> = links(&page)
            .into_iter()
            .filter(|n| {
                !n.starts_with('?') && !n.starts_with('/') && !n.contains("..") && !n.contains(':')
            })
            .map(|n| n.trim_end_matches('/').to_string())
            .filter(|n| !n.is_empty() && !n.contains('/'))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn flush(&self) -> Result<()> {
        // The server makes writes durable before it answers a manifest's PUT.
        Ok(())
    }

    fn location(&self, object: &Object) -> String {
        self.url(&object.key())
    }

    fn dir_location(&self, dir: &Dir) -> String {
        self.url(&format!("{}/", dir.path()))
    }

    fn ignores_ranges(&self) -> bool {
        self.ranges_ignored.load(Ordering::Relaxed)
    }

    fn requests(&self) -> Option<u64> {
        Some(self.requests.load(Ordering::Relaxed))
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn concurrency(&self) -> usize {
        REQUESTS_IN_FLIGHT.max(crate::io::parallel::cores())
    }
}

/// A write's error without the object's location, which its caller names.
fn without_location(e: StoreError) -> anyhow::Error {
    match e {
        StoreError::Other { cause, .. } => cause,
        e @ StoreError::NotFound { .. } => anyhow::Error::new(e),
    }
}

/// The targets of `href="..."` links in an HTML page, percent-decoded.
fn links(page: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = page;
    while let Some(i) = rest.find("href=") {
        rest = &rest[i + 5..];
        let quote = rest.chars().next().unwrap_or(' ');
        let (value, after) = if quote == '"' || quote == '\'' {
            match rest[1..].find(quote) {
                Some(j) => (&rest[1..1 + j], &rest[2 + j..]),
                None => break,
            }
        } else {
            let j = rest
                .find(|c: char| c.is_whitespace() || c == '>')
                .unwrap_or(rest.len());
            (&rest[..j], &rest[j..])
        };
        out.push(percent_decode(value));
        rest = after;
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn links_from_directory_pages() {
        let python = r#"<ul><li><a href="abc.json">abc.json</a></li><li><a href='x%20y'>x</a></li><a href=plain>p</a></ul>"#;
        assert_eq!(super::links(python), ["abc.json", "x y", "plain"]);
    }
}
