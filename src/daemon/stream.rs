/*!
The WAL archive in the daemon: `wal = "stream"` sources stream for as long as `serve` runs
(`ops::wal_stream` on a thread of its own, restarted a minute after it gave up), and every source
with a WAL archive (`push` or `stream`) is watched: how old the newest archived WAL is and how far
the server is ahead of it, and for streams the replication slot's hold on the server's disk.

Alerts, one per change (`super::alert`): `wal_stream_failed` after three failed connections in a
row (resolved once it streams again), `wal_lagging` when the archive is further behind than
`wal_lag_alert` (5 minutes by default), `slot_retention` past `wal_slot_max`.

The lag of a `push` source is measured every minute from the archive and the server: its
archiver hands over whole segments, so it lags only when a segment the server finished is not
archived (then by the time since the newest archived one was uploaded).
*/

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tracing::{error, info, warn};

use super::{Shutdown, metrics};
use crate::alerts::{Dispatcher, Event};
use crate::config::{Settings, SourceSpec, WalMode};
use crate::error::Result;
use crate::ops::wal_stream::{self, Shared, StreamOptions};
use crate::state::State;

/// Failed connections in a row before `wal_stream_failed` fires.
const FAILURES_BEFORE_ALERT: u32 = 3;
/// How often the alerts are evaluated; a push source's archive is read every minute.
const CHECK_EVERY: Duration = Duration::from_secs(5);
const PUSH_EVERY: Duration = Duration::from_secs(60);

