//! Hex digits: how ids, keys, salts and signatures are written. Object names use the
//! canonical form (lowercase, exact length), checked with [`canonical`]; what people
//! type or paste (a public key, a signature line) is read by [`decode`], which takes
//! either case.

use anyhow::{bail, Result};

/// Bytes as lowercase hex digits.
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// One lowercase hex digit's value.
fn lower_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Whether `s` is exactly `len` lowercase hex digits (an object name's id).
pub fn is_canonical(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| lower_digit(b).is_some())
}

/// Lowercase hex digits (an even number of them) into bytes; None for anything else.
pub fn canonical_vec(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    b.chunks(2)
        .map(|p| Some(lower_digit(p[0])? << 4 | lower_digit(p[1])?))
        .collect()
}

/// Exactly `2N` lowercase hex digits into `N` bytes; None for anything else.
pub fn canonical<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    canonical_vec(s)?.try_into().ok()
}

/// Exactly `N` bytes written as `2N` hex digits of either case, spaces around allowed.
pub fn decode<const N: usize>(s: &str) -> Result<[u8; N]> {
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
    fn canonical_names_are_lowercase_and_exact_while_typed_keys_take_either_case() {
        assert_eq!(encode(&[0x01, 0xab, 0xff]), "01abff");
        assert_eq!(canonical::<3>("01abff"), Some([0x01, 0xab, 0xff]));
        assert_eq!(canonical::<3>("01ABFF"), None);
        assert_eq!(canonical::<3>("01abf"), None);
        assert_eq!(canonical::<2>("01abff"), None);
        assert_eq!(canonical_vec("0a0b"), Some(vec![10, 11]));
        assert_eq!(canonical_vec("0a0"), None);
        assert!(is_canonical("00ff", 4) && !is_canonical("00FF", 4) && !is_canonical("00f", 4));
        assert_eq!(decode::<2>(" 01AB ").unwrap(), [0x01, 0xab]);
        assert!(decode::<2>("01ab00").is_err());
        assert!(decode::<2>("zz00").is_err());
    }
}
