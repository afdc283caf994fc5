/*!
The daemon's state: the history of runs, where each alert stands, the newest log heads seen, and
(for fleets) the workers and the leases on due jobs.

Two places hold it, behind one trait ([`Store`]): an embedded SQLite file (`state.db` in the state
directory, or `[state] path`), the default; or a PostgreSQL database shared by several `serve`
workers (`[state] url`, or `OFFSITEDB_STATE_URL`). Both have the same tables, the same versioned
migrations, and are run by the same tests.

The repository stays the source of truth for snapshots: the state only remembers what happened
(runs, their errors and durations, which alerts fired, who runs what). Losing it loses no backup;
`list`, `restore` and `drill` never read it.

Leases ([`Lease`]): every scheduled job (a source's backup job, its base backup, its WAL stream,
the fleet's own duties) is a row with its next due time. A worker takes a due row by writing its
name, a new token and an expiry into it (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so workers never
wait on each other), renews the expiry while the job runs, and releases it with the next due time.
A worker that dies stops renewing; once the expiry passes another worker takes the row, runs the
job again from the start, and marks the dead worker's runs interrupted. The token fences a worker
that lost its lease: its renewals and its release change nothing.
*/

mod postgres;
mod sqlite;

use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use crate::catalog::log::{Head, HeadMemory};
use crate::config::Secret;
use crate::error::{Error, Result};

/// The schema version this build writes (both stores): 1 runs and alerts, 2 log heads, 3 fleets
/// (the worker and due time of each run, leases, workers).
pub const SCHEMA_VERSION: u32 = 3;

/// What a step of a job does (its name in the history and in `history --json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Job {
    Backup,
    Drill,
    Prune,
    /// `backup-push`: a base backup (its id in `snapshot`).
    BaseBackup,
    /// `drill --pitr`: a point-in-time recovery drill of a base backup (its id in `snapshot`,
    /// the tested restore time in `restore_seconds`).
    PitrDrill,
    /// `serve`'s scheduled `verify` of the whole repository (source `*`).
    Verify,
}

/// How a step stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunResult {
    Running,
    Ok,
    Failed,
    /// The process ended while it ran, or a signal stopped it.
    Interrupted,
}

macro_rules! text_enum {
    ($t:ty { $($v:ident = $s:literal),* $(,)? }) => {
        impl $t {
            pub fn as_str(self) -> &'static str {
                match self { $(<$t>::$v => $s),* }
            }
            pub(crate) fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some(<$t>::$v),)* _ => None }
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(Job {
    Backup = "backup",
    Drill = "drill",
    Prune = "prune",
    BaseBackup = "base_backup",
    PitrDrill = "pitr_drill",
    Verify = "verify"
});
text_enum!(RunResult {
    Running = "running",
    Ok = "ok",
    Failed = "failed",
    Interrupted = "interrupted"
});

/// One step of a job: a backup, a drill or a prune.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Run {
    pub id: i64,
    pub job: Job,
    pub source: String,
    pub started: Timestamp,
    pub finished: Option<Timestamp>,
    pub result: RunResult,
    pub error: Option<String>,
    pub snapshot: Option<String>,
    pub plain_bytes: Option<u64>,
    pub stored_bytes: Option<u64>,
    pub seconds: Option<f64>,
    /// For a drill: the tested restore time.
    pub restore_seconds: Option<f64>,
    /// The worker that ran it (`serve`'s worker name; none for a command typed by hand).
    pub worker: Option<String>,
    /// The scheduled time this run was for (none for a run asked for by hand).
    pub due: Option<Timestamp>,
}

/// How a step ended.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub error: Option<String>,
    /// Stopped by a signal (a shutdown), not failed: recorded as "interrupted".
    pub interrupted: bool,
    pub snapshot: Option<String>,
    pub plain_bytes: Option<u64>,
    pub stored_bytes: Option<u64>,
    pub restore_seconds: Option<f64>,
}

impl Outcome {
    /// A step that ended with `e` (a signal's interruption is not a failure).
    pub fn failed(e: &Error) -> Outcome {
        Outcome {
            interrupted: e.kind() == crate::error::ErrorKind::Interrupted,
            error: Some(match e.hint() {
                Some(h) => format!("{} (hint: {h})", e.message()),
                None => e.message().to_string(),
            }),
            ..Default::default()
        }
    }

    fn result(&self) -> RunResult {
        match (self.interrupted, self.error.is_some()) {
            (true, _) => RunResult::Interrupted,
            (false, true) => RunResult::Failed,
            (false, false) => RunResult::Ok,
        }
    }
}

/// Where an alert stands for one source and event.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertState {
    pub firing: bool,
    pub since: Timestamp,
    pub message: Option<String>,
}

/// Who writes the runs a [`State`] starts: the worker, and the due time they are for.
#[derive(Clone, Debug, Default)]
pub struct RunTag {
    pub worker: Option<String>,
    pub due: Option<Timestamp>,
}

