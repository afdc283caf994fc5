/*!
`offsitedb restore`: a snapshot into a database.

By default the archive streams from the repository straight into `pg_restore` inside one
transaction: every byte is authenticated as it arrives, and if anything fails (a damaged object,
a missing role, a dropped connection) pg_restore is stopped and nothing is committed, so even a
`--clean` restore leaves the target as it was. With `--jobs N` the archive is first written,
verified, to a temporary file with its data offsets filled in ([`super::spool`], as a drill does:
pg_restore runs in parallel only from a file, and its workers seek straight to their tables),
then restored.

pg_restore 17 and later open every connection with `SET transaction_timeout = 0`, which servers
before 17 reject, and the archive of a pg_dump 17+ can only be read by a pg_restore 17+. For such
a target pg_restore writes SQL instead, and `psql` of the same release runs it, without that one
setting (see `relay`). That path has no parallel jobs.
*/

use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command};
use std::thread::JoinHandle;
use std::time::Instant;

use super::Artifact;
use super::spool::{self, Spool};
use crate::catalog::{Entry, Manifest, Repository};
use crate::error::{Error, Result};
use crate::pipeline::{Counters, Decoder, MeasureHandle, Progress};
use crate::postgres::{self, ConnInfo, PgProgram, binaries};
use crate::process::{ChildProcess, Exit};
use crate::storage::ReadStore;

#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// Drop the snapshot's objects in the target first (`--clean --if-exists`).
    pub clean: bool,
    /// Parallel pg_restore jobs; above 1 the archive is spooled to a file first.
    pub jobs: usize,
    pub no_owner: bool,
    pub no_privileges: bool,
    /// Where to spool for `jobs > 1`; default `$OFFSITEDB_TMPDIR` or the system temp dir.
    pub spool_dir: Option<PathBuf>,
    pub pg_bin_dirs: Vec<PathBuf>,
    pub progress: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            clean: false,
            jobs: 1,
            no_owner: false,
            no_privileges: false,
            spool_dir: None,
            pg_bin_dirs: Vec::new(),
            progress: false,
        }
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct RestoreReport {
    pub snapshot: String,
    pub source: String,
    pub target: String,
    pub pg_restore: String,
    pub jobs: usize,
    pub seconds: f64,
    pub archive_bytes: u64,
}

pub fn run<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    entry: &Entry,
    target: &ConnInfo,
    opts: &RestoreOptions,
    note: &mut dyn FnMut(String),
) -> Result<RestoreReport> {
    let start = Instant::now();
    let m = repo.manifest(&entry.source, &entry.id)?;
    if m.is_directory() {
        return Err(Error::config(format!(
            "snapshot {} is a backup of the folder {}, not of a database",
            m.snapshot_id, m.source.database
        ))
        .with_hint("restore it into a folder: --to-dir DIR"));
    }
    let target_major = check_target(target, &m, opts.clean, note)?;
    let dirs = binaries::search_dirs(&opts.pg_bin_dirs);
    let pg_restore = super::pick_pg_restore(&m, &dirs)?;
    let psql = psql_for(&pg_restore, target_major)?;
    let mut jobs = opts.jobs.max(1);
    if jobs > 1 && psql.is_some() {
        note(format!(
            "restoring with one job: pg_restore {} cannot connect to PostgreSQL {} directly (it sets transaction_timeout), so its SQL goes through psql",
            pg_restore.version, target_major
        ));
        jobs = 1;
    }
    let mut cmd = pg_restore_command(&pg_restore.path, opts);
    let counters = Counters::default();
    if let Some(psql) = psql {
        // psql, not pg_restore, makes the transaction: it commits only at the end of its input,
        // which it sees only once the whole snapshot authenticated and pg_restore succeeded.
        cmd.args(["--file", "-"]);
        let run_sql = psql_command(&psql, target);
        restore_streaming(repo, &m, cmd, Some(run_sql), opts, &counters)?;
    } else {
        cmd.arg("--dbname")
            .arg(target.to_conninfo_without_secrets());
        postgres::child_env(&mut cmd, target);
        if jobs > 1 {
            restore_from_spool(repo, &m, cmd, opts, &counters)?;
        } else {
            cmd.arg("--single-transaction");
            restore_streaming(repo, &m, cmd, None, opts, &counters)?;
        }
    }
    Ok(RestoreReport {
        snapshot: m.snapshot_id.to_string(),
        source: m.source.name.clone(),
        target: target.redacted(),
        pg_restore: pg_restore.version,
        jobs,
        seconds: start.elapsed().as_secs_f64(),
        archive_bytes: m.sizes.plain_bytes,
    })
}

