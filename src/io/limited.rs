//! A reader of outside data with a size limit and a minimum rate: past `limit` bytes it
//! fails (the source claims more than such a file may hold), and once `grace` has passed
//! it fails whenever fewer than `min_rate` bytes per second have arrived on average (a
//! peer that trickles a byte now and then cannot hold a reader for long). Each single
//! read's stall is bounded by the socket's own timeout underneath.

use std::io::{self, Read};
use std::time::{Duration, Instant};

pub struct LimitedReader<R> {
    inner: R,
    limit: u64,
    read: u64,
    start: Instant,
    grace: Duration,
    min_rate: u64,
}

impl<R: Read> LimitedReader<R> {
    pub fn new(inner: R, limit: u64, grace: Duration, min_rate: u64) -> Self {
        LimitedReader {
            inner,
            limit,
            read: 0,
            start: Instant::now(),
            grace,
            min_rate: min_rate.max(1),
        }
    }

    /// The time `bytes` may take: the grace, then `min_rate`.
    fn allowed(&self, bytes: u64) -> Duration {
        self.grace + Duration::from_secs_f64(bytes as f64 / self.min_rate as f64)
    }
}

impl<R: Read> Read for LimitedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.start.elapsed() > self.allowed(self.read) {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "too slow: {} bytes in {:.0} s, under {} bytes/s",
                    self.read,
                    self.start.elapsed().as_secs_f64(),
                    self.min_rate
                ),
            ));
        }
        // One byte past the limit tells "exactly the limit" from "more".
        let room = (self.limit - self.read.min(self.limit)).saturating_add(1);
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.read += n as u64;
        if self.read > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("larger than the {} bytes such a file may hold", self.limit),
            ));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLOW: Duration = Duration::from_secs(3600);

    #[test]
    fn up_to_the_limit_reads_and_past_it_fails() {
        let data = vec![7u8; 1000];
        let mut out = Vec::new();
        LimitedReader::new(&data[..], 1000, SLOW, 1)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
        let e = LimitedReader::new(&data[..], 999, SLOW, 1)
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    /// A source that gives one byte per read, pausing before each.
    struct Trickle(Duration);
    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            std::thread::sleep(self.0);
            buf[0] = 1;
            Ok(1)
        }
    }

    #[test]
    fn a_trickle_fails_once_the_grace_is_over() {
        let mut r = LimitedReader::new(
            Trickle(Duration::from_millis(20)),
            u64::MAX,
            Duration::from_millis(200),
            1000,
        );
        let start = Instant::now();
        let e = r.read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert!(r.read >= 5, "it read for the grace first: {}", r.read);
    }
}
