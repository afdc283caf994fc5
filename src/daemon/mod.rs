/*!
`offsitedb serve`: runs each source's job on its schedule, alerts when jobs fail and when backups
silently stop, and answers `/metrics`, `/healthz`, the dashboard and its API ([`crate::web`]).

- One job per source at a time: a job still running when the next one is due makes that one
  skipped (and logged), never queued behind it.
- A run missed while the daemon was down (the schedule came due after the last recorded backup)
  runs once at start.
- The dead man's switch is checked every second whether or not any job runs: no successful backup
  for longer than `stale_after` fires `no_recent_backup`, with the last success time.
- Base backups on `base_schedule`, each followed by a PITR drill ([`base`]); WAL streams for
  `wal = "stream"` sources, and the WAL archive's lag, slot and alerts ([`stream`]).
- SIGTERM / SIGINT: no new job starts, running jobs stop at their next buffer (an upload is
  aborted, so no partial snapshot becomes visible), and the daemon exits within
  [`SHUTDOWN_LIMIT`].

[`job_with_alerts`] is also what `offsitedb run SOURCE` runs: the same path, in the foreground.
*/

pub mod base;
pub mod control;
pub mod fleet;
pub mod metrics;
pub mod monthly;
pub(crate) mod objectives;
mod serve;
pub mod stream;
pub mod verify;

pub use serve::{backup_job, serve_with};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use jiff::Timestamp;
use tracing::{error, info, warn};

use crate::alerts::{self, Dispatcher, Event, Ping};
use crate::catalog::Repository;
use crate::config::{Settings, SourceSpec};
use crate::error::{Error, ErrorKind, Result};
use crate::ops::job::{self, JobOptions, JobReport};
use crate::state::{Job, RunResult, RunTag, State, StateAt};

/// How long running jobs get to stop after SIGTERM.
pub const SHUTDOWN_LIMIT: Duration = Duration::from_secs(60);

/// Default address of `/metrics`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Runs one job for `spec` with everything around it: heartbeat pings, the state file, alerts
/// on changes, and the metrics.
pub fn job_with_alerts(
    settings: &Settings,
    spec: &SourceSpec,
    state: &State,
    opts: &JobOptions,
    dispatcher: &Dispatcher,
    metrics: Option<&metrics::Shared>,
    note: &mut dyn FnMut(String),
) -> Result<JobReport> {
    // One run per source: a manual backup or prune of the same source finishes first. A busy
    // source with `Wait::No`, or a wait ended by a signal, is not a failed backup: nothing is
    // recorded or alerted. A lock that cannot be taken at all is a failed backup like any other.
    let locked = settings.repository_identity().and_then(|repo| {
        crate::lock::acquire(
            &settings.lock_dir(&mut |w| warn!(source = %spec.name, "{w}"))?,
            &repo,
            &spec.name,
            "job",
            opts.wait,
            note,
        )
    });
    let _lock = match locked {
        Ok(l) => l,
        Err(e) if matches!(e.kind(), ErrorKind::Busy | ErrorKind::Interrupted) => return Err(e),
        Err(e) => return finish_unstarted(settings, spec, state, dispatcher, metrics, e),
    };
    dispatcher.ping(Ping::Start, &spec.policy.heartbeat);
    info!(source = %spec.name, target = %spec.target(), "job started");
    let report = match settings.open_repository(note) {
        Ok(repo) => job::run(&repo, spec, state, opts, note)?,
        Err(e) => return finish_unstarted(settings, spec, state, dispatcher, metrics, e),
    };
    alert_and_count(settings, spec, state, dispatcher, metrics, report)
}

/// A job whose backup could not even start (no repository, no lock): recorded like a failed
/// backup, and alerted.
fn finish_unstarted(
    settings: &Settings,
    spec: &SourceSpec,
    state: &State,
    dispatcher: &Dispatcher,
    metrics: Option<&metrics::Shared>,
    e: Error,
) -> Result<JobReport> {
    let id = state.start(Job::Backup, &spec.name, Timestamp::now())?;
    state.finish(id, Timestamp::now(), &crate::state::Outcome::failed(&e))?;
    let report = job::failed_report(spec, e);
    alert_and_count(settings, spec, state, dispatcher, metrics, report)
}

