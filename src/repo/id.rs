//! Content identifiers: BLAKE3 hashes shown as 64 lowercase hex digits. A `ChunkId` names a
//! chunk by its plaintext; a `SnapshotId` names a manifest by its stored bytes. They are
//! distinct types so that one can never be passed where the other is meant.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, thiserror::Error)]
#[error("not a 64-digit hex id: {0:?}")]
pub struct BadId(pub String);

/// 64 lowercase hex digits into 32 bytes.
fn parse_hex32(s: &str) -> Result<[u8; 32], BadId> {
    crate::hex::canonical::<32>(s).ok_or_else(|| BadId(s.to_string()))
}

macro_rules! hash_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The BLAKE3 hash of `data`.
            pub fn of(data: &[u8]) -> Self {
                $name(*blake3::hash(data).as_bytes())
            }

            pub fn to_hex(&self) -> String {
                crate::hex::encode(&self.0)
            }

            /// The first 8 hex digits, for humans.
            pub fn short(&self) -> String {
                crate::hex::encode(&self.0[..4])
            }
        }

        impl FromStr for $name {
            type Err = BadId;
            fn from_str(s: &str) -> Result<Self, BadId> {
                parse_hex32(s).map($name)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.short())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

hash_id!(
    /// The id of a chunk: BLAKE3-256 of its uncompressed bytes.
    ChunkId
);

impl ChunkId {
    /// A chunk's id in a repository protected as `protection`: the BLAKE3 of its bytes,
    /// keyed in an encrypted repository.
    pub fn under(protection: &crate::crypt::Protection, plain: &[u8]) -> ChunkId {
        match protection.key() {
            Some(c) => ChunkId(c.chunk_id(plain)),
            None => ChunkId::of(plain),
        }
    }
}

hash_id!(
    /// The id of a snapshot: BLAKE3-256 of its manifest as stored.
    SnapshotId
);

hash_id!(
    /// The id of an index file: BLAKE3-256 of the file as stored.
    IndexId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = ChunkId::of(b"lifeboat");
        let s = id.to_string();
        assert_eq!(s.len(), 64);
        assert_eq!(s.parse::<ChunkId>().unwrap(), id);
        assert_eq!(&s[..8], id.short());
        assert!("xyz".parse::<ChunkId>().is_err());
        assert!(s.to_uppercase().parse::<ChunkId>().is_err());
    }

    #[test]
    fn snapshot_ids_in_json_are_hex_strings() {
        let id = SnapshotId::of(b"{}");
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{}\"", id.to_hex()));
        assert_eq!(serde_json::from_str::<SnapshotId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<SnapshotId>("\"abc\"").is_err());
    }
}
