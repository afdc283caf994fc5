/*!
What the dashboard shows, computed once for both of its faces: the HTML pages render these
structs and the JSON API serializes them, so a number on a page and the same number in the API
cannot disagree.

Sources come from the repository (snapshot summaries and drill records, read with
[`crate::ops::list`]: the source of truth), the state file (run history, errors) and the daemon's
live numbers ([`metrics::Shared`]: next run). Listing a bucket and reading every manifest is slow,
so the repository's view is kept for [`CACHE_FOR`] and read again sooner when a job finished
([`Control::generation`]). Drill records never change once written: each is read once.
*/

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde::Serialize;

use crate::catalog::{
    DrillRecord, Entry, Repository, SnapshotId, Status, Summary, check_source_name,
};
use crate::config::{Settings, SourceSpec};
use crate::daemon::control::Control;
use crate::daemon::metrics;
use crate::error::{Error, ErrorKind, Result};
use crate::ops::report as op;
use crate::report::measure;
use crate::report::model::{Objectives, Period, Report, Scope};
use crate::state::{Job, Run, RunResult, State};
use crate::storage::{Location, ReadStore};

/// How long a reading of the repository is shown before it is read again.
pub const CACHE_FOR: Duration = Duration::from_secs(5);
/// Restore times drawn in a sparkline.
const SPARK_POINTS: usize = 20;
/// Drill records and runs shown on a source's page.
const HISTORY: usize = 50;
/// Objectives are measured over this many days (as `offsitedb list` does).
pub const OBJECTIVE_DAYS: i64 = 30;

/// Green, amber or red: how a source stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Green,
    Amber,
    Red,
}

impl Level {
    /// The word shown with the colour (never the colour alone).
    pub fn word(self) -> &'static str {
        match self {
            Level::Green => "OK",
            Level::Amber => "Warning",
            Level::Red => "Failing",
        }
    }
}

/// One reason for a source's level, in words.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Reason {
    pub level: Level,
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Health {
    /// The worst of the reasons' levels.
    pub level: Level,
    pub word: &'static str,
    pub reasons: Vec<Reason>,
}

/// A tested restore time: a drill that passed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RestorePoint {
    pub snapshot: SnapshotId,
    /// When the snapshot was taken.
    pub at: Timestamp,
    pub seconds: f64,
}

/// The drill a source's state rests on: that of its newest drilled snapshot.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LastDrill {
    pub snapshot: SnapshotId,
    pub drill: Option<SnapshotId>,
    pub status: Status,
    pub passed: bool,
}

/// One line of the overview (`GET /api/v1/sources`).
#[derive(Clone, Debug, Serialize)]
pub struct SourceOverview {
    pub name: String,
    /// "postgres" or "directory", when known.
    pub kind: Option<String>,
    /// A `[[source]]` of this daemon's configuration (else only found in the repository).
    pub configured: bool,
    /// The daemon runs its jobs, so "back up now" and "drill now" can be asked for.
    pub scheduled: bool,
    pub schedule: Option<String>,
    pub health: Health,
    pub snapshots: usize,
    pub stored_bytes: u64,
    /// When the newest snapshot finished.
    pub last_backup: Option<Timestamp>,
    pub next_run: Option<Timestamp>,
    pub stale_after_seconds: Option<u64>,
    pub last_drill: Option<LastDrill>,
    /// The tested restore time of the newest sealed snapshot.
    pub tested_restore_seconds: Option<f64>,
    pub tested_restore_snapshot: Option<SnapshotId>,
    /// Recent tested restore times, oldest first.
    pub restore_times: Vec<RestorePoint>,
    /// A job of the source is running or asked for.
    pub running: bool,
    /// Recovery point and tested restore time over the last 30 days against `rpo`/`rto` (or the
    /// schedule's interval): the report's measures.
    pub objectives: Objectives,
    /// Point-in-time recovery: when the newest WAL segment was archived.
    pub wal_archived_to: Option<Timestamp>,
}

