//! Leases: a capture (or a prune) says it is running by an object under `locks/` that it
//! renews every minute and removes at its end; one not renewed for five minutes is stale.
//! A lease carries its host, process and times; `lifeboat locks` shows them and breaks
//! one. Leases never stop a capture: only a prune waits for the captures that began
//! before it marked what it will delete (see `intent`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::repo::object::TimeName;
use crate::repo::store::Store;
use crate::repo::{Dir, Object, Repository};
use crate::time::rfc3339;

/// A lease not renewed for this long is stale.
pub const TTL: Duration = Duration::from_secs(300);
const RENEW: Duration = Duration::from_secs(60);
const MAX_LEASE: u64 = 4096;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseFile {
    /// `capture` or `prune`.
    pub kind: String,
    pub host: String,
    pub pid: u32,
    /// RFC 3339: when the operation began.
    pub started: String,
    /// RFC 3339: when the lease is stale unless renewed.
    pub expires: String,
}

impl LeaseFile {
    pub fn started_at(&self) -> Option<DateTime<Utc>> {
        crate::time::parse_rfc3339(&self.started).ok()
    }

    /// Stale: not renewed in time, or its process, on this host, is gone.
    pub fn is_stale(&self, now: DateTime<Utc>) -> bool {
        let expired = crate::time::parse_rfc3339(&self.expires)
            .ok()
            .is_none_or(|e| e < now);
        expired || self.holder_is_gone()
    }

    /// Whether the lease was taken on this host by a process that no longer runs (a
    /// capture killed, a machine rebooted): it is stale at once, not in five minutes.
    pub fn holder_is_gone(&self) -> bool {
        if self.host != crate::who::hostname() || self.pid == std::process::id() {
            return false;
        }
        let Ok(pid) = i32::try_from(self.pid) else {
            return false;
        };
        // Signal 0 checks that the process exists; EPERM means it does (another user's).
        matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        ) && pid > 0
    }
}

/// A lease held by this process, renewed in the background until dropped.
pub struct Lease {
    current: Arc<Mutex<Object>>,
    /// When the lease was last written: if ever more than the TTL ago, a prune may have
    /// stopped waiting for its holder.
    renewed: Arc<Mutex<(std::time::Instant, bool)>>,
    store: Arc<dyn Store>,
    stop: Arc<AtomicBool>,
    renewer: Option<std::thread::JoinHandle<()>>,
}

fn write(store: &dyn Store, file: &LeaseFile) -> Result<Object> {
    let key = Object::Lease(TimeName::new(Utc::now())?);
    let mut data = serde_json::to_vec(file)?;
    data.push(b'\n');
    store.put(&key, &data).with_context(|| {
        format!(
            "say that this {} runs (so that a prune waits for it): write {}",
            file.kind,
            store.location(&key)
        )
    })?;
    store.flush()?;
    Ok(key)
}

impl Lease {
    /// Take a lease of `kind` for this process.
    pub fn take(repo: &Repository, kind: &str) -> Result<Lease> {
        let now = Utc::now();
        let mut file = LeaseFile {
            kind: kind.into(),
            host: crate::who::hostname(),
            pid: std::process::id(),
            started: rfc3339(now),
            expires: rfc3339(now + chrono::Duration::from_std(TTL).expect("small")),
        };
        let store = repo.store().clone();
        let current = Arc::new(Mutex::new(write(&*store, &file)?));
        let stop = Arc::new(AtomicBool::new(false));
        let renewed = Arc::new(Mutex::new((std::time::Instant::now(), true)));
        let renewer = {
            let (store, current, stop) = (store.clone(), current.clone(), stop.clone());
            let renewed = renewed.clone();
            std::thread::spawn(move || {
                let mut waited = Duration::ZERO;
                while !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(200));
                    waited += Duration::from_millis(200);
                    if waited < RENEW {
                        continue;
                    }
                    waited = Duration::ZERO;
                    file.expires =
                        rfc3339(Utc::now() + chrono::Duration::from_std(TTL).expect("small"));
                    // Removed by someone else: a prune may have stopped waiting.
                    let old = current.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    let still_there = store.has(&old).unwrap_or(false);
                    match write(&*store, &file) {
                        Ok(key) => {
                            let mut r = renewed.lock().unwrap_or_else(|p| p.into_inner());
                            // A gap longer than the TTL: the lease was stale meanwhile.
                            if r.0.elapsed() >= TTL || !still_there {
                                r.1 = false;
                            }
                            r.0 = std::time::Instant::now();
                            drop(r);
                            let old = std::mem::replace(
                                &mut *current.lock().unwrap_or_else(|p| p.into_inner()),
                                key,
                            );
                            if let Err(e) = store.delete(&old) {
                                log::warn!("remove the old lease {old}: {e:#}");
                            }
                        }
                        Err(e) => log::warn!("renew the lease: {e:#}"),
                    }
                }
            })
        };
        Ok(Lease {
            current,
            renewed,
            store,
            stop,
            renewer: Some(renewer),
        })
    }
}

impl Lease {
    /// Whether the lease has been fresh all along (never stale for a prune), counting
    /// until now, and is still there: whoever may delete leases (the append token of
    /// `serve`) could have removed it, and a prune would then not have waited.
    pub fn held_throughout(&self) -> bool {
        let fresh = {
            let r = self.renewed.lock().unwrap_or_else(|p| p.into_inner());
            r.1 && r.0.elapsed() < TTL
        };
        let key = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        fresh && self.store.has(&key).unwrap_or(false)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.renewer.take() {
            let _ = t.join();
        }
        let key = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Err(e) = self.store.delete(&key).and_then(|_| self.store.flush()) {
            log::warn!(
                "remove the lease {key}: {e:#} (it goes stale in {} s)",
                TTL.as_secs()
            );
        }
    }
}

/// Every lease in the repository, with its object.
pub fn list(repo: &Repository) -> Result<Vec<(Object, LeaseFile)>> {
    let mut out = Vec::new();
    for key in repo
        .store()
        .objects(&Dir::Locks)
        .context("list the leases")?
    {
        match repo.store().get_at_most(&key, MAX_LEASE) {
            Ok(raw) => match serde_json::from_slice::<LeaseFile>(&raw) {
                Ok(f) => out.push((key, f)),
                Err(e) => log::warn!("{}: not a lease: {e}", repo.store().location(&key)),
            },
            // Removed since it was listed: its holder ended.
            Err(crate::repo::store::StoreError::NotFound { .. }) => {}
            Err(e) => return Err(anyhow::Error::new(e).context("read a lease")),
        }
    }
    Ok(out)
}
