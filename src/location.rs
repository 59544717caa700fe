//! Where things are, as a user names them: a repository (a directory or an http(s) URL)
//! and a disk (a path, or an NBD export). Strings are parsed here once, into enums; this
//! is the one module that knows URL schemes.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Serialise a type as its `Display` string and read it back with `FromStr`.
#[macro_export]
macro_rules! serde_as_string {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// The port an `nbd://HOST/EXPORT` without one means.
pub const NBD_DEFAULT_PORT: u16 = 10809;

/// A location string that names nothing Lifeboat can use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LocationError {
    #[error("{0}: unknown scheme {1}:// (a repository is a directory, http://, https:// or s3://BUCKET/PREFIX)")]
    RepoScheme(String, String),
    #[error("{0}: {1}")]
    BadBucket(String, &'static str),
    #[error("{0}: unknown scheme {1}:// (a disk is a path or nbd://HOST[:PORT]/EXPORT)")]
    DiskScheme(String, String),
    #[error("{0}: an empty location")]
    Empty(String),
    #[error("{0}: no host in the URL")]
    NoHost(String),
}

/// The scheme of `s` when it looks like `scheme://...`.
fn scheme(s: &str) -> Option<&str> {
    let (scheme, _) = s.split_once("://")?;
    (!scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+'))
    .then_some(scheme)
}

/// Where a repository is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoLocation {
    /// A directory on a local filesystem (a disk, a USB stick, an NFS mount).
    Dir(PathBuf),
    /// `lifeboat serve` or any static web server; the URL ends in `/`.
    Http(HttpUrl),
    /// A bucket (and a prefix in it) of an S3 object store.
    S3(S3Url),
}

/// `s3://BUCKET[/PREFIX]`: the prefix, when given, ends in `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    pub prefix: String,
}

impl S3Url {
    /// The object key of `key` under the prefix.
    pub fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

impl fmt::Display for S3Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

fn parse_s3(s: &str) -> Result<S3Url, LocationError> {
    let rest = &s["s3://".len()..];
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    // S3's bucket naming rules: 3 to 63 of lowercase letters, digits, '.' and '-'.
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    if !ok {
        return Err(LocationError::BadBucket(
            s.into(),
            "a bucket name is 3 to 63 lowercase letters, digits, dots and hyphens",
        ));
    }
    if prefix.split('/').any(|p| p == ".." || p == ".") {
        return Err(LocationError::BadBucket(
            s.into(),
            "no . or .. in the prefix",
        ));
    }
    let prefix = match prefix.trim_matches('/') {
        "" => String::new(),
        p => format!("{p}/"),
    };
    Ok(S3Url {
        bucket: bucket.into(),
        prefix,
    })
}

/// An http:// or https:// URL of a repository's top, ending in `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    url: String,
}

impl HttpUrl {
    pub fn as_str(&self) -> &str {
        &self.url
    }

    pub fn is_tls(&self) -> bool {
        self.url.starts_with("https://")
    }

    /// The URL of `key` under this one.
    pub fn join(&self, key: &str) -> String {
        format!("{}{key}", self.url)
    }

    /// host[:port], as written.
    pub fn authority(&self) -> &str {
        let rest = self.url.split_once("://").map(|p| p.1).unwrap_or("");
        rest.split('/').next().unwrap_or("")
    }

    /// The same URL with `host` in place of a loopback host name.
    fn with_loopback_as(&self, host: &str) -> HttpUrl {
        let authority = self.authority();
        let (name, port) = match authority.rsplit_once(':') {
            Some((n, p)) if !n.ends_with(']') || authority.starts_with('[') => (n, Some(p)),
            _ => (authority, None),
        };
        if !matches!(name, "127.0.0.1" | "localhost" | "[::1]") {
            return self.clone();
        }
        let new_authority = match port {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        HttpUrl {
            url: self.url.replacen(authority, &new_authority, 1),
        }
    }
}

impl RepoLocation {
    /// The directory of a local repository.
    pub fn local_dir(&self) -> Option<&Path> {
        match self {
            RepoLocation::Dir(d) => Some(d),
            RepoLocation::Http(_) | RepoLocation::S3(_) => None,
        }
    }