/// A scheduled job's row, as [`Store::plan`] writes it.
#[derive(Clone, Debug)]
pub struct Planned {
    /// `backup:app`, `base:app`, `stream:app`, `fleet:duties`.
    pub name: String,
    pub source: String,
    pub kind: String,
    /// The schedule's text: when it changes, the row's due time is replaced by `due`.
    pub schedule: String,
    pub due: Timestamp,
    /// Labels a worker needs to take it.
    pub requires: Vec<String>,
}

/// A job this worker holds: renew it while it runs, release it with the next due time.
#[derive(Clone, Debug, PartialEq)]
pub struct Lease {
    pub name: String,
    pub source: String,
    pub kind: String,
    pub due: Timestamp,
    pub token: i64,
    /// Asked for by hand (`backup`, `drill`): run that instead of the schedule's job, and keep
    /// the scheduled due time.
    pub action: Option<String>,
    /// The worker whose lease expired, when this one was taken over from it.
    pub taken_from: Option<String>,
}

/// A worker of the fleet, as its heartbeats describe it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WorkerRow {
    pub name: String,
    pub host: String,
    pub pid: u32,
    pub version: String,
    pub labels: Vec<String>,
    pub started: Timestamp,
    pub seen: Timestamp,
    /// The jobs it holds (row names).
    pub running: Vec<String>,
}

/// A scheduled job's row, as `offsitedb fleet` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobRow {
    pub name: String,
    pub source: String,
    pub kind: String,
    pub schedule: String,
    pub due: Timestamp,
    pub requires: Vec<String>,
    pub worker: Option<String>,
    pub expires: Option<Timestamp>,
    pub action: Option<String>,
}

/// What holds the state: one implementation per place, the same behaviour (the tests run both).
/// Times the store compares for leases come from its own clock where it has one (PostgreSQL's
/// `now()`), so that workers' clocks do not decide who holds a job.
pub trait Store: Send {
    /// "state file /var/lib/offsitedb/state.db", "state database postgres://u@h/db" (redacted).
    fn describe(&self) -> String;

    fn start(&self, job: Job, source: &str, at: Timestamp, tag: &RunTag) -> Result<i64>;
    fn finish(&self, id: i64, at: Timestamp, o: &Outcome) -> Result<()>;
    /// Marks runs left "running" as interrupted: every one (`worker` none: this machine's file
    /// after a restart), or only those of `worker`.
    fn close_interrupted(&self, worker: Option<&str>, why: &str) -> Result<usize>;
    /// The newest `limit` steps, newest first.
    fn history(&self, source: Option<&str>, limit: usize) -> Result<Vec<Run>>;
    /// The newest finished step of `job` for `source`, with `result` if given.
    fn last(&self, source: &str, job: Job, result: Option<RunResult>) -> Result<Option<Run>>;
    /// The newest step that ran to an end of its own (ok or failed).
    fn last_attempt(&self, source: &str, job: Job) -> Result<Option<Run>>;

    fn alert(&self, source: &str, event: &str) -> Result<Option<AlertState>>;
    /// Sets whether `event` fires, at once for every worker: returns the state before when it
    /// changed (`Some(None)` when there was none), `None` when it already was so. Two workers
    /// seeing the same change: one gets it.
    fn switch_alert(
        &self,
        source: &str,
        event: &str,
        firing: bool,
        message: &str,
        at: Timestamp,
    ) -> Result<Option<Option<AlertState>>>;

    fn log_head(&self, repo: &str, source: &str) -> Result<Option<(Head, Timestamp)>>;
    fn set_log_head(&self, repo: &str, source: &str, head: &Head, force: bool) -> Result<()>;
    fn log_sources(&self, repo: &str) -> Result<Vec<String>>;

    /// Records this worker's heartbeat.
    fn heartbeat(&self, w: &WorkerRow) -> Result<()>;
    fn workers(&self) -> Result<Vec<WorkerRow>>;
    /// Takes a stopping worker off the list.
    fn leave(&self, name: &str) -> Result<()>;
    /// Forgets workers not heard from for `silent` (by the store's clock), and marks their
    /// running runs interrupted.
    fn reap(&self, silent: Duration) -> Result<usize>;
    /// Adds the job's row if missing; otherwise updates what it requires, and its due time when
    /// its schedule changed.
    fn plan(&self, p: &Planned) -> Result<()>;
    /// Takes up to `limit` of the rows named in `names` that are due at `now` and free (never
    /// taken, released, or their lease expired), for `lease`. A row taken over from another
    /// worker says from whom; that worker's running steps of the row's kind are interrupted.
    fn take(
        &self,
        worker: &str,
        names: &[String],
        now: Timestamp,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Lease>>;
    /// Extends the lease; false when this worker does not hold it any more.
    fn renew(&self, worker: &str, l: &Lease, lease: Duration) -> Result<bool>;
    /// Frees every row whoever holds it: for `serve` alone on a state file, at its start (the
    /// holders were this machine's earlier daemons).
    fn free_leases(&self) -> Result<usize>;
    /// Frees the row with its next due time.
    fn release(&self, worker: &str, l: &Lease, next_due: Timestamp) -> Result<()>;
    /// Asks for `action` on the row now (the dashboard's buttons); false when it is held.
    fn request(&self, name: &str, action: &str, now: Timestamp) -> Result<bool>;
    fn jobs(&self) -> Result<Vec<JobRow>>;
}

/// Where the state is: a file, or a PostgreSQL database.
#[derive(Clone, Debug)]
pub enum StateAt {
    File(PathBuf),
    /// A connection URL (it may hold a password).
    Postgres(Secret),
}

impl StateAt {
    pub fn open(&self) -> Result<State> {
        let store: Box<dyn Store> = match self {
            StateAt::File(p) => Box::new(sqlite::SqliteStore::open(p)?),
            StateAt::Postgres(url) => Box::new(postgres::PgStore::open(url)?),
        };
        Ok(State {
            store,
            tag: RunTag::default(),
        })
    }

