//! Key files: the master key wrapped under a passphrase (argon2id, then
//! XChaCha20-Poly1305 with a random nonce), kept in the repository under `keys/`, one per
//! passphrase. What a key file seals also names the repository and its chunker settings,
//! so that an unlocked key authenticates the parts of `config.json` that matter. And the
//! printable recovery copy of a master key (`lifeboat key export`).

use anyhow::{bail, Context, Result};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::ChunkerParams;
use crate::crypt::MasterKey;
use crate::hex::{decode as parse_hex, encode as hex};

/// The most a key file may hold.
pub const MAX_KEY_FILE: u64 = 64 << 10;
const FORMAT: &str = "lifeboat-key";
const AAD: &[u8] = b"lifeboat key file v1";
/// argon2id's cost: 64 MiB and three passes (OWASP's second recommendation), about half a
/// second on this project's 2-core test machine; a rescue has the memory.
const M_KIB: u32 = 64 << 10;
const T: u32 = 3;
const P: u32 = 1;

/// A key file as stored (`keys/<name>.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyFile {
    pub format: String,
    pub created: String,
    /// Who made it, for `key list`; not secret, not trusted.
    pub host: String,
    pub user: String,
    pub kdf: Kdf,
    /// 24 bytes, hex.
    pub nonce: String,
    /// The sealed `Secret`, hex.
    pub sealed: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Kdf {
    pub algorithm: String,
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
    /// 16 bytes, hex.
    pub salt: String,
}

/// What a key file seals.
#[derive(Serialize, Deserialize)]
struct Secret {
    repository: String,
    master: String,
    chunker: ChunkerParams,
}

/// A master key unlocked from a key file, with what the key file bound it to.
pub struct Unlocked {
    pub master: MasterKey,
    pub repository: String,
    pub chunker: ChunkerParams,
}

/// Why a key file does not open.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("the passphrase does not open it")]
    WrongPassphrase,
    #[error("it is malformed: {0}")]
    Malformed(String),
}

impl Kdf {
    fn key(&self, passphrase: &str) -> Result<Zeroizing<[u8; 32]>, KeyFileError> {
        if self.algorithm != "argon2id" {
            return Err(KeyFileError::Malformed(format!(
                "unknown key derivation {:?}",
                self.algorithm
            )));
        }
        // Bounded before use: at most 1 GiB of memory, 16 passes, 8 lanes.
        if !(8..=1 << 20).contains(&self.m_kib)
            || !(1..=16).contains(&self.t)
            || !(1..=8).contains(&self.p)
        {
            return Err(KeyFileError::Malformed(format!(
                "argon2 parameters out of bounds: m={} KiB, t={}, p={}",
                self.m_kib, self.t, self.p
            )));
        }
        let salt: [u8; 16] =
            parse_hex(&self.salt).map_err(|e| KeyFileError::Malformed(format!("salt: {e:#}")))?;
        let params = argon2::Params::new(self.m_kib, self.t, self.p, Some(32))
            .map_err(|e| KeyFileError::Malformed(format!("argon2 parameters: {e}")))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut key = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(passphrase.as_bytes(), &salt, &mut key[..])
            .map_err(|e| KeyFileError::Malformed(format!("argon2: {e}")))?;
        Ok(key)
    }
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("random source: {e}"))?;
    Ok(b)
}

impl KeyFile {
    /// Wrap `master` (of repository `repository`, cut by `chunker`) under `passphrase`.
    pub fn seal(
        master: &MasterKey,
        repository: &str,
        chunker: &ChunkerParams,
        passphrase: &str,
    ) -> Result<KeyFile> {
        Self::seal_at_cost(master, repository, chunker, passphrase, M_KIB, T)
    }

    /// `seal` with other argon2id costs (memory in KiB, passes): for fuzz seeds.
    pub fn seal_at_cost(
        master: &MasterKey,
        repository: &str,
        chunker: &ChunkerParams,
        passphrase: &str,
        m_kib: u32,
        t: u32,
    ) -> Result<KeyFile> {
        let kdf = Kdf {
            algorithm: "argon2id".into(),
            m_kib,
            t,
            p: P,
            salt: hex(&random::<16>()?),
        };
        let nonce = random::<24>()?;
        let secret = Zeroizing::new(serde_json::to_vec(&Secret {
            repository: repository.to_string(),
            master: hex(&master.0[..]),
            chunker: *chunker,
        })?);
        let key = kdf.key(passphrase).map_err(|e| anyhow::anyhow!("{e}"))?;
        let sealed = XChaCha20Poly1305::new((&*key).into())
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &secret,
                    aad: AAD,
                },
            )
            .map_err(|_| anyhow::anyhow!("seal the master key"))?;
        Ok(KeyFile {
            format: FORMAT.into(),
            created: crate::time::now_rfc3339(),
            host: crate::who::hostname(),
            user: crate::who::username(),
            kdf,
            nonce: hex(&nonce),
            sealed: hex(&sealed),
        })
    }

    /// Parse a key file's bytes (at most `MAX_KEY_FILE`).
    pub fn parse(raw: &[u8]) -> Result<KeyFile, KeyFileError> {
        if raw.len() as u64 > MAX_KEY_FILE {
            return Err(KeyFileError::Malformed("too large".into()));
        }
        let f: KeyFile =
            serde_json::from_slice(raw).map_err(|e| KeyFileError::Malformed(e.to_string()))?;
        if f.format != FORMAT {
            return Err(KeyFileError::Malformed(format!("format is not {FORMAT:?}")));
        }
        Ok(f)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = serde_json::to_vec_pretty(self).expect("a key file serializes");
        b.push(b'\n');
        b
    }

    /// Unwrap the master key with `passphrase`.
    pub fn open(&self, passphrase: &str) -> Result<Unlocked, KeyFileError> {
        let nonce: [u8; 24] =
            parse_hex(&self.nonce).map_err(|e| KeyFileError::Malformed(format!("nonce: {e:#}")))?;
        if self.sealed.len() > 8192 || !self.sealed.len().is_multiple_of(2) {
            return Err(KeyFileError::Malformed("the sealed key's length".into()));
        }
        let sealed = crate::hex::canonical_vec(&self.sealed)
            .ok_or_else(|| KeyFileError::Malformed("the sealed key is not hex".into()))?;
        let key = self.kdf.key(passphrase)?;
        let plain = Zeroizing::new(
            XChaCha20Poly1305::new((&*key).into())
                .decrypt(
                    XNonce::from_slice(&nonce),
                    Payload {
                        msg: &sealed,
                        aad: AAD,
                    },
                )
                .map_err(|_| KeyFileError::WrongPassphrase)?,
        );
        let secret: Secret = serde_json::from_slice(&plain)
            .map_err(|e| KeyFileError::Malformed(format!("its sealed content: {e}")))?;
        let master: Zeroizing<[u8; 32]> = Zeroizing::new(
            parse_hex(&secret.master)
                .map_err(|e| KeyFileError::Malformed(format!("master key: {e:#}")))?,
        );
        Ok(Unlocked {
            master: MasterKey(master),
            repository: secret.repository,
            chunker: secret.chunker,
        })
    }

    /// The name it is stored under: the first 8 bytes of its BLAKE3.
    pub fn name(bytes: &[u8]) -> KeyFileId {
        let mut id = [0u8; 8];
        id.copy_from_slice(&blake3::hash(bytes).as_bytes()[..8]);
        KeyFileId(id)
    }
}

