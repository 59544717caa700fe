//! Who runs this: the host and user that leases, journal records, key files and
//! manifests name.

/// This machine's host name (empty when it has none).
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The user: `$USER`, `$LOGNAME`, else the uid.
pub fn username() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| {
            format!(
                "uid {}", // SAFETY: getuid(2) cannot fail and touches no memory.
                unsafe { libc::getuid() }
            )
        })
}
