/*!
`offsitedb drill`: prove a snapshot restores, and that what comes back is what was dumped.

```text
download ─► unseal ─► decompress ─► dump inspector ─┬─ TOC ───► pg_restore --section=pre-data
                                                    ├─ rows ──► COPY … FROM STDIN on N connections
                                                    └─ other ─► pg_restore (large objects, sequences)
then pg_restore -j N --section=post-data, while each loaded table is read back and compared
```

That streamed restore ([`stream`]) is the drill. A snapshot whose rows were counted rather than
inspected, or an archive the inspector cannot follow, is instead spooled to a file (TOC offsets
filled in) and restored by `pg_restore -j N`, then verified the same way.

The drill restores into a throwaway cluster of the source's major version (initdb'd while the
download runs, tuned for restore speed, unix socket only), or into a temporary database on a
scratch server. Then every table is read back with `COPY … TO STDOUT` under pg_dump's own session
settings, and its rows and content digest are compared with the manifest. The result is written
to the repository as a new drill record; a snapshot is *sealed* when its latest drill passed.

Problems of the drill's own environment (no server programs of that major, not enough disk, an
extension the drill cluster lacks) are errors and write no record: they say nothing about the
snapshot. Problems of the snapshot (it does not decrypt, does not restore, or restores different
data) fail the drill and are recorded.
*/

mod folder;
mod pgrestore;
mod readback;
mod record;
mod spooled;
mod stream;
mod target;
mod verify;

use pgrestore::{pg_restore_command, pg_restore_piped, restore_problems};
use readback::SessionSql;
use record::{compare_archive, drill_record, failed, stopped};
use target::major_of;

pub use target::extension_package;

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Instant;

use jiff::Timestamp;

use crate::catalog::drill::TableCheck;
use crate::catalog::manifest::VerifyMethod;
use crate::catalog::{DrillRecord, Entry, Manifest, Repository};
use crate::dump::{self, DumpSummary};
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::{Counters, Progress};
use crate::postgres::{ConnInfo, binaries};
use crate::process::ChildProcess;
use crate::storage::WriteStore;

#[derive(Clone, Debug, Default)]
pub struct DrillOptions {
    pub pg_bin_dirs: Vec<PathBuf>,
    /// Restore into a temporary database on this server instead of a throwaway cluster.
    pub drill_server: Option<ConnInfo>,
    /// Where the spool file and the throwaway cluster go; default `$OFFSITEDB_TMPDIR` or the
    /// system temp dir.
    pub work_dir: Option<PathBuf>,
    /// Connections that load and verify tables (and pg_restore jobs); 0 = one per core.
    pub jobs: usize,
    /// Keep the database on the drill server afterwards (with `drill_server` only).
    pub keep: bool,
    pub progress: bool,
}

/// What `run` found: the record (also stored in the repository, when `stored`).
pub struct DrillOutcome {
    pub record: DrillRecord,
    /// The error that failed the drill, for the exit code and the headline.
    pub failure: Option<Error>,
}

/// Connections by default: one per core, up to this many.
const DEFAULT_JOBS_MAX: usize = 16;
/// The most `--jobs` a drill takes.
const JOBS_MAX: usize = 64;

/// Drills one snapshot and records the result in the repository.
pub fn run<S: WriteStore + ?Sized>(
    repo: &Repository<S>,
    entry: &Entry,
    opts: &DrillOptions,
    note: &mut dyn FnMut(String),
) -> Result<DrillOutcome> {
    // After a signal, whatever failed on the way out (a read cut short, a server stopping) is
    // the signal's doing: say that, with the interrupted exit code.
    run_drill(repo, entry, opts, note).map_err(|e| stopped().err().unwrap_or(e))
}

