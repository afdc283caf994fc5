/*!
One source's month, read: its snapshots (through `ops::list`, so a snapshot's status here is the
status `list` shows), the drill records of drills run in the month, its base backups and WAL
window when it has them, and the failed runs in this machine's history. The judging is in
[`super::model`] and [`super::measure`].
*/

use jiff::Timestamp;

use super::measure;
use super::model::{
    self, Counts, DrillLine, FailedRun, Pitr, RecoveryPoint, Retention, Scope, SnapshotLine,
    SourceReport, VerdictKind,
};
use crate::catalog::{Repository, Status};
use crate::config::SourceSpec;
use crate::error::{ErrorKind, Result};
use crate::state::RunResult;
use crate::storage::ReadStore;

/// The most runs of one source read from the history (years of hourly runs).
const HISTORY_LIMIT: usize = 100_000;

pub(super) fn source<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    name: &str,
    spec: Option<&SourceSpec>,
    scope: &Scope<'_>,
    note: &mut dyn FnMut(String),
) -> Result<SourceReport> {
    let period = &scope.period;
    let mut warnings = Vec::new();
    let summaries = crate::ops::list::list(repo, Some(name), &mut |w| warnings.push(w))?;
    let drills_on = spec.is_none_or(|s| s.policy.drill);

    let mut counts = Counts::default();
    let mut snapshot_list = Vec::new();
    for s in summaries.iter().filter(|s| period.contains(s.created)) {
        model::count(&mut counts, s.status, s.drills > 0);
        snapshot_list.push(SnapshotLine {
            id: s.id.to_string(),
            taken: s.created,
            seconds: s.duration_seconds,
            plain_bytes: s.plain_bytes,
            stored_bytes: s.stored_bytes,
            status: s.status.label().to_string(),
            tested_restore_seconds: s.tested_restore_seconds,
        });
    }

    let mut drills = drills_in(repo, name, scope, &mut warnings)?;
    // Retention deletes most of a month's snapshots before its report is written: this
    // machine's history still knows them (their backup and drill runs), so they count.
    let history = match scope.history {
        Some(state) => state.history(Some(name), HISTORY_LIMIT)?,
        None => Vec::new(),
    };
    let pruned = pruned_from_history(&history, &summaries, period, drills_on);
    for p in &pruned.lines {
        if period.contains(p.taken) {
            counts.taken += 1;
            counts.pruned += 1;
            match p.drill {
                Some((true, _)) => {
                    (counts.drilled, counts.passed) = (counts.drilled + 1, counts.passed + 1)
                }
                Some((false, _)) => {
                    (counts.drilled, counts.failed) = (counts.drilled + 1, counts.failed + 1)
                }
                None => counts.not_drilled += 1,
            }
        }
    }
    drills.extend(pruned.drills);
    drills.sort_by_key(|d| d.at);
    let passed: Vec<f64> = drills
        .iter()
        .filter(|d| d.passed)
        .map(|d| d.total_seconds)
        .collect();
    let restore_time = measure::stats(&passed);

    // Good: restorable as far as we know. With drills off, an undrilled snapshot is the best
    // there is (the verdict says it was never tested).
    let good: Vec<i64> = summaries
        .iter()
        .filter(|s| s.status == Status::Sealed || (!drills_on && s.status == Status::NotDrilled))
        .map(|s| s.created.as_second())
        .chain(pruned.good.iter().map(|t| t.as_second()))
        .collect();
    let schedule_interval = spec
        .and_then(|s| s.policy.schedule.as_ref())
        .map(|s| s.interval(period.start));
    let promised = spec.map(|s| s.policy.objectives).unwrap_or_default();
    let promise = model::rpo_with_slack(&promised, schedule_interval).map(|s| s as i64);
    let pitr = pitr(repo, name, scope, &mut warnings)?;

    let (recovery_point, achieved_rpo) = if summaries.is_empty()
        && let Some(p) = pitr.as_ref().filter(|p| p.window_to.is_some())
    {
        // Base backups and WAL only: how far the archive is behind, as of generation.
        let lag = p.archive_lag_seconds;
        (
            RecoveryPoint {
                measured_by: "wal".into(),
                worst: None,
                gaps: Vec::new(),
            },
            lag,
        )
    } else {
        let rp = measure::recovery_point(
            &good,
            period.start.as_second(),
            period.end.as_second(),
            promise,
        );
        (
            RecoveryPoint {
                measured_by: "snapshots".into(),
                worst: rp.worst.map(Into::into),
                gaps: rp.over_promise.into_iter().map(Into::into).collect(),
            },
            rp.worst.map(|g| g.seconds() as f64),
        )
    };
    let objectives = model::objectives(
        &promised,
        schedule_interval,
        achieved_rpo,
        restore_time.as_ref(),
    );

    let failed_runs = scope.history.map(|_| {
        history
            .iter()
            .filter(|r| r.result == RunResult::Failed && period.contains(r.started))
            .map(|r| FailedRun {
                at: r.started,
                job: r.job.as_str().to_string(),
                error: r.error.clone().unwrap_or_default(),
            })
            .rev()
            .collect::<Vec<_>>()
    });

    let newest_ever = summaries.last().map(|s| s.created);
    let mut verdict = model::judge(&counts, &objectives, newest_ever, drills_on);
    if let Some(runs) = failed_runs.as_ref().filter(|r| !r.is_empty()) {
        verdict.reasons.push(format!(
            "{} run{} failed this month (listed below)",
            runs.len(),
            if runs.len() == 1 { "" } else { "s" }
        ));
        if verdict.kind == VerdictKind::Passed {
            verdict.kind = VerdictKind::Attention;
        }
    }
    if counts.taken == 0
        && let Some(p) = &pitr
        && p.base_backups_in_period > 0
    {
        // Base backups and WAL are backups too: not "no backups".
        verdict.kind = VerdictKind::Attention;
        verdict.headline = format!(
            "{} base backup{} and the WAL archive; no logical snapshot drilled",
            p.base_backups_in_period,
            if p.base_backups_in_period == 1 {
                ""
            } else {
                "s"
            }
        );
        verdict.reasons = vec!["point-in-time recovery is not drilled by this version".into()];
    }

    let kind = match summaries.last() {
        Some(s) => repo
            .manifest(name, &s.id)
            .map(|m| m.source.kind.label().to_string())
            .unwrap_or_else(|_| "database".into()),
        None if spec.is_some_and(|s| s.dir.is_some()) => "folder".into(),
        None => "database".into(),
    };
    for w in &warnings {
        note(w.clone());
    }
    Ok(SourceReport {
        name: name.to_string(),
        kind,
        verdict,
        schedule: spec
            .and_then(|s| s.policy.schedule.as_ref())
            .map(|s| s.to_string()),
        objectives,
        snapshots: counts,
        snapshot_list,
        drills,
        restore_time,
        recovery_point,
        retention: Retention {
            policy: spec
                .and_then(|s| s.policy.keep.as_ref())
                .map(|k| k.to_string()),
            kept: summaries.len(),
            oldest: summaries.first().map(|s| s.created),
        },
        pitr,
        failed_runs,
        warnings,
    })
}

