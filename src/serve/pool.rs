//! Connections and the threads that serve them. A connection waits for its next request
//! in one thread that polls them all (`park`): it is handed to one of a fixed pool of
//! workers only once a whole request head has arrived, and given back after the reply.
//! A slow, idle or trickling client thus costs a socket and a few KiB, never a worker;
//! each waiting connection has a deadline, and their number is bounded.

use std::io::{self, BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::io::DeadlineSocket;

/// The most a request line and its headers may take together.
pub(crate) const MAX_HEAD: usize = 64 << 10;
/// A connection has this long to send a whole request head once accepted, and after
/// each reply (idle keep-alive connections are closed after it).
pub(crate) const HEAD_DEADLINE: Duration = Duration::from_secs(15);
/// A reply must be taken at least this fast.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections waiting for a request at once; more are answered 503 and closed.
const MAX_PARKED: usize = 4096;

/// One client connection, plain or TLS.
pub(crate) struct Conn {
    sock: TcpStream,
    tls: Option<Box<rustls::ServerConnection>>,
    /// Plaintext received but not yet used: the next request's head (and what follows).
    pending: Vec<u8>,
    /// When the next request's head must be complete.
    deadline: Instant,
    pub(crate) peer: String,
}

/// What reading a parked connection came to.
enum Progress {
    /// A whole head is in `pending`.
    Ready,
    /// Nothing whole yet; keep waiting.
    Wait,
    /// Closed, broken, or over the head's size: drop it.
    Close,
}

/// Whether `data` holds a whole request head.
fn has_head(data: &[u8]) -> bool {
    data.windows(4).any(|w| w == b"\r\n\r\n")
}

impl Conn {
    fn new(sock: TcpStream, tls: Option<&Arc<rustls::ServerConfig>>) -> io::Result<Conn> {
        sock.set_nonblocking(true)?;
        // One write per reply, sent at once: no waiting on the client's delayed ACK.
        sock.set_nodelay(true)?;
        let tls = match tls {
            Some(cfg) => Some(Box::new(
                rustls::ServerConnection::new(cfg.clone()).map_err(io::Error::other)?,
            )),
            None => None,
        };
        Ok(Conn {
            peer: sock.peer_addr().map(|a| a.to_string()).unwrap_or_default(),
            sock,
            tls,
            pending: Vec::new(),
            deadline: Instant::now() + HEAD_DEADLINE,
        })
    }

    /// Take what has arrived, without blocking, until a whole head is here.
    fn advance(&mut self) -> Progress {
        if has_head(&self.pending) {
            return Progress::Ready;
        }
        let result = match &mut self.tls {
            None => read_plain(&mut self.sock, &mut self.pending),
            Some(tls) => read_tls(tls, &mut self.sock, &mut self.pending),
        };
        match result {
            Err(_) | Ok(true) => Progress::Close,
            Ok(false) if has_head(&self.pending) => Progress::Ready,
            Ok(false) if self.pending.len() > MAX_HEAD => Progress::Close,
            Ok(false) => Progress::Wait,
        }
    }

    fn wants_write(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.wants_write())
    }
}

