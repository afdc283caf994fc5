/*!
The scheduler loop of `serve` ([`serve_with`]): every scheduled job is a row of the state, leased
by this worker ([`super::fleet`]) when it is due and free, run on a thread of its own, renewed
while it runs, and released with its next due time; the fleet's duties (the dead man's switch,
the recovery point, verify, the monthly report) run where their row is held. The same loop runs
alone on a state file and as one worker of a fleet on a shared PostgreSQL state.
*/

use super::*;

/// How often a worker on a shared state reads every source's last runs into its /metrics.
const METRICS_EVERY: Duration = Duration::from_secs(30);

/// How often a worker on a shared state plans every job row again.
const REPLAN_EVERY: Duration = Duration::from_secs(60);

/// A source the daemon runs: its spec and its dead man's switch.
struct Slot {
    spec: SourceSpec,
    stale_after: Option<Duration>,
}

/// A job this worker runs on a thread: what it holds, and whether it ran to an end (false:
/// interrupted, or it never started; its due time stays so that it runs again).
struct RunningJob {
    spec: SourceSpec,
    kind: Kind,
    thread: JoinHandle<bool>,
}

impl RunningJob {
    /// When the job is due next after it ended at `now`: at its schedule's next time; at the
    /// same due time when it did not run to an end (it runs again), or was asked for by hand
    /// (the schedule stands).
    fn next_due(
        spec: &SourceSpec,
        kind: Kind,
        lease: &crate::state::Lease,
        done: bool,
        now: Timestamp,
    ) -> Timestamp {
        if !done || lease.action.is_some() {
            return lease.due;
        }
        match kind {
            Kind::Backup => spec
                .policy
                .schedule
                .as_ref()
                .map(|s| jittered(s.next_after(now), spec.policy.jitter))
                .unwrap_or(now),
            Kind::Base => base::next_due(spec, now),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Backup,
    Base,
}

/// The name of a source's backup job row.
pub fn backup_job(source: &str) -> String {
    format!("backup:{source}")
}

/// The daemon on a given listener, until `shutdown` is triggered or a signal arrives.
pub fn serve_with(
    settings: Settings,
    listener: std::net::TcpListener,
    shutdown: Shutdown,
) -> Result<()> {
    let settings = Arc::new(settings);
    let specs: Vec<SourceSpec> = settings
        .configured_sources(None)?
        .into_iter()
        .filter(|s| {
            let streamed = s.dir.is_none() && s.policy.wal == crate::config::WalMode::Stream;
            if s.policy.schedule.is_none() && s.policy.base_schedule.is_none() && !streamed {
                warn!(source = %s.name, "no schedule: this source is not run by serve");
            }
            s.policy.schedule.is_some() || s.policy.base_schedule.is_some() || streamed
        })
        .collect();
    if specs.is_empty() {
        return Err(Error::config("no source has a schedule").with_hint(
            "add schedule = \"hourly\" (or \"daily at 03:00\", a cron expression...) to a [[source]] in offsitedb.toml",
        ));
    }
    let worker_settings = settings.worker()?;
    let state_at = settings.state_at()?;
    let shared = state_at.is_shared();
    let mut state = state_at.open()?;
    if shared {
        // Two live workers under one name would take each other's jobs for their own. A
        // worker restarted under its name (a crashed pod) waits until its former self is
        // silent; one that keeps beating is another process, and this one is refused.
        let me = (crate::config::host_name(), std::process::id());
        let waited = std::time::Instant::now();
        loop {
            let twin = state.workers()?.into_iter().find(|w| {
                w.name == worker_settings.name
                    && (w.host.as_str(), w.pid) != (me.0.as_str(), me.1)
                    && Timestamp::now().duration_since(w.seen).as_secs_f64()
                        < crate::ops::fleet::SILENT_AFTER.as_secs_f64()
            });
            let Some(w) = twin else { break };
            if waited.elapsed() > crate::ops::fleet::SILENT_AFTER + Duration::from_secs(2) {
                return Err(Error::config(format!(
                    "another worker named {} is alive ({} pid {}, heard from at {})",
                    w.name, w.host, w.pid, w.seen
                ))
                .with_hint("give each worker its own name: [worker] name, or OFFSITEDB_WORKER_NAME (the default adds the process id)"));
            }
            if shutdown.requested() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    // Steps left running by this machine's last daemon (a file), or by this worker under the
    // same name (a fleet: other workers' runs are theirs, closed when their leases expire).
    let interrupted = if shared {
        state.close_interrupted(
            Some(&worker_settings.name),
            "this worker stopped while this ran",
        )?
    } else {
        state.close_interrupted(None, "offsitedb stopped while this ran")?
    };
    if interrupted > 0 {
        warn!(
            steps = interrupted,
            "steps that were running when offsitedb last stopped are marked interrupted"
        );
    }
    if !shared {
        // Alone on the file: whatever holds a row is an earlier daemon of this machine.
        state.free_leases()?;
    }
    // Fail fast on a wrong key or an unreadable repository (a new one is fine).
    settings.master_key(&mut |w| warn!("{w}"))?;
    settings.verify_schedule()?;
    let channels = alerts::Channels::from_config(settings.file.alerts.as_ref())?;
    let report_mail = channels.email.clone();
    let mut monthly = monthly::Monthly::new();
    let mut verifier = verify::Verifier::new();
    let dispatcher = Arc::new(Dispatcher::start(channels, |d| {
        error!(channel = %d.channel, attempts = d.attempts, error = d.error.as_deref().unwrap_or(""), "alert delivery failed");
    }));
    let metrics: metrics::Shared = Arc::new(Mutex::new(metrics::Metrics::default()));
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io(format!("cannot read the listening address: {e}")))?;
    let control = Arc::new(control::Control::new(
        specs
            .iter()
            .filter(|s| s.policy.schedule.is_some())
            .map(|s| s.name.clone()),
    ));
    let web = crate::web::Context::new(
        settings.clone(),
        metrics.clone(),
        control.clone(),
        state_at.clone(),
    )?;
    let http = crate::web::start(listener, web, shutdown.0.clone())?;
    // Whatever ends this function ends the HTTP thread too.
    struct StopOnDrop(Shutdown);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.trigger();
        }
    }
    let _stop_http = StopOnDrop(shutdown.clone());
    info!(%addr, worker = %worker_settings.name, state = %state_at.describe(), "serving the dashboard, its API, /metrics and /healthz");

    // Every scheduled job is a row of the state; this worker takes the rows whose source's
    // `requires` it offers.
    let started = Timestamp::now();
    let mut worker = fleet::Worker::new(worker_settings);
    let mut plans = Vec::new();
    let mut slots: BTreeMap<String, Slot> = BTreeMap::new();
    for spec in &specs {
        if let Some(schedule) = &spec.policy.schedule {
            let last = state.last_attempt(&spec.name, Job::Backup)?;
            let missed = last
                .as_ref()
                .is_some_and(|r| schedule.next_after(r.started) <= started);
            let due = if missed {
                started
            } else {
                jittered(schedule.next_after(started), spec.policy.jitter)
            };
            plans.push(crate::state::Planned {
                name: backup_job(&spec.name),
                source: spec.name.clone(),
                kind: "backup".into(),
                schedule: schedule.to_string(),
                due,
                requires: spec.policy.requires.clone(),
            });
            load_metrics(spec, &state, &metrics)?;
            refresh_repository_metrics(&settings, &spec.name, &metrics);
            info!(source = %spec.name, schedule = %schedule, "scheduled");
            slots.insert(
                spec.name.clone(),
                Slot {
                    stale_after: spec.policy.stale_after(started),
                    spec: spec.clone(),
                },
            );
        }
        plans.extend(base::plan(spec, &state, &metrics, started)?);
        if spec.dir.is_none() && spec.policy.wal == crate::config::WalMode::Stream {
            plans.push(crate::state::Planned {
                name: format!("stream:{}", spec.name),
                source: spec.name.clone(),
                kind: "stream".into(),
                schedule: "always".into(),
                due: Timestamp::UNIX_EPOCH,
                requires: spec.policy.requires.clone(),
            });
        }
    }
    plans.push(crate::state::Planned {
        name: fleet::DUTIES.into(),
        source: "*".into(),
        kind: "duties".into(),
        schedule: "always".into(),
        due: Timestamp::UNIX_EPOCH,
        requires: Vec::new(),
    });
    let mut jobs_names = Vec::new();
    let mut long_names = Vec::new();
    for p in &plans {
        state.plan(p)?;
        if !worker.settings.offers(&p.requires) {
            info!(source = %p.source, job = %p.name, requires = ?p.requires, labels = ?worker.settings.labels, "this worker lacks a label the source requires: other workers run it");
            continue;
        }
        match p.kind.as_str() {
            "backup" | "base" => jobs_names.push(p.name.clone()),
            _ => long_names.push(p.name.clone()),
        }
    }
    show_due(&state, &metrics);
    let by_source: BTreeMap<String, SourceSpec> =
        specs.iter().map(|s| (s.name.clone(), s.clone())).collect();
    let mut wal_slots = stream::slots(&specs);
    let mut running: BTreeMap<String, RunningJob> = BTreeMap::new();
    let mut long_checked: Option<std::time::Instant> = None;
    let mut fleet_checked: Option<std::time::Instant> = None;
    let mut duties_checked: Option<std::time::Instant> = None;
    let mut metrics_checked = Some(std::time::Instant::now());
    let mut replanned = std::time::Instant::now();
    let mut held_elsewhere: std::collections::BTreeSet<String> = Default::default();

    while !shutdown.requested() {
        let now = Timestamp::now();
        // A shared state database that was recreated (or restored) gets its schema and rows
        // back within a minute: opened again (migrating when it must) and every row planned
        // again (a row that exists keeps its due time).
        if shared && replanned.elapsed() >= REPLAN_EVERY {
            replanned = std::time::Instant::now();
            match state_at.open() {
                Ok(s) => state = s,
                Err(e) => error!(error = %e.message(), "cannot open the state database"),
            }
            for p in &plans {
                if let Err(e) = state.plan(p) {
                    error!(job = %p.name, error = %e.message(), "cannot plan a job in the state");
                    break;
                }
            }
        }
        // Jobs that ended: released with their next due time.
        let ended: Vec<String> = running
            .iter()
            .filter(|(_, r)| r.thread.is_finished())
            .map(|(n, _)| n.clone())
            .collect();
        for name in ended {
            let r = running.remove(&name).expect("listed");
            let done = r.thread.join().unwrap_or_else(|_| {
                error!(source = %r.spec.name, "the job crashed (a bug: please report it)");
                dispatcher.ping(Ping::Fail, &r.spec.policy.heartbeat);
                true
            });
            let Some(lease) = worker.lease(&name).cloned() else {
                continue;
            };
            let next = RunningJob::next_due(&r.spec, r.kind, &lease, done, Timestamp::now());
            worker.release(&state, &name, next);
            let mut m = metrics.lock().unwrap_or_else(|p| p.into_inner());
            let s = m.sources.entry(r.spec.name.clone()).or_default();
            match r.kind {
                Kind::Backup => s.next_run = Some(next),
                Kind::Base => s.base_next_run = Some(next),
            }
        }
        for lost in worker.renew(&state) {
            if running.contains_key(&lost) {
                warn!(job = %lost, "the job goes on here, but its result no longer moves the schedule");
                running.remove(&lost);
            }
        }
        // Jobs asked for from the dashboard: the row is marked, and whichever worker may run
        // the source takes it (this one, alone).
        for (source, action) in control.take() {
            match state.request(&backup_job(&source), action.label(), now) {
                Ok(true) => {}
                Ok(false) => warn!(
                    source,
                    action = action.label(),
                    "a job of this source is already running: the request is dropped"
                ),
                Err(e) => error!(source, error = %e.message(), "cannot record the request"),
            }
        }
        let room = worker.settings.jobs.saturating_sub(running.len());
        let mut taken = worker.take(&state, &jobs_names, room);
        if long_checked.is_none_or(|t| t.elapsed() >= Duration::from_secs(2)) {
            long_checked = Some(std::time::Instant::now());
            taken.extend(worker.take(&state, &long_names, long_names.len()));
        }
        for lease in taken {
            let Some(spec) = by_source.get(&lease.source) else {
                if lease.kind == "duties" {
                    info!(
                        "this worker does the fleet's duties (dead man's switch, verify, monthly report)"
                    );
                }
                continue;
            };
            // A worker (or this machine's last daemon) that ended the run but stopped before it
            // released the row: the run is done, the row moves on (a due time runs once).
            if lease.action.is_none() {
                let job = match lease.kind.as_str() {
                    "backup" => Some((Job::Backup, Kind::Backup)),
                    "base" => Some((Job::BaseBackup, Kind::Base)),
                    _ => None,
                };
                if let Some((job, kind)) = job
                    && let Ok(Some(last)) = state.last_attempt(&spec.name, job)
                    && last.due == Some(lease.due)
                {
                    info!(source = %spec.name, job = %lease.name, due = %lease.due, "the previous worker ended this run before it stopped: not run again");
                    let next = RunningJob::next_due(spec, kind, &lease, true, Timestamp::now());
                    worker.release(&state, &lease.name, next);
                    continue;
                }
            }
            if lease.due <= started && lease.action.is_none() && lease.taken_from.is_none() {
                info!(source = %spec.name, job = %lease.name, due = %lease.due, "a scheduled run was missed while offsitedb was down: running it now");
            }
            let tag = RunTag {
                worker: Some(worker.name().to_string()),
                due: lease.action.is_none().then_some(lease.due),
            };
            match lease.kind.as_str() {
                "backup" => {
                    let action = lease
                        .action
                        .as_deref()
                        .and_then(control::Action::parse)
                        .unwrap_or(control::Action::Backup);
                    running.insert(
                        lease.name.clone(),
                        RunningJob {
                            spec: spec.clone(),
                            kind: Kind::Backup,
                            thread: spawn_job(
                                &settings,
                                spec,
                                &state_at,
                                tag,
                                &dispatcher,
                                &metrics,
                                &control,
                                action,
                                lease.taken_from.is_some(),
                            ),
                        },
                    );
                }
                "base" => {
                    running.insert(
                        lease.name.clone(),
                        RunningJob {
                            spec: spec.clone(),
                            kind: Kind::Base,
                            thread: base::spawn(
                                &settings,
                                spec,
                                &state_at,
                                tag,
                                &dispatcher,
                                &metrics,
                                lease.taken_from.is_some(),
                            ),
                        },
                    );
                }
                "stream" => {
                    info!(source = %spec.name, "this worker streams the WAL of this source")
                }
                other => {
                    warn!(job = %lease.name, kind = other, "a job of an unknown kind (a newer worker's?): left alone")
                }
            }
        }
        worker.beat(&state, false);

        // Who runs what, fleet-wide (the dashboard's buttons, the recovery point).
        if !shared {
            held_elsewhere.clear();
        } else if fleet_checked.is_none_or(|t| t.elapsed() >= Duration::from_secs(2)) {
            fleet_checked = Some(std::time::Instant::now());
            match state.jobs() {
                Ok(rows) => {
                    due_metrics(&rows, &metrics);
                    held_elsewhere = rows
                        .into_iter()
                        .filter(|r| r.worker.as_deref().is_some_and(|w| w != worker.name()))
                        .filter(|r| r.expires.is_none_or(|e| e >= now))
                        .map(|r| r.name)
                        .collect();
                }
                Err(e) => error!(error = %e.message(), "cannot read the fleet's jobs"),
            }
        }
        let busy = |source: &str| {
            let n = backup_job(source);
            running.contains_key(&n) || held_elsewhere.contains(&n)
        };
        for slot in slots.values() {
            control.set_running(&slot.spec.name, busy(&slot.spec.name));
        }

        // On a shared state, other workers' runs count in this one's /metrics too.
        if shared && metrics_checked.is_none_or(|t| t.elapsed() >= METRICS_EVERY) {
            metrics_checked = Some(std::time::Instant::now());
            for spec in slots.values().map(|s| &s.spec) {
                load_metrics(spec, &state, &metrics).ok();
            }
        }
        // The fleet's duties: by one worker (alone, this one).
        if worker.holds(fleet::DUTIES) {
            // Each second alone; every 10 seconds on a shared state (hundreds of sources).
            let every = if shared { 10 } else { 1 };
            if duties_checked.is_none_or(|t| t.elapsed() >= Duration::from_secs(every)) {
                duties_checked = Some(std::time::Instant::now());
                for slot in slots.values() {
                    // A state that cannot be read or written (a full disk) must not stop the
                    // daemon: the other sources' jobs go on, and the next check tries again.
                    if let Err(e) =
                        dead_mans_switch(slot, &state, &dispatcher, &metrics, started, now)
                            .and_then(|()| {
                                objectives::recovery_point(
                                    &slot.spec,
                                    &state,
                                    &dispatcher,
                                    started,
                                    now,
                                    busy(&slot.spec.name),
                                )
                            })
                    {
                        error!(source = %slot.spec.name, error = %e.message(), "cannot check for a recent backup");
                    }
                }
            }
            monthly.tick(&settings, report_mail.as_ref());
            verifier.tick(&settings, &state_at, &dispatcher);
        }
        for (name, slot) in wal_slots.iter_mut() {
            slot.held = worker.holds(&format!("stream:{name}"));
        }
        stream::tick(
            &mut wal_slots,
            &settings,
            &state,
            &dispatcher,
            &metrics,
            &shutdown,
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    info!("stopping: no new jobs; running jobs stop at their next buffer");
    let deadline = std::time::Instant::now() + SHUTDOWN_LIMIT;
    // Jobs first, their leases renewed while they stop: one that expired here would hand a job
    // still stopping to another worker.
    while running.values().any(|r| !r.thread.is_finished()) && std::time::Instant::now() < deadline
    {
        worker.renew(&state);
        std::thread::sleep(Duration::from_millis(50));
    }
    for (name, r) in std::mem::take(&mut running) {
        if !r.thread.is_finished() {
            // Not released: its lease expires, and the worker that takes it over aborts what
            // it left.
            error!(source = %r.spec.name, "the job did not stop in time");
            continue;
        }
        let done = r.thread.join().unwrap_or(true);
        // Stopped by the shutdown: still due, for the next worker (or this one's next start);
        // one that ended first moves on to its next time, so that it does not run twice.
        if let Some(lease) = worker.lease(&name).cloned() {
            let next = RunningJob::next_due(&r.spec, r.kind, &lease, done, Timestamp::now());
            worker.release(&state, &name, next);
        }
    }
    worker.renew(&state);
    let still_streaming = stream::finish(&mut wal_slots, deadline);
    monthly.finish(deadline);
    verifier.finish(deadline);
    // Streams and the duties go to another worker at once, not after the lease expires (a
    // stream that did not stop keeps its lease until it expires: one pg_receivewal per slot).
    let long: Vec<(String, Timestamp)> = long_names
        .iter()
        .filter(|n| {
            !still_streaming
                .iter()
                .any(|s| n.as_str() == format!("stream:{s}"))
        })
        .filter_map(|n| worker.lease(n).map(|l| (n.clone(), l.due)))
        .collect();
    for (name, due) in long {
        worker.release(&state, &name, due);
    }
    // Gone from the workers list at once: the next process under this name starts at once.
    if let Err(e) = state.leave(worker.name()) {
        warn!(error = %e.message(), "cannot take this worker off the workers list");
    }
    if let Ok(d) = Arc::try_unwrap(dispatcher) {
        d.finish(Duration::from_secs(10));
    }
    shutdown.trigger();
    let _ = http.join();
    info!("stopped");
    Ok(())
}

/// Each source's next due times into the metrics, from the job rows.
fn due_metrics(rows: &[crate::state::JobRow], metrics: &metrics::Shared) {
    let mut m = metrics.lock().unwrap_or_else(|p| p.into_inner());
    for r in rows {
        let Some(s) = m.sources.get_mut(&r.source) else {
            continue;
        };
        match r.kind.as_str() {
            "backup" => s.next_run = Some(r.due),
            "base" => s.base_next_run = Some(r.due),
            _ => {}
        }
    }
}

fn show_due(state: &State, metrics: &metrics::Shared) {
    match state.jobs() {
        Ok(rows) => due_metrics(&rows, metrics),
        Err(e) => warn!(error = %e.message(), "cannot read the jobs' due times"),
    }
}

/// The metrics of `spec` as the state records them (at start, and on a shared state, now and
/// then: other workers' runs count too).
fn load_metrics(spec: &SourceSpec, state: &State, metrics: &metrics::Shared) -> Result<()> {
    let last = state.last_attempt(&spec.name, Job::Backup)?;
    let ok = state.last(&spec.name, Job::Backup, Some(RunResult::Ok))?;
    let drill = state
        .last(&spec.name, Job::Drill, None)?
        .filter(|r| r.result != RunResult::Interrupted);
    let tested = match &drill {
        Some(_) => state
            .last(&spec.name, Job::Drill, Some(RunResult::Ok))?
            .and_then(|r| r.restore_seconds),
        None => None,
    };
    let mut m = metrics.lock().unwrap_or_else(|p| p.into_inner());
    let s = m.sources.entry(spec.name.clone()).or_default();
    s.backup_seconds = ok.as_ref().and_then(|r| r.seconds);
    s.last_success = ok.and_then(|r| r.finished);
    if let Some(d) = drill {
        s.drill_seconds = d.seconds;
        s.drill_ok = Some(d.result == RunResult::Ok);
        s.tested_restore_seconds = tested;
    }
    s.last_attempt = last.as_ref().map(|r| r.started);
    s.last_attempt_ok = last.as_ref().map(|r| r.result == RunResult::Ok);
    Ok(())
}

/// Before a job taken over from a worker whose lease expired: the unfinished uploads under the
/// job's own prefix (a backup job's snapshots, or base backups) are that worker's, and are
/// aborted (it is dead, or cut off and must not finish behind us). Another kind of job of the
/// source, which may run on another worker meanwhile, uploads elsewhere.
pub(super) fn fence(settings: &Settings, prefix: &str, source: &str) {
    let aborted = settings.open_store().and_then(|store| {
        crate::ops::prune::abort_uploads_before(&*store, prefix, Timestamp::now())
    });
    match aborted {
        Ok(0) => {}
        Ok(n) => {
            info!(
                source,
                uploads = n,
                "aborted the unfinished uploads the previous worker left"
            )
        }
        Err(e) => {
            warn!(source, error = %e.message(), "cannot abort the previous worker's unfinished uploads (prune removes them after its grace period)")
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn spawn_job(
    settings: &Arc<Settings>,
    spec: &SourceSpec,
    state_at: &StateAt,
    tag: RunTag,
    dispatcher: &Arc<Dispatcher>,
    metrics: &metrics::Shared,
    control: &Arc<control::Control>,
    action: control::Action,
    taken_over: bool,
) -> JoinHandle<bool> {
    let (settings, spec, state_at, dispatcher, metrics, control) = (
        settings.clone(),
        spec.clone(),
        state_at.clone(),
        dispatcher.clone(),
        metrics.clone(),
        control.clone(),
    );
    std::thread::Builder::new()
        .name(format!("job-{}", spec.name))
        .spawn(move || {
            let opts = JobOptions {
                backup: crate::ops::backup::BackupOptions {
                    pg_bin_dirs: settings.pg_bin_dirs().to_vec(),
                    ..Default::default()
                },
                drill: crate::ops::drill::DrillOptions {
                    pg_bin_dirs: settings.pg_bin_dirs().to_vec(),
                    ..Default::default()
                },
                wait: crate::lock::Wait::Yes,
            };
            let name = spec.name.clone();
            let mut note = |n: String| info!(source = %name, "{n}");
            // Counted as finished however it ends (even by a panic): readers of the repository
            // read it again.
            struct Finished(Arc<control::Control>);
            impl Drop for Finished {
                fn drop(&mut self) {
                    self.0.finished();
                }
            }
            let _finished = Finished(control);
            if taken_over {
                fence(&settings, &format!("snapshots/{}/", spec.name), &spec.name);
            }
            let ran = state_at.open().and_then(|state| {
                let state = state.tagged(tag);
                match action {
                    control::Action::Backup => job_with_alerts(
                        &settings,
                        &spec,
                        &state,
                        &opts,
                        &dispatcher,
                        Some(&metrics),
                        &mut note,
                    )
                    .map(|r| {
                        r.failure()
                            .is_none_or(|e| e.kind() != ErrorKind::Interrupted)
                    }),
                    control::Action::Drill => control::drill_newest(
                        &settings,
                        &spec,
                        &state,
                        &dispatcher,
                        &metrics,
                        &mut note,
                    )
                    .map(|()| true),
                }
            });
            match ran {
                Ok(done) => done,
                Err(e) if e.kind() == ErrorKind::Interrupted => {
                    // Stopped while it waited for the source's lock: nothing ran.
                    info!(source = %spec.name, "job stopped before it started (shutdown)");
                    false
                }
                Err(e) => {
                    // Only the state fails this way: the job may not have run at all.
                    error!(source = %spec.name, error = %e.message(), "the job could not run or record its result (state)");
                    dispatcher.ping(Ping::Fail, &spec.policy.heartbeat);
                    true
                }
            }
        })
        .expect("spawn a job thread")
}

/// Fires `no_recent_backup` when the last success (or the daemon's start, if none is known) is
/// older than `stale_after`.
fn dead_mans_switch(
    slot: &Slot,
    state: &State,
    dispatcher: &Dispatcher,
    metrics: &metrics::Shared,
    started: Timestamp,
    now: Timestamp,
) -> Result<()> {
    let Some(limit) = slot.stale_after else {
        return Ok(());
    };
    let name = slot.spec.name.as_str();
    let last = state
        .last(name, Job::Backup, Some(RunResult::Ok))?
        .and_then(|r| r.finished);
    let since = last.unwrap_or(started);
    let age = now.duration_since(since);
    let stale = age.as_secs_f64() > limit.as_secs_f64();
    if stale {
        let message = format!(
            "no successful backup of {name} for {} (stale_after {}); last successful backup: {}",
            crate::units::duration(Duration::from_secs(age.as_secs().max(0) as u64)),
            crate::units::duration(limit),
            last.map_or("none recorded".to_string(), |t| t.to_string())
        );
        if let Some(mut a) = alerts::transition(state, name, Event::NoRecentBackup, true, &message)?
        {
            a.last_success = last;
            warn!(source = name, event = "no_recent_backup", "{message}");
            dispatcher.send(a);
        }
    }
    let mut m = metrics.lock().unwrap_or_else(|p| p.into_inner());
    m.sources.entry(name.to_string()).or_default().stale = stale;
    Ok(())
}
