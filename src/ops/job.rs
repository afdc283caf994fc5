/*!
One source's job: backup, then drill the new snapshot, then prune by the source's retention.
`offsitedb run SOURCE` and every scheduled run of `offsitedb serve` go through [`run`].

Each step is recorded in the state file as it starts and ends, so a job killed half-way shows as
interrupted. A failed backup ends the job (nothing to drill, and nothing is pruned while backups
fail); a failed drill still lets prune run, which then deletes nothing because the newest snapshot
did not prove itself.
*/

use jiff::Timestamp;
use serde::Serialize;

use crate::catalog::{Entry, Repository};
use crate::config::SourceSpec;
use crate::error::{Error, Result};
use crate::state::{Job, Outcome, RunResult, State};
use crate::storage::WriteStore;

use super::{backup, drill, list, prune};

#[derive(Clone, Debug, Default)]
pub struct JobOptions {
    pub backup: backup::BackupOptions,
    pub drill: drill::DrillOptions,
    /// When another run holds the source's lock: wait (the default) or fail with `Busy`.
    pub wait: crate::lock::Wait,
}

/// How one step went.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub seconds: f64,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct JobReport {
    pub source: String,
    pub started: Timestamp,
    pub snapshot: Option<String>,
    pub backup: Step,
    pub drill: Option<Step>,
    /// The drill's tested restore time.
    pub restore_seconds: Option<f64>,
    pub prune: Option<prune::PruneReport>,
    pub prune_error: Option<String>,
    /// Why prune did not run (no retention configured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prune_skipped: Option<String>,
    #[serde(skip)]
    pub backup_failure: Option<Error>,
    #[serde(skip)]
    pub drill_failure: Option<Error>,
    #[serde(skip)]
    pub prune_failure: Option<Error>,
}

impl JobReport {
    /// The first failure, for the exit code.
    pub fn failure(&self) -> Option<&Error> {
        self.backup_failure
            .as_ref()
            .or(self.drill_failure.as_ref())
            .or(self.prune_failure.as_ref())
    }
}

/// Runs the job for `spec`. Errors of the job's steps are in the report; `Err` only when the
/// state file cannot be written.
pub fn run<S: WriteStore + ?Sized>(
    repo: &Repository<S>,
    spec: &SourceSpec,
    state: &State,
    opts: &JobOptions,
    note: &mut dyn FnMut(String),
) -> Result<JobReport> {
    let started = Timestamp::now();
    let mut report = JobReport {
        source: spec.name.clone(),
        started,
        snapshot: None,
        backup: Step {
            seconds: 0.0,
            error: None,
        },
        drill: None,
        restore_seconds: None,
        prune: None,
        prune_error: None,
        prune_skipped: None,
        backup_failure: None,
        drill_failure: None,
        prune_failure: None,
    };

    // The skeleton records the backup step in the history.
    let t = std::time::Instant::now();
    let manifest = backup::run_source(repo, spec, &opts.backup, Some(state), note);
    report.backup.seconds = t.elapsed().as_secs_f64();
    let manifest = match manifest {
        Ok(m) => {
            report.snapshot = Some(m.snapshot_id.to_string());
            m
        }
        Err(e) => {
            report.backup.error = Some(e.message().to_string());
            report.backup_failure = Some(e);
            return Ok(report);
        }
    };

    if spec.policy.drill {
        let id = state.start(Job::Drill, &spec.name, Timestamp::now())?;
        let t = std::time::Instant::now();
        let entry = Entry {
            source: spec.name.clone(),
            id: manifest.snapshot_id.clone(),
            data_size: Some(manifest.sizes.stored_bytes),
            drills: Vec::new(),
        };
        let outcome = drill::run(repo, &entry, &opts.drill, note);
        let seconds = t.elapsed().as_secs_f64();
        let (failure, restore) = match outcome {
            Ok(o) => (o.failure, Some(o.record.timings.total)),
            Err(e) => (Some(e), None),
        };
        let mut o = failure.as_ref().map(Outcome::failed).unwrap_or_default();
        o.snapshot = report.snapshot.clone();
        o.restore_seconds = restore;
        state.finish(id, Timestamp::now(), &o)?;
        report.restore_seconds = restore;
        report.drill = Some(Step {
            seconds,
            error: failure.as_ref().map(|e| e.message().to_string()),
        });
        report.drill_failure = failure;
    }
    // Stopping: no prune after a shutdown was asked for.
    if let Err(e) = crate::interrupt::check() {
        report.prune_failure = Some(e);
        return Ok(report);
    }

    // Nothing is ever deleted by a policy nobody wrote down.
    let Some(keep) = spec.policy.keep else {
        let why = format!(
            "no retention configured for {}: nothing was pruned (add keep = {{ daily = 7, weekly = 4, monthly = 12 }} to its [[source]])",
            spec.name
        );
        note(why.clone());
        report.prune_skipped = Some(why);
        return Ok(report);
    };
    let id = state.start(Job::Prune, &spec.name, Timestamp::now())?;
    let pruned = (|| {
        let snapshots = list::list(repo, Some(&spec.name), note)?;
        let popts = prune::PruneOptions {
            keep,
            tz: spec.policy.tz.clone(),
            dry_run: false,
            // A drill that could not run (no server programs, no disk) proves nothing either.
            failing: report
                .drill_failure
                .as_ref()
                .map(|e| format!("the drill of the new snapshot failed: {}", e.message())),
            grace: prune::DEFAULT_GRACE,
        };
        prune::run(repo, &spec.name, &snapshots, &popts, Timestamp::now())
    })();
    match pruned {
        Ok(p) => {
            state.finish(id, Timestamp::now(), &Outcome::default())?;
            report.prune = Some(p);
        }
        Err(e) => {
            state.finish(id, Timestamp::now(), &Outcome::failed(&e))?;
            report.prune_error = Some(e.message().to_string());
            report.prune_failure = Some(e);
        }
    }
    Ok(report)
}

/// Why a source's newest backups count as failing, from its history: its last backup that ran
/// to an end (a shutdown's interrupted one does not count) failed.
pub fn failing(state: &State, source: &str) -> Result<Option<String>> {
    Ok(state
        .last_attempt(source, Job::Backup)?
        .filter(|r| r.result == RunResult::Failed)
        .map(|r| {
            format!(
                "the last backup, at {}, failed: {}",
                r.started,
                r.error.unwrap_or_default()
            )
        }))
}

/// The report of a job whose backup could not even start (no repository).
pub fn failed_report(spec: &SourceSpec, e: Error) -> JobReport {
    JobReport {
        source: spec.name.clone(),
        started: Timestamp::now(),
        snapshot: None,
        backup: Step {
            seconds: 0.0,
            error: Some(e.message().to_string()),
        },
        drill: None,
        restore_seconds: None,
        prune: None,
        prune_error: None,
        prune_skipped: None,
        backup_failure: Some(e),
        drill_failure: None,
        prune_failure: None,
    }
}
