//! GPT headers and partition entries, read with every field checked before it is used
//! (a disk is outside input: the `gpt` crate panics on some hostile headers and sizes its
//! buffers by the header's word), and rewritten when a restore moves the backup table to
//! the end of a larger disk.

use crate::disk::endian::{le32, le64};
use anyhow::{bail, ensure, Context, Result};

use super::SourceDisk;
use crate::repo::manifest::GptPartition;

pub const SIGNATURE: &[u8; 8] = b"EFI PART";
/// The header fields' length in revision 1.0; a header may be longer, up to a sector.
const HEADER_FIELDS: usize = 92;
/// The partition entry array, read whole, holds at most this many bytes (128 entries of
/// 128 bytes is the usual 16 KiB).
pub const MAX_ENTRIES_BYTES: u64 = 1 << 20;

/// A GPT header, as read (`raw` is its `header_size` bytes, for rewriting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub current_lba: u64,
    pub backup_lba: u64,
    pub first_usable: u64,
    pub last_usable: u64,
    pub disk_guid: [u8; 16],
    pub part_start: u64,
    pub num_parts: u32,
    pub part_size: u32,
    pub parts_crc: u32,
    raw: Vec<u8>,
}

/// The CRC32 of a header's bytes with its own CRC field taken as zero.
fn header_crc(raw: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&raw[..16]);
    h.update(&[0; 4]);
    h.update(&raw[20..]);
    h.finalize()
}

impl Header {
    /// Parse and check the header in `sector`, read from `lba`.
    pub fn parse(sector: &[u8], lba: u64) -> Result<Header> {
        ensure!(
            sector.len() >= HEADER_FIELDS && &sector[..8] == SIGNATURE,
            "no GPT signature at LBA {lba}"
        );
        let size = le32(sector, 12) as usize;
        ensure!(
            (HEADER_FIELDS..=sector.len()).contains(&size),
            "GPT header at LBA {lba} claims {size} bytes"
        );
        let raw = sector[..size].to_vec();
        ensure!(
            header_crc(&raw) == le32(&raw, 16),
            "GPT header at LBA {lba} fails its CRC"
        );
        let h = Header {
            current_lba: le64(&raw, 24),
            backup_lba: le64(&raw, 32),
            first_usable: le64(&raw, 40),
            last_usable: le64(&raw, 48),
            disk_guid: raw[56..72].try_into().expect("16 bytes"),
            part_start: le64(&raw, 72),
            num_parts: le32(&raw, 80),
            part_size: le32(&raw, 84),
            parts_crc: le32(&raw, 88),
            raw,
        };
        ensure!(
            h.current_lba == lba,
            "GPT header at LBA {lba} says it is at LBA {}",
            h.current_lba
        );
        ensure!(
            h.part_size >= 128 && h.part_size.is_power_of_two(),
            "GPT entries of {} bytes (128 times a power of two expected)",
            h.part_size
        );
        ensure!(
            h.entries_bytes() <= MAX_ENTRIES_BYTES,
            "GPT header claims {} entries of {} bytes, over {MAX_ENTRIES_BYTES} bytes",
            h.num_parts,
            h.part_size
        );
        ensure!(
            h.first_usable <= h.last_usable,
            "GPT usable LBAs {}..{} are backwards",
            h.first_usable,
            h.last_usable
        );
        Ok(h)
    }

    pub fn entries_bytes(&self) -> u64 {
        self.num_parts as u64 * self.part_size as u64
    }

    /// The header's bytes with its fields as they are now and a fresh CRC.
    pub fn encode(&self) -> Vec<u8> {
        let mut raw = self.raw.clone();
        raw[24..32].copy_from_slice(&self.current_lba.to_le_bytes());
        raw[32..40].copy_from_slice(&self.backup_lba.to_le_bytes());
        raw[40..48].copy_from_slice(&self.first_usable.to_le_bytes());
        raw[48..56].copy_from_slice(&self.last_usable.to_le_bytes());
        raw[56..72].copy_from_slice(&self.disk_guid);
        raw[72..80].copy_from_slice(&self.part_start.to_le_bytes());
        raw[80..84].copy_from_slice(&self.num_parts.to_le_bytes());
        raw[84..88].copy_from_slice(&self.part_size.to_le_bytes());
        raw[88..92].copy_from_slice(&self.parts_crc.to_le_bytes());
        let crc = header_crc(&raw);
        raw[16..20].copy_from_slice(&crc.to_le_bytes());
        raw
    }
}

