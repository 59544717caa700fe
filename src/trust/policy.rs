//! What a reader requires of a snapshot before it uses it. Fail closed, as
//! coreos-installer does: once a trust anchor is given (`--trust`, or recorded in the
//! repository by `init --require-signed` for readers that bring none), a snapshot must
//! carry a valid signature by one of the anchors that is not revoked, and must be bound
//! to this repository; `--allow-unsigned` lets a *missing* signature through, never an invalid
//! one; id prefixes are refused (a prefix is resolved against a listing the server
//! controls), and a name resolves to the newest snapshot of that name that verifies.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};

use super::signature::{SignatureFile, MAX_SIGNATURE_BYTES};
use crate::crypt::signing::{KeyId, PublicKey};
use crate::repo::id::SnapshotId;
use crate::repo::store::StoreError;
use crate::repo::{Dir, Object, Repository, Snapshot};

/// The options of every command that reads snapshots.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TrustArgs {
    /// Use only snapshots signed by this key: a public key file (NAME.pub) or
    /// ed25519:<64 hex digits>; repeatable. Once given, signatures are required whatever
    /// the repository says.
    #[arg(
        long = "trust",
        env = "LIFEBOAT_TRUST",
        value_delimiter = ',',
        value_name = "NAME.pub"
    )]
    pub trust: Vec<String>,
    /// A file of revoked keys (key ids or public keys, one per line): their signatures
    /// no longer count.
    #[arg(long, env = "LIFEBOAT_REVOKED", value_name = "FILE")]
    pub revoked: Option<PathBuf>,
    /// Let a snapshot that carries no signature through (a bad signature never is).
    #[arg(long = "allow-unsigned", alias = "insecure")]
    pub insecure: bool,
    /// Refuse a snapshot chosen by name that is older than this (e.g. 26h, 8d): an
    /// attacker who serves an old signed snapshot cannot make it pass for a recent one.
    #[arg(long, value_name = "DURATION", value_parser = crate::time::parse_duration)]
    pub max_age: Option<Duration>,
    /// Where to remember the newest signed snapshot seen of each name, so that an older
    /// one served in its place is refused (default: $XDG_STATE_HOME/lifeboat or
    /// ~/.local/state/lifeboat).
    #[arg(long, env = "LIFEBOAT_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// Where the trust anchors came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnchorSource {
    /// None: signatures are not checked.
    None,
    /// Given to this command (`--trust`, the rescue's baked-in keys or command line).
    Given,
    /// Recorded in the repository's config (`init --require-signed`).
    Repository,
}

/// What a reader requires.
#[derive(Debug, Clone)]
pub struct Policy {
    pub anchors: Vec<PublicKey>,
    pub revoked: Vec<KeyId>,
    pub source: AnchorSource,
    pub insecure: bool,
    pub max_age: Option<Duration>,
    /// Where the heads of names are remembered (`heads`), if anywhere.
    pub state_dir: Option<PathBuf>,
}

/// How a snapshot passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No anchor: nothing was checked.
    Unchecked,
    /// Signed by this trusted key.
    Signed(KeyId),
    /// No signature, let through by `--allow-unsigned`.
    UnsignedAllowed,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Unchecked => f.write_str("not checked (no --trust)"),
            Verdict::Signed(k) => write!(f, "signed by trusted key {k}"),
            Verdict::UnsignedAllowed => f.write_str("UNSIGNED, let through by --allow-unsigned"),
        }
    }
}

impl Policy {
    /// No anchors: nothing is checked.
    pub fn none() -> Policy {
        Policy {
            anchors: Vec::new(),
            revoked: Vec::new(),
            source: AnchorSource::None,
            insecure: false,
            max_age: None,
            state_dir: None,
        }
    }

    /// The policy `args` give, falling back to the keys `repo` records.
    pub fn new(args: &TrustArgs, repo: &Repository) -> Result<Policy> {
        let mut p = Policy::none();
        p.insecure = args.insecure;
        p.max_age = args.max_age;
        p.state_dir = args.state_dir.clone().or_else(super::heads::default_dir);
        for t in &args.trust {
            p.anchors.push(parse_anchor(t)?);
        }
        if !p.anchors.is_empty() {
            p.source = AnchorSource::Given;
        } else if let Some(keys) = repo.config.signing.as_ref().map(|s| &s.keys) {
            p.anchors = keys.clone();
            p.source = AnchorSource::Repository;
        }
        if let Some(path) = &args.revoked {
            p.revoked = read_revoked(path)?;
        }
        Ok(p)
    }

