//! `offsitedb run`: a source's job now, in the foreground, exactly as `serve` runs it.

use anyhow::Result;
use offsitedb::lock::Wait;
use offsitedb::ops;

use super::{Global, SourceOrPositional};
use crate::output;

/// Run a source's job now: backup, drill, prune (what `serve` runs on its schedule)
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub source: SourceOrPositional,
    /// Fail at once (exit 14) when another run of the same source holds its lock
    #[arg(long)]
    pub no_wait: bool,
}

pub fn run(a: Args, g: &Global) -> Result<()> {
    let s = g.settings()?;
    let spec = s.one_source(&a.source.get().selection(), "run")?;
    let dispatcher = super::alert_test::dispatcher(&s)?;
    let opts = ops::job::JobOptions {
        backup: ops::backup::BackupOptions {
            pg_bin_dirs: s.pg_bin_dirs().to_vec(),
            progress: g.progress(),
            ..Default::default()
        },
        drill: ops::drill::DrillOptions {
            pg_bin_dirs: s.pg_bin_dirs().to_vec(),
            progress: g.progress(),
            ..Default::default()
        },
        wait: if a.no_wait { Wait::No } else { Wait::Yes },
    };
    let result = offsitedb::daemon::job_with_alerts(
        &s,
        &spec,
        &s.state_at()?.open()?,
        &opts,
        &dispatcher,
        None,
        &mut |n| output::note(&n),
    );
    // Alerts and pings go out before the process ends.
    dispatcher.finish(std::time::Duration::from_secs(60));
    let mut report = result?;
    if g.json {
        super::print_json(&report)?;
    } else {
        output::job_report(&report);
    }
    match report
        .backup_failure
        .take()
        .or(report.drill_failure.take())
        .or(report.prune_failure.take())
    {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
