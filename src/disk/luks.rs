//! LUKS1 and LUKS2 containers: their headers, checked, and where their ciphertext lies.
//!
//! A container is kept whole (header, keyslots and ciphertext), so a restore needs no
//! key and gives back the same container. Where its plaintext is visible (the container
//! is open on this machine through dm-crypt, and nothing is writing to it), the
//! filesystem inside is read by its used blocks and only the ciphertext sectors under them
//! are read: dm-crypt maps each plaintext sector to the ciphertext sector at the same
//! offset past the header. That mapping does not hold with integrity protection
//! (dm-integrity keeps tags between sectors), nor in the middle of a re-encryption (two
//! keys, a moving boundary): then the container is read whole, saying why.

use crate::disk::endian::{be16, be32, be64};
use anyhow::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256};

use super::fs::Reader;

const MAGIC: &[u8; 6] = b"LUKS\xba\xbe";
/// LUKS2's binary header; its JSON area follows up to `hdr_size`.
const BINARY_HEADER: usize = 4096;
/// The largest LUKS2 header cryptsetup writes (its JSON area included).
const MAX_HEADER: u64 = 4 << 20;

/// What a container's header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub version: u16,
    /// Where the ciphertext begins, in bytes.
    pub data_offset: u64,
    /// Its length in bytes, or None: to the end of the device.
    pub data_size: Option<u64>,
    pub cipher: String,
    /// Why the plaintext cannot be mapped sector for sector, if so.
    pub not_linear: Option<String>,
}

/// A C string field.
fn text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Read and check the header at the start of `r`.
pub fn header(r: &Reader) -> Result<Container> {
    let h = r.read(0, BINARY_HEADER.min(r.len() as usize))?;
    ensure!(h.len() >= 592 && &h[..6] == MAGIC, "no LUKS header");
    match be16(&h, 6) {
        1 => luks1(&h, r.len()),
        2 => luks2(r, &h),
        v => bail!("LUKS version {v}"),
    }
}

fn luks1(h: &[u8], len: u64) -> Result<Container> {
    let data_offset = be32(h, 104) as u64 * 512;
    ensure!(
        data_offset >= 592 && data_offset <= len,
        "payload offset {data_offset}"
    );
    Ok(Container {
        version: 1,
        data_offset,
        data_size: None,
        cipher: format!("{}-{}", text(&h[8..40]), text(&h[40..72])),
        not_linear: None,
    })
}

fn luks2(r: &Reader, h: &[u8]) -> Result<Container> {
    let size = be64(h, 8);
    ensure!(
        size.is_power_of_two() && (16384..=MAX_HEADER).contains(&size) && size <= r.len(),
        "a header of {size} bytes"
    );
    let alg = text(&h[72..104]);
    ensure!(
        alg == "sha256",
        "header checksum {alg:?} (only sha256 is checked)"
    );
    let all = r.read(0, size as usize)?;
    let mut zeroed = all.clone();
    zeroed[448..448 + 64].fill(0);
    let sum = Sha256::digest(&zeroed);
    ensure!(
        all[448..448 + 32] == sum[..],
        "the header's checksum does not match"
    );
    let json_end = all[BINARY_HEADER..]
        .iter()
        .position(|&c| c == 0)
        .map_or(all.len(), |p| BINARY_HEADER + p);
    let meta: serde_json::Value =
        serde_json::from_slice(&all[BINARY_HEADER..json_end]).context("its JSON metadata")?;
    let segments = meta["segments"]
        .as_object()
        .context("no segments in its metadata")?;
    let mut not_linear = None;
    if meta["config"]["requirements"]["mandatory"]
        .as_array()
        .is_some_and(|m| {
            m.iter()
                .any(|x| x.as_str().is_some_and(|s| s.contains("reencrypt")))
        })
        || segments.len() != 1
    {
        not_linear = Some("it is in the middle of a re-encryption".to_string());
    }
    let seg = segments.get("0").context("no segment 0 in its metadata")?;
    if !seg["integrity"].is_null() {
        not_linear = Some("it has integrity protection (dm-integrity tags between sectors)".into());
    }
    let number = |v: &serde_json::Value| v.as_str().and_then(|s| s.parse::<u64>().ok());
    let data_offset = number(&seg["offset"]).context("segment 0 has no offset")?;
    ensure!(
        data_offset >= size && data_offset <= r.len(),
        "its data begins at {data_offset}"
    );
    let data_size = match &seg["size"] {
        serde_json::Value::String(s) if s == "dynamic" => None,
        v => Some(number(v).context("segment 0's size")?),
    };
    if let Some(s) = data_size {
        ensure!(
            data_offset.checked_add(s).is_some_and(|e| e <= r.len()),
            "its data runs past the device"
        );
    }
    Ok(Container {
        version: 2,
        data_offset,
        data_size,
        cipher: seg["encryption"].as_str().unwrap_or("?").to_string(),
        not_linear,
    })
}
