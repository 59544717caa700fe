//! Printing results for people and for machines.

use std::time::Duration;

use serde::Serialize;

/// 1536 → "1.5 KiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Bytes per second as "123.4 MiB/s".
pub fn rate(n: u64, d: Duration) -> String {
    let secs = d.as_secs_f64().max(1e-9);
    format!("{}/s", bytes((n as f64 / secs) as u64))
}

pub fn mib_per_s(n: u64, d: Duration) -> f64 {
    n as f64 / (1 << 20) as f64 / d.as_secs_f64().max(1e-9)
}

/// Print `value` as one JSON object line on stdout.
pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

/// Print aligned "key: value" lines.
pub fn print_table(rows: &[(&str, String)]) {
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("{k:<w$}  {v}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn units() {
        assert_eq!(super::bytes(512), "512 B");
        assert_eq!(super::bytes(1536), "1.5 KiB");
        assert_eq!(super::bytes(3 << 30), "3.0 GiB");
    }
}
