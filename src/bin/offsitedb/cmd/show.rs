//! `offsitedb show`: one snapshot's manifest and where it stands.

use anyhow::Result;
use offsitedb::ops;

use super::{Global, SourceArgs};
use crate::output;

/// Show one snapshot's manifest
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Snapshot id, a unique prefix of one, or "latest"
    #[arg(default_value = "latest")]
    pub snapshot: String,
    #[command(flatten)]
    pub source: SourceArgs,
}

pub fn run(a: Args, g: &Global) -> Result<()> {
    let s = g.settings()?;
    let name = a.source.name_filter(&s)?;
    let repo = super::open_read(&s)?;
    let (m, summary, drill) = ops::list::show(&repo, &a.snapshot, name.as_deref())?;
    for w in &summary.warnings {
        output::warn(w);
    }
    if g.json {
        // The whole manifest, and where the snapshot stands.
        let mut v = serde_json::to_value(&m)?;
        v["status"] = serde_json::to_value(summary.status)?;
        v["status_reason"] = serde_json::to_value(&summary.status_reason)?;
        v["warnings"] = serde_json::to_value(&summary.warnings)?;
        v["last_drill"] = serde_json::to_value(&drill)?;
        super::print_json(&v)
    } else {
        output::manifest(&m, &summary, drill.as_deref());
        Ok(())
    }
}