/// The target must exist and, without `clean`, be empty. Returns its major version (a note
/// says when it is older than the source's).
fn check_target(
    target: &ConnInfo,
    m: &Manifest,
    clean: bool,
    note: &mut dyn FnMut(String),
) -> Result<u32> {
    let shown = target.redacted();
    let mut client = postgres::connect(target, "the target database").map_err(|e| {
        if e.message().contains("does not exist") {
            e.with_hint("create it first (createdb -T template0 NAME), then run the restore again")
        } else {
            e
        }
    })?;
    let info = postgres::server_info(&mut client)?;
    let relations: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r','p','v','m','S','f')
               AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'",
            &[],
        )
        .map_err(|e| postgres::client::query_error("cannot inspect the target database", &e))?
        .get(0);
    drop(client);
    if relations > 0 && !clean {
        return Err(Error::config(format!(
            "the target database {shown} is not empty: it holds {relations} {}",
            if relations == 1 { "table, view or sequence" } else { "tables, views or sequences" }
        ))
        .with_hint("pass --clean to replace the snapshot's objects in it, or restore into a new database (createdb NAME)"));
    }
    if info.major < m.server.major {
        note(format!(
            "the snapshot comes from PostgreSQL {}, the target runs {}: objects that need newer features will fail",
            m.server.major, info.major
        ));
    }
    Ok(info.major)
}

/// The psql next to a pg_restore 17+ restoring into a server before 17 (see the module's
/// doc); None when pg_restore can connect itself.
fn psql_for(pg_restore: &PgProgram, target_major: u32) -> Result<Option<PathBuf>> {
    if pg_restore.major < 17 || target_major >= 17 {
        return Ok(None);
    }
    let psql = pg_restore.path.with_file_name("psql");
    if !psql.exists() {
        return Err(Error::tool(format!(
            "restoring into PostgreSQL {} with pg_restore {} needs psql next to it ({} is missing)",
            target_major,
            pg_restore.version,
            psql.display()
        ))
        .with_hint(format!(
            "install the PostgreSQL {} client package, which has both",
            pg_restore.major
        )));
    }
    Ok(Some(psql))
}

/// pg_restore with the options every restore takes; where it writes is added by the caller.
fn pg_restore_command(pg_restore: &Path, opts: &RestoreOptions) -> Command {
    let mut cmd = crate::process::command(pg_restore);
    cmd.args(["--no-password", "--exit-on-error"]);
    if opts.clean {
        cmd.args(["--clean", "--if-exists"]);
    }
    if opts.no_owner {
        cmd.arg("--no-owner");
    }
    if opts.no_privileges {
        cmd.arg("--no-privileges");
    }
    cmd
}

/// psql running the SQL it reads on its standard input in one transaction, stopping at the
/// first error.
fn psql_command(psql: &Path, target: &ConnInfo) -> Command {
    let mut run_sql = crate::process::command(psql);
    run_sql
        .args([
            "--no-psqlrc",
            "--quiet",
            "--no-password",
            "--single-transaction",
        ])
        .args(["--set", "ON_ERROR_STOP=1", "--file", "-", "--dbname"])
        .arg(target.to_conninfo_without_secrets());
    postgres::child_env(&mut run_sql, target);
    run_sql
}

/// psql taking pg_restore's SQL, and the thread that hands it over (see [`relay`]).
struct Psql {
    child: ChildProcess,
    relay: JoinHandle<std::io::Result<ChildStdin>>,
}

/// Kills psql first (so it cannot commit), when there is one.
fn kill_psql<T>(psql: Option<(ChildProcess, T)>) {
    if let Some((p, _)) = psql {
        p.kill();
    }
}

