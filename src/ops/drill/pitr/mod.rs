/*!
`offsitedb drill --pitr`: prove that the newest base backup and the WAL archive after it restore,
to the end of the archive and to a point inside the window, and that what comes back is sound.

```text
plan (newest base backup, the window) ─► ops::pitr::run: fetch, pg_verifybackup, recovery settings
  ─► tuning in postgresql.auto.conf ─► server on a private socket: replay to the random point (pause)
  ─► stop, clear the target, start again: replay to the end of the archive (promote)
  ─► pg_amcheck, every table read once ─► stop ─► record base/<source>/<id>/drills/<drill-id>
```

One fetch serves both recoveries: a server paused at its target and shut down resumes archive
recovery from its last restartpoint when started again, now without a target, so the second
recovery replays to the end of the archive what a fresh copy would (every segment from the
base backup's start is replayed at least once), without a second download and extraction.

The random point is an LSN, not a time: recovery to a time stops only at a commit after it, and
the window's end (when the newest segment was archived) is later than the last commit, so a
random time near the end would be refused by PostgreSQL 14 and later ("recovery ended before
configured recovery target was reached") on a sound archive. Any LSN from the base backup's end
to the start of the newest archived segment has a record at or after it.

The throwaway copy (under the work folder, `cluster::work_parent`) runs as the cluster user when
we are root, with `fsync`, `synchronous_commit` and `full_page_writes` off (written to its own
`postgresql.auto.conf`), archiving off, no TCP. Problems of the environment (no server programs
of the backup's major, no pg_amcheck, the store unreachable) are errors and write no record;
problems of the backup or the archive (a damaged object, a missing or damaged segment, recovery
short of its target, corruption, a table that cannot be read) fail the drill and are recorded.
*/

mod check;
mod reach;

use std::path::{Path, PathBuf};
use std::time::Instant;

use jiff::Timestamp;

use crate::catalog::Repository;
use crate::catalog::base::BaseManifest;
use crate::catalog::base_drill::{
    BASE_DRILL_VERSION, BaseDrillRecord, Check, PitrTimings, TargetCheck, Verdict, WalReplayed,
};
use crate::catalog::drill::DrillResult;
use crate::catalog::ids::SnapshotId;
use crate::error::{Error, ErrorKind, Result};
use crate::ops::pitr::{PitrOptions, Target, server, target};
use crate::postgres::binaries;
use crate::state::{Job, Outcome, State};
use crate::storage::WriteStore;
use crate::storage::s3::Credentials;
use crate::storage::{Location, ReadStore};
use crate::wal::name::{Lsn, WalName};

/// How a PITR drill is asked for.
#[derive(Clone, Debug)]
pub struct PitrDrillOptions {
    /// `None`: the end of the archive and a random point inside the window (two recoveries);
    /// `Some(Target::Latest)`: the end only; `Some(Target::Time(t))`: that moment only.
    pub target: Option<Target>,
    /// Where the throwaway copy goes; default `$OFFSITEDB_TMPDIR` or the system temp dir.
    pub work_dir: Option<PathBuf>,
    pub pg_bin_dirs: Vec<PathBuf>,
    /// The repository and how to reach it, for the copy's `restore_command`.
    pub location: Location,
    pub credentials: Credentials,
}

/// What [`run`] found: the record (stored in the repository) and the error that failed it.
pub struct PitrDrillOutcome {
    pub record: BaseDrillRecord,
    pub failure: Option<Error>,
}

/// Drills `source`'s newest base backup (for a time target: the newest that ends before it)
/// and records the result next to it.
pub fn run<S: WriteStore + ?Sized>(
    repo: &Repository<S>,
    source: &str,
    opts: &PitrDrillOptions,
    note: &mut dyn FnMut(String),
) -> Result<PitrDrillOutcome> {
    let r = drill(repo, source, opts, note);
    // After a signal whatever failed on the way out is the signal's doing; nothing is recorded.
    crate::interrupt::check().map_err(|e| e.context("PITR drill stopped, nothing recorded"))?;
    r
}

/// [`run`], recorded in the run history as a `pitr_drill` step when `state` is given.
pub fn run_recorded<S: WriteStore + ?Sized>(
    repo: &Repository<S>,
    source: &str,
    opts: &PitrDrillOptions,
    state: Option<&State>,
    note: &mut dyn FnMut(String),
) -> Result<PitrDrillOutcome> {
    let id = match state {
        Some(st) => Some(st.start(Job::PitrDrill, source, Timestamp::now())?),
        None => None,
    };
    let r = run(repo, source, opts, note);
    if let (Some(st), Some(id)) = (state, id) {
        let o = match &r {
            Ok(o) => {
                let mut out = o.failure.as_ref().map(Outcome::failed).unwrap_or_default();
                out.snapshot = Some(o.record.base_id.to_string());
                out.restore_seconds = Some(o.record.timings.total);
                out
            }
            Err(e) => Outcome::failed(e),
        };
        st.finish(id, Timestamp::now(), &o)?;
    }
    r
}

