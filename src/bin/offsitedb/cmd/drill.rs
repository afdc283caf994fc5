//! `offsitedb drill`: restores a snapshot into a throwaway cluster and checks every table; with
//! `--pitr`, recovers the newest base backup and the WAL archive instead.

use std::path::PathBuf;

use anyhow::Result;
use offsitedb::catalog::Repository;
use offsitedb::ops;
use offsitedb::postgres::ConnInfo;

use super::{Global, SourceArgs};
use crate::output;

/// Prove a snapshot restores: restore it into a throwaway cluster and verify every table
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Snapshot id, a unique prefix of one, or "latest"
    #[arg(default_value = "latest", conflicts_with = "pitr")]
    pub snapshot: String,
    #[command(flatten)]
    pub source: SourceArgs,
    /// Restore into a temporary database on this server instead of a throwaway cluster
    #[arg(long, value_name = "URL", conflicts_with = "pitr")]
    pub drill_server: Option<String>,
    /// Where the drill runs its cluster (default: $OFFSITEDB_TMPDIR or /tmp)
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Connections that load and verify tables (default: one per core, up to 16; at most 64)
    #[arg(long, short = 'j', default_value_t = 0, conflicts_with = "pitr")]
    pub jobs: usize,
    /// Keep the drill database on the --drill-server afterwards, to look into it
    #[arg(long, requires = "drill_server")]
    pub keep: bool,
    /// Drill point-in-time recovery: the newest base backup and the WAL archive, recovered to
    /// the end of the archive and to a random point inside the window, then checked
    #[arg(long)]
    pub pitr: bool,
    /// With --pitr: recover to this moment only (RFC 3339 or PostgreSQL's format, with a time zone)
    #[arg(
        long,
        value_name = "TIME",
        requires = "pitr",
        conflicts_with = "latest"
    )]
    pub target_time: Option<String>,
    /// With --pitr: recover to the end of the archive only
    #[arg(long, requires = "pitr")]
    pub latest: bool,
}

fn run_pitr(a: Args, g: &Global) -> Result<()> {
    use ops::pitr::Target;
    let s = g.settings()?;
    let repo = super::open_write(&s)?;
    let source = match a.source.name_filter(&s)? {
        Some(n) => n,
        None => {
            let configured: Vec<String> = s.file.sources.iter().map(|c| c.name.clone()).collect();
            ops::base_fetch::default_source(&repo, &configured)?
        }
    };
    let target = match (&a.target_time, a.latest) {
        (Some(t), _) => Some(Target::parse_time(t)?),
        (None, true) => Some(Target::Latest),
        (None, false) => None,
    };
    let opts = ops::drill::pitr::PitrDrillOptions {
        target,
        work_dir: a.work_dir,
        pg_bin_dirs: s.pg_bin_dirs().to_vec(),
        location: s.location()?,
        credentials: s.credentials()?,
    };
    let state = super::state_for(&s, "PITR drill");
    let outcome =
        ops::drill::pitr::run_recorded(&repo, &source, &opts, state.as_ref(), &mut |n| {
            output::note(&n)
        })?;
    if g.json {
        super::print_json(&outcome.record)?;
    } else {
        output::pitr_drill_report(&outcome.record);
    }
    match outcome.failure {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

pub fn run(a: Args, g: &Global) -> Result<()> {
    if a.pitr {
        return run_pitr(a, g);
    }
    let s = g.settings()?;
    let name = a.source.name_filter(&s)?;
    let opts = ops::drill::DrillOptions {
        pg_bin_dirs: s.pg_bin_dirs().to_vec(),
        drill_server: a.drill_server.as_deref().map(ConnInfo::parse).transpose()?,
        work_dir: a.work_dir,
        jobs: a.jobs,
        keep: a.keep,
        progress: g.progress(),
    };
    let repo = Repository::open(s.open_store()?, super::key(&s)?)?;
    let entry = repo.resolve(&a.snapshot, name.as_deref())?;
    let outcome = ops::drill::run(&repo, &entry, &opts, &mut |n| output::note(&n))?;
    if g.json {
        super::print_json(&outcome.record)?;
    } else {
        output::drill_report(&outcome.record);
    }
    match outcome.failure {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
