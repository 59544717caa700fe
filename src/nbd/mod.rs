//! NBD, the network block device protocol: its constants and messages, and a client that
//! reads a disk exported by qemu-nbd, nbdkit or `lifeboat serve --nbd`. Neither the disks
//! (which read through the client) nor `serve` (whose `serve::nbd` exports snapshots)
//! own the protocol; both use it from here.

pub mod client;

use std::io::Read;

pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
pub const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;

pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_ERR_UNSUP: u32 = 0x8000_0001;
pub const REP_ERR_UNKNOWN: u32 = 0x8000_0006;

pub const INFO_EXPORT: u16 = 0;
pub const INFO_BLOCK_SIZE: u16 = 3;

pub const HANDSHAKE_FIXED_NEWSTYLE: u16 = 1;
pub const HANDSHAKE_NO_ZEROES: u16 = 2;

pub const FLAG_HAS_FLAGS: u16 = 1;
pub const FLAG_READ_ONLY: u16 = 2;
pub const FLAG_SEND_FLUSH: u16 = 4;
pub const FLAG_CAN_MULTI_CONN: u16 = 1 << 8;

pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;

pub const EPERM: u32 = 1;
pub const EIO: u32 = 5;
pub const EINVAL: u32 = 22;

/// A transmission-phase request (28 bytes on the wire, magic first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub flags: u16,
    pub kind: u16,
    pub handle: u64,
    pub offset: u64,
    pub length: u32,
}

impl Request {
    pub const LEN: usize = 28;

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b[6..8].copy_from_slice(&self.kind.to_be_bytes());
        b[8..16].copy_from_slice(&self.handle.to_be_bytes());
        b[16..24].copy_from_slice(&self.offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.length.to_be_bytes());
        b
    }

    /// Parse the 24 bytes that follow a request's magic.
    pub fn decode_after_magic(h: &[u8; 24]) -> Request {
        Request {
            flags: be16(&h[0..2]),
            kind: be16(&h[2..4]),
            handle: be64(&h[4..12]),
            offset: be64(&h[12..20]),
            length: be32(&h[20..24]),
        }
    }
}

/// A simple reply's 16-byte header.
pub fn simple_reply(handle: u64, error: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&error.to_be_bytes());
    b[8..16].copy_from_slice(&handle.to_be_bytes());
    b
}

pub fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

pub fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

pub fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

pub fn read_array<const N: usize>(s: &mut impl Read) -> std::io::Result<[u8; N]> {
    let mut b = [0u8; N];
    s.read_exact(&mut b)?;
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let r = Request {
            flags: 0,
            kind: CMD_READ,
            handle: 0x0102_0304_0506_0708,
            offset: 1 << 40,
            length: 32 << 20,
        };
        let wire = r.encode();
        assert_eq!(be32(&wire[..4]), REQUEST_MAGIC);
        let rest: [u8; 24] = wire[4..].try_into().unwrap();
        assert_eq!(Request::decode_after_magic(&rest), r);
        let reply = simple_reply(7, EIO);
        assert_eq!(be32(&reply[..4]), SIMPLE_REPLY_MAGIC);
        assert_eq!((be32(&reply[4..8]), be64(&reply[8..])), (EIO, 7));
    }
}
