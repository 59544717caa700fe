//! `serve --nbd`: the snapshots exported over NBD (the protocol is `nbd`'s): each snapshot
//! is a read-only disk named after it (the newest of
//! a name, or a full id), assembled on the fly from verified chunks. Fixed newstyle
//! handshake with NBD_OPT_GO, NBD_OPT_INFO, NBD_OPT_LIST and NBD_OPT_EXPORT_NAME; several
//! requests in flight per connection. (The `nbd` crate answers GO and INFO "unsupported"
//! and lists a fixed name, which qemu and libnbd need otherwise.)

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::io::DeadlineSocket;
use crate::nbd::{
    read_array, simple_reply, Request, CMD_DISC, CMD_FLUSH, CMD_READ, CMD_WRITE, EINVAL, EIO,
    EPERM, FLAG_CAN_MULTI_CONN, FLAG_HAS_FLAGS, FLAG_READ_ONLY, FLAG_SEND_FLUSH,
    HANDSHAKE_FIXED_NEWSTYLE, HANDSHAKE_NO_ZEROES, IHAVEOPT, INFO_BLOCK_SIZE, INFO_EXPORT,
    NBDMAGIC, OPT_ABORT, OPT_EXPORT_NAME, OPT_GO, OPT_INFO, OPT_LIST, REPLY_MAGIC, REP_ACK,
    REP_ERR_UNKNOWN, REP_ERR_UNSUP, REP_INFO, REP_SERVER, REQUEST_MAGIC,
};
use crate::repo::manifest::ChunkRef;
use crate::repo::{ChunkId, Manifest, Repository};

const TRANSMISSION_FLAGS: u16 =
    FLAG_HAS_FLAGS | FLAG_READ_ONLY | FLAG_SEND_FLUSH | FLAG_CAN_MULTI_CONN;
/// Largest read served (qemu asks for at most 32 MiB).
/// Largest read served, and announced as the export's maximum block size: with a few in
/// flight per connection, it bounds what a client that does not read its replies can make
/// the server hold.
const MAX_READ: u32 = 4 << 20;
/// Requests in flight per connection (workers reading for it, and requests queued).
const WORKERS: usize = 4;
const QUEUED: usize = 8;
/// Decompressed chunks kept per connection, in bytes.
const CACHE_BYTES: usize = 8 << 20;
/// Connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 32;
/// A client has this long for its handshake, and a reply this long to be taken.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Clients attached at once from one address: one host cannot take every slot.
const MAX_PER_ADDRESS: usize = 8;
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// Decompressed chunks by id, and the order they came in (the oldest leaves first).
type ChunkCache = (HashMap<ChunkId, Arc<Vec<u8>>>, VecDeque<ChunkId>);

/// A snapshot readable at any offset, from its chunks, through a small cache.
pub struct SnapshotDisk {
    repo: Arc<Repository>,
    size: u64,
    /// The snapshot's chunks and holes in disk order; a hole reads as zeros.
    pieces: Vec<ChunkRef>,
    cache: Mutex<ChunkCache>,
}

