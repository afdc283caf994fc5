/*!
When a source's job runs: a cron expression (5 fields, or 6 with seconds first) or a shorthand
(`hourly`, `daily`, `daily at 03:00`, `weekly`, `every 10s`, `every 6h`), in a time zone (UTC by
default), and how long a gap between backups is normal (for the dead man's switch).

Cron follows Vixie cron: `*`, lists, ranges, steps (`0-59/15`, `1-30/5`, also after a star), month and weekday names,
weekday 0 or 7 for Sunday, and when both day-of-month and day-of-week are restricted a day
matching either runs. Across a daylight-saving change a time that does not exist (02:30 on the
spring-forward night) runs as much later as the clocks jumped (03:30), and a time that happens
twice runs once, the first time. `every N` counts from the Unix epoch, so `every 6h` runs at 00:00, 06:00,
12:00 and 18:00 UTC whatever the zone.
*/

use std::fmt;
use std::time::Duration;

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

use crate::error::{Error, Result};

#[derive(Clone)]
pub struct Schedule {
    text: String,
    tz: TimeZone,
    tz_name: String,
    kind: Kind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Every(u64),
    Cron(Cron),
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?} in {})", self.text, self.tz_name)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tz_name == "UTC" {
            f.write_str(&self.text)
        } else {
            write!(f, "{} ({})", self.text, self.tz_name)
        }
    }
}

impl Schedule {
    /// Parses `text` in the time zone named `tz` (an IANA name such as `Europe/Berlin`; `None`
    /// is UTC).
    pub fn parse(text: &str, tz: Option<&str>) -> Result<Schedule> {
        let (zone, tz_name) = match tz {
            None => (TimeZone::UTC, "UTC".to_string()),
            Some(name) => (
                TimeZone::get(name).map_err(|_| {
                    Error::config(format!("unknown time zone {name:?}"))
                        .with_hint("use an IANA name such as \"UTC\", \"Europe/Berlin\" or \"America/New_York\"")
                })?,
                name.to_string(),
            ),
        };
        let bad = |why: &str| {
            Error::config(format!("invalid schedule {text:?}: {why}")).with_hint(
                "use \"hourly\", \"daily\", \"daily at 03:00\", \"weekly\", \"every 10s\", \"every 6h\", or a cron expression such as \"15 3 * * *\"",
            )
        };
        let t = text.trim().to_ascii_lowercase();
        let kind = if let Some(rest) = t.strip_prefix("every ") {
            let secs = parse_duration(rest).map_err(|e| bad(&e))?;
            Kind::Every(secs.as_secs())
        } else if let Some(at) = t.strip_prefix("daily at ") {
            let (h, m) = at
                .trim()
                .split_once(':')
                .and_then(|(h, m)| Some((h.parse::<u8>().ok()?, m.parse::<u8>().ok()?)))
                .filter(|(h, m)| *h < 24 && *m < 60)
                .ok_or_else(|| bad("the time must be HH:MM, from 00:00 to 23:59"))?;
            Kind::Cron(Cron::parse(&format!("{m} {h} * * *")).map_err(|e| bad(&e))?)
        } else {
            let expr = match t.as_str() {
                "hourly" => "0 * * * *",
                "daily" => "0 0 * * *",
                "weekly" => "0 0 * * 0",
                "monthly" => "0 0 1 * *",
                other => other,
            };
            Kind::Cron(Cron::parse(expr).map_err(|e| bad(&e))?)
        };
        let s = Schedule {
            text: text.trim().to_string(),
            tz: zone,
            tz_name,
            kind,
        };
        // "0 0 30 2 *" parses, but February 30th never comes.
        if s.next_after(Timestamp::now()) == Timestamp::MAX {
            return Err(bad("it never comes due (a date that does not exist?)"));
        }
        Ok(s)
    }

    /// The first time strictly after `t` at which the job is due.
    pub fn next_after(&self, t: Timestamp) -> Timestamp {
        match &self.kind {
            Kind::Every(secs) => {
                let s = *secs as i64;
                let now = t.as_second();
                let next = (now.div_euclid(s) + 1) * s;
                Timestamp::from_second(next).unwrap_or(Timestamp::MAX)
            }
            Kind::Cron(c) => c.next_after(t, &self.tz),
        }
    }

