//! Progress over the work actually done (bytes read, fetched or verified; free space that
//! is skipped does not count, so neither rate nor ETA guesses): a bar on a terminal, a
//! plain line every 30 s otherwise, with the rate and the time left.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::ui::{bytes, Ui};

/// How often a plain progress line is printed.
const LINE_EVERY: Duration = Duration::from_secs(30);

pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    total: u64,
    done: AtomicU64,
    start: Instant,
    next_line: Mutex<Instant>,
    quiet: bool,
    items: bool,
}

impl Progress {
    /// Progress over `total` bytes of work.
    pub fn new(label: &str, total: u64, ui: &Ui) -> Progress {
        Self::build(label, total, ui, false)
    }

    /// Progress over `total` things (chunks, files).
    pub fn items(label: &str, total: u64, ui: &Ui) -> Progress {
        Self::build(label, total, ui, true)
    }

    fn build(label: &str, total: u64, ui: &Ui, items: bool) -> Progress {
        let quiet = ui.quiet;
        let bar = ui.progress_bars().then(|| {
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template(if items {
                    "{msg} [{bar:40}] {pos}/{len} {per_sec} eta {eta}"
                } else {
                    "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
                })
                .expect("valid template")
                .progress_chars("=> "),
            );
            b.set_message(label.to_string());
            b
        });
        let start = Instant::now();
        Progress {
            bar,
            label: label.to_string(),
            total,
            done: AtomicU64::new(0),
            start,
            next_line: Mutex::new(start + LINE_EVERY),
            quiet,
            items,
        }
    }

    /// `n` more of the work done.
    pub fn inc(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(b) = &self.bar {
            b.set_position(done);
            return;
        }
        if self.quiet || self.total == 0 {
            return;
        }
        let now = Instant::now();
        let mut next = self.next_line.lock().unwrap_or_else(|p| p.into_inner());
        if now >= *next && done < self.total {
            *next = now + LINE_EVERY;
            eprintln!("{}", self.line(done, now - self.start));
        }
    }

    /// The plain line: `restore: 45% (1.2 GiB of 2.7 GiB), 85.3 MiB/s, 18s left`.
    fn line(&self, done: u64, elapsed: Duration) -> String {
        let show = |n: u64| if self.items { n.to_string() } else { bytes(n) };
        let per_s = done as f64 / elapsed.as_secs_f64().max(1e-3);
        let rate = match self.items {
            true => format!("{per_s:.0}/s"),
            false => format!("{}/s", bytes(per_s as u64)),
        };
        let left = match per_s > 0.0 {
            true => crate::time::human(Duration::from_secs_f64(
                (self.total.saturating_sub(done) as f64 / per_s).min(1e9),
            )),
            false => "unknown".into(),
        };
        format!(
            "{}: {}% ({} of {}), {rate}, {left} left",
            self.label,
            done * 100 / self.total.max(1),
            show(done),
            show(self.total)
        )
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// An error or an interrupt leaves no bar drawn mid-line.
impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_line_has_the_rate_and_the_time_left_of_the_work_done() {
        let p = Progress::new("restore", 100 << 20, &Ui::default());
        let line = p.line(25 << 20, Duration::from_secs(5));
        assert_eq!(
            line,
            "restore: 25% (25.0 MiB of 100.0 MiB), 5.0 MiB/s, 15s left"
        );
    }
}
