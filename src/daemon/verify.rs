/*!
`serve` verifies the repository on `[repository] verify_schedule` (default weekly, without
reading data): on its own thread, so a long listing never delays a backup. Each source's result
is an alert with the one-per-change rule (`verify_failed`, resolved when a later verify is
clean). The run is in the history as job `verify` of source `*`; a daemon that never verified
on this machine verifies soon after it starts.
*/

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tracing::{error, info};

use crate::alerts::{Dispatcher, Event};
use crate::config::Settings;
use crate::error::Result;
use crate::ops::verify::{Severity, VerifyOptions};
use crate::state::{Job, Outcome, StateAt};

/// How often the daemon looks whether a verify is due.
const EVERY: Duration = Duration::from_secs(5);
/// The history's source name for repository-wide runs.
pub const ALL: &str = "*";

pub(super) struct Verifier {
    next: Instant,
    running: Option<JoinHandle<()>>,
}

impl Verifier {
    pub(super) fn new() -> Verifier {
        Verifier {
            next: Instant::now(),
            running: None,
        }
    }

    pub(super) fn tick(
        &mut self,
        settings: &Arc<Settings>,
        state_at: &StateAt,
        dispatcher: &Arc<Dispatcher>,
    ) {
        if self.running.as_ref().is_some_and(|h| h.is_finished()) {
            let _ = self.running.take().map(|h| h.join());
        }
        if self.running.is_some() || Instant::now() < self.next {
            return;
        }
        self.next = Instant::now() + EVERY;
        let due = (|| -> Result<bool> {
            let Some(schedule) = settings.verify_schedule()? else {
                return Ok(false);
            };
            let last = state_at.open()?.last_attempt(ALL, Job::Verify)?;
            Ok(last.is_none_or(|r| schedule.next_after(r.started) <= Timestamp::now()))
        })();
        match due {
            Ok(false) => return,
            Ok(true) => {}
            Err(e) => {
                error!(error = %e.message(), "cannot tell whether a verify is due");
                return;
            }
        }
        let (settings, state_at, dispatcher) =
            (settings.clone(), state_at.clone(), dispatcher.clone());
        self.running = std::thread::Builder::new()
            .name("verify".into())
            .spawn(move || {
                if let Err(e) = verify(&settings, &state_at, &dispatcher) {
                    error!(error = %e.message(), "cannot verify the repository");
                }
            })
            .ok();
    }

    /// Waits for a verify being run, until `deadline`.
    pub(super) fn finish(&mut self, deadline: Instant) {
        if let Some(h) = self.running.take() {
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
    }
}

fn verify(settings: &Settings, state_at: &StateAt, dispatcher: &Dispatcher) -> Result<()> {
    let state = state_at.open()?;
    let id = state.start(Job::Verify, ALL, Timestamp::now())?;
    info!("verify started");
    let opts = VerifyOptions {
        read_data: false,
        jobs: 4,
        accept: false,
    };
    let result = settings
        .open_repository(&mut |w| tracing::warn!("{w}"))
        .and_then(|repo| crate::ops::verify::run(&repo, None, &opts, &mut |_| {}));
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            state.finish(id, Timestamp::now(), &Outcome::failed(&e))?;
            return Err(e);
        }
    };
    for s in &report.sources {
        let errors: Vec<&str> = s
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .map(|f| f.message.as_str())
            .collect();
        let message = match errors.as_slice() {
            [] => format!("verify found {} whole", s.source),
            [one] => format!("verify: {one}"),
            [first, rest @ ..] => format!("verify: {first} (and {} more)", rest.len()),
        };
        super::alert(
            &state,
            dispatcher,
            &s.source,
            Event::VerifyFailed,
            !errors.is_empty(),
            &message,
        )?;
    }
    let outcome = match report.error() {
        Some(e) => Outcome::failed(&e),
        None => Outcome::default(),
    };
    state.finish(id, Timestamp::now(), &outcome)?;
    info!(
        errors = report.errors,
        warnings = report.warnings,
        "verify finished"
    );
    Ok(())
}
