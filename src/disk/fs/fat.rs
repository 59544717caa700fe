//! FAT12/16/32: the reserved area, the FATs, the root directory and every cluster that
//! any copy of the FAT marks as not free.

use anyhow::{ensure, Result};

use super::{FsKind, Reader, Usage};
use crate::range::{append_merged, ByteRange};

/// The most FAT bytes (all copies) read into memory: 32 million FAT32 clusters.
const MAX_FAT_BYTES: u64 = 128 << 20;

pub fn scan(r: &Reader, len: u64) -> Result<Usage> {
    let b = r.read(0, 512)?;
    let le16 = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as u64;
    let le32 = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as u64;
    ensure!(b[510] == 0x55 && b[511] == 0xAA, "no boot sector signature");
    let bps = le16(0x0B);
    let spc = b[0x0D] as u64;
    let reserved = le16(0x0E);
    let nfats = b[0x10] as u64;
    let root_entries = le16(0x11);
    let total = if le16(0x13) != 0 {
        le16(0x13)
    } else {
        le32(0x20)
    };
    let fat_sectors = if le16(0x16) != 0 {
        le16(0x16)
    } else {
        le32(0x24)
    };
    ensure!(
        [512, 1024, 2048, 4096].contains(&bps)
            && spc.is_power_of_two()
            && reserved > 0
            && (1..=4).contains(&nfats)
            && fat_sectors > 0,
        "the BIOS parameter block does not make sense"
    );
    let root_sectors = (root_entries * 32).div_ceil(bps);
    let data_start = reserved + nfats * fat_sectors + root_sectors;
    ensure!(total > data_start, "no data area");
    let clusters = (total - data_start) / spc;
    ensure!(
        total * bps <= len,
        "the filesystem is larger than its partition"
    );
    let bits = if clusters < 4085 {
        12
    } else if clusters < 65525 {
        16
    } else {
        32
    };
    ensure!(
        fat_sectors * bps * 8 >= (clusters + 2) * bits,
        "the FAT is too small for {clusters} clusters"
    );
    // Only the entries the clusters have, of every copy, held at once: bounded, so that
    // a FAT claiming to be huge is read in full instead of into memory.
    let fat_len = ((clusters + 2) * bits).div_ceil(8);
    ensure!(
        fat_len * nfats <= MAX_FAT_BYTES,
        "{nfats} FATs of {fat_len} bytes are more than the {MAX_FAT_BYTES} bytes read into memory"
    );
    let fats: Vec<Vec<u8>> = (0..nfats)
        .map(|i| r.read((reserved + i * fat_sectors) * bps, fat_len as usize))
        .collect::<Result<_>>()?;
    let entry = |fat: &[u8], c: u64| -> u32 {
        match bits {
            12 => {
                let o = (c + c / 2) as usize;
                let v = u16::from_le_bytes([fat[o], fat[o + 1]]);
                (if c.is_multiple_of(2) {
                    v & 0xFFF
                } else {
                    v >> 4
                }) as u32
            }
            16 => u16::from_le_bytes([fat[2 * c as usize], fat[2 * c as usize + 1]]) as u32,
            _ => {
                u32::from_le_bytes(fat[4 * c as usize..4 * c as usize + 4].try_into().unwrap())
                    & 0x0FFF_FFFF
            }
        }
    };
    let cluster_bytes = spc * bps;
    let data_off = data_start * bps;
    let mut used: Vec<ByteRange> = vec![ByteRange::new(0, data_off)];
    for c in 2..clusters + 2 {
        // A cluster is free only if every FAT copy says so.
        if fats.iter().all(|f| entry(f, c) == 0) {
            continue;
        }
        let o = data_off + (c - 2) * cluster_bytes;
        append_merged(&mut used, ByteRange::new(o, cluster_bytes));
    }
    // Sectors past the last whole cluster, and past the filesystem.
    let end = data_off + clusters * cluster_bytes;
    append_merged(&mut used, ByteRange::between(end, len));
    Ok(Usage {
        kind: FsKind::Vfat,
        block_size: cluster_bytes as u32,
        used,
        note: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::SourceDisk;

    #[test]
    fn a_fat_too_large_to_hold_is_refused_before_it_is_read() {
        // A FAT32 boot sector for a 1 TiB volume with four 1 GiB FATs.
        let mut b = vec![0u8; 4096];
        b[0x0B..0x0D].copy_from_slice(&4096u16.to_le_bytes());
        b[0x0D] = 1;
        b[0x0E..0x10].copy_from_slice(&32u16.to_le_bytes());
        b[0x10] = 4;
        b[0x20..0x24].copy_from_slice(&(1u32 << 28).to_le_bytes());
        b[0x24..0x28].copy_from_slice(&(1u32 << 18).to_le_bytes());
        b[510] = 0x55;
        b[511] = 0xAA;
        let disk = SourceDisk::from_bytes("fat.img", b);
        let len = 1u64 << 40;
        let e = scan(&Reader::new(&disk, 0, len), len).unwrap_err();
        assert!(e.to_string().contains("read into memory"), "{e}");
    }
}
