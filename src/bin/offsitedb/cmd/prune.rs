//! `offsitedb prune`: deletes what the retention policy no longer keeps.

use anyhow::Result;
use offsitedb::ops;
use offsitedb::state::State;

use super::{Global, SourceArgs};
use crate::output::{self, warn};

/// Delete snapshots that the retention policy no longer keeps
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Retention for this run, e.g. "daily=7,weekly=4,monthly=12" (default: the source's keep)
    #[arg(long, value_name = "RULES")]
    pub keep: Option<String>,
    /// Show what would be kept and deleted, delete nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Fail at once (exit 14) when another run of the same source holds its lock
    #[arg(long)]
    pub no_wait: bool,
}

pub fn run(a: Args, g: &Global) -> Result<()> {
    let s = g.settings()?;
    let rules = a
        .keep
        .as_deref()
        .map(offsitedb::retention::parse_rules)
        .transpose()?;
    let name = a.source.name_filter(&s)?;
    let targets = s.retention_targets(name.as_deref(), rules)?;
    let repo = super::open_write(&s)?;
    // The history says whether backups are failing (then nothing is deleted): a state file that
    // exists but cannot be read stops the prune rather than lose that protection.
    let state_path = s.state_path()?;
    let state = if state_path.exists() {
        Some(State::open(&state_path)?)
    } else {
        warn(&format!(
            "no run history on this machine ({}): only the repository can show failing backups (a newest snapshot that failed its drill)",
            state_path.display()
        ));
        None
    };
    let mut reports = Vec::new();
    for (name, keep, tz) in targets {
        // A dry run deletes nothing, so it need not wait for a running backup.
        let _lock = if a.dry_run {
            None
        } else {
            Some(super::lock(&s, &name, "prune", a.no_wait)?)
        };
        let snapshots = ops::list::list(&repo, Some(&name), &mut |w| warn(&w))?;
        let failing = match &state {
            Some(st) => ops::job::failing(st, &name)?,
            None => None,
        };
        let opts = ops::prune::PruneOptions {
            keep,
            tz,
            dry_run: a.dry_run,
            failing,
            grace: ops::prune::DEFAULT_GRACE,
        };
        let r = ops::prune::run(&repo, &name, &snapshots, &opts, jiff::Timestamp::now())?;
        if !g.json {
            output::prune_report(&r);
        }
        reports.push(r);
    }
    if g.json {
        super::print_json(&reports)?;
    }
    Ok(())
}