impl SnapshotDisk {
    pub fn new(repo: Arc<Repository>, m: &Manifest) -> SnapshotDisk {
        let pieces = m
            .regions
            .iter()
            .flat_map(|r| r.chunks.iter().cloned())
            .collect();
        SnapshotDisk {
            repo,
            size: m.disk.size,
            pieces,
            cache: Mutex::new((HashMap::new(), VecDeque::new())),
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    fn chunk(&self, id: &ChunkId) -> Result<Arc<Vec<u8>>> {
        if let Some(c) = self.cache.lock().unwrap().0.get(id) {
            return Ok(c.clone());
        }
        let data = Arc::new(self.repo.get_chunk(id)?);
        let mut cache = self.cache.lock().unwrap();
        cache.0.insert(*id, data.clone());
        cache.1.push_back(*id);
        let max_entries = CACHE_BYTES / self.repo.config.chunker.max_size.max(1) as usize;
        while cache.1.len() > max_entries.max(1) {
            if let Some(old) = cache.1.pop_front() {
                cache.0.remove(&old);
            }
        }
        Ok(data)
    }

    /// Fill `buf` from `offset`.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let end = offset + buf.len() as u64;
        if end > self.size {
            bail!("read past the end of the disk");
        }
        let mut i = self
            .pieces
            .partition_point(|p| p.offset + p.length as u64 <= offset);
        let mut pos = offset;
        while pos < end {
            let p = &self.pieces[i];
            let from = (pos - p.offset) as usize;
            let n = (p.length as usize - from).min((end - pos) as usize);
            let dst = &mut buf[(pos - offset) as usize..(pos - offset) as usize + n];
            match p.id {
                Some(id) => dst.copy_from_slice(&self.chunk(&id)?[from..from + n]),
                None => dst.fill(0),
            }
            pos += n as u64;
            i += 1;
        }
        Ok(())
    }
}

fn read_u32(s: &mut impl Read) -> std::io::Result<u32> {
    read_array(s).map(u32::from_be_bytes)
}

fn read_u64(s: &mut impl Read) -> std::io::Result<u64> {
    read_array(s).map(u64::from_be_bytes)
}

fn opt_reply(s: &mut impl Write, opt: u32, kind: u32, data: &[u8]) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(20 + data.len());
    out.extend_from_slice(&REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&opt.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    s.write_all(&out)
}

/// Serves snapshots of one repository.
pub struct Exports {
    repo: Arc<Repository>,
    policy: crate::trust::Policy,
}

impl Exports {
    pub fn new(repo: Arc<Repository>, policy: crate::trust::Policy) -> Exports {
        Exports { repo, policy }
    }

