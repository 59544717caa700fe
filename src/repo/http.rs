//! The HTTP backend: a repository behind `lifeboat serve` or any static web server.
//!
//! Reads are plain GETs (and HEADs for sizes); listings come from the server's directory
//! index (the links in an HTML page, as `lifeboat serve`, `python3 -m http.server`,
//! nginx's autoindex and Apache give). Writes are PUTs with a bearer token, which only
//! `lifeboat serve` accepts. Connection errors, cut transfers, 5xx and 429 are retried with
//! exponential backoff.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use super::store::{Store, StoreError};
use crate::io::{timeouts, LimitedReader};
use crate::location::HttpUrl;

const ATTEMPTS: u32 = 7;
/// Requests kept in flight: each mostly waits on the network.
const REQUESTS_IN_FLIGHT: usize = 8;
/// Largest body read whole into memory (a directory listing, a chunk); manifests are
/// streamed (`open`) with their own limit.
const MAX_BODY: u64 = 1 << 30;

pub struct HttpStore {
    base: HttpUrl,
    agent: ureq::Agent,
    token: Option<String>,
}

/// A rustls client config trusting the certificates in a PEM file (and nothing else).
fn tls_with_ca(path: &Path) -> Result<Arc<rustls::ClientConfig>> {
    let pem = std::fs::read(path).with_context(|| format!("read CA file {}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.with_context(|| format!("parse {}", path.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("add a CA from {}", path.display()))?;
    }
    if roots.is_empty() {
        bail!("{} holds no PEM certificate", path.display());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

enum Attempt<T> {
    Done(T),
    Retry(String),
    Fail(StoreError),
}

impl HttpStore {
    pub fn new(url: &HttpUrl, cacert: Option<&Path>, token: Option<String>) -> Result<HttpStore> {
        let base = url.clone();
        // Each request has its own overall deadline (`timeouts::request_deadline`, which
        // in ureq 2 also bounds each read) and bodies a minimum rate, so a server that
        // trickles its answer cannot hold a restore by sending a byte now and then.
        let mut b = ureq::AgentBuilder::new()
            .timeout_connect(timeouts::connect())
            .timeout_read(timeouts::io())
            .timeout_write(timeouts::io())
            .max_idle_connections_per_host(64)
            .user_agent(concat!("lifeboat/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = cacert {
            b = b.tls_config(tls_with_ca(ca)?);
        }
        Ok(HttpStore {
            base,
            agent: b.build(),
            token,
        })
    }

    fn url(&self, key: &str) -> String {
        self.base.join(key)
    }

    /// Run one request with retries; `f` says what each attempt came to.
    fn with_retries<T>(&self, key: &str, f: impl Fn() -> Attempt<T>) -> Result<T, StoreError> {
        let mut last = String::new();
        let start = std::time::Instant::now();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 && start.elapsed() > timeouts::retry_budget() {
                return Err(StoreError::Other {
                    location: self.url(key),
                    cause: anyhow!(
                        "gave up after {attempt} attempt{} in {} s: {last}",
                        if attempt == 1 { "" } else { "s" },
                        start.elapsed().as_secs()
                    ),
                });
            }
            if attempt > 0 {
                let ms = (100u64 << attempt.min(6)).min(5000);
                log::info!("{}: {last}; retrying in {ms} ms", self.url(key));
                std::thread::sleep(Duration::from_millis(ms));
            }
            match f() {
                Attempt::Done(v) => return Ok(v),
                Attempt::Fail(e) => return Err(e),
                Attempt::Retry(why) => last = why,
            }
        }
        Err(StoreError::Other {
            location: self.url(key),
            cause: anyhow!("gave up after {ATTEMPTS} attempts: {last}"),
        })
    }

    /// Send a GET and take its head: the body (at most `limit` bytes, at the minimum
    /// rate) and its announced length. A body announced over `limit` is refused unread.
    #[allow(clippy::type_complexity)]
    fn start_get<T>(
        &self,
        key: &str,
        limit: u64,
    ) -> Result<(Box<dyn Read + Send + 'static>, Option<u64>), Attempt<T>> {
        let r = self
            .agent
            .get(&self.url(key))
            .timeout(timeouts::request_deadline(limit))
            .call()
            .map_err(|e| self.classify(key, e))?;
        let expected: Option<u64> = r.header("Content-Length").and_then(|v| v.parse().ok());
        if expected.is_some_and(|n| n > limit) {
            return Err(Attempt::Fail(super::store::too_large(self.url(key), limit)));
        }
        let body = LimitedReader::new(r.into_reader(), limit, timeouts::io(), timeouts::MIN_RATE);
        Ok((Box::new(body), expected))
    }

    fn classify<T>(&self, key: &str, e: ureq::Error) -> Attempt<T> {
        match e {
            ureq::Error::Status(404, _) => Attempt::Fail(StoreError::NotFound {
                location: self.url(key),
            }),
            ureq::Error::Status(code, _) if code >= 500 || code == 429 => {
                Attempt::Retry(format!("HTTP {code}"))
            }
            ureq::Error::Status(code, r) => {
                let body = r.into_string().unwrap_or_default();
                Attempt::Fail(StoreError::Other {
                    location: self.url(key),
                    cause: anyhow!("HTTP {code}: {}", body.trim()),
                })
            }
            // A certificate the client does not trust, a bad URL or an unknown host do not
            // get better by waiting; a refused or cut connection may.
            ureq::Error::Transport(t)
                if t.to_string().contains("certificate")
                    || matches!(
                        t.kind(),
                        ureq::ErrorKind::InvalidUrl
                            | ureq::ErrorKind::UnknownScheme
                            | ureq::ErrorKind::Dns
                    ) =>
            {
                Attempt::Fail(StoreError::Other {
                    location: self.url(key),
                    cause: anyhow!("{t}"),
                })
            }
            ureq::Error::Transport(t) => Attempt::Retry(transport_error(&t)),
        }
    }
}

impl Store for HttpStore {
    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        self.get_at_most(key, MAX_BODY)
    }

    fn get_at_most(&self, key: &str, limit: u64) -> Result<Vec<u8>, StoreError> {
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

    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        let Some(last) = offset.checked_add(len).and_then(|e| e.checked_sub(1)) else {
            return Ok(Vec::new());
        };
        let range = format!("bytes={offset}-{last}");
        self.with_retries(key, || {
            let r = match self
                .agent
                .get(&self.url(key))
                .timeout(timeouts::request_deadline(len))
                .set("Range", &range)
                .call()
            {
                Ok(r) => r,
                Err(e) => return self.classify(key, e),
            };
            // 206: the range asked for; 200: a server that ignores ranges sends the
            // whole file, of which the range is kept (read no further than its end).
            let partial = r.status() == 206;
            let wanted = format!("bytes {offset}-{last}/");
            if partial
                && !r
                    .header("Content-Range")
                    .is_some_and(|v| v.starts_with(&wanted))
            {
                return Attempt::Fail(StoreError::Other {
                    location: self.url(key),
                    cause: anyhow!(
                        "asked for {range}, sent {:?}",
                        r.header("Content-Range").unwrap_or("no Content-Range")
                    ),
                });
            }
            let skip = if partial { 0 } else { offset };
            let whole: Option<u64> = r.header("Content-Length").and_then(|v| v.parse().ok());
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
                r.into_reader(),
                skip + len,
                timeouts::io(),
                timeouts::MIN_RATE,
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

    fn open(&self, key: &str, limit: u64) -> Result<Box<dyn Read + Send + '_>, StoreError> {
        let (body, _) = self.with_retries(key, || match self.start_get(key, limit) {
            Ok(started) => Attempt::Done(started),
            Err(a) => a,
        })?;
        Ok(body)
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        let head = self
            .agent
            .head(&self.url(key))
            .timeout(timeouts::request_deadline(0));
        let r = self.with_retries(key, || match head.clone().call() {
            Ok(r) => Attempt::Done(Some(
                r.header("Content-Length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            )),
            Err(ureq::Error::Status(404, _)) => Attempt::Done(None),
            Err(e) => self.classify(key, e),
        });
        r.map_err(anyhow::Error::new)
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        let Some(token) = &self.token else {
            bail!(
                "{}: writing to an HTTP repository needs a token (--token-file)",
                self.url(key)
            );
        };
        let auth = format!("Bearer {token}");
        self.with_retries(key, || {
            match self
                .agent
                .put(&self.url(key))
                .timeout(timeouts::request_deadline(data.len() as u64))
                .set("Authorization", &auth)
                .send_bytes(data)
            {
                Ok(_) => Attempt::Done(()),
                Err(e) => self.classify(key, e),
            }
        })
        .map_err(anyhow::Error::new)
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        let key = format!("{dir}/");
        let page = match self.get(&key) {
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

    fn location(&self, key: &str) -> String {
        self.url(key)
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn concurrency(&self) -> usize {
        REQUESTS_IN_FLIGHT.max(crate::io::parallel::cores())
    }
}

/// A transport error without the URL (the caller names it) or repeats: "network error:
/// error encountered in the status line: timed out reading response".
fn transport_error(t: &ureq::Transport) -> String {
    let mut whole = t.kind().to_string();
    for part in [
        t.message().map(str::to_string),
        std::error::Error::source(t).map(|c| c.to_string()),
    ]
    .into_iter()
    .flatten()
    {
        whole = format!("{whole}: {part}");
    }
    let mut parts: Vec<&str> = whole.split(": ").collect();
    parts.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
    parts.join(": ").to_lowercase()
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
