//! [`Schedule`]: when a job runs. Cron patterns (5 fields, read in an IANA time zone),
//! fixed intervals (`10m`) and one-shots (`2026-12-01T09:00`).
//!
//! Daylight saving time follows Vixie cron: a pattern with a fixed hour and minute
//! (`30 2 * * *`) runs once a day, on the first pass through a repeated hour and at the end
//! of a skipped one; a pattern with a wildcard or step in the minute or hour (`*/15 * * * *`)
//! runs on wall-clock time, so it runs in both passes of a repeated hour and not at all in a
//! skipped one.

use chrono::{
    DateTime, Duration as ChronoDuration, LocalResult, NaiveDateTime, Offset, TimeZone, Timelike,
    Utc,
};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use std::fmt;
use std::time::Duration;

/// Shortest interval of an `every` schedule.
pub const MIN_EVERY: Duration = Duration::from_secs(10);
/// Longest interval of an `every` schedule (366 days).
pub const MAX_EVERY: Duration = Duration::from_secs(366 * 86_400);

/// A schedule that cannot be used; the message names the field and the value received.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ScheduleError {
    /// The argument at fault: `cron`, `every`, `at` or `tz`.
    pub field: &'static str,
    pub message: String,
}

impl ScheduleError {
    fn new(field: &'static str, message: String) -> Self {
        Self { field, message }
    }
}

/// A parsed 5-field cron pattern and its text.
#[derive(Debug, Clone, PartialEq)]
pub struct CronExpr {
    text: String,
    /// Boxed: the parsed pattern is a few hundred bytes.
    cron: Box<croner::Cron>,
    /// A wildcard or step in the minute or hour field: runs on wall-clock time across DST
    /// changes instead of once per day.
    wall_clock: bool,
}

impl CronExpr {
    pub fn parse(text: &str) -> Result<Self, ScheduleError> {
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let bad = |why: String| {
            ScheduleError::new(
                "cron",
                format!(
                    "`cron` must be a 5-field pattern (minute hour day-of-month month \
                     day-of-week) like \"0 9 * * 1-5\", got {text:?}: {why}"
                ),
            )
        };
        let fields: Vec<&str> = text.split(' ').collect();
        let wall_clock = if text.starts_with('@') {
            text.eq_ignore_ascii_case("@hourly")
        } else if fields.len() != 5 {
            return Err(bad(format!("it has {} fields", fields.len())));
        } else {
            fields[..2]
                .iter()
                .any(|f| f.contains('*') || f.contains('/'))
        };
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(&text)
            .map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            text,
            cron: Box::new(cron),
            wall_clock,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first run strictly after `t`, reading the pattern in `tz`.
    pub fn next_after(&self, t: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        // Walk the pattern's matches in local (naive) time and map each to instants. Around
        // a DST change the order of local times and instants differ by up to the size of
        // the change, so there we look a few hours back and ahead of the first candidate.
        const SLACK: ChronoDuration = ChronoDuration::hours(3);
        let near_change = |x: DateTime<Utc>| offset_at(tz, x - SLACK) != offset_at(tz, x + SLACK);
        // Whole seconds: croner keeps a fraction it is given, and patterns have none.
        let mut naive = t.with_timezone(&tz).naive_local();
        naive = naive.with_nanosecond(0).unwrap_or(naive);
        if near_change(t) {
            naive -= SLACK;
        }
        let mut best: Option<(DateTime<Utc>, NaiveDateTime)> = None;
        // A pattern that matches nothing (30 February) ends croner's search with an error;
        // this bound only guards against a pathological walk.
        for _ in 0..10_000 {
            let n = self
                .cron
                .find_next_occurrence(&Utc.from_utc_datetime(&naive), false)
                .ok()?
                .naive_utc();
            for instant in self.instants(n, tz) {
                if instant > t && best.is_none_or(|(b, _)| instant < b) {
                    best = Some((instant, n));
                }
            }
            if let Some((b, nb)) = best {
                let slack = if near_change(b) {
                    SLACK
                } else {
                    ChronoDuration::zero()
                };
                if n >= nb + slack {
                    return Some(b);
                }
            }
            naive = n;
        }
        best.map(|(b, _)| b)
    }

    /// The instants a local match `n` stands for in `tz`.
    fn instants(&self, n: NaiveDateTime, tz: Tz) -> Vec<DateTime<Utc>> {
        match tz.from_local_datetime(&n) {
            LocalResult::Single(d) => vec![d.with_timezone(&Utc)],
            LocalResult::Ambiguous(a, b) if self.wall_clock => {
                vec![a.with_timezone(&Utc), b.with_timezone(&Utc)]
            }
            LocalResult::Ambiguous(a, _) => vec![a.with_timezone(&Utc)],
            LocalResult::None if self.wall_clock => Vec::new(),
            // A fixed time the clocks skip runs when the skipped stretch ends.
            LocalResult::None => (1..=24 * 60)
                .map(|m| n + ChronoDuration::minutes(m))
                .find_map(|later| tz.from_local_datetime(&later).earliest())
                .map(|d| d.with_timezone(&Utc))
                .into_iter()
                .collect(),
        }
    }
}

fn offset_at(tz: Tz, t: DateTime<Utc>) -> i32 {
    tz.offset_from_utc_datetime(&t.naive_utc())
        .fix()
        .local_minus_utc()
}

/// When a job runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// A cron pattern read in a time zone.
    Cron { expr: CronExpr, tz: Tz },
    /// Every so often, counted from the previous due time.
    Every(Duration),
    /// Once.
    At(DateTime<Utc>),
}

