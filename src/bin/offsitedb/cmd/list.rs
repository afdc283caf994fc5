//! `offsitedb list`: every snapshot in the repository, from the repository alone.

use anyhow::Result;
use offsitedb::ops;

use super::{Global, SourceArgs};
use crate::output::{self, warn};

/// List snapshots
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub source: SourceArgs,
}

pub fn run(a: Args, g: &Global) -> Result<()> {
    let s = g.settings()?;
    let name = a.source.name_filter(&s)?;
    let repo = super::open_read(&s)?;
    let items = ops::list::list(&repo, name.as_deref(), &mut |w| warn(&w))?;
    if g.json {
        super::print_json(&items)
    } else {
        if items.is_empty() {
            output::info(&format!("no snapshots in {}", repo.location()));
        } else {
            output::snapshot_table(&items);
        }
        Ok(())
    }
}
