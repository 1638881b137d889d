//! Schedules from everyday English: "tomorrow at 9", "every weekday at 8:30",
//! "every monday at 8", "in 20 minutes", "every 2 hours", "daily at 7pm".
//!
//! The `cron` tool falls back to this when a model gives no `cron`/`every`/`at` (small
//! local models rarely write a correct cron pattern or date), reading the schedule from
//! the tool's `when` argument or from the user's own message; what remains of the message
//! ("remind me … to call Anna" → "call Anna") becomes the reminder text.

use chrono::{DateTime, Datelike, Duration, NaiveTime, TimeZone, Timelike};
use chrono_tz::Tz;
use regex::Regex;
use std::sync::LazyLock;

/// A schedule in the forms the `cron` tool takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum When {
    /// A five-field cron pattern.
    Cron(String),
    /// An interval such as `10m`.
    Every(String),
    /// A local time `YYYY-MM-DDTHH:MM`.
    At(String),
}

/// What was understood: the schedule, and the text left once the schedule words and the
/// "remind me to" are taken out (empty when nothing is left).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Understood {
    pub when: When,
    pub rest: String,
}

static TIME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?x)
        \b(?:at\s+|@\s*)?
        (?:(?P<h>\d{1,2})(?::(?P<m>\d{2}))?\s*(?P<ap>a\.?m\.?|p\.?m\.?)\b
          | at\s+(?P<h2>\d{1,2})(?::(?P<m2>\d{2}))?\b
          | (?P<h3>\d{1,2}):(?P<m3>\d{2})\b
          | (?P<word>noon|midday|midnight)\b)
        (?:\s+(?P<part>in\s+the\s+morning|in\s+the\s+evening|at\s+night|tonight))?",
    )
    .expect("valid regex")
});
static IN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\bin\s+(?P<n>\d{1,4}|an?|one)\s*(?P<u>minutes?|mins?|hours?|hrs?|days?)\b")
        .expect("valid regex")
});
static EVERY_N: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\bevery\s+(?P<n>\d{1,4})?\s*(?P<u>minutes?|mins?|hours?|hrs?)\b")
        .expect("valid regex")
});
static DAILY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b(?:every\s*day|everyday|daily|each\s+day|every\s+morning|every\s+evening|every\s+night)\b")
        .expect("valid regex")
});
static WEEKDAYS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"\b(?:every\s+weekday|on\s+weekdays|weekdays|every\s+working\s+day|every\s+work\s*day)\b",
    )
    .expect("valid regex")
});
static WEEKEND: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b(?:every\s+weekend|on\s+weekends|weekends)\b").expect("valid regex")
});
static DAY_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"\b(?P<every>every\s+|on\s+)?(?P<d>mon|tues|wednes|thurs|fri|satur|sun)day(?P<pl>s)?\b",
    )
    .expect("valid regex")
});
static TOMORROW: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\btomorrow\b").expect("valid regex"));
static TODAY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b(?:today|tonight|this\s+(?:morning|afternoon|evening))\b").expect("valid regex")
});
static LEAD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)^\s*(?:please\s+|can\s+you\s+|could\s+you\s+)*(?:set\s+(?:a\s+|an\s+)?(?:reminder|alarm)\s*(?:for|to|that)?|remind\s+me(?:\s+(?:to|that|about|of))?)\s*",
    )
    .expect("valid regex")
});