    fn names(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .repo
            .snapshots()?
            .into_iter()
            .filter_map(|(_, s)| s.ok())
            .flat_map(|s| {
                // Disk 0 under the name, the others as NAME/diskN.
                let name = s.manifest.name.clone();
                (0..s.manifest.disk_count()).map(move |i| match i {
                    0 => name.clone(),
                    i => format!("{name}/disk{i}"),
                })
            })
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// The export `name`: a snapshot's disk 0 by its name or id, or its disk N as
    /// NAME/diskN.
    fn open(&self, name: &str) -> Option<Arc<SnapshotDisk>> {
        let (spec, disk) = match name.rsplit_once("/disk") {
            Some((spec, n)) => (spec, n.parse::<usize>().ok()?),
            None => (name, 0),
        };
        // The repository as it is now: captures may have added to it since serve began.
        let repo = Arc::new(self.repo.reloaded());
        let snap = match self.policy.resolve(&repo, spec) {
            Ok((snap, _)) => snap,
            Err(e) => {
                log::warn!("NBD export {name:?} refused: {e:#}");
                return None;
            }
        };
        let m = snap.manifest.into_disks().into_iter().nth(disk)?;
        Some(Arc::new(SnapshotDisk::new(repo, &m)))
    }

    /// Handshake and option haggling; returns the export chosen, or None when the client
    /// leaves.
    pub fn handshake<S: Read + Write>(
        &self,
        s: &mut S,
    ) -> Result<Option<(Arc<SnapshotDisk>, String)>> {
        let mut hello = Vec::new();
        hello.extend_from_slice(&NBDMAGIC.to_be_bytes());
        hello.extend_from_slice(&IHAVEOPT.to_be_bytes());
        hello.extend_from_slice(&(HANDSHAKE_FIXED_NEWSTYLE | HANDSHAKE_NO_ZEROES).to_be_bytes());
        s.write_all(&hello)?;
        let client_flags = read_u32(s)?;
        let no_zeroes = client_flags & HANDSHAKE_NO_ZEROES as u32 != 0;
        loop {
            if read_u64(s)? != IHAVEOPT {
                bail!("bad option magic");
            }
            let opt = read_u32(s)?;
            let len = read_u32(s)?;
            if len > 64 * 1024 {
                bail!("option of {len} bytes");
            }
            let mut data = vec![0u8; len as usize];
            s.read_exact(&mut data)?;
            match opt {
                OPT_EXPORT_NAME => {
                    let name = String::from_utf8_lossy(&data).into_owned();
                    let Some(disk) = self.open(&name) else {
                        bail!("client asked for unknown export {name:?}");
                    };
                    let mut out = Vec::new();
                    out.extend_from_slice(&disk.size().to_be_bytes());
                    out.extend_from_slice(&TRANSMISSION_FLAGS.to_be_bytes());
                    if !no_zeroes {
                        out.extend_from_slice(&[0u8; 124]);
                    }
                    s.write_all(&out)?;
                    return Ok(Some((disk, name)));
                }
                OPT_ABORT => {
                    opt_reply(s, opt, REP_ACK, b"")?;
                    return Ok(None);
                }
                OPT_LIST => {
                    for n in self.names()? {
                        let mut d = (n.len() as u32).to_be_bytes().to_vec();
                        d.extend_from_slice(n.as_bytes());
                        opt_reply(s, opt, REP_SERVER, &d)?;
                    }
                    opt_reply(s, opt, REP_ACK, b"")?;
                }
                OPT_INFO | OPT_GO => {
                    if data.len() < 4 {
                        bail!("short NBD_OPT_GO");
                    }
                    let nlen = u32::from_be_bytes(data[..4].try_into().unwrap()) as usize;
                    let name =
                        String::from_utf8_lossy(data.get(4..4 + nlen).unwrap_or(b"")).into_owned();
                    let Some(disk) = self.open(&name) else {
                        opt_reply(
                            s,
                            opt,
                            REP_ERR_UNKNOWN,
                            format!("no snapshot {name:?}").as_bytes(),
                        )?;
                        continue;
                    };
                    let mut info = INFO_EXPORT.to_be_bytes().to_vec();
                    info.extend_from_slice(&disk.size().to_be_bytes());
                    info.extend_from_slice(&TRANSMISSION_FLAGS.to_be_bytes());
                    opt_reply(s, opt, REP_INFO, &info)?;
                    let mut bs = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
                    bs.extend_from_slice(&1u32.to_be_bytes());
                    bs.extend_from_slice(&4096u32.to_be_bytes());
                    bs.extend_from_slice(&MAX_READ.to_be_bytes());
                    opt_reply(s, opt, REP_INFO, &bs)?;
                    opt_reply(s, opt, REP_ACK, b"")?;
                    if opt == OPT_GO {
                        return Ok(Some((disk, name)));
                    }
                }
                _ => opt_reply(s, opt, REP_ERR_UNSUP, b"")?,
            }
        }
    }

    /// Serve one client: requests are read in order and answered by a few workers, so
    /// several can be in flight.
    fn serve(&self, s: TcpStream) -> Result<()> {
        let peer = s.peer_addr().map(|a| a.to_string()).unwrap_or_default();
        s.set_write_timeout(Some(WRITE_TIMEOUT))
            .context("set the socket's write timeout")?;
        // The whole handshake within its deadline: a client that trickles it, or keeps
        // asking for options, is cut off.
        let mut hs = DeadlineSocket::new(s, HANDSHAKE_TIMEOUT);
        let Some((disk, name)) = self.handshake(&mut hs)? else {
            return Ok(());
        };
        let s = hs.sock;
        // Once attached, a client may stay idle as long as it likes (a guest's disk).
        s.set_read_timeout(None).context("clear the read timeout")?;
        log::info!("{peer}: NBD export {name:?} ({} bytes)", disk.size());
        let writer = s.try_clone().context("clone the socket")?;
        transmit(&disk, s, writer)
    }
}

/// Answer reads from the queue: read the disk, then write the reply (header and data
/// under one lock, without copying the data). Ends when the queue closes or the client
/// stops taking replies.
fn answer_reads<W: Write>(
    disk: &SnapshotDisk,
    queue: crossbeam_channel::Receiver<(u64, u64, u32)>,
    writer: &Mutex<W>,
) {
    for (handle, offset, len) in queue.iter() {
        let mut buf = vec![0u8; len as usize];
        let err = match disk.read_at(&mut buf, offset) {
            Ok(()) => 0,
            Err(e) => {
                log::warn!("NBD read of {len} bytes at {offset}: {e:#}");
                EIO
            }
        };
        let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
        let sent = w.write_all(&simple_reply(handle, err)).and_then(|_| {
            if err == 0 {
                w.write_all(&buf)
            } else {
                Ok(())
            }
        });
        if sent.is_err() {
            break;
        }
    }
}

/// The transmission phase: requests are read in order from `r` and answered by a few
/// workers through `w`, so that several can be in flight.
pub fn transmit<R: Read, W: Write + Send>(disk: &SnapshotDisk, mut r: R, w: W) -> Result<()> {
    let writer = Mutex::new(w);
    std::thread::scope(|scope| -> Result<()> {
        let (tx, rx) = crossbeam_channel::bounded::<(u64, u64, u32)>(QUEUED);
        let mut workers = Vec::with_capacity(WORKERS);
        let mut started = Ok(());
        for _ in 0..WORKERS {
            let (rx, writer) = (rx.clone(), &writer);
            // A worker that cannot be started ends this client, not the server.
            match std::thread::Builder::new()
                .spawn_scoped(scope, move || answer_reads(disk, rx, writer))
            {
                Ok(w) => workers.push(w),
                Err(e) => {
                    started = Err(anyhow::Error::new(e).context("start an NBD worker"));
                    break;
                }
            }
        }
        let result = started.and_then(|_| read_requests(disk, &mut r, &tx, &writer));
        // The queue closes, so the workers end; they are joined, not only waited for, so
        // that they are gone (their thread-locals freed) when this returns.
        drop(tx);
        for w in workers {
            let _ = w.join();
        }
        result
    })
}

/// Read requests until the client disconnects: reads go to the workers' queue, anything
/// else is answered here.
fn read_requests<R: Read, W: Write>(
    disk: &SnapshotDisk,
    r: &mut R,
    queue: &crossbeam_channel::Sender<(u64, u64, u32)>,
    writer: &Mutex<W>,
) -> Result<()> {
    let reply = |handle: u64, err: u32| -> std::io::Result<()> {
        writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write_all(&simple_reply(handle, err))
    };
    while let Ok(magic) = read_u32(r) {
        if magic != REQUEST_MAGIC {
            bail!("bad request magic {magic:#x}");
        }
        let Request {
            kind,
            handle,
            offset,
            length: len,
            ..
        } = Request::decode_after_magic(&read_array(r)?);
        match kind {
            CMD_READ
                if len <= MAX_READ
                    && offset
                        .checked_add(len as u64)
                        .is_some_and(|e| e <= disk.size()) =>
            {
                if queue.send((handle, offset, len)).is_err() {
                    break;
                }
            }
            CMD_READ => reply(handle, EINVAL)?,
            CMD_DISC => break,
            CMD_FLUSH => reply(handle, 0)?,
            CMD_WRITE => {
                // A write: read and drop its payload, refuse it.
                std::io::copy(&mut r.take(len as u64), &mut std::io::sink())?;
                reply(handle, EPERM)?;
            }
            _ => reply(handle, EINVAL)?,
        }
    }
    Ok(())
}

/// Accept NBD clients on `listener` until the process ends, at most `MAX_CONNECTIONS` at
/// once and `MAX_PER_ADDRESS` from one address. A client beyond that, or whose thread
/// cannot be started, is turned away; the server goes on.
pub fn run(listener: TcpListener, exports: Arc<Exports>) {
    let attached: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    for conn in listener.incoming() {
        let Ok(sock) = conn else { continue };
        let Ok(ip) = sock.peer_addr().map(|a| a.ip()) else {
            continue;
        };
        if let Err(why) = admit(&attached, ip) {
            log::warn!("NBD client {ip} refused: {why}");
            continue;
        }
        let _ = sock.set_nodelay(true);
        let (exports, count) = (exports.clone(), attached.clone());
        let started = std::thread::Builder::new()
            .name("nbd-client".into())
            .spawn(move || {
                if let Err(e) = exports.serve(sock) {
                    log::info!("NBD client: {e:#}");
                }
                leave(&count, ip);
            });
        if let Err(e) = started {
            leave(&attached, ip);
            log::warn!("NBD client {ip} refused: no thread for it ({e})");
        }
    }
}

/// Count a new client in, if there is room for it.
fn admit(attached: &Mutex<HashMap<IpAddr, usize>>, ip: IpAddr) -> Result<(), String> {
    let mut a = attached.lock().unwrap_or_else(|p| p.into_inner());
    if a.values().sum::<usize>() >= MAX_CONNECTIONS {
        return Err(format!("{MAX_CONNECTIONS} clients already attached"));
    }
    let n = a.entry(ip).or_default();
    if *n >= MAX_PER_ADDRESS {
        return Err(format!(
            "{MAX_PER_ADDRESS} already attached from this address"
        ));
    }
    *n += 1;
    Ok(())
}

fn leave(attached: &Mutex<HashMap<IpAddr, usize>>, ip: IpAddr) {
    let mut a = attached.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(n) = a.get_mut(&ip) {
        *n -= 1;
        if *n == 0 {
            a.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nbd::{be32, be64, SIMPLE_REPLY_MAGIC};
    use crate::repo::manifest::tests::sample_manifest;

    fn request(kind: u16, handle: u64, offset: u64, length: u32) -> Vec<u8> {
        Request {
            flags: 0,
            kind,
            handle,
            offset,
            length,
        }
        .encode()
        .to_vec()
    }

    #[test]
    fn requests_are_answered_and_writes_refused() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(&dir.path().join("r"), Default::default(), 3).unwrap();
        let disk = SnapshotDisk::new(Arc::new(repo), &sample_manifest());
        let gap = 34 * 512; // zeros: a hole in the sample, no chunk needed
        let mut sent = request(CMD_READ, 1, gap, 4096);
        sent.extend(request(CMD_READ, 2, disk.size(), 512));
        sent.extend(request(CMD_FLUSH, 3, 0, 0));
        sent.extend(request(CMD_WRITE, 4, 0, 16));
        sent.extend([b'x'; 16]);
        sent.extend(request(CMD_READ, 5, 0, MAX_READ + 1));
        sent.extend(request(CMD_DISC, 6, 0, 0));
        let mut out = Vec::new();
        transmit(&disk, std::io::Cursor::new(sent), &mut out).unwrap();
        // Replies: (handle, error), in any order; the read's 4096 zeros follow its header.
        let mut replies = Vec::new();
        let mut at = 0;
        while at < out.len() {
            assert_eq!(be32(&out[at..]), SIMPLE_REPLY_MAGIC);
            let (err, handle) = (be32(&out[at + 4..]), be64(&out[at + 8..]));
            at += 16;
            if handle == 1 {
                assert!(out[at..at + 4096].iter().all(|&b| b == 0));
                at += 4096;
            }
            replies.push((handle, err));
        }
        replies.sort();
        assert_eq!(
            replies,
            vec![(1, 0), (2, EINVAL), (3, 0), (4, EPERM), (5, EINVAL)]
        );
    }
}