    pub fn required(&self) -> bool {
        !self.anchors.is_empty()
    }

    /// The snapshot `spec` names, checked. With anchors: a full id, or the newest
    /// snapshot of a name that verifies (newer ones that do not are named in a warning);
    /// never an id prefix.
    pub fn resolve(&self, repo: &Repository, spec: &str) -> Result<(Snapshot, Verdict)> {
        if !self.required() {
            let snap = repo.resolve(spec)?;
            self.check_age(spec, &snap)?;
            return Ok((snap, Verdict::Unchecked));
        }
        if let Ok(id) = spec.parse::<SnapshotId>() {
            let snap = repo.load_snapshot(&id)?;
            let verdict = self.verify(repo, &snap)?;
            return Ok((snap, verdict));
        }
        let mut candidates: Vec<Snapshot> = repo
            .snapshots()?
            .into_iter()
            .filter_map(|(_, s)| s.ok())
            .filter(|s| s.manifest.name == spec)
            .collect();
        let hex_like =
            spec.len() >= 4 && spec.len() < 64 && spec.bytes().all(|b| b.is_ascii_hexdigit());
        if candidates.is_empty() && hex_like {
            bail!(
                "{spec:?} looks like a snapshot id prefix: signatures are required, so give the whole id (a prefix is resolved against a listing the server controls)"
            );
        }
        let mut refused = Vec::new();
        while let Some(snap) = candidates.pop() {
            match self.verify(repo, &snap) {
                Ok(v) => {
                    for r in &refused {
                        log::warn!("a newer snapshot named {spec:?} was passed over: {r}");
                    }
                    self.check_age(spec, &snap)?;
                    self.check_head(repo, spec, &snap)?;
                    return Ok((snap, v));
                }
                Err(e) => refused.push(format!("{e:#}")),
            }
        }
        match refused.first() {
            Some(newest) => bail!("no snapshot named {spec:?} can be trusted: {newest}"),
            None => bail!(
                "no snapshot named {spec:?} in {} (see `lifeboat snapshots`)",
                repo.display
            ),
        }
    }

    /// Check one snapshot's signatures and bindings.
    pub fn verify(&self, repo: &Repository, snap: &Snapshot) -> Result<Verdict> {
        if !self.required() {
            return Ok(Verdict::Unchecked);
        }
        let id = &snap.id;
        let mut revoked_signers = Vec::new();
        let mut signed_by = None;
        for key in &self.anchors {
            let kid = key.id();
            let object = Object::Signature(*id, kid);
            let raw = match repo.store().get_at_most(&object, MAX_SIGNATURE_BYTES) {
                Ok(raw) => raw,
                Err(StoreError::NotFound { .. }) => continue,
                Err(e) => {
                    return Err(anyhow::Error::new(e))
                        .with_context(|| format!("read the signature of snapshot {}", id.short()))
                }
            };
            SignatureFile::parse_and_verify(&raw, id, key).with_context(|| {
                format!(
                    "snapshot {} carries a bad signature by key {kid} ({})",
                    id.short(),
                    repo.store().location(&object)
                )
            })?;
            if self.revoked.contains(&kid) {
                revoked_signers.push(kid.to_string());
            } else {
                signed_by = Some(kid);
                break;
            }
        }
        match signed_by {
            Some(kid) => {
                self.check_binding(repo, snap)?;
                Ok(Verdict::Signed(kid))
            }
            None if !revoked_signers.is_empty() => bail!(
                "snapshot {} ({}) is signed only by revoked key {}",
                id.short(),
                snap.manifest.name,
                revoked_signers.join(", ")
            ),
            None => {
                let others = other_signers(repo, id);
                if self.insecure && others.is_empty() {
                    log::warn!(
                        "snapshot {} carries no signature: let through by --allow-unsigned",
                        id.short()
                    );
                    return Ok(Verdict::UnsignedAllowed);
                }
                let trusted: Vec<String> =
                    self.anchors.iter().map(|k| k.id().to_string()).collect();
                if others.is_empty() {
                    bail!(
                        "snapshot {} ({}) is not signed, and signatures are required (trusted keys: {})",
                        id.short(),
                        snap.manifest.name,
                        trusted.join(", ")
                    )
                }
                bail!(
                    "snapshot {} ({}) is signed only by key {}, which is not trusted (trusted keys: {})",
                    id.short(),
                    snap.manifest.name,
                    others.join(", "),
                    trusted.join(", ")
                )
            }
        }
    }

