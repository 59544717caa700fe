//! How long Lifeboat waits on a peer (an HTTP repository, an NBD server): one setting,
//! `--io-timeout` (default 30 s), from which every network deadline follows, so that a
//! slow link can be given more time and a test can trip each deadline in seconds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const DEFAULT_MS: u64 = 30_000;
static IO_TIMEOUT_MS: AtomicU64 = AtomicU64::new(DEFAULT_MS);

/// The slowest a body may arrive once its grace is over: 64 KiB/s, or half of a lower
/// `--limit-download`/`--limit-upload`, which this process itself holds to.
pub fn min_rate() -> u64 {
    const MIN_RATE: u64 = 64 << 10;
    match super::bandwidth::lowest() {
        Some(limit) => MIN_RATE.min(limit / 2).max(1),
        None => MIN_RATE,
    }
}

/// Set the I/O timeout for the whole process (from the command line).
pub fn set_io_timeout(d: Duration) {
    IO_TIMEOUT_MS.store((d.as_millis() as u64).max(100), Ordering::Relaxed);
}

/// The longest a single read or write may stall.
pub fn io() -> Duration {
    Duration::from_millis(IO_TIMEOUT_MS.load(Ordering::Relaxed))
}

/// The longest a connection may take to open.
pub fn connect() -> Duration {
    io().min(Duration::from_secs(10))
}

/// No new attempt at a request starts after this long (3 x the I/O timeout).
pub fn retry_budget() -> Duration {
    io() * 3
}

/// How long a client keeps coming back to a server that says it is busy (503 or 429
/// with `Retry-After`): 20 x the I/O timeout, 10 minutes by default. A fleet restoring
/// at once queues for its turn instead of failing.
pub fn overload_budget() -> Duration {
    io() * 20
}

/// The longest a server may take to answer a request (its status line and headers),
/// whatever the size of the body that follows: 2 x the I/O timeout. A server that accepts
/// and stays silent costs this long, and no more.
pub fn answer() -> Duration {
    io() * 2
}

/// The longest a body of at most `limit` bytes may take to arrive or to be sent, once
/// the answer has begun: the I/O timeout, plus the body at the minimum rate.
pub fn body(limit: u64) -> Duration {
    io() + Duration::from_secs(limit / min_rate())
}