/// One drill record, for lists: the tables that did not match, not all of them.
#[derive(Clone, Debug, Serialize)]
pub struct DrillLine {
    pub snapshot: SnapshotId,
    pub drill: SnapshotId,
    /// "passed", "failed", or "unreadable".
    pub result: String,
    pub started: Option<Timestamp>,
    pub finished: Option<Timestamp>,
    /// The tested restore time (download, restore and verify).
    pub total_seconds: Option<f64>,
    pub tables: usize,
    pub mismatches: Vec<crate::catalog::drill::TableCheck>,
    pub problems: Vec<String>,
}

/// A source's page (`GET /api/v1/sources/{name}`).
#[derive(Clone, Debug, Serialize)]
pub struct SourceDetail {
    pub source: SourceOverview,
    /// Newest first.
    pub snapshots: Vec<Summary>,
    /// Newest first.
    pub drills: Vec<DrillLine>,
    /// This machine's runs of it (backup, drill, prune steps), newest first.
    pub runs: Vec<Run>,
}

/// What a snapshot's manifest says.
#[derive(Clone, Debug, Serialize)]
pub struct Facts {
    pub kind: String,
    pub database: String,
    pub host: String,
    pub server_version: String,
    pub dump_version: String,
    pub started: Timestamp,
    pub finished: Timestamp,
    pub plain_bytes: u64,
    pub compressed_bytes: u64,
    pub stored_bytes: u64,
    pub compression: String,
    pub encryption: String,
    pub key_id: String,
    pub data_object: String,
    pub verification: String,
    pub verification_note: Option<String>,
    /// A folder snapshot: regular files and their bytes.
    pub files: Option<u64>,
    pub file_bytes: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TableRow {
    pub schema: String,
    pub name: String,
    pub rows: u64,
    /// A content digest was recorded (drills compare it).
    pub digest: bool,
}

/// The commands that restore it, ready to copy.
#[derive(Clone, Debug, Serialize)]
pub struct RestoreCommands {
    pub offsitedb: String,
    /// OffsiteDB decrypts only.
    pub decrypt: String,
    /// No OffsiteDB at all: fetch the object, the reference decryptor, the standard tools.
    pub without_offsitedb: Vec<String>,
}

/// A snapshot's page (`GET /api/v1/sources/{name}/snapshots/{id}`).
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotDetail {
    pub summary: Summary,
    pub facts: Facts,
    pub tables: Vec<TableRow>,
    /// Every drill record, newest first.
    pub drills: Vec<DrillRecord>,
    pub restore: RestoreCommands,
}

/// A month's report: stored in the repository by `serve` (`reports/<month>`), or drawn live
/// from the repository for the last full month and the running one while they are not stored.
#[derive(Clone, Debug, Serialize)]
pub struct ReportObject {
    pub month: String,
    /// The object, when stored.
    pub key: Option<String>,
    pub bytes: Option<u64>,
    pub stored: bool,
    /// The month has not ended: the report says "so far".
    pub partial: bool,
}

/// The overview (`GET /api/v1/sources`).
#[derive(Clone, Debug, Serialize)]
pub struct Overview {
    pub sources: Vec<SourceOverview>,
    /// Why the repository could not be read, if it could not (the rest is from the state).
    pub repository_error: Option<String>,
    /// Snapshots left out (unreadable manifests), dates not trusted.
    pub warnings: Vec<String>,
}

/// One reading of the repository.
#[derive(Default)]
struct View {
    summaries: Vec<Summary>,
    entries: Vec<Entry>,
    reports: Vec<ReportObject>,
    /// Sources with base backups (point-in-time recovery): when their newest WAL segment was
    /// archived (`None`: none is).
    wal: BTreeMap<String, Option<Timestamp>>,
    error: Option<String>,
    warnings: Vec<String>,
}

struct Cached {
    at: Instant,
    generation: u64,
    view: Arc<View>,
}

/// The dashboard's reader: settings, live numbers, and the caches.
pub struct Data {
    settings: Arc<Settings>,
    specs: Vec<SourceSpec>,
    metrics: metrics::Shared,
    control: Arc<Control>,
    state_at: crate::state::StateAt,
    /// Held while the repository is read, so that one reading serves every waiting request.
    view: Mutex<Option<Cached>>,
    drills: Mutex<BTreeMap<String, Arc<DrillRecord>>>,
}

fn internal<T>(r: std::sync::LockResult<T>) -> T {
    r.unwrap_or_else(|p| p.into_inner())
}

impl Data {
    pub fn new(
        settings: Arc<Settings>,
        metrics: metrics::Shared,
        control: Arc<Control>,
        state_at: crate::state::StateAt,
    ) -> Result<Data> {
        Ok(Data {
            specs: settings.configured_sources(None)?,
            settings,
            metrics,
            control,
            state_at,
            view: Mutex::new(None),
            drills: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn control(&self) -> &Control {
        &self.control
    }

    fn repo(&self) -> Result<Repository<dyn crate::storage::WriteStore>> {
        Repository::open(
            self.settings.open_store()?,
            self.settings.master_key(&mut |_| {})?,
        )
    }

    /// The repository's view: the cached one while it is fresh.
    fn view(&self) -> Arc<View> {
        let mut cached = internal(self.view.lock());
        let generation = self.control.generation();
        if let Some(c) = cached.as_ref()
            && c.generation == generation
            && c.at.elapsed() < CACHE_FOR
        {
            return c.view.clone();
        }
        let view = Arc::new(self.read_view());
        *cached = Some(Cached {
            at: Instant::now(),
            generation,
            view: view.clone(),
        });
        view
    }

    fn read_view(&self) -> View {
        let mut warnings = Vec::new();
        let read = self.repo().and_then(|repo| {
            let summaries = crate::ops::list::list(&repo, None, &mut |w| warnings.push(w))?;
            let entries = repo.entries(None)?;
            let reports = reports(repo.store())?;
            let wal = wal_newest(&repo, &mut warnings)?;
            Ok((summaries, entries, reports, wal))
        });
        match read {
            Ok((summaries, entries, reports, wal)) => View {
                summaries,
                entries,
                reports,
                wal,
                error: None,
                warnings,
            },
            // No backup yet: nothing to show, and nothing wrong.
            Err(e) if e.kind() == ErrorKind::NotFound => View {
                warnings,
                ..Default::default()
            },
            Err(e) => {
                tracing::warn!(error = %e.message(), "the dashboard cannot read the repository");
                View {
                    error: Some(e.message().to_string()),
                    warnings,
                    ..Default::default()
                }
            }
        }
    }

    /// A drill record, read once.
    fn drill(&self, source: &str, id: &SnapshotId, drill: &SnapshotId) -> Result<Arc<DrillRecord>> {
        let key = crate::catalog::repo::drill_key(source, id, drill);
        if let Some(r) = internal(self.drills.lock()).get(&key) {
            return Ok(r.clone());
        }
        let r = Arc::new(self.repo()?.drill(source, id, drill)?);
        internal(self.drills.lock()).insert(key, r.clone());
        Ok(r)
    }

    /// Every source: the configured ones, in the file's order, then those only the repository
    /// knows, by name.
    fn names(&self, view: &View) -> Vec<String> {
        let mut names: Vec<String> = self.specs.iter().map(|s| s.name.clone()).collect();
        let known: BTreeSet<&str> = view
            .summaries
            .iter()
            .map(|s| s.source.as_str())
            .chain(view.wal.keys().map(String::as_str))
            .collect();
        for n in known {
            if !names.iter().any(|c| c == n) {
                names.push(n.to_string());
            }
        }
        names
    }

    /// A source name from a URL: valid, and one this dashboard knows.
    fn check_name(&self, view: &View, name: &str) -> Result<()> {
        check_source_name(name)?;
        if self.names(view).iter().any(|n| n == name) {
            Ok(())
        } else {
            Err(Error::not_found(format!("no source named {name:?}"))
                .with_hint("GET /api/v1/sources lists the sources"))
        }
    }

    pub fn overview(&self) -> Result<Overview> {
        let view = self.view();
        let state = self.state_at.open()?;
        let now = Timestamp::now();
        let sources = self
            .names(&view)
            .iter()
            .map(|n| self.source_overview(&view, &state, n, now))
            .collect::<Result<Vec<_>>>()?;
        Ok(Overview {
            sources,
            repository_error: view.error.clone(),
            warnings: view.warnings.clone(),
        })
    }

    fn source_overview(
        &self,
        view: &View,
        state: &State,
        name: &str,
        now: Timestamp,
    ) -> Result<SourceOverview> {
        let spec = self.specs.iter().find(|s| s.name == name);
        let snaps: Vec<&Summary> = view.summaries.iter().filter(|s| s.source == name).collect();
        let live = internal(self.metrics.lock())
            .sources
            .get(name)
            .cloned()
            .unwrap_or_default();
        let last_drilled = snaps
            .iter()
            .rev()
            .find(|s| s.status != Status::NotDrilled)
            .copied();
        // The failed drill's own words, from its record.
        let drill_problem = last_drilled
            .filter(|s| s.status == Status::DrillFailed && !s.drill_unreadable)
            .and_then(|s| {
                let d = s.last_drill.as_ref()?;
                let r = self.drill(name, &s.id, d).ok()?;
                Some(first_problem(&r))
            });
        let sealed = snaps.iter().rev().find(|s| s.status == Status::Sealed);
        let health = judge(&Judged {
            now,
            interval: spec.and_then(|s| s.policy.schedule.as_ref().map(|x| x.interval(now))),
            stale_after: spec.and_then(|s| s.policy.stale_after(now)),
            drills: spec.is_none_or(|s| s.policy.drill),
            snapshots: &snaps,
            last_drilled,
            drill_problem,
            last_attempt: state.last_attempt(name, Job::Backup)?,
            last_drill_run: state
                .last(name, Job::Drill, None)?
                .filter(|r| r.result != RunResult::Interrupted),
        });
        let mut health = health;
        let wal_archived_to = view.wal.get(name).copied().flatten();
        if let Some(newest) = view.wal.get(name) {
            let r = wal_reason(*newest, now);
            health.level = health.level.max(r.level);
            health.word = health.level.word();
            health.reasons.push(r);
        }
        let mut restore_times: Vec<RestorePoint> = snaps
            .iter()
            .filter_map(|s| {
                Some(RestorePoint {
                    snapshot: s.id.clone(),
                    at: s.created,
                    seconds: s.tested_restore_seconds?,
                })
            })
            .collect();
        restore_times.drain(..restore_times.len().saturating_sub(SPARK_POINTS));
        Ok(SourceOverview {
            name: name.to_string(),
            kind: spec.map(|s| s.kind().to_string()),
            configured: spec.is_some(),
            scheduled: self.control.runs(name),
            schedule: spec.and_then(|s| s.policy.schedule.as_ref().map(|x| x.to_string())),
            health,
            snapshots: snaps.len(),
            stored_bytes: snaps.iter().map(|s| s.stored_bytes).sum(),
            last_backup: snaps.last().map(|s| s.finished),
            next_run: live.next_run,
            stale_after_seconds: spec.and_then(|s| s.policy.stale_after(now).map(|d| d.as_secs())),
            last_drill: last_drilled.map(|s| LastDrill {
                snapshot: s.id.clone(),
                drill: s.last_drill.clone(),
                status: s.status,
                passed: s.status == Status::Sealed,
            }),
            tested_restore_seconds: sealed.and_then(|s| s.tested_restore_seconds),
            tested_restore_snapshot: sealed.map(|s| s.id.clone()),
            restore_times,
            running: self.control.busy(name),
            objectives: objectives(spec, &snaps, now),
            wal_archived_to,
        })
    }

    pub fn source(&self, name: &str) -> Result<SourceDetail> {
        let view = self.view();
        self.check_name(&view, name)?;
        let state = self.state_at.open()?;
        let source = self.source_overview(&view, &state, name, Timestamp::now())?;
        let mut snapshots: Vec<Summary> = view
            .summaries
            .iter()
            .filter(|s| s.source == name)
            .cloned()
            .collect();
        snapshots.reverse();
        let mut drills = Vec::new();
        'entries: for e in view.entries.iter().rev().filter(|e| e.source == name) {
            for d in e.drills.iter().rev() {
                if drills.len() >= HISTORY {
                    break 'entries;
                }
                drills.push(match self.drill(name, &e.id, d) {
                    Ok(r) => drill_line(&r),
                    Err(err) => DrillLine {
                        snapshot: e.id.clone(),
                        drill: d.clone(),
                        result: "unreadable".into(),
                        started: None,
                        finished: None,
                        total_seconds: None,
                        tables: 0,
                        mismatches: Vec::new(),
                        problems: vec![err.message().to_string()],
                    },
                });
            }
        }
        drills.sort_by(|a, b| b.drill.cmp(&a.drill));
        Ok(SourceDetail {
            source,
            snapshots,
            drills,
            runs: state.history(Some(name), HISTORY)?,
        })
    }

    pub fn snapshots(&self, name: &str) -> Result<Vec<Summary>> {
        let view = self.view();
        self.check_name(&view, name)?;
        let mut out: Vec<Summary> = view
            .summaries
            .iter()
            .filter(|s| s.source == name)
            .cloned()
            .collect();
        out.reverse();
        Ok(out)
    }

    /// The workers and every scheduled job, from the (shared) state.
    pub fn fleet(&self) -> Result<crate::ops::fleet::Fleet> {
        crate::ops::fleet::view(&self.state_at.open()?, Timestamp::now())
    }

    pub fn runs(&self, name: &str) -> Result<Vec<Run>> {
        let view = self.view();
        self.check_name(&view, name)?;
        self.state_at.open()?.history(Some(name), HISTORY)
    }

    pub fn snapshot(&self, name: &str, id: &str) -> Result<SnapshotDetail> {
        let view = self.view();
        self.check_name(&view, name)?;
        let not_found = || {
            Error::not_found(format!("no snapshot {id:?} of source {name:?}"))
                .with_hint(format!("GET /api/v1/sources/{name}/snapshots lists them"))
        };
        let id = SnapshotId::parse(id).map_err(|_| not_found())?;
        let entry = view
            .entries
            .iter()
            .find(|e| e.source == name && e.id == id)
            .ok_or_else(not_found)?;
        let repo = self.repo()?;
        let (m, summary, _) = crate::ops::list::show(&repo, id.as_str(), Some(name))?;
        let mut drills = Vec::new();
        for d in entry.drills.iter().rev() {
            if let Ok(r) = self.drill(name, &id, d) {
                drills.push((*r).clone());
            }
        }
        let location = self.settings.location().ok();
        Ok(SnapshotDetail {
            restore: restore_commands(&m, location.as_ref()),
            facts: Facts {
                kind: m.source.kind.to_string(),
                database: m.source.database.clone(),
                host: m.source.host.clone(),
                server_version: m.server.version.clone(),
                dump_version: m.dump.version.clone(),
                started: m.started,
                finished: m.finished,
                plain_bytes: m.sizes.plain_bytes,
                compressed_bytes: m.sizes.compressed_bytes,
                stored_bytes: m.sizes.stored_bytes,
                compression: m.compression.to_string(),
                encryption: m.encryption.algorithm.clone(),
                key_id: m.encryption.key_id.clone(),
                data_object: m.data.key.clone(),
                verification: m.verification.method.label().to_string(),
                verification_note: m.verification.note.clone(),
                files: m.files.as_ref().map(|f| f.files),
                file_bytes: m.files.as_ref().map(|f| f.bytes),
            },
            tables: m
                .verification
                .tables
                .iter()
                .map(|t| TableRow {
                    schema: t.schema.clone(),
                    name: t.name.clone(),
                    rows: t.rows,
                    digest: t.digest.is_some(),
                })
                .collect(),
            summary,
            drills,
        })
    }

    pub fn drills(&self, name: &str) -> Result<Vec<DrillLine>> {
        Ok(self.source(name)?.drills)
    }

    pub fn reports(&self) -> Result<Vec<ReportObject>> {
        let view = self.view();
        let mut out = view.reports.clone();
        if !view.summaries.is_empty() {
            let now = Timestamp::now();
            let current = now.strftime("%Y-%m").to_string();
            for (month, partial) in [(current, true), (Period::last_full(now).month, false)] {
                if !out.iter().any(|r| r.month == month) {
                    out.push(ReportObject {
                        month,
                        key: None,
                        bytes: None,
                        stored: false,
                        partial,
                    });
                }
            }
        }
        out.sort_by(|a, b| b.month.cmp(&a.month));
        Ok(out)
    }

    /// A month's report: the stored one, else drawn from the repository now.
    pub fn report(&self, month: &str) -> Result<Report> {
        let now = Timestamp::now();
        let period = Period::month(month, now)?;
        let key = self.settings.master_key(&mut |_| {})?;
        let mut facts = op::repository_facts(&self.settings.location()?, &key);
        let repo = Repository::open(self.settings.open_store()?, key)?;
        if op::month_stored(&repo, &period.month)? {
            return op::read_month(&repo, &period.month);
        }
        // Only for a report drawn now (a stored one says what the bucket said then).
        facts.object_lock = op::object_lock_fact(repo.store());
        let state = self.state_at.open()?;
        let scope = Scope {
            period,
            source: None,
            configured: &self.specs,
            history: Some(&state),
            repository: facts,
            now,
        };
        op::generate(&repo, &scope, &mut |_| {})
    }
}

/// WAL this far behind is a warning: with `archive_timeout` unset, a quiet database archives
/// only when a segment fills, and every minute of it is what a loss would cost.
pub const WAL_LAG_WARNING: Duration = Duration::from_secs(15 * 60);

/// When each source with base backups last archived a segment (one WAL header read each).
fn wal_newest<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    warnings: &mut Vec<String>,
) -> Result<BTreeMap<String, Option<Timestamp>>> {
    let mut out = BTreeMap::new();
    let names: BTreeSet<String> = repo
        .base_entries(None)?
        .into_iter()
        .map(|b| b.source)
        .collect();
    for name in names {
        let bases = repo.base_manifests(&name)?;
        if bases.is_empty() {
            continue;
        }
        match crate::ops::pitr::target::window(repo, &name, &bases) {
            Ok(w) => {
                out.insert(name, w.to_time);
            }
            Err(e) => warnings.push(format!(
                "the WAL archive of {name} cannot be read: {}",
                e.message()
            )),
        }
    }
    Ok(out)
}

/// The WAL archive's lag, in words.
fn wal_reason(newest: Option<Timestamp>, now: Timestamp) -> Reason {
    match newest {
        None => Reason {
            level: Level::Amber,
            text: "base backups but no WAL archived: it restores only to the end of a base backup"
                .into(),
        },
        Some(t) => {
            let at = t
                .round(jiff::Unit::Second)
                .unwrap_or(t)
                .strftime("%Y-%m-%d %H:%M:%S UTC");
            if now.duration_since(t).as_secs_f64() > WAL_LAG_WARNING.as_secs_f64() {
                Reason {
                    level: Level::Amber,
                    text: format!(
                        "WAL archived up to {at}, more than {} ago (set archive_timeout to bound it on a quiet database)",
                        crate::units::spoken(WAL_LAG_WARNING)
                    ),
                }
            } else {
                Reason {
                    level: Level::Green,
                    text: format!("WAL archived up to {at}"),
                }
            }
        }
    }
}

/// Achieved against promised over the last [`OBJECTIVE_DAYS`], from the snapshots' summaries,
/// with the report's measures.
fn objectives(spec: Option<&SourceSpec>, snaps: &[&Summary], now: Timestamp) -> Objectives {
    let period = Period::last_days(now, OBJECTIVE_DAYS);
    let drills_on = spec.is_none_or(|s| s.policy.drill);
    let good: Vec<i64> = snaps
        .iter()
        .filter(|s| s.status == Status::Sealed || (!drills_on && s.status == Status::NotDrilled))
        .map(|s| s.created.as_second())
        .collect();
    let interval = spec
        .and_then(|s| s.policy.schedule.as_ref())
        .map(|s| s.interval(period.start));
    let promised = spec.map(|s| s.policy.objectives).unwrap_or_default();
    let promise = crate::report::model::rpo_with_slack(&promised, interval).map(|s| s as i64);
    let rp = measure::recovery_point(
        &good,
        period.start.as_second(),
        period.end.as_second(),
        promise,
    );
    let times: Vec<f64> = snaps
        .iter()
        .filter(|s| period.contains(s.created))
        .filter_map(|s| s.tested_restore_seconds)
        .collect();
    crate::report::model::objectives(
        &promised,
        interval,
        rp.worst.map(|g| g.seconds() as f64),
        measure::stats(&times).as_ref(),
    )
}

/// The months stored under `reports/` (written by `serve`), newest first.
fn reports<S: ReadStore + ?Sized>(store: &S) -> Result<Vec<ReportObject>> {
    let now = Timestamp::now();
    let mut out: Vec<ReportObject> = store
        .list("reports/")?
        .into_iter()
        .filter_map(|o| {
            let month = o.key.strip_prefix("reports/")?;
            let p = Period::month(month, now)
                .ok()
                .filter(|p| p.month == month)?;
            Some(ReportObject {
                month: p.month,
                key: Some(o.key.clone()),
                bytes: Some(o.size),
                stored: true,
                partial: false,
            })
        })
        .collect();
    out.sort_by(|a, b| b.month.cmp(&a.month));
    Ok(out)
}

fn first_problem(r: &DrillRecord) -> String {
    r.problems
        .first()
        .cloned()
        .unwrap_or_else(|| "see its drill record".to_string())
}

fn drill_line(r: &DrillRecord) -> DrillLine {
    DrillLine {
        snapshot: r.snapshot_id.clone(),
        drill: r.drill_id.clone(),
        result: if r.passed() { "passed" } else { "failed" }.into(),
        started: Some(r.started),
        finished: Some(r.finished),
        total_seconds: Some((r.timings.total * 10.0).round() / 10.0),
        tables: r.tables.len(),
        mismatches: r.tables.iter().filter(|t| !t.ok()).cloned().collect(),
        problems: r.problems.clone(),
    }
}

/// The commands we document (README "Restoring without OffsiteDB").
fn restore_commands(m: &crate::catalog::Manifest, location: Option<&Location>) -> RestoreCommands {
    let (src, id) = (&m.source.name, &m.snapshot_id);
    let unzip = match m.compression.algorithm {
        crate::pipeline::compress::Algorithm::Gzip => "gunzip",
        crate::pipeline::compress::Algorithm::Zstd => "zstd -d",
    };
    let (to, load) = if m.is_directory() {
        ("--to-dir DIR".to_string(), "tar -x".to_string())
    } else {
        (
            "--to postgres://...".to_string(),
            "pg_restore --dbname postgres://...".to_string(),
        )
    };
    let fetch = match location {
        Some(Location::S3(s)) => {
            let prefix = if s.prefix.is_empty() {
                String::new()
            } else {
                format!("{}/", s.prefix)
            };
            format!("aws s3 cp s3://{}/{prefix}{} data", s.bucket, m.data.key)
        }
        Some(Location::Local(p)) => format!("cp {} data", p.join(&m.data.key).display()),
        None => format!("copy the object {} of the repository to ./data", m.data.key),
    };
    RestoreCommands {
        offsitedb: format!("offsitedb restore {id} --source {src} {to}"),
        decrypt: format!("offsitedb decrypt {id} --source {src} | {unzip} | {load}"),
        without_offsitedb: vec![
            fetch,
            format!("python3 tools/offsitedb-decrypt.py master.key < data | {unzip} | {load}"),
        ],
    }
}

/// What a source's level is judged from.
struct Judged<'a> {
    now: Timestamp,
    /// The schedule's normal gap between runs.
    interval: Option<Duration>,
    stale_after: Option<Duration>,
    /// Its jobs drill new snapshots.
    drills: bool,
    /// Oldest first.
    snapshots: &'a [&'a Summary],
    /// The newest snapshot with a drill result (or a damaged one).
    last_drilled: Option<&'a Summary>,
    /// The first problem of that drill, when it failed.
    drill_problem: Option<String>,
    /// From the history: the last backup that ran to an end, and the last drill.
    last_attempt: Option<Run>,
    last_drill_run: Option<Run>,
}

