/*!
`offsitedb restore --source NAME --pgdata DIR (--target-time T | --target-lsn L | --target-xid X |
--target-name N | --latest)`: a data folder that recovers to a point in time.

1. [`target::plan`]: the newest base backup that ends before the target, and the window the
   repository can restore (a target outside it is refused, naming the window).
2. The base backup is fetched into DIR (`ops::base_fetch`, which refuses a folder that is not
   empty and runs `pg_verifybackup`).
3. [`settings`]: `recovery.signal`, the recovery settings, and a `restore_command` that calls
   this binary with a configuration written next to DIR.
4. With `--start`, [`server`] starts it on a private socket and waits until recovery reached
   the target, then reports where it stopped and stops it (or leaves it running).
*/

pub mod server;
pub mod settings;
pub mod target;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::catalog::Repository;
use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::storage::s3::Credentials;
use crate::storage::{Location, ReadStore};
pub use target::{Plan, Target, Window};

/// How the restore is asked for.
pub struct PitrOptions {
    pub target: Target,
    /// `promote`, `pause` (PostgreSQL's default) or `shutdown`.
    pub action: String,
    /// `latest` (the default), `current`, or a timeline number.
    pub timeline: String,
    /// A base backup id (or prefix) to start from instead of the newest that fits.
    pub backup: Option<String>,
    pub start: bool,
    pub keep_running: bool,
    pub no_archive: bool,
    pub pg_bin_dirs: Vec<PathBuf>,
    /// Where the repository is and how to reach it, for the restore configuration.
    pub location: Location,
    pub credentials: Credentials,
}

/// What the restore did.
#[derive(Debug, Serialize)]
pub struct PitrReport {
    pub source: String,
    pub pgdata: PathBuf,
    pub backup: String,
    pub backup_end_lsn: String,
    pub target: Target,
    pub window: Window,
    pub restore_command: String,
    pub config: PathBuf,
    pub key: PathBuf,
    pub fetch_seconds: f64,
    /// What `pg_verifybackup` said of the fetched copy.
    pub verify: String,
    /// With `--start`: where recovery stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reached: Option<server::Reached>,
    pub seconds: f64,
}

/// Plans, fetches, writes the recovery settings, and (with `start`) recovers.
pub fn run<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    key: &MasterKey,
    source: &str,
    pgdata: &Path,
    opts: &PitrOptions,
    note: &mut dyn FnMut(String),
) -> Result<PitrReport> {
    let began = std::time::Instant::now();
    check_action(&opts.action)?;
    check_timeline(&opts.timeline)?;
    let plan = target::plan(repo, source, &opts.target, opts.backup.as_deref())?;
    note(format!(
        "restoring {source} to {} from base backup {} (consistent from LSN {}); the archive can restore {}",
        opts.target.describe(),
        plan.backup.backup_id,
        plan.backup.end_lsn,
        plan.window.describe()
    ));
    let fetched = crate::ops::base_fetch::fetch(
        repo,
        &plan.backup,
        pgdata,
        &crate::ops::base_fetch::FetchOptions {
            pg_bin_dirs: opts.pg_bin_dirs.clone(),
            progress: false,
        },
        note,
    )?;
    let meta = std::fs::metadata(pgdata).map_err(|e| Error::io_at("cannot read", pgdata, &e))?;
    let owner = Some((meta.uid(), meta.gid()));
    let written = settings::write_companions(
        pgdata,
        &opts.location,
        &opts.credentials,
        key,
        source,
        owner,
    )?;
    settings::write_recovery(
        pgdata,
        &settings::Recovery {
            source,
            target: &opts.target,
            action: &opts.action,
            timeline: &opts.timeline,
            no_archive: opts.no_archive,
        },
        &written.restore_command,
        owner,
    )?;
    let fetch_seconds = began.elapsed().as_secs_f64();
    let reached = if opts.start {
        let log = settings::companion(pgdata, "log")?;
        let users = vec![plan.backup.source.user.clone(), "postgres".to_string()];
        let mut server = server::start(pgdata, &log, &opts.pg_bin_dirs, users, opts.keep_running)?;
        let action = if opts.target == Target::Latest {
            "promote"
        } else {
            opts.action.as_str()
        };
        let reached = server.wait(action)?;
        if !opts.keep_running {
            server.stop();
        }
        Some(reached)
    } else {
        None
    };
    Ok(PitrReport {
        source: source.to_string(),
        pgdata: std::path::absolute(pgdata).unwrap_or(pgdata.to_path_buf()),
        backup: plan.backup.backup_id.to_string(),
        backup_end_lsn: plan.backup.end_lsn.to_string(),
        target: opts.target.clone(),
        window: plan.window,
        restore_command: written.restore_command,
        config: written.config,
        key: written.key,
        fetch_seconds,
        verify: fetched.verify.summary(),
        reached,
        seconds: began.elapsed().as_secs_f64(),
    })
}

fn check_timeline(t: &str) -> Result<()> {
    if t == "latest" || t == "current" || t.parse::<u32>().is_ok_and(|n| n > 0) {
        return Ok(());
    }
    Err(Error::config(format!(
        "--target-timeline {t:?}: use latest, current, or a timeline number"
    )))
}

fn check_action(a: &str) -> Result<()> {
    match a {
        "promote" | "pause" | "shutdown" => Ok(()),
        _ => Err(Error::config(format!(
            "--target-action {a:?}: use promote, pause or shutdown"
        ))),
    }
}