fn run_drill<S: WriteStore + ?Sized>(
    repo: &Repository<S>,
    entry: &Entry,
    opts: &DrillOptions,
    note: &mut dyn FnMut(String),
) -> Result<DrillOutcome> {
    // Checked before anything is read.
    let jobs = match opts.jobs {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get().min(DEFAULT_JOBS_MAX)),
        n if n > JOBS_MAX => {
            return Err(Error::config(format!(
                "--jobs {n} is more connections than a drill can use (at most {JOBS_MAX})"
            ))
            .with_hint("leave --jobs out to use one per core"));
        }
        n => n,
    };
    let started = Timestamp::now();
    let t0 = Instant::now();
    let m = repo.manifest(&entry.source, &entry.id)?;
    if m.is_directory() {
        return folder::directory_drill(repo, &m, opts, started, note);
    }
    let dirs = binaries::search_dirs(&opts.pg_bin_dirs);
    let pg_restore = super::pick_pg_restore(&m, &dirs)?;

    // Everything about the environment is checked before the download starts (the cluster
    // itself starts with the download).
    if opts.drill_server.is_none() {
        binaries::server_dir(Some(m.server.major), &dirs).map_err(|e| {
            e.context(format!(
                "a drill restores into a throwaway PostgreSQL {} (the source's version)",
                m.server.major
            ))
            .with_hint(format!(
                "install the PostgreSQL {} server (apt-get install postgresql-{}), list its bin directory in \
                 OFFSITEDB_PG_BIN_DIRS, or drill on a scratch server with --drill-server URL",
                m.server.major, m.server.major
            ))
        })?;
    }
    let parent = super::work_parent(opts.work_dir.clone())?;
    // A streamed drill writes no spool file (a snapshot with counted rows is spooled).
    let spool = m.verification.method != VerifyMethod::ArchiveDigest;
    spooled::check_space(&parent, &m, opts.drill_server.is_none(), spool)?;
    let work = tempfile::Builder::new()
        .prefix("offsitedb-drill-")
        .tempdir_in(&parent)
        .map_err(|e| Error::io_at("cannot create a temporary folder in", &parent, &e))?;
    // As root, the throwaway cluster runs as `postgres`, which must reach its folder inside.
    let _ = std::fs::set_permissions(
        work.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    );

    let ctx = Ctx {
        repo,
        m: &m,
        opts,
        jobs,
        pg_restore: &pg_restore.path,
        work: work.path(),
        started,
        t0,
        batch_bytes: env_size("OFFSITEDB_DRILL_BATCH_KIB", 1 << 10, 1, stream::BATCH_BYTES)?,
        split_bytes: env_size("OFFSITEDB_DRILL_SPLIT_MIB", 1 << 20, 0, verify::SPLIT_BYTES)?,
    };
    let mut notes = Vec::new();
    // An archive the backup could inspect is restored as it streams; anything else (counted
    // rows, or an archive this version cannot parse) is spooled and given to pg_restore -j.
    let mut attempt = if m.verification.method == VerifyMethod::ArchiveDigest {
        stream_restore(&ctx)?
    } else {
        Attempt::Fallback(None)
    };
    if let Attempt::Fallback(why) = attempt {
        if let Some(why) = why {
            notes.push(format!(
                "the archive could not be restored as it streamed ({why}): restored from a spooled copy instead"
            ));
        }
        attempt = spooled::classic_restore(&ctx)?;
    }

    let finish = |r: Restored| {
        let version = pg_restore.version.clone();
        drill_record(&m, started, t0, r, version, jobs, m.verification.method)
    };

    let (mut restored, unreadable) = match attempt {
        Attempt::Done(r) => (r, None),
        Attempt::Unreadable(error, r) => (r, Some(error)),
        Attempt::Fallback(_) => unreachable!("the spooled restore does not fall back"),
    };
    notes.append(&mut restored.notes);
    restored.notes = notes;
    // A snapshot that cannot be read back is a failed drill, and recorded as one.
    if let Some(error) = unreadable {
        restored.problems.insert(0, error.message().to_string());
        let record = finish(restored);
        stopped()?;
        repo.commit_drill(&record)?;
        return Ok(DrillOutcome {
            record,
            failure: Some(error),
        });
    }
    if m.verification.method == VerifyMethod::None {
        restored.notes.push(format!(
            "the manifest holds no row data ({}): only the restore itself was tested",
            m.verification
                .note
                .as_deref()
                .unwrap_or("no reason recorded")
        ));
    }
    let record = finish(restored);
    for n in &record.notes {
        note(n.clone());
    }
    stopped()?;
    repo.commit_drill(&record)?;
    let failure = (!record.passed()).then(|| failed(&record));
    Ok(DrillOutcome { record, failure })
}