/// A key file's name: 16 hex digits of the BLAKE3 of its bytes (`keys/<id>.json`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyFileId(pub [u8; 8]);

impl std::fmt::Display for KeyFileId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl std::fmt::Debug for KeyFileId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyFileId({self})")
    }
}

impl std::str::FromStr for KeyFileId {
    type Err = String;
    fn from_str(s: &str) -> Result<KeyFileId, String> {
        crate::hex::canonical::<8>(s)
            .map(KeyFileId)
            .ok_or_else(|| format!("{s:?} is not a key file's name (16 hex digits)"))
    }
}

impl serde::Serialize for KeyFileId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

const RECOVERY_TAG: &str = "LBR1";

/// A master key's printable recovery copy: `LBR1-<repository id>-<key in 8 groups of 8
/// hex digits>-<check>`, where the check is 8 hex digits of the BLAKE3 of the rest (a
/// mistyped digit is found before anything is tried with it).
pub fn recovery_text(repository: &str, master: &MasterKey) -> String {
    let key = hex(&master.0[..]);
    let groups: Vec<&str> = (0..8).map(|i| &key[i * 8..i * 8 + 8]).collect();
    let body = format!("{RECOVERY_TAG}-{repository}-{}", groups.join("-"));
    let check = hex(&blake3::hash(body.as_bytes()).as_bytes()[..4]);
    format!("{body}-{check}")
}

/// Parse a recovery copy (whitespace and line breaks anywhere are ignored, as are lines
/// starting with `#`): the repository id and master key.
pub fn parse_recovery(text: &str) -> Result<(String, MasterKey)> {
    let joined: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.chars())
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    let parts: Vec<&str> = joined.split('-').collect();
    if parts.len() != 11 || parts[0] != RECOVERY_TAG.to_ascii_lowercase() {
        bail!("not a lifeboat recovery key (LBR1-<repository>-<8 groups>-<check>)");
    }
    let body = format!("{RECOVERY_TAG}-{}", parts[1..10].join("-"));
    let check = hex(&blake3::hash(body.as_bytes()).as_bytes()[..4]);
    if parts[10] != check {
        bail!("the recovery key's check digits do not match: a digit is mistyped");
    }
    let master: [u8; 32] = parse_hex(&parts[2..10].concat()).context("the recovery key's key")?;
    Ok((parts[1].to_string(), MasterKey::from_bytes(master)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_open_with_their_passphrase_only() {
        let master = MasterKey::from_bytes([7; 32]);
        let chunker = ChunkerParams::default();
        let f = KeyFile::seal(&master, "repo1", &chunker, "correct horse").unwrap();
        let parsed = KeyFile::parse(&f.to_bytes()).unwrap();
        let u = parsed.open("correct horse").unwrap();
        assert_eq!(*u.master.0, [7; 32]);
        assert_eq!(u.repository, "repo1");
        assert!(matches!(
            parsed.open("wrong"),
            Err(KeyFileError::WrongPassphrase)
        ));
        let mut tampered = parsed.clone();
        tampered.kdf.m_kib = 1 << 30;
        assert!(matches!(
            tampered.open("correct horse"),
            Err(KeyFileError::Malformed(_))
        ));
        assert!(KeyFile::parse(b"{}").is_err());
    }

    #[test]
    fn recovery_copies_round_trip_and_catch_a_typo() {
        let master = MasterKey::from_bytes(*blake3::hash(b"k").as_bytes());
        let text = recovery_text("0123456789abcdef0123456789abcdef", &master);
        let spaced = format!("# comment\n{}\n", text.replace('-', " - ").to_uppercase());
        let (repo, back) = parse_recovery(&spaced).unwrap();
        assert_eq!(repo, "0123456789abcdef0123456789abcdef");
        assert_eq!(*back.0, *master.0);
        let mut typo = text.clone().into_bytes();
        let at = text.len() - 20;
        typo[at] = if typo[at] == b'0' { b'1' } else { b'0' };
        assert!(parse_recovery(std::str::from_utf8(&typo).unwrap()).is_err());
    }
}