/// The drills run in the period, oldest first; an unreadable record is a failed drill line.
fn drills_in<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    name: &str,
    scope: &Scope<'_>,
    warnings: &mut Vec<String>,
) -> Result<Vec<DrillLine>> {
    let mut out = Vec::new();
    for e in repo.entries(Some(name))? {
        for d in e.drills.iter().filter(|d| scope.period.contains(d.time())) {
            match repo.drill(name, &e.id, d) {
                Ok(r) => out.push(DrillLine {
                    id: d.to_string(),
                    snapshot: e.id.to_string(),
                    at: r.started,
                    passed: r.passed(),
                    total_seconds: r.timings.total,
                    tables: r.tables.len(),
                    tables_mismatched: r.tables.iter().filter(|t| !t.ok()).count(),
                    problems: r.problems.clone(),
                }),
                Err(err) if matches!(err.kind(), ErrorKind::Integrity | ErrorKind::Config) => {
                    warnings.push(format!(
                        "drill record {d} of {name}/{} is unreadable: {}",
                        e.id,
                        err.message()
                    ));
                    out.push(DrillLine {
                        id: d.to_string(),
                        snapshot: e.id.to_string(),
                        at: d.time(),
                        passed: false,
                        total_seconds: 0.0,
                        tables: 0,
                        tables_mismatched: 0,
                        problems: vec![format!(
                            "the drill record cannot be read: {}",
                            err.message()
                        )],
                    });
                }
                Err(err) => return Err(err),
            }
        }
    }
    out.sort_by_key(|d| d.at);
    Ok(out)
}

/// Base backups and the WAL window, when the source has base backups.
fn pitr<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    name: &str,
    scope: &Scope<'_>,
    warnings: &mut Vec<String>,
) -> Result<Option<Pitr>> {
    if repo.base_entries(Some(name))?.is_empty() {
        return Ok(None);
    }
    let bases = repo.base_manifests(name)?;
    let segments = crate::wal::list(repo.store(), name)?
        .into_iter()
        .filter(|a| a.name.kind == crate::wal::name::Kind::Segment)
        .count();
    let window = if bases.is_empty() {
        None
    } else {
        match crate::ops::pitr::target::window(repo, name, &bases) {
            Ok(w) => Some(w),
            Err(e) => {
                warnings.push(format!(
                    "the WAL window of {name} cannot be read: {}",
                    e.message()
                ));
                None
            }
        }
    };
    let to = window.as_ref().and_then(|w| w.to_time);
    Ok(Some(Pitr {
        base_backups: bases.len(),
        base_backups_in_period: bases
            .iter()
            .filter(|b| scope.period.contains(b.started))
            .count(),
        newest_base_backup: bases.iter().map(|b| b.finished).max(),
        window_from: window.as_ref().map(|w| w.from_time),
        window_to: to,
        wal_segments: segments,
        archive_lag_seconds: to.map(|t| lag(t, scope.now)),
    }))
}

