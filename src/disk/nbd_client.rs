//! An NBD client for reading a disk exported by qemu-nbd, nbdkit or `lifeboat serve --nbd`:
//! fixed newstyle handshake with NBD_OPT_GO, then reads of at most 32 MiB each.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};

use crate::serve::nbd::{
    IHAVEOPT, NBDMAGIC, OPT_GO, REPLY_MAGIC, REP_ACK, REP_INFO, REQUEST_MAGIC, SIMPLE_REPLY_MAGIC,
};

const MAX_REQUEST: usize = 32 << 20;

pub struct NbdClient {
    conn: Mutex<(TcpStream, u64)>,
    pub size: u64,
    pub url: String,
}

fn rd<const N: usize>(s: &mut TcpStream) -> std::io::Result<[u8; N]> {
    let mut b = [0u8; N];
    s.read_exact(&mut b)?;
    Ok(b)
}

impl NbdClient {
    /// Connect to `nbd://HOST[:PORT]/EXPORT` (port 10809 when not given).
    pub fn connect(url: &str) -> Result<NbdClient> {
        let rest = url
            .strip_prefix("nbd://")
            .context("an NBD URL starts with nbd://")?;
        let (hostport, name) = rest.split_once('/').unwrap_or((rest, ""));
        let addr = if hostport.contains(':') {
            hostport.to_string()
        } else {
            format!("{hostport}:10809")
        };
        let mut s =
            TcpStream::connect(&addr).with_context(|| format!("connect to NBD server {addr}"))?;
        s.set_nodelay(true).ok();
        let what = || format!("NBD handshake with {addr}");
        let hello: [u8; 18] = rd(&mut s).with_context(what)?;
        if u64::from_be_bytes(hello[..8].try_into().unwrap()) != NBDMAGIC
            || u64::from_be_bytes(hello[8..16].try_into().unwrap()) != IHAVEOPT
        {
            bail!("{addr} is not a newstyle NBD server");
        }
        let flags = u16::from_be_bytes([hello[16], hello[17]]);
        if flags & 1 == 0 {
            bail!("{addr} does not speak fixed newstyle NBD");
        }
        let no_zeroes = flags & 2;
        s.write_all(&(1u32 | no_zeroes as u32).to_be_bytes())?;
        // NBD_OPT_GO with the export name and no extra information requests.
        let mut opt = IHAVEOPT.to_be_bytes().to_vec();
        opt.extend_from_slice(&OPT_GO.to_be_bytes());
        opt.extend_from_slice(&(4 + name.len() as u32 + 2).to_be_bytes());
        opt.extend_from_slice(&(name.len() as u32).to_be_bytes());
        opt.extend_from_slice(name.as_bytes());
        opt.extend_from_slice(&0u16.to_be_bytes());
        s.write_all(&opt).with_context(what)?;
        let mut size = None;
        loop {
            let h: [u8; 20] = rd(&mut s).with_context(what)?;
            if u64::from_be_bytes(h[..8].try_into().unwrap()) != REPLY_MAGIC {
                bail!("bad option reply from {addr}");
            }
            let kind = u32::from_be_bytes(h[12..16].try_into().unwrap());
            let len = u32::from_be_bytes(h[16..20].try_into().unwrap()) as usize;
            let mut data = vec![0u8; len];
            s.read_exact(&mut data).with_context(what)?;
            match kind {
                REP_ACK => break,
                REP_INFO if len >= 12 && data[..2] == [0, 0] => {
                    size = Some(u64::from_be_bytes(data[2..10].try_into().unwrap()));
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
            url: url.to_string(),
        })
    }

    /// Read `buf.len()` bytes at `offset`.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let mut guard = self.conn.lock().unwrap();
        let (s, handle) = &mut *guard;
        let mut done = 0;
        while done < buf.len() {
            let n = (buf.len() - done).min(MAX_REQUEST);
            *handle += 1;
            let mut req = REQUEST_MAGIC.to_be_bytes().to_vec();
            req.extend_from_slice(&0u16.to_be_bytes()); // flags
            req.extend_from_slice(&0u16.to_be_bytes()); // NBD_CMD_READ
            req.extend_from_slice(&handle.to_be_bytes());
            req.extend_from_slice(&(offset + done as u64).to_be_bytes());
            req.extend_from_slice(&(n as u32).to_be_bytes());
            s.write_all(&req)?;
            let r: [u8; 16] = rd(s)?;
            let magic = u32::from_be_bytes(r[..4].try_into().unwrap());
            let err = u32::from_be_bytes(r[4..8].try_into().unwrap());
            if magic != SIMPLE_REPLY_MAGIC
                || u64::from_be_bytes(r[8..16].try_into().unwrap()) != *handle
            {
                return Err(std::io::Error::other("unexpected NBD reply"));
            }
            if err != 0 {
                return Err(std::io::Error::from_raw_os_error(err as i32));
            }
            s.read_exact(&mut buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }
}

impl Drop for NbdClient {
    fn drop(&mut self) {
        if let Ok(mut g) = self.conn.lock() {
            let mut req = REQUEST_MAGIC.to_be_bytes().to_vec();
            req.extend_from_slice(&0u16.to_be_bytes());
            req.extend_from_slice(&2u16.to_be_bytes()); // NBD_CMD_DISC
            req.extend_from_slice(&[0u8; 20]);
            let _ = g.0.write_all(&req);
        }
    }
}
