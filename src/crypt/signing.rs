//! Signing keys: an ed25519 key pair per capture host or stick, in two small text files
//! in the spirit of minisign and signify. `NAME.pub` holds one line `ed25519:<64 hex>`
//! (the form `lifeboat.trust=` takes on a kernel command line); `NAME.key` holds the
//! secret seed, `ed25519-secret:<64 hex>`. Lines starting with `#` are comments. A key is
//! known by its id: the first 8 bytes of a domain-separated BLAKE3 of the public key.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use anyhow::{bail, Context, Result};

use crate::hex::{decode as parse_hex, encode as hex};
use chacha20poly1305::aead::Aead;
use ed25519_dalek::{Signer, Verifier};

/// The most a key file may hold (a few comment lines and one key line).
const MAX_KEY_FILE: u64 = 4096;

const PUBLIC_PREFIX: &str = "ed25519:";
const SECRET_PREFIX: &str = "ed25519-secret:";
/// A secret key sealed under a passphrase: argon2id derives a key from the passphrase and
/// a random salt; XChaCha20-Poly1305 seals the seed with it, the line's prefix and
/// parameters as associated data (so that none of them can be changed unnoticed):
/// `ed25519-secret-argon2id:m=KIB,t=N,p=N:<salt hex>:<nonce hex>:<sealed seed hex>`.
const SEALED_PREFIX: &str = "ed25519-secret-argon2id:";
/// argon2id for new keys: 64 MiB, 3 passes, one lane (OWASP's first recommendation).
const ARGON2_M_KIB: u32 = 64 << 10;
const ARGON2_T: u32 = 3;
const ARGON2_P: u32 = 1;