    /// A signed manifest must name this repository: a snapshot signed for one repository
    /// and copied into another is refused.
    fn check_binding(&self, repo: &Repository, snap: &Snapshot) -> Result<()> {
        match &snap.manifest.repository {
            Some(r) if *r == repo.config.id => Ok(()),
            Some(r) => bail!(
                "snapshot {} was captured into repository {r}, not this one ({}): copied or replayed",
                snap.id.short(),
                repo.config.id
            ),
            None => bail!(
                "snapshot {} does not name its repository, so its signature cannot bind it here",
                snap.id.short()
            ),
        }
    }

    /// A snapshot chosen by name must not be older than the newest signed one of that
    /// name this machine has seen (`heads`); a newer one is remembered. (A full id pins
    /// a snapshot on purpose and is not checked.)
    fn check_head(&self, repo: &Repository, spec: &str, snap: &Snapshot) -> Result<()> {
        let (Some(dir), Some(sequence)) = (&self.state_dir, snap.manifest.sequence) else {
            return Ok(());
        };
        let repository = &repo.config.id;
        if let Some(seen) = super::heads::seen(dir, repository, spec)? {
            if sequence < seen {
                bail!(
                    "the newest signed snapshot of {spec:?} served is {} (sequence {sequence}), but this machine has seen sequence {seen} of it signed: an older snapshot is being served in place of the newest (to restore an older one on purpose, give its full id)",
                    snap.id.short()
                );
            }
        }
        super::heads::record(dir, repository, spec, sequence)
    }

    /// `--max-age`: a snapshot chosen by name must be recent.
    fn check_age(&self, spec: &str, snap: &Snapshot) -> Result<()> {
        let Some(max) = self.max_age.filter(|_| snap.manifest.name == spec) else {
            // No bound, or the snapshot was pinned by its id.
            return Ok(());
        };
        let taken = crate::time::parse_loose(&snap.manifest.time)
            .with_context(|| format!("snapshot {} has no readable time", snap.id.short()))?;
        let age = SystemTime::now().duration_since(taken).unwrap_or_default();
        if age > max {
            bail!(
                "the newest usable snapshot of {spec:?} ({}, taken {}) is {} old, more than --max-age {}",
                snap.id.short(),
                snap.manifest.time,
                crate::time::human(age),
                crate::time::exact(max)
            );
        }
        Ok(())
    }
}

/// A `--trust` value: a public key file, or the key itself.
fn parse_anchor(s: &str) -> Result<PublicKey> {
    if s.starts_with("ed25519:") {
        return s.parse().context("--trust");
    }
    PublicKey::load(std::path::Path::new(s))
}

/// A revoked-keys file: key ids or public keys, one per line; `#` comments.
fn read_revoked(path: &std::path::Path) -> Result<Vec<KeyId>> {
    let meta = std::fs::metadata(path).with_context(|| format!("read {}", path.display()))?;
    if !meta.is_file() || meta.len() > 1 << 20 {
        bail!("{} is not a revoked-keys file", path.display());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.parse::<PublicKey>() {
            Ok(k) => Ok(k.id()),
            Err(_) => l.parse::<KeyId>().with_context(|| {
                format!("{}: {l:?} is neither a key id nor a key", path.display())
            }),
        })
        .collect()
}

/// The key ids of signatures a snapshot carries (from the listing: only for messages).
fn other_signers(repo: &Repository, id: &SnapshotId) -> Vec<String> {
    repo.store()
        .objects(&Dir::Snapshots)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|o| match o {
            Object::Signature(s, key) if s == *id => Some(key.to_string()),
            _ => None,
        })
        .collect()
}
