//! The two checksums ext4 uses, with Linux's semantics: the register is seeded directly and
//! never inverted at the end (`crc32c_le`, `crc16`), so checksums chain through seeds.

/// The table of a reflected CRC-32 with polynomial `poly`.
const fn table32(poly: u32) -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ poly } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

const fn table16() -> [u16; 256] {
    let mut t = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u16;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xA001
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static T32: [u32; 256] = table32(0x82F6_3B78);
static T32_IEEE: [u32; 256] = table32(0xEDB8_8320);

/// CRC-32 (IEEE 802.3, reflected), register seeded with `seed`, no final inversion: what
/// LVM2 computes from its own seed.
pub fn crc32_ieee(seed: u32, data: &[u8]) -> u32 {
    data.iter().fold(seed, |c, &b| {
        T32_IEEE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8)
    })
}
static T16: [u16; 256] = table16();

/// CRC-32C (Castagnoli), reflected, register seeded with `seed`, no final inversion.
pub fn crc32c(seed: u32, data: &[u8]) -> u32 {
    data.iter().fold(seed, |c, &b| {
        T32[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8)
    })
}

/// CRC-16 (poly 0x8005 reflected, as Linux lib/crc16), seeded, no final inversion.
pub fn crc16(seed: u16, data: &[u8]) -> u16 {
    data.iter().fold(seed, |c, &b| {
        T16[((c ^ b as u16) & 0xFF) as usize] ^ (c >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_check_values() {
        // CRC-32C/ISCSI: init !0, final !.
        assert_eq!(!crc32c(!0, b"123456789"), 0xE306_9283);
        assert_eq!(!crc32_ieee(!0, b"123456789"), 0xCBF4_3926);
        // CRC-16/ARC (init 0) and CRC-16/MODBUS (init 0xFFFF).
        assert_eq!(crc16(0, b"123456789"), 0xBB3D);
        assert_eq!(crc16(0xFFFF, b"123456789"), 0x4B37);
        // Chaining through the seed equals one pass.
        assert_eq!(
            crc32c(crc32c(7, b"1234"), b"56789"),
            crc32c(7, b"123456789")
        );
    }
}
