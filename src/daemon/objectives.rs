/*!
The daemon measures each source's promises: after every drill, its tested restore time against
`rto`; on every tick, the time since the last good backup against `rpo` (a backup is good once its
drill passed; with drills off, once it is written). Each alerts once when it starts missing and
once when it is met again, like every other alert.
*/

use std::time::Duration;

use jiff::Timestamp;

use crate::alerts::{Dispatcher, Event};
use crate::catalog::SnapshotId;
use crate::config::SourceSpec;
use crate::error::Result;
use crate::state::{Job, RunResult, State};
use crate::units::spoken;

/// After a drill that passed with tested restore time `seconds`.
pub(crate) fn after_drill(
    spec: &SourceSpec,
    state: &State,
    dispatcher: &Dispatcher,
    seconds: f64,
) -> Result<()> {
    let Some(rto) = spec.policy.objectives.rto else {
        return Ok(());
    };
    let name = spec.name.as_str();
    let took = spoken(Duration::from_secs_f64(seconds.max(0.0)));
    let missed = seconds > rto.as_secs_f64();
    let message = if missed {
        format!(
            "the restore drill of {name} took {took}, over the recovery time objective of {}",
            spoken(rto)
        )
    } else {
        format!(
            "the restore drill of {name} took {took}, within the objective of {}",
            spoken(rto)
        )
    };
    super::alert(
        state,
        dispatcher,
        name,
        Event::RestoreTimeObjectiveMissed,
        missed,
        &message,
    )
}

/// The newest good backup's time, from the history.
pub(super) fn last_good(spec: &SourceSpec, state: &State) -> Result<Option<Timestamp>> {
    let name = spec.name.as_str();
    if spec.policy.drill {
        Ok(state
            .last(name, Job::Drill, Some(RunResult::Ok))?
            .and_then(|r| r.snapshot)
            .and_then(|id| SnapshotId::parse(&id).ok())
            .map(|id| id.time()))
    } else {
        Ok(state
            .last(name, Job::Backup, Some(RunResult::Ok))?
            .map(|r| r.started))
    }
}

/// On every tick: the time since the last good backup (or since the daemon started, when there
/// is none) against `rpo`. Not while the source's job runs: the backup it is taking (and
/// drilling) is the next good one, and a job that takes a while must not flap the alert every
/// day when `rpo` equals the schedule.
pub(super) fn recovery_point(
    spec: &SourceSpec,
    state: &State,
    dispatcher: &Dispatcher,
    started: Timestamp,
    now: Timestamp,
    job_running: bool,
) -> Result<()> {
    let Some(rpo) = spec.policy.objectives.rpo else {
        return Ok(());
    };
    if job_running {
        return Ok(());
    }
    let name = spec.name.as_str();
    let last = last_good(spec, state)?;
    let age = now
        .duration_since(last.unwrap_or(started))
        .as_secs_f64()
        .max(0.0);
    let missed = age > rpo.as_secs_f64();
    let message = match (missed, last) {
        (true, Some(t)) => format!(
            "the newest good backup of {name} is from {t}, {} ago: over the recovery point objective of {}",
            spoken(Duration::from_secs_f64(age)),
            spoken(rpo)
        ),
        (true, None) => format!(
            "{name} has no good backup (drilled and passed) for {}: over the recovery point objective of {}",
            spoken(Duration::from_secs_f64(age)),
            spoken(rpo)
        ),
        (false, _) => format!(
            "{name} has a good backup within its recovery point objective of {}",
            spoken(rpo)
        ),
    };
    super::alert(
        state,
        dispatcher,
        name,
        Event::RecoveryPointObjectiveMissed,
        missed,
        &message,
    )
}
