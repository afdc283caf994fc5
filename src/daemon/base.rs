/*!
Base backups on a source's `base_schedule`: the daemon's second kind of job, beside the backup job
(`schedule`). A base backup runs under the source's lock like every job (so it never overlaps the
source's backup, drill or prune on this machine), is recorded in the history as `base_backup`, and
alerts once per change (`base_backup_failed`, resolved by the next success). A run missed while
no worker ran runs once at start, as backup jobs do. In a fleet it is a leased job (`base:NAME`)
like the backup job. Retention of base backups and WAL is
the backup job's `prune` (the same `keep` rules); a source with no backup job is pruned after
each good base backup.
*/

use std::sync::Arc;
use std::thread::JoinHandle;

use jiff::Timestamp;
use tracing::{error, info, warn};

use super::metrics;
use crate::alerts::{Dispatcher, Event};
use crate::config::{Settings, SourceSpec};
use crate::error::{ErrorKind, Result};
use crate::state::{Job, Planned, RunResult, RunTag, State, StateAt};

/// The job row of a source's base backups: due now when one was missed while no worker ran
/// (first start), else at the schedule's next time.
pub(super) fn plan(
    spec: &SourceSpec,
    state: &State,
    metrics: &metrics::Shared,
    started: Timestamp,
) -> Result<Option<Planned>> {
    let Some(schedule) = &spec.policy.base_schedule else {
        return Ok(None);
    };
    let last = state.last_attempt(&spec.name, Job::BaseBackup)?;
    let missed = last
        .as_ref()
        .is_some_and(|r| schedule.next_after(r.started) <= started);
    let due = if missed {
        started
    } else {
        super::jittered(schedule.next_after(started), spec.policy.jitter)
    };
    {
        let mut m = metrics.lock().unwrap_or_else(|p| p.into_inner());
        let s = m.sources.entry(spec.name.clone()).or_default();
        s.base_next_run = Some(due);
        s.base_last_success = state
            .last(&spec.name, Job::BaseBackup, Some(RunResult::Ok))?
            .and_then(|r| r.finished);
    }
    info!(source = %spec.name, base_schedule = %schedule, "base backups scheduled");
    Ok(Some(Planned {
        name: format!("base:{}", spec.name),
        source: spec.name.clone(),
        kind: "base".into(),
        schedule: schedule.to_string(),
        due,
        requires: spec.policy.requires.clone(),
    }))
}

/// When the next base backup is due after one that ran until `now`.
pub(super) fn next_due(spec: &SourceSpec, now: Timestamp) -> Timestamp {
    match &spec.policy.base_schedule {
        Some(s) => super::jittered(s.next_after(now), spec.policy.jitter),
        None => now,
    }
}

/// Takes a base backup on a thread of its own (a leased job; `taken_over` from a worker whose
/// lease expired: its unfinished base backup uploads are aborted first). The thread's value says
/// whether it ran to an end: the base backup records its own failure or interruption, so only a
/// stopping daemon leaves the job due.
pub(super) fn spawn(
    settings: &Arc<Settings>,
    spec: &SourceSpec,
    state_at: &StateAt,
    tag: RunTag,
    dispatcher: &Arc<Dispatcher>,
    metrics: &metrics::Shared,
    taken_over: bool,
) -> JoinHandle<bool> {
    let (settings, spec, state_at, dispatcher, metrics) = (
        settings.clone(),
        spec.clone(),
        state_at.clone(),
        dispatcher.clone(),
        metrics.clone(),
    );
    std::thread::Builder::new()
        .name(format!("base-{}", spec.name))
        .spawn(move || {
            let name = spec.name.clone();
            if taken_over {
                super::serve::fence(
                    &settings,
                    &crate::catalog::base::base_prefix(&name),
                    &name,
                );
            }
            let mut note = |n: String| info!(source = %name, "{n}");
            let ran = state_at.open().and_then(|state| {
                base_backup_with_alerts(
                    &settings,
                    &spec,
                    &state.tagged(tag),
                    &dispatcher,
                    &metrics,
                    &mut note,
                )
            });
            if let Err(e) = ran {
                if e.kind() == ErrorKind::Interrupted {
                    info!(source = %spec.name, "base backup stopped before it started (shutdown)");
                } else {
                    error!(source = %spec.name, error = %e.message(), "the base backup could not run or record its result (state)");
                }
            }
            crate::interrupt::check().is_ok()
        })
        .expect("spawn a base backup thread")
}

