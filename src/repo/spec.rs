//! How a command reaches a repository (`RepoSpec`): its location (a directory, an HTTP
//! server, an S3 bucket), the CA, token or S3 keys that go with it, and the passphrase of
//! an encrypted one.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::http;
use crate::location::RepoLocation;

/// A repository and how to reach it, as every command that reads or writes one takes it.
#[derive(Debug, Clone, clap::Args)]
pub struct RepoSpec {
    /// Repository: a local directory, or http(s)://HOST:PORT/ of `lifeboat serve` or any
    /// static web server holding one.
    #[arg(long = "repo", env = "LIFEBOAT_REPO", value_name = "DIR_OR_URL")]
    pub location: RepoLocation,
    /// CA certificates (PEM) to trust for an https repository.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// File holding the bearer token that `lifeboat serve` wants for writes.
    #[arg(long, env = "LIFEBOAT_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The S3 endpoint of an s3:// repository (credentials come from AWS_ACCESS_KEY_ID
    /// and AWS_SECRET_ACCESS_KEY, the region from AWS_REGION).
    #[arg(long, env = "AWS_ENDPOINT_URL", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// S3 credentials given other than by the environment (the rescue's orders).
    #[arg(skip)]
    pub s3_keys: Option<S3Keys>,
    /// File whose first line is the passphrase of an encrypted repository (asked on the
    /// terminal when there is one and this is not given).
    #[arg(long, env = "LIFEBOAT_PASSWORD_FILE", value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// The passphrase itself, when a caller has it already (the rescue, which asks on its
    /// console).
    #[arg(skip)]
    pub password: Option<crate::crypt::Passphrase>,
    /// The master key itself, unlocked already by this process (the rescue).
    #[arg(skip)]
    pub key: Option<crate::crypt::SharedKey>,
    /// Whether the command stores data (a capture): it then refuses a plain repository
    /// when it was given a passphrase.
    #[arg(skip)]
    pub writes_data: bool,
}

/// An S3 access key, and the region to sign for.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Keys {
    pub key_id: String,
    pub secret: String,
    pub region: Option<String>,
}

impl std::fmt::Debug for S3Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret: Debug output ends up in logs.
        write!(f, "S3Keys({}, region {:?})", self.key_id, self.region)
    }
}

impl RepoSpec {
    /// A repository reached with no CA or token of its own.
    pub fn at(location: RepoLocation) -> RepoSpec {
        RepoSpec {
            location,
            cacert: None,
            token_file: None,
            s3_endpoint: None,
            s3_keys: None,
            password_file: None,
            password: None,
            key: None,
            writes_data: false,
        }
    }

    /// Whether a passphrase was given (a reader that was given one expects encryption).
    pub fn has_password(&self) -> bool {
        self.password.is_some() || self.password_file.is_some()
    }

    /// The passphrase of an encrypted repository: given, from the file, or asked.
    pub fn passphrase(&self) -> Result<crate::crypt::Passphrase> {
        if let Some(p) = &self.password {
            return Ok(p.clone());
        }
        let text = crate::crypt::passphrase::get(
            self.password_file.as_deref(),
            &format!("passphrase of repository {}", self.location),
            &format!(
                "repository {} is encrypted: give its passphrase with --password-file or LIFEBOAT_PASSWORD_FILE",
                self.location
            ),
        )?;
        Ok(crate::crypt::Passphrase::new(text))
    }

    pub fn local_dir(&self) -> Option<&Path> {
        self.location.local_dir()
    }

    /// The endpoint and key of an s3:// location: from the flags (or the rescue's
    /// orders) and the AWS_* environment.
    pub fn s3_access(&self) -> Result<(String, S3Keys)> {
        let endpoint = self
            .s3_endpoint
            .clone()
            .context("an s3:// repository needs its endpoint: --s3-endpoint or AWS_ENDPOINT_URL")?;
        let var = |name: &str| {
            std::env::var(name).with_context(|| format!("an s3:// repository needs {name}"))
        };
        let keys = match &self.s3_keys {
            Some(k) => k.clone(),
            None => S3Keys {
                key_id: var("AWS_ACCESS_KEY_ID")?,
                secret: var("AWS_SECRET_ACCESS_KEY")?,
                region: std::env::var("AWS_REGION").ok(),
            },
        };
        Ok((endpoint, keys))
    }

    /// The store of an s3:// location.
    pub fn s3_store(&self) -> Result<http::HttpStore> {
        let RepoLocation::S3(url) = &self.location else {
            bail!("{} is not an s3:// repository", self.location);
        };
        let (endpoint, keys) = self.s3_access()?;
        http::HttpStore::s3(
            url,
            &endpoint,
            keys.region.as_deref().unwrap_or("us-east-1"),
            &keys.key_id,
            &keys.secret,
            self.cacert.as_deref(),
        )
    }
}
