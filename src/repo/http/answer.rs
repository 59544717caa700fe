//! What an HTTP exchange came to: a 2xx answer to go on with, a refusal, a busy server to
//! wait for, or a failure worth another attempt; and a transport failure (no answer) told
//! apart from one that waiting does not mend (an unknown host, a refused first contact, a
//! certificate not trusted).

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::anyhow;

use super::{header, Addressing, Answer, Attempt, HttpStore};
use crate::repo::store::StoreError;

impl HttpStore {
    /// What an exchange came to: a 2xx answer to go on with, or what to do instead.
    pub(super) fn judge<T>(
        &self,
        key: &str,
        sent: Result<Answer, ureq::Error>,
    ) -> Result<Answer, Attempt<T>> {
        if sent.is_ok() {
            self.reached.store(true, Ordering::Relaxed);
        }
        match sent {
            Ok(r) if r.status().is_success() => Ok(r),
            Ok(r) => Err(self.status_failure(key, r)),
            Err(e) => Err(self.transport_failure(key, e)),
        }
    }

    /// A 4xx or 5xx answer: missing, busy, worth retrying, or final.
    fn status_failure<T>(&self, key: &str, mut r: Answer) -> Attempt<T> {
        let code = r.status().as_u16();
        let retry_after = header(&r, "Retry-After").map(str::to_string);
        // An error body is read for its message only: a little of it, within the time
        // a small body is allowed.
        let body = r
            .body_mut()
            .with_config()
            .limit(64 << 10)
            .lossy_utf8(true)
            .read_to_string()
            .unwrap_or_default();
        match code {
            404 if body.contains("NoSuchBucket") => Attempt::Fail(StoreError::Other {
                location: self.url(key),
                cause: anyhow!("the bucket does not exist ({})", s3_message(&body)),
            }),
            404 => Attempt::Fail(StoreError::NotFound {
                location: self.url(key),
            }),
            429 | 503 if retry_after.is_some() => {
                // Seconds (an HTTP date is taken as "soon"); at most a minute at a time.
                let secs: u64 = retry_after.and_then(|v| v.trim().parse().ok()).unwrap_or(1);
                Attempt::Busy(
                    Duration::from_secs(secs.clamp(1, 60)),
                    format!("HTTP {code} (busy) {}", s3_message(&body))
                        .trim()
                        .to_string(),
                )
            }
            429 | 500.. => Attempt::Retry(
                format!("HTTP {code} {}", s3_message(&body))
                    .trim()
                    .to_string(),
            ),
            _ => {
                let why = match (code, &self.addressing) {
                    (401 | 403, Addressing::S3 { .. }) => {
                        "access denied (check the credentials and the bucket's permissions): "
                    }
                    (401 | 403, Addressing::Plain { .. }) => "refused by the server: ",
                    _ => "",
                };
                Attempt::Fail(StoreError::Other {
                    location: self.url(key),
                    cause: anyhow!("HTTP {code}: {why}{}", s3_message(&body)),
                })
            }
        }
    }

    /// No answer: a refused or cut connection, or a deadline passed, may pass; a
    /// certificate the client does not trust, a bad URL or an unknown host do not get
    /// better by waiting.
    fn transport_failure<T>(&self, key: &str, e: ureq::Error) -> Attempt<T> {
        use ureq::Error as E;
        let fail = |why: String| {
            Attempt::Fail(StoreError::Other {
                location: self.url(key),
                cause: anyhow!(why),
            })
        };
        match e {
            E::Timeout(t) => Attempt::Retry(match t {
                ureq::Timeout::Connect => "timed out connecting".into(),
                ureq::Timeout::RecvResponse => "timed out waiting for the answer".into(),
                ureq::Timeout::RecvBody => "timed out receiving the body".into(),
                other => format!("timed out ({other})"),
            }),
            E::Io(io)
                if io.kind() == std::io::ErrorKind::ConnectionRefused
                    && !self.reached.load(Ordering::Relaxed) =>
            {
                fail(format!(
                    "connection refused: nothing listens there (is the server running, and the URL right?): {io}"
                ))
            }
            E::Io(io) if is_name_not_resolved(&io) && !self.reached.load(Ordering::Relaxed) => {
                fail(format!("unknown host: the name does not resolve (DNS): {io}"))
            }
            E::Io(io) => Attempt::Retry(format!("network error: {io}")),
            E::ConnectionFailed if !self.reached.load(Ordering::Relaxed) => {
                fail("the connection failed: nothing answered there (is the server running, and the URL right?)".into())
            }
            E::ConnectionFailed => Attempt::Retry("the connection failed".into()),
            E::Protocol(p) => Attempt::Retry(format!("not an HTTP answer: {p}")),
            E::BodyStalled => Attempt::Retry("the body stalled".into()),
            E::HostNotFound => fail("unknown host: the name does not resolve (DNS)".into()),
            E::BadUri(u) => fail(format!("not a usable URL: {u}")),
            E::Tls(t) => fail(format!("TLS: {t}")),
            E::Rustls(r) => fail(format!("TLS: {r}")),
            E::Pem(p) => fail(format!("TLS: {p}")),
            E::TooManyRedirects | E::RedirectFailed => fail(format!("{e}")),
            other => fail(format!("{other}")),
        }
    }
}

/// An error body's message: S3's `<Message>` when there is one, else the text.
pub(super) fn s3_message(body: &str) -> String {
    let m = body
        .split_once("<Message>")
        .and_then(|(_, rest)| rest.split_once("</Message>"))
        .map(|(m, _)| m)
        .unwrap_or(body);
    m.trim().chars().take(300).collect()
}

/// Whether an I/O error is a host name that did not resolve (ureq reports the resolver's
/// failure as I/O).
fn is_name_not_resolved(e: &std::io::Error) -> bool {
    let text = e.to_string();
    [
        "lookup address",
        "Name does not resolve",
        "Name or service not known",
    ]
    .iter()
    .any(|t| text.contains(t))
}
