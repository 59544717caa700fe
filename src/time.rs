//! Time as Lifeboat writes and reads it: instants in RFC 3339, UTC, with microseconds (so
//! that records made within one second still sort in the order they were made); ages
//! and instants for people (in UTC, saying so); and the one syntax of durations and
//! points in time that every option takes ([`Span`], [`parse_since`]).

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

/// An instant for people, in UTC and saying so: `2026-12-07 16:12:28 UTC` (the text as
/// it is when it does not parse).
pub fn shown(t: &str) -> String {
    match parse_rfc3339(t) {
        Ok(t) => t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        Err(_) => t.to_string(),
    }
}

/// A monotonic instant (a deadline) as [`shown`] writes the time it falls at.
pub fn shown_at(at: std::time::Instant) -> String {
    let left = at.saturating_duration_since(std::time::Instant::now());
    shown(&rfc3339(
        Utc::now() + chrono::Duration::from_std(left).unwrap_or_default(),
    ))
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

/// A duration for people, in whole seconds, in the units options take: `1d 2h 3min 4s`.
pub fn human(d: Duration) -> String {
    exact(Duration::from_secs(d.as_secs()))
}

/// A duration for people, as given (milliseconds kept): `1min 30s 500ms`.
pub fn exact(d: Duration) -> String {
    let secs = d.as_secs();
    let parts = [
        (secs / 86_400, "d"),
        (secs / 3600 % 24, "h"),
        (secs / 60 % 60, "min"),
        (secs % 60, "s"),
        (d.subsec_millis() as u64, "ms"),
    ];
    let shown: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, u)| format!("{n}{u}"))
        .collect();
    match shown.is_empty() {
        true => "0s".into(),
        false => shown.join(" "),
    }
}

/// A duration as every option takes it (`--max-age`, `--wait`, `--keep-within`,
/// `--since`, ...): see [`Span`]. A length of time is the span back from now, so a
/// month is a calendar month.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let span: Span = s.parse().map_err(|e: anyhow::Error| e.to_string())?;
    Ok(span.length())
}

/// A duration where a bare number has long meant seconds (`--io-timeout 30`, a drill's
/// timeouts): that, or [`parse_duration`]'s syntax.
pub fn parse_seconds_or_duration(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1e9).contains(&v) => Ok(Duration::from_secs_f64(v)),
        Ok(_) => Err(format!("{s:?} is not a number of seconds")),
        Err(_) => parse_duration(s),
    }
}

/// A point in time as every option takes it (`journal --since`): an RFC 3339 time, a
/// date (`2026-12-01`, midnight UTC), or a span back from now (`7d`, `36h`).
pub fn parse_since(s: &str) -> Result<DateTime<Utc>> {
    if let Ok(t) = parse_rfc3339(s) {
        return Ok(t);
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    let span: Span = s.parse().with_context(|| {
        format!(
            "{s:?} is neither an RFC 3339 time, nor a date (2026-12-01), nor a span back from now"
        )
    })?;
    Ok(span.before(Utc::now()))
}

/// The one syntax of durations: numbers with units, run together or spaced (`1y6mo`,
/// `2w 3d`, `90min`, `36h`). Units: `ms`, `s`, `min`, `h`, `d`, `w`, `mo`, `y` (and
/// their words: `sec`, `minutes`, `hours`, `days`, `weeks`, `months`, `years`, ...). A
/// bare `m` is refused: restic reads it as months, most tools as minutes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub years: u32,
    pub months: u32,
    pub weeks: u32,
    pub days: u32,
    pub hours: u32,
    pub minutes: u32,
    pub seconds: u32,
    pub millis: u32,
}

/// Which field of a [`Span`] a unit sets.
type Field = fn(&mut Span) -> &mut u32;

/// The units [`Span`] reads, and what each sets.
const UNITS: &[(&[&str], Field)] = &[
    (&["ms", "msec", "millis"], |s| &mut s.millis),
    (&["s", "sec", "secs", "second", "seconds"], |s| {
        &mut s.seconds
    }),
    (&["min", "mins", "minute", "minutes"], |s| &mut s.minutes),
    (&["h", "hr", "hrs", "hour", "hours"], |s| &mut s.hours),
    (&["d", "day", "days"], |s| &mut s.days),
    (&["w", "week", "weeks"], |s| &mut s.weeks),
    (&["mo", "month", "months"], |s| &mut s.months),
    (&["y", "yr", "yrs", "year", "years"], |s| &mut s.years),
];

/// What the error of a duration that does not parse says.
const SPAN_SYNTAX: &str =
    "a duration is numbers with units: ms, s, min, h, d, w, mo, y (such as 90s, 10min, 36h, 2w, 1y6mo)";

