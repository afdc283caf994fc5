//! `offsitedb restore`: a snapshot into an existing database, or a folder snapshot into a folder.

use std::path::PathBuf;

use anyhow::Result;
use offsitedb::postgres::ConnInfo;
use offsitedb::{ops, units};

use super::{Global, SourceArgs};
use crate::output::{self, outln, warn};

/// Restore a snapshot into a database (or a folder snapshot into a folder), or a base backup
/// and WAL into a data folder that recovers to a point in time (--pgdata)
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Snapshot id, a unique prefix of one, or "latest" (not with --pgdata)
    #[arg(required_unless_present = "pgdata", conflicts_with = "pgdata")]
    pub snapshot: Option<String>,
    #[command(flatten)]
    pub source: SourceArgs,
    /// Target database URL
    #[arg(
        long,
        value_name = "URL",
        required_unless_present_any = ["to_dir", "pgdata"],
        conflicts_with_all = ["to_dir", "pgdata"]
    )]
    pub to: Option<String>,
    #[command(flatten)]
    pub pitr: PitrArgs,
    /// Target folder, for a directory snapshot
    #[arg(long, value_name = "DIR")]
    pub to_dir: Option<PathBuf>,
    /// With --to-dir: write into a folder that is not empty
    #[arg(long, requires = "to_dir")]
    pub force: bool,
    /// Drop the snapshot's objects in the target before restoring them
    #[arg(long)]
    pub clean: bool,
    /// Parallel restore jobs (stages the archive in a temporary file first)
    #[arg(long, short = 'j', default_value_t = 1)]
    pub jobs: usize,
    /// Do not restore ownership (when the roles do not exist on the target)
    #[arg(long)]
    pub no_owner: bool,
    /// Do not restore grants
    #[arg(long)]
    pub no_privileges: bool,
    /// Where to stage the archive for --jobs > 1
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
}

/// Point-in-time recovery into a new data folder.
#[derive(clap::Args, Debug)]
pub struct PitrArgs {
    /// A new (or empty) data folder to recover into, from a base backup and the WAL archive
    #[arg(long, value_name = "DIR", conflicts_with = "to_dir")]
    pub pgdata: Option<PathBuf>,
    /// Recover to this moment (RFC 3339 or PostgreSQL's format, with a time zone)
    #[arg(
        long,
        value_name = "TIME",
        requires = "pgdata",
        group = "recovery_target"
    )]
    pub target_time: Option<String>,
    /// Recover to this WAL position (like 0/3000060)
    #[arg(
        long,
        value_name = "LSN",
        requires = "pgdata",
        group = "recovery_target"
    )]
    pub target_lsn: Option<String>,
    /// Recover to the commit of this transaction
    #[arg(
        long,
        value_name = "XID",
        requires = "pgdata",
        group = "recovery_target"
    )]
    pub target_xid: Option<String>,
    /// Recover to this restore point (pg_create_restore_point)
    #[arg(
        long,
        value_name = "NAME",
        requires = "pgdata",
        group = "recovery_target"
    )]
    pub target_name: Option<String>,
    /// Recover to the end of the archived WAL
    #[arg(long, requires = "pgdata", group = "recovery_target")]
    pub latest: bool,
    /// What the server does at the target: pause (PostgreSQL's default: look, then promote with
    /// pg_wal_replay_resume()), promote, or shutdown
    #[arg(
        long,
        value_name = "ACTION",
        default_value = "pause",
        requires = "pgdata"
    )]
    pub target_action: String,
    /// The timeline to follow: latest (default), current, or a number
    #[arg(
        long,
        value_name = "TLI",
        default_value = "latest",
        requires = "pgdata"
    )]
    pub target_timeline: String,
    /// Start from this base backup (id or unique prefix) instead of the newest that ends
    /// before the target (for --target-xid and --target-name, which it cannot place in time)
    #[arg(long, value_name = "ID", requires = "pgdata")]
    pub backup: Option<String>,
    /// Start the server on a private socket and wait until recovery reaches the target
    #[arg(long, requires = "pgdata")]
    pub start: bool,
    /// With --start: leave the server running (it is stopped otherwise)
    #[arg(long, requires = "start")]
    pub keep_running: bool,
    /// Turn archiving off in the restored server (a trial restore must not add a timeline to
    /// the source's WAL archive when it is promoted)
    #[arg(long, requires = "pgdata")]
    pub no_archive: bool,
}

