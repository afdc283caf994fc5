/*!
The streamed restore: pre-data as soon as the table of contents is in, rows loaded on `jobs`
connections as they download (see [`super::load`]), each table verified once loaded,
post-data while the last tables are read back. No spool file is written; an archive this
version cannot follow makes it fall back to the spooled restore.
*/

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::Instant;

use crate::catalog::{Manifest, Repository};
use crate::dump::{self, DumpSummary};
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::{Counters, Progress};
use crate::process::ChildProcess;
use crate::storage::WriteStore;

use super::pgrestore::{pg_restore_command, pg_restore_piped, restore_problems};
use super::readback::{self, SessionSql};
use super::record::compare_archive;
use super::target::major_of;
use super::{Attempt, Ctx, Interruptible, load, verify};

/// The streamed restore (see [`super::load`]): pre-data as soon as the table of contents is in,
/// rows loaded on `jobs` connections as they download, each table verified once loaded,
/// post-data while the last tables are read back.
pub(super) fn stream_restore<S: WriteStore + ?Sized>(ctx: &Ctx<'_, S>) -> Result<Attempt> {
    let m = ctx.m;
    let jobs = ctx.jobs;
    let mut notes = Vec::new();
    let mut problems = Vec::new();
    let (toc_tx, toc_rx) = mpsc::sync_channel(1);
    let (report_tx, report_rx) = mpsc::channel();
    let (other_tx, other_rx) = mpsc::sync_channel(16);
    let (worker_txs, worker_rxs) = load::queues(jobs);
    let feed = load::Feed::new(
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
        let session = load::load_session_sql(&encoding);
        let mut loaders = Vec::with_capacity(jobs);
        for _ in 0..jobs {
            loaders.push(load::connect_loader(&target, &session)?);
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
                    s2.spawn(move || load::load(c, rx, tx));
                }
                drop(report_tx);
                let other_child = other.map(|(mut child, rx)| {
                    let stdin = child.take_stdin();
                    let raw = toc.raw.clone();
                    s2.spawn(move || load::feed_pg_restore(stdin, &raw, Some(rx)));
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
                        load::Report::Expect { table, .. } | load::Report::Loaded { table, .. } => {
                            *table
                        }
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
                        load::Report::Expect {
                            schema,
                            name,
                            parts,
                            ..
                        } => {
                            l.name = Some((schema, name));
                            l.parts = Some(parts);
                        }
                        load::Report::Loaded { result, .. } => {
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
    mut feed: load::Feed,
) -> Result<std::result::Result<DumpSummary, String>> {
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