impl std::str::FromStr for Span {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Span> {
        let mut span = Span::default();
        let mut rest = s.trim_start();
        if rest.is_empty() {
            bail!("{s:?}: {SPAN_SYNTAX}");
        }
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits == 0 || digits > 6 {
                bail!("{s:?}: {SPAN_SYNTAX}");
            }
            let n: u32 = rest[..digits]
                .parse()
                .context("a number of at most 6 digits")?;
            rest = rest[digits..].trim_start();
            let letters = rest
                .find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(rest.len());
            let unit = &rest[..letters];
            if unit == "m" {
                bail!("{s:?}: \"m\" could mean minutes or months: write {n}min or {n}mo");
            }
            let Some((_, field)) = UNITS.iter().find(|(names, _)| names.contains(&unit)) else {
                bail!("{s:?}: {SPAN_SYNTAX}");
            };
            let slot = field(&mut span);
            *slot = slot.saturating_add(n);
            rest = rest[letters..].trim_start();
        }
        Ok(span)
    }
}

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts = [
            (self.years, "y"),
            (self.months, "mo"),
            (self.weeks, "w"),
            (self.days, "d"),
            (self.hours, "h"),
            (self.minutes, "min"),
            (self.seconds, "s"),
            (self.millis, "ms"),
        ];
        let mut any = false;
        for (n, unit) in parts.into_iter().filter(|(n, _)| *n > 0) {
            write!(f, "{n}{unit}")?;
            any = true;
        }
        if !any {
            write!(f, "0s")?;
        }
        Ok(())
    }
}

impl Span {
    /// `t` minus this span (months clamped to the month's last day).
    pub fn before(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        let months = self.years.saturating_mul(12).saturating_add(self.months);
        let t = t
            .checked_sub_months(Months::new(months))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let fixed = chrono::Duration::weeks(self.weeks as i64)
            + chrono::Duration::days(self.days as i64)
            + chrono::Duration::hours(self.hours as i64)
            + chrono::Duration::minutes(self.minutes as i64)
            + chrono::Duration::seconds(self.seconds as i64)
            + chrono::Duration::milliseconds(self.millis as i64);
        t.checked_sub_signed(fixed)
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// The length of this span back from now.
    pub fn length(&self) -> Duration {
        let now = Utc::now();
        (now - self.before(now)).to_std().unwrap_or(Duration::ZERO)
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
        assert_eq!(human(Duration::from_millis(90_500)), "1min 30s");
        assert_eq!(exact(Duration::from_millis(90_500)), "1min 30s 500ms");
        assert_eq!(human(Duration::from_secs(2 * 86_400 + 3600)), "2d 1h");
        assert_eq!(
            parse_duration(&human(Duration::from_secs(93_784))),
            Ok(Duration::from_secs(93_784))
        );
        assert!(parse_loose("2026-12-07T16:12:28Z").is_some());
    }

    #[test]
    fn a_span_before_an_instant_clamps_to_the_month() {
        let t = parse_rfc3339("2026-03-31T12:00:00Z").unwrap();
        let back: Span = "1mo1d".parse().unwrap();
        assert_eq!(rfc3339(back.before(t)), "2026-02-27T12:00:00.000000Z");
    }

    /// The table of the issue: every option reads these the same way.
    #[test]
    fn one_duration_syntax_with_a_bare_m_refused() {
        let min = 60;
        let day = 86_400;
        for (text, secs) in [
            ("90s", 90),
            ("10min", 10 * min),
            ("1h 30min", 90 * min),
            ("36h", 36 * 3600),
            ("2d", 2 * day),
            ("1w", 7 * day),
            ("2 weeks", 14 * day),
            ("8d", 8 * day),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
        }
        assert_eq!(parse_duration("1ms"), Ok(Duration::from_millis(1)));
        let month = parse_duration("1mo").unwrap().as_secs();
        assert!((28 * day..=31 * day).contains(&month), "{month}");
        let year = parse_duration("1y").unwrap().as_secs();
        assert!((365 * day..=366 * day).contains(&year), "{year}");
        let e = parse_duration("1m").unwrap_err();
        assert!(e.contains("1min or 1mo"), "{e}");
        for bad in ["", "m", "5", "5x", "-1d", "1.5h", "9999999d", "d5"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        let s: Span = "1y6mo2w".parse().unwrap();
        assert_eq!(s.to_string(), "1y6mo2w");
        let t = parse_rfc3339("2026-12-07T16:00:00Z").unwrap();
        assert_eq!(rfc3339(s.before(t)), "2025-05-24T16:00:00.000000Z");
        assert_eq!(
            rfc3339(parse_since("2026-12-01").unwrap()),
            "2026-12-01T00:00:00.000000Z"
        );
        assert!(parse_since("2026-12-01T10:00:00+01:00").is_ok());
        assert!(parse_since("7d").is_ok());
        assert!(parse_since("1m").is_err());
    }
}
