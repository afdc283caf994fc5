/*!
The spooled restore: the snapshot is downloaded into a file in the drill's work folder (while the
throwaway cluster starts), given the data offsets pg_dump could not write to a pipe, and restored
by `pg_restore -j N`, then every table is verified. The file is [`crate::ops::spool`]'s, as for
`restore --jobs`. It serves snapshots whose rows were counted rather than inspected, and archives
the streamed restore cannot follow.
*/

use std::collections::HashMap;
use std::time::Instant;

use crate::catalog::Manifest;
use crate::cluster::Cluster;
use crate::error::{Error, ErrorKind, Result};
use crate::ops::spool::{self, Spool};
use crate::pipeline::{Counters, Progress};
use crate::process::{ChildProcess, Exit};
use crate::storage::WriteStore;

use super::pgrestore::{pg_restore_command, restore_problems};
use super::readback::{self, SessionSql};
use super::record::compare_archive;
use super::target::{Ready, major_of};
use super::verify::Pool;
use super::{Attempt, Ctx};

/// The spooled restore: download into a file (while the cluster starts), give it its data
/// offsets, `pg_restore -j`, then verify.
pub(super) fn spooled_restore<S: WriteStore + ?Sized>(ctx: &Ctx<'_, S>) -> Result<Attempt> {
    let m = ctx.m;
    let (mut notes, mut problems) = (Vec::new(), Vec::new());
    let (download, cluster) = download_while_the_cluster_starts(ctx);
    let cluster = cluster?;
    let mut restored = ctx.restored(cluster.as_ref());
    restored.download_secs = ctx.t0.elapsed().as_secs_f64();
    let spool = match download {
        Ok(spool) => spool,
        Err(e) if matches!(e.kind(), ErrorKind::Integrity | ErrorKind::Key) => {
            return Ok(Attempt::Unreadable(e, restored));
        }
        Err(e) => return Err(e),
    };
    let (extensions, owners) = match spool.inspected() {
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
    let mut ready = ctx.ready_target(cluster.as_ref(), &extensions, &owners, &mut notes)?;
    restored.server_version = ready.server_version.clone();
    let t_restore = Instant::now();
    let settings = SessionSql::new(m);
    let baseline = restore(ctx, &ready, &spool, &settings, &mut problems, &mut notes)?;
    restored.restore_secs = t_restore.elapsed().as_secs_f64();
    // The spool file is not needed any more: give the disk back before verifying.
    drop(spool);
    let t_verify = Instant::now();
    let tables = verify_all(ctx, &ready, &settings, baseline, &mut problems)?;
    restored.verify_secs = t_verify.elapsed().as_secs_f64();
    let attempt = ctx.done(restored, &mut ready, tables, problems, notes);
    drop(cluster);
    Ok(attempt)
}

/// The spool, written while the throwaway cluster starts (on this thread: it dies with the
/// thread that started it).
fn download_while_the_cluster_starts<S: WriteStore + ?Sized>(
    ctx: &Ctx<'_, S>,
) -> (Result<Spool>, Result<Option<Cluster>>) {
    let counters = Counters::default();
    let _progress = Progress::start("drill download", &counters, ctx.opts.progress);
    std::thread::scope(|s| {
        let dl = s.spawn(|| Spool::write(ctx.repo, ctx.m, ctx.work, &counters));
        let cluster = ctx.start_cluster();
        let dl = dl
            .join()
            .unwrap_or_else(|_| Err(Error::internal("the drill download thread panicked")));
        (dl, cluster)
    })
}

/// `pg_restore -j N` from the spool: pre-data apart, to see the database before any row is in
/// (see [`readback::after_pre_data`], whose baseline this returns), then data and post-data.
fn restore<S: WriteStore + ?Sized>(
    ctx: &Ctx<'_, S>,
    ready: &Ready,
    spool: &Spool,
    settings: &SessionSql,
    problems: &mut Vec<String>,
    notes: &mut Vec<String>,
) -> Result<HashMap<usize, (u64, u128)>> {
    let pg_restore = |sections: &[&str]| -> Result<Exit> {
        let mut cmd = pg_restore_command(ctx.pg_restore, &ready.target);
        cmd.args(sections)
            .arg("--jobs")
            .arg(ctx.jobs.to_string())
            .arg(spool.path());
        let mut child = ChildProcess::spawn(cmd, "pg_restore", false)?;
        child.drain_stdout();
        child.wait_exit()
    };
    let exit = pg_restore(&["--section=pre-data"])?;
    if !exit.status.success() {
        problems.extend(restore_problems(&exit, &ready.server_version, notes));
    }
    let baseline = readback::after_pre_data(&ready.target, settings, ctx.m, notes)?;
    let exit = pg_restore(&["--section=data", "--section=post-data"])?;
    if !exit.status.success() {
        problems.extend(restore_problems(&exit, &ready.server_version, notes));
    }
    Ok(baseline)
}

/// Every table read back at once on `jobs` connections, then the large objects.
fn verify_all<S: WriteStore + ?Sized>(
    ctx: &Ctx<'_, S>,
    ready: &Ready,
    settings: &SessionSql,
    baseline: HashMap<usize, (u64, u128)>,
    problems: &mut Vec<String>,
) -> Result<Vec<crate::catalog::drill::TableCheck>> {
    let m = ctx.m;
    let pool = Pool::new(
        m,
        &ready.target,
        settings,
        major_of(&ready.server_version),
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
    let (mut tables, _) = pool.finish(problems)?;
    readback::large_objects(&ready.target, m, &mut tables, problems)?;
    Ok(tables)
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
    let database = cluster.then(|| {
        (
            plain / 2 * 3 + (1 << 30),
            "the restored database, WAL and the cluster",
        )
    });
    spool::check_space(
        dir,
        m,
        "a drill",
        spool,
        database,
        "free some space, or set OFFSITEDB_TMPDIR (or --work-dir) to a larger disk",
    )
}
