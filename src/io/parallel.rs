//! One bounded, ordered, parallel map: items go to a fixed number of workers, their
//! results come back to the caller in the items' order, at most `window` items are between
//! the input and the caller at any time (so memory in flight is bounded), and the first
//! error (from a worker or from the caller's sink) stops everything and is returned.
//! Capture, restore and check all run through it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use anyhow::{anyhow, Result};
use crossbeam_channel::{bounded, unbounded};

/// How wide to run: workers at once, and items in flight between input and sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Width {
    pub workers: usize,
    pub window: usize,
}

impl Width {
    /// `workers` threads with `per_worker` items in flight each.
    pub fn new(workers: usize, per_worker: usize) -> Width {
        let workers = workers.max(1);
        Width {
            workers,
            window: workers * per_worker.max(1),
        }
    }

    /// Narrow the window (at least one item per worker stays in flight).
    pub fn with_window(self, window: usize) -> Width {
        Width {
            window: window.max(self.workers),
            ..self
        }
    }
}

/// The machine's cores (2 when it cannot be told).
pub fn cores() -> usize {
    thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// Run `work` over `items` on `width.workers` threads and hand each result to `sink` in
/// the order of `items`. Stops at the first error, from either side, and returns it; the
/// remaining items are not started.
pub fn map_ordered<I, T, R, W, S>(items: I, width: Width, work: W, mut sink: S) -> Result<()>
where
    I: IntoIterator<Item = T>,
    I::IntoIter: Send,
    T: Send,
    R: Send,
    W: Fn(T) -> Result<R> + Sync,
    S: FnMut(R) -> Result<()>,
{
    let abort = AtomicBool::new(false);
    // A token per item in flight: taken before an item is handed out, given back once its
    // result has been through the sink.
    let (token_tx, token_rx) = bounded::<()>(width.window);
    for _ in 0..width.window {
        token_tx.send(()).expect("room for every token");
    }
    let mut token_tx = Some(token_tx);
    let (job_tx, job_rx) = bounded::<(u64, T)>(width.window);
    let (res_tx, res_rx) = unbounded::<(u64, Result<R>)>();
    let items = items.into_iter();
    let mut first_err: Option<anyhow::Error> = None;
    thread::scope(|s| {
        let abort = &abort;
        let work = &work;
        s.spawn(move || {
            for (seq, item) in (0u64..).zip(items) {
                if token_rx.recv().is_err()
                    || abort.load(Ordering::Relaxed)
                    || job_tx.send((seq, item)).is_err()
                {
                    return;
                }
            }
        });
        let mut workers = Vec::new();
        for _ in 0..width.workers {
            let (job_rx, res_tx) = (job_rx.clone(), res_tx.clone());
            workers.push(s.spawn(move || {
                for (seq, item) in job_rx.iter() {
                    if abort.load(Ordering::Relaxed) {
                        break;
                    }
                    if res_tx.send((seq, work(item))).is_err() {
                        break;
                    }
                }
            }));
        }
        drop(res_tx);
        drop(job_rx);
        let mut waiting: BTreeMap<u64, R> = BTreeMap::new();
        let mut next = 0u64;
        for (seq, result) in res_rx.iter() {
            if first_err.is_some() {
                continue;
            }
            let r = result.and_then(|r| {
                waiting.insert(seq, r);
                while let Some(r) = waiting.remove(&next) {
                    next += 1;
                    crate::io::interrupt::check()?;
                    sink(r)?;
                    if let Some(t) = &token_tx {
                        let _ = t.send(());
                    }
                }
                Ok(())
            });
            if let Err(e) = r {
                abort.store(true, Ordering::Relaxed);
                first_err = Some(e);
                // The feeder waits on tokens: with no sender left, it stops.
                token_tx = None;
            }
        }
        // A worker that panicked took its item with it.
        for w in workers {
            if w.join().is_err() && first_err.is_none() {
                first_err = Some(anyhow!("a worker thread panicked"));
            }
        }
    });
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[test]
    fn results_come_back_in_order() {
        let mut out = Vec::new();
        map_ordered(
            0..200u64,
            Width::new(4, 2),
            |i| {
                // Later items finish first.
                thread::sleep(Duration::from_micros((200 - i) * 20));
                Ok(i * 3)
            },
            |r| {
                out.push(r);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(out, (0..200u64).map(|i| i * 3).collect::<Vec<_>>());
    }

    #[test]
    fn no_more_than_the_window_in_flight() {
        let in_flight = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        map_ordered(
            0..100,
            Width::new(3, 1).with_window(5),
            |i: i32| {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                thread::sleep(Duration::from_micros(300));
                Ok(i)
            },
            |_| {
                // Leaves flight only when sunk.
                in_flight.fetch_sub(1, Ordering::SeqCst);
                thread::sleep(Duration::from_micros(200));
                Ok(())
            },
        )
        .unwrap();
        assert!(most.load(Ordering::SeqCst) <= 5, "{most:?} in flight");
        assert!(most.load(Ordering::SeqCst) >= 2, "ran in parallel");
    }

    #[test]
    fn the_first_worker_error_stops_the_rest() {
        let started = AtomicUsize::new(0);
        let mut sunk = Vec::new();
        let err = map_ordered(
            0..10_000,
            Width::new(2, 2),
            |i: i32| {
                started.fetch_add(1, Ordering::SeqCst);
                if i == 50 {
                    anyhow::bail!("item {i} failed");
                }
                Ok(i)
            },
            |r| {
                sunk.push(r);
                Ok(())
            },
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "item 50 failed");
        assert!(sunk.len() <= 50 && sunk.iter().enumerate().all(|(i, &r)| i as i32 == r));
        assert!(
            started.load(Ordering::SeqCst) < 100,
            "work went on after the error"
        );
    }

    #[test]
    fn a_sink_error_stops_the_workers() {
        let started = AtomicUsize::new(0);
        let err = map_ordered(
            0..10_000,
            Width::new(2, 4),
            |i: i32| {
                started.fetch_add(1, Ordering::SeqCst);
                Ok(i)
            },
            |r| {
                anyhow::ensure!(r < 7, "sink refused {r}");
                Ok(())
            },
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "sink refused 7");
        assert!(started.load(Ordering::SeqCst) < 40);
    }

    #[test]
    fn an_empty_input_is_fine() {
        let mut n = 0;
        map_ordered(
            Vec::<u8>::new(),
            Width::new(4, 4),
            |_| Ok(()),
            |_| {
                n += 1;
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(n, 0);
    }
}