/// A time zone by IANA name; empty is UTC.
pub fn parse_tz(name: &str) -> Result<Tz, ScheduleError> {
    let name = name.trim();
    if name.is_empty() {
        return Ok(Tz::UTC);
    }
    name.parse::<Tz>().map_err(|_| {
        ScheduleError::new(
            "tz",
            format!("`tz` must be an IANA time zone like \"Europe/Berlin\", got {name:?}"),
        )
    })
}

impl Schedule {
    pub fn cron(expr: &str, tz: Tz) -> Result<Self, ScheduleError> {
        Ok(Schedule::Cron {
            expr: CronExpr::parse(expr)?,
            tz,
        })
    }

    /// An interval like `90s`, `10m`, `2h`, `1d` or `1h30m`.
    pub fn every(text: &str) -> Result<Self, ScheduleError> {
        let d = parse_duration(text).ok_or_else(|| {
            ScheduleError::new(
                "every",
                format!("`every` must be an interval like \"90s\", \"10m\", \"2h\" or \"1d\", got {text:?}"),
            )
        })?;
        if d < MIN_EVERY || d > MAX_EVERY {
            return Err(ScheduleError::new(
                "every",
                format!(
                    "`every` must be between {} and {}, got {text:?}",
                    format_duration(MIN_EVERY),
                    format_duration(MAX_EVERY)
                ),
            ));
        }
        Ok(Schedule::Every(d))
    }

    /// A one-shot: a local time in `tz` (`2026-12-01T09:00`, seconds optional, `T` or a
    /// space) or an RFC 3339 time with its own offset.
    pub fn at(text: &str, tz: Tz) -> Result<Self, ScheduleError> {
        let text = text.trim();
        if let Ok(t) = DateTime::parse_from_rfc3339(text) {
            return Ok(Schedule::At(t.with_timezone(&Utc)));
        }
        let naive = [
            "%Y-%m-%dT%H:%M",
            "%Y-%m-%dT%H:%M:%S",
            "%Y-%m-%d %H:%M",
            "%Y-%m-%d %H:%M:%S",
        ]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        .ok_or_else(|| {
            ScheduleError::new(
                "at",
                format!(
                    "`at` must be a local time like \"2026-12-01T09:00\" or an RFC 3339 \
                         time like \"2026-12-01T09:00:00+01:00\", got {text:?}"
                ),
            )
        })?;
        match tz.from_local_datetime(&naive) {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => {
                Ok(Schedule::At(t.with_timezone(&Utc)))
            }
            LocalResult::None => Err(ScheduleError::new(
                "at",
                format!(
                    "`at` {text:?} does not exist in {tz} (the clocks skip it for daylight \
                     saving time)"
                ),
            )),
        }
    }

    /// Rebuild a stored schedule (`kind`, `expr`, `tz` as written by [`Schedule::kind`] and
    /// [`Schedule::expr`]).
    pub fn from_stored(kind: &str, expr: &str, tz: &str) -> Result<Self, ScheduleError> {
        let tz = parse_tz(tz)?;
        match kind {
            "cron" => Schedule::cron(expr, tz),
            "every" => Schedule::every(expr),
            "at" => Schedule::at(expr, tz),
            other => Err(ScheduleError::new(
                "kind",
                format!("schedule kind must be cron, every or at, got {other:?}"),
            )),
        }
    }

