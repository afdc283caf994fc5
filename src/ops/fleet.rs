/*!
`offsitedb fleet`: the workers and every scheduled job, as the shared state records them. Read
only; it answers from the state alone (no worker needs to be up), so it is what an operator looks
at when a worker is gone.

A worker is `alive` while its last heartbeat (sent every 2 seconds) is younger than
[`SILENT_AFTER`]; the others forget it, and mark its runs interrupted, after three leases. A job
is `running` on the worker whose lease on it has not expired.
*/

use jiff::Timestamp;
use serde::Serialize;

use crate::error::Result;
use crate::state::{Job, JobRow, Run, State, WorkerRow};

#[derive(Clone, Debug, Serialize)]
pub struct Fleet {
    /// Where the state is (a redacted URL, or the file).
    pub state: String,
    pub at: Timestamp,
    pub workers: Vec<Worker>,
    pub jobs: Vec<Scheduled>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Worker {
    #[serde(flatten)]
    pub row: WorkerRow,
    pub alive: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Scheduled {
    #[serde(flatten)]
    pub row: JobRow,
    /// The worker whose lease on it runs now.
    pub running_on: Option<String>,
    /// The last run of this job that ended (ok or failed).
    pub last: Option<Run>,
}

/// A worker not heard from for this long is shown silent.
pub const SILENT_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// The fleet as `state` records it at `now`.
pub fn view(state: &State, now: Timestamp) -> Result<Fleet> {
    let silent = SILENT_AFTER;
    let workers = state
        .workers()?
        .into_iter()
        .map(|row| Worker {
            alive: now.duration_since(row.seen).as_secs_f64() < silent.as_secs_f64(),
            row,
        })
        .collect();
    let mut jobs = Vec::new();
    for row in state.jobs()? {
        let last = match row.kind.as_str() {
            "backup" => state.last_attempt(&row.source, Job::Backup)?,
            "base" => state.last_attempt(&row.source, Job::BaseBackup)?,
            _ => None,
        };
        let running_on = row
            .worker
            .clone()
            .filter(|_| row.expires.is_some_and(|e| e >= now));
        jobs.push(Scheduled {
            row,
            running_on,
            last,
        });
    }
    Ok(Fleet {
        state: state.describe(),
        at: now,
        workers,
        jobs,
    })
}