/// Records whether `event` is `firing` for `name` and, when that is a change, logs it and sends
/// the alert (with the last successful backup): every alert of the daemon goes through here.
pub(crate) fn alert(
    state: &State,
    dispatcher: &Dispatcher,
    name: &str,
    event: Event,
    firing: bool,
    message: &str,
) -> Result<()> {
    if let Some(mut a) = alerts::transition(state, name, event, firing, message)? {
        a.last_success = state
            .last(name, Job::Backup, Some(RunResult::Ok))?
            .and_then(|r| r.finished);
        warn!(
            source = name,
            event = event.key(),
            status = a.status,
            "{}",
            a.message
        );
        dispatcher.send(a);
    }
    Ok(())
}

/// After a job: alerts on every change, the heartbeat, and the metrics.
fn alert_and_count(
    settings: &Settings,
    spec: &SourceSpec,
    state: &State,
    dispatcher: &Dispatcher,
    metrics: Option<&metrics::Shared>,
    report: JobReport,
) -> Result<JobReport> {
    let name = spec.name.as_str();
    if report
        .failure()
        .is_some_and(|e| e.kind() == ErrorKind::Interrupted)
    {
        // Our own shutdown is not a failure to alert about.
        info!(source = name, "job interrupted");
        return Ok(report);
    }
    // Alerts: one per change of each condition.
    let send = |event: Event, firing: bool, message: String| -> Result<()> {
        alert(state, dispatcher, name, event, firing, &message)
    };
    match &report.backup_failure {
        Some(e) => {
            let event = if e.kind() == ErrorKind::Storage {
                Event::StorageUnreachable
            } else {
                Event::BackupFailed
            };
            error!(source = name, error = %e.message(), "backup failed");
            send(
                event,
                true,
                format!("the backup of {name} failed: {}", e.message()),
            )?;
        }
        None => {
            let snap = report.snapshot.clone().unwrap_or_default();
            info!(source = name, snapshot = %snap, seconds = report.backup.seconds, "backup done");
            send(
                Event::BackupFailed,
                false,
                format!("backups of {name} succeed again ({snap})"),
            )?;
            send(
                Event::StorageUnreachable,
                false,
                format!("the repository is reachable again ({snap})"),
            )?;
            send(
                Event::NoRecentBackup,
                false,
                format!("{name} has a new backup ({snap})"),
            )?;
        }
    }
    if let Some(d) = &report.drill {
        match &report.drill_failure {
            Some(e) => {
                error!(source = name, error = %e.message(), "drill failed");
                send(
                    Event::DrillFailed,
                    true,
                    format!(
                        "the restore drill of {name} {} failed: {}",
                        report.snapshot.as_deref().unwrap_or(""),
                        e.message()
                    ),
                )?;
            }
            None => {
                info!(source = name, seconds = d.seconds, restore_seconds = ?report.restore_seconds, "drill passed");
                send(
                    Event::DrillFailed,
                    false,
                    format!("restore drills of {name} pass again"),
                )?;
                if let Some(secs) = report.restore_seconds {
                    objectives::after_drill(spec, state, dispatcher, secs)?;
                }
            }
        }
    }
    match &report.prune_failure {
        Some(e) => {
            error!(source = name, error = %e.message(), "prune failed");
            send(
                Event::PruneFailed,
                true,
                format!("pruning {name} failed: {}", e.message()),
            )?;
        }
        None if report.prune.is_some() => {
            if let Some(p) = &report.prune {
                info!(source = name, deleted = p.deleted.len(), held = ?p.plan.held, "prune done");
            }
            send(
                Event::PruneFailed,
                false,
                format!("pruning {name} works again"),
            )?;
        }
        None => {}
    }
    dispatcher.ping(
        if report.failure().is_some() {
            Ping::Fail
        } else {
            Ping::Success
        },
        &spec.policy.heartbeat,
    );

    if let Some(m) = metrics {
        let mut m = m.lock().unwrap_or_else(|p| p.into_inner());
        let s = m.sources.entry(spec.name.clone()).or_default();
        let ok = report.backup_failure.is_none();
        s.last_attempt = Some(report.started);
        s.last_attempt_ok = Some(ok);
        if ok {
            s.last_success = state
                .last(&spec.name, Job::Backup, Some(RunResult::Ok))?
                .and_then(|r| r.finished);
            s.backup_seconds = Some(report.backup.seconds);
        }
        if let Some(d) = &report.drill {
            s.drill_seconds = Some(d.seconds);
            s.drill_ok = Some(d.error.is_none());
            if report.restore_seconds.is_some() {
                s.tested_restore_seconds = report.restore_seconds;
            }
        }
        if report.failure().is_some() {
            s.jobs_failed += 1;
        } else {
            s.jobs_ok += 1;
        }
    }
    if let Some(m) = metrics {
        refresh_repository_metrics(settings, &spec.name, m);
    }
    Ok(report)
}

