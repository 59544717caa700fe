//! Signing keys: an ed25519 key pair per capture host or stick, in two small text files
//! in the spirit of minisign and signify. `NAME.pub` holds one line `ed25519:<64 hex>`
//! (the form `lifeboat.trust=` takes on a kernel command line); `NAME.key` holds the
//! secret seed, `ed25519-secret:<64 hex>`. Lines starting with `#` are comments. A key is
//! known by its id: the first 8 bytes of a domain-separated BLAKE3 of the public key.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use ed25519_dalek::{Signer, Verifier};

/// The most a key file may hold (a few comment lines and one key line).
const MAX_KEY_FILE: u64 = 4096;

const PUBLIC_PREFIX: &str = "ed25519:";
const SECRET_PREFIX: &str = "ed25519-secret:";

/// A public key's short name: 16 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl FromStr for KeyId {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<KeyId> {
        Ok(KeyId(
            parse_hex::<8>(s).context("a key id is 16 hex digits")?,
        ))
    }
}

/// A public key that signatures are checked against.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl PublicKey {
    pub fn id(&self) -> KeyId {
        let mut h = blake3::Hasher::new();
        h.update(b"lifeboat key id\0");
        h.update(self.0.as_bytes());
        let mut id = [0u8; 8];
        id.copy_from_slice(&h.finalize().as_bytes()[..8]);
        KeyId(id)
    }

    /// Read `NAME.pub`.
    pub fn load(path: &Path) -> Result<PublicKey> {
        let text = read_key_file(path)?;
        key_line(&text, PUBLIC_PREFIX)
            .and_then(|l| l.parse())
            .with_context(|| format!("{} is not a Lifeboat public key", path.display()))
    }

    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        self.0
            .verify(message, &ed25519_dalek::Signature::from_bytes(signature))
            .is_ok()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(PUBLIC_PREFIX)?;
        self.0
            .as_bytes()
            .iter()
            .try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.id())
    }
}

impl FromStr for PublicKey {
    type Err = anyhow::Error;
    /// `ed25519:<64 hex>`.
    fn from_str(s: &str) -> Result<PublicKey> {
        let hex = s
            .trim()
            .strip_prefix(PUBLIC_PREFIX)
            .context("a public key is written ed25519:<64 hex digits>")?;
        let bytes = parse_hex::<32>(hex).context("a public key is 64 hex digits")?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map_err(|_| anyhow::anyhow!("not a valid ed25519 public key"))?;
        if key.is_weak() {
            bail!("a weak ed25519 public key (of small order)");
        }
        Ok(PublicKey(key))
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<PublicKey, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e: anyhow::Error| serde::de::Error::custom(format!("{e:#}")))
    }
}

/// A secret signing key.
pub struct SigningKey(ed25519_dalek::SigningKey);

impl SigningKey {
    /// A new key from the system's random source.
    pub fn generate() -> Result<SigningKey> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("random source: {e}"))?;
        Ok(SigningKey(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// Read `NAME.key`.
    pub fn load(path: &Path) -> Result<SigningKey> {
        let text = read_key_file(path)?;
        let seed = key_line(&text, SECRET_PREFIX)
            .and_then(|l| parse_hex::<32>(l.strip_prefix(SECRET_PREFIX).unwrap_or(l)))
            .with_context(|| format!("{} is not a Lifeboat signing key", path.display()))?;
        Ok(SigningKey(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }

    /// The secret key file's text.
    pub fn to_file_text(&self) -> String {
        let hex: String = self
            .0
            .to_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!(
            "# Lifeboat signing key {}: keep it on the capturing host only; whoever holds it\n\
             # can sign snapshots that rescues trusting {} will restore.\n{SECRET_PREFIX}{hex}\n",
            self.public().id(),
            self.public().id()
        )
    }

    /// The public key file's text.
    pub fn public_file_text(&self) -> String {
        format!(
            "# Lifeboat public key {}: give it to restores and rescues (--trust)\n{}\n",
            self.public().id(),
            self.public()
        )
    }
}

/// A key file's text: a regular file of at most `MAX_KEY_FILE` bytes.
fn read_key_file(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).with_context(|| format!("read {}", path.display()))?;
    if !meta.is_file() || meta.len() > MAX_KEY_FILE {
        bail!(
            "{} is not a key file (a small regular file)",
            path.display()
        );
    }
    std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))
}

/// The one line of `text` that starts with `prefix`.
fn key_line<'a>(text: &'a str, prefix: &str) -> Result<&'a str> {
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    match (lines.next(), lines.next()) {
        (Some(l), None) if l.starts_with(prefix) => Ok(l),
        _ => bail!("expected one line starting with {prefix}"),
    }
}

/// Exactly `N` bytes written as 2N hex digits.
pub fn parse_hex<const N: usize>(s: &str) -> Result<[u8; N]> {
    let s = s.trim();
    if s.len() != 2 * N || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("expected {} hex digits", 2 * N);
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_their_files_and_sign() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate().unwrap();
        std::fs::write(dir.path().join("a.key"), key.to_file_text()).unwrap();
        std::fs::write(dir.path().join("a.pub"), key.public_file_text()).unwrap();
        let loaded = SigningKey::load(&dir.path().join("a.key")).unwrap();
        let public = PublicKey::load(&dir.path().join("a.pub")).unwrap();
        assert_eq!(public, key.public());
        assert_eq!(loaded.public(), key.public());
        let sig = loaded.sign(b"message");
        assert!(public.verify(b"message", &sig));
        assert!(!public.verify(b"messagf", &sig));
        let other = SigningKey::generate().unwrap();
        assert_ne!(other.public().id(), public.id());
        assert!(!other.public().verify(b"message", &sig));
        // The command-line form parses back; garbage does not.
        assert_eq!(public.to_string().parse::<PublicKey>().unwrap(), public);
        assert!("ed25519:00".parse::<PublicKey>().is_err());
        assert!(format!("ed25519:{}", "0".repeat(64))
            .parse::<PublicKey>()
            .is_err());
        // A public key is no secret key, and the other way round.
        assert!(SigningKey::load(&dir.path().join("a.pub")).is_err());
        assert!(PublicKey::load(&dir.path().join("a.key")).is_err());
    }
}
