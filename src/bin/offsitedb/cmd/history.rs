//! `offsitedb history`: past runs on this machine, from the state file.

use anyhow::Result;

use super::{Global, SourceArgs};
use crate::output;

/// Past runs (backups, drills, prunes) on this machine, newest first
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub source: SourceArgs,
    /// How many runs
    #[arg(long, default_value_t = 30)]
    pub limit: usize,
}

pub fn run(a: Args, g: &Global) -> Result<()> {
    let s = g.settings()?;
    let name = a.source.name_filter(&s)?;
    let at = s.state_at()?;
    if !at.exists() {
        if g.json {
            return super::print_json(&[] as &[offsitedb::state::Run]);
        }
        output::info(&format!(
            "no runs recorded yet ({} does not exist)",
            at.describe()
        ));
        return Ok(());
    }
    let runs = at.open()?.history(name.as_deref(), a.limit)?;
    if g.json {
        super::print_json(&runs)
    } else {
        output::history(&runs);
        Ok(())
    }
}