/// What both restore paths share.
struct Ctx<'a, S: WriteStore + ?Sized> {
    repo: &'a Repository<S>,
    m: &'a Manifest,
    opts: &'a DrillOptions,
    jobs: usize,
    pg_restore: &'a std::path::Path,
    work: &'a std::path::Path,
    started: Timestamp,
    t0: Instant,
    /// Tuning (`OFFSITEDB_DRILL_BATCH_KIB`, `OFFSITEDB_DRILL_SPLIT_MIB`).
    batch_bytes: u64,
    split_bytes: u64,
}

/// A size from the environment in units of `unit` bytes, or `default`; anything but a whole
/// number of at least `min` is refused (a tuning knob that silently does nothing misleads).
fn env_size(name: &str, unit: u64, min: u64, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|&n| n >= min)
            .and_then(|n| n.checked_mul(unit))
            .ok_or_else(|| {
                Error::config(format!(
                    "{name} must be a whole number of at least {min}, not {v:?}"
                ))
                .with_hint(format!("unset {name} to use the default"))
            }),
    }
}

/// A restore and verification that ran (passed or not).
#[derive(Default)]
struct Restored {
    download_secs: f64,
    restore_secs: f64,
    verify_secs: f64,
    target_label: String,
    server_version: String,
    tables: Vec<TableCheck>,
    problems: Vec<String>,
    notes: Vec<String>,
}

enum Attempt {
    Done(Restored),
    /// The snapshot does not decrypt or authenticate: a failed drill.
    Unreadable(Error, Restored),
    /// The archive cannot be restored as it streams (why, if it was tried).
    Fallback(Option<String>),
}