    /// `cron`, `every` or `at`.
    pub fn kind(&self) -> &'static str {
        match self {
            Schedule::Cron { .. } => "cron",
            Schedule::Every(_) => "every",
            Schedule::At(_) => "at",
        }
    }

    /// The text stored for this schedule: the pattern, the interval (`1h30m`) or the
    /// instant in RFC 3339 (UTC).
    pub fn expr(&self) -> String {
        match self {
            Schedule::Cron { expr, .. } => expr.as_str().to_string(),
            Schedule::Every(d) => format_duration(*d),
            Schedule::At(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    }

    /// The first run strictly after `t`; `None` when there is none (a one-shot in the past,
    /// a pattern that never matches).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Cron { expr, tz } => expr.next_after(t, *tz),
            Schedule::Every(d) => Some(t + ChronoDuration::from_std(*d).ok()?),
            Schedule::At(at) => (*at > t).then_some(*at),
        }
    }

    /// The run after the one due at `prev`, skipping those already past at `now`. An
    /// interval keeps its cadence (`prev + k × every`); a one-shot has none.
    pub fn next_due(&self, prev: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Cron { .. } => self.next_after(prev.max(now)),
            Schedule::Every(d) => {
                let step = ChronoDuration::from_std(*d).ok()?;
                let behind = (now - prev).num_milliseconds().max(0);
                let k = behind / step.num_milliseconds() + 1;
                Some(prev + step * i32::try_from(k).ok()?)
            }
            Schedule::At(_) => None,
        }
    }

    /// A one-line description: `cron 0 9 * * 1-5 (Europe/Berlin)`, `every 10m`,
    /// `at Tue 2026-12-01 09:00 CET`.
    pub fn describe(&self, tz: Tz) -> String {
        match self {
            Schedule::Cron { expr, tz } => format!("cron {} ({tz})", expr.as_str()),
            Schedule::Every(d) => format!("every {}", format_duration(*d)),
            Schedule::At(t) => format!("at {}", format_local(*t, tz)),
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe(Tz::UTC))
    }
}

/// `Tue 2026-12-01 09:00 CET`.
pub fn format_local(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz)
        .format("%a %Y-%m-%d %H:%M %Z")
        .to_string()
}

/// [`format_local`] of a time in milliseconds since the epoch (as the store keeps them).
pub fn format_local_ms(ms: i64, tz: Tz) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| format_local(t, tz))
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// `90s`, `10m`, `2h`, `1d`, `1h30m` (units s, m, h, d, w; at least one number+unit pair).
fn parse_duration(text: &str) -> Option<Duration> {
    let s = text.trim().to_ascii_lowercase();
    if s.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return None,
        };
        let n: u64 = digits.parse().ok()?;
        digits.clear();
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    if !digits.is_empty() {
        return None;
    }
    Some(Duration::from_secs(total))
}

