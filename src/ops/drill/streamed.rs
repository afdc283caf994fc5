/*!
The streamed restore, in phases: pre-data as soon as the table of contents is in; the load, rows
going to `jobs` connections as they download ([`super::load`]), each table handed to the
verifiers once loaded ([`super::tracking`]); post-data while the last tables are read back; then
the read-back's verdict. No spool file is written; an archive this version cannot follow makes it
fall back to the spooled restore.
*/

use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::Instant;

use crate::catalog::{Manifest, Repository};
use crate::dump::{self, DumpSummary};
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::{Counters, Progress};
use crate::postgres::{ConnInfo, client};
use crate::process::{ChildProcess, Exit};
use crate::storage::WriteStore;

use super::load::{self, Feed, Msg, Report, TocInfo};
use super::pgrestore::{pg_restore_command, pg_restore_piped, restore_problems};
use super::readback::{self, SessionSql};
use super::record::compare_archive;
use super::target::{Ready, major_of};
use super::tracking::Tracker;
use super::verify::Pool;
use super::{Attempt, Ctx, Interruptible, Restored};

/// What the download found: it fails on damage; inside, whether the archive could be followed.
type Inspected = Result<std::result::Result<DumpSummary, String>>;

/// The restore's ends of the channels the download's [`Feed`] sends on.
struct Ends {
    toc: Receiver<TocInfo>,
    /// For the loading connections' reports (the feed has its own).
    reports_tx: Sender<Report>,
    reports: Receiver<Report>,
    other: Receiver<Vec<u8>>,
    workers: Vec<Receiver<Msg>>,
}

/// What the load phase leaves for the verdict.
struct Loaded {
    download: Inspected,
    download_secs: f64,
    other_exit: Option<Exit>,
    post_exit: Option<Exit>,
    restore_end: Instant,
}

/// The streamed restore (see the module's doc).
pub(super) fn stream_restore<S: WriteStore + ?Sized>(ctx: &Ctx<'_, S>) -> Result<Attempt> {
    let (feed, ends) = channels(ctx.jobs, ctx.batch_bytes as usize);
    let counters = Counters::default();
    let progress = Progress::start("drill download", &counters, ctx.opts.progress);
    std::thread::scope(|s| {
        // Everything the restore holds (the receiving ends) is dropped when `phases` returns,
        // so a failure stops the download thread instead of leaving it waiting.
        let mut download = Download::spawn(s, ctx, &counters, feed);
        phases(ctx, ends, &mut download, progress)
    })
}

fn channels(jobs: usize, batch_bytes: usize) -> (Feed, Ends) {
    let (toc_tx, toc) = mpsc::sync_channel(1);
    let (reports_tx, reports) = mpsc::channel();
    let (other_tx, other) = mpsc::sync_channel(16);
    let (worker_txs, workers) = load::queues(jobs);
    let feed = Feed::new(
        toc_tx,
        worker_txs,
        reports_tx.clone(),
        other_tx,
        batch_bytes,
    );
    let ends = Ends {
        toc,
        reports_tx,
        reports,
        other,
        workers,
    };
    (feed, ends)
}

/// The phases, once the download runs: the cluster starts meanwhile, and the restore begins
/// when the table of contents is in.
fn phases<S: WriteStore + ?Sized>(
    ctx: &Ctx<'_, S>,
    ends: Ends,
    download: &mut Download<'_>,
    progress: Progress,
) -> Result<Attempt> {
    let m = ctx.m;
    let (mut notes, mut problems) = (Vec::new(), Vec::new());
    let cluster = ctx.start_cluster()?;
    let mut restored = ctx.restored(cluster.as_ref());
    let Ok(toc) = ends.toc.recv() else {
        // The download ended before the table of contents.
        let (r, secs) = download.join();
        restored.download_secs = secs;
        return match settle(r, restored)? {
            Err(end) => Ok(end),
            Ok(_) => Err(Error::internal("the archive had no table of contents")),
        };
    };
    let mut ready = ctx.ready_target(cluster.as_ref(), &toc.extensions, &toc.owners, &mut notes)?;
    restored.server_version = ready.server_version.clone();
    let t_restore = Instant::now();
    pre_data(ctx, &ready, &toc, &mut problems, &mut notes)?;
    let settings = SessionSql::new(m);
    let baseline = readback::after_pre_data(&ready.target, &settings, m, &mut notes)?;
    let pool = Pool::new(
        m,
        &ready.target,
        &settings,
        major_of(&ready.server_version),
        ctx.jobs,
        ctx.split_bytes,
        baseline,
    );
    let loaded = load_phase(
        ctx,
        &ready.target,
        &toc,
        ends,
        &pool,
        download,
        &mut problems,
    )?;
    restored.download_secs = loaded.download_secs;
    drop(progress);
    let (summary, mut restored) = match settle(loaded.download, restored)? {
        Ok(whole) => whole,
        Err(end) => return Ok(end),
    };
    compare_archive(m, &summary, &mut problems);
    for exit in [loaded.other_exit, loaded.post_exit].into_iter().flatten() {
        if !exit.status.success() {
            problems.extend(restore_problems(&exit, &ready.server_version, &mut notes));
        }
    }
    restored.restore_secs = loaded.restore_end.duration_since(t_restore).as_secs_f64();
    let (mut tables, verify_secs) = pool.finish(&mut problems)?;
    let t_lo = Instant::now();
    readback::large_objects(&ready.target, m, &mut tables, &mut problems)?;
    restored.verify_secs = verify_secs + t_lo.elapsed().as_secs_f64();
    problems.dedup();
    let attempt = ctx.done(restored, &mut ready, tables, problems, notes);
    drop(cluster);
    Ok(attempt)
}

