//! `--limit-download` and `--limit-upload` (KiB/s, as restic spells them): the bytes a
//! process moves to and from a network repository, all threads together, held to a rate.
//! Each transfer reserves its time on one clock per direction and sleeps until its turn,
//! so that the average over any few seconds keeps to the limit.

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One direction's limit and clock.
struct Limit {
    /// Bytes per second; 0: no limit.
    rate: AtomicU64,
    /// When the bytes reserved so far will have gone.
    free_at: Mutex<Option<Instant>>,
}

static DOWN: Limit = Limit::new();
static UP: Limit = Limit::new();

impl Limit {
    const fn new() -> Limit {
        Limit {
            rate: AtomicU64::new(0),
            free_at: Mutex::new(None),
        }
    }

    /// Wait until `bytes` may go.
    fn take(&self, bytes: u64) {
        let rate = self.rate.load(Ordering::Relaxed);
        if rate == 0 || bytes == 0 {
            return;
        }
        let start = {
            let mut free = self.free_at.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let start = free.filter(|f| *f > now).unwrap_or(now);
            *free = Some(start + Duration::from_secs_f64(bytes as f64 / rate as f64));
            start
        };
        let wait = start.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            // An interrupt cuts the wait short; the transfer's own loop then stops.
            let _ = super::interrupt::sleep(wait);
        }
    }
}

/// Set the limits, in KiB/s (None: none), for the whole process.
pub fn set_limits(download_kib: Option<u64>, upload_kib: Option<u64>) {
    DOWN.rate.store(
        download_kib.unwrap_or(0).saturating_mul(1024),
        Ordering::Relaxed,
    );
    UP.rate.store(
        upload_kib.unwrap_or(0).saturating_mul(1024),
        Ordering::Relaxed,
    );
}

/// The lower of the two limits in bytes per second, if any is set.
pub fn lowest() -> Option<u64> {
    [&DOWN, &UP]
        .iter()
        .map(|l| l.rate.load(Ordering::Relaxed))
        .filter(|r| *r > 0)
        .min()
}

/// Wait until `bytes` may be sent.
pub fn upload(bytes: u64) {
    UP.take(bytes);
}

/// A reader of downloaded bytes, held to `--limit-download`.
pub struct Paced<R>(pub R);

impl<R: Read> Read for Paced<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if DOWN.rate.load(Ordering::Relaxed) == 0 {
            return self.0.read(buf);
        }
        // At most 64 KiB at a time, so that the pace is even.
        let want = buf.len().min(64 << 10);
        let n = self.0.read(&mut buf[..want])?;
        DOWN.take(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfers_together_keep_to_the_rate() {
        let limit = Limit::new();
        limit.rate.store(1 << 20, Ordering::Relaxed);
        let start = Instant::now();
        // 1 MiB/s: the first 256 KiB go at once, the next three wait their turn.
        for _ in 0..4 {
            limit.take(256 << 10);
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(740), "{took:?}");
        assert!(took < Duration::from_millis(1500), "{took:?}");
        let none = Limit::new();
        let start = Instant::now();
        none.take(1 << 30);
        assert!(start.elapsed() < Duration::from_millis(50));
    }
}
