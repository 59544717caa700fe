//! Time as Lifeboat writes and reads it: instants in RFC 3339, UTC, with microseconds (so
//! that records made within one second still sort in the order they were made); ages
//! for people; durations as the command line takes them (`26h`, `10m`); and calendar
//! spans as restic writes them (`1y6m`, `7d`).

use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Months, Utc};

/// An instant as every record, manifest and lease writes it: `2026-12-07T16:12:28.123456Z`.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// An instant in the compact form object names carry: `20261207T161228.123456Z`.
pub fn compact(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%S%.6fZ").to_string()
}

/// Now, as [`rfc3339`] writes it.
pub fn now_rfc3339() -> String {
    rfc3339(Utc::now())
}

/// Read an RFC 3339 instant (any offset), in UTC.
pub fn parse_rfc3339(s: &str) -> Result<DateTime<Utc>> {
    Ok(DateTime::parse_from_rfc3339(s)
        .with_context(|| format!("time {s:?} is not RFC 3339"))?
        .with_timezone(&Utc))
}

/// A time that may be written loosely (a manifest's, which signatures bind): RFC 3339
/// with or without its fraction, offset or `T`.
pub fn parse_loose(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s).ok()
}

/// How long ago `t` was (zero when it is in the future); None when it does not parse.
pub fn age(t: &str, now: DateTime<Utc>) -> Option<Duration> {
    let t = parse_rfc3339(t).ok()?;
    (now - t).to_std().ok().or(Some(Duration::ZERO))
}

/// A duration for people, in whole seconds: `1day 2h 3m 4s`.
pub fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// A duration for people, as given (fractions kept).
pub fn exact(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// A duration as the command line takes it: `26h`, `10m`, `8d`, `1h 30m`.
pub fn parse_duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}

/// restic's span of calendar time (`--keep-within`, `journal --since`): years, months,
/// days and hours (`1y6m`, `7d`, `36h`, `2y5m7d3h`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub years: u32,
    pub months: u32,
    pub days: u32,
    pub hours: u32,
}

impl std::str::FromStr for Span {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Span> {
        let mut span = Span::default();
        let mut num = String::new();
        let mut any = false;
        for c in s.chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let n: u32 = num
                .parse()
                .map_err(|_| anyhow::anyhow!("{s:?}: a number must come before {c:?}"))?;
            if n > 100_000 {
                bail!("{s:?}: {n} is too large");
            }
            match c {
                'y' => span.years = n,
                'm' => span.months = n,
                'd' => span.days = n,
                'h' => span.hours = n,
                _ => bail!("{s:?}: units are y, m, d and h (as restic: 1y6m, 7d, 36h)"),
            }
            num.clear();
            any = true;
        }
        if !num.is_empty() || !any {
            bail!("{s:?}: expected a duration such as 7d, 36h, 1y6m or 2y5m7d3h");
        }
        Ok(span)
    }
}

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}y{}m{}d{}h",
            self.years, self.months, self.days, self.hours
        )
    }
}

impl Span {
    /// `t` minus this span (months clamped to the month's last day).
    pub fn before(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        let months = self.years.saturating_mul(12).saturating_add(self.months);
        let t = t
            .checked_sub_months(Months::new(months))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        t - chrono::Duration::days(self.days as i64) - chrono::Duration::hours(self.hours as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_are_written_in_utc_with_microseconds_and_read_back() {
        let t = parse_rfc3339("2026-12-07T17:12:28.5+01:00").unwrap();
        assert_eq!(rfc3339(t), "2026-12-07T16:12:28.500000Z");
        assert_eq!(parse_rfc3339(&rfc3339(t)).unwrap(), t);
        assert!(parse_rfc3339("yesterday").is_err());
        let now = parse_rfc3339("2026-12-07T16:13:28Z").unwrap();
        assert_eq!(
            age("2026-12-07T16:12:28Z", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(age("2027-01-01T00:00:00Z", now), Some(Duration::ZERO));
        assert_eq!(age("soon", now), None);
        assert_eq!(human(Duration::from_millis(90_500)), "1m 30s");
        assert!(parse_loose("2026-12-07T16:12:28Z").is_some());
    }

    #[test]
    fn a_span_before_an_instant_clamps_to_the_month() {
        let t = parse_rfc3339("2026-03-31T12:00:00Z").unwrap();
        let back: Span = "1m1d".parse().unwrap();
        assert_eq!(rfc3339(back.before(t)), "2026-02-27T12:00:00.000000Z");
    }
}