/// Snapshot count and bytes from the repository listing (no manifest reads).
fn refresh_repository_metrics(settings: &Settings, source: &str, m: &metrics::Shared) {
    let listed = settings.open_store().and_then(|store| {
        let repo = Repository::open(store, settings.master_key(&mut |_| {})?)?;
        repo.entries(Some(source))
    });
    match listed {
        Ok(entries) => {
            let mut m = m.lock().unwrap_or_else(|p| p.into_inner());
            let s = m.sources.entry(source.to_string()).or_default();
            s.snapshots = entries.len() as u64;
            s.stored_bytes = entries.iter().filter_map(|e| e.data_size).sum();
        }
        Err(e) => warn!(source, error = %e.message(), "cannot list the repository for metrics"),
    }
}

/// Asks a daemon started by [`serve_with`] or [`spawn`] to stop (as SIGTERM does): no new job
/// starts; running jobs finish (a signal also stops them at their next buffer).
#[derive(Clone, Debug, Default)]
pub struct Shutdown(Arc<std::sync::atomic::AtomicBool>);

impl Shutdown {
    pub fn trigger(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn requested(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst) || crate::interrupt::check().is_err()
    }
}

/// Runs until SIGTERM / SIGINT, answering `/metrics` on `listen` (else `[server] listen`, else
/// [`DEFAULT_LISTEN`]).
pub fn serve(settings: Settings, listen: Option<String>) -> Result<()> {
    let listen = listen
        .or_else(|| settings.file.server.as_ref().and_then(|s| s.listen.clone()))
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let listener = metrics::bind(&listen)?;
    serve_with(settings, listener, Shutdown::default())
}

/// A daemon running on a thread of this process (for tests, and embedding).
pub struct Running {
    pub addr: std::net::SocketAddr,
    shutdown: Shutdown,
    thread: JoinHandle<Result<()>>,
}

impl Running {
    /// Stops it and waits for it (at most [`SHUTDOWN_LIMIT`] for running jobs).
    pub fn stop(self) -> Result<()> {
        self.shutdown.trigger();
        self.thread
            .join()
            .map_err(|_| Error::internal("the daemon's thread panicked"))?
    }
}

/// Starts [`serve_with`] on a thread, on `listener` (bind port 0 to let the system pick).
pub fn spawn(settings: Settings, listener: std::net::TcpListener) -> Result<Running> {
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io(format!("cannot read the listening address: {e}")))?;
    let shutdown = Shutdown::default();
    let s = shutdown.clone();
    let thread = std::thread::Builder::new()
        .name("daemon".into())
        .spawn(move || serve_with(settings, listener, s))
        .map_err(|e| Error::internal(format!("cannot start the daemon's thread: {e}")))?;
    Ok(Running {
        addr,
        shutdown,
        thread,
    })
}

/// `t` plus a random delay below `jitter`.
fn jittered(t: Timestamp, jitter: Duration) -> Timestamp {
    if jitter.is_zero() {
        return t;
    }
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    let ms = u64::from_le_bytes(b) % (jitter.as_millis() as u64).max(1);
    t.checked_add(Duration::from_millis(ms)).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_its_bound() {
        let t: Timestamp = "2026-11-21T03:00:00Z".parse().unwrap();
        assert_eq!(jittered(t, Duration::ZERO), t);
        let j = Duration::from_secs(30);
        let runs: Vec<Timestamp> = (0..200).map(|_| jittered(t, j)).collect();
        assert!(runs.iter().all(|r| *r >= t && *r < t + j));
        // Spread out, not one fixed offset.
        let distinct: std::collections::BTreeSet<_> = runs.iter().collect();
        assert!(distinct.len() > 100, "{}", distinct.len());
    }
}