    /// The longest normal gap between two runs (over the next few dozen): a job that has not
    /// succeeded for twice this long has silently stopped.
    pub fn interval(&self, from: Timestamp) -> Duration {
        match &self.kind {
            Kind::Every(secs) => Duration::from_secs(*secs),
            Kind::Cron(_) => {
                let mut longest = 0i64;
                let mut t = self.next_after(from);
                for _ in 0..40 {
                    let n = self.next_after(t);
                    longest = longest.max(n.as_second() - t.as_second());
                    t = n;
                }
                Duration::from_secs(longest.max(1) as u64)
            }
        }
    }

    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }
}

/// "10s", "5m", "6h", "1d", "90 minutes": a positive whole number of seconds.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?} has no unit (s, m, h or d)"))?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} does not start with a number"))?;
    let mult = match unit.trim() {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86400,
        other => return Err(format!("unknown unit {other:?} (use s, m, h or d)")),
    };
    match n.checked_mul(mult) {
        Some(0) => Err("a duration must be longer than zero".into()),
        Some(secs) if secs <= 366 * 86400 => Ok(Duration::from_secs(secs)),
        _ => Err(format!("{s:?} is longer than a year")),
    }
}

/// A parsed cron expression: one bit per allowed value of each field.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Cron {
    seconds: u64,
    minutes: u64,
    hours: u32,
    /// Bits 1..=31.
    days: u32,
    /// Bits 1..=12.
    months: u16,
    /// Bits 0..=6, Sunday = 0.
    weekdays: u8,
    days_star: bool,
    weekdays_star: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl Cron {
    fn parse(expr: &str) -> std::result::Result<Cron, String> {
        let fields: Vec<&str> = expr.split_whitespace().collect();
        let (sec, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => {
                return Err(format!(
                    "a cron expression has 5 or 6 fields, this one has {n}"
                ));
            }
        };
        let seconds = field(sec, 0, 59, &[], "second")?;
        let minutes = field(rest[0], 0, 59, &[], "minute")?;
        let hours = field(rest[1], 0, 23, &[], "hour")? as u32;
        let days = field(rest[2], 1, 31, &[], "day of month")? as u32;
        let months = field(rest[3], 1, 12, &MONTHS, "month")? as u16;
        let mut weekdays = field(rest[4], 0, 7, &WEEKDAYS, "day of week")?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & 0x7f;
        }
        Ok(Cron {
            seconds,
            minutes,
            hours,
            days,
            months,
            weekdays: weekdays as u8,
            // Vixie cron: a field starting with "*" (also "*/2") does not restrict the day.
            days_star: rest[2].starts_with('*') || rest[2] == "?",
            weekdays_star: rest[4].starts_with('*') || rest[4] == "?",
        })
    }

    fn day_matches(&self, d: Date) -> bool {
        let dom = self.days & (1 << d.day()) != 0;
        let dow = self.weekdays & (1 << d.weekday().to_sunday_zero_offset()) != 0;
        // Vixie cron: both fields must match when either starts with "*" (a plain "*" matches
        // every day anyway); when both are restricted, either will do.
        if self.days_star || self.weekdays_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    fn next_after(&self, t: Timestamp, tz: &TimeZone) -> Timestamp {
        let start = Timestamp::from_second(t.as_second() + 1).unwrap_or(Timestamp::MAX);
        let mut dt = start.to_zoned(tz.clone()).datetime();
        // Enough steps for any expression over several years; parse() guarantees each field has
        // a value, but a 31st of February never comes: stop rather than loop.
        for _ in 0..200_000 {
            if self.months & (1 << dt.month()) == 0 {
                dt = first_of_next_month(dt);
                continue;
            }
            if !self.day_matches(dt.date()) {
                dt = next_day(dt);
                continue;
            }
            if self.hours & (1 << dt.hour()) == 0 {
                dt = dt.date().at(dt.hour(), 0, 0, 0);
                dt = dt.checked_add(1.hour()).unwrap_or(DateTime::MAX);
                continue;
            }
            if self.minutes & (1 << dt.minute()) == 0 {
                dt = dt.date().at(dt.hour(), dt.minute(), 0, 0);
                dt = dt.checked_add(1.minute()).unwrap_or(DateTime::MAX);
                continue;
            }
            if self.seconds & (1 << dt.second()) == 0 {
                dt = dt.checked_add(1.second()).unwrap_or(DateTime::MAX);
                continue;
            }
            if let Ok(z) = tz.to_ambiguous_zoned(dt).compatible() {
                let ts = z.timestamp();
                if ts > t {
                    return ts;
                }
            }
            dt = dt.checked_add(1.second()).unwrap_or(DateTime::MAX);
        }
        Timestamp::MAX
    }
}