/// One source with a WAL archive.
pub(super) struct WalSlot {
    spec: SourceSpec,
    /// What the stream reports (or the archive's lag, measured, for `push`), and the thread
    /// that streams (or measures).
    status: Shared,
    thread: Option<JoinHandle<Result<()>>>,
    restart_at: Option<Instant>,
    gave_up: Option<String>,
    checked: Option<Instant>,
    push_checked: Option<Instant>,
    /// A `stream` source is streamed only while this worker holds its lease (`stream:NAME`):
    /// one `pg_receivewal` per slot in the whole fleet.
    pub(super) held: bool,
    /// Stops this slot's stream alone (its lease was lost or released).
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl WalSlot {
    pub(super) fn streamed(&self) -> bool {
        self.spec.policy.wal == WalMode::Stream
    }
}

pub(super) fn slots(specs: &[SourceSpec]) -> BTreeMap<String, WalSlot> {
    specs
        .iter()
        .filter(|s| s.dir.is_none() && s.policy.wal != WalMode::Off)
        .map(|s| {
            (
                s.name.clone(),
                WalSlot {
                    spec: s.clone(),
                    status: Shared::default(),
                    thread: None,
                    restart_at: Some(Instant::now()),
                    gave_up: None,
                    checked: None,
                    push_checked: None,
                    held: false,
                    stop: Arc::default(),
                },
            )
        })
        .collect()
}

/// Starts streams that are due, and checks every archive.
pub(super) fn tick(
    slots: &mut BTreeMap<String, WalSlot>,
    settings: &Arc<Settings>,
    state: &State,
    dispatcher: &Dispatcher,
    metrics: &metrics::Shared,
    shutdown: &Shutdown,
) {
    for slot in slots.values_mut() {
        if slot.streamed() {
            if !slot.held {
                // Another worker streams it (and judges its stream); ours, if any, stops.
                slot.stop.store(true, std::sync::atomic::Ordering::SeqCst);
                if slot.thread.as_ref().is_some_and(|h| h.is_finished()) {
                    let _ = slot.thread.take().map(|h| h.join());
                }
                if slot.thread.is_none() {
                    // Started at once when this worker takes the lease.
                    slot.restart_at = Some(Instant::now());
                    slot.gave_up = None;
                }
                continue;
            }
            if slot.stop.load(std::sync::atomic::Ordering::SeqCst) {
                // Held again while the stream stopped for a lost lease: it starts afresh once
                // the old one has ended.
                if slot.thread.as_ref().is_some_and(|h| !h.is_finished()) {
                    continue;
                }
                let _ = slot.thread.take().map(|h| h.join());
                slot.stop.store(false, std::sync::atomic::Ordering::SeqCst);
                slot.restart_at = Some(Instant::now());
                slot.gave_up = None;
            }
            supervise(slot, settings, shutdown);
        }
        if slot.checked.is_some_and(|t| t.elapsed() < CHECK_EVERY) {
            continue;
        }
        slot.checked = Some(Instant::now());
        // Every minute; every few seconds while not known yet (no base backup, no WAL yet).
        let unknown = slot
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .lag_seconds
            .is_none();
        if slot.spec.policy.wal == WalMode::Push
            && (unknown || slot.push_checked.is_none_or(|t| t.elapsed() >= PUSH_EVERY))
            && slot.thread.as_ref().is_none_or(|h| h.is_finished())
        {
            // Reading the archive and the server takes a moment: not on the scheduler's thread.
            slot.push_checked = Some(Instant::now());
            let (settings, spec, status) =
                (settings.clone(), slot.spec.clone(), slot.status.clone());
            slot.thread = std::thread::Builder::new()
                .name(format!("wal-lag-{}", spec.name))
                .spawn(move || {
                    measure_push(&spec, &status, &settings);
                    Ok(())
                })
                .ok();
        }
        // A stream that gave up and was started again is judged by its new life.
        if slot
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .streaming
        {
            slot.gave_up = None;
        }
        if let Err(e) = evaluate(slot, state, dispatcher, metrics) {
            error!(source = %slot.spec.name, error = %e.message(), "cannot record the WAL archive's alerts");
        }
    }
}

/// Keeps the stream's thread running: it returns only on an error retrying cannot fix (the
/// repository, the key); then it is started again a minute later, and alerts meanwhile.
fn supervise(slot: &mut WalSlot, settings: &Arc<Settings>, shutdown: &Shutdown) {
    if slot.thread.as_ref().is_some_and(|h| h.is_finished()) {
        let why = match slot.thread.take().map(|h| h.join()) {
            Some(Ok(Err(e))) => e.to_string(),
            Some(Err(_)) => "the stream's thread crashed (a bug: please report it)".to_string(),
            _ => String::new(),
        };
        if !shutdown.requested() && !slot.stop.load(std::sync::atomic::Ordering::SeqCst) {
            error!(source = %slot.spec.name, error = %why, "the WAL stream stopped; it starts again in a minute");
            slot.gave_up = Some(why);
            slot.restart_at = Some(Instant::now() + Duration::from_secs(60));
        }
    }
    if slot.thread.is_some() || shutdown.requested() {
        return;
    }
    if slot.restart_at.is_some_and(|t| Instant::now() >= t) {
        slot.restart_at = None;
        slot.thread = Some(spawn(
            settings,
            &slot.spec,
            &slot.status,
            shutdown,
            &slot.stop,
        ));
    }
}

fn spawn(
    settings: &Arc<Settings>,
    spec: &SourceSpec,
    status: &Shared,
    shutdown: &Shutdown,
    stop: &Arc<std::sync::atomic::AtomicBool>,
) -> JoinHandle<Result<()>> {
    let (settings, spec, status, shutdown, stop) = (
        settings.clone(),
        spec.clone(),
        status.clone(),
        shutdown.clone(),
        stop.clone(),
    );
    std::thread::Builder::new()
        .name(format!("wal-{}", spec.name))
        .spawn(move || {
            let name = spec.name.clone();
            let state_dir = settings.state_dir()?;
            let opts = StreamOptions {
                source: name.clone(),
                conninfo: spec.conninfo.clone(),
                policy: spec.policy.stream.clone(),
                spool: StreamOptions::spool_in(&state_dir, &name),
                pg_bin_dirs: settings.pg_bin_dirs().to_vec(),
            };
            let store = settings.open_store()?;
            let _lock = crate::lock::acquire(
                &settings.lock_dir(&mut |w| warn!(source = %name, "{w}"))?,
                &store.location(),
                &format!("{name}.wal-stream"),
                "wal-stream",
                crate::lock::Wait::Yes,
                &mut |n| info!(source = %name, "{n}"),
            )?;
            let key = settings.master_key(&mut |w| warn!("{w}"))?;
            info!(source = %name, slot = %opts.policy.slot, "streaming WAL");
            wal_stream::run(
                store,
                key,
                &opts,
                &status,
                &|| shutdown.requested() || stop.load(std::sync::atomic::Ordering::SeqCst),
                &mut |e| log(&name, e),
            )
        })
        .expect("spawn a WAL stream thread")
}

fn log(source: &str, e: wal_stream::Event) {
    use wal_stream::Event as E;
    match e {
        E::SlotCreated(slot) => info!(source, slot, "created the replication slot"),
        E::Started { server, .. } => info!(source, server, "receiving WAL"),
        E::Stored(n) => info!(source, file = %n, "archived"),
        E::Partial { .. } => {}
        E::Stopped {
            error,
            retry_in,
            failures,
        } => {
            warn!(source, failures, retry_in = ?retry_in, error = %error.message(), "the WAL stream stopped")
        }
        E::SlotRetention { retained, max, .. } => {
            info!(source, retained, max, "replication slot retention changed")
        }
        E::SlotLost(slot) => {
            error!(
                source,
                slot,
                "the server removed WAL the replication slot needed: the archive has a gap; take a base backup"
            )
        }
        E::Note(n) => info!(source, "{n}"),
    }
}

/// A push source: the archive's newest WAL against the server's position.
fn measure_push(spec: &SourceSpec, status: &Shared, settings: &Settings) {
    let name = &spec.name;
    let measured = (|| -> Result<(Timestamp, u64, f64)> {
        let repo = crate::catalog::Repository::open(
            settings.open_store()?,
            settings.master_key(&mut |_| {})?,
        )?;
        let backups = repo.base_manifests(name)?;
        let Some(first) = backups.first() else {
            return Err(crate::error::Error::not_found("no base backup yet"));
        };
        let window = crate::ops::pitr::target::window(&repo, name, &backups)?;
        let (Some(to_lsn), Some(to_time)) = (window.to_lsn, window.to_time) else {
            return Err(crate::error::Error::not_found("no WAL archived yet"));
        };
        let (mut c, _) = wal_stream::server::connect(&spec.conninfo)?;
        let current = wal_stream::server::positions(&mut c, &spec.policy.stream.slot)?.current;
        let behind = current.0.saturating_sub(to_lsn.0);
        // Whole segments: behind only when a finished segment is missing.
        let seconds = if behind > first.segment_size {
            Timestamp::now()
                .duration_since(to_time)
                .as_secs_f64()
                .max(0.0)
        } else {
            0.0
        };
        Ok((to_time, behind, seconds))
    })();
    let mut s = status.lock().unwrap_or_else(|p| p.into_inner());
    match measured {
        Ok((at, bytes, seconds)) => {
            s.archived_at = Some(at);
            s.lag_bytes = Some(bytes);
            s.lag_seconds = Some(seconds);
        }
        Err(e) => {
            s.lag_seconds = None;
            s.lag_bytes = None;
            // Retried every few seconds while unknown: not worth a line each time.
            tracing::debug!(source = %name, reason = %e.message(), "the WAL archive's lag is not known");
        }
    }
}

/// The metrics, and the three alerts, from the latest status.
fn evaluate(
    slot: &WalSlot,
    state: &State,
    dispatcher: &Dispatcher,
    metrics: &metrics::Shared,
) -> Result<()> {
    let (s, peak) = {
        let mut s = slot.status.lock().unwrap_or_else(|p| p.into_inner());
        let peak = s.take_peak();
        (s.clone(), peak)
    };
    let name = slot.spec.name.as_str();
    let stream = slot.spec.policy.wal == WalMode::Stream;
    {
        let mut m = metrics.lock().unwrap_or_else(|p| p.into_inner());
        let w = &mut m.sources.entry(name.to_string()).or_default().wal;
        w.archived_at = s.archived_at;
        w.lag_bytes = s.lag_bytes;
        w.lag_seconds = s.lag_seconds;
        w.streaming = stream.then_some(s.streaming);
        w.slot_retained_bytes = s.slot_retained;
    }
    if stream {
        let failing = s.failures >= FAILURES_BEFORE_ALERT || slot.gave_up.is_some() && !s.streaming;
        if failing || s.streaming {
            let why = slot
                .gave_up
                .clone()
                .or(s.last_error.clone())
                .unwrap_or_default();
            super::alert(
                state,
                dispatcher,
                name,
                Event::WalStreamFailed,
                failing,
                &if failing {
                    format!(
                        "the WAL stream of {name} keeps failing ({} times in a row): {why}",
                        s.failures.max(1)
                    )
                } else {
                    format!("the WAL stream of {name} streams again")
                },
            )?;
        }
        if let Some(retained) = peak {
            let max = slot.spec.policy.stream.slot_max;
            let over = retained > max;
            let slot_name = &slot.spec.policy.stream.slot;
            super::alert(
                state,
                dispatcher,
                name,
                Event::SlotRetention,
                over,
                &if over {
                    format!(
                        "the replication slot {slot_name} of {name} holds back {} of WAL on the server (over wal_slot_max, {}): the server's disk fills until the stream catches up; {}",
                        crate::units::bytes(retained),
                        crate::units::bytes(max),
                        wal_stream::server::drop_hint(slot_name)
                    )
                } else {
                    format!(
                        "the replication slot {slot_name} of {name} holds back {} of WAL again",
                        crate::units::bytes(retained)
                    )
                },
            )?;
        }
    }
    if let Some(lag) = s.lag_seconds {
        let limit = slot.spec.policy.wal_lag_alert;
        let lagging = lag > limit.as_secs_f64();
        super::alert(
            state,
            dispatcher,
            name,
            Event::WalLagging,
            lagging,
            &if lagging {
                format!(
                    "the WAL archive of {name} is {} behind the server (over wal_lag_alert, {}{})",
                    crate::units::duration(Duration::from_secs_f64(lag)),
                    crate::units::duration(limit),
                    s.lag_bytes
                        .map(|b| format!("; {} not archived", crate::units::bytes(b)))
                        .unwrap_or_default()
                )
            } else {
                format!("the WAL archive of {name} has caught up with the server")
            },
        )?;
    }
    Ok(())
}

/// Waits (until `deadline`) for the streams to upload what they received and stop; returns the
/// sources whose stream did not.
pub(super) fn finish(slots: &mut BTreeMap<String, WalSlot>, deadline: Instant) -> Vec<String> {
    let mut running = Vec::new();
    for slot in slots.values_mut() {
        if let Some(h) = slot.thread.take() {
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if h.is_finished() {
                let _ = h.join();
            } else {
                error!(source = %slot.spec.name, "the WAL stream did not stop in time");
                running.push(slot.spec.name.clone());
            }
        }
    }
    running
}