    pub fn is_network(&self) -> bool {
        !matches!(self, RepoLocation::Dir(_))
    }

    /// The location as a QEMU guest with user-mode networking reaches it: the host's
    /// loopback is 10.0.2.2 there.
    pub fn as_seen_from_qemu_guest(&self) -> RepoLocation {
        match self {
            RepoLocation::Http(u) => RepoLocation::Http(u.with_loopback_as("10.0.2.2")),
            other => other.clone(),
        }
    }
}

/// An http(s) URL (an S3 endpoint) as a QEMU guest with user networking reaches it: a
/// loopback host becomes the host's address 10.0.2.2; anything else is left alone.
pub fn url_as_seen_from_qemu_guest(url: &str) -> String {
    match url.parse::<RepoLocation>() {
        Ok(RepoLocation::Http(u)) => {
            let seen = u.with_loopback_as("10.0.2.2").url;
            if url.ends_with('/') {
                seen
            } else {
                seen.trim_end_matches('/').to_string()
            }
        }
        _ => url.to_string(),
    }
}

impl FromStr for RepoLocation {
    type Err = LocationError;
    fn from_str(s: &str) -> Result<Self, LocationError> {
        if s.is_empty() {
            return Err(LocationError::Empty(s.into()));
        }
        match scheme(s) {
            Some("http" | "https") => {
                let url = if s.ends_with('/') {
                    s.to_string()
                } else {
                    format!("{s}/")
                };
                let u = HttpUrl { url };
                if u.authority().is_empty() {
                    return Err(LocationError::NoHost(s.into()));
                }
                Ok(RepoLocation::Http(u))
            }
            Some("s3") => parse_s3(s).map(RepoLocation::S3),
            Some(other) => Err(LocationError::RepoScheme(s.into(), other.into())),
            None => Ok(RepoLocation::Dir(PathBuf::from(s))),
        }
    }
}

crate::serde_as_string!(RepoLocation);
crate::serde_as_string!(DiskLocation);

impl fmt::Display for RepoLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepoLocation::Dir(d) => write!(f, "{}", d.display()),
            RepoLocation::Http(u) => f.write_str(u.as_str()),
            RepoLocation::S3(u) => u.fmt(f),
        }
    }
}

/// Where a disk to read is: a block device or image file, or an NBD server's export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskLocation {
    Path(PathBuf),
    Nbd(NbdAddress),
}

/// `nbd://HOST[:PORT]/EXPORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NbdAddress {
    /// host:port to connect to.
    pub addr: String,
    /// The export's name (empty for the server's default).
    pub export: String,
}

impl fmt::Display for NbdAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "nbd://{}/{}", self.addr, self.export)
    }
}

impl FromStr for DiskLocation {
    type Err = LocationError;
    fn from_str(s: &str) -> Result<Self, LocationError> {
        if s.is_empty() {
            return Err(LocationError::Empty(s.into()));
        }
        match scheme(s) {
            Some("nbd") => {
                let rest = &s["nbd://".len()..];
                let (hostport, export) = rest.split_once('/').unwrap_or((rest, ""));
                if hostport.is_empty() {
                    return Err(LocationError::NoHost(s.into()));
                }
                let has_port = match hostport.rsplit_once(':') {
                    Some((_, p)) => p.bytes().all(|b| b.is_ascii_digit()) && !p.is_empty(),
                    None => false,
                };
                let addr = if has_port {
                    hostport.to_string()
                } else {
                    format!("{hostport}:{NBD_DEFAULT_PORT}")
                };
                Ok(DiskLocation::Nbd(NbdAddress {
                    addr,
                    export: export.to_string(),
                }))
            }
            Some(other) => Err(LocationError::DiskScheme(s.into(), other.into())),
            None => Ok(DiskLocation::Path(PathBuf::from(s))),
        }
    }
}