fn next_day(dt: DateTime) -> DateTime {
    dt.date()
        .tomorrow()
        .map(|d| d.at(0, 0, 0, 0))
        .unwrap_or(DateTime::MAX)
}

fn first_of_next_month(dt: DateTime) -> DateTime {
    dt.date()
        .first_of_month()
        .checked_add(1.month())
        .map(|d| d.at(0, 0, 0, 0))
        .unwrap_or(DateTime::MAX)
}

/// One cron field as a bit set over `lo..=hi`.
fn field(
    text: &str,
    lo: u8,
    hi: u8,
    names: &[&str],
    what: &str,
) -> std::result::Result<u64, String> {
    let value = |s: &str| -> std::result::Result<u8, String> {
        if let Some(i) = names.iter().position(|n| s.eq_ignore_ascii_case(n)) {
            return Ok(i as u8 + if lo == 1 { 1 } else { 0 });
        }
        let v: u8 = s
            .parse()
            .map_err(|_| format!("{what} {s:?} is not a number"))?;
        if v < lo || v > hi {
            return Err(format!("{what} {v} is outside {lo}-{hi}"));
        }
        Ok(v)
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u8 = s
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("{what} step {s:?} must be a positive number"))?;
                (r, step)
            }
            None => (part, 1),
        };
        let (a, b) = if range == "*" || range == "?" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let v = value(range)?;
            // "5/15" means from 5 to the end in steps of 15.
            (v, if step > 1 { hi } else { v })
        };
        if a > b {
            return Err(format!("{what} range {range:?} runs backwards"));
        }
        let mut v = a;
        while v <= b {
            bits |= 1 << v;
            v = match v.checked_add(step) {
                Some(n) => n,
                None => break,
            };
        }
    }
    if bits == 0 {
        return Err(format!("{what} {text:?} allows no value"));
    }
    Ok(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// The next `n` runs after `from`, as RFC 3339 in UTC.
    fn runs(text: &str, tz: Option<&str>, from: &str, n: usize) -> Vec<String> {
        let s = Schedule::parse(text, tz).unwrap();
        let mut t = ts(from);
        (0..n)
            .map(|_| {
                t = s.next_after(t);
                t.to_string()
            })
            .collect()
    }

    #[test]
    fn shorthands() {
        let from = "2026-11-21T10:17:03Z";
        assert_eq!(
            runs("hourly", None, from, 2),
            ["2026-11-21T11:00:00Z", "2026-11-21T12:00:00Z"]
        );
        assert_eq!(
            runs("daily at 03:00", None, from, 2),
            ["2026-11-22T03:00:00Z", "2026-11-23T03:00:00Z"]
        );
        assert_eq!(runs("Daily", None, from, 1), ["2026-11-22T00:00:00Z"]);
        // 2026-11-22 is a Sunday.
        assert_eq!(runs("weekly", None, from, 1), ["2026-11-22T00:00:00Z"]);
        assert_eq!(runs("monthly", None, from, 1), ["2026-12-01T00:00:00Z"]);
        assert_eq!(
            runs("every 10s", None, from, 3),
            [
                "2026-11-21T10:17:10Z",
                "2026-11-21T10:17:20Z",
                "2026-11-21T10:17:30Z"
            ]
        );
        assert_eq!(
            runs("every 6h", None, from, 2),
            ["2026-11-21T12:00:00Z", "2026-11-21T18:00:00Z"]
        );
        assert_eq!(
            runs("every 90 minutes", None, "2026-11-21T00:00:00Z", 1),
            ["2026-11-21T01:30:00Z"]
        );
    }

    #[test]
    fn cron_expressions() {
        let from = "2026-11-21T10:17:03Z"; // a Saturday
        assert_eq!(
            runs("*/15 * * * *", None, from, 3),
            [
                "2026-11-21T10:30:00Z",
                "2026-11-21T10:45:00Z",
                "2026-11-21T11:00:00Z"
            ]
        );
        // Weekdays at 09:30: Monday next.
        assert_eq!(
            runs("30 9 * * mon-fri", None, from, 2),
            ["2026-11-23T09:30:00Z", "2026-11-24T09:30:00Z"]
        );
        // Six fields: seconds first.
        assert_eq!(
            runs("*/20 * * * * *", None, from, 2),
            ["2026-11-21T10:17:20Z", "2026-11-21T10:17:40Z"]
        );
        // Day of month OR day of week when both are given (Vixie cron): the 1st, or a Sunday.
        assert_eq!(
            runs("0 0 1 * 0", None, from, 3),
            [
                "2026-11-22T00:00:00Z",
                "2026-11-29T00:00:00Z",
                "2026-12-01T00:00:00Z"
            ]
        );
        // A stepped star restricts nothing for the OR rule: odd days that are Mondays.
        assert_eq!(
            runs("0 0 */2 * 1", None, from, 2),
            ["2026-11-23T00:00:00Z", "2026-12-07T00:00:00Z"]
        );
        // 7 is Sunday too; names are case-insensitive; lists and stepped ranges.
        assert_eq!(runs("0 0 * * 7", None, from, 1), ["2026-11-22T00:00:00Z"]);
        assert_eq!(
            runs("0 6,18 * DEC *", None, from, 2),
            ["2026-12-01T06:00:00Z", "2026-12-01T18:00:00Z"]
        );
        assert_eq!(
            runs("0 1-10/4 * * *", None, from, 3),
            [
                "2026-11-22T01:00:00Z",
                "2026-11-22T05:00:00Z",
                "2026-11-22T09:00:00Z"
            ]
        );
        // February 29th: the next leap year.
        assert_eq!(runs("0 12 29 2 *", None, from, 1), ["2028-02-29T12:00:00Z"]);
    }

    #[test]
    fn time_zones_and_daylight_saving() {
        // 03:00 in Berlin is 02:00 UTC in winter, 01:00 UTC in summer.
        assert_eq!(
            runs(
                "daily at 03:00",
                Some("Europe/Berlin"),
                "2026-03-27T12:00:00Z",
                3
            ),
            [
                "2026-03-28T02:00:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-30T01:00:00Z"
            ]
        );
        // 02:30 does not exist on 2026-03-29 in Berlin: it runs as much later as the clocks
        // jumped, at 03:30 CEST (01:30 UTC), once.
        assert_eq!(
            runs(
                "30 2 * * *",
                Some("Europe/Berlin"),
                "2026-03-28T12:00:00Z",
                2
            ),
            ["2026-03-29T01:30:00Z", "2026-03-30T00:30:00Z"]
        );
        // 02:30 happens twice on 2026-10-25: it runs once, the first time (CEST).
        assert_eq!(
            runs(
                "30 2 * * *",
                Some("Europe/Berlin"),
                "2026-10-24T12:00:00Z",
                2
            ),
            ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
        );
        // New York's spring forward, hourly: no hour is run twice and none is lost but the
        // missing one.
        assert_eq!(
            runs(
                "0 * * * *",
                Some("America/New_York"),
                "2026-03-08T05:30:00Z",
                3
            ),
            [
                "2026-03-08T06:00:00Z",
                "2026-03-08T07:00:00Z",
                "2026-03-08T08:00:00Z"
            ]
        );
    }

    #[test]
    fn intervals() {
        let now = ts("2026-11-21T10:17:03Z");
        let secs = |t: &str| Schedule::parse(t, None).unwrap().interval(now).as_secs();
        assert_eq!(secs("hourly"), 3600);
        assert_eq!(secs("every 10s"), 10);
        assert_eq!(secs("daily at 03:00"), 86400);
        // Weekdays only: the weekend gap is the normal longest one.
        assert_eq!(secs("0 9 * * 1-5"), 3 * 86400);
    }

    #[test]
    fn bad_schedules_say_why() {
        for (text, why) in [
            ("sometimes", "5 or 6 fields"),
            ("every", "5 or 6 fields"),
            ("every 10", "no unit"),
            ("every 0s", "longer than zero"),
            ("every 5 fortnights", "unknown unit"),
            ("daily at 25:00", "HH:MM"),
            ("61 * * * *", "minute 61 is outside 0-59"),
            ("* * * * 8", "day of week 8"),
            ("0 0 31-1 * *", "runs backwards"),
            ("*/0 * * * *", "step"),
            ("0 0 * foo *", "month \"foo\""),
            ("0 0 30 2 *", "never comes due"),
        ] {
            let e = Schedule::parse(text, None).unwrap_err();
            assert!(e.message().contains(why), "{text}: {}", e.message());
            assert!(e.hint().unwrap().contains("cron"), "{text}");
        }
        let e = Schedule::parse("hourly", Some("Mars/Olympus")).unwrap_err();
        assert!(e.message().contains("unknown time zone"), "{e:?}");
    }
}
