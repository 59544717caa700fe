//! `lifeboat keygen`: a new signing key pair, NAME.key (secret, mode 0600) and NAME.pub.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;

use crate::crypt::signing::SigningKey;
use crate::ui::{print_table, Outcome};

#[derive(Debug, Clone, Args)]
pub struct KeygenArgs {
    /// Write NAME.key and NAME.pub (neither may exist).
    #[arg(long, value_name = "NAME")]
    pub out: PathBuf,
    /// Seal the secret key under the passphrase in this file (first line): argon2id and
    /// XChaCha20-Poly1305. `capture --sign` then needs it (--sign-password-file, or the
    /// terminal).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Seal the secret key under a passphrase asked for on the terminal (twice).
    #[arg(long, conflicts_with = "password_file")]
    pub protect: bool,
}

#[derive(Debug, Serialize)]
pub struct Generated {
    pub key_id: String,
    pub public_key: String,
    pub secret_key_file: PathBuf,
    pub public_key_file: PathBuf,
}

impl Outcome for Generated {
    fn print(&self) {
        print_table(&[
            ("key id", self.key_id.clone()),
            (
                "secret",
                format!(
                    "{} (keep it on the capturing host)",
                    self.secret_key_file.display()
                ),
            ),
            (
                "public",
                format!(
                    "{} (give it to restores and rescues: --trust)",
                    self.public_key_file.display()
                ),
            ),
            ("key", self.public_key.clone()),
        ]);
    }
}

pub fn run(args: &KeygenArgs) -> Result<Generated> {
    let key = SigningKey::generate()?;
    let with_ext = |ext: &str| {
        let mut p = args.out.clone().into_os_string();
        p.push(ext);
        PathBuf::from(p)
    };
    let (secret, public) = (with_ext(".key"), with_ext(".pub"));
    let text = match passphrase(args)? {
        Some(p) => key.to_sealed_file_text(&p)?,
        None => key.to_file_text(),
    };
    write_new(&secret, &text, 0o600)?;
    if let Err(e) = write_new(&public, &key.public_file_text(), 0o644) {
        let _ = std::fs::remove_file(&secret);
        return Err(e);
    }
    Ok(Generated {
        key_id: key.public().id().to_string(),
        public_key: key.public().to_string(),
        secret_key_file: secret,
        public_key_file: public,
    })
}

/// The passphrase to seal the key under, if asked for.
fn passphrase(args: &KeygenArgs) -> Result<Option<String>> {
    use crate::crypt::passphrase::get;
    if let Some(f) = &args.password_file {
        return get(Some(f), "", "").map(Some);
    }
    if !args.protect {
        return Ok(None);
    }
    let hint = "--protect asks on the terminal: give --password-file instead";
    let first = get(None, "passphrase for the new key", hint)?;
    if get(None, "the same again", hint)? != first {
        anyhow::bail!("the two passphrases differ");
    }
    Ok(Some(first))
}

/// Create `path` (it must not exist) with `text`, durably.
fn write_new(path: &Path, text: &str, mode: u32) -> Result<()> {
    let opened = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path);
    let mut f = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => anyhow::bail!(
            "{} exists already: a key is never overwritten (choose another --out, or move it away)",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
            "create {}: its folder {} does not exist (create it first)",
            path.display(),
            path.parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        ),
        Err(e) => return Err(e).with_context(|| format!("create {}", path.display())),
    };
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .with_context(|| format!("write {}", path.display()))
}
