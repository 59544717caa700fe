//! Connections and the threads that serve them. A connection waits for its next request
//! in one thread that polls them all (`park`): it is handed to one of a fixed pool of
//! workers only once a whole request head has arrived, and given back after the reply.
//! A slow, idle or trickling client thus costs a socket and a few KiB, never a worker;
//! each waiting connection has a deadline, and their number is bounded. Whole requests
//! wait for a worker in a queue that takes turns between client addresses (`Admission`),
//! so that one busy client cannot starve the others; past its bound, requests are
//! answered 503 with `Retry-After`, which clients wait for.

use std::collections::{HashMap, VecDeque};
use std::io::{self, BufRead, Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, Sender};

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
/// Whole requests waiting for a worker at once; more are answered 503 and closed.
const MAX_QUEUED: usize = 1024;
/// How long a client told to come back later is asked to wait.
pub(crate) const RETRY_AFTER_SECS: u32 = 1;

/// Requests waiting for a worker: one queue per client address, served in turn (round
/// robin), so that each client's share of the workers does not depend on how many
/// requests it sends at once.
pub(crate) struct Admission {
    state: Mutex<Queues>,
    ready: Condvar,
    capacity: usize,
}

#[derive(Default)]
struct Queues {
    by_client: HashMap<IpAddr, VecDeque<Conn>>,
    /// Clients with requests waiting, in the order their turns come.
    turns: VecDeque<IpAddr>,
    len: usize,
    closed: bool,
}

impl Admission {
    pub(crate) fn new(capacity: usize) -> Admission {
        Admission {
            state: Mutex::new(Queues::default()),
            ready: Condvar::new(),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue a request; a full queue gives it back.
    fn push(&self, conn: Conn) -> Result<(), Conn> {
        let mut q = self.lock();
        if q.len >= self.capacity {
            return Err(conn);
        }
        let client = conn.client;
        let queue = q.by_client.entry(client).or_default();
        queue.push_back(conn);
        if queue.len() == 1 {
            q.turns.push_back(client);
        }
        q.len += 1;
        drop(q);
        self.ready.notify_one();
        Ok(())
    }

    /// The next request, the client whose turn it is first; None once closed and empty.
    fn pop(&self) -> Option<Conn> {
        let mut q = self.lock();
        loop {
            if let Some(client) = q.turns.pop_front() {
                let queue = q
                    .by_client
                    .get_mut(&client)
                    .expect("a client with a turn has a queue");
                let conn = queue
                    .pop_front()
                    .expect("a client with a turn has a request");
                if queue.is_empty() {
                    q.by_client.remove(&client);
                } else {
                    q.turns.push_back(client);
                }
                q.len -= 1;
                return Some(conn);
            }
            if q.closed {
                return None;
            }
            q = self.ready.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// No more requests: workers finish what is queued and stop.
    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}

/// One client connection, plain or TLS.
pub(crate) struct Conn {
    sock: TcpStream,
    tls: Option<Box<rustls::ServerConnection>>,
    /// Plaintext received but not yet used: the next request's head (and what follows).
    pending: Vec<u8>,
    /// When the next request's head must be complete.
    deadline: Instant,
    pub(crate) peer: String,
    /// The client's address, whose turn in the queue this connection waits for.
    client: IpAddr,
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
        let addr = sock.peer_addr()?;
        Ok(Conn {
            peer: addr.to_string(),
            client: addr.ip(),
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
    client: IpAddr,
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
            client: conn.client,
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
            client: self.client,
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
        format!(
            "HTTP/1.1 503 Service Unavailable\r\nRetry-After: {RETRY_AFTER_SECS}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
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
    let queue = Arc::new(Admission::new(MAX_QUEUED));
    let (back_tx, back_rx) = crossbeam_channel::unbounded::<Conn>();
    let back = Back {
        tx: back_tx,
        wake: Arc::new(wake_tx),
    };
    let pool = start_workers(workers, &queue, &serve, &back)?;
    let result = park(listener, &wake_rx, &back_rx, &queue, tls.as_ref(), stop);
    queue.close();
    for t in pool {
        let _ = t.join();
    }
    result
}

fn start_workers(
    workers: usize,
    queue: &Arc<Admission>,
    serve: &Arc<Serve>,
    back: &Back,
) -> Result<Vec<std::thread::JoinHandle<()>>> {
    let mut pool = Vec::with_capacity(workers);
    for i in 0..workers {
        let (queue, serve, back) = (queue.clone(), serve.clone(), back.clone());
        let started = std::thread::Builder::new()
            .name(format!("http-{i}"))
            .spawn(move || {
                while let Some(conn) = queue.pop() {
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
    queue: &Admission,
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
                    if let Err(c) = queue.push(conn) {
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
    fn the_queue_takes_turns_between_clients_and_has_a_bound() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        // Connections from two client addresses (127.0.0.1 and 127.0.0.2).
        let conn_from = |ip: &str| {
            let s = socket2_free_connect(ip, addr);
            let (server, _) = l.accept().unwrap();
            (s, Conn::new(server, None).unwrap())
        };
        let q = Admission::new(5);
        let mut keep = Vec::new();
        for ip in [
            "127.0.0.1",
            "127.0.0.1",
            "127.0.0.1",
            "127.0.0.2",
            "127.0.0.2",
        ] {
            let (c, conn) = conn_from(ip);
            keep.push(c);
            assert!(q.push(conn).is_ok());
        }
        let (c, extra) = conn_from("127.0.0.2");
        keep.push(c);
        assert!(q.push(extra).is_err(), "over its bound, the queue refuses");
        let order: Vec<String> = (0..5)
            .map(|_| q.pop().unwrap().client.to_string())
            .collect();
        assert_eq!(
            order,
            [
                "127.0.0.1",
                "127.0.0.2",
                "127.0.0.1",
                "127.0.0.2",
                "127.0.0.1"
            ]
        );
        q.close();
        assert!(q.pop().is_none());
    }

    /// A connection to `to` from the local address `ip`.
    fn socket2_free_connect(ip: &str, to: std::net::SocketAddr) -> TcpStream {
        use nix::sys::socket::{
            bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn,
        };
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::empty(),
            None,
        )
        .unwrap();
        let local: std::net::SocketAddrV4 = format!("{ip}:0").parse().unwrap();
        bind(fd.as_raw_fd(), &SockaddrIn::from(local)).unwrap();
        let std::net::SocketAddr::V4(to) = to else {
            unreachable!()
        };
        connect(fd.as_raw_fd(), &SockaddrIn::from(to)).unwrap();
        TcpStream::from(fd)
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