/// One recovery of the drill.
#[derive(Clone, Debug)]
struct Leg {
    target: Target,
    random: bool,
}

/// The record as it fills.
struct Draft {
    targets: Vec<TargetCheck>,
    problems: Vec<String>,
    notes: Vec<String>,
    verifybackup: Check,
    amcheck: Check,
    tables: Vec<crate::catalog::base_drill::TableRead>,
    fetched: std::collections::BTreeSet<String>,
    fetch: f64,
    replay: f64,
    verify: f64,
}

fn drill<S: WriteStore + ?Sized>(
    repo: &Repository<S>,
    source: &str,
    opts: &PitrDrillOptions,
    note: &mut dyn FnMut(String),
) -> Result<PitrDrillOutcome> {
    let started = Timestamp::now();
    let t0 = Instant::now();
    let first = match &opts.target {
        None | Some(Target::Latest) => Target::Latest,
        Some(t @ Target::Time(_)) => t.clone(),
        Some(other) => {
            return Err(Error::config(format!(
                "a PITR drill recovers to a time or to the end of the archive, not to {}",
                other.describe()
            )));
        }
    };
    // The plan refuses a target outside the window before anything is fetched.
    let plan = target::plan(repo, source, &first, None)?;
    let base = plan.backup.clone();
    // The environment, checked before the download.
    let dirs = binaries::search_dirs(&opts.pg_bin_dirs);
    binaries::server_dir(Some(base.server.major), &dirs)?;
    let amcheck = check::amcheck_program(base.server.major, &dirs)?;
    let end = archive_end(repo, source, &base)?;

    let mut legs = Vec::new();
    let mut draft = Draft {
        targets: Vec::new(),
        problems: Vec::new(),
        notes: Vec::new(),
        verifybackup: Check::not_run("the base backup was not fetched"),
        amcheck: Check::not_run("recovery did not reach the end of the archive"),
        tables: Vec::new(),
        fetched: Default::default(),
        fetch: 0.0,
        replay: 0.0,
        verify: 0.0,
    };
    if let Some(missing) = &end.missing_from {
        draft.notes.push(format!(
            "the archive's listing has no segment {missing}, and WAL after it"
        ));
    }
    if opts.target.is_none() {
        match random_lsn(base.end_lsn, end.newest_start)? {
            Some(l) => legs.push(Leg {
                target: Target::Lsn(l),
                random: true,
            }),
            None => draft.notes.push(format!(
                "no WAL is archived past the base backup's end ({}) but its last segment: no random point to recover to",
                base.end_lsn
            )),
        }
    }
    legs.push(Leg {
        target: first,
        random: false,
    });

    let work = work_folder(opts)?;
    let pgdata = work.path().join("cluster/data");
    let users = vec![base.source.user.clone(), "postgres".to_string()];
    let popts = PitrOptions {
        target: legs[0].target.clone(),
        action: if legs.len() > 1 { "pause" } else { "promote" }.into(),
        timeline: "latest".into(),
        backup: Some(base.backup_id.to_string()),
        start: false,
        keep_running: false,
        no_archive: true,
        pg_bin_dirs: opts.pg_bin_dirs.clone(),
        location: opts.location.clone(),
        credentials: opts.credentials.clone(),
    };
    let t = Instant::now();
    let fetched = crate::ops::pitr::run(repo, repo.key(), source, &pgdata, &popts, note);
    draft.fetch = t.elapsed().as_secs_f64();
    match fetched {
        Ok(report) => {
            draft.verifybackup = verify_check(&report.verify);
            tune(&pgdata)?;
            recover(
                &pgdata,
                &legs,
                &users,
                &end,
                &base,
                opts,
                amcheck.as_ref(),
                &mut draft,
            )?;
        }
        Err(e) if backup_fault(&e) => {
            if e.message().contains("pg_verifybackup") {
                draft.verifybackup = Check {
                    verdict: Verdict::Failed,
                    detail: e.message().to_string(),
                };
            }
            draft.problems.push(e.message().to_string());
        }
        Err(e) if e.kind() == ErrorKind::Interrupted => return Err(e),
        // The extraction reports a chunk that fails authentication as a write error of the
        // file it was writing: read the object alone to tell a damaged backup from a full disk.
        Err(e) => match authenticate(repo, &base) {
            Err(bad) if backup_fault(&bad) => draft.problems.push(bad.message().to_string()),
            _ => return Err(e),
        },
    }
    let record = finish(&base, started, t0, draft);
    crate::interrupt::check().map_err(|e| e.context("PITR drill stopped, nothing recorded"))?;
    repo.commit_base_drill(&record)?;
    let failure = (!record.passed()).then(|| failed(&record));
    Ok(PitrDrillOutcome { record, failure })
}

