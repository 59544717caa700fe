//! `lifeboat key`: the key files of an encrypted repository: list, add, remove, change a
//! passphrase, and export the printable recovery copy of the master key.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::crypt::{MasterKey, Passphrase};
use crate::repo::keyfile::{parse_recovery, recovery_text, KeyFileId};
use crate::repo::{keyring, Object, RepoSpec, Repository};
use crate::ui::{print_table, Outcome};

#[derive(Debug, Args)]
pub struct KeyArgs {
    #[command(subcommand)]
    pub action: KeyAction,
}

#[derive(Debug, Subcommand)]
pub enum KeyAction {
    /// List the key files (the passphrase must open one of them).
    List {
        #[command(flatten)]
        repo: RepoSpec,
    },
    /// Add a key file: the master key under another passphrase. Unlocked by a current
    /// passphrase, or by a recovery copy (--recovery) when every passphrase is lost.
    Add {
        #[command(flatten)]
        repo: RepoSpec,
        /// The new passphrase's file (otherwise asked twice on the terminal).
        #[arg(long, value_name = "FILE")]
        new_password_file: Option<PathBuf>,
        /// Unlock with this recovery copy (`key export`) instead of a passphrase.
        #[arg(long, value_name = "FILE")]
        recovery: Option<PathBuf>,
    },
    /// Remove a key file by name (never the last one).
    Remove {
        #[command(flatten)]
        repo: RepoSpec,
        /// The key file's name (16 hex digits, as `key list` shows).
        name: String,
    },
    /// Change a passphrase: add a key file under the new one, then remove the one the
    /// old passphrase opened.
    Passwd {
        #[command(flatten)]
        repo: RepoSpec,
        #[arg(long, value_name = "FILE")]
        new_password_file: Option<PathBuf>,
    },
    /// Print the master key's recovery copy (or write it to a new file, mode 0600).
    /// Anyone holding it can read every snapshot: keep it offline, on paper or in a
    /// safe, apart from the machines it protects.
    Export {
        #[command(flatten)]
        repo: RepoSpec,
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Serialize)]
pub struct KeyInfo {
    pub name: KeyFileId,
    pub created: String,
    pub host: String,
    pub user: String,
    /// Whether the given passphrase opened this one.
    pub current: bool,
}

#[derive(Debug, Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum KeyOutcome {
    List {
        keys: Vec<KeyInfo>,
    },
    Added {
        name: KeyFileId,
    },
    Removed {
        name: KeyFileId,
    },
    Changed {
        added: KeyFileId,
        removed: KeyFileId,
    },
    Exported {
        recovery: Option<String>,
        file: Option<PathBuf>,
    },
}

impl Outcome for KeyOutcome {
    fn print(&self) {
        match self {
            KeyOutcome::List { keys } => {
                for k in keys {
                    crate::outln!(
                        "{} {}  created {}  by {}@{}",
                        if k.current { "*" } else { " " },
                        k.name,
                        k.created,
                        k.user,
                        k.host
                    );
                }
            }
            KeyOutcome::Added { name } => {
                crate::outln!("added key file {}", Object::KeyFile(*name))
            }
            KeyOutcome::Removed { name } => {
                crate::outln!("removed key file {}", Object::KeyFile(*name))
            }
            KeyOutcome::Changed { added, removed } => print_table(&[
                ("added", Object::KeyFile(*added).to_string()),
                ("removed", Object::KeyFile(*removed).to_string()),
            ]),
            KeyOutcome::Exported { recovery, file } => {
                if let Some(r) = recovery {
                    crate::outln!("{r}");
                }
                if let Some(f) = file {
                    crate::outln!("wrote the recovery copy to {}", f.display());
                }
            }
        }
    }
}

/// The repository, not unlocked, refusing one that is not encrypted.
fn open(spec: &RepoSpec) -> Result<Repository> {
    let repo = Repository::open_without_key(spec)?;
    if !repo.is_encrypted() {
        bail!(
            "repository {} is not encrypted: it has no keys",
            repo.display
        );
    }
    Ok(repo)
}

/// Unlock with the passphrase: the master key and the name of the key file it opened.
fn unlock(repo: &Repository, spec: &RepoSpec) -> Result<(MasterKey, KeyFileId)> {
    keyring::unlock(
        &**repo.store(),
        &repo.config,
        &repo.display,
        &spec.passphrase()?,
    )
}

fn new_passphrase(file: Option<&std::path::Path>) -> Result<Passphrase> {
    Ok(Passphrase::new(crate::crypt::passphrase::get_new(
        file,
        "new passphrase",
        "a new passphrase is needed: --new-password-file",
    )?))
}

