/*!
Which snapshots to keep: grandfather-father-son retention as a pure function of the snapshots'
times and statuses, so that it can be tested on tables and shown before anything is deleted.

`keep = { last = N, hourly = N, daily = 7, weekly = 4, monthly = 12, yearly = N }`: the newest N
snapshots, then for each of the N most recent hours / days / ISO weeks / months / years (in the
source's time zone) that have snapshots, one snapshot of that period. The one a period keeps is its
newest *sealed* snapshot; only when the period has none does an unsealed one (not drilled, drill
failed, damaged, in that order) hold the slot, and its reason says so.

Rules that hold whatever the policy says:
- the newest snapshot and the newest sealed snapshot are always kept;
- while the source's newest backups are failing nothing is deleted (a broken backup job must not
  also eat the good snapshots while nobody looks): the run history says so, or the newest
  snapshot failed its drill or is damaged;
- a snapshot started further ahead of this machine's clock than
  [`crate::catalog::FUTURE_TOLERANCE`] (a host whose clock runs ahead, or a forged manifest) is
  kept and reported, and left out of every other rule: it is not the newest, fills no period,
  and does not decide the hold, so it can neither shield failing backups nor push good copies
  out;
- a snapshot pinned by the caller (its latest drill record is unreadable) is kept;
- what a kept one needs is kept ([`keep_needed`]): an incremental base backup cannot be restored
  without its chain down to the full backup, so a chain is kept whole.
*/

use std::collections::BTreeMap;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use crate::catalog::{Status, ahead, future_dated};

/// How many of each kind to keep. Zero keeps none of that kind; a kind not named in a `keep`
/// table is zero. A source with no `keep` is never pruned, and a `keep` that names no rule is
/// refused by the configuration (it would keep nothing but the newest snapshot).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Keep {
    #[serde(default)]
    pub last: u32,
    #[serde(default)]
    pub hourly: u32,
    #[serde(default)]
    pub daily: u32,
    #[serde(default)]
    pub weekly: u32,
    #[serde(default)]
    pub monthly: u32,
    #[serde(default)]
    pub yearly: u32,
}

impl Keep {
    /// Keeps nothing by period (the newest snapshots are still kept by the fixed rules).
    pub const NONE: Keep = Keep {
        last: 0,
        hourly: 0,
        daily: 0,
        weekly: 0,
        monthly: 0,
        yearly: 0,
    };
}

impl Default for Keep {
    /// 7 daily, 4 weekly, 12 monthly.
    fn default() -> Self {
        Keep {
            last: 0,
            hourly: 0,
            daily: 7,
            weekly: 4,
            monthly: 12,
            yearly: 0,
        }
    }
}

impl std::fmt::Display for Keep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = [
            ("last", self.last),
            ("hourly", self.hourly),
            ("daily", self.daily),
            ("weekly", self.weekly),
            ("monthly", self.monthly),
            ("yearly", self.yearly),
        ]
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
        if parts.is_empty() {
            f.write_str("nothing but the newest")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// Parses "daily=7,weekly=4" (kinds not named keep none).
pub fn parse_rules(text: &str) -> crate::error::Result<Keep> {
    let mut k = Keep::NONE;
    let bad = |why: String| {
        crate::error::Error::config(format!("invalid retention {text:?}: {why}"))
            .with_hint("write it like \"last=3,daily=7,weekly=4,monthly=12,yearly=2\"")
    };
    let parts: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if parts.is_empty() {
        // An unset variable must not become "keep nothing".
        return Err(bad("no rule given".into()));
    }
    for part in parts {
        let (kind, n) = part
            .split_once('=')
            .ok_or_else(|| bad(format!("{part:?} is not KIND=N")))?;
        let n: u32 = n
            .trim()
            .parse()
            .map_err(|_| bad(format!("{n:?} is not a number")))?;
        let slot = match kind.trim() {
            "last" => &mut k.last,
            "hourly" => &mut k.hourly,
            "daily" => &mut k.daily,
            "weekly" => &mut k.weekly,
            "monthly" => &mut k.monthly,
            "yearly" => &mut k.yearly,
            other => return Err(bad(format!("unknown kind {other:?}"))),
        };
        *slot = n;
    }
    Ok(k)
}

/// A snapshot as retention sees it.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub id: String,
    pub time: Timestamp,
    pub status: Status,
    /// Why it is kept whatever the policy says (its latest drill record is unreadable).
    pub pinned: Option<String>,
}

