//! What a server is asked to do: `lifeboat serve`'s options.

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The repository directory.
    #[arg(long, env = "LIFEBOAT_REPO", value_name = "DIR")]
    pub repo: PathBuf,
    /// Address to listen on (port 0 picks one; the first line printed says which).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR:PORT")]
    pub listen: String,
    /// File holding the append token: it allows adding objects (captures), never
    /// replacing or deleting one; without it (and --admin-token-file), read-only.
    /// (The clients' option of the same name gives them this token.)
    #[arg(long = "token-file", aliases = ["write-token-file", "append-token-file"], value_name = "FILE")]
    pub write_token_file: Option<PathBuf>,
    /// File holding the admin token: it also allows adding key files and deleting
    /// (`lifeboat key remove`; prune). Keep it off capturing machines.
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// The passphrase of an encrypted repository, for the NBD export only (the HTTP
    /// server holds no key).
    #[arg(long, env = "LIFEBOAT_PASSWORD_FILE", value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// TLS certificate chain (PEM); serves https with --tls-key.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Connections served at once; more are answered 503 and closed.
    #[arg(long, default_value_t = 64)]
    pub threads: usize,
    /// Also export every snapshot as a read-only NBD disk named after it, on this
    /// address (e.g. 127.0.0.1:10809).
    #[arg(long, value_name = "ADDR:PORT")]
    pub nbd: Option<String>,
    /// What the NBD export requires of a snapshot before it exports it (--trust and the
    /// rest, as restore takes them).
    #[command(flatten)]
    pub trust: crate::trust::TrustArgs,
}
