//! `lifeboat serve`: a repository over HTTP(S) for restores and captures, and its
//! snapshots as read-only disks over NBD (the protocol lives in `nbd/`). The wire
//! protocol is `wire`, who may do what is `routes`, and what is stored is decided by the
//! repository's admission rules (`repo::admit`); this module starts it all.

mod args;
mod metrics;
pub mod nbd;
mod pool;
pub(crate) mod routes;
pub(crate) mod wire;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use nix::sys::signal::{SigSet, Signal};

use crate::location::RepoLocation;
use crate::repo::admit::Admission;
use crate::repo::{RepoSpec, Repository};
pub use args::ServeArgs;
use pool::Active;
use routes::{serve_one, Handler, Tokens};

fn read_file(p: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("read {what} {}", p.display()))
}

/// A rustls server config from a PEM certificate chain and private key.
fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>> {
    let certs = rustls_pemfile::certs(&mut read_file(cert, "certificate")?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parse {}", cert.display()))?;
    let key = rustls_pemfile::private_key(&mut read_file(key, "private key")?.as_slice())
        .with_context(|| format!("parse {}", key.display()))?
        .ok_or_else(|| anyhow!("{} holds no private key", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("TLS certificate and key")?;
    Ok(Arc::new(cfg))
}

/// The write token from its file: at least 16 characters.
fn load_token(file: &Path) -> Result<String> {
    let t =
        String::from_utf8(read_file(file, "token file")?).context("the token file is not UTF-8")?;
    let t = t.trim().to_string();
    anyhow::ensure!(
        t.len() >= 16,
        "the write token in {} is shorter than 16 characters",
        file.display()
    );
    Ok(t)
}

/// A thread that waits for SIGTERM or SIGINT, then sets `stop` and wakes the accept loop.
fn stop_on_signal(addr: SocketAddr) -> Result<Arc<AtomicBool>> {
    // Signals are taken by a waiting thread: block them everywhere first.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.thread_block().context("block SIGTERM and SIGINT")?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        if let Ok(sig) = signals.wait() {
            log::warn!("{sig:?}: stopping");
        }
        flag.store(true, Ordering::Relaxed);
        // Wake the accept loop.
        let _ = TcpStream::connect(addr);
    });
    Ok(stop)
}

/// Serve until SIGTERM or SIGINT. Prints `listening on ADDR` on stdout once ready.
pub fn run(args: &ServeArgs) -> Result<()> {
    let spec = RepoSpec {
        password_file: args.password_file.clone(),
        ..RepoSpec::at(RepoLocation::Dir(args.repo.clone()))
    };
    // The server itself holds no key: it checks names and shapes, never content it
    // cannot read. Only the NBD export, which serves plain disks, needs the passphrase.
    let admission = Admission::open(&args.repo)?;
    let tokens = Tokens {
        append: args
            .write_token_file
            .as_deref()
            .map(load_token)
            .transpose()?,
        admin: args
            .admin_token_file
            .as_deref()
            .map(load_token)
            .transpose()?,
    };
    if tokens.append.is_some() && tokens.append == tokens.admin {
        anyhow::bail!("the append and admin tokens must differ");
    }
    let listener =
        TcpListener::bind(&args.listen).with_context(|| format!("listen on {}", args.listen))?;
    let addr: SocketAddr = listener.local_addr().context("listening address")?;
    let stop = stop_on_signal(addr)?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls_config(cert, key)?),
        (None, None) => None,
        _ => anyhow::bail!("--tls-cert and --tls-key go together"),
    };
    let nbd = match &args.nbd {
        Some(a) => Some(TcpListener::bind(a).with_context(|| format!("listen for NBD on {a}"))?),
        None => None,
    };
    crate::outln!("listening on {addr}");
    if let Some(l) = &nbd {
        crate::outln!(
            "nbd listening on {}",
            l.local_addr().context("NBD address")?
        );
    }
    log::warn!(
        "serving {} at {}://{addr}/ ({})",
        args.repo.display(),
        if tls.is_some() { "https" } else { "http" },
        match (&tokens.append, &tokens.admin) {
            (_, Some(_)) => "appends with a token, deletes with the admin token",
            (Some(_), None) => "appends with the token, never deletes",
            (None, None) => "read-only",
        }
    );
    std::io::stdout().flush().ok();
    if let Some(l) = nbd {
        let repo = Repository::open(&spec)?;
        let policy = crate::trust::Policy::new(&args.trust, &repo)?;
        let exports = Arc::new(nbd::Exports::new(Arc::new(repo), policy));
        std::thread::spawn(move || nbd::run(l, exports));
    }
    let handler = Arc::new(Handler { admission, tokens });
    let h = handler.clone();
    let serve: Arc<pool::Serve> = Arc::new(move |conn: &mut Active| serve_one(conn, &h));
    pool::run(&listener, serve, tls, &stop, args.threads.max(1))?;
    handler.admission.flush()
}
