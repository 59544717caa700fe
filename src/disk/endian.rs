//! Integers at an offset of an on-disk structure, little- or big-endian. Callers check
//! the bounds first (every parser validates a structure's size before reading fields).

macro_rules! field {
    ($name:ident, $t:ty, $from:ident) => {
        #[doc = concat!("The `", stringify!($t), "` at `o` of `b`, ", stringify!($from), ".")]
        pub fn $name(b: &[u8], o: usize) -> $t {
            const N: usize = std::mem::size_of::<$t>();
            <$t>::$from(b[o..o + N].try_into().expect("a slice of its size"))
        }
    };
}

field!(le16, u16, from_le_bytes);
field!(le32, u32, from_le_bytes);
field!(le64, u64, from_le_bytes);
field!(be16, u16, from_be_bytes);
field!(be32, u32, from_be_bytes);
field!(be64, u64, from_be_bytes);

#[cfg(test)]
mod tests {
    #[test]
    fn fields_read_in_their_byte_order() {
        let b = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(super::le16(&b, 1), 0x0302);
        assert_eq!(super::be32(&b, 0), 0x0102_0304);
        assert_eq!(super::le64(&b, 1), 0x0908_0706_0504_0302);
    }
}