pub fn run(args: &KeyArgs) -> Result<KeyOutcome> {
    match &args.action {
        KeyAction::List { repo: spec } => {
            let repo = open(spec)?;
            let (_, current) = unlock(&repo, spec)?;
            let keys = keyring::list(&**repo.store())?
                .into_iter()
                .map(|k| KeyInfo {
                    current: k.name == current,
                    name: k.name,
                    created: k.file.created,
                    host: k.file.host,
                    user: k.file.user,
                })
                .collect();
            Ok(KeyOutcome::List { keys })
        }
        KeyAction::Add {
            repo: spec,
            new_password_file,
            recovery,
        } => {
            let repo = open(spec)?;
            let master = match recovery {
                Some(f) => from_recovery(&repo, f)?,
                None => unlock(&repo, spec)?.0,
            };
            let pass = new_passphrase(new_password_file.as_deref())?;
            let name = keyring::add(&**repo.store(), &repo.config, &master, &pass)?;
            Ok(KeyOutcome::Added { name })
        }
        KeyAction::Remove { repo: spec, name } => {
            let repo = open(spec)?;
            let (_, current) = unlock(&repo, spec)?;
            let removed = remove(&repo, name, Some(current))?;
            Ok(KeyOutcome::Removed { name: removed })
        }
        KeyAction::Passwd {
            repo: spec,
            new_password_file,
        } => {
            let repo = open(spec)?;
            let (master, old) = unlock(&repo, spec)?;
            let pass = new_passphrase(new_password_file.as_deref())?;
            let added = keyring::add(&**repo.store(), &repo.config, &master, &pass)?;
            remove(&repo, &old.to_string(), None)?;
            Ok(KeyOutcome::Changed {
                added,
                removed: old,
            })
        }
        KeyAction::Export { repo: spec, out } => {
            let repo = open(spec)?;
            let (master, _) = unlock(&repo, spec)?;
            let text = format!(
                "# Lifeboat recovery key of repository {} ({}), made {}.\n# Anyone holding it can read every snapshot. `lifeboat key add --recovery FILE` makes a key file from it.\n{}\n",
                repo.config.id,
                repo.display,
                crate::time::now_rfc3339(),
                recovery_text(&repo.config.id, &master)
            );
            match out {
                Some(path) => {
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(path)
                        .with_context(|| format!("create {}", path.display()))?;
                    f.write_all(text.as_bytes())
                        .and_then(|_| f.sync_all())
                        .with_context(|| format!("write {}", path.display()))?;
                    Ok(KeyOutcome::Exported {
                        recovery: None,
                        file: Some(path.clone()),
                    })
                }
                None => Ok(KeyOutcome::Exported {
                    recovery: Some(text.trim_end().to_string()),
                    file: None,
                }),
            }
        }
    }
}

/// The master key from a recovery copy, which must be this repository's.
fn from_recovery(repo: &Repository, file: &std::path::Path) -> Result<MasterKey> {
    let meta = std::fs::metadata(file).with_context(|| format!("read {}", file.display()))?;
    if !meta.is_file() || meta.len() > 64 << 10 {
        bail!(
            "{} is not a recovery copy (a small regular file)",
            file.display()
        );
    }
    let text = std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
    let (id, master) = parse_recovery(&text).with_context(|| format!("read {}", file.display()))?;
    if id != repo.config.id {
        bail!(
            "{} is the recovery copy of repository {id}, not of {} ({})",
            file.display(),
            repo.display,
            repo.config.id
        );
    }
    Ok(master)
}

/// Remove key file `name`, never the last one. The key file the passphrase opened may
/// go when others remain (a warning says so).
fn remove(repo: &Repository, name: &str, current: Option<KeyFileId>) -> Result<KeyFileId> {
    let keys = keyring::list(&**repo.store())?;
    let Some(id) = keys.iter().map(|k| k.name).find(|k| k.to_string() == name) else {
        bail!(
            "repository {} has no key file {name} (see `lifeboat key list`)",
            repo.display
        );
    };
    let file = Object::KeyFile(id);
    if keys.len() < 2 {
        bail!("{file} is the repository's only key file: add another first");
    }
    if current == Some(id) {
        log::warn!("removing {file}, the key file this passphrase opened");
    }
    repo.store()
        .delete(&file)
        .with_context(|| format!("remove key file {}", repo.store().location(&file)))?;
    repo.store().flush()?;
    Ok(id)
}
