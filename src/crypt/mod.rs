//! Encryption of a repository (`init --encrypt`): one random master key, and from it a
//! subkey for each purpose (BLAKE3 `derive_key`, each with its own context string):
//!
//! - chunk ids: BLAKE3 in keyed mode, so that the store cannot tell whether it holds a
//!   known piece of data, while equal chunks still have equal ids (deduplication);
//! - the chunker's gear table: keyed, so that where chunks are cut (and so their sizes)
//!   says nothing about the data (restic #5291);
//! - region hashes in manifests: keyed, like chunk ids;
//! - the data and metadata ciphers: AES-256-GCM-SIV (RFC 8452), deterministic and
//!   misuse-resistant: equal plaintext gives equal ciphertext, so that stored objects are
//!   still named by the BLAKE3 of their bytes and a server checks every push without a
//!   key. A chunk's nonce is the first 12 bytes of its (keyed) id; a metadata object's is
//!   a keyed hash of its kind and plaintext, stored in its envelope.
//!
//! `docs/repository-format.md` specifies all of it byte by byte. The repository wraps the
//! master key under passphrases in its key files (`repo::keyfile`).
//!
//! Beside it: passphrases, held wiped and read from a file or the terminal
//! (`passphrase`), and the ed25519 signing keys that sign snapshots (`signing`).
//! Nothing here knows a repository: ids, frames and objects are bytes to it.

pub mod passphrase;
pub mod signing;

pub use passphrase::Passphrase;

use aes_gcm_siv::aead::{AeadInPlace, KeyInit};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use zeroize::Zeroizing;

/// The magic that starts a sealed metadata object.
pub const ENVELOPE_MAGIC: &[u8; 8] = b"LBSEAL01";
const NONCE: usize = 12;
const TAG: usize = 16;
/// Bytes an envelope adds to its plaintext: magic, kind, nonce, tag.
pub const ENVELOPE_OVERHEAD: usize = ENVELOPE_MAGIC.len() + 1 + NONCE + TAG;
/// Bytes encryption adds to a stored chunk: the tag (the nonce is its id's).
pub const CHUNK_OVERHEAD: usize = TAG;
/// The algorithms of an encrypted repository, as its config names them.
pub const ALGORITHM: &str = "aes-256-gcm-siv";

/// What a sealed metadata object is; bound into its ciphertext, so that one kind cannot
/// be passed off as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Manifest = 1,
    Index = 2,
    PackTrailer = 3,
    Journal = 4,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Manifest => "manifest",
            Kind::Index => "index file",
            Kind::PackTrailer => "pack trailer",
            Kind::Journal => "journal record",
        }
    }
}

/// Why a sealed object does not open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    #[error("it is not a sealed {0} (no envelope, or another kind)")]
    NotSealed(&'static str),
    #[error("it fails authentication: altered, or sealed under another repository's key")]
    Forged,
}

/// A repository's master key: 32 random bytes, never stored in the clear.
pub struct MasterKey(pub(crate) Zeroizing<[u8; 32]>);

impl MasterKey {
    pub fn generate() -> anyhow::Result<MasterKey> {
        let mut k = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut k[..]).map_err(|e| anyhow::anyhow!("random source: {e}"))?;
        Ok(MasterKey(k))
    }

    pub fn from_bytes(b: [u8; 32]) -> MasterKey {
        MasterKey(Zeroizing::new(b))
    }

    fn derive(&self, purpose: &str) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(blake3::derive_key(
            &format!("lifeboat repository 2026-12 {purpose}"),
            &self.0[..],
        ))
    }
}

/// An unlocked master key shared by the parts of one process (the rescue unlocks once,
/// then captures or restores with it); never shown by `Debug`.
#[derive(Clone)]
pub struct SharedKey(pub std::sync::Arc<MasterKey>);

impl std::fmt::Debug for SharedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedKey(..)")
    }
}

/// The chunker's gear tables (plain and left-shifted), as `fastcdc::v2020::cut_gear` wants.
pub struct Gear {
    pub gear: Box<[u64; 256]>,
    pub gear_ls: Box<[u64; 256]>,
}

impl Gear {
    /// FastCDC 2020's standard table (seed 0), for repositories that are not encrypted.
    pub fn standard() -> Gear {
        let (gear, gear_ls) = fastcdc::v2020::get_gear_with_seed(0);
        Gear { gear, gear_ls }
    }

    /// The standard table, made once.
    pub fn shared_standard() -> std::sync::Arc<Gear> {
        static STANDARD: std::sync::OnceLock<std::sync::Arc<Gear>> = std::sync::OnceLock::new();
        STANDARD
            .get_or_init(|| std::sync::Arc::new(Gear::standard()))
            .clone()
    }