/// The decision for one snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct Decision {
    pub id: String,
    pub time: Timestamp,
    pub status: Status,
    pub keep: bool,
    /// Every rule that keeps it (empty when it is deleted).
    pub reasons: Vec<String>,
}

/// What a prune would do, newest first.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub decisions: Vec<Decision>,
    /// Why nothing is deleted at all, when a protection rule holds everything.
    pub held: Option<String>,
    /// Snapshots dated ahead of this machine's clock, one line each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub future_dated: Vec<String>,
    /// Why backups count as failing, when they do (what `held` quotes): a prune hands it on to
    /// the plan of the source's base backups, so that one hold covers both.
    #[serde(skip)]
    pub failing: Option<String>,
}

impl Plan {
    pub fn deletions(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().filter(|d| !d.keep)
    }
}

/// Decides, for one source's snapshots, which to keep and why, at `now` (this machine's clock).
/// `failing` says why the run history counts the source's newest backups as failing (then
/// everything is kept, as when the newest snapshot failed its drill or is damaged).
pub fn plan(
    snaps: &[Candidate],
    keep: &Keep,
    tz: &TimeZone,
    failing: Option<&str>,
    now: Timestamp,
) -> Plan {
    let mut all: Vec<&Candidate> = snaps.iter().collect();
    all.sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));
    let mut reasons: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut future = Vec::new();
    for c in all.iter().filter(|c| future_dated(c.time, now)) {
        let why = format!("future-dated: {}", ahead("started", c.time, now));
        future.push(format!("{}: {why}", c.id));
        reasons.entry(c.id.as_str()).or_default().push(why);
    }
    for c in &all {
        if let Some(why) = &c.pinned {
            reasons.entry(c.id.as_str()).or_default().push(why.clone());
        }
    }
    // Every other rule sees only what this machine's clock has reached.
    let order: Vec<&Candidate> = all
        .iter()
        .copied()
        .filter(|c| !future_dated(c.time, now))
        .collect();
    let newest_failing = order
        .first()
        .filter(|c| matches!(c.status, Status::DrillFailed | Status::Damaged))
        .map(|c| {
            let mut why = format!("the newest snapshot, {}, is {}", c.id, c.status.label());
            if let Some(p) = &c.pinned {
                why = format!("{why}: {p}");
            }
            why
        });
    fn add<'a>(reasons: &mut BTreeMap<&'a str, Vec<String>>, c: &'a Candidate, why: String) {
        let why = match c.status {
            Status::Sealed => why,
            s => format!("{why} (not sealed: {})", s.label()),
        };
        reasons.entry(c.id.as_str()).or_default().push(why);
    }

    if let Some(c) = order.first() {
        add(&mut reasons, c, "newest snapshot".into());
    }
    if let Some(c) = order.iter().find(|c| c.status == Status::Sealed) {
        reasons
            .entry(c.id.as_str())
            .or_default()
            .push("newest sealed snapshot".into());
    }
    for (i, c) in order.iter().take(keep.last as usize).enumerate() {
        add(
            &mut reasons,
            c,
            format!("last {} ({} of {})", keep.last, i + 1, keep.last),
        );
    }
    for (kind, n) in [
        (Period::Hour, keep.hourly),
        (Period::Day, keep.daily),
        (Period::Week, keep.weekly),
        (Period::Month, keep.monthly),
        (Period::Year, keep.yearly),
    ] {
        if n == 0 {
            continue;
        }
        // Periods newest first, each with its snapshots newest first.
        let mut periods: Vec<(String, Vec<&Candidate>)> = Vec::new();
        let mut last_key = None;
        for c in &order {
            let (key, label) = kind.label(c.time, tz);
            match periods.last_mut() {
                Some((_, v)) if last_key.as_ref() == Some(&key) => v.push(c),
                _ => periods.push((label, vec![c])),
            }
            last_key = Some(key);
        }
        for (label, members) in periods.iter().take(n as usize) {
            let best = members
                .iter()
                .min_by_key(|c| rank(c.status))
                .expect("a period has a snapshot");
            add(&mut reasons, best, format!("{} {label}", kind.name()));
        }
    }

    let failing = failing.map(str::to_string).or(newest_failing);
    let held = failing
        .as_ref()
        .map(|why| format!("nothing is deleted while backups are failing ({why})"));
    let decisions = all
        .iter()
        .map(|c| {
            let mut r = reasons.remove(c.id.as_str()).unwrap_or_default();
            if r.is_empty()
                && let Some(h) = &held
            {
                r.push(h.clone());
            }
            Decision {
                id: c.id.clone(),
                time: c.time,
                status: c.status,
                keep: !r.is_empty(),
                reasons: r,
            }
        })
        .collect();
    Plan {
        decisions,
        held,
        future_dated: future,
        failing,
    }
}