// What is left of the archive, and what checks it at its end.
type ArchiveRest = (Decoder<BufReader<Artifact>>, MeasureHandle);

/// Streams the archive into `cmd` (pg_restore). With `sql`, pg_restore writes SQL, which [`relay`]
/// hands to `sql` (psql) on a thread. Nothing is committed unless the whole snapshot authenticated
/// and pg_restore succeeded: on any failure psql is killed first, then pg_restore.
fn restore_streaming<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    m: &Manifest,
    cmd: Command,
    sql: Option<Command>,
    opts: &RestoreOptions,
    counters: &Counters,
) -> Result<()> {
    let (mut dump, handle) = super::open_dump(repo, m, Some(counters.input.clone()))?;
    let mut child = ChildProcess::spawn(cmd, "pg_restore", true)?;
    let psql = start_psql(&mut child, sql)?;
    let mut stdin = child.take_stdin();
    let progress = Progress::start("restore", counters, opts.progress);
    let fed = feed(&mut dump, &mut stdin, counters);
    drop(progress);
    let checked = fed.and_then(|all| {
        if all {
            super::finish_dump(dump, &handle, m)?;
            Ok(None)
        } else {
            Ok(Some((dump, handle)))
        }
    });
    let rest = match checked {
        Ok(rest) => rest,
        Err(e) => {
            kill_psql(psql.map(|p| (p.child, ())));
            child.kill();
            return Err(e.context("restore stopped, nothing was committed"));
        }
    };
    drop(stdin);
    let exit = child.wait_exit()?;
    let psql = join_relay(psql)?;
    if !exit.status.success() {
        kill_psql(psql);
        crate::interrupt::check()
            .map_err(|e| e.context("restore stopped, nothing was committed"))?;
        return Err(restore_error("pg_restore", &exit));
    }
    if let Some(rest) = rest
        && let Err(e) = authenticate_rest(rest, m)
    {
        kill_psql(psql);
        return Err(e.context("pg_restore completed, but the end of the snapshot"));
    }
    if let Some((p, input)) = psql {
        drop(input);
        let exit = p.wait_exit()?;
        if !exit.status.success() {
            return Err(restore_error("psql", &exit));
        }
    }
    Ok(())
}

/// With `sql`, psql reading what pg_restore writes (through [`relay`] on a thread); without,
/// pg_restore's output is drained.
fn start_psql(child: &mut ChildProcess, sql: Option<Command>) -> Result<Option<Psql>> {
    let Some(sql) = sql else {
        child.drain_stdout();
        return Ok(None);
    };
    let out = child.take_stdout();
    let mut p = ChildProcess::spawn(sql, "psql", true)?;
    p.drain_stdout();
    let input = p.take_stdin();
    let relay = std::thread::Builder::new()
        .name("restore-sql".into())
        .spawn(move || relay(out, input))
        .map_err(|e| Error::process(format!("cannot start a thread: {e}")))?;
    Ok(Some(Psql { child: p, relay }))
}

/// Copies the archive into pg_restore. `Ok(false)` when pg_restore stopped reading (its own
/// error, or psql's, says why); an error on a signal or a damaged snapshot (then pg_restore is
/// killed before it can commit anything).
fn feed(dump: &mut impl Read, stdin: &mut ChildStdin, counters: &Counters) -> Result<bool> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        crate::interrupt::check()?;
        let n = match dump.read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::from_io(e, "cannot read the snapshot")),
        };
        if stdin.write_all(&buf[..n]).is_err() {
            return Ok(false);
        }
        counters
            .output
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Waits for the thread handing SQL to psql. psql stopped reading when it failed, and says why
/// (pg_restore then could not write): that is the error.
fn join_relay(psql: Option<Psql>) -> Result<Option<(ChildProcess, ChildStdin)>> {
    let Some(Psql { child, relay }) = psql else {
        return Ok(None);
    };
    let relayed = relay.join().unwrap_or_else(|_| {
        Err(std::io::Error::other(
            "the thread handing SQL to psql panicked",
        ))
    });
    match relayed {
        Err(_) => Err(restore_error("psql", &child.kill())),
        Ok(input) => Ok(Some((child, input))),
    }
}