fn lag(t: Timestamp, now: Timestamp) -> f64 {
    now.duration_since(t).as_secs_f64().max(0.0)
}

/// What the history says of snapshots no longer in the repository (pruned).
#[derive(Default)]
struct Pruned {
    lines: Vec<PrunedSnapshot>,
    /// Times of the good ones (any period: the one before the month anchors its first gap).
    good: Vec<Timestamp>,
    /// Their drills in the period.
    drills: Vec<DrillLine>,
}

struct PrunedSnapshot {
    taken: Timestamp,
    /// The latest drill run of it: passed, tested restore time.
    drill: Option<(bool, Option<f64>)>,
}

fn pruned_from_history(
    runs: &[crate::state::Run],
    summaries: &[crate::catalog::Summary],
    period: &model::Period,
    drills_on: bool,
) -> Pruned {
    use crate::catalog::SnapshotId;
    use crate::state::Job;
    let kept: std::collections::BTreeSet<String> =
        summaries.iter().map(|s| s.id.to_string()).collect();
    let mut out = Pruned::default();
    // Oldest first, so the latest drill of a snapshot is the one that stays.
    let mut by_snapshot: std::collections::BTreeMap<String, PrunedSnapshot> = Default::default();
    for r in runs.iter().rev() {
        let Some(id) = r.snapshot.as_deref().filter(|id| !kept.contains(*id)) else {
            continue;
        };
        let Ok(sid) = SnapshotId::parse(id) else {
            continue;
        };
        match (r.job, r.result) {
            (Job::Backup, RunResult::Ok) => {
                by_snapshot.entry(id.to_string()).or_insert(PrunedSnapshot {
                    taken: sid.time(),
                    drill: None,
                });
            }
            (Job::Drill, RunResult::Ok | RunResult::Failed) => {
                let passed = r.result == RunResult::Ok;
                if let Some(p) = by_snapshot.get_mut(id) {
                    p.drill = Some((passed, r.restore_seconds));
                }
                if period.contains(r.started) {
                    out.drills.push(DrillLine {
                        id: format!("{id} (pruned since; from this machine's history)"),
                        snapshot: id.to_string(),
                        at: r.started,
                        passed,
                        total_seconds: r.restore_seconds.or(r.seconds).unwrap_or(0.0),
                        tables: 0,
                        tables_mismatched: 0,
                        problems: r.error.iter().cloned().collect(),
                    });
                }
            }
            _ => {}
        }
    }
    for p in by_snapshot.into_values() {
        let good = match p.drill {
            Some((passed, _)) => passed,
            None => !drills_on,
        };
        if good {
            out.good.push(p.taken);
        }
        out.lines.push(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Job, Run};

    fn run(job: Job, result: RunResult, at: &str, snapshot: &str, restore: Option<f64>) -> Run {
        Run {
            id: 0,
            job,
            source: "app".into(),
            started: at.parse().unwrap(),
            finished: None,
            result,
            error: (result == RunResult::Failed).then(|| "a table differs".to_string()),
            snapshot: Some(snapshot.into()),
            plain_bytes: None,
            stored_bytes: None,
            seconds: Some(1.0),
            worker: None,
            due: None,
            restore_seconds: restore,
        }
    }

    #[test]
    fn pruned_snapshots_count_from_the_history() {
        let now: Timestamp = "2026-12-04T00:00:00Z".parse().unwrap();
        let period = model::Period::month("2026-11", now).unwrap();
        let (a, b) = ("20261102T030000Z-aaaaaa", "20261103T030000Z-bbbbbb");
        // Newest first, as State::history gives them.
        let runs = vec![
            run(
                Job::Drill,
                RunResult::Failed,
                "2026-11-03T03:05:00Z",
                b,
                None,
            ),
            run(Job::Backup, RunResult::Ok, "2026-11-03T03:00:00Z", b, None),
            run(
                Job::Drill,
                RunResult::Ok,
                "2026-11-02T03:05:00Z",
                a,
                Some(40.0),
            ),
            run(Job::Backup, RunResult::Ok, "2026-11-02T03:00:00Z", a, None),
        ];
        let p = pruned_from_history(&runs, &[], &period, true);
        assert_eq!(p.lines.len(), 2);
        assert_eq!(
            p.good,
            vec!["2026-11-02T03:00:00Z".parse::<Timestamp>().unwrap()]
        );
        assert_eq!(p.drills.len(), 2);
        assert_eq!(p.drills.iter().filter(|d| d.passed).count(), 1);
        assert_eq!(
            p.drills.iter().find(|d| d.passed).unwrap().total_seconds,
            40.0
        );
    }
}