/// Understand `text` relative to `now` (in the job's zone). `None` when no schedule is in
/// it.
pub fn understand(text: &str, now: DateTime<Tz>) -> Option<Understood> {
    // ASCII lower-casing keeps byte offsets, so spans found in `lower` cut `text`.
    let lower = text.to_ascii_lowercase();
    let mut used: Vec<(usize, usize)> = Vec::new();
    let time = TIME.captures(&lower).map(|c| {
        let m = c.get(0).map_or((0, 0), |m| (m.start(), m.end()));
        used.push(m);
        time_of(&c)
    });
    let (hour, minute) = time.unwrap_or((9, 0));

    let when = if let Some(c) = EVERY_N.captures(&lower) {
        used.push(span(&c));
        let n: u32 = c
            .name("n")
            .and_then(|n| n.as_str().parse().ok())
            .unwrap_or(1);
        let unit = if c["u"].starts_with('h') { "h" } else { "m" };
        When::Every(format!("{n}{unit}"))
    } else if let Some(m) = WEEKDAYS.find(&lower) {
        used.push((m.start(), m.end()));
        When::Cron(format!("{minute} {hour} * * 1-5"))
    } else if let Some(m) = WEEKEND.find(&lower) {
        used.push((m.start(), m.end()));
        When::Cron(format!("{minute} {hour} * * 0,6"))
    } else if let Some(m) = DAILY.find(&lower) {
        used.push((m.start(), m.end()));
        let (hour, minute) = match (time, m.as_str()) {
            (None, s) if s.contains("evening") || s.contains("night") => (20, 0),
            (None, s) if s.contains("morning") => (8, 0),
            _ => (hour, minute),
        };
        When::Cron(format!("{minute} {hour} * * *"))
    } else if let Some(c) = DAY_NAME.captures(&lower) {
        used.push(span(&c));
        let day = weekday_number(&c["d"]);
        if c.name("every")
            .is_some_and(|e| e.as_str().starts_with("every"))
            || c.name("pl").is_some()
        {
            When::Cron(format!("{minute} {hour} * * {day}"))
        } else {
            // The next such day (a week ahead when it is today and the time has passed).
            let today = now.weekday().num_days_from_sunday();
            let mut ahead = (day + 7 - today) % 7;
            if ahead == 0 && (hour, minute) <= (now.hour(), now.minute()) {
                ahead = 7;
            }
            When::At(local(now + Duration::days(i64::from(ahead)), hour, minute))
        }
    } else if let Some(c) = IN.captures(&lower) {
        used.push(span(&c));
        let n: i64 = match c.name("n").map(|n| n.as_str()) {
            Some("a" | "an" | "one") | None => 1,
            Some(n) => n.parse().ok()?,
        };
        let d = match c["u"].chars().next() {
            Some('h') => Duration::hours(n),
            Some('d') => Duration::days(n),
            _ => Duration::minutes(n),
        };
        let t = now + d;
        When::At(local(t, t.hour(), t.minute()))
    } else if let Some(m) = TOMORROW.find(&lower) {
        used.push((m.start(), m.end()));
        When::At(local(now + Duration::days(1), hour, minute))
    } else if time.is_some() || TODAY.is_match(&lower) {
        if let Some(m) = TODAY.find(&lower) {
            used.push((m.start(), m.end()));
        }
        let later_today = (hour, minute) > (now.hour(), now.minute());
        let day = if later_today {
            now
        } else {
            now + Duration::days(1)
        };
        When::At(local(day, hour, minute))
    } else {
        return None;
    };
    Some(Understood {
        when,
        rest: rest_of(text, &used),
    })
}

fn span(c: &regex::Captures<'_>) -> (usize, usize) {
    c.get(0).map_or((0, 0), |m| (m.start(), m.end()))
}

/// Hour and minute of a time match, 24-hour.
fn time_of(c: &regex::Captures<'_>) -> (u32, u32) {
    if let Some(w) = c.name("word") {
        return if w.as_str() == "midnight" {
            (0, 0)
        } else {
            (12, 0)
        };
    }
    let num = |a: &str, b: &str| {
        c.name(a)
            .or_else(|| c.name(b))
            .and_then(|m| m.as_str().parse::<u32>().ok())
    };
    let h = num("h", "h2").or_else(|| num("h3", "h3")).unwrap_or(9);
    let m = num("m", "m2")
        .or_else(|| num("m3", "m3"))
        .unwrap_or(0)
        .min(59);
    let pm = c.name("ap").is_some_and(|a| a.as_str().starts_with('p'))
        || c.name("part")
            .is_some_and(|p| !p.as_str().contains("morning"));
    let am = c.name("ap").is_some_and(|a| a.as_str().starts_with('a'));
    let h = match (h, pm, am) {
        (12, false, true) => 0,
        (h, true, _) if h < 12 => h + 12,
        (h, _, _) => h.min(23),
    };
    (h, m)
}

fn weekday_number(d: &str) -> u32 {
    match &d[..3.min(d.len())] {
        "mon" => 1,
        "tue" => 2,
        "wed" => 3,
        "thu" => 4,
        "fri" => 5,
        "sat" => 6,
        _ => 0,
    }
}

