/*!
`offsitedb drill`: prove a snapshot restores, and that what comes back is what was dumped.

```text
download ─► unseal ─► decompress ─► dump inspector ─┬─ TOC ───► pg_restore --section=pre-data
                                                    ├─ rows ──► COPY … FROM STDIN on N connections
                                                    └─ other ─► pg_restore (large objects, sequences)
then pg_restore -j N --section=post-data, while each loaded table is read back and compared
```

That streamed restore (`streamed.rs`, its load phase in `load.rs`) is the drill. A snapshot whose
rows were counted rather than inspected, or an archive the inspector cannot follow, is instead
spooled to a file (TOC offsets filled in) and restored by `pg_restore -j N` (`spooled.rs`), then
verified the same way.

The drill restores into a throwaway cluster of the source's major version (initdb'd while the
download runs, tuned for restore speed, unix socket only), or into a temporary database on a
scratch server. Then every table is read back with `COPY … TO STDOUT` under pg_dump's own session
settings, and its rows and content digest are compared with the manifest. The result is written
to the repository as a new drill record; a snapshot is *sealed* when its latest drill passed.

The files, by stage: `target.rs` (the throwaway cluster or drill server, and what it must have),
`streamed.rs` with `load.rs` and `tracking.rs`, `spooled.rs` (through [`crate::ops::spool`],
shared with `restore --jobs`), `folder.rs` (folder snapshots), the read-back in `verify.rs` and
`readback.rs`, pg_restore's runs and errors in `pgrestore.rs`, and `record.rs` (the drill record
and its verdict). [`pitr`] drills a base backup and the WAL archive instead (`drill --pitr`).

Problems of the drill's own environment (no server programs of that major, not enough disk, an
extension the drill cluster lacks) are errors and write no record: they say nothing about the
snapshot. Problems of the snapshot (it does not decrypt, does not restore, or restores different
data) fail the drill and are recorded.
*/

mod folder;
mod load;
mod pgrestore;
pub mod pitr;
mod readback;
mod record;
mod spooled;
mod streamed;
mod target;
mod tracking;
mod verify;

use record::stopped;

pub use target::extension_package;

use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use jiff::Timestamp;

use crate::catalog::drill::TableCheck;
use crate::catalog::manifest::VerifyMethod;
use crate::catalog::{DrillRecord, Entry, Manifest, Repository};
use crate::error::{Error, Result};
use crate::postgres::{ConnInfo, binaries};
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
    let jobs = drill_jobs(opts.jobs)?;
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
        target::check_server_programs(&m, &dirs)?;
    }
    let work = work_folder(&m, opts)?;
    let ctx = Ctx {
        repo,
        m: &m,
        opts,
        jobs,
        pg_restore: &pg_restore.path,
        work: work.path(),
        started,
        t0,
        batch_bytes: env_size("OFFSITEDB_DRILL_BATCH_KIB", 1 << 10, 1, load::BATCH_BYTES)?,
        split_bytes: env_size("OFFSITEDB_DRILL_SPLIT_MIB", 1 << 20, 0, verify::SPLIT_BYTES)?,
    };
    let (restored, unreadable) = restore(&ctx)?;
    record::conclude(&ctx, pg_restore.version, restored, unreadable, note)
}

/// The connections a drill uses: `--jobs`, or one per core for 0.
fn drill_jobs(jobs: usize) -> Result<usize> {
    match jobs {
        0 => Ok(std::thread::available_parallelism().map_or(2, |n| n.get().min(DEFAULT_JOBS_MAX))),
        n if n > JOBS_MAX => Err(Error::config(format!(
            "--jobs {n} is more connections than a drill can use (at most {JOBS_MAX})"
        ))
        .with_hint("leave --jobs out to use one per core")),
        n => Ok(n),
    }
}

/// The drill's own temporary folder (for the spool and the throwaway cluster), made once the
/// disk the drill needs there is known to be free.
fn work_folder(m: &Manifest, opts: &DrillOptions) -> Result<tempfile::TempDir> {
    let parent = super::work_parent(opts.work_dir.clone())?;
    // A streamed drill writes no spool file (a snapshot with counted rows is spooled).
    let spool = m.verification.method != VerifyMethod::ArchiveDigest;
    spooled::check_space(&parent, m, opts.drill_server.is_none(), spool)?;
    let work = tempfile::Builder::new()
        .prefix("offsitedb-drill-")
        .tempdir_in(&parent)
        .map_err(|e| Error::io_at("cannot create a temporary folder in", &parent, &e))?;
    // As root, the throwaway cluster runs as `postgres`, which must reach its folder inside.
    let _ = std::fs::set_permissions(
        work.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    );
    Ok(work)
}

/// The restore and its verification: streamed when the backup could inspect the archive,
/// otherwise (counted rows, or an archive this version cannot follow) spooled and given to
/// `pg_restore -j`. Returns what it found, with the notes of both attempts, and the error of a
/// snapshot that cannot be read back.
fn restore<S: WriteStore + ?Sized>(ctx: &Ctx<'_, S>) -> Result<(Restored, Option<Error>)> {
    let mut notes = Vec::new();
    let mut attempt = if ctx.m.verification.method == VerifyMethod::ArchiveDigest {
        streamed::stream_restore(ctx)?
    } else {
        Attempt::Fallback(None)
    };
    if let Attempt::Fallback(why) = attempt {
        if let Some(why) = why {
            notes.push(format!(
                "the archive could not be restored as it streamed ({why}): restored from a spooled copy instead"
            ));
        }
        attempt = spooled::spooled_restore(ctx)?;
    }
    let (mut restored, unreadable) = match attempt {
        Attempt::Done(r) => (r, None),
        Attempt::Unreadable(error, r) => (r, Some(error)),
        Attempt::Fallback(_) => unreachable!("the spooled restore does not fall back"),
    };
    notes.append(&mut restored.notes);
    restored.notes = notes;
    Ok((restored, unreadable))
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
