//! Retention: which snapshots of a name a policy keeps, with restic's flags and rules
//! (`restic forget`, internal/restic/snapshot_policy.go): snapshots newest first; each
//! `--keep-*` counter keeps the newest snapshot of each of its most recent periods (hour,
//! day, ISO week, month, year) that has one, and its last count also keeps the oldest
//! snapshot while it has counts left; `--keep-last N` the newest N; `--keep-within D`
//! every snapshot newer than D before the newest one (that is not in the future). A
//! count of -1 keeps all. Periods are reckoned in UTC.

use chrono::{DateTime, Datelike, Timelike, Utc};

use crate::repo::id::SnapshotId;
use crate::time::Span;

/// A policy: counts per kind of period (0: none, -1: all) and a span of time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub last: i64,
    pub hourly: i64,
    pub daily: i64,
    pub weekly: i64,
    pub monthly: i64,
    pub yearly: i64,
    pub within: Option<Span>,
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }
}

/// A snapshot as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    pub id: SnapshotId,
    pub time: DateTime<Utc>,
}

/// What the policy decided for one snapshot, and why it keeps it.
#[derive(Debug, Clone)]
pub struct Decision {
    pub id: SnapshotId,
    pub time: DateTime<Utc>,
    pub keep: bool,
    pub reasons: Vec<String>,
}

type Bucker = fn(DateTime<Utc>, usize) -> i64;

fn hourly(d: DateTime<Utc>, _: usize) -> i64 {
    d.year() as i64 * 1_000_000 + d.month() as i64 * 10_000 + d.day() as i64 * 100 + d.hour() as i64
}
fn daily(d: DateTime<Utc>, _: usize) -> i64 {
    d.year() as i64 * 10_000 + d.month() as i64 * 100 + d.day() as i64
}
fn weekly(d: DateTime<Utc>, _: usize) -> i64 {
    let w = d.iso_week();
    w.year() as i64 * 100 + w.week() as i64
}
fn monthly(d: DateTime<Utc>, _: usize) -> i64 {
    d.year() as i64 * 100 + d.month() as i64
}
fn yearly(d: DateTime<Utc>, _: usize) -> i64 {
    d.year() as i64
}
fn always(_: DateTime<Utc>, nr: usize) -> i64 {
    nr as i64
}