/// `YYYY-MM-DDTHH:MM` of `day`'s date at `hour:minute`.
fn local(day: DateTime<Tz>, hour: u32, minute: u32) -> String {
    let time = NaiveTime::from_hms_opt(hour, minute, 0).unwrap_or_default();
    let naive = day.date_naive().and_time(time);
    // Re-anchor in the zone so a DST change between now and then does not shift it.
    let t = day
        .timezone()
        .from_local_datetime(&naive)
        .earliest()
        .map_or(naive, |t| t.naive_local());
    t.format("%Y-%m-%dT%H:%M").to_string()
}

/// The text without the schedule spans and the leading "remind me to", tidied.
fn rest_of(text: &str, used: &[(usize, usize)]) -> String {
    let mut keep = String::with_capacity(text.len());
    for (i, c) in text.char_indices() {
        if !used.iter().any(|&(s, e)| i >= s && i < e) {
            keep.push(c);
        }
    }
    let squeezed = keep.split_whitespace().collect::<Vec<_>>().join(" ");
    let without_lead = LEAD.replace(&squeezed, "");
    let trimmed = without_lead
        .trim()
        .trim_start_matches([',', ':'])
        .trim_start_matches("to ")
        .trim_end_matches(['.', '!', '?', ',', ' '])
        .trim();
    trimmed.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Tz> {
        // Tuesday 1 December 2026, 10:30 in Berlin.
        chrono_tz::Europe::Berlin
            .with_ymd_and_hms(2026, 12, 1, 10, 30, 0)
            .unwrap()
    }

    fn u(text: &str) -> Understood {
        understand(text, now()).unwrap_or_else(|| panic!("no schedule in {text:?}"))
    }

    #[test]
    fn one_off_times() {
        let r = u("remind me tomorrow at 9 to call Anna");
        assert_eq!(r.when, When::At("2026-12-02T09:00".into()));
        assert_eq!(r.rest, "call Anna");
        assert_eq!(
            u("in 20 minutes remind me to check the oven").when,
            When::At("2026-12-01T10:50".into())
        );
        assert_eq!(
            u("remind me in 20 minutes to check the oven").rest,
            "check the oven"
        );
        assert_eq!(
            u("set a reminder for 5pm to leave for the airport").when,
            When::At("2026-12-01T17:00".into())
        );
        assert_eq!(
            u("set a reminder for 5pm to leave for the airport").rest,
            "leave for the airport"
        );
        // A time already past today is tomorrow.
        assert_eq!(
            u("at 8:15 remind me to stretch").when,
            When::At("2026-12-02T08:15".into())
        );
        assert_eq!(
            u("remind me on friday at 7pm to buy wine").when,
            When::At("2026-12-04T19:00".into())
        );
        assert_eq!(
            u("remind me in an hour to stand up").when,
            When::At("2026-12-01T11:30".into())
        );
        assert_eq!(
            u("tomorrow at noon: lunch with Bo").when,
            When::At("2026-12-02T12:00".into())
        );
        assert_eq!(u("tomorrow at noon: lunch with Bo").rest, "lunch with Bo");
        assert_eq!(
            u("remind me tomorrow at 6 in the evening to call").when,
            When::At("2026-12-02T18:00".into())
        );
    }

    #[test]
    fn repeating() {
        let r = u("remind me every day at 9 to call Anna");
        assert_eq!(r.when, When::Cron("0 9 * * *".into()));
        assert_eq!(r.rest, "call Anna");
        assert_eq!(
            u("daily at 7pm take the pills").when,
            When::Cron("0 19 * * *".into())
        );
        assert_eq!(
            u("every weekday at 8:30 stand-up").when,
            When::Cron("30 8 * * 1-5".into())
        );
        assert_eq!(
            u("remind me every monday at 8 to send the report").when,
            When::Cron("0 8 * * 1".into())
        );
        assert_eq!(
            u("on mondays send the report").when,
            When::Cron("0 9 * * 1".into())
        );
        assert_eq!(
            u("every 2 hours drink water").when,
            When::Every("2h".into())
        );
        assert_eq!(u("every 2 hours drink water").rest, "drink water");
        assert_eq!(u("every hour stretch").when, When::Every("1h".into()));
        assert_eq!(
            u("every evening water the plants").when,
            When::Cron("0 20 * * *".into())
        );
    }

    #[test]
    fn no_schedule() {
        assert!(understand("call Anna", now()).is_none());
        assert!(understand("what is 9 plus 3", now()).is_none());
    }
}