impl PitrArgs {
    fn target(&self) -> Result<ops::pitr::Target> {
        use ops::pitr::Target;
        Ok(if let Some(t) = &self.target_time {
            Target::parse_time(t)?
        } else if let Some(l) = &self.target_lsn {
            Target::Lsn(offsitedb::wal::name::Lsn::parse(l)?)
        } else if let Some(x) = &self.target_xid {
            Target::parse_xid(x)?
        } else if let Some(n) = &self.target_name {
            Target::Name(n.clone())
        } else if self.latest {
            Target::Latest
        } else {
            return Err(offsitedb::Error::config(
                "--pgdata needs a target: --target-time, --target-lsn, --target-xid, --target-name or --latest",
            )
            .into());
        })
    }
}

fn run_pitr(a: &Args, g: &Global, pgdata: &std::path::Path) -> Result<()> {
    let s = g.settings()?;
    let source = a
        .source
        .name_filter(&s)?
        .ok_or_else(|| offsitedb::Error::config("--pgdata needs the source: --source NAME"))?;
    let key = super::key(&s)?;
    let repo = super::open_read(&s)?;
    let opts = ops::pitr::PitrOptions {
        target: a.pitr.target()?,
        action: a.pitr.target_action.clone(),
        timeline: a.pitr.target_timeline.clone(),
        backup: a.pitr.backup.clone(),
        start: a.pitr.start,
        keep_running: a.pitr.keep_running,
        no_archive: a.pitr.no_archive,
        pg_bin_dirs: s.pg_bin_dirs().to_vec(),
        location: s.location()?,
        credentials: s.credentials()?,
    };
    let report = ops::pitr::run(&repo, &key, &source, pgdata, &opts, &mut |n| {
        output::info(&n)
    })?;
    if g.json {
        return super::print_json(&report);
    }
    output::info(&format!(
        "restore_command: {} (configuration in {}, key copy in {}: delete both after promotion)",
        report.restore_command,
        report.config.display(),
        report.key.display()
    ));
    match &report.reached {
        Some(r) => {
            outln!(
                "{}: recovery {} at LSN {}, last transaction {}",
                report.pgdata.display(),
                r.state,
                r.replay_lsn.as_deref().unwrap_or("(unknown)"),
                r.last_transaction.as_deref().unwrap_or("(none replayed)")
            );
            if let Some(line) = &r.stopped {
                output::info(&format!("the server said: {line}"));
            }
            if let (Some(dir), Some(port), true) = (&r.socket_dir, r.port, a.pitr.keep_running) {
                outln!(
                    "running: psql -h {} -p {port} -d postgres (log: {})",
                    dir.display(),
                    r.log.display()
                );
            }
        }
        None => outln!(
            "{}: ready to recover to {}; start the server on it (pg_ctl -D {} start)",
            report.pgdata.display(),
            report.target.describe(),
            report.pgdata.display()
        ),
    }
    Ok(())
}

pub fn run(a: Args, g: &Global) -> Result<()> {
    if let Some(pgdata) = a.pitr.pgdata.clone() {
        return run_pitr(&a, g, &pgdata);
    }
    let s = g.settings()?;
    let name = a.source.name_filter(&s)?;
    let snapshot = a
        .snapshot
        .as_deref()
        .expect("clap requires a snapshot without --pgdata");
    if let Some(dir) = &a.to_dir {
        let repo = super::open_read(&s)?;
        let entry = repo.resolve(snapshot, name.as_deref())?;
        let m = repo.manifest(&entry.source, &entry.id)?;
        let report = ops::directory::restore(&repo, &m, dir, a.force, g.progress())?;
        for n in report.notes.iter().take(20) {
            warn(n);
        }
        if g.json {
            return super::print_json(&report);
        }
        output::info(&format!(
            "restored {}/{} into {}: {} files, {}, every one checked against the manifest, in {}",
            report.source,
            report.snapshot,
            report.target,
            report.files,
            units::bytes(report.bytes),
            units::duration(std::time::Duration::from_secs_f64(report.seconds))
        ));
        return Ok(());
    }
    let target = ConnInfo::parse(a.to.as_deref().expect("clap requires --to or --to-dir"))?;
    let opts = ops::restore::RestoreOptions {
        clean: a.clean,
        jobs: a.jobs.max(1),
        no_owner: a.no_owner,
        no_privileges: a.no_privileges,
        spool_dir: a.spool_dir,
        pg_bin_dirs: s.pg_bin_dirs().to_vec(),
        progress: g.progress(),
    };
    let repo = super::open_read(&s)?;
    let entry = repo.resolve(snapshot, name.as_deref())?;
    let report = ops::restore::run(&repo, &entry, &target, &opts, &mut |n| warn(&n))?;
    if g.json {
        return super::print_json(&report);
    }
    output::info(&format!(
        "restored {}/{} into {} in {} (pg_restore {}, {} job{})",
        report.source,
        report.snapshot,
        report.target,
        units::duration(std::time::Duration::from_secs_f64(report.seconds)),
        report.pg_restore,
        report.jobs,
        if report.jobs == 1 { "" } else { "s" }
    ));
    Ok(())
}