/// A public key's short name: 16 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
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
        write!(f, "{PUBLIC_PREFIX}{}", hex(self.0.as_bytes()))
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

    /// Read `NAME.key`; `passphrase` is asked for only when the key is sealed.
    pub fn load(path: &Path, passphrase: impl FnOnce() -> Result<String>) -> Result<SigningKey> {
        let text = read_key_file(path)?;
        let not_a_key = || format!("{} is not a Lifeboat signing key", path.display());
        let line = key_line(&text, "ed25519-secret").with_context(not_a_key)?;
        let seed = if let Some(sealed) = line.strip_prefix(SEALED_PREFIX) {
            let sealed = Sealed::parse(sealed).with_context(not_a_key)?;
            sealed.open(&passphrase()?).with_context(|| {
                format!(
                    "{}: wrong passphrase (or the file was altered)",
                    path.display()
                )
            })?
        } else {
            line.strip_prefix(SECRET_PREFIX)
                .context("an unknown kind of secret key")
                .and_then(parse_hex::<32>)
                .with_context(not_a_key)?
        };
        Ok(SigningKey(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// The secret key file's text, sealed under `passphrase`.
    pub fn to_sealed_file_text(&self, passphrase: &str) -> Result<String> {
        let sealed = Sealed::seal(&self.0.to_bytes(), passphrase)?;
        Ok(format!(
            "# Lifeboat signing key {}, sealed under a passphrase: keep it on the capturing\n\
             # host only.\n{SEALED_PREFIX}{}\n",
            self.public().id(),
            sealed.text()
        ))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }

    /// The secret key file's text.
    pub fn to_file_text(&self) -> String {
        format!(
            "# Lifeboat signing key {}: keep it on the capturing host only; whoever holds it\n\
             # can sign snapshots that rescues trusting {} will restore.\n{SECRET_PREFIX}{}\n",
            self.public().id(),
            self.public().id(),
            hex(&self.0.to_bytes())
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

/// A seed sealed under a passphrase.
struct Sealed {
    m_kib: u32,
    t: u32,
    p: u32,
    salt: [u8; 16],
    nonce: [u8; 24],
    sealed: [u8; 48],
}

impl Sealed {
    fn seal(seed: &[u8; 32], passphrase: &str) -> Result<Sealed> {
        let mut salt = [0u8; 16];
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("random source: {e}"))?;
        getrandom::fill(&mut nonce).map_err(|e| anyhow::anyhow!("random source: {e}"))?;
        let mut s = Sealed {
            m_kib: ARGON2_M_KIB,
            t: ARGON2_T,
            p: ARGON2_P,
            salt,
            nonce,
            sealed: [0; 48],
        };
        let out = s
            .cipher(passphrase)?
            .encrypt(
                chacha20poly1305::XNonce::from_slice(&s.nonce),
                chacha20poly1305::aead::Payload {
                    msg: seed,
                    aad: s.aad().as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("seal the key"))?;
        s.sealed.copy_from_slice(&out);
        Ok(s)
    }

    fn open(&self, passphrase: &str) -> Result<[u8; 32]> {
        let plain = self
            .cipher(passphrase)?
            .decrypt(
                chacha20poly1305::XNonce::from_slice(&self.nonce),
                chacha20poly1305::aead::Payload {
                    msg: &self.sealed,
                    aad: self.aad().as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("the sealed key does not open"))?;
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&plain);
        Ok(seed)
    }

    fn cipher(&self, passphrase: &str) -> Result<chacha20poly1305::XChaCha20Poly1305> {
        use chacha20poly1305::KeyInit;
        let params = argon2::Params::new(self.m_kib, self.t, self.p, Some(32))
            .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut key = [0u8; 32];
        argon
            .hash_password_into(passphrase.as_bytes(), &self.salt, &mut key)
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
        Ok(chacha20poly1305::XChaCha20Poly1305::new((&key).into()))
    }

    fn params(&self) -> String {
        format!("m={},t={},p={}", self.m_kib, self.t, self.p)
    }

    /// What the seal binds besides the seed: the kind of line and its parameters.
    fn aad(&self) -> String {
        format!("{SEALED_PREFIX}{}", self.params())
    }

    fn text(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.params(),
            hex(&self.salt),
            hex(&self.nonce),
            hex(&self.sealed)
        )
    }

    /// `m=KIB,t=N,p=N:<salt>:<nonce>:<sealed>`, the parameters bounded before any use
    /// (at most 1 GiB of memory, 16 passes, 8 lanes).
    fn parse(s: &str) -> Result<Sealed> {
        let parts: Vec<&str> = s.split(':').collect();
        let [params, salt, nonce, sealed] = parts.as_slice() else {
            bail!("a sealed key has four fields");
        };
        let mut m_kib = 0;
        let mut t = 0;
        let mut p = 0;
        for kv in params.split(',') {
            let (k, v) = kv.split_once('=').context("parameters are k=v")?;
            let v: u32 = v.parse().context("a parameter is a number")?;
            match k {
                "m" => m_kib = v,
                "t" => t = v,
                "p" => p = v,
                _ => bail!("unknown argon2 parameter {k}"),
            }
        }
        if !(8..=1 << 20).contains(&m_kib) || !(1..=16).contains(&t) || !(1..=8).contains(&p) {
            bail!("argon2 parameters out of bounds: m={m_kib} KiB, t={t}, p={p}");
        }
        Ok(Sealed {
            m_kib,
            t,
            p,
            salt: parse_hex(salt)?,
            nonce: parse_hex(nonce)?,
            sealed: parse_hex(sealed)?,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_their_files_and_sign() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate().unwrap();
        std::fs::write(dir.path().join("a.key"), key.to_file_text()).unwrap();
        std::fs::write(dir.path().join("a.pub"), key.public_file_text()).unwrap();
        let loaded = SigningKey::load(&dir.path().join("a.key"), || unreachable!()).unwrap();
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
        assert!(SigningKey::load(&dir.path().join("a.pub"), || unreachable!()).is_err());
        assert!(PublicKey::load(&dir.path().join("a.key")).is_err());
    }

    #[test]
    fn a_sealed_key_opens_with_its_passphrase_only() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate().unwrap();
        let path = dir.path().join("s.key");
        let text = key.to_sealed_file_text("correct horse").unwrap();
        std::fs::write(&path, &text).unwrap();
        let good = SigningKey::load(&path, || Ok("correct horse".into())).unwrap();
        assert_eq!(good.public(), key.public());
        let e = SigningKey::load(&path, || Ok("wrong horse".into()))
            .err()
            .unwrap();
        assert!(format!("{e:#}").contains("wrong passphrase"), "{e:#}");
        // Weaker parameters written over the real ones do not open it either.
        std::fs::write(&path, text.replace("m=65536,t=3", "m=8,t=1")).unwrap();
        assert!(SigningKey::load(&path, || Ok("correct horse".into())).is_err());
        // Absurd parameters are refused before argon2 runs.
        std::fs::write(&path, text.replace("m=65536", "m=4000000000")).unwrap();
        let e = SigningKey::load(&path, || Ok("correct horse".into()))
            .err()
            .unwrap();
        assert!(
            format!("{e:#}").contains("not a Lifeboat signing key"),
            "{e:#}"
        );
    }
}
