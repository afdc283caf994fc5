/*!
Where the state is (a file, or a PostgreSQL database shared by a fleet) and this `serve` as a
worker: its name, labels, lease and how many jobs it runs at once.
*/

use super::{Secret, Settings};
use crate::error::{Error, Result};

/// The shared state database's URL (fleets), before `[state] url`.
pub const STATE_URL_ENV: &str = "OFFSITEDB_STATE_URL";
/// This worker's name, before `[worker] name`.
pub const WORKER_NAME_ENV: &str = "OFFSITEDB_WORKER_NAME";

/// `serve` as a worker: its name, labels, lease and how many jobs it runs at once.
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    pub name: String,
    pub labels: Vec<String>,
    pub lease: std::time::Duration,
    pub jobs: usize,
}

impl WorkerSettings {
    /// Whether this worker has every label in `requires`.
    pub fn offers(&self, requires: &[String]) -> bool {
        requires.iter().all(|r| self.labels.contains(r))
    }
}

/// This machine's name (`/proc/sys/kernel/hostname`), else "localhost".
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

impl Settings {
    /// Where the state is: `OFFSITEDB_STATE_URL`, else `[state] url` (a PostgreSQL database
    /// shared by a fleet), else the file of [`Settings::state_path`].
    pub fn state_at(&self) -> Result<crate::state::StateAt> {
        let url = std::env::var(STATE_URL_ENV)
            .ok()
            .filter(|v| !v.is_empty())
            .map(Secret::new)
            .or_else(|| self.file.state.as_ref().and_then(|s| s.url.clone()))
            .filter(|u| !u.expose().is_empty());
        match url {
            Some(u) => {
                crate::postgres::conninfo::ConnInfo::parse(u.expose())
                    .map_err(|e| e.context("[state] url"))?;
                Ok(crate::state::StateAt::Postgres(u))
            }
            None => Ok(crate::state::StateAt::File(self.state_path()?)),
        }
    }

    /// This process as a fleet worker: `[worker]`, with `OFFSITEDB_WORKER_NAME` first.
    pub fn worker(&self) -> Result<WorkerSettings> {
        let w = self.file.worker.as_ref();
        let name = std::env::var(WORKER_NAME_ENV)
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| w.and_then(|w| w.name.clone()))
            .unwrap_or_else(|| {
                // Alone on a state file: the host (a restart takes its jobs back at once). On a
                // shared state, with the process id: two workers on one host stay two.
                if self.state_at().is_ok_and(|a| a.is_shared()) {
                    format!("{}-{}", host_name(), std::process::id())
                } else {
                    host_name()
                }
            });
        if name.trim().is_empty() || name.len() > 200 {
            return Err(Error::config(format!(
                "[worker] name {name:?} is not a usable name"
            )));
        }
        let text = w.and_then(|w| w.lease.as_deref());
        let lease = match text {
            Some(t) => crate::schedule::parse_duration(t)
                .map_err(|e| Error::config(format!("[worker] lease: {e}")))?,
            None => std::time::Duration::from_secs(30),
        };
        if lease < std::time::Duration::from_secs(3) {
            return Err(Error::config(format!(
                "[worker] lease {:?} is too short",
                text.unwrap_or_default()
            ))
            .with_hint("use 3s or more (renewed every third of it); the default is 30s"));
        }
        let jobs = w.and_then(|w| w.jobs).unwrap_or(8);
        if jobs == 0 {
            return Err(Error::config("[worker] jobs must be 1 or more"));
        }
        Ok(WorkerSettings {
            name,
            labels: w.map(|w| w.labels.clone()).unwrap_or_default(),
            lease,
            jobs,
        })
    }
}
