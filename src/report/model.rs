/*!
The report's content: what happened to each source in one month, read from the repository
(manifests, drill records, base backups and WAL) so that a new machine with the key and the
bucket writes the same report; the local history adds the runs that failed before writing
anything. This is the JSON form (docs/REPORT.md describes every field); [`super::compose`] turns
it into the document the PDF and HTML draw.

A snapshot counts in the month it was taken; a drill in the month it ran (a snapshot of October
drilled on November 1st is November's drill). Times are UTC; the period is `[start, end)`, cut
at the generation time for the month still running.
*/

use jiff::{Timestamp, ToSpan};
use serde::{Deserialize, Serialize};

use super::measure::{self, Gap, Stats};
use crate::catalog::{Repository, Status};
use crate::config::SourceSpec;
use crate::error::{Error, Result};
use crate::state::State;
use crate::storage::ReadStore;

/// The JSON format's version: changes when a field changes meaning.
pub const REPORT_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub offsitedb_report: u32,
    pub period: Period,
    pub generated_at: Timestamp,
    pub generated_by: String,
    pub repository: RepositoryFacts,
    pub sources: Vec<SourceReport>,
    /// Keyed digest of everything above (see [`super::fingerprint`]); empty while computing it.
    pub fingerprint: String,
}

/// A calendar month in UTC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    /// "2026-11".
    pub month: String,
    pub start: Timestamp,
    /// The first instant after the month, or the generation time while the month runs.
    pub end: Timestamp,
    /// The month had not ended when the report was generated.
    pub partial: bool,
}

