//! `lifeboat serve`: a repository over HTTP(S), and (later) its snapshots over NBD.

pub mod http;
pub mod nbd;