/// Apply `p` to one name's snapshots; returns them newest first, each kept or not, with
/// its reasons. `now`: the newest snapshot that `--keep-within` counts from is the
/// newest not after `now`.
pub fn apply(list: &[Candidate], p: &Policy, now: DateTime<Utc>) -> Vec<Decision> {
    let mut list = list.to_vec();
    // Newest first; equal times keep their order (as Go's sort.Stable).
    list.sort_by_key(|c| std::cmp::Reverse(c.time));
    if p.is_empty() {
        return list
            .iter()
            .map(|c| Decision {
                id: c.id,
                time: c.time,
                keep: true,
                reasons: vec!["policy is empty".into()],
            })
            .collect();
    }
    let mut buckets: [(i64, Bucker, Option<i64>, &str); 6] = [
        (p.last, always, None, "last snapshot"),
        (p.hourly, hourly, None, "hourly snapshot"),
        (p.daily, daily, None, "daily snapshot"),
        (p.weekly, weekly, None, "weekly snapshot"),
        (p.monthly, monthly, None, "monthly snapshot"),
        (p.yearly, yearly, None, "yearly snapshot"),
    ];
    let latest = list
        .iter()
        .map(|c| c.time)
        .filter(|t| *t < now)
        .max()
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let n = list.len();
    let mut out = Vec::with_capacity(n);
    for (nr, cur) in list.iter().enumerate() {
        let mut reasons = Vec::new();
        if let Some(w) = p.within {
            if cur.time > w.before(latest) {
                reasons.push(format!("within {w} of the newest"));
            }
        }
        for b in buckets.iter_mut() {
            if b.0 > 0 || b.0 == -1 {
                let val = (b.1)(cur.time, nr);
                // Also the oldest snapshot while the counter has counts left: the
                // longest history the counts allow.
                if Some(val) != b.2 || nr == n - 1 {
                    b.2 = Some(val);
                    if b.0 > 0 {
                        b.0 -= 1;
                    }
                    reasons.push(b.3.to_string());
                }
            }
        }
        out.push(Decision {
            id: cur.id,
            time: cur.time,
            keep: !reasons.is_empty(),
            reasons,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// Snapshots named by the hour of their time, for readable expectations.
    fn list(times: &[&str]) -> Vec<Candidate> {
        times
            .iter()
            .map(|t| Candidate {
                id: SnapshotId::of(t.as_bytes()),
                time: at(t),
            })
            .collect()
    }

    fn kept(times: &[&str], p: &Policy) -> Vec<String> {
        let mut k: Vec<String> = apply(&list(times), p, at("2030-01-01T00:00:00Z"))
            .into_iter()
            .filter(|d| d.keep)
            .map(|d| d.time.format("%Y-%m-%dT%H:%M").to_string())
            .collect();
        k.reverse();
        k
    }

    const TIMES: &[&str] = &[
        "2026-01-01T10:00:00Z",
        "2026-01-01T22:00:00Z",
        "2026-01-02T10:00:00Z",
        "2026-01-05T10:00:00Z", // Monday: ISO week 2
        "2026-01-05T11:30:00Z",
        "2026-01-12T10:00:00Z",
        "2026-02-01T10:00:00Z",
        "2026-02-15T10:00:00Z",
        "2026-03-01T10:00:00Z",
        "2027-01-01T10:00:00Z",
    ];

    #[test]
    fn restic_rules() {
        let p = |f: &dyn Fn(&mut Policy)| {
            let mut p = Policy::default();
            f(&mut p);
            p
        };
        let all_but = |skip: &str| -> Vec<String> {
            TIMES
                .iter()
                .map(|t| t[..16].to_string())
                .filter(|t| t != skip)
                .collect()
        };
        let cases: Vec<(Policy, Vec<&str>)> = vec![
            // The newest three.
            (
                p(&|p| p.last = 3),
                vec!["2026-02-15T10:00", "2026-03-01T10:00", "2027-01-01T10:00"],
            ),
            // The newest of each of the four newest days.
            (
                p(&|p| p.daily = 4),
                vec![
                    "2026-02-01T10:00",
                    "2026-02-15T10:00",
                    "2026-03-01T10:00",
                    "2027-01-01T10:00",
                ],
            ),
            // ISO weeks: 2027-01-01 is in 2026-W53, 2026-03-01 in W09, 2026-02-15 in W07.
            (
                p(&|p| p.weekly = 3),
                vec!["2026-02-15T10:00", "2026-03-01T10:00", "2027-01-01T10:00"],
            ),
            (
                p(&|p| p.monthly = 2),
                vec!["2026-03-01T10:00", "2027-01-01T10:00"],
            ),
            // All months, and the oldest snapshot while counts are left.
            (
                p(&|p| p.monthly = -1),
                vec![
                    "2026-01-01T10:00",
                    "2026-01-12T10:00",
                    "2026-02-15T10:00",
                    "2026-03-01T10:00",
                    "2027-01-01T10:00",
                ],
            ),
            (
                p(&|p| {
                    p.last = 1;
                    p.yearly = 1
                }),
                vec!["2027-01-01T10:00"],
            ),
            (
                p(&|p| p.hourly = 2),
                vec!["2026-03-01T10:00", "2027-01-01T10:00"],
            ),
            (
                p(&|p| {
                    p.daily = 1;
                    p.weekly = 3
                }),
                vec!["2026-02-15T10:00", "2026-03-01T10:00", "2027-01-01T10:00"],
            ),
            (
                p(&|p| p.within = Some("10d".parse().unwrap())),
                vec!["2027-01-01T10:00"],
            ),
        ];
        for (policy, want) in cases {
            assert_eq!(kept(TIMES, &policy), want, "{policy:?}");
        }
        // More days than there are: every day's newest, and the oldest snapshot too.
        assert_eq!(
            kept(TIMES, &p(&|p| p.daily = 20)),
            all_but("2026-01-05T10:00")
        );
        // Within a year of the newest: strictly newer than a year before it.
        assert_eq!(
            kept(TIMES, &p(&|p| p.within = Some("1y".parse().unwrap()))),
            all_but("2026-01-01T10:00")
        );
    }

    #[test]
    fn the_newest_in_the_future_does_not_move_the_window() {
        let p = Policy {
            within: Some("30d".parse().unwrap()),
            ..Policy::default()
        };
        let mut k: Vec<String> = apply(&list(TIMES), &p, at("2026-03-01T12:00:00Z"))
            .into_iter()
            .filter(|d| d.keep)
            .map(|d| d.time.format("%Y-%m-%dT%H:%M").to_string())
            .collect();
        k.reverse();
        assert_eq!(
            k,
            [
                "2026-02-01T10:00",
                "2026-02-15T10:00",
                "2026-03-01T10:00",
                "2027-01-01T10:00"
            ]
        );
    }

    #[test]
    fn spans_parse_as_every_option_writes_them() {
        let s: Span = "2y5mo7d3h".parse().unwrap();
        assert_eq!((s.years, s.months, s.days, s.hours), (2, 5, 7, 3));
        for bad in ["", "7", "d", "2y5m", "1.5d", "99999999d"] {
            assert!(bad.parse::<Span>().is_err(), "{bad}");
        }
        let empty = apply(&list(TIMES), &Policy::default(), at("2030-01-01T00:00:00Z"));
        assert!(empty.iter().all(|d| d.keep));
    }
}