/// Errors of the fetch that say the base backup is bad (not the environment): it does not
/// authenticate, does not match its manifest or pg_verifybackup, or its data is missing.
fn backup_fault(e: &Error) -> bool {
    matches!(e.kind(), ErrorKind::Integrity | ErrorKind::NotFound)
}

/// Reads the whole base backup object, unsealed (every chunk authenticated) and discarded.
fn authenticate<S: ReadStore + ?Sized>(repo: &Repository<S>, m: &BaseManifest) -> Result<()> {
    let what = format!("base backup {}/{}", m.source.name, m.backup_id);
    let mut r = repo.open_base_data(m)?;
    std::io::copy(&mut r, &mut std::io::sink())
        .map_err(|e| Error::from_io(e, &format!("cannot read {what}")).context(&what))?;
    Ok(())
}

fn verify_check(summary: &str) -> Check {
    Check {
        verdict: if summary.starts_with("verified with") {
            Verdict::Passed
        } else {
            Verdict::NotRun
        },
        detail: summary.to_string(),
    }
}

/// The drill's own folder; as root, the copy's parent goes to the cluster user, whom
/// `base_fetch` then gives the files to (PostgreSQL refuses root).
fn work_folder(opts: &PitrDrillOptions) -> Result<tempfile::TempDir> {
    let parent = crate::ops::work_parent(opts.work_dir.clone())?;
    let work = tempfile::Builder::new()
        .prefix("offsitedb-pitr-drill-")
        .tempdir_in(&parent)
        .map_err(|e| Error::io_at("cannot create a temporary folder in", &parent, &e))?;
    let _ = std::fs::set_permissions(
        work.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    );
    let cluster = work.path().join("cluster");
    std::fs::create_dir(&cluster).map_err(|e| Error::io_at("cannot create", &cluster, &e))?;
    if let Some(w) = crate::cluster::run_as()? {
        crate::cluster::chown_tree(&cluster, &w)?;
    }
    Ok(work)
}

/// The speed settings of a throwaway copy, in its own `postgresql.auto.conf` (read last).
/// `hot_standby` on: a recovery paused at its target must accept connections (off, PostgreSQL
/// shuts down instead of pausing).
fn tune(pgdata: &Path) -> Result<()> {
    append_auto_conf(
        pgdata,
        "\n# offsitedb drill --pitr: a throwaway copy, tuned for replay speed\n\
         fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nhot_standby = on\n",
    )
}

fn append_auto_conf(pgdata: &Path, text: &str) -> Result<()> {
    crate::ops::pitr::settings::append_auto_conf(pgdata, text).map(|_| ())
}

/// Where the archive ends for a restore of `base`: the newest archived segment on the path
/// to the newest timeline it can reach.
struct ArchiveEnd {
    newest: Option<WalName>,
    /// Where `newest` starts (recovery to the end must replay past it).
    newest_start: Lsn,
    segment_size: u64,
    missing_from: Option<String>,
}

fn archive_end<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    source: &str,
    base: &BaseManifest,
) -> Result<ArchiveEnd> {
    let loaded = crate::ops::wal_show::load(repo, source, &mut |_| {})?;
    let size = loaded.segment_size;
    let Some(start) = loaded.base_start(base) else {
        return Ok(ArchiveEnd {
            newest: None,
            newest_start: base.end_lsn,
            segment_size: size,
            missing_from: None,
        });
    };
    let archive = &loaded.archive;
    let (_, steps, _) = archive.latest_path(start.timeline, start.start_segment, start.start_lsn);
    let newest = steps.iter().rev().find_map(|s| {
        archive
            .files()
            .iter()
            .filter(|f| f.name.is_segment() && f.name.timeline == s.timeline)
            .map(|f| f.name.segment_number(size))
            .filter(|n| *n >= s.first && s.end.is_none_or(|e| *n < e))
            .max()
            .map(|n| archive.name(s.timeline, n))
    });
    Ok(ArchiveEnd {
        newest_start: newest.as_ref().map_or(base.end_lsn, |n| n.start_lsn(size)),
        newest,
        segment_size: size,
        missing_from: archive.coverage(&start).missing_from,
    })
}