/// A GUID as GPT tools print it (the first three fields little-endian), upper case.
pub fn guid_string(b: &[u8; 16]) -> String {
    uuid::Uuid::from_bytes_le(*b)
        .hyphenated()
        .to_string()
        .to_uppercase()
}

/// The used entries of an entry array, numbered from 1 by their slot.
pub fn parse_entries(entries: &[u8], part_size: u32) -> Vec<GptPartition> {
    entries
        .chunks_exact(part_size as usize)
        .enumerate()
        .filter(|(_, e)| e[..16].iter().any(|&b| b != 0))
        .map(|(i, e)| {
            let name: Vec<u16> = e[56..128]
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&c| c != 0)
                .collect();
            GptPartition {
                number: i as u32 + 1,
                type_guid: guid_string(e[..16].try_into().expect("16 bytes")),
                unique_guid: guid_string(e[16..32].try_into().expect("16 bytes")),
                name: String::from_utf16_lossy(&name),
                attributes: le64(e, 48),
                first_lba: le64(e, 32),
                last_lba: le64(e, 40),
            }
        })
        .collect()
}

/// A GPT as found on a disk: the header used (the primary, or the backup when the primary
/// is damaged) and its checked entry array.
#[derive(Debug)]
pub struct Table {
    pub header: Header,
    pub entries: Vec<u8>,
    /// Why the primary was not used, when it was not.
    pub primary_damage: Option<String>,
}

fn read_at_lba(dev: &SourceDisk, lba: u64, len: u64, ss: u32) -> Result<Vec<u8>> {
    let offset = lba
        .checked_mul(ss as u64)
        .filter(|o| o.checked_add(len).is_some_and(|e| e <= dev.size))
        .with_context(|| format!("LBA {lba} (+{len} bytes) lies outside the disk"))?;
    let mut buf = vec![0u8; len as usize];
    dev.read_at(&mut buf, offset)?;
    Ok(buf)
}

/// One header and its entries, both checked.
fn read_one(dev: &SourceDisk, lba: u64, ss: u32) -> Result<Table> {
    let header = Header::parse(&read_at_lba(dev, lba, ss as u64, ss)?, lba)?;
    let entries = read_at_lba(dev, header.part_start, header.entries_bytes(), ss)
        .context("read the GPT entries")?;
    ensure!(
        crc32fast::hash(&entries) == header.parts_crc,
        "GPT entries at LBA {} fail their CRC",
        header.part_start
    );
    Ok(Table {
        header,
        entries,
        primary_damage: None,
    })
}