/// Keeps what kept entries need: `needs` maps an id to the ids it cannot be restored without
/// (an incremental base backup's chain down to its full backup). Each needed one is kept, its
/// reason naming what needs it, also when the rules would have deleted it.
pub fn keep_needed(plan: &mut Plan, needs: &BTreeMap<String, Vec<String>>) {
    let mut needed_by: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut kept: std::collections::BTreeSet<String> = plan
        .decisions
        .iter()
        .filter(|d| d.keep)
        .map(|d| d.id.clone())
        .collect();
    // Until nothing changes: a needed one may need others in turn.
    let mut todo: Vec<String> = kept.iter().cloned().collect();
    while let Some(id) = todo.pop() {
        for n in needs.get(&id).into_iter().flatten() {
            let by = needed_by.entry(n.clone()).or_default();
            if !by.contains(&id) {
                by.push(id.clone());
            }
            if kept.insert(n.clone()) {
                todo.push(n.clone());
            }
        }
    }
    // Named in the chain's order (oldest first); ids of one second do not sort by time.
    let time: BTreeMap<String, Timestamp> = plan
        .decisions
        .iter()
        .map(|d| (d.id.clone(), d.time))
        .collect();
    for d in &mut plan.decisions {
        if let Some(by) = needed_by.get_mut(&d.id) {
            by.sort_by(|a, b| (time.get(a), a).cmp(&(time.get(b), b)));
            d.reasons.push(format!(
                "needed by incremental {} (a chain is kept whole, down to its full backup)",
                by.join(", ")
            ));
            d.keep = true;
        }
    }
}

/// Which snapshot a period keeps: sealed first, then the ones that may still prove themselves.
/// `min_by_key` takes the first of equals, and members are newest first.
fn rank(s: Status) -> u8 {
    match s {
        Status::Sealed => 0,
        Status::NotDrilled => 1,
        Status::DrillFailed => 2,
        Status::Damaged => 3,
    }
}

#[derive(Clone, Copy)]
enum Period {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Period {
    fn name(self) -> &'static str {
        match self {
            Period::Hour => "hourly",
            Period::Day => "daily",
            Period::Week => "weekly",
            Period::Month => "monthly",
            Period::Year => "yearly",
        }
    }

