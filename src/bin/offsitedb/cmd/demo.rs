//! `offsitedb demo`: the whole story on a throwaway cluster.

use std::path::PathBuf;

use anyhow::Result;
use offsitedb::{ops, units};

use super::Global;
use crate::output::outln;

/// Back up a sample database, restore it and compare: the whole story in a minute
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Keep the demo repository and its key in this (new or empty) folder
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
}

pub fn run(a: Args, g: &Global) -> Result<()> {
    let s = g.settings()?;
    let json = g.json;
    if !json {
        outln!("OffsiteDB demo: back up a sample database, restore it, and check it.\n");
    }
    let report = ops::demo::run(a.keep, s.pg_bin_dirs().to_vec(), &mut |what, took| {
        if !json {
            outln!("  ✓ {:>6}  {what}", units::duration(took));
        }
    })?;
    if json {
        return super::print_json(&report);
    }
    outln!();
    outln!("  {:<14} {:>12} {:>12}", "table", "source rows", "restored");
    for c in &report.counts {
        outln!(
            "  {:<14} {:>12} {:>12}",
            c.table,
            c.source_rows,
            c.restored_rows
        );
    }
    outln!(
        "\ndemo passed in {}: snapshot {} was sealed by its restore drill (tested restore time {}),\nthen restored with identical row counts.",
        units::duration(report.total),
        report.snapshot_id,
        units::duration(std::time::Duration::from_secs_f64(
            report.tested_restore_seconds
        ))
    );
    if let Some(dir) = report.kept {
        outln!(
            "the repository and its key are in {0}; try:\n  offsitedb list --repo {0}/repository --key-file {0}/master.key",
            dir.display()
        );
    }
    Ok(())
}