    /// Opens the state migrated up to `version` only: how the tests make a state an older
    /// offsitedb left.
    #[doc(hidden)]
    pub fn open_at_version(&self, version: u32) -> Result<State> {
        let store: Box<dyn Store> = match self {
            StateAt::File(p) => {
                Box::new(sqlite::SqliteStore::open_at_version(p, version as usize)?)
            }
            StateAt::Postgres(url) => {
                Box::new(postgres::PgStore::open_at_version(url, version as usize)?)
            }
        };
        Ok(State {
            store,
            tag: RunTag::default(),
        })
    }

    /// Whether there is a state to read (a file may not exist yet; a database is asked).
    pub fn exists(&self) -> bool {
        match self {
            StateAt::File(p) => p.exists(),
            StateAt::Postgres(_) => true,
        }
    }

    pub fn is_shared(&self) -> bool {
        matches!(self, StateAt::Postgres(_))
    }

    /// For messages: the file's path, or the redacted URL.
    pub fn describe(&self) -> String {
        match self {
            StateAt::File(p) => format!("state file {}", p.display()),
            StateAt::Postgres(url) => format!("state database {}", postgres::redact(url)),
        }
    }
}

impl From<&Path> for StateAt {
    fn from(p: &Path) -> Self {
        StateAt::File(p.to_path_buf())
    }
}

impl From<PathBuf> for StateAt {
    fn from(p: PathBuf) -> Self {
        StateAt::File(p)
    }
}

/// An open state: the store, and the tag it writes on the runs it starts.
pub struct State {
    store: Box<dyn Store>,
    tag: RunTag,
}

impl std::ops::Deref for State {
    type Target = dyn Store;
    fn deref(&self) -> &Self::Target {
        &*self.store
    }
}

impl State {
    /// Opens (creating it and its directory if needed) the state file at `path`.
    pub fn open(path: &Path) -> Result<State> {
        StateAt::File(path.to_path_buf()).open()
    }

    /// Runs started from now on carry `tag` (the worker and the due time).
    pub fn tagged(mut self, tag: RunTag) -> State {
        self.tag = tag;
        self
    }

    /// Records that a step started; returns its id for [`Store::finish`].
    pub fn start(&self, job: Job, source: &str, at: Timestamp) -> Result<i64> {
        self.store.start(job, source, at, &self.tag)
    }
}

/// The state as the repository's [`HeadMemory`]: opened for each call, so that it can be
/// shared between threads and processes.
pub struct StateMemory(pub StateAt);

impl HeadMemory for StateMemory {
    fn recall(&self, repo: &str, source: &str) -> Result<Option<Head>> {
        Ok(self.0.open()?.log_head(repo, source)?.map(|(h, _)| h))
    }

    fn remember(&self, repo: &str, source: &str, head: &Head) -> Result<()> {
        self.0.open()?.set_log_head(repo, source, head, false)
    }

    fn accept(&self, repo: &str, source: &str, head: &Head) -> Result<()> {
        self.0.open()?.set_log_head(repo, source, head, true)
    }

    fn sources(&self, repo: &str) -> Result<Vec<String>> {
        self.0.open()?.log_sources(repo)
    }
}

/// The steps (run jobs) a scheduled row of `kind` runs: what a takeover interrupts.
pub(crate) fn steps_of(kind: &str) -> Vec<String> {
    let jobs: &[Job] = match kind {
        "backup" => &[Job::Backup, Job::Drill, Job::Prune],
        "base" => &[Job::BaseBackup, Job::PitrDrill, Job::Prune],
        _ => &[],
    };
    jobs.iter().map(|j| j.as_str().to_string()).collect()
}

/// Wall-clock seconds from `started` to `at`; a clock stepped back mid-run must not make a
/// negative duration.
fn seconds_between(started: Timestamp, at: Timestamp) -> f64 {
    at.duration_since(started).as_secs_f64().max(0.0)
}

#[cfg(test)]
mod tests;
