//! An NBD client for reading a disk exported by qemu-nbd, nbdkit or `lifeboat serve --nbd`:
//! fixed newstyle handshake with NBD_OPT_GO, then reads of at most 32 MiB each.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{
    be16, be32, be64, read_array, Request, CMD_DISC, CMD_READ, HANDSHAKE_FIXED_NEWSTYLE,
    HANDSHAKE_NO_ZEROES, IHAVEOPT, INFO_EXPORT, NBDMAGIC, OPT_GO, REPLY_MAGIC, REP_ACK, REP_INFO,
    SIMPLE_REPLY_MAGIC,
};
use crate::io::{timeouts, LimitedReader};
use crate::location::NbdAddress;

const MAX_REQUEST: usize = 32 << 20;
/// The most an option reply may carry: names and small records, never a disk's worth.
const MAX_OPTION_REPLY: usize = 64 << 10;
/// A server that says nothing for twice the I/O timeout (60 s by default: a real server
/// may be fetching from far away), in the middle of a reply or before it, has stalled: the
/// read fails instead of waiting forever. A reply must also keep the minimum rate.
fn stall_timeout() -> Duration {
    timeouts::io() * 2
}

/// A connection to `addr` within the connect timeout, with read and write timeouts set.
fn connect(addr: &str) -> Result<TcpStream> {
    let mut last = None;
    for a in addr
        .to_socket_addrs()
        .with_context(|| format!("resolve NBD server {addr}"))?
    {
        match TcpStream::connect_timeout(&a, timeouts::connect()) {
            Ok(s) => {
                s.set_nodelay(true).ok();
                s.set_read_timeout(Some(stall_timeout()))
                    .and_then(|_| s.set_write_timeout(Some(stall_timeout())))
                    .context("set NBD socket timeouts")?;
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => anyhow::Error::new(e),
        None => anyhow::anyhow!("no address"),
    })
    .with_context(|| format!("connect to NBD server {addr}"))
}

pub struct NbdClient {
    /// The connection and the last request handle used on it.
    conn: Mutex<(TcpStream, u64)>,
    pub size: u64,
    pub address: NbdAddress,
}

/// NBD_OPT_GO for `name`, with no extra information requests.
fn opt_go(name: &str) -> Vec<u8> {
    let mut opt = IHAVEOPT.to_be_bytes().to_vec();
    opt.extend_from_slice(&OPT_GO.to_be_bytes());
    opt.extend_from_slice(&(4 + name.len() as u32 + 2).to_be_bytes());
    opt.extend_from_slice(&(name.len() as u32).to_be_bytes());
    opt.extend_from_slice(name.as_bytes());
    opt.extend_from_slice(&0u16.to_be_bytes());
    opt
}

impl NbdClient {
    pub fn connect(address: &NbdAddress) -> Result<NbdClient> {
        let addr = &address.addr;
        let name = &address.export;
        let mut s = connect(addr)?;
        let what = || format!("NBD handshake with {addr}");
        let hello: [u8; 18] = read_array(&mut s).with_context(what)?;
        if be64(&hello[..8]) != NBDMAGIC || be64(&hello[8..16]) != IHAVEOPT {
            bail!("{addr} is not a newstyle NBD server");
        }
        let flags = be16(&hello[16..18]);
        if flags & HANDSHAKE_FIXED_NEWSTYLE == 0 {
            bail!("{addr} does not speak fixed newstyle NBD");
        }
        let client_flags = (HANDSHAKE_FIXED_NEWSTYLE | (flags & HANDSHAKE_NO_ZEROES)) as u32;
        s.write_all(&client_flags.to_be_bytes())
            .with_context(what)?;
        s.write_all(&opt_go(name)).with_context(what)?;
        let mut size = None;
        loop {
            let h: [u8; 20] = read_array(&mut s).with_context(what)?;
            if be64(&h[..8]) != REPLY_MAGIC {
                bail!("bad option reply from {addr}");
            }
            let kind = be32(&h[12..16]);
            let len = be32(&h[16..20]) as usize;
            if len > MAX_OPTION_REPLY {
                bail!("{addr} sent an option reply of {len} bytes (at most {MAX_OPTION_REPLY} expected)");
            }
            let mut data = vec![0u8; len];
            std::io::Read::read_exact(&mut s, &mut data).with_context(what)?;
            match kind {
                REP_ACK => break,
                REP_INFO if len >= 12 && be16(&data[..2]) == INFO_EXPORT => {
                    size = Some(be64(&data[2..10]));
                }
                REP_INFO => {}
                k if k & 0x8000_0000 != 0 => bail!(
                    "{addr} refused export {name:?}: {}",
                    String::from_utf8_lossy(&data).trim()
                ),
                _ => {}
            }
        }
        let size = size.with_context(|| format!("{addr} did not tell the size of {name:?}"))?;
        Ok(NbdClient {
            conn: Mutex::new((s, 0)),
            size,
            address: address.clone(),
        })
    }

    /// Read `buf.len()` bytes at `offset`. A server that stalls is named as such.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.read_at_once(buf, offset).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "the NBD server stalled: no reply within {} s ({e})",
                    stall_timeout().as_secs_f64()
                ),
            ),
            _ => e,
        })
    }

    fn read_at_once(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let (s, handle) = &mut *guard;
        let mut done = 0;
        while done < buf.len() {
            let n = (buf.len() - done).min(MAX_REQUEST);
            *handle += 1;
            let req = Request {
                flags: 0,
                kind: CMD_READ,
                handle: *handle,
                offset: offset + done as u64,
                length: n as u32,
            };
            s.write_all(&req.encode())?;
            // The reply's header and data, at the minimum rate after the stall timeout.
            let mut s = LimitedReader::new(
                &mut *s,
                16 + n as u64,
                stall_timeout(),
                timeouts::min_rate(),
            );
            let r: [u8; 16] = read_array(&mut s)?;
            if be32(&r[..4]) != SIMPLE_REPLY_MAGIC || be64(&r[8..16]) != *handle {
                return Err(std::io::Error::other("unexpected NBD reply"));
            }
            let err = be32(&r[4..8]);
            if err != 0 {
                return Err(std::io::Error::from_raw_os_error(err as i32));
            }
            std::io::Read::read_exact(&mut s, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }
}

impl Drop for NbdClient {
    fn drop(&mut self) {
        if let Ok(mut g) = self.conn.lock() {
            let disc = Request {
                flags: 0,
                kind: CMD_DISC,
                handle: 0,
                offset: 0,
                length: 0,
            };
            let _ = g.0.write_all(&disc.encode());
        }
    }
}