/// The download's end, for the attempt: the archive's summary when it went through whole;
/// otherwise how the attempt ends (a snapshot that does not decrypt fails the drill, an archive
/// that cannot be followed falls back to the spool), or the error.
fn settle(
    r: Inspected,
    restored: Restored,
) -> Result<std::result::Result<(DumpSummary, Restored), Attempt>> {
    match r {
        Err(e) if matches!(e.kind(), ErrorKind::Integrity | ErrorKind::Key) => {
            Ok(Err(Attempt::Unreadable(e, restored)))
        }
        Err(e) => Err(e),
        Ok(Err(why)) => Ok(Err(Attempt::Fallback(Some(why)))),
        Ok(Ok(summary)) => Ok(Ok((summary, restored))),
    }
}

/// Pre-data (pg_restore fed the header and table of contents): the schema, before any row.
fn pre_data<S: WriteStore + ?Sized>(
    ctx: &Ctx<'_, S>,
    ready: &Ready,
    toc: &TocInfo,
    problems: &mut Vec<String>,
    notes: &mut Vec<String>,
) -> Result<()> {
    let exit = pg_restore_piped(
        ctx.pg_restore,
        &ready.target,
        &["--section=pre-data"],
        &toc.raw,
    )?;
    if !exit.status.success() {
        problems.extend(restore_problems(&exit, &ready.server_version, notes));
    }
    Ok(())
}

/// The load: rows on the loading connections and the other data on its own pg_restore as they
/// download, each loaded table to the verifiers; then post-data. Returns once the download and
/// every pg_restore have ended and the pool is closed (the verifiers may still be reading).
fn load_phase<S: WriteStore + ?Sized>(
    ctx: &Ctx<'_, S>,
    target: &ConnInfo,
    toc: &TocInfo,
    ends: Ends,
    pool: &Pool<'_>,
    download: &mut Download<'_>,
    problems: &mut Vec<String>,
) -> Result<Loaded> {
    let loaders = connect_loaders(ctx, target, toc)?;
    let toc_file = ctx.work.join("toc.dump");
    std::fs::write(&toc_file, &*toc.raw)
        .map_err(|e| Error::io_at("cannot write", &toc_file, &e))?;
    let other = start_other_data(ctx, target, toc, ends.other)?;
    std::thread::scope(|s| {
        for (c, rx) in loaders.into_iter().zip(ends.workers) {
            let tx = ends.reports_tx.clone();
            s.spawn(move || load::load(c, rx, tx));
        }
        drop(ends.reports_tx);
        let other_child = other.map(|(mut child, rx)| {
            let stdin = child.take_stdin();
            let raw = toc.raw.clone();
            s.spawn(move || load::feed_pg_restore(stdin, &raw, Some(rx)));
            child
        });
        for _ in 0..ctx.jobs {
            s.spawn(|| pool.work());
        }
        let mut tracker = Tracker::new(ctx.m, pool);
        for report in ends.reports {
            tracker.report(report, problems);
        }
        let (download, download_secs) = download.join();
        let other_exit = other_child.map(|c| c.wait_exit()).transpose();
        let whole = download.as_ref().is_ok_and(|d| d.is_ok()) && other_exit.is_ok();
        let post_exit = whole.then(|| post_data(ctx, target, &toc_file)).transpose();
        let restore_end = Instant::now();
        // A snapshot that failed on the way is not worth reading back.
        if matches!(post_exit, Ok(Some(_))) {
            tracker.release_all();
        }
        // Closed on every path, so the verifiers end and the scope can join them.
        pool.close();
        Ok(Loaded {
            download,
            download_secs,
            other_exit: other_exit?,
            post_exit: post_exit?,
            restore_end,
        })
    })
}