/// Read what a non-blocking socket has; Ok(true) once the peer has closed.
fn read_plain(sock: &mut TcpStream, pending: &mut Vec<u8>) -> io::Result<bool> {
    let mut buf = [0u8; 16 << 10];
    while pending.len() <= MAX_HEAD && !has_head(pending) {
        match sock.read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// Move TLS records from a non-blocking socket through rustls into `pending`, and send
/// what rustls has to say (the handshake); Ok(true) once the peer has closed.
fn read_tls(
    tls: &mut rustls::ServerConnection,
    sock: &mut TcpStream,
    pending: &mut Vec<u8>,
) -> io::Result<bool> {
    let mut closed = false;
    loop {
        let mut buf = [0u8; 16 << 10];
        loop {
            match tls.reader().read(&mut buf) {
                Ok(0) => return Ok(true),
                Ok(n) => pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if closed || pending.len() > MAX_HEAD || has_head(pending) {
            break;
        }
        match tls.read_tls(sock) {
            Ok(0) => closed = true,
            Ok(_) => {
                if let Err(e) = tls.process_new_packets() {
                    let _ = tls.write_tls(sock);
                    return Err(io::Error::other(e));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    while tls.wants_write() {
        match tls.write_tls(sock) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(closed && !has_head(pending))
}

enum Stream {
    Plain(DeadlineSocket),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, DeadlineSocket>>),
}

/// A connection in a worker's hands: buffered reads that start with what the poller
/// had already received, and writes straight to the client.
pub(crate) struct Active {
    stream: Stream,
    pending: Vec<u8>,
    pos: usize,
    pub(crate) peer: String,
}

impl Active {
    fn take(conn: Conn) -> io::Result<Active> {
        conn.sock.set_nonblocking(false)?;
        conn.sock.set_write_timeout(Some(WRITE_TIMEOUT))?;
        // A worker's reads (a body) are bounded by a deadline; sockets block again.
        let timed = DeadlineSocket::new(conn.sock, HEAD_DEADLINE);
        let stream = match conn.tls {
            Some(tls) => Stream::Tls(Box::new(rustls::StreamOwned::new(*tls, timed))),
            None => Stream::Plain(timed),
        };
        Ok(Active {
            stream,
            pending: conn.pending,
            pos: 0,
            peer: conn.peer,
        })
    }

    /// Reads must be done within `d` from now.
    pub(crate) fn set_deadline(&mut self, d: Duration) {
        match &mut self.stream {
            Stream::Plain(t) => t.set_deadline(d),
            Stream::Tls(s) => s.sock.set_deadline(d),
        }
    }

    /// Back to waiting for the next request.
    fn park(self) -> io::Result<Conn> {
        let (timed, tls) = match self.stream {
            Stream::Plain(t) => (t, None),
            Stream::Tls(s) => {
                let s = *s;
                (s.sock, Some(Box::new(s.conn)))
            }
        };
        timed.sock.set_nonblocking(true)?;
        Ok(Conn {
            sock: timed.sock,
            tls,
            pending: self.pending[self.pos..].to_vec(),
            deadline: Instant::now() + HEAD_DEADLINE,
            peer: self.peer,
        })
    }

    fn inner(&mut self) -> &mut dyn ReadWrite {
        match &mut self.stream {
            Stream::Plain(t) => t,
            Stream::Tls(s) => &mut **s,
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

impl Read for Active {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos < self.pending.len() {
            let n = buf.len().min(self.pending.len() - self.pos);
            buf[..n].copy_from_slice(&self.pending[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(n);
        }
        self.inner().read(buf)
    }
}

impl BufRead for Active {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos >= self.pending.len() {
            let mut buf = vec![0u8; 16 << 10];
            let n = self.inner().read(&mut buf)?;
            buf.truncate(n);
            self.pending = buf;
            self.pos = 0;
        }
        Ok(&self.pending[self.pos..])
    }
    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.pending.len());
    }
}

impl Write for Active {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner().write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner().flush()
    }
}

/// Serves one request on a connection whose head has arrived; says whether the
/// connection may carry another.
pub(crate) type Serve = dyn Fn(&mut Active) -> Result<bool> + Send + Sync;

/// The way back from the workers to the poller: the connection, and a byte on a socket
/// to wake the poller's `poll`.
#[derive(Clone)]
struct Back {
    tx: Sender<Conn>,
    wake: Arc<UnixStream>,
}

impl Back {
    fn send(&self, conn: Conn) {
        if self.tx.send(conn).is_ok() {
            let _ = (&*self.wake).write(&[1]);
        }
    }
}

/// Answer 503 to a connection that cannot be served now, and close it.
fn refuse(mut sock: &TcpStream, why: &str) {
    let _ = sock.set_nonblocking(false);
    let _ = sock.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = sock.write_all(
        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    log::info!("a connection was refused: {why}");
}

/// Accept and serve until `stop`: `workers` threads serve whole requests; one thread
/// (the caller's) accepts and parks the connections between them.
pub(crate) fn run(
    listener: &TcpListener,
    serve: Arc<Serve>,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: &AtomicBool,
    workers: usize,
) -> Result<()> {
    raise_open_files_limit();
    listener
        .set_nonblocking(true)
        .context("make the listening socket non-blocking")?;
    let (wake_rx, wake_tx) = UnixStream::pair().context("create the poller's wake-up socket")?;
    wake_rx.set_nonblocking(true).context("wake-up socket")?;
    wake_tx.set_nonblocking(true).context("wake-up socket")?;
    let (work_tx, work_rx) = crossbeam_channel::bounded::<Conn>(workers * 4);
    let (back_tx, back_rx) = crossbeam_channel::unbounded::<Conn>();
    let back = Back {
        tx: back_tx,
        wake: Arc::new(wake_tx),
    };
    let pool = start_workers(workers, &work_rx, &serve, &back)?;
    drop(work_rx);
    let result = park(listener, &wake_rx, &back_rx, &work_tx, tls.as_ref(), stop);
    drop(work_tx);
    for t in pool {
        let _ = t.join();
    }
    result
}

fn start_workers(
    workers: usize,
    work: &Receiver<Conn>,
    serve: &Arc<Serve>,
    back: &Back,
) -> Result<Vec<std::thread::JoinHandle<()>>> {
    let mut pool = Vec::with_capacity(workers);
    for i in 0..workers {
        let (work, serve, back) = (work.clone(), serve.clone(), back.clone());
        let started = std::thread::Builder::new()
            .name(format!("http-{i}"))
            .spawn(move || {
                for conn in work.iter() {
                    work_on(conn, &*serve, &back);
                }
            });
        match started {
            Ok(t) => pool.push(t),
            // Serve with the workers there are, rather than not at all.
            Err(e) if !pool.is_empty() => {
                log::warn!("{} HTTP workers instead of {workers}: {e}", pool.len());
                break;
            }
            Err(e) => return Err(e).context("start the HTTP workers"),
        }
    }
    Ok(pool)
}

/// Serve one request, then give the connection back to the poller if it stays open.
fn work_on(conn: Conn, serve: &Serve, back: &Back) {
    let peer = conn.peer.clone();
    let mut active = match Active::take(conn) {
        Ok(a) => a,
        Err(e) => return log::info!("{peer}: {e}"),
    };
    match serve(&mut active) {
        Ok(true) => match active.park() {
            Ok(conn) => back.send(conn),
            Err(e) => log::info!("{peer}: {e}"),
        },
        Ok(false) => {}
        Err(e) => log::info!("{peer}: {e:#}"),
    }
}

/// The poller: accept, read heads as they arrive, hand whole ones to the workers, take
/// connections back after their replies, close those past their deadline.
fn park(
    listener: &TcpListener,
    wake: &UnixStream,
    back: &Receiver<Conn>,
    work: &Sender<Conn>,
    tls: Option<&Arc<rustls::ServerConfig>>,
    stop: &AtomicBool,
) -> Result<()> {
    let mut parked: Vec<Conn> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let ready = wait(listener, wake, &parked)?;
        if ready[0] {
            accept_all(listener, tls, &mut parked);
        }
        if ready[1] {
            let _ = (&*wake).read(&mut [0u8; 256]);
            parked.extend(back.try_iter());
        }
        let now = Instant::now();
        let polled = ready.len() - 2;
        let mut waiting = Vec::with_capacity(parked.len());
        for (i, mut conn) in parked.drain(..).enumerate() {
            // New and returned connections (beyond the poll's list) are read at once: a
            // returned one may hold a whole pipelined request already.
            let progress = if i >= polled || ready[i + 2] {
                conn.advance()
            } else {
                Progress::Wait
            };
            match progress {
                Progress::Wait if conn.deadline < now => drop(conn),
                Progress::Wait => waiting.push(conn),
                Progress::Close => drop(conn),
                Progress::Ready => {
                    if let Err(TrySendError::Full(c)) = work.try_send(conn) {
                        refuse(&c.sock, "every worker is busy and the queue is full");
                    }
                }
            }
        }
        parked = waiting;
    }
    Ok(())
}

/// Accept every waiting connection (up to the limit of parked ones).
fn accept_all(
    listener: &TcpListener,
    tls: Option<&Arc<rustls::ServerConfig>>,
    parked: &mut Vec<Conn>,
) {
    loop {
        match listener.accept() {
            Ok((sock, _)) if parked.len() >= MAX_PARKED => {
                refuse(&sock, "too many connections are open");
            }
            Ok((sock, _)) => match Conn::new(sock, tls) {
                Ok(c) => parked.push(c),
                Err(e) => log::info!("a connection could not be set up: {e}"),
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Out of file descriptors, or the like: wait a little, keep serving.
                log::warn!("accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
                return;
            }
        }
    }
}

/// Wait until something can be read (at most until the nearest deadline, or a second):
/// whether the listener, the wake-up socket and each parked connection are ready.
fn wait(listener: &TcpListener, wake: &UnixStream, parked: &[Conn]) -> Result<Vec<bool>> {
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(parked.len() + 2);
    let fd = |fd: i32, events: i16| libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    fds.push(fd(listener.as_raw_fd(), libc::POLLIN));
    fds.push(fd(wake.as_raw_fd(), libc::POLLIN));
    for c in parked {
        let out = if c.wants_write() { libc::POLLOUT } else { 0 };
        fds.push(fd(c.sock.as_raw_fd(), libc::POLLIN | out));
    }
    let now = Instant::now();
    let timeout = parked
        .iter()
        .map(|c| c.deadline.saturating_duration_since(now))
        .min()
        .unwrap_or(Duration::from_secs(1))
        .min(Duration::from_secs(1));
    // SAFETY: `fds` is a valid array of pollfd of the length given, alive for the call.
    let n = unsafe {
        libc::poll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            timeout.as_millis() as i32 + 1,
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e).context("poll the connections");
        }
    }
    Ok(fds.iter().map(|f| f.revents != 0).collect())
}

/// Allow as many open files as the hard limit does: every parked connection is one.
fn raise_open_files_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain calls with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_is_whole_at_its_blank_line() {
        assert!(!has_head(b"GET / HTTP/1.1\r\nHost: x\r\n"));
        assert!(has_head(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(has_head(b"GET / HTTP/1.1\r\n\r\nPUT"));
    }

    /// A served connection: the client's end and the server's, parked.
    fn pair() -> (TcpStream, Conn) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        (client, Conn::new(server, None).unwrap())
    }

    #[test]
    fn a_parked_connection_is_ready_only_with_a_whole_head() {
        let (mut client, mut conn) = pair();
        assert!(matches!(conn.advance(), Progress::Wait));
        client
            .write_all(b"GET /config.json HTTP/1.1\r\nHo")
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(matches!(conn.advance(), Progress::Wait));
        client.write_all(b"st: x\r\n\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(matches!(conn.advance(), Progress::Ready));
        let mut active = Active::take(conn).unwrap();
        let mut line = String::new();
        active.read_line(&mut line).unwrap();
        assert_eq!(line, "GET /config.json HTTP/1.1\r\n");
    }

    #[test]
    fn a_head_over_the_limit_or_a_closed_peer_closes() {
        let (mut client, mut conn) = pair();
        client.write_all(&vec![b'a'; MAX_HEAD + 100]).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(matches!(conn.advance(), Progress::Close));
        let (client, mut conn) = pair();
        drop(client);
        std::thread::sleep(Duration::from_millis(50));
        assert!(matches!(conn.advance(), Progress::Close));
    }

    #[test]
    fn what_follows_a_request_stays_for_the_next() {
        let (mut client, mut conn) = pair();
        client
            .write_all(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n")
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(matches!(conn.advance(), Progress::Ready));
        let mut active = Active::take(conn).unwrap();
        let mut line = String::new();
        active.read_line(&mut line).unwrap();
        active.read_line(&mut line).unwrap();
        let mut again = active.park().unwrap();
        assert!(matches!(again.advance(), Progress::Ready));
        assert_eq!(again.pending, b"GET /b HTTP/1.1\r\n\r\n");
    }
}
