/*!
Jobs asked for from outside the schedule: the dashboard's "back up now" and "drill now". A
request is queued here and the scheduler loop starts it on its next tick, in the source's own slot,
so the rule stays one job per source at a time: a source whose job is running (or already has a
request waiting) refuses a new one instead of queueing it behind.

The scheduler also counts finished jobs here ([`Control::generation`]), so readers that cache the
repository (the dashboard) know when to read it again.
*/

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use jiff::Timestamp;
use tracing::{error, info, warn};

use super::metrics;
use crate::alerts::{Dispatcher, Event};
use crate::config::{Settings, SourceSpec};
use crate::error::{ErrorKind, Result};
use crate::state::{Job, Outcome, State};

/// What is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// The source's whole job now: backup, drill, prune.
    Backup,
    /// A drill of the source's newest snapshot.
    Drill,
}

impl Action {
    pub fn label(self) -> &'static str {
        match self {
            Action::Backup => "backup",
            Action::Drill => "drill",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "backup" => Some(Action::Backup),
            "drill" => Some(Action::Drill),
            _ => None,
        }
    }
}

/// How a request was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requested {
    /// Queued: it starts within a second.
    Queued,
    /// A job of the source is running or already asked for: nothing was queued.
    Busy,
    /// The daemon does not run this source (not configured, or no schedule).
    NotRun,
}

#[derive(Debug, Default)]
struct Inner {
    /// The sources the daemon runs (those with a backup schedule).
    sources: BTreeSet<String>,
    running: BTreeSet<String>,
    queue: Vec<(String, Action)>,
}

/// The queue between the dashboard and the scheduler.
#[derive(Debug, Default)]
pub struct Control {
    inner: Mutex<Inner>,
    generation: AtomicU64,
}

impl Control {
    pub fn new(sources: impl IntoIterator<Item = String>) -> Control {
        Control {
            inner: Mutex::new(Inner {
                sources: sources.into_iter().collect(),
                ..Default::default()
            }),
            generation: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the daemon runs `source`'s jobs (so actions on it can be asked for).
    pub fn runs(&self, source: &str) -> bool {
        self.lock().sources.contains(source)
    }

    /// Whether a job of `source` is running or queued.
    pub fn busy(&self, source: &str) -> bool {
        let i = self.lock();
        i.running.contains(source) || i.queue.iter().any(|(s, _)| s == source)
    }

    /// Asks for `action` on `source`.
    pub fn request(&self, source: &str, action: Action) -> Requested {
        let mut i = self.lock();
        if !i.sources.contains(source) {
            return Requested::NotRun;
        }
        if i.running.contains(source) || i.queue.iter().any(|(s, _)| s == source) {
            return Requested::Busy;
        }
        i.queue.push((source.to_string(), action));
        info!(
            source,
            action = action.label(),
            "requested from the dashboard"
        );
        Requested::Queued
    }

    /// The requests waiting, oldest first (the scheduler takes them).
    pub(super) fn take(&self) -> Vec<(String, Action)> {
        std::mem::take(&mut self.lock().queue)
    }

    pub(super) fn set_running(&self, source: &str, running: bool) {
        let mut i = self.lock();
        if running {
            i.running.insert(source.to_string());
        } else {
            i.running.remove(source);
        }
    }

    /// Counts jobs that finished (the repository may have changed).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub(super) fn finished(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

/// Drills the newest snapshot of `spec`, under the source's lock like every job: recorded in the
/// history as a drill, alerted once per change (`drill_failed`), and counted in the metrics.
pub(super) fn drill_newest(
    settings: &Settings,
    spec: &SourceSpec,
    state: &State,
    dispatcher: &Dispatcher,
    metrics: &metrics::Shared,
    note: &mut dyn FnMut(String),
) -> Result<()> {
    let name = spec.name.as_str();
    let _lock = crate::lock::acquire(
        &settings.lock_dir(&mut |w| warn!(source = name, "{w}"))?,
        &settings.repository_identity()?,
        name,
        "drill",
        crate::lock::Wait::Yes,
        note,
    )?;
    let id = state.start(Job::Drill, name, Timestamp::now())?;
    let t = std::time::Instant::now();
    let opts = crate::ops::drill::DrillOptions {
        pg_bin_dirs: settings.pg_bin_dirs().to_vec(),
        ..Default::default()
    };
    let ran = settings.open_repository(note).and_then(|repo| {
        let entry = repo.resolve("latest", Some(name))?;
        let o = crate::ops::drill::run(&repo, &entry, &opts, note)?;
        Ok((entry.id.to_string(), o))
    });
    let seconds = t.elapsed().as_secs_f64();
    let (snapshot, failure, restore) = match ran {
        Ok((snap, o)) => (Some(snap), o.failure, Some(o.record.timings.total)),
        Err(e) => (None, Some(e), None),
    };
    let mut o = failure.as_ref().map(Outcome::failed).unwrap_or_default();
    o.snapshot = snapshot.clone();
    o.restore_seconds = restore;
    state.finish(id, Timestamp::now(), &o)?;
    if failure
        .as_ref()
        .is_some_and(|e| e.kind() == ErrorKind::Interrupted)
    {
        info!(source = name, "drill interrupted");
        return Ok(());
    }
    let snap = snapshot.unwrap_or_default();
    let (firing, message) = match &failure {
        Some(e) => {
            error!(source = name, error = %e.message(), "drill failed");
            (
                true,
                format!("the restore drill of {name} {snap} failed: {}", e.message()),
            )
        }
        None => {
            info!(source = name, seconds, restore_seconds = ?restore, "drill passed");
            (false, format!("restore drills of {name} pass again"))
        }
    };
    super::alert(
        state,
        dispatcher,
        name,
        Event::DrillFailed,
        firing,
        &message,
    )?;
    if let (None, Some(secs)) = (&failure, restore) {
        super::objectives::after_drill(spec, state, dispatcher, secs)?;
    }
    let mut m = metrics.lock().unwrap_or_else(|p| p.into_inner());
    let s = m.sources.entry(name.to_string()).or_default();
    s.drill_seconds = Some(seconds);
    s.drill_ok = Some(failure.is_none());
    if failure.is_none() && restore.is_some() {
        s.tested_restore_seconds = restore;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_request_per_source_and_only_for_sources_the_daemon_runs() {
        let c = Control::new(["a".to_string(), "b".to_string()]);
        assert_eq!(c.request("x", Action::Backup), Requested::NotRun);
        assert_eq!(c.request("a", Action::Backup), Requested::Queued);
        assert_eq!(c.request("a", Action::Drill), Requested::Busy);
        assert!(c.busy("a") && !c.busy("b"));
        assert_eq!(c.take(), [("a".to_string(), Action::Backup)]);
        c.set_running("a", true);
        assert_eq!(c.request("a", Action::Drill), Requested::Busy);
        c.set_running("a", false);
        assert_eq!(c.request("a", Action::Drill), Requested::Queued);
        assert_eq!(c.generation(), 0);
        c.finished();
        assert_eq!(c.generation(), 1);
    }
}