/// The shortest text [`parse_duration`] reads back: `1d2h`, `90s` → `1m30s`.
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn berlin() -> Tz {
        parse_tz("Europe/Berlin").unwrap()
    }

    /// The next `n` runs after `from`.
    fn runs(s: &Schedule, from: &str, n: usize) -> Vec<String> {
        let mut t = utc(from);
        let mut out = Vec::new();
        for _ in 0..n {
            t = s.next_after(t).unwrap();
            out.push(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        }
        out
    }

    #[test]
    fn weekday_ranges_in_a_time_zone() {
        let s = Schedule::cron("0 9 * * 1-5", berlin()).unwrap();
        // Friday 2026-01-09 10:00 Berlin: next is Monday 09:00 CET = 08:00 UTC.
        assert_eq!(
            runs(&s, "2026-01-09T09:00:00Z", 2),
            vec!["2026-01-12T08:00:00Z", "2026-01-13T08:00:00Z"]
        );
        // Exactly at a run time, the next one is the following day; fractions of a second
        // do not leak into run times.
        assert_eq!(
            runs(&s, "2026-01-12T08:00:00Z", 1),
            vec!["2026-01-13T08:00:00Z"]
        );
        assert_eq!(
            s.next_after(utc("2026-01-12T07:59:59.750Z")),
            Some(utc("2026-01-12T08:00:00Z"))
        );
        let weekend = Schedule::cron("30 7 * * sat,sun", Tz::UTC).unwrap();
        assert_eq!(
            runs(&weekend, "2026-01-05T00:00:00Z", 3),
            vec![
                "2026-01-10T07:30:00Z",
                "2026-01-11T07:30:00Z",
                "2026-01-17T07:30:00Z"
            ]
        );
        // Day-of-month and day-of-week both restricted: either matches (POSIX).
        let either = Schedule::cron("0 0 1 * 1", Tz::UTC).unwrap();
        assert_eq!(
            runs(&either, "2026-01-01T00:00:00Z", 2),
            vec!["2026-01-05T00:00:00Z", "2026-01-12T00:00:00Z"]
        );
    }

    #[test]
    fn daily_runs_follow_the_wall_clock_across_dst() {
        let s = Schedule::cron("0 9 * * *", berlin()).unwrap();
        // Spring forward on 2026-03-29: 09:00 is CET (08:00Z) before, CEST (07:00Z) after.
        assert_eq!(
            runs(&s, "2026-03-27T12:00:00Z", 3),
            vec![
                "2026-03-28T08:00:00Z",
                "2026-03-29T07:00:00Z",
                "2026-03-30T07:00:00Z"
            ]
        );
        // Fall back on 2026-10-25.
        assert_eq!(
            runs(&s, "2026-10-24T12:00:00Z", 2),
            vec!["2026-10-25T08:00:00Z", "2026-10-26T08:00:00Z"]
        );
    }

    #[test]
    fn fixed_times_in_skipped_or_repeated_hours_run_once() {
        let s = Schedule::cron("30 2 * * *", berlin()).unwrap();
        // 02:30 does not exist on 2026-03-29: it runs when the gap ends, 03:00 CEST.
        assert_eq!(
            runs(&s, "2026-03-28T12:00:00Z", 2),
            vec!["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]
        );
        // 02:30 happens twice on 2026-10-25: only the first (CEST) counts.
        assert_eq!(
            runs(&s, "2026-10-24T12:00:00Z", 2),
            vec!["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
        );
    }

    #[test]
    fn wall_clock_patterns_run_in_both_passes_of_a_repeated_hour() {
        let s = Schedule::cron("*/30 * * * *", berlin()).unwrap();
        // 02:00 and 02:30 CEST (00:00Z, 00:30Z), then again in CET (01:00Z, 01:30Z).
        assert_eq!(
            runs(&s, "2026-10-24T23:45:00Z", 5),
            vec![
                "2026-10-25T00:00:00Z",
                "2026-10-25T00:30:00Z",
                "2026-10-25T01:00:00Z",
                "2026-10-25T01:30:00Z",
                "2026-10-25T02:00:00Z"
            ]
        );
        // In spring the skipped hour has no runs: 01:30 CET then 03:00 CEST.
        assert_eq!(
            runs(&s, "2026-03-29T00:15:00Z", 2),
            vec!["2026-03-29T00:30:00Z", "2026-03-29T01:00:00Z"]
        );
    }

    #[test]
    fn intervals_and_their_cadence() {
        assert_eq!(
            Schedule::every("10m").unwrap(),
            Schedule::Every(Duration::from_secs(600))
        );
        assert_eq!(
            Schedule::every("2h").unwrap(),
            Schedule::Every(Duration::from_secs(7200))
        );
        assert_eq!(
            Schedule::every("1d").unwrap(),
            Schedule::Every(Duration::from_secs(86_400))
        );
        assert_eq!(Schedule::every("90s").unwrap().expr(), "1m30s");
        assert_eq!(Schedule::every("1h30m").unwrap().expr(), "1h30m");
        assert_eq!(Schedule::every("366d").unwrap().expr(), "366d");
        let s = Schedule::every("10m").unwrap();
        let t0 = utc("2026-01-01T00:00:00Z");
        assert_eq!(s.next_after(t0), Some(utc("2026-01-01T00:10:00Z")));
        // After downtime the cadence is kept: the next run after 00:10 seen at 00:47 is 00:50.
        assert_eq!(
            s.next_due(utc("2026-01-01T00:10:00Z"), utc("2026-01-01T00:47:00Z")),
            Some(utc("2026-01-01T00:50:00Z"))
        );
        assert_eq!(
            s.next_due(utc("2026-01-01T00:10:00Z"), utc("2026-01-01T00:10:00Z")),
            Some(utc("2026-01-01T00:20:00Z"))
        );
    }

    #[test]
    fn one_shots_in_local_time_or_with_an_offset() {
        let s = Schedule::at("2026-12-01T09:00", berlin()).unwrap();
        assert_eq!(s, Schedule::At(utc("2026-12-01T08:00:00Z")));
        assert_eq!(
            Schedule::at("2026-07-01 09:00:30", berlin()).unwrap(),
            Schedule::At(utc("2026-07-01T07:00:30Z"))
        );
        assert_eq!(
            Schedule::at("2026-12-01T09:00:00-05:00", berlin()).unwrap(),
            Schedule::At(utc("2026-12-01T14:00:00Z"))
        );
        assert_eq!(
            s.next_after(utc("2026-12-01T07:59:59Z")),
            Some(utc("2026-12-01T08:00:00Z"))
        );
        assert_eq!(s.next_after(utc("2026-12-01T08:00:00Z")), None);
        assert_eq!(
            s.next_due(utc("2026-12-01T08:00:00Z"), utc("2026-01-01T00:00:00Z")),
            None
        );
        // The repeated hour reads as its first pass.
        assert_eq!(
            Schedule::at("2026-10-25T02:30", berlin()).unwrap(),
            Schedule::At(utc("2026-10-25T00:30:00Z"))
        );
        assert_eq!(s.describe(berlin()), "at Tue 2026-12-01 09:00 CET");
    }

    #[test]
    fn stored_form_round_trips() {
        for s in [
            Schedule::cron("0  9 * * 1-5", berlin()).unwrap(),
            Schedule::every("36h").unwrap(),
            Schedule::at("2026-12-01T09:00", berlin()).unwrap(),
        ] {
            let back = Schedule::from_stored(s.kind(), &s.expr(), "Europe/Berlin").unwrap();
            assert_eq!(back, s);
        }
        assert_eq!(Schedule::cron("@daily", Tz::UTC).unwrap().expr(), "@daily");
        assert_eq!(
            Schedule::cron("0 9 * * 1-5", berlin()).unwrap().to_string(),
            "cron 0 9 * * 1-5 (Europe/Berlin)"
        );
    }

    #[test]
    fn invalid_input_names_the_field_and_value() {
        let e = Schedule::every("10x").unwrap_err();
        assert_eq!(e.field, "every");
        assert!(e.message.contains("got \"10x\""), "{e}");
        for bad in ["", "m", "10", "5s", "367d", "-1m"] {
            let e = Schedule::every(bad).unwrap_err();
            assert!(e.message.contains(&format!("got {bad:?}")), "{e}");
        }
        assert!(Schedule::every("5s")
            .unwrap_err()
            .message
            .contains("between 10s and 366d"));

        let e = Schedule::cron("0 9 * *", Tz::UTC).unwrap_err();
        assert_eq!(e.field, "cron");
        assert!(
            e.message.contains("got \"0 9 * *\": it has 4 fields"),
            "{e}"
        );
        let e = Schedule::cron("0 25 * * *", Tz::UTC).unwrap_err();
        assert!(e.message.contains("\"0 25 * * *\""), "{e}");
        assert!(Schedule::cron("0 9 * * 1-5 2026", Tz::UTC).is_err());
        assert!(
            Schedule::cron("0 0 9 * * 1", Tz::UTC).is_err(),
            "no seconds field"
        );
        // Valid but never matching: no next run.
        let never = Schedule::cron("0 0 30 2 *", Tz::UTC).unwrap();
        assert_eq!(never.next_after(utc("2026-01-01T00:00:00Z")), None);

        let e = Schedule::at("tomorrow", Tz::UTC).unwrap_err();
        assert_eq!(e.field, "at");
        assert!(e.message.contains("got \"tomorrow\""), "{e}");
        let e = Schedule::at("2026-03-29T02:30", berlin()).unwrap_err();
        assert!(e.message.contains("does not exist in Europe/Berlin"), "{e}");

        let e = parse_tz("Mars/Olympus").unwrap_err();
        assert_eq!(e.field, "tz");
        assert!(e.message.contains("got \"Mars/Olympus\""), "{e}");
        assert_eq!(parse_tz("").unwrap(), Tz::UTC);
        assert!(Schedule::from_stored("weekly", "x", "UTC").is_err());
    }
}
