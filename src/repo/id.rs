//! Content identifiers: BLAKE3 hashes shown as 64 lowercase hex digits. A `ChunkId` names a
//! chunk by its plaintext; a `SnapshotId` names a manifest by its stored bytes. They are
//! distinct types so that one can never be passed where the other is meant.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

#[derive(Debug, thiserror::Error)]
#[error("not a 64-digit hex id: {0:?}")]
pub struct BadId(pub String);

/// Lowercase hex digits (an even number) into bytes.
pub fn parse_hex_vec(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    let d = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    b.chunks(2)
        .map(|p| Some(d(p[0])? << 4 | d(p[1])?))
        .collect()
}

/// 64 lowercase hex digits into 32 bytes.
fn parse_hex32(s: &str) -> Result<[u8; 32], BadId> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return Err(BadId(s.to_string()));
    }
    let d = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(b.chunks(2)) {
        match (d(pair[0]), d(pair[1])) {
            (Some(h), Some(l)) => *o = h << 4 | l,
            _ => return Err(BadId(s.to_string())),
        }
    }
    Ok(out)
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
                hex(&self.0)
            }

            /// The first 8 hex digits, for humans.
            pub fn short(&self) -> String {
                hex(&self.0[..4])
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

hash_id!(
    /// The id of a snapshot: BLAKE3-256 of its manifest as stored.
    SnapshotId
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
