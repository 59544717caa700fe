//! The key files of an encrypted repository (`keys/<name>.json`, see `repo::keyfile`):
//! unlocking the master key with a passphrase, adding and removing key files.

use anyhow::{bail, Context, Result};

use super::keyfile::{KeyFile, KeyFileError, KeyFileId, Unlocked, MAX_KEY_FILE};
use super::object::{Dir, Object};
use super::store::{Store, StoreError};
use super::Config;
use crate::crypt::{MasterKey, Passphrase};
/// A reader tries at most this many key files (each costs an argon2id run).
const MAX_KEY_FILES: usize = 64;

/// A key file in the repository.
pub struct StoredKey {
    /// Its name: 16 hex digits of the BLAKE3 of its bytes.
    pub name: KeyFileId,
    pub file: KeyFile,
}

/// Why an encrypted repository could not be unlocked.
#[derive(Debug, thiserror::Error)]
pub enum UnlockError {
    #[error("the passphrase opens none of the {tried} key files of repository {repo} (wrong passphrase)")]
    WrongPassphrase { repo: String, tried: usize },
    #[error("repository {repo} is encrypted but holds no usable key file in {location}; a recovery copy can add one (`lifeboat key add --recovery FILE`)")]
    NoKeys { repo: String, location: String },
}

/// The repository's key files, each read within its limit. A file that is not a key file
/// is skipped with a warning (an attacker who can write the store could plant one; it
/// opens nothing).
pub fn list(store: &dyn Store) -> Result<Vec<StoredKey>> {
    let mut names: Vec<KeyFileId> = store
        .objects(&Dir::Keys)
        .context("list the key files")?
        .into_iter()
        .filter_map(|o| match o {
            Object::KeyFile(id) => Some(id),
            _ => None,
        })
        .collect();
    names.sort();
    if names.len() > MAX_KEY_FILES {
        log::warn!(
            "{} holds {} key files; only the first {MAX_KEY_FILES} are tried",
            store.dir_location(&Dir::Keys),
            names.len()
        );
        names.truncate(MAX_KEY_FILES);
    }
    let mut keys = Vec::new();
    for name in names {
        let path = Object::KeyFile(name);
        let raw = match store.get_at_most(&path, MAX_KEY_FILE) {
            Ok(r) => r,
            Err(e @ StoreError::Other { .. }) => {
                return Err(anyhow::Error::new(e).context("read a key file"))
            }
            Err(StoreError::NotFound { .. }) => continue,
        };
        match KeyFile::parse(&raw) {
            Ok(file) => keys.push(StoredKey { name, file }),
            Err(e) => log::warn!("{}: not a key file: {e}", store.location(&path)),
        }
    }
    Ok(keys)
}

/// Unlock the master key with `pass`: the first key file it opens, which must name this
/// repository and its chunker settings (otherwise the key file or `config.json` has been
/// tampered with). Returns the key and the key file's name.
pub fn unlock(
    store: &dyn Store,
    config: &Config,
    display: &str,
    pass: &Passphrase,
) -> Result<(MasterKey, KeyFileId)> {
    let keys = list(store)?;
    if keys.is_empty() {
        return Err(UnlockError::NoKeys {
            repo: display.to_string(),
            location: store.dir_location(&Dir::Keys),
        }
        .into());
    }
    for k in &keys {
        match k.file.open(pass.as_str()) {
            Ok(u) => {
                check_binding(&u, config, &store.location(&Object::KeyFile(k.name)))?;
                log::info!("unlocked with key file {}", k.name);
                return Ok((u.master, k.name));
            }
            Err(KeyFileError::WrongPassphrase) => {}
            Err(e) => log::warn!("{}: {e}", store.location(&Object::KeyFile(k.name))),
        }
    }
    Err(UnlockError::WrongPassphrase {
        repo: display.to_string(),
        tried: keys.len(),
    }
    .into())
}

/// An unlocked key must be this repository's, cut with this config's chunker.
fn check_binding(u: &Unlocked, config: &Config, location: &str) -> Result<()> {
    if u.repository != config.id {
        bail!(
            "key file {location} holds the key of repository {}, not of this one ({}): the key file or config.json has been replaced",
            u.repository,
            config.id
        );
    }
    if u.chunker != config.chunker {
        bail!(
            "config.json's chunker settings differ from those the key file {location} was sealed with: config.json has been altered"
        );
    }
    Ok(())
}

/// Add a key file for `master` under `pass`; returns its name.
pub fn add(
    store: &dyn Store,
    config: &Config,
    master: &MasterKey,
    pass: &Passphrase,
) -> Result<KeyFileId> {
    let file = KeyFile::seal(master, &config.id, &config.chunker, pass.as_str())?;
    let bytes = file.to_bytes();
    let name = KeyFile::name(&bytes);
    let path = Object::KeyFile(name);
    store
        .put(&path, &bytes)
        .with_context(|| format!("write key file {}", store.location(&path)))?;
    store.flush()?;
    Ok(name)
}
