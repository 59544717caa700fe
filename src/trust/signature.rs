//! Snapshot signatures: one small object per signing key beside the manifest,
//! `snapshots/<id>.<key id>.sig`, so that signing (again, or with another key) never
//! changes a snapshot's id and never rewrites an object. A signature is ed25519 over a
//! domain-separated message holding the snapshot id, which is the BLAKE3 of the whole
//! manifest: it covers every byte of it.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::crypt::signing::{KeyId, PublicKey, SigningKey};
use crate::hex::decode as parse_hex;
use crate::repo::admit::{Admission, Admitted, Refusal};
use crate::repo::id::SnapshotId;
use crate::repo::Object;

pub const SIGNATURE_FORMAT: &str = "lifeboat-signature";
pub const SIGNATURE_VERSION: u32 = 1;
/// The most a signature object may hold: it is a few hundred bytes.
pub const MAX_SIGNATURE_BYTES: u64 = 4096;

/// What is signed for a snapshot.
pub fn message(id: &SnapshotId) -> Vec<u8> {
    let mut m = b"lifeboat snapshot signature v1\0".to_vec();
    m.extend_from_slice(&id.0);
    m
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignatureFile {
    pub format: String,
    pub version: u32,
    pub snapshot: String,
    pub key: PublicKey,
    /// 128 hex digits.
    pub signature: String,
}

impl SignatureFile {
    pub fn sign(id: &SnapshotId, key: &SigningKey) -> SignatureFile {
        let sig = key.sign(&message(id));
        SignatureFile {
            format: SIGNATURE_FORMAT.into(),
            version: SIGNATURE_VERSION,
            snapshot: id.to_string(),
            key: key.public(),
            signature: crate::hex::encode(&sig),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).expect("a signature serialises");
        v.push(b'\n');
        v
    }

    /// Parse a signature object and check it: the snapshot and key it claims must be the
    /// ones it was fetched for, and the signature must hold for that key.
    pub fn parse_and_verify(raw: &[u8], id: &SnapshotId, key: &PublicKey) -> Result<()> {
        let f: SignatureFile = serde_json::from_slice(raw).context("does not parse")?;
        if f.format != SIGNATURE_FORMAT || f.version != SIGNATURE_VERSION {
            bail!(
                "format {:?} version {}, not {SIGNATURE_FORMAT} {SIGNATURE_VERSION}",
                f.format,
                f.version
            );
        }
        if f.snapshot != id.to_string() {
            bail!("it is for snapshot {}", f.snapshot);
        }
        if f.key != *key {
            bail!("it names key {}", f.key.id());
        }
        let sig = parse_hex::<64>(&f.signature).context("the signature is not 128 hex digits")?;
        if !key.verify(&message(id), &sig) {
            bail!("the signature does not verify: the manifest or the signature was altered");
        }
        Ok(())
    }
}

/// A signature a writer sends (`lifeboat serve`): it must be a valid signature of that
/// snapshot by the key its name gives, and the manifest must be stored already.
pub fn admit(
    admission: &Admission,
    id: &SnapshotId,
    key: &KeyId,
    body: &[u8],
) -> Result<Admitted, Refusal> {
    let claimed = match serde_json::from_slice::<SignatureFile>(body) {
        Ok(f) => f.key,
        Err(e) => {
            return Err(Refusal::Invalid(format!(
                "the signature does not parse: {e}"
            )))
        }
    };
    if claimed.id() != *key {
        return Err(Refusal::Invalid(format!(
            "the signature is by key {}, not {key}",
            claimed.id()
        )));
    }
    if let Err(e) = SignatureFile::parse_and_verify(body, id, &claimed) {
        return Err(Refusal::Invalid(format!(
            "the signature is not valid: {e:#}"
        )));
    }
    let object = Object::Signature(*id, *key);
    match admission.existing(&object) {
        Some(there) if there == body => return Ok(Admitted::AlreadyStored),
        Some(_) => {
            return Err(Refusal::Conflict(format!(
                "{object} exists, with other content: objects are never replaced"
            )))
        }
        None => {}
    }
    admission.require(&Object::Snapshot(*id), || {
        format!("snapshot {id} is not stored; push it first")
    })?;
    admission.small(&object, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_holds_only_for_its_snapshot_and_key() {
        let key = SigningKey::generate().unwrap();
        let other = SigningKey::generate().unwrap();
        let id = SnapshotId::of(b"manifest");
        let raw = SignatureFile::sign(&id, &key).to_bytes();
        SignatureFile::parse_and_verify(&raw, &id, &key.public()).unwrap();
        let e = SignatureFile::parse_and_verify(&raw, &id, &other.public()).unwrap_err();
        assert!(e.to_string().contains("names key"), "{e}");
        let e = SignatureFile::parse_and_verify(&raw, &SnapshotId::of(b"x"), &key.public())
            .unwrap_err();
        assert!(e.to_string().contains("for snapshot"), "{e}");
        // A signature moved onto another snapshot's claim does not verify.
        let mut forged = SignatureFile::sign(&id, &key);
        forged.snapshot = SnapshotId::of(b"x").to_string();
        let e = SignatureFile::parse_and_verify(
            &forged.to_bytes(),
            &SnapshotId::of(b"x"),
            &key.public(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("does not verify"), "{e}");
        assert!(SignatureFile::parse_and_verify(b"{", &id, &key.public()).is_err());
    }
}