/// The GPT of a disk: None when neither LBA 1 nor the last LBA holds a GPT signature; an
/// error when one does but neither header with its entries checks out.
pub fn read(dev: &SourceDisk, ss: u32) -> Result<Option<Table>> {
    let sectors = dev.size / ss as u64;
    if sectors < 3 {
        return Ok(None);
    }
    let last = sectors - 1;
    let signed = |lba| {
        read_at_lba(dev, lba, 8, ss)
            .map(|b| b == SIGNATURE)
            .unwrap_or(false)
    };
    if !signed(1) && !signed(last) {
        return Ok(None);
    }
    let primary = match read_one(dev, 1, ss) {
        Ok(t) => return Ok(Some(t)),
        Err(e) => e,
    };
    match read_one(dev, last, ss) {
        Ok(mut t) => {
            t.primary_damage = Some(format!("{primary:#}"));
            Ok(Some(t))
        }
        Err(backup) => bail!("primary GPT: {primary:#}; backup GPT: {backup:#}"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A GPT disk of `sectors` 512-byte sectors with one partition, both headers written.
    pub(crate) fn disk(sectors: u64) -> Vec<u8> {
        let mut img = vec![0u8; sectors as usize * 512];
        let mut entries = vec![0u8; 128 * 128];
        entries[..16].copy_from_slice(&[0xAF; 16]);
        entries[16..32].copy_from_slice(&[0x11; 16]);
        entries[32..40].copy_from_slice(&40u64.to_le_bytes());
        entries[40..48].copy_from_slice(&(sectors - 40).to_le_bytes());
        for (i, c) in "root".encode_utf16().enumerate() {
            entries[56 + 2 * i..58 + 2 * i].copy_from_slice(&c.to_le_bytes());
        }
        let mut raw = vec![0u8; 92];
        raw[..8].copy_from_slice(SIGNATURE);
        raw[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        raw[12..16].copy_from_slice(&92u32.to_le_bytes());
        let mut h = Header {
            current_lba: 1,
            backup_lba: sectors - 1,
            first_usable: 34,
            last_usable: sectors - 34,
            disk_guid: [7; 16],
            part_start: 2,
            num_parts: 128,
            part_size: 128,
            parts_crc: crc32fast::hash(&entries),
            raw,
        };
        img[512..604].copy_from_slice(&h.encode());
        img[1024..1024 + entries.len()].copy_from_slice(&entries);
        h.current_lba = sectors - 1;
        h.backup_lba = 1;
        h.part_start = sectors - 33;
        let b = (sectors as usize - 1) * 512;
        img[b..b + 92].copy_from_slice(&h.encode());
        let e = (sectors as usize - 33) * 512;
        img[e..e + entries.len()].copy_from_slice(&entries);
        img
    }

    #[test]
    fn a_gpt_is_read_with_its_partitions() {
        let d = SourceDisk::from_bytes("t.img", disk(200));
        let t = read(&d, 512).unwrap().unwrap();
        assert!(t.primary_damage.is_none());
        let parts = parse_entries(&t.entries, t.header.part_size);
        assert_eq!(parts.len(), 1);
        assert_eq!(
            (parts[0].number, parts[0].first_lba, parts[0].last_lba),
            (1, 40, 160)
        );
        assert_eq!(parts[0].name, "root");
        assert_eq!(parts[0].unique_guid, "11111111-1111-1111-1111-111111111111");
    }

    #[test]
    fn a_damaged_primary_falls_back_to_the_backup() {
        let mut img = disk(200);
        img[512 + 40] ^= 1; // the primary's first usable LBA: its CRC fails
        let d = SourceDisk::from_bytes("t.img", img);
        let t = read(&d, 512).unwrap().unwrap();
        assert!(t.primary_damage.unwrap().contains("CRC"));
        assert_eq!(t.header.current_lba, 199);
    }

    #[test]
    fn hostile_headers_are_refused_not_obeyed() {
        // Entry size 0, or 2^32 entries, with the CRC made right: refused, both copies.
        for (at, value) in [(84usize, 0u32), (80, u32::MAX), (84, 100)] {
            let mut img = disk(200);
            for lba in [1usize, 199] {
                let h = &mut img[lba * 512..lba * 512 + 92];
                h[at..at + 4].copy_from_slice(&value.to_le_bytes());
                let crc = header_crc(h);
                h[16..20].copy_from_slice(&crc.to_le_bytes());
            }
            let d = SourceDisk::from_bytes("t.img", img);
            assert!(read(&d, 512).is_err(), "field at {at} = {value}");
        }
        // Entries that lie past the end of the disk.
        let mut img = disk(200);
        for lba in [1usize, 199] {
            let h = &mut img[lba * 512..lba * 512 + 92];
            h[72..80].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
            let crc = header_crc(h);
            h[16..20].copy_from_slice(&crc.to_le_bytes());
        }
        let e = read(&SourceDisk::from_bytes("t.img", img), 512).unwrap_err();
        assert!(format!("{e:#}").contains("outside the disk"), "{e:#}");
        assert!(read(&SourceDisk::from_bytes("z.img", vec![0; 8192]), 512)
            .unwrap()
            .is_none());
    }
}
