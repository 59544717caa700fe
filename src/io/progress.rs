//! Progress: a bar on a terminal, a plain line every tenth of the way otherwise.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};

use crate::ui::{bytes, Ui};

pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    total: u64,
    done: AtomicU64,
    next_line: Mutex<u64>,
    quiet: bool,
    items: bool,
}

impl Progress {
    /// Progress over `total` bytes.
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
        Progress {
            bar,
            label: label.to_string(),
            total,
            done: AtomicU64::new(0),
            next_line: Mutex::new(1),
            quiet,
            items,
        }
    }

    pub fn inc(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(b) = &self.bar {
            b.set_position(done);
            return;
        }
        if self.quiet || self.total == 0 {
            return;
        }
        let tenth = done * 10 / self.total;
        let mut next = self.next_line.lock().unwrap();
        if tenth >= *next && tenth < 10 {
            *next = tenth + 1;
            let show = |n: u64| if self.items { n.to_string() } else { bytes(n) };
            eprintln!(
                "{}: {}% ({} of {})",
                self.label,
                tenth * 10,
                show(done),
                show(self.total)
            );
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
