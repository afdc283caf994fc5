/*!
`serve` as a worker: the leases it holds on due jobs, their renewal, and its heartbeat.

Every `serve` is a worker, alone on its state file or one of a fleet on a shared PostgreSQL
state: the same code either way. Each scheduled job is a row of the state ([`crate::state`]):
`backup:NAME` (the backup job, or a drill asked for from the dashboard), `base:NAME` (base
backups), `stream:NAME` (the WAL stream, held as long as it runs) and `fleet:duties` (what the
fleet does once, not once per worker: the dead man's switch, the recovery point objective, the
scheduled verify and the monthly report).

A worker renews what it holds every third of its lease. A renewal that finds the row taken by
another worker (this one was cut off for longer than the lease) drops it: a stream stops; a job
that is still running finishes, but its release changes nothing (the row's token moved on).
*/

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tracing::{error, info, warn};

use crate::config::WorkerSettings;
use crate::state::{Lease, State, WorkerRow};

/// The row of the fleet's own duties.
pub const DUTIES: &str = "fleet:duties";
/// How often a worker says it is alive.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// How often a worker looks for workers that stopped saying so.
const REAP_EVERY: Duration = Duration::from_secs(10);

struct Held {
    lease: Lease,
    renewed: Instant,
}

pub(super) struct Worker {
    pub settings: WorkerSettings,
    started: Timestamp,
    held: BTreeMap<String, Held>,
    beat: Option<Instant>,
    reaped: Option<Instant>,
}

impl Worker {
    pub fn new(settings: WorkerSettings) -> Worker {
        Worker {
            settings,
            started: Timestamp::now(),
            held: BTreeMap::new(),
            beat: None,
            reaped: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.settings.name
    }

    pub fn holds(&self, name: &str) -> bool {
        self.held.contains_key(name)
    }

    /// Takes up to `limit` due jobs among `names` that this worker does not hold. A state that
    /// cannot be reached takes nothing this time (said once per tick).
    pub fn take(&mut self, state: &State, names: &[String], limit: usize) -> Vec<Lease> {
        let free: Vec<String> = names
            .iter()
            .filter(|n| !self.held.contains_key(*n))
            .cloned()
            .collect();
        if free.is_empty() || limit == 0 {
            return Vec::new();
        }
        match state.take(
            self.name(),
            &free,
            Timestamp::now(),
            self.settings.lease,
            limit,
        ) {
            Ok(taken) => {
                for l in &taken {
                    if let Some(old) = &l.taken_from {
                        warn!(job = %l.name, from = %old, "took over a job whose worker stopped renewing its lease: running it again from the start");
                    }
                    self.held.insert(
                        l.name.clone(),
                        Held {
                            lease: l.clone(),
                            renewed: Instant::now(),
                        },
                    );
                }
                taken
            }
            Err(e) => {
                error!(error = %e.message(), "cannot take due jobs from the state");
                Vec::new()
            }
        }
    }

    /// Renews the leases due for it; returns the names this worker lost.
    pub fn renew(&mut self, state: &State) -> Vec<String> {
        let every = self.settings.lease / 3;
        let mut lost = Vec::new();
        for (name, h) in self.held.iter_mut() {
            if h.renewed.elapsed() < every {
                continue;
            }
            match state.renew(&self.settings.name, &h.lease, self.settings.lease) {
                Ok(true) => h.renewed = Instant::now(),
                Ok(false) => {
                    error!(job = %name, "lost this job's lease (another worker took it after it expired): it is that worker's now");
                    lost.push(name.clone());
                }
                // Kept: the lease may still be ours when the state answers again.
                Err(e) => error!(job = %name, error = %e.message(), "cannot renew a lease"),
            }
        }
        for n in &lost {
            self.held.remove(n);
        }
        lost
    }

    /// Frees `name` with its next due time.
    pub fn release(&mut self, state: &State, name: &str, next_due: Timestamp) {
        if let Some(h) = self.held.remove(name)
            && let Err(e) = state.release(&self.settings.name, &h.lease, next_due)
        {
            error!(job = %name, error = %e.message(), "cannot release a job: another worker takes it when its lease expires");
        }
    }

    pub fn lease(&self, name: &str) -> Option<&Lease> {
        self.held.get(name).map(|h| &h.lease)
    }

    /// The heartbeat (every few seconds, or now when `force`), and now and then the workers
    /// that stopped beating: their runs are marked interrupted and they are forgotten.
    pub fn beat(&mut self, state: &State, force: bool) {
        if force || self.beat.is_none_or(|t| t.elapsed() >= HEARTBEAT_EVERY) {
            self.beat = Some(Instant::now());
            let row = WorkerRow {
                name: self.settings.name.clone(),
                host: crate::config::host_name(),
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                labels: self.settings.labels.clone(),
                started: self.started,
                seen: Timestamp::now(),
                running: self.held.keys().cloned().collect(),
            };
            if let Err(e) = state.heartbeat(&row) {
                error!(error = %e.message(), "cannot record this worker's heartbeat");
            }
        }
        if self.reaped.is_none_or(|t| t.elapsed() >= REAP_EVERY) {
            self.reaped = Some(Instant::now());
            let silent = (self.settings.lease * 3).max(Duration::from_secs(30));
            match state.reap(silent) {
                Ok(0) => {}
                Ok(n) => info!(
                    workers = n,
                    "forgot workers silent for {}",
                    crate::units::duration(silent)
                ),
                Err(e) => error!(error = %e.message(), "cannot look for silent workers"),
            }
        }
    }
}