/// The streamed restore (see [`stream`]): pre-data as soon as the table of contents is in,
/// rows loaded on `jobs` connections as they download, each table verified once loaded,
/// post-data while the last tables are read back.
fn stream_restore<S: WriteStore + ?Sized>(ctx: &Ctx<'_, S>) -> Result<Attempt> {
    let m = ctx.m;
    let jobs = ctx.jobs;
    let mut notes = Vec::new();
    let mut problems = Vec::new();
    let (toc_tx, toc_rx) = mpsc::sync_channel(1);
    let (report_tx, report_rx) = mpsc::channel();
    let (other_tx, other_rx) = mpsc::sync_channel(16);
    let (worker_txs, worker_rxs) = stream::queues(jobs);
    let feed = stream::Feed::new(
        toc_tx,
        worker_txs,
        report_tx.clone(),
        other_tx,
        ctx.batch_bytes as usize,
    );
    let counters = Counters::default();
    let progress = Progress::start("drill download", &counters, ctx.opts.progress);
    let t0 = ctx.t0;
    let counters_ref = &counters;

    std::thread::scope(|s| -> Result<Attempt> {
        // Everything the restore holds (the receiving ends) is dropped when this closure
        // returns, so a failure here stops the download thread instead of leaving it waiting.
        let dl = s.spawn(move || {
            let r = download_streamed(ctx.repo, m, counters_ref, feed);
            (r, t0.elapsed().as_secs_f64())
        });
        let mut dl = Some(dl);
        let mut join_download = || {
            dl.take()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        (
                            Err(Error::internal("the drill download thread panicked")),
                            0.0,
                        )
                    })
                })
                .unwrap_or_else(|| (Err(Error::internal("the download was joined twice")), 0.0))
        };
        let cluster = ctx.start_cluster()?;
        let mut restored = ctx.restored(cluster.as_ref());
        let Ok(toc) = toc_rx.recv() else {
            // The download ended before the table of contents.
            let (r, secs) = join_download();
            restored.download_secs = secs;
            return match r {
                Err(e) if matches!(e.kind(), ErrorKind::Integrity | ErrorKind::Key) => {
                    Ok(Attempt::Unreadable(e, restored))
                }
                Err(e) => Err(e),
                Ok(Err(why)) => Ok(Attempt::Fallback(Some(why))),
                Ok(Ok(_)) => Err(Error::internal("the archive had no table of contents")),
            };
        };
        let (mut scratch, target, server_version) =
            ctx.prepare_target(cluster.as_ref(), &mut notes)?;
        restored.server_version = server_version.clone();
        ctx.before_restore(
            cluster.as_ref(),
            &target,
            &server_version,
            &toc.extensions,
            &toc.owners,
            &mut notes,
        )?;

        let t_restore = Instant::now();
        let exit = pg_restore_piped(ctx.pg_restore, &target, &["--section=pre-data"], &toc.raw)?;
        if !exit.status.success() {
            problems.extend(restore_problems(&exit, &server_version, &mut notes));
        }
        let settings = SessionSql::new(m);
        let baseline = readback::after_pre_data(&target, &settings, m, &mut notes)?;
        let encoding = toc
            .encoding
            .clone()
            .unwrap_or_else(|| m.verification.session.client_encoding.clone());
        let session = stream::load_session_sql(&encoding);
        let mut loaders = Vec::with_capacity(jobs);
        for _ in 0..jobs {
            loaders.push(stream::connect_loader(&target, &session)?);
        }
        let toc_file = ctx.work.join("toc.dump");
        std::fs::write(&toc_file, &*toc.raw)
            .map_err(|e| Error::io_at("cannot write", &toc_file, &e))?;
        let other = if toc.other_data.is_empty() {
            drop(other_rx);
            None
        } else {
            let list = ctx.work.join("other-data.list");
            let ids: String = toc.other_data.iter().map(|id| format!("{id}\n")).collect();
            std::fs::write(&list, ids).map_err(|e| Error::io_at("cannot write", &list, &e))?;
            let mut cmd = pg_restore_command(ctx.pg_restore, &target);
            cmd.arg("--use-list").arg(&list);
            let mut child = ChildProcess::spawn(cmd, "pg_restore", true)?;
            child.drain_stdout();
            Some((child, other_rx))
        };

        let pool = verify::Pool::new(
            m,
            &target,
            &settings,
            major_of(&server_version),
            jobs,
            ctx.split_bytes,
            baseline,
        );
        let by_name: HashMap<(&str, &str), usize> = m
            .verification
            .tables
            .iter()
            .enumerate()
            .map(|(i, t)| ((t.schema.as_str(), t.name.as_str()), i))
            .collect();
        let mut pushed = vec![false; m.verification.tables.len()];

        let (download, download_secs, post_exit, other_exit, restore_end) =
            std::thread::scope(|s2| -> Result<_> {
                for (c, rx) in loaders.into_iter().zip(worker_rxs) {
                    let tx = report_tx.clone();
                    s2.spawn(move || stream::load(c, rx, tx));
                }
                drop(report_tx);
                let other_child = other.map(|(mut child, rx)| {
                    let stdin = child.take_stdin();
                    let raw = toc.raw.clone();
                    s2.spawn(move || stream::feed_pg_restore(stdin, &raw, Some(rx)));
                    child
                });
                for _ in 0..jobs {
                    s2.spawn(|| pool.work());
                }

                // Tables as they load: each one complete goes to the verifiers at once.
                struct Load {
                    name: Option<(String, String)>,
                    parts: Option<usize>,
                    done: usize,
                    error: Option<String>,
                }
                let mut loads: HashMap<usize, Load> = HashMap::new();
                // A table that finishes loading while later tables still stream in is read back
                // at once; the last ones wait for post-data (whose ALTER TABLE … ADD CONSTRAINT
                // needs the table to itself, and would queue the reads of a split table behind it).
                let mut latest = 0;
                let mut held: Vec<usize> = Vec::new();
                let push = |i: usize, pushed: &mut Vec<bool>| {
                    if !pushed[i] {
                        pushed[i] = true;
                        pool.push(i);
                    }
                };
                for report in report_rx {
                    let table = match &report {
                        stream::Report::Expect { table, .. }
                        | stream::Report::Loaded { table, .. } => *table,
                    };
                    if table > latest {
                        latest = table;
                        for i in held.drain(..) {
                            push(i, &mut pushed);
                        }
                    }
                    let l = loads.entry(table).or_insert(Load {
                        name: None,
                        parts: None,
                        done: 0,
                        error: None,
                    });
                    match report {
                        stream::Report::Expect {
                            schema,
                            name,
                            parts,
                            ..
                        } => {
                            l.name = Some((schema, name));
                            l.parts = Some(parts);
                        }
                        stream::Report::Loaded { result, .. } => {
                            l.done += 1;
                            if let Err(e) = result {
                                l.error.get_or_insert(e);
                            }
                        }
                    }
                    if l.parts == Some(l.done) {
                        let l = loads.remove(&table).expect("just seen");
                        let (schema, name) = l.name.unwrap_or_default();
                        if let Some(e) = l.error {
                            problems.push(format!("table {schema}.{name} did not load: {e}"));
                        }
                        if let Some(&i) = by_name.get(&(schema.as_str(), name.as_str())) {
                            if table < latest {
                                push(i, &mut pushed);
                            } else {
                                held.push(i);
                            }
                        }
                    }
                }
                let (download, download_secs) = join_download();
                let other_exit = other_child.map(|c| c.wait_exit()).transpose()?;
                // Indexes and constraints, while the verifiers read the tables back.
                let post_exit = if download.as_ref().is_ok_and(|d| d.is_ok()) {
                    let mut cmd = pg_restore_command(ctx.pg_restore, &target);
                    cmd.arg("--section=post-data")
                        .arg("--jobs")
                        .arg(jobs.to_string())
                        .arg(&toc_file);
                    let mut child = ChildProcess::spawn(cmd, "pg_restore", false)?;
                    child.drain_stdout();
                    Some(child.wait_exit()?)
                } else {
                    None
                };
                let restore_end = Instant::now();
                // A snapshot that failed on the way is not worth reading back.
                if post_exit.is_some() {
                    for i in held.into_iter().chain(0..pushed.len()) {
                        push(i, &mut pushed);
                    }
                }
                pool.close();
                Ok((download, download_secs, post_exit, other_exit, restore_end))
            })?;
        restored.download_secs = download_secs;
        drop(progress);
        let summary = match download {
            Err(e) if matches!(e.kind(), ErrorKind::Integrity | ErrorKind::Key) => {
                return Ok(Attempt::Unreadable(e, restored));
            }
            Err(e) => return Err(e),
            Ok(Err(why)) => return Ok(Attempt::Fallback(Some(why))),
            Ok(Ok(summary)) => summary,
        };
        compare_archive(m, &summary, &mut problems);
        for exit in [other_exit, post_exit].into_iter().flatten() {
            if !exit.status.success() {
                problems.extend(restore_problems(&exit, &server_version, &mut notes));
            }
        }
        restored.restore_secs = restore_end.duration_since(t_restore).as_secs_f64();
        let (mut tables, verify_secs) = pool.finish(&mut problems)?;
        let t_lo = Instant::now();
        readback::large_objects(&target, m, &mut tables, &mut problems)?;
        restored.verify_secs = verify_secs + t_lo.elapsed().as_secs_f64();
        problems.dedup();
        ctx.keep_scratch(&mut scratch, &mut notes);
        restored.tables = tables;
        restored.problems = problems;
        restored.notes = notes;
        drop(cluster);
        Ok(Attempt::Done(restored))
    })
}