    /// 256 words from BLAKE3's output stream under `key`.
    fn keyed(key: &[u8; 32]) -> Gear {
        let mut bytes = [0u8; 256 * 8];
        blake3::Hasher::new_keyed(key)
            .update(b"gear")
            .finalize_xof()
            .fill(&mut bytes);
        let mut gear = Box::new([0u64; 256]);
        for (g, b) in gear.iter_mut().zip(bytes.chunks_exact(8)) {
            *g = u64::from_le_bytes(b.try_into().expect("8 bytes"));
        }
        let mut gear_ls = Box::new([0u64; 256]);
        for (l, g) in gear_ls.iter_mut().zip(gear.iter()) {
            *l = g << 1;
        }
        Gear { gear, gear_ls }
    }
}

/// The keys of an unlocked, encrypted repository.
pub struct Crypt {
    id_key: Zeroizing<[u8; 32]>,
    region_key: Zeroizing<[u8; 32]>,
    nonce_key: Zeroizing<[u8; 32]>,
    gear: std::sync::Arc<Gear>,
    data: Aes256GcmSiv,
    meta: Aes256GcmSiv,
}

impl Crypt {
    pub fn new(master: &MasterKey) -> Crypt {
        let data = master.derive("chunk data aes-256-gcm-siv");
        let meta = master.derive("metadata aes-256-gcm-siv");
        Crypt {
            id_key: master.derive("chunk id blake3"),
            region_key: master.derive("region hash blake3"),
            nonce_key: master.derive("metadata nonce blake3"),
            gear: std::sync::Arc::new(Gear::keyed(&master.derive("chunker gear table"))),
            data: Aes256GcmSiv::new((&*data).into()),
            meta: Aes256GcmSiv::new((&*meta).into()),
        }
    }

    /// A chunk's id: BLAKE3 keyed with the repository's id key.
    pub fn chunk_id(&self, plain: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.id_key, plain).as_bytes()
    }

    /// The key of region hashes.
    pub fn region_key(&self) -> &[u8; 32] {
        &self.region_key
    }

    pub fn gear(&self) -> std::sync::Arc<Gear> {
        self.gear.clone()
    }

    fn chunk_aad(id: &[u8; 32]) -> [u8; 48] {
        let mut aad = [0u8; 48];
        aad[..16].copy_from_slice(b"lifeboat chunk\0\x01");
        aad[16..].copy_from_slice(id);
        aad
    }

    /// Encrypt a stored (compressed) chunk in place, under its (keyed) id: the tag is
    /// appended.
    pub fn seal_chunk(&self, id: &[u8; 32], frame: &mut Vec<u8>) {
        frame.reserve(TAG);
        self.data
            .encrypt_in_place(Nonce::from_slice(&id[..NONCE]), &Self::chunk_aad(id), frame)
            .expect("AES-GCM-SIV seals any buffer under 64 GiB");
    }

    /// Decrypt a stored chunk in place, checking its tag.
    pub fn open_chunk(&self, id: &[u8; 32], stored: &mut Vec<u8>) -> Result<(), OpenError> {
        if stored.len() < TAG {
            return Err(OpenError::Forged);
        }
        self.data
            .decrypt_in_place(
                Nonce::from_slice(&id[..NONCE]),
                &Self::chunk_aad(id),
                stored,
            )
            .map_err(|_| OpenError::Forged)
    }

    fn meta_aad(kind: Kind) -> [u8; 16] {
        let mut aad = [0u8; 16];
        aad[..15].copy_from_slice(b"lifeboat meta\0\x01");
        aad[15] = kind as u8;
        aad
    }

    /// Seal a metadata object: `magic kind nonce ciphertext tag`. The nonce is a keyed
    /// hash of the kind and plaintext, so that sealing is deterministic.
    pub fn seal(&self, kind: Kind, plain: &[u8]) -> Vec<u8> {
        let mut h = blake3::Hasher::new_keyed(&self.nonce_key);
        h.update(&[kind as u8]);
        h.update(plain);
        let nonce = h.finalize();
        let nonce = &nonce.as_bytes()[..NONCE];
        let mut out = Vec::with_capacity(plain.len() + ENVELOPE_OVERHEAD);
        out.extend_from_slice(ENVELOPE_MAGIC);
        out.push(kind as u8);
        out.extend_from_slice(nonce);
        let head = out.len();
        out.extend_from_slice(plain);
        let tag = self
            .meta
            .encrypt_in_place_detached(
                Nonce::from_slice(nonce),
                &Self::meta_aad(kind),
                &mut out[head..],
            )
            .expect("AES-GCM-SIV seals any buffer under 64 GiB");
        out.extend_from_slice(&tag);
        out
    }

    /// Open a sealed metadata object of `kind`.
    pub fn open(&self, kind: Kind, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        check_envelope(kind, sealed)?;
        let head = ENVELOPE_MAGIC.len() + 1;
        let nonce = Nonce::from_slice(&sealed[head..head + NONCE]);
        let body = &sealed[head + NONCE..];
        let (ct, tag) = body.split_at(body.len() - TAG);
        let mut plain = ct.to_vec();
        self.meta
            .decrypt_in_place_detached(nonce, &Self::meta_aad(kind), &mut plain, tag.into())
            .map_err(|_| OpenError::Forged)?;
        Ok(plain)
    }
}

