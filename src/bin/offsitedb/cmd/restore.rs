//! `offsitedb restore`: a snapshot into an existing database, or a folder snapshot into a folder.

use std::path::PathBuf;

use anyhow::Result;
use offsitedb::postgres::ConnInfo;
use offsitedb::{ops, units};

use super::{Global, SourceArgs};
use crate::output::{self, warn};

/// Restore a snapshot into a database (or a folder snapshot into a folder)
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Snapshot id, a unique prefix of one, or "latest"
    pub snapshot: String,
    #[command(flatten)]
    pub source: SourceArgs,
    /// Target database URL
    #[arg(
        long,
        value_name = "URL",
        required_unless_present = "to_dir",
        conflicts_with = "to_dir"
    )]
    pub to: Option<String>,
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

pub fn run(a: Args, g: &Global) -> Result<()> {
    let s = g.settings()?;
    let name = a.source.name_filter(&s)?;
    if let Some(dir) = &a.to_dir {
        let repo = super::open_read(&s)?;
        let entry = repo.resolve(&a.snapshot, name.as_deref())?;
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
    let entry = repo.resolve(&a.snapshot, name.as_deref())?;
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