/// The download of a streamed restore: the archive goes through the inspector to `feed`. The
/// outer result fails on damage; the inner one says whether the archive could be followed.
fn download_streamed<S: WriteStore + ?Sized>(
    repo: &Repository<S>,
    m: &Manifest,
    counters: &Counters,
    mut feed: stream::Feed,
) -> Result<std::result::Result<DumpSummary, String>> {
    let (mut dump_reader, handle) = super::open_dump(repo, m, Some(counters.input.clone()))?;
    let inspected = dump::inspect_observed(
        &mut Interruptible(&mut dump_reader),
        dump::OnError::Stop,
        &mut feed,
    );
    drop(feed);
    match inspected {
        Ok(summary) => {
            super::finish_dump(dump_reader, &handle, m)?;
            Ok(Ok(summary))
        }
        // A read error is the snapshot's (or the store's); the restore stopping is not.
        Err(dump::DumpError::Io(e)) => Err(Error::from_io(e, "cannot read the snapshot")),
        Err(e) => Ok(Err(e.to_string())),
    }
}

/// Reads until a signal arrives, then fails: the download stops at its next buffer.
struct Interruptible<'a, R: Read>(&'a mut R);

impl<R: Read> Read for Interruptible<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if crate::interrupt::check().is_err() {
            return Err(std::io::Error::other("interrupted by a signal"));
        }
        self.0.read(buf)
    }
}