/// How a repository's objects are protected, as one reader holds it.
#[derive(Clone)]
pub enum Protection {
    /// Not encrypted.
    Plain,
    /// Encrypted, and this reader has no key (`lifeboat serve`): it can check the shape
    /// and names of objects, never their content.
    Locked,
    /// Encrypted, and unlocked.
    Unlocked(std::sync::Arc<Crypt>),
}

impl Protection {
    pub fn key(&self) -> Option<&Crypt> {
        match self {
            Protection::Unlocked(c) => Some(c),
            _ => None,
        }
    }

    pub fn is_encrypted(&self) -> bool {
        !matches!(self, Protection::Plain)
    }
}

/// Whether `sealed` is shaped as a sealed object of `kind` (what a server without the key
/// can check).
pub fn check_envelope(kind: Kind, sealed: &[u8]) -> Result<(), OpenError> {
    if sealed.len() < ENVELOPE_OVERHEAD
        || &sealed[..ENVELOPE_MAGIC.len()] != ENVELOPE_MAGIC
        || sealed[ENVELOPE_MAGIC.len()] != kind as u8
    {
        return Err(OpenError::NotSealed(kind.name()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crypt(seed: u8) -> Crypt {
        Crypt::new(&MasterKey::from_bytes([seed; 32]))
    }

    #[test]
    fn chunks_seal_deterministically_and_open_only_under_their_key_and_id() {
        let c = crypt(1);
        let id = c.chunk_id(b"some data");
        assert_ne!(id, *blake3::hash(b"some data").as_bytes(), "ids are keyed");
        let mut a = b"frame bytes".to_vec();
        let mut b = a.clone();
        c.seal_chunk(&id, &mut a);
        c.seal_chunk(&id, &mut b);
        assert_eq!(a, b, "equal plaintext, equal ciphertext");
        assert_eq!(a.len(), 11 + CHUNK_OVERHEAD);
        assert!(!a.windows(5).any(|w| w == b"frame"));
        let mut wrong_key = a.clone();
        assert_eq!(
            crypt(2).open_chunk(&id, &mut wrong_key),
            Err(OpenError::Forged)
        );
        let mut wrong_id = a.clone();
        let other = c.chunk_id(b"other");
        assert_eq!(c.open_chunk(&other, &mut wrong_id), Err(OpenError::Forged));
        let mut flipped = a.clone();
        flipped[3] ^= 1;
        assert_eq!(c.open_chunk(&id, &mut flipped), Err(OpenError::Forged));
        c.open_chunk(&id, &mut a).unwrap();
        assert_eq!(a, b"frame bytes");
        assert_eq!(c.open_chunk(&id, &mut vec![1, 2]), Err(OpenError::Forged));
    }

    #[test]
    fn envelopes_bind_their_kind_and_key() {
        let c = crypt(1);
        let sealed = c.seal(Kind::Index, b"index plaintext");
        assert_eq!(sealed, c.seal(Kind::Index, b"index plaintext"));
        assert_eq!(sealed.len(), 15 + ENVELOPE_OVERHEAD);
        assert_eq!(c.open(Kind::Index, &sealed).unwrap(), b"index plaintext");
        assert!(matches!(
            c.open(Kind::Manifest, &sealed),
            Err(OpenError::NotSealed(_))
        ));
        let mut relabelled = sealed.clone();
        relabelled[8] = Kind::Manifest as u8;
        assert_eq!(c.open(Kind::Manifest, &relabelled), Err(OpenError::Forged));
        assert_eq!(crypt(2).open(Kind::Index, &sealed), Err(OpenError::Forged));
        for cut in [0, 8, 20, sealed.len() - 1] {
            assert!(c.open(Kind::Index, &sealed[..cut]).is_err());
        }
        assert!(c
            .open(Kind::Index, &c.seal(Kind::Index, b""))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn keyed_gear_tables_differ_by_key_and_keep_the_shifted_twin() {
        let (a, b) = (crypt(1).gear(), crypt(2).gear());
        assert_ne!(a.gear[..], b.gear[..]);
        assert_ne!(a.gear[..], Gear::standard().gear[..]);
        assert!(a
            .gear
            .iter()
            .zip(a.gear_ls.iter())
            .all(|(g, l)| *l == g << 1));
    }
}