impl Period {
    /// `"2026-11"`, as of `now` (a month that has not started is refused).
    pub fn month(text: &str, now: Timestamp) -> Result<Period> {
        let bad = || {
            Error::config(format!("invalid month {text:?}"))
                .with_hint("write the month as YYYY-MM, e.g. --month 2026-11")
        };
        let (y, m) = text.split_once('-').ok_or_else(bad)?;
        let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(y, 4) || !digits(m, 2) {
            return Err(bad());
        }
        let (y, m): (i16, i8) = (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        let first = jiff::civil::Date::new(y, m, 1).map_err(|_| bad())?;
        let start = first.to_zoned(jiff::tz::TimeZone::UTC).map_err(|_| bad())?;
        let next = start.checked_add(1.month()).map_err(|_| bad())?;
        let (start, next) = (start.timestamp(), next.timestamp());
        if start > now {
            return Err(Error::config(format!("{text} has not started yet"))
                .with_hint("a report covers a month that has begun; leave --month out for the last full month"));
        }
        Ok(Period {
            month: format!("{y:04}-{m:02}"),
            start,
            end: next.min(now),
            partial: next > now,
        })
    }

    /// The `days` before `now` (what `list` and the dashboard measure objectives over).
    pub fn last_days(now: Timestamp, days: i64) -> Period {
        Period {
            month: format!("last-{days}-days"),
            start: now - jiff::SignedDuration::from_hours(24 * days),
            end: now,
            partial: true,
        }
    }

    /// The last month that has ended by `now`.
    pub fn last_full(now: Timestamp) -> Period {
        let d = now.to_zoned(jiff::tz::TimeZone::UTC).date();
        let prev = d.first_of_month().saturating_sub(1.day());
        Period::month(&format!("{:04}-{:02}", prev.year(), prev.month()), now)
            .expect("a past month is valid")
    }

    pub fn contains(&self, t: Timestamp) -> bool {
        t >= self.start && t < self.end
    }

    /// "November 2026" (or "the last 30 days").
    pub fn title(&self) -> String {
        if let Some(days) = self
            .month
            .strip_prefix("last-")
            .and_then(|d| d.strip_suffix("-days"))
        {
            return format!("the last {days} days");
        }
        let d = self.start.to_zoned(jiff::tz::TimeZone::UTC);
        d.strftime("%B %Y").to_string()
    }
}

/// Where the data lives and how it is protected: no secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RepositoryFacts {
    /// The repository URL with credentials removed.
    pub location: String,
    /// "Backblaze B2", "Amazon S3", "Cloudflare R2", "S3-compatible (host)", "local folder".
    pub provider: String,
    pub bucket: Option<String>,
    pub region: Option<String>,
    /// "AES-256-GCM (sealed before upload; the key never leaves your machines)".
    pub encryption: String,
    pub key_id: String,
    /// What the bucket's Object Lock says, when read.
    pub object_lock: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceReport {
    pub name: String,
    /// "database" or "folder".
    pub kind: String,
    pub verdict: Verdict,
    /// The schedule in the configuration, when this machine has it.
    pub schedule: Option<String>,
    pub objectives: Objectives,
    pub snapshots: Counts,
    /// Every snapshot taken in the month, oldest first.
    pub snapshot_list: Vec<SnapshotLine>,
    /// Every drill run in the month, oldest first.
    pub drills: Vec<DrillLine>,
    /// Tested restore times of the month's passing drills (seconds).
    pub restore_time: Option<Stats>,
    pub recovery_point: RecoveryPoint,
    pub retention: Retention,
    pub pitr: Option<Pitr>,
    /// Runs that failed in the month, from this machine's history (`None`: no history here).
    pub failed_runs: Option<Vec<FailedRun>>,
    /// What the repository did not let us read, in words.
    pub warnings: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    /// Every snapshot of the month drilled and passed, objectives met.
    Passed,
    /// Backed up, but something needs a look: snapshots not drilled, an objective missed.
    Attention,
    /// A drill failed, or no backup.
    Failed,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub kind: VerdictKind,
    /// One sentence for a non-engineer.
    pub headline: String,
    /// Why, one line each.
    pub reasons: Vec<String>,
}

/// Promised and achieved, in seconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Objectives {
    /// The recovery point promised: `rpo`, else the schedule's interval (what the schedule
    /// implies), else none.
    pub rpo_seconds: Option<f64>,
    /// Where the promise comes from: "rpo" or "schedule".
    pub rpo_from: Option<String>,
    pub rto_seconds: Option<f64>,
    /// The worst recovery point of the month.
    pub achieved_rpo_seconds: Option<f64>,
    /// The slowest tested restore of the month.
    pub achieved_rto_seconds: Option<f64>,
    pub rpo_met: Option<bool>,
    pub rto_met: Option<bool>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub taken: usize,
    /// Taken this month and drilled at least once (by now).
    pub drilled: usize,
    /// Whose latest drill passed (sealed).
    pub passed: usize,
    /// Whose latest drill failed (or cannot be read).
    pub failed: usize,
    pub not_drilled: usize,
    /// Manifest present, data missing or of the wrong size.
    pub damaged: usize,
    /// Counted from this machine's history: deleted by retention since.
    #[serde(default)]
    pub pruned: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotLine {
    pub id: String,
    pub taken: Timestamp,
    pub seconds: f64,
    pub plain_bytes: u64,
    pub stored_bytes: u64,
    /// "sealed", "drill failed", "not drilled", "damaged".
    pub status: String,
    pub tested_restore_seconds: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DrillLine {
    pub id: String,
    pub snapshot: String,
    pub at: Timestamp,
    pub passed: bool,
    /// Download + restore + verify: the tested restore time.
    pub total_seconds: f64,
    pub tables: usize,
    pub tables_mismatched: usize,
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecoveryPoint {
    /// "snapshots" (the largest gap between good snapshots) or "wal" (PITR: the WAL archive).
    pub measured_by: String,
    pub worst: Option<GapLine>,
    /// Gaps longer than the promise.
    pub gaps: Vec<GapLine>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GapLine {
    /// The good backup the gap starts after, or the period's start when there was none.
    pub from: Timestamp,
    pub to: Timestamp,
    pub seconds: f64,
    pub after_backup: bool,
}

impl From<Gap> for GapLine {
    fn from(g: Gap) -> Self {
        GapLine {
            from: Timestamp::from_second(g.from).unwrap_or(Timestamp::UNIX_EPOCH),
            to: Timestamp::from_second(g.to).unwrap_or(Timestamp::UNIX_EPOCH),
            seconds: g.seconds() as f64,
            after_backup: g.after_backup,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Retention {
    /// The policy in the configuration ("7 daily, 4 weekly, 12 monthly"), when known here.
    pub policy: Option<String>,
    /// Snapshots in the repository now, and the oldest.
    pub kept: usize,
    pub oldest: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pitr {
    pub base_backups: usize,
    pub base_backups_in_period: usize,
    pub newest_base_backup: Option<Timestamp>,
    /// What can be restored to any point of: from the oldest base backup's end to the newest
    /// archived segment.
    pub window_from: Option<Timestamp>,
    pub window_to: Option<Timestamp>,
    pub wal_segments: usize,
    /// How far the newest archived segment is behind the generation time (seconds).
    pub archive_lag_seconds: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailedRun {
    pub at: Timestamp,
    /// "backup", "drill", "prune", "base_backup".
    pub job: String,
    pub error: String,
}

/// What a report covers besides the repository.
pub struct Scope<'a> {
    pub period: Period,
    /// Only this source.
    pub source: Option<&'a str>,
    /// The configured sources (schedule, objectives, retention); a source in the repository and
    /// not here is reported from the repository alone.
    pub configured: &'a [SourceSpec],
    pub history: Option<&'a State>,
    pub repository: RepositoryFacts,
    pub now: Timestamp,
}

/// Reads the repository and builds the report (fingerprint not yet set).
pub fn build<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    scope: &Scope<'_>,
    note: &mut dyn FnMut(String),
) -> Result<Report> {
    let entries = repo.entries(scope.source)?;
    let mut names: Vec<String> = entries.iter().map(|e| e.source.clone()).collect();
    names.extend(
        scope
            .configured
            .iter()
            .filter(|s| s.configured)
            .map(|s| s.name.clone()),
    );
    if let Some(s) = scope.source {
        names.retain(|n| n == s);
        if names.is_empty() {
            names.push(s.to_string());
        }
    }
    // Base backups of sources with no logical snapshot.
    if let Ok(bases) = repo.base_entries(scope.source) {
        names.extend(bases.into_iter().map(|b| b.source));
    }
    names.sort();
    names.dedup();
    let mut sources = Vec::new();
    for name in names {
        let spec = scope.configured.iter().find(|s| s.name == name);
        let r = super::gather::source(repo, &name, spec, scope, note)?;
        // A source first backed up after the period did not exist in it (not "no backups").
        if r.snapshots.taken == 0
            && r.pitr.is_none()
            && r.retention.oldest.is_some_and(|o| o >= scope.period.end)
        {
            continue;
        }
        sources.push(r);
    }
    Ok(Report {
        offsitedb_report: REPORT_VERSION,
        period: scope.period.clone(),
        generated_at: scope.now,
        generated_by: format!("offsitedb {}", crate::VERSION),
        repository: scope.repository.clone(),
        sources,
        fingerprint: String::new(),
    })
}

/// The verdict from the counts and objectives (pure, for the tests and the dashboard).
pub fn judge(
    counts: &Counts,
    objectives: &Objectives,
    newest_ever: Option<Timestamp>,
    drills_on: bool,
) -> Verdict {
    let mut reasons = Vec::new();
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    if counts.taken == 0 {
        let headline = match newest_ever {
            Some(t) => format!(
                "No backup this month (the last one was taken {})",
                t.strftime("%Y-%m-%d")
            ),
            None => "No backups".to_string(),
        };
        return Verdict {
            kind: VerdictKind::Failed,
            headline,
            reasons: vec!["nothing could be restored from this month".into()],
        };
    }
    if counts.failed > 0 {
        reasons.push(format!(
            "{} of {} snapshot{} failed their restore drill",
            counts.failed,
            counts.taken,
            plural(counts.taken)
        ));
    }
    if counts.damaged > 0 {
        reasons.push(format!(
            "{} snapshot{} damaged (data missing or the wrong size)",
            counts.damaged,
            plural(counts.damaged)
        ));
    }
    if counts.not_drilled > 0 && drills_on {
        reasons.push(format!(
            "{} snapshot{} not drilled yet",
            counts.not_drilled,
            plural(counts.not_drilled)
        ));
    }
    if objectives.rpo_met == Some(false) {
        reasons.push(format!(
            "recovery point {} missed the promised {}",
            crate::units::spoken(secs(objectives.achieved_rpo_seconds)),
            crate::units::spoken(secs(objectives.rpo_seconds))
        ));
    }
    if objectives.rto_met == Some(false) {
        reasons.push(format!(
            "slowest tested restore {} exceeded the objective {}",
            crate::units::spoken(secs(objectives.achieved_rto_seconds)),
            crate::units::spoken(secs(objectives.rto_seconds))
        ));
    }
    let (kind, headline) = if counts.failed > 0 || counts.damaged > 0 {
        (
            VerdictKind::Failed,
            format!(
                "{} of {} snapshot{} could not be restored",
                counts.failed + counts.damaged,
                counts.taken,
                plural(counts.taken)
            ),
        )
    } else if !reasons.is_empty() {
        (
            VerdictKind::Attention,
            format!(
                "{} snapshot{} taken, {} drilled and passed; needs attention",
                counts.taken,
                plural(counts.taken),
                counts.passed
            ),
        )
    } else if counts.passed == counts.taken {
        (
            VerdictKind::Passed,
            match counts.taken {
                1 => "The snapshot was drilled and passed".to_string(),
                n => format!("All {n} snapshots drilled and passed"),
            },
        )
    } else {
        // Drills are off: backed up, never tested, and said so.
        (
            VerdictKind::Attention,
            format!(
                "{} snapshot{} taken; drills are off, so none was tested",
                counts.taken,
                plural(counts.taken)
            ),
        )
    };
    Verdict {
        kind,
        headline,
        reasons,
    }
}

fn secs(s: Option<f64>) -> std::time::Duration {
    std::time::Duration::from_secs_f64(s.unwrap_or(0.0).max(0.0))
}

/// Counts a snapshot's status into `c`.
pub fn count(c: &mut Counts, status: Status, drilled: bool) {
    c.taken += 1;
    if drilled {
        c.drilled += 1;
    }
    match status {
        Status::Sealed => c.passed += 1,
        Status::DrillFailed => c.failed += 1,
        Status::NotDrilled => c.not_drilled += 1,
        Status::Damaged => c.damaged += 1,
    }
}

/// Promised and achieved, measured.
pub fn objectives(
    promised: &crate::config::Objectives,
    schedule_interval: Option<std::time::Duration>,
    achieved_rpo: Option<f64>,
    restore: Option<&Stats>,
) -> Objectives {
    let (rpo_seconds, rpo_from) = match (promised.rpo, schedule_interval) {
        (Some(d), _) => (Some(d.as_secs_f64()), Some("rpo".to_string())),
        (None, Some(d)) => (Some(d.as_secs_f64()), Some("schedule".to_string())),
        (None, None) => (None, None),
    };
    let rto_seconds = promised.rto.map(|d| d.as_secs_f64());
    let achieved_rto = restore.map(|s| s.max);
    Objectives {
        rpo_seconds,
        rpo_from,
        rto_seconds,
        achieved_rpo_seconds: achieved_rpo,
        achieved_rto_seconds: achieved_rto,
        rpo_met: measure::meets(achieved_rpo, rpo_with_slack(promised, schedule_interval)),
        rto_met: measure::meets(achieved_rto, rto_seconds),
    }
}

/// The recovery point a gap is judged against: `rpo` exactly; a schedule's interval with the
/// slack a schedule has (jobs start a moment late, or with jitter): a tenth of it, at least a
/// minute, so a daily backup that started a second later is not a missed promise.
pub fn rpo_with_slack(
    promised: &crate::config::Objectives,
    schedule_interval: Option<std::time::Duration>,
) -> Option<f64> {
    match (promised.rpo, schedule_interval) {
        (Some(d), _) => Some(d.as_secs_f64()),
        (None, Some(d)) => Some(d.as_secs_f64() + (d.as_secs_f64() / 10.0).max(60.0)),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn months_are_utc_and_the_running_one_is_cut_at_now() {
        let now = ts("2026-12-04T10:00:00Z");
        let p = Period::month("2026-11", now).unwrap();
        assert_eq!(
            (p.start, p.end, p.partial),
            (
                ts("2026-11-01T00:00:00Z"),
                ts("2026-12-01T00:00:00Z"),
                false
            )
        );
        assert_eq!(p.title(), "November 2026");
        let p = Period::month("2026-12", now).unwrap();
        assert_eq!((p.end, p.partial), (now, true));
        assert_eq!(Period::last_full(now).month, "2026-11");
        assert_eq!(
            Period::last_full(ts("2027-01-01T00:00:00Z")).month,
            "2026-12"
        );
        for bad in ["2026-13", "26-11", "november", "2027-01"] {
            assert!(Period::month(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn verdicts_say_what_failed() {
        let o = objectives(&Default::default(), None, None, None);
        let mut c = Counts::default();
        assert_eq!(judge(&c, &o, None, true).headline, "No backups");
        assert_eq!(judge(&c, &o, None, true).kind, VerdictKind::Failed);
        for _ in 0..3 {
            count(&mut c, Status::Sealed, true);
        }
        let v = judge(&c, &o, None, true);
        assert_eq!(
            (v.kind, v.headline.as_str()),
            (VerdictKind::Passed, "All 3 snapshots drilled and passed")
        );
        count(&mut c, Status::DrillFailed, true);
        let v = judge(&c, &o, None, true);
        assert_eq!(v.kind, VerdictKind::Failed);
        assert_eq!(v.headline, "1 of 4 snapshots could not be restored");
        assert_eq!(v.reasons, ["1 of 4 snapshots failed their restore drill"]);
    }

    #[test]
    fn a_missed_objective_needs_attention() {
        let promised = crate::config::Objectives {
            rpo: Some(std::time::Duration::from_secs(3600)),
            rto: Some(std::time::Duration::from_secs(60)),
        };
        let stats = measure::stats(&[30.0, 90.0]).unwrap();
        let o = objectives(&promised, None, Some(7200.0), Some(&stats));
        assert_eq!((o.rpo_met, o.rto_met), (Some(false), Some(false)));
        let mut c = Counts::default();
        count(&mut c, Status::Sealed, true);
        let v = judge(&c, &o, None, true);
        assert_eq!(v.kind, VerdictKind::Attention);
        assert_eq!(
            v.reasons,
            [
                "recovery point 2 h missed the promised 1 h",
                "slowest tested restore 1 min 30 s exceeded the objective 1 min"
            ]
        );
        // The schedule's interval is the promise when no rpo is set.
        let o = objectives(
            &Default::default(),
            Some(std::time::Duration::from_secs(86400)),
            Some(3600.0),
            None,
        );
        assert_eq!(
            (o.rpo_from.as_deref(), o.rpo_met),
            (Some("schedule"), Some(true))
        );
        // A daily backup that started a second late keeps the schedule's promise.
        let day = std::time::Duration::from_secs(86400);
        let o = objectives(&Default::default(), Some(day), Some(86401.0), None);
        assert_eq!(o.rpo_met, Some(true));
        let o = objectives(&Default::default(), Some(day), Some(2.0 * 86400.0), None);
        assert_eq!(o.rpo_met, Some(false));
    }
}