/// One base backup with its lock, history record, alerts and metrics.
pub fn base_backup_with_alerts(
    settings: &Settings,
    spec: &SourceSpec,
    state: &State,
    dispatcher: &Dispatcher,
    metrics: &metrics::Shared,
    note: &mut dyn FnMut(String),
) -> Result<()> {
    let _lock = crate::lock::acquire(
        &settings.lock_dir(&mut |w| warn!(source = %spec.name, "{w}"))?,
        &settings.repository_identity()?,
        &spec.name,
        "base backup",
        crate::lock::Wait::Yes,
        note,
    )?;
    info!(source = %spec.name, "base backup started");
    let opts = crate::ops::backup::BackupOptions {
        pg_bin_dirs: settings.pg_bin_dirs().to_vec(),
        ..Default::default()
    };
    let compression = crate::ops::backup::basebackup::compression_for(settings, spec, false);
    let result = settings.open_repository(note).and_then(|repo| {
        crate::ops::backup::basebackup::run_source(
            &repo,
            spec,
            compression,
            &opts,
            Some(state),
            note,
        )
    });
    let name = spec.name.as_str();
    let (firing, message) = match &result {
        Err(e) if e.kind() == ErrorKind::Interrupted => {
            info!(source = name, "base backup interrupted");
            return Ok(());
        }
        Err(e) => {
            error!(source = name, error = %e.message(), "base backup failed");
            (
                true,
                format!("the base backup of {name} failed: {}", e.message()),
            )
        }
        Ok(m) => {
            info!(source = name, backup = %m.backup_id, end_lsn = %m.end_lsn, "base backup done");
            let mut mm = metrics.lock().unwrap_or_else(|p| p.into_inner());
            let s = mm.sources.entry(name.to_string()).or_default();
            s.base_last_success = Some(m.finished);
            s.jobs_ok += 1;
            (
                false,
                format!("base backups of {name} succeed again ({})", m.backup_id),
            )
        }
    };
    if firing {
        let mut mm = metrics.lock().unwrap_or_else(|p| p.into_inner());
        mm.sources.entry(name.to_string()).or_default().jobs_failed += 1;
    }
    super::alert(
        state,
        dispatcher,
        name,
        Event::BaseBackupFailed,
        firing,
        &message,
    )?;
    if !firing && spec.policy.drill {
        pitr_drill(settings, spec, state, dispatcher, metrics, note)?;
    }
    if !firing && spec.policy.schedule.is_none() {
        prune_after(settings, spec, state, dispatcher, note)?;
    }
    Ok(())
}

/// A PITR drill of the new base backup and the WAL after it (`drill --pitr`), still under the
/// source's lock: recorded in the repository and the history, `pitr_drill_failed` alerted once
/// per change, its result and tested restore time in the metrics.
fn pitr_drill(
    settings: &Settings,
    spec: &SourceSpec,
    state: &State,
    dispatcher: &Dispatcher,
    metrics: &metrics::Shared,
    note: &mut dyn FnMut(String),
) -> Result<()> {
    let name = spec.name.as_str();
    info!(source = name, "PITR drill started");
    let outcome = (|| {
        let repo = settings.open_repository(note)?;
        let opts = crate::ops::drill::pitr::PitrDrillOptions {
            target: None,
            work_dir: None,
            pg_bin_dirs: settings.pg_bin_dirs().to_vec(),
            location: settings.location()?,
            credentials: settings.credentials()?,
        };
        crate::ops::drill::pitr::run_recorded(&repo, name, &opts, Some(state), note)
    })();
    let (firing, message) = match &outcome {
        Err(e) if e.kind() == ErrorKind::Interrupted => return Ok(()),
        Err(e) => (
            true,
            format!("the PITR drill of {name} could not run: {}", e.message()),
        ),
        Ok(o) => {
            let mut m = metrics.lock().unwrap_or_else(|p| p.into_inner());
            let w = &mut m.sources.entry(name.to_string()).or_default().wal;
            w.pitr_drill_ok = Some(o.failure.is_none());
            w.pitr_drill_seconds = Some(o.record.timings.total);
            match &o.failure {
                Some(e) => (
                    true,
                    format!(
                        "the PITR drill of {name} (base backup {}) failed: {}",
                        o.record.base_id,
                        e.message()
                    ),
                ),
                None => {
                    info!(source = name, base = %o.record.base_id, seconds = o.record.timings.total, "PITR drill passed");
                    (
                        false,
                        format!(
                            "the PITR drill of {name} passes again (tested restore time {})",
                            crate::units::duration(std::time::Duration::from_secs_f64(
                                o.record.timings.total
                            ))
                        ),
                    )
                }
            }
        }
    };
    if firing {
        error!(source = name, "{message}");
        let mut m = metrics.lock().unwrap_or_else(|p| p.into_inner());
        m.sources
            .entry(name.to_string())
            .or_default()
            .wal
            .pitr_drill_ok = Some(false);
    }
    super::alert(
        state,
        dispatcher,
        name,
        Event::PitrDrillFailed,
        firing,
        &message,
    )
}

/// Retention for a source that has base backups but no backup job (whose prune would do it):
/// the `keep` rules over base backups and the WAL they need, after each good base backup.
fn prune_after(
    settings: &Settings,
    spec: &SourceSpec,
    state: &State,
    dispatcher: &Dispatcher,
    note: &mut dyn FnMut(String),
) -> Result<()> {
    let Some(keep) = spec.policy.keep else {
        return Ok(());
    };
    let name = spec.name.as_str();
    let id = state.start(Job::Prune, name, Timestamp::now())?;
    let pruned = settings.open_repository(note).and_then(|repo| {
        let snapshots = crate::ops::list::list(&repo, Some(name), note)?;
        crate::ops::prune::run(
            &repo,
            name,
            &snapshots,
            &crate::ops::prune::PruneOptions {
                keep,
                tz: spec.policy.tz.clone(),
                dry_run: false,
                failing: None,
                grace: crate::ops::prune::DEFAULT_GRACE,
            },
            Timestamp::now(),
        )
    });
    let (firing, message) = match &pruned {
        Ok(_) => {
            state.finish(id, Timestamp::now(), &crate::state::Outcome::default())?;
            (false, format!("pruning {name} succeeds again"))
        }
        Err(e) => {
            state.finish(id, Timestamp::now(), &crate::state::Outcome::failed(e))?;
            error!(source = name, error = %e.message(), "prune after the base backup failed");
            (true, format!("pruning {name} failed: {}", e.message()))
        }
    };
    super::alert(
        state,
        dispatcher,
        name,
        Event::PruneFailed,
        firing,
        &message,
    )
}