    /// The period holding `t` in `tz`: a key that tells periods apart, and its label, e.g.
    /// "2026-11-21", "2026-W47". The hour repeated when clocks go back is two hours (its key
    /// holds the UTC offset; its label says it only then).
    fn label(self, t: Timestamp, tz: &TimeZone) -> (String, String) {
        let z = t.to_zoned(tz.clone());
        let d = z.date();
        if let Period::Hour = self {
            let label = format!("{d} {:02}h", z.hour());
            let key = format!("{label}{}", z.offset());
            let repeated = tz.to_ambiguous_zoned(z.datetime()).is_ambiguous();
            return (key.clone(), if repeated { key } else { label });
        }
        let label = match self {
            Period::Hour => unreachable!("handled above"),
            Period::Day => d.to_string(),
            Period::Week => {
                let w = d.iso_week_date();
                format!("{}-W{:02}", w.year(), w.week())
            }
            Period::Month => format!("{:04}-{:02}", d.year(), d.month()),
            Period::Year => format!("{:04}", d.year()),
        };
        (label.clone(), label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, time: &str, status: Status) -> Candidate {
        Candidate {
            id: id.into(),
            time: time.parse().unwrap(),
            status,
            pinned: None,
        }
    }

    /// The plan as a machine whose clock reads 2027-06-01 sees it (after every row's dates).
    fn plan(snaps: &[Candidate], keep: &Keep, tz: &TimeZone, failing: Option<&str>) -> Plan {
        super::plan(snaps, keep, tz, failing, ts("2027-06-01T00:00:00Z"))
    }

    fn ts(t: &str) -> Timestamp {
        t.parse().unwrap()
    }

    fn sealed(id: &str, time: &str) -> Candidate {
        c(id, time, Status::Sealed)
    }

    fn kept(p: &Plan) -> Vec<&str> {
        let mut v: Vec<&str> = p
            .decisions
            .iter()
            .filter(|d| d.keep)
            .map(|d| d.id.as_str())
            .collect();
        v.sort();
        v
    }

    fn why<'a>(p: &'a Plan, id: &str) -> &'a [String] {
        &p.decisions.iter().find(|d| d.id == id).unwrap().reasons
    }

    fn keep(f: impl FnOnce(&mut Keep)) -> Keep {
        let mut k = Keep::NONE;
        f(&mut k);
        k
    }

    /// One sealed snapshot a day at 03:00 UTC for `days` days ending 2026-11-21.
    fn daily_series(days: i64) -> Vec<Candidate> {
        let end: Timestamp = "2026-11-21T03:00:00Z".parse().unwrap();
        (0..days)
            .map(|i| {
                let t = end - jiff::SignedDuration::from_hours(24 * i);
                Candidate {
                    id: format!("d{i:03}"),
                    time: t,
                    status: Status::Sealed,
                    pinned: None,
                }
            })
            .collect()
    }

    #[test]
    fn the_default_policy_over_a_year_of_dailies() {
        let snaps = daily_series(400);
        let p = plan(&snaps, &Keep::default(), &TimeZone::UTC, None);
        let k = kept(&p);
        // 7 days (d000-d006); ISO weeks: W47 is d000-d005 (Mon 16th..Sat 21st), so the 4 weeks
        // keep d000, d006 (Sun 15th), d013, d020; months keep the last day of each month.
        for id in ["d000", "d001", "d006", "d013", "d020", "d021", "d052"] {
            assert!(k.contains(&id), "{id} not kept: {k:?}");
        }
        assert!(why(&p, "d006").iter().any(|r| r == "weekly 2026-W46"));
        assert!(why(&p, "d021").iter().any(|r| r == "monthly 2026-10"));
        assert!(why(&p, "d000").iter().any(|r| r == "newest snapshot"));
        // 7 + 3 more weeks + 11 more months (November's is d000).
        assert_eq!(k.len(), 7 + 2 + 11, "{k:?}");
        assert_eq!(p.deletions().count(), 400 - k.len());
        assert!(p.held.is_none());
    }

    #[test]
    fn last_and_hourly() {
        let snaps = vec![
            sealed("a", "2026-11-21T10:05:00Z"),
            sealed("b", "2026-11-21T10:40:00Z"),
            sealed("c", "2026-11-21T11:10:00Z"),
            sealed("d", "2026-11-21T12:00:00Z"),
        ];
        let p = plan(&snaps, &keep(|k| k.last = 2), &TimeZone::UTC, None);
        assert_eq!(kept(&p), ["c", "d"]);
        assert_eq!(why(&p, "c"), ["last 2 (2 of 2)"]);
        let p = plan(&snaps, &keep(|k| k.hourly = 3), &TimeZone::UTC, None);
        // 10h keeps its newest (b), not a.
        assert_eq!(kept(&p), ["b", "c", "d"]);
        assert_eq!(why(&p, "b"), ["hourly 2026-11-21 10h"]);
    }

    #[test]
    fn a_period_keeps_its_newest_sealed_snapshot_and_says_when_it_cannot() {
        let snaps = vec![
            sealed("mon-early", "2026-11-16T01:00:00Z"),
            c("mon-late", "2026-11-16T23:00:00Z", Status::DrillFailed),
            c("tue", "2026-11-17T12:00:00Z", Status::NotDrilled),
            c("wed-a", "2026-11-18T01:00:00Z", Status::Damaged),
            c("wed-b", "2026-11-18T02:00:00Z", Status::DrillFailed),
            sealed("thu", "2026-11-19T12:00:00Z"),
        ];
        let p = plan(&snaps, &keep(|k| k.daily = 4), &TimeZone::UTC, None);
        assert_eq!(kept(&p), ["mon-early", "thu", "tue", "wed-b"]);
        assert_eq!(why(&p, "mon-early"), ["daily 2026-11-16"]);
        assert_eq!(
            why(&p, "tue"),
            ["daily 2026-11-17 (not sealed: not drilled)"]
        );
        assert_eq!(
            why(&p, "wed-b"),
            ["daily 2026-11-18 (not sealed: drill failed)"]
        );
        assert_eq!(
            why(&p, "thu"),
            [
                "newest snapshot",
                "newest sealed snapshot",
                "daily 2026-11-19"
            ]
        );
    }

    #[test]
    fn the_newest_and_the_newest_sealed_are_always_kept() {
        let snaps = vec![
            sealed("old", "2026-01-01T00:00:00Z"),
            sealed("good", "2026-11-01T00:00:00Z"),
            c("new", "2026-11-21T00:00:00Z", Status::NotDrilled),
        ];
        let p = plan(&snaps, &keep(|_| {}), &TimeZone::UTC, None);
        assert_eq!(kept(&p), ["good", "new"]);
        assert_eq!(why(&p, "good"), ["newest sealed snapshot"]);
        assert_eq!(
            why(&p, "new"),
            ["newest snapshot (not sealed: not drilled)"]
        );
    }

    #[test]
    fn nothing_is_deleted_while_backups_fail() {
        let snaps = daily_series(30);
        let p = plan(
            &snaps,
            &keep(|k| k.daily = 2),
            &TimeZone::UTC,
            Some("the last backup failed"),
        );
        assert_eq!(p.deletions().count(), 0);
        assert_eq!(
            why(&p, "d029"),
            ["nothing is deleted while backups are failing (the last backup failed)"]
        );
        assert!(p.held.is_some());
    }

    #[test]
    fn a_newest_snapshot_that_failed_its_drill_or_is_damaged_holds_everything() {
        for bad in [Status::DrillFailed, Status::Damaged] {
            let snaps = vec![
                sealed("a", "2026-11-19T03:00:00Z"),
                sealed("b", "2026-11-20T03:00:00Z"),
                c("c", "2026-11-21T03:00:00Z", bad),
            ];
            let p = plan(&snaps, &keep(|k| k.last = 1), &TimeZone::UTC, None);
            assert_eq!(p.deletions().count(), 0);
            assert_eq!(
                p.held.as_deref(),
                Some(
                    format!(
                        "nothing is deleted while backups are failing (the newest snapshot, c, is {})",
                        bad.label()
                    )
                    .as_str()
                )
            );
        }
    }

    #[test]
    fn a_future_dated_snapshot_is_kept_and_counts_for_nothing_else() {
        let now = ts("2026-11-21T12:00:00Z");
        let mut snaps = vec![
            sealed("a", "2026-11-18T03:00:00Z"),
            sealed("b", "2026-11-19T03:00:00Z"),
            c("c", "2026-11-20T03:00:00Z", Status::DrillFailed),
            c("d", "2026-11-21T03:00:00Z", Status::DrillFailed),
            // A host whose clock runs a year ahead.
            sealed("f", "2027-12-01T00:00:00Z"),
        ];
        let ahead =
            "future-dated: started 2027-12-01T00:00:00Z, 8988 hours ahead of this machine's clock";
        let p = super::plan(&snaps, &keep(|k| k.last = 1), &TimeZone::UTC, None, now);
        // The newest snapshot this clock has reached failed its drill: nothing is deleted.
        assert_eq!(p.deletions().count(), 0);
        assert_eq!(
            p.held.as_deref(),
            Some(
                "nothing is deleted while backups are failing (the newest snapshot, d, is drill failed)"
            )
        );
        assert_eq!(why(&p, "f"), [ahead]);
        assert_eq!(p.future_dated, [format!("f: {ahead}")]);
        assert_eq!(
            why(&p, "d"),
            [
                "newest snapshot (not sealed: drill failed)",
                "last 1 (1 of 1) (not sealed: drill failed)"
            ]
        );
        assert_eq!(why(&p, "b"), ["newest sealed snapshot"]);

        // Once the newest passes, the policy applies to the rest, and the future one stays.
        snaps[3].status = Status::Sealed;
        let p = super::plan(&snaps, &keep(|k| k.last = 1), &TimeZone::UTC, None, now);
        assert!(p.held.is_none());
        assert_eq!(kept(&p), ["d", "f"]);
        // It fills no period either: the two newest days are d's and c's.
        let p = super::plan(&snaps, &keep(|k| k.daily = 2), &TimeZone::UTC, None, now);
        assert_eq!(kept(&p), ["c", "d", "f"]);
        // When the clock reaches it, it is an ordinary snapshot again.
        let later = ts("2027-12-01T00:05:00Z");
        let p = super::plan(&snaps, &keep(|k| k.last = 1), &TimeZone::UTC, None, later);
        assert_eq!(kept(&p), ["f"]);
        assert!(p.future_dated.is_empty());
    }

    #[test]
    fn future_dated_means_more_than_ten_minutes_ahead() {
        let now = ts("2026-11-21T12:00:00Z");
        for (t, future) in [
            ("2026-11-21T12:09:59Z", false),
            ("2026-11-21T12:10:00Z", false),
            ("2026-11-21T12:10:01Z", true),
        ] {
            let snaps = vec![
                sealed("a", "2026-11-21T11:00:00Z"),
                c("n", t, Status::DrillFailed),
            ];
            let p = super::plan(&snaps, &keep(|_| {}), &TimeZone::UTC, None, now);
            assert_eq!(p.held.is_none(), future, "{t}");
            assert_eq!(p.future_dated.len(), future as usize, "{t}");
            assert_eq!(
                why(&p, "n")[0].starts_with("future-dated: started"),
                future,
                "{t}"
            );
            if future {
                assert_eq!(
                    why(&p, "n")[0],
                    format!("future-dated: started {t}, 10 minutes ahead of this machine's clock")
                );
            }
        }
    }

    #[test]
    fn a_pinned_snapshot_is_kept_whatever_the_policy() {
        let unreadable = "its latest drill record is unreadable";
        let mut snaps = vec![
            c("only", "2026-11-19T03:00:00Z", Status::DrillFailed),
            c("newer", "2026-11-21T03:00:00Z", Status::NotDrilled),
        ];
        snaps[0].pinned = Some(unreadable.into());
        let p = plan(&snaps, &keep(|k| k.last = 1), &TimeZone::UTC, None);
        assert_eq!(kept(&p), ["newer", "only"]);
        assert_eq!(why(&p, "only"), [unreadable]);
        assert!(p.held.is_none());
        // The newest one pinned so holds everything.
        snaps[1].status = Status::Sealed;
        snaps.push(c("newest", "2026-11-21T04:00:00Z", Status::DrillFailed));
        snaps[2].pinned = Some(unreadable.into());
        let p = plan(&snaps, &keep(|k| k.last = 1), &TimeZone::UTC, None);
        assert_eq!(p.deletions().count(), 0);
        assert_eq!(
            p.held.as_deref(),
            Some(format!("nothing is deleted while backups are failing (the newest snapshot, newest, is drill failed: {unreadable})").as_str())
        );
    }

    #[test]
    fn periods_follow_the_time_zone_across_dst_and_month_ends() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        let snaps = vec![
            // 2026-03-29: clocks go from 02:00 CET to 03:00 CEST. 23:30 UTC on the 28th is
            // 00:30 on the 29th in Berlin; 22:30 UTC on the 29th is 00:30 on the 30th.
            sealed("a", "2026-03-28T22:30:00Z"),
            sealed("b", "2026-03-28T23:30:00Z"),
            sealed("c", "2026-03-29T21:30:00Z"),
            sealed("d", "2026-03-29T22:30:00Z"),
        ];
        let p = plan(&snaps, &keep(|k| k.daily = 10), &berlin, None);
        assert_eq!(why(&p, "a"), ["daily 2026-03-28"]);
        assert_eq!(why(&p, "c"), ["daily 2026-03-29"]);
        assert!(!p.decisions.iter().find(|d| d.id == "b").unwrap().keep);
        assert!(why(&p, "d").contains(&"daily 2026-03-30".to_string()));
        // In UTC the same four fall on two days.
        let p = plan(&snaps, &keep(|k| k.daily = 10), &TimeZone::UTC, None);
        assert_eq!(kept(&p), ["b", "d"]);

        // 2026-10-31 23:30 UTC is already November 1st in Berlin (CET, UTC+1).
        let snaps = vec![
            sealed("oct", "2026-10-31T22:30:00Z"),
            sealed("nov", "2026-10-31T23:30:00Z"),
        ];
        let p = plan(&snaps, &keep(|k| k.monthly = 5), &berlin, None);
        assert_eq!(why(&p, "oct"), ["monthly 2026-10"]);
        assert!(why(&p, "nov").contains(&"monthly 2026-11".to_string()));
        let p = plan(&snaps, &keep(|k| k.monthly = 5), &TimeZone::UTC, None);
        assert_eq!(kept(&p), ["nov"]);
        assert_eq!(
            why(&p, "nov"),
            [
                "newest snapshot",
                "newest sealed snapshot",
                "monthly 2026-10"
            ]
        );

        // ISO weeks and years: 2026-12-31 (Thursday) is in 2026-W53; 2027-01-03 (Sunday) too.
        let snaps = vec![
            sealed("thu", "2026-12-31T12:00:00Z"),
            sealed("sun", "2027-01-03T12:00:00Z"),
            sealed("mon", "2027-01-04T12:00:00Z"),
        ];
        let p = plan(&snaps, &keep(|k| k.weekly = 5), &TimeZone::UTC, None);
        assert_eq!(kept(&p), ["mon", "sun"]);
        assert!(why(&p, "sun").contains(&"weekly 2026-W53".to_string()));
        let p = plan(&snaps, &keep(|k| k.yearly = 5), &TimeZone::UTC, None);
        assert_eq!(kept(&p), ["mon", "thu"]);
        assert_eq!(why(&p, "thu"), ["yearly 2026"]);
    }

    #[test]
    fn rules_parse() {
        assert_eq!(
            parse_rules("daily=7, weekly=4,last=2").unwrap(),
            keep(|k| {
                k.daily = 7;
                k.weekly = 4;
                k.last = 2;
            })
        );
        for bad in ["daily", "daily=x", "fortnightly=2", "", " ", ","] {
            assert!(parse_rules(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_hour_repeated_when_clocks_go_back_is_two_hours() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        // 2026-10-25: 02:00-03:00 happens in CEST (00:00-01:00 UTC), then again in CET.
        let snaps = vec![
            sealed("summer", "2026-10-25T00:30:00Z"),
            sealed("winter", "2026-10-25T01:30:00Z"),
        ];
        let p = plan(&snaps, &keep(|k| k.hourly = 5), &berlin, None);
        assert_eq!(kept(&p), ["summer", "winter"]);
        assert_eq!(why(&p, "summer"), ["hourly 2026-10-25 02h+02"]);
    }

    #[test]
    fn an_empty_source_plans_nothing() {
        let p = plan(&[], &Keep::default(), &TimeZone::UTC, None);
        assert!(p.decisions.is_empty());
    }

    #[test]
    fn a_kept_incremental_keeps_its_chain_down_to_the_full() {
        // full1 <- inc1a <- inc1b, then full2 <- inc2a; one a day, all unsealed base backups.
        let snaps = vec![
            c("full1", "2026-11-01T03:00:00Z", Status::NotDrilled),
            c("inc1a", "2026-11-02T03:00:00Z", Status::NotDrilled),
            c("inc1b", "2026-11-03T03:00:00Z", Status::NotDrilled),
            c("full2", "2026-11-04T03:00:00Z", Status::NotDrilled),
            c("inc2a", "2026-11-05T03:00:00Z", Status::NotDrilled),
        ];
        let needs: BTreeMap<String, Vec<String>> = [
            ("inc1a", vec!["full1"]),
            ("inc1b", vec!["full1", "inc1a"]),
            ("inc2a", vec!["full2"]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
        .collect();
        let cases: [(Keep, &[&str]); 4] = [
            // The newest alone: its full comes with it.
            (Keep::NONE, &["full2", "inc2a"]),
            // last 3 would keep inc1b without full1 and inc1a.
            (
                keep(|k| k.last = 3),
                &["full1", "full2", "inc1a", "inc1b", "inc2a"],
            ),
            // The middle of a chain, alone by its day: the full below it too.
            (
                keep(|k| k.daily = 4),
                &["full1", "full2", "inc1a", "inc1b", "inc2a"],
            ),
            (keep(|k| k.last = 2), &["full2", "inc2a"]),
        ];
        for (k, want) in cases {
            let mut p = plan(&snaps, &k, &TimeZone::UTC, None);
            keep_needed(&mut p, &needs);
            assert_eq!(kept(&p), want, "{k}");
        }
        let mut p = plan(&snaps, &keep(|k| k.last = 3), &TimeZone::UTC, None);
        keep_needed(&mut p, &needs);
        assert_eq!(
            why(&p, "full1"),
            ["needed by incremental inc1a, inc1b (a chain is kept whole, down to its full backup)"]
        );
        assert_eq!(why(&p, "inc1a").len(), 1, "{:?}", why(&p, "inc1a"));
        // Ids of one second do not sort by time: the chain is named oldest first.
        let second = vec![
            c("s-zz", "2026-11-01T03:00:00.1Z", Status::NotDrilled),
            c("s-mm", "2026-11-01T03:00:00.5Z", Status::NotDrilled),
            c("s-aa", "2026-11-01T03:00:00.9Z", Status::NotDrilled),
        ];
        let chain: BTreeMap<String, Vec<String>> = [
            ("s-mm".to_string(), vec!["s-zz".to_string()]),
            (
                "s-aa".to_string(),
                vec!["s-zz".to_string(), "s-mm".to_string()],
            ),
        ]
        .into_iter()
        .collect();
        let mut p = plan(&second, &keep(|k| k.last = 1), &TimeZone::UTC, None);
        keep_needed(&mut p, &chain);
        assert_eq!(
            why(&p, "s-zz"),
            ["needed by incremental s-mm, s-aa (a chain is kept whole, down to its full backup)"]
        );
        // Nothing is needed: the plan is unchanged.
        let mut p = plan(&snaps, &Keep::NONE, &TimeZone::UTC, None);
        keep_needed(&mut p, &BTreeMap::new());
        assert_eq!(kept(&p), ["inc2a"]);
    }
}