/// An LSN drawn evenly from `from..=to`; `None` when the range is empty.
fn random_lsn(from: Lsn, to: Lsn) -> Result<Option<Lsn>> {
    if to <= from {
        return Ok(None);
    }
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|e| Error::internal(format!("random: {e}")))?;
    Ok(Some(Lsn(
        from.0 + u64::from_le_bytes(b) % (to.0 - from.0 + 1)
    )))
}

/// The recoveries, one after the other on the same copy; the last one is checked.
#[allow(clippy::too_many_arguments)]
fn recover(
    pgdata: &Path,
    legs: &[Leg],
    users: &[String],
    end: &ArchiveEnd,
    base: &BaseManifest,
    opts: &PitrDrillOptions,
    amcheck: Option<&crate::postgres::PgProgram>,
    d: &mut Draft,
) -> Result<()> {
    for (i, leg) in legs.iter().enumerate() {
        let last = i + 1 == legs.len();
        if i > 0 {
            // The earlier target cleared (the last setting of a name wins): on to the end.
            append_auto_conf(
                pgdata,
                "\n# offsitedb drill --pitr: on to the end of the archive\n\
                 recovery_target_lsn = ''\nrecovery_target_time = ''\n",
            )?;
        }
        let log = pgdata
            .parent()
            .expect("the data folder is in the work folder")
            .join(format!("recovery-{}.log", i + 1));
        let t = Instant::now();
        let mut server = server::start(pgdata, &log, &opts.pg_bin_dirs, users.to_vec(), false)?;
        let waited = server.wait(if last { "promote" } else { "pause" });
        let seconds = t.elapsed().as_secs_f64();
        d.replay += seconds;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        d.fetched.extend(reach::restored_segments(&text));
        let timeline = reach::last_timeline(&text).or(Some(base.timeline));
        let reached = match waited {
            Err(e) if e.kind() == ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                server.stop();
                d.problems.push(stopped_problem(leg, &e, &text));
                d.targets.push(TargetCheck {
                    seconds: round(seconds),
                    ..target_check(leg, None, timeline)
                });
                return Ok(());
            }
            Ok(r) => r,
        };
        let mut check = target_check(leg, Some(&reached), timeline);
        check.seconds = round(seconds);
        if let Some(problem) = judge(leg, &check, end, &text) {
            check.reached = false;
            d.problems.push(problem);
        }
        let ok = check.reached;
        d.targets.push(check);
        if ok && last {
            let t = Instant::now();
            verify(&reached, users, amcheck, d);
            d.verify = t.elapsed().as_secs_f64();
        }
        server.stop();
        if !ok {
            return Ok(());
        }
    }
    Ok(())
}

/// pg_amcheck and the table reads, on the promoted server.
fn verify(
    r: &server::Reached,
    users: &[String],
    amcheck: Option<&crate::postgres::PgProgram>,
    d: &mut Draft,
) {
    let (Some(dir), Some(port)) = (&r.socket_dir, r.port) else {
        d.problems
            .push("the recovered server gave no socket to check it through".into());
        return;
    };
    let conn = match check::Conn::find(dir, port, users) {
        Ok(c) => c,
        Err(e) => {
            d.problems.push(format!(
                "cannot connect to the recovered server: {}",
                e.message()
            ));
            return;
        }
    };
    d.amcheck = check::amcheck(&conn, amcheck, &mut d.problems);
    match check::read_tables(&conn, &mut d.problems) {
        Ok(t) => d.tables = t,
        Err(e) => d
            .problems
            .push(format!("cannot read the tables: {}", e.message())),
    }
}

fn target_check(leg: &Leg, r: Option<&server::Reached>, timeline: Option<u32>) -> TargetCheck {
    let (kind, value) = match &leg.target {
        Target::Latest => ("latest", None),
        Target::Time(t) => ("time", Some(target::postgres_time(*t))),
        Target::Lsn(l) => ("lsn", Some(l.to_string())),
        Target::Xid(x) => ("xid", Some(x.to_string())),
        Target::Name(n) => ("name", Some(n.clone())),
    };
    TargetCheck {
        kind: kind.into(),
        value,
        random: leg.random,
        reached: r.is_some(),
        state: r.map(|r| r.state.clone()),
        lsn: r
            .and_then(|r| r.replay_lsn.as_deref())
            .and_then(|l| Lsn::parse(l).ok()),
        last_transaction: r.and_then(|r| r.last_transaction.clone()),
        timeline: r.and(timeline),
        stopped: r.and_then(|r| r.stopped.clone()),
        seconds: 0.0,
    }
}