/// Green, amber or red, with every reason in words.
fn judge(j: &Judged<'_>) -> Health {
    let mut reasons = Vec::new();
    let mut say = |level, text: String| reasons.push(Reason { level, text });
    match j.snapshots.last() {
        None => say(Level::Amber, "no backup in the repository yet".into()),
        Some(newest) => {
            let age = j.now.duration_since(newest.finished);
            let over = |d: Duration| age.as_secs_f64() > d.as_secs_f64();
            // Dates, not ages, so that the words stay the same from one reading to the next.
            let at = newest
                .finished
                .round(jiff::Unit::Second)
                .unwrap_or(newest.finished)
                .strftime("%Y-%m-%d %H:%M:%S UTC");
            match (j.stale_after, j.interval) {
                (Some(stale), _) if over(stale) => say(
                    Level::Red,
                    format!(
                        "no backup since {at}: longer than stale_after ({})",
                        crate::units::duration(stale)
                    ),
                ),
                (_, Some(every)) if over(every.mul_f64(1.5)) => say(
                    Level::Amber,
                    format!(
                        "no backup since {at}: a scheduled run (every {}) was missed",
                        crate::units::duration(every)
                    ),
                ),
                _ => say(Level::Green, format!("last backup at {at}")),
            }
        }
    }
    if let Some(r) = j
        .last_attempt
        .as_ref()
        .filter(|r| r.result == RunResult::Failed)
    {
        say(
            Level::Red,
            format!(
                "the last backup, at {}, failed: {}",
                r.started.round(jiff::Unit::Second).unwrap_or(r.started),
                r.error.as_deref().unwrap_or("no error recorded")
            ),
        );
    }
    let repo_failed = match j.last_drilled {
        Some(s) if s.status == Status::Sealed => {
            say(
                Level::Green,
                format!(
                    "the last drill passed: snapshot {} restored and verified{}",
                    s.id,
                    s.tested_restore_seconds
                        .map(|t| format!(" in {t} s"))
                        .unwrap_or_default()
                ),
            );
            false
        }
        Some(s) if s.status == Status::Damaged => {
            say(
                Level::Red,
                format!(
                    "snapshot {} is damaged: its data object is missing or has the wrong size",
                    s.id
                ),
            );
            true
        }
        Some(s) => {
            say(
                Level::Red,
                format!(
                    "the last drill, of snapshot {}, failed: {}",
                    s.id,
                    s.status_reason
                        .clone()
                        .or_else(|| j.drill_problem.clone())
                        .unwrap_or_else(|| "see its drill record".into())
                ),
            );
            true
        }
        None if j.drills && !j.snapshots.is_empty() => {
            say(Level::Amber, "no snapshot has passed a drill yet".into());
            false
        }
        None => false,
    };
    // A drill that could not even run leaves no record: the history has it. One newer than the
    // last record counts.
    if let Some(r) = j
        .last_drill_run
        .as_ref()
        .filter(|r| r.result == RunResult::Failed)
        && !repo_failed
        && j.last_drilled
            .and_then(|s| s.last_drill.as_ref())
            .is_none_or(|d| d.time() < r.started)
    {
        say(
            Level::Red,
            format!(
                "the last drill, at {}, failed: {}",
                r.started.round(jiff::Unit::Second).unwrap_or(r.started),
                r.error.as_deref().unwrap_or("no error recorded")
            ),
        );
    }
    let level = reasons
        .iter()
        .map(|r| r.level)
        .max()
        .unwrap_or(Level::Green);
    Health {
        level,
        word: level.word(),
        reasons,
    }
}

#[cfg(test)]
mod tests;
