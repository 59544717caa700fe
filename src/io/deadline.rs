//! A socket whose reads fail once a deadline has passed: each read waits at most what is
//! left, so a peer that trickles a byte now and then cannot hold its reader past it.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

pub struct DeadlineSocket {
    pub sock: TcpStream,
    until: Instant,
}

impl DeadlineSocket {
    /// Reads must be done within `d` from now.
    pub fn new(sock: TcpStream, d: Duration) -> Self {
        DeadlineSocket {
            sock,
            until: Instant::now() + d,
        }
    }

    pub fn set_deadline(&mut self, d: Duration) {
        self.until = Instant::now() + d;
    }
}

impl Read for DeadlineSocket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "past the deadline"));
        }
        self.sock.set_read_timeout(Some(left))?;
        // The socket's timeout is what was left: its expiry is the deadline's.
        self.sock.read(buf).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock => {
                io::Error::new(io::ErrorKind::TimedOut, "past the deadline")
            }
            _ => e,
        })
    }
}

impl Write for DeadlineSocket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sock.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trickling_peer_is_cut_at_the_deadline() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        let t = std::thread::spawn(move || {
            for _ in 0..20 {
                if client.write_all(b"x").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let mut s = DeadlineSocket::new(server, Duration::from_millis(300));
        let start = Instant::now();
        let e = s.read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(
            start.elapsed() < Duration::from_millis(600),
            "{:?}",
            start.elapsed()
        );
        drop(s);
        t.join().unwrap();
    }
}