/// Whether a recovery that ended without an error got to its target; the problem if not.
fn judge(leg: &Leg, c: &TargetCheck, end: &ArchiveEnd, log: &str) -> Option<String> {
    let Some(lsn) = c.lsn else {
        return Some(format!(
            "recovery to {} ended without a replay position",
            leg.target.describe()
        ));
    };
    match &leg.target {
        Target::Latest => {
            if lsn >= end.newest_start {
                return None;
            }
            let at = reach::first_not_archived(log).unwrap_or_else(|| {
                reach::segment_after(lsn, c.timeline.unwrap_or(1), end.segment_size)
            });
            Some(format!(
                "recovery to the end of the archive stopped early at segment {at}: replay ended at LSN {lsn}, before the newest archived segment {} (from LSN {}); the archive is missing {at} or cannot serve it",
                end.newest.as_ref().map_or("?".into(), |n| n.to_string()),
                end.newest_start
            ))
        }
        Target::Lsn(t) => {
            (lsn < *t).then(|| format!("recovery to LSN {t} stopped early, at LSN {lsn}"))
        }
        Target::Time(t) => {
            let last = c
                .last_transaction
                .as_deref()
                .and_then(|s| target::parse_time(&s.replace(" UTC", "Z")).ok());
            match last {
                Some(l) if l > *t => Some(format!(
                    "recovery to {} went past it: the last transaction replayed is of {}",
                    leg.target.describe(),
                    c.last_transaction.as_deref().unwrap_or("")
                )),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The problem of a recovery whose server stopped: its error, and the segment that stopped it.
fn stopped_problem(leg: &Leg, e: &Error, log: &str) -> String {
    let why = e
        .message()
        .strip_prefix("the restored server stopped before reaching the target: ")
        .unwrap_or(e.message());
    // The log line's time and process id say nothing here.
    let why = ["FATAL:", "PANIC:"]
        .iter()
        .find_map(|k| why.find(k).map(|at| &why[at..]))
        .unwrap_or(why);
    if let Some((seg, line)) = reach::failed_segment(log) {
        return format!(
            "recovery to {} failed at segment {seg}: {line} (the server: {why})",
            leg.target.describe()
        );
    }
    if let Some(seg) = reach::first_not_archived(log) {
        return format!(
            "recovery to {} stopped early at segment {seg}, which the archive does not have (the server: {why})",
            leg.target.describe()
        );
    }
    format!("recovery to {} failed: {why}", leg.target.describe())
}

fn finish(base: &BaseManifest, started: Timestamp, t0: Instant, d: Draft) -> BaseDrillRecord {
    let to = d.targets.iter().filter_map(|t| t.lsn).max();
    let size = base.segment_size.max(1);
    let wal = WalReplayed {
        from_lsn: base.start_lsn,
        to_lsn: to,
        bytes: to.map_or(0, |t| t.0.saturating_sub(base.start_lsn.0)),
        segments: to.map_or(0, |t| {
            t.segment(size).saturating_sub(base.start_lsn.segment(size)) + 1
        }),
        segments_fetched: d.fetched.len() as u64,
    };
    BaseDrillRecord {
        base_drill_version: BASE_DRILL_VERSION,
        drill_id: SnapshotId::new(started).unwrap_or_else(|_| base.backup_id.clone()),
        base_id: base.backup_id.clone(),
        source: base.source.name.clone(),
        result: if d.problems.is_empty() {
            DrillResult::Passed
        } else {
            DrillResult::Failed
        },
        started,
        finished: Timestamp::now(),
        timings: PitrTimings {
            fetch: round(d.fetch),
            replay: round(d.replay),
            verify: round(d.verify),
            total: round(t0.elapsed().as_secs_f64()),
        },
        targets: d.targets,
        wal,
        verifybackup: d.verifybackup,
        amcheck: d.amcheck,
        tables: d.tables,
        problems: d.problems,
        notes: d.notes,
        server_version: base.server.version.clone(),
        created_by: format!("offsitedb {}", crate::VERSION),
    }
}

/// The error of a drill that found problems: its first one.
fn failed(r: &BaseDrillRecord) -> Error {
    Error::new(
        ErrorKind::DrillFailed,
        format!(
            "PITR drill of base backup {}/{} failed: {}",
            r.source,
            r.base_id,
            r.problems.first().map(String::as_str).unwrap_or("")
        ),
    )
    .with_hint(format!(
        "the drill record is base/{}/{}/drills/{}; offsitedb wal-verify integrity --source {} checks every archived segment",
        r.source, r.base_id, r.drill_id, r.source
    ))
}

fn round(s: f64) -> f64 {
    (s * 100.0).round() / 100.0
}
