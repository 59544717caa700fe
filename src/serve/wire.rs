//! HTTP/1.1 on the wire, as `lifeboat serve` speaks it: a request's head (64 KiB at
//! most) and body, and a reply (a file whole or in part, with its range and caching
//! headers, or a short text) written back. What a request may do is `routes`'s business.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::pool;
use crate::repo::dir::Spooled;

/// A request, its body read.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) head: Head,
    pub(crate) body: Body,
}

/// A request's body: in memory (a chunk, at most the repository's chunk limit), or
/// spooled to a temporary file in the repository (a manifest, which may be large).
#[derive(Debug)]
pub(crate) enum Body {
    Bytes(Vec<u8>),
    File(Spooled),
}

impl std::ops::Deref for Request {
    type Target = Head;
    fn deref(&self) -> &Head {
        &self.head
    }
}

/// What a request is answered with.
pub(crate) enum Reply {
    /// A file, whole or (with the request's Range header) in part; with an ETag when
    /// its name is its content's hash (it never changes: caches may keep it for good).
    File(PathBuf, Option<String>, Option<String>),
    Bytes(u16, Vec<u8>, &'static str),
    Text(u16, String),
}

pub(crate) fn reason(code: u16) -> &'static str {
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
pub(crate) const MAX_HEAD: u64 = pool::MAX_HEAD as u64;
/// A request body must arrive at least this fast (after the head's deadline).
pub(crate) const MIN_BODY_RATE: u64 = 64 << 10;
/// A request's line and headers.
#[derive(Debug)]
pub struct Head {
    pub(crate) method: String,
    pub(crate) path: String,
    /// HTTP/1.0: the connection closes after the reply unless the client asks otherwise.
    pub(crate) http10: bool,
    pub(crate) headers: Vec<(String, String)>,
}

impl Head {
    /// The Range header, if any.
    pub(crate) fn range(&self) -> Option<&str> {
        self.header("Range")
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the connection stays open after this request's reply.
    pub(crate) fn keep_alive(&self) -> bool {
        let connection = self.header("Connection").map(str::to_ascii_lowercase);
        match connection.as_deref() {
            Some("close") => false,
            Some("keep-alive") => true,
            _ => !self.http10,
        }
    }

    pub(crate) fn content_length(&self) -> Result<u64> {
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

pub(crate) fn read_body(r: &mut impl Read, len: u64) -> Result<Vec<u8>> {
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
pub(crate) struct Outgoing {
    pub(crate) code: u16,
    pub(crate) kind: &'static str,
    len: u64,
    headers: String,
    pub(crate) body: Box<dyn Read>,
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
pub(crate) fn send<W: Write>(
    out: &mut W,
    method: &str,
    reply: Reply,
    close: bool,
) -> Result<(u16, u64)> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
