//! `lifeboat serve`: a repository over HTTP(S) for restores and captures, and its
//! snapshots as read-only disks over NBD (the protocol lives in `nbd/`).

mod args;
pub mod http;
mod metrics;
mod pool;

pub use args::ServeArgs;
pub use http::run;
