/*!
The spooled restore: the snapshot is downloaded into a file in the drill's work folder (while the
throwaway cluster starts), given the data offsets pg_dump could not write to a pipe, and restored
by `pg_restore -j N`, then every table is verified. It serves snapshots whose rows were counted
rather than inspected, and archives the streamed restore cannot follow.
*/

use std::io::{BufWriter, Read, Seek, Write};
use std::time::Instant;

use crate::catalog::{Manifest, Repository};
use crate::dump::{self, DumpSummary};
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::{Counters, Progress};
use crate::process::ChildProcess;
use crate::storage::WriteStore;

use super::pgrestore::{pg_restore_command, restore_problems};
use super::readback::{self, SessionSql};
use super::record::compare_archive;
use super::target::major_of;
use super::{Attempt, Ctx, Interruptible, verify};

/// The spooled restore: download into a file (while the cluster starts), give it its data
/// offsets, `pg_restore -j`, then verify.
pub(super) fn classic_restore<S: WriteStore + ?Sized>(ctx: &Ctx<'_, S>) -> Result<Attempt> {
    let m = ctx.m;
    let mut notes = Vec::new();
    let mut problems = Vec::new();
    let spool_path = ctx.work.join("snapshot.dump");
    let counters = Counters::default();
    let progress = Progress::start("drill download", &counters, ctx.opts.progress);
    let (download, cluster) = std::thread::scope(|s| {
        let dl = s.spawn(|| download(ctx.repo, m, &spool_path, &counters));
        let cluster = ctx.start_cluster();
        let dl = dl
            .join()
            .unwrap_or_else(|_| Err(Error::internal("the drill download thread panicked")));
        (dl, cluster)
    });
    drop(progress);
    let cluster = cluster?;
    let mut restored = ctx.restored(cluster.as_ref());
    restored.download_secs = ctx.t0.elapsed().as_secs_f64();
    let inspected = match download {
        Ok(d) => d,
        Err(e) if matches!(e.kind(), ErrorKind::Integrity | ErrorKind::Key) => {
            return Ok(Attempt::Unreadable(e, restored));
        }
        Err(e) => return Err(e),
    };
    let (extensions, owners) = match &inspected {
        Ok(summary) => {
            compare_archive(m, summary, &mut problems);
            (
                summary.extensions.clone(),
                summary.owners.iter().cloned().collect(),
            )
        }
        Err(why) => {
            notes.push(format!(
                "the archive could not be inspected ({why}); pg_restore reads it sequentially"
            ));
            (Vec::new(), Vec::new())
        }
    };
    let (mut scratch, target, server_version) = ctx.prepare_target(cluster.as_ref(), &mut notes)?;
    restored.server_version = server_version.clone();
    ctx.before_restore(
        cluster.as_ref(),
        &target,
        &server_version,
        &extensions,
        &owners,
        &mut notes,
    )?;

    let t_restore = Instant::now();
    let settings = SessionSql::new(m);
    let pg_restore = |sections: &[&str]| {
        let mut cmd = pg_restore_command(ctx.pg_restore, &target);
        cmd.args(sections)
            .arg("--jobs")
            .arg(ctx.jobs.to_string())
            .arg(&spool_path);
        let mut child = ChildProcess::spawn(cmd, "pg_restore", false)?;
        child.drain_stdout();
        child.wait_exit()
    };
    // Pre-data apart, to see the database before any row is in (see `readback::after_pre_data`).
    let exit = pg_restore(&["--section=pre-data"])?;
    if !exit.status.success() {
        problems.extend(restore_problems(&exit, &server_version, &mut notes));
    }
    let baseline = readback::after_pre_data(&target, &settings, m, &mut notes)?;
    let exit = pg_restore(&["--section=data", "--section=post-data"])?;
    restored.restore_secs = t_restore.elapsed().as_secs_f64();
    if !exit.status.success() {
        problems.extend(restore_problems(&exit, &server_version, &mut notes));
    }
    // The spool file is not needed any more: give the disk back before verifying.
    let _ = std::fs::remove_file(&spool_path);

    let t_verify = Instant::now();
    let pool = verify::Pool::new(
        m,
        &target,
        &settings,
        major_of(&server_version),
        ctx.jobs,
        ctx.split_bytes,
        baseline,
    );
    for i in 0..m.verification.tables.len() {
        pool.push(i);
    }
    pool.close();
    std::thread::scope(|s| {
        for _ in 0..ctx.jobs {
            s.spawn(|| pool.work());
        }
    });
    let (mut tables, _) = pool.finish(&mut problems)?;
    readback::large_objects(&target, m, &mut tables, &mut problems)?;
    restored.verify_secs = t_verify.elapsed().as_secs_f64();
    ctx.keep_scratch(&mut scratch, &mut notes);
    restored.tables = tables;
    restored.problems = problems;
    restored.notes = notes;
    drop(cluster);
    Ok(Attempt::Done(restored))
}