impl fmt::Display for DiskLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskLocation::Path(p) => write!(f, "{}", p.display()),
            DiskLocation::Nbd(a) => a.fmt(f),
        }
    }
}

#[cfg(test)]
mod s3_tests {
    use super::*;

    #[test]
    fn s3_locations_name_a_bucket_and_a_prefix() {
        let l: RepoLocation = "s3://backups/fleet/web01".parse().unwrap();
        assert_eq!(
            l,
            RepoLocation::S3(S3Url {
                bucket: "backups".into(),
                prefix: "fleet/web01/".into()
            })
        );
        assert_eq!(l.to_string(), "s3://backups/fleet/web01/");
        let bare: RepoLocation = "s3://backups".parse().unwrap();
        assert_eq!(bare.to_string(), "s3://backups/");
        for bad in [
            "s3://",
            "s3://Upper",
            "s3://ab",
            "s3://b_ucket/x",
            "s3://bucket/../x",
        ] {
            assert!(bad.parse::<RepoLocation>().is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_by_scheme() {
        assert_eq!(
            "repo".parse::<RepoLocation>().unwrap(),
            RepoLocation::Dir("repo".into())
        );
        let RepoLocation::Http(u) = "http://127.0.0.1:8080".parse().unwrap() else {
            panic!("not http")
        };
        assert_eq!(u.as_str(), "http://127.0.0.1:8080/");
        assert_eq!(u.join("config.json"), "http://127.0.0.1:8080/config.json");
        assert!(!u.is_tls());
        let RepoLocation::Http(u) = "https://backup.example/r/".parse().unwrap() else {
            panic!("not https")
        };
        assert!(u.is_tls());
        assert_eq!(u.authority(), "backup.example");
        assert!(matches!(
            "ftp://x/".parse::<RepoLocation>(),
            Err(LocationError::RepoScheme(_, s)) if s == "ftp"
        ));
        assert!("http:///".parse::<RepoLocation>().is_err());
        assert!("".parse::<RepoLocation>().is_err());
    }

    #[test]
    fn loopback_as_the_guest_sees_it() {
        let l: RepoLocation = "http://127.0.0.1:4000/".parse().unwrap();
        assert_eq!(
            l.as_seen_from_qemu_guest().to_string(),
            "http://10.0.2.2:4000/"
        );
        let l: RepoLocation = "https://localhost/x/".parse().unwrap();
        assert_eq!(
            l.as_seen_from_qemu_guest().to_string(),
            "https://10.0.2.2/x/"
        );
        let other: RepoLocation = "http://192.0.2.7:80/".parse().unwrap();
        assert_eq!(other.as_seen_from_qemu_guest(), other);
        let dir: RepoLocation = "/srv/repo".parse().unwrap();
        assert_eq!(dir.as_seen_from_qemu_guest(), dir);
        assert_eq!(
            url_as_seen_from_qemu_guest("http://127.0.0.1:3900"),
            "http://10.0.2.2:3900"
        );
        assert_eq!(
            url_as_seen_from_qemu_guest("https://s3.example.org/"),
            "https://s3.example.org/"
        );
    }

    #[test]
    fn disks_by_scheme() {
        assert_eq!(
            "/dev/sda".parse::<DiskLocation>().unwrap(),
            DiskLocation::Path("/dev/sda".into())
        );
        let DiskLocation::Nbd(a) = "nbd://127.0.0.1:10900/web".parse().unwrap() else {
            panic!("not nbd")
        };
        assert_eq!(
            (a.addr.as_str(), a.export.as_str()),
            ("127.0.0.1:10900", "web")
        );
        let DiskLocation::Nbd(a) = "nbd://server".parse().unwrap() else {
            panic!("not nbd")
        };
        assert_eq!((a.addr.as_str(), a.export.as_str()), ("server:10809", ""));
        assert!("http://x/disk".parse::<DiskLocation>().is_err());
        assert!("nbd:///x".parse::<DiskLocation>().is_err());
    }
}