/// The loading connections, with pg_restore's session settings in the archive's encoding
/// (connected before any row is sent, so a failure stops the drill cleanly).
fn connect_loaders<S: WriteStore + ?Sized>(
    ctx: &Ctx<'_, S>,
    target: &ConnInfo,
    toc: &TocInfo,
) -> Result<Vec<client::Client>> {
    let encoding = toc
        .encoding
        .clone()
        .unwrap_or_else(|| ctx.m.verification.session.client_encoding.clone());
    let session = load::load_session_sql(&encoding);
    (0..ctx.jobs)
        .map(|_| load::connect_loader(target, &session))
        .collect()
}

/// The data that is not table rows (sequence values, large objects): a pg_restore limited to
/// those entries (`--use-list`), to be fed the header and TOC, then their blocks as they
/// download. None when the archive has none.
fn start_other_data<S: WriteStore + ?Sized>(
    ctx: &Ctx<'_, S>,
    target: &ConnInfo,
    toc: &TocInfo,
    blocks: Receiver<Vec<u8>>,
) -> Result<Option<(ChildProcess, Receiver<Vec<u8>>)>> {
    if toc.other_data.is_empty() {
        return Ok(None);
    }
    let list = ctx.work.join("other-data.list");
    let ids: String = toc.other_data.iter().map(|id| format!("{id}\n")).collect();
    std::fs::write(&list, ids).map_err(|e| Error::io_at("cannot write", &list, &e))?;
    let mut cmd = pg_restore_command(ctx.pg_restore, target);
    cmd.arg("--use-list").arg(&list);
    let mut child = ChildProcess::spawn(cmd, "pg_restore", true)?;
    child.drain_stdout();
    Ok(Some((child, blocks)))
}

/// Post-data (`pg_restore -j N --section=post-data` from the header and TOC): indexes and
/// constraints, while the verifiers read the tables back.
fn post_data<S: WriteStore + ?Sized>(
    ctx: &Ctx<'_, S>,
    target: &ConnInfo,
    toc_file: &std::path::Path,
) -> Result<Exit> {
    let mut cmd = pg_restore_command(ctx.pg_restore, target);
    cmd.arg("--section=post-data")
        .arg("--jobs")
        .arg(ctx.jobs.to_string())
        .arg(toc_file);
    let mut child = ChildProcess::spawn(cmd, "pg_restore", false)?;
    child.drain_stdout();
    child.wait_exit()
}

/// The download thread, joined once: what it found, and when it ended (seconds since the drill
/// started).
struct Download<'scope>(Option<ScopedJoinHandle<'scope, (Inspected, f64)>>);

impl<'scope> Download<'scope> {
    fn spawn<'env, S: WriteStore + ?Sized>(
        s: &'scope Scope<'scope, 'env>,
        ctx: &'env Ctx<'env, S>,
        counters: &'env Counters,
        feed: Feed,
    ) -> Self {
        let (repo, m, t0) = (ctx.repo, ctx.m, ctx.t0);
        Download(Some(s.spawn(move || {
            let r = download_streamed(repo, m, counters, feed);
            (r, t0.elapsed().as_secs_f64())
        })))
    }

    fn join(&mut self) -> (Inspected, f64) {
        match self.0.take() {
            Some(h) => h.join().unwrap_or_else(|_| {
                (
                    Err(Error::internal("the drill download thread panicked")),
                    0.0,
                )
            }),
            None => (Err(Error::internal("the download was joined twice")), 0.0),
        }
    }
}

/// The download of a streamed restore: the archive goes through the inspector to `feed`. The
/// outer result fails on damage; the inner one says whether the archive could be followed.
fn download_streamed<S: WriteStore + ?Sized>(
    repo: &Repository<S>,
    m: &Manifest,
    counters: &Counters,
    mut feed: Feed,
) -> Inspected {
    let (mut dump_reader, handle) = crate::ops::open_dump(repo, m, Some(counters.input.clone()))?;
    let inspected = dump::inspect_observed(
        &mut Interruptible(&mut dump_reader),
        dump::OnError::Stop,
        &mut feed,
    );
    drop(feed);
    match inspected {
        Ok(summary) => {
            crate::ops::finish_dump(dump_reader, &handle, m)?;
            Ok(Ok(summary))
        }
        // A read error is the snapshot's (or the store's); the restore stopping is not.
        Err(dump::DumpError::Io(e)) => Err(Error::from_io(e, "cannot read the snapshot")),
        Err(e) => Ok(Err(e.to_string())),
    }
}