/// Disk the drill needs in `dir`: the spool file (when there is one), and (for a throwaway
/// cluster) the restored database (its tables and indexes, estimated at 1.5 times the dump)
/// plus WAL and the cluster's own files.
pub(super) fn check_space(
    dir: &std::path::Path,
    m: &Manifest,
    cluster: bool,
    spool: bool,
) -> Result<()> {
    let plain = m.sizes.plain_bytes;
    let spool_bytes = if spool { plain } else { 0 };
    let need = if cluster {
        spool_bytes + plain / 2 * 3 + (1 << 30)
    } else {
        spool_bytes + (64 << 20)
    };
    if let Some(free) = crate::ops::restore::free_space(dir)
        && free < need
    {
        return Err(Error::io(format!(
            "not enough disk in {} for a drill of {}/{}: it needs about {} (for a {} archive: {}), and {} is free",
            dir.display(),
            m.source.name,
            m.snapshot_id,
            crate::units::bytes(need),
            crate::units::bytes(plain),
            match (spool, cluster) {
                (true, true) => "its spooled copy, the restored database, WAL and the cluster",
                (false, true) => "the restored database, WAL and the cluster",
                _ => "its spooled copy",
            },
            crate::units::bytes(free)
        ))
        .with_hint("free some space, or set OFFSITEDB_TMPDIR (or --work-dir) to a larger disk"));
    }
    Ok(())
}

/// Downloads, authenticates and decompresses the snapshot into `path`, inspecting the archive
/// on the way. The outer result fails on damage (nothing is restored from a snapshot that does
/// not authenticate); the inner one says whether the archive could be inspected.
fn download<S: WriteStore + ?Sized>(
    repo: &Repository<S>,
    m: &Manifest,
    path: &std::path::Path,
    counters: &Counters,
) -> Result<std::result::Result<DumpSummary, String>> {
    // Read and write: the offsets rewrite checks what it overwrites.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Error::io_at("cannot create", path, &e))?;
    let (mut dump_reader, handle) = crate::ops::open_dump(repo, m, Some(counters.input.clone()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let write_err = std::cell::Cell::new(None::<std::io::Error>);
    let inspected = {
        let mut tee = Tee {
            inner: &mut Interruptible(&mut dump_reader),
            out: &mut out,
            write_err: &write_err,
        };
        let r = dump::inspect(&mut tee).map_err(|e| e.to_string());
        // Whatever the inspector left (all of it, if it gave up early) still goes to the file.
        std::io::copy(&mut tee, &mut std::io::sink()).map_err(|e| read_error(e, &write_err))?;
        r
    };
    if let Some(e) = write_err.take() {
        return Err(Error::from_io(
            e,
            &format!("cannot write {}", path.display()),
        ));
    }
    crate::ops::finish_dump(dump_reader, &handle, m)?;
    let mut file = out
        .into_inner()
        .map_err(|e| Error::from_io(e.into_error(), &format!("cannot write {}", path.display())))?;
    // pg_dump wrote to a pipe, so the archive has no data offsets; a file with them lets
    // pg_restore's parallel workers seek straight to their tables.
    if let Ok(summary) = &inspected {
        dump::rewrite_offsets(&mut file, summary)
            .map_err(|e| Error::from_io(e, &format!("cannot write {}", path.display())))?;
    }
    // No fsync: the spool lives as long as the drill, and a crash throws it away anyway.
    file.seek(std::io::SeekFrom::Start(0))
        .map_err(|e| Error::from_io(e, &format!("cannot write {}", path.display())))?;
    Ok(inspected)
}

fn read_error(e: std::io::Error, write_err: &std::cell::Cell<Option<std::io::Error>>) -> Error {
    match write_err.take() {
        Some(w) => Error::from_io(w, "cannot write the drill's spool file"),
        None => Error::from_io(e, "cannot read the snapshot"),
    }
}

/// Copies what is read through it into `out`. A write failure ends the reading (as an error)
/// and is kept in `write_err`, so a full disk is reported as such.
struct Tee<'a, R: Read, W: Write> {
    inner: &'a mut R,
    out: &'a mut W,
    write_err: &'a std::cell::Cell<Option<std::io::Error>>,
}

impl<R: Read, W: Write> Read for Tee<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Err(e) = self.out.write_all(&buf[..n]) {
            let msg = e.to_string();
            self.write_err.set(Some(e));
            return Err(std::io::Error::other(msg));
        }
        Ok(n)
    }
}