/// pg_restore finished without the archive's last bytes: they are still authenticated.
fn authenticate_rest((mut dump, handle): ArchiveRest, m: &Manifest) -> Result<()> {
    std::io::copy(&mut dump, &mut std::io::sink())
        .map_err(|e| Error::from_io(e, "cannot read the snapshot"))?;
    super::finish_dump(dump, &handle, m)
}

/// Copies pg_restore's SQL to psql, leaving out the `SET transaction_timeout = 0;` of its fixed
/// session settings at the top (older servers reject it; the setting only turns a timeout off).
/// Only lines of that leading block are looked at, so no statement or data is ever touched.
/// Returns psql's stdin, still open, so the caller decides whether psql may see the end.
fn relay(
    from: std::process::ChildStdout,
    mut to: std::process::ChildStdin,
) -> std::io::Result<std::process::ChildStdin> {
    use std::io::BufRead;
    const LONGEST: u64 = 64 * 1024;
    let mut r = std::io::BufReader::with_capacity(1 << 20, from);
    let mut line = Vec::new();
    loop {
        line.clear();
        (&mut r).take(LONGEST).read_until(b'\n', &mut line)?;
        if line.is_empty() {
            return Ok(to);
        }
        let text = line.trim_ascii_end();
        if text != b"SET transaction_timeout = 0;" {
            to.write_all(&line)?;
        }
        if !line.ends_with(b"\n") || !preamble_line(text) {
            break;
        }
    }
    std::io::copy(&mut r, &mut to)?;
    Ok(to)
}

/// A line of the block pg_restore writes before its first statement.
fn preamble_line(text: &[u8]) -> bool {
    text.is_empty()
        || [
            &b"--"[..],
            b"SET ",
            b"SELECT pg_catalog.set_config(",
            b"\\restrict ",
        ]
        .iter()
        .any(|p| text.starts_with(p))
}

/// `--jobs N`: the archive is spooled to a file (with its data offsets: see
/// [`super::spool`]), then `pg_restore --jobs N` restores from it. The file is removed at the
/// end, whatever happened.
fn restore_from_spool<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    m: &Manifest,
    mut cmd: Command,
    opts: &RestoreOptions,
    counters: &Counters,
) -> Result<()> {
    let dir = super::work_parent(opts.spool_dir.clone())?;
    spool::check_space(
        &dir,
        m,
        "a restore",
        true,
        None,
        "pass --spool-dir on a larger disk, or --jobs 1 to stream without a temporary file",
    )?;
    let progress = Progress::start("download", counters, opts.progress);
    let spooled = Spool::write(repo, m, &dir, counters)?;
    drop(progress);
    cmd.arg("--jobs")
        .arg(opts.jobs.to_string())
        .arg(spooled.path());
    let mut child = ChildProcess::spawn(cmd, "pg_restore", false)?;
    child.drain_stdout();
    let exit = child.wait_exit()?;
    drop(spooled);
    if !exit.status.success() {
        return Err(restore_error("pg_restore", &exit));
    }
    Ok(())
}

/// `tool` (pg_restore or psql) failed: its error line, without the tool's own prefix
/// (`pg_restore: error: `, `psql:<stdin>:12: `).
fn restore_error(tool: &str, exit: &Exit) -> Error {
    let text = exit.stderr_text();
    let reason = exit.reason();
    let reason = match reason.strip_prefix("pg_restore: error: ") {
        Some(r) => r,
        None => match reason.strip_prefix("psql:<stdin>:") {
            Some(r) => r.split_once(": ").map_or(r, |(_, msg)| msg),
            None => &reason,
        },
    };
    let err = Error::process(format!("{tool} failed: {reason}"));
    if text.contains("role") && text.contains("does not exist") {
        err.with_hint(
            "create the missing role on the target first, or pass --no-owner --no-privileges",
        )
    } else if text.contains("extension")
        && (text.contains("is not available") || text.contains("control file"))
    {
        err.with_hint("install the extension's package on the target server first (for example postgresql-16-postgis-3)")
    } else {
        err
    }
}
