//! `offsitedb backup-list`: base backups, their WAL ranges, and how far the WAL after each reaches.

use anyhow::Result;
use offsitedb::{ops, units};

use super::{Global, SourceArgs};
use crate::output::{self, outln, warn};

/// List base backups with their WAL ranges and coverage
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub source: SourceArgs,
}

pub fn run(a: Args, g: &Global) -> Result<()> {
    let s = g.settings()?;
    let name = a.source.name_filter(&s)?;
    let repo = super::open_read(&s)?;
    let items = ops::backup_list::list(&repo, name.as_deref(), &mut |w| warn(&w))?;
    if g.json {
        return super::print_json(&items);
    }
    if items.is_empty() {
        output::info(&format!("no base backups in {}", repo.location()));
        return Ok(());
    }
    let src_w = items
        .iter()
        .map(|b| b.source.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let lsn_w = items
        .iter()
        .map(|b| {
            b.start_lsn
                .to_string()
                .len()
                .max(b.end_lsn.to_string().len())
        })
        .max()
        .unwrap_or(9)
        .max(9);
    // "full", or "incr of ID" (an incremental, and the base backup it is based on).
    let based = |b: &ops::backup_list::BaseSummary| match &b.parent {
        Some(p) => format!("incr of {p}"),
        None => b.kind.to_string(),
    };
    let kind_w = items
        .iter()
        .map(|b| based(b).len())
        .max()
        .unwrap_or(4)
        .max(4);
    outln!(
        "{:<23}  {:<kind_w$}  {:<src_w$}  {:>3}  {:<lsn_w$}  {:<lsn_w$}  {:<20}  {:>8}  {:>10}  {:<16}  WAL",
        "ID",
        "KIND",
        "SOURCE",
        "TL",
        "START LSN",
        "END LSN",
        "STARTED (UTC)",
        "TOOK",
        "STORED",
        "PITR DRILL",
    );
    for b in &items {
        outln!(
            "{:<23}  {:<kind_w$}  {:<src_w$}  {:>3}  {:<lsn_w$}  {:<lsn_w$}  {:<20}  {:>8}  {:>10}  {:<16}  {}",
            b.id,
            based(b),
            b.source,
            b.timeline,
            b.start_lsn.to_string(),
            b.end_lsn.to_string(),
            b.started.strftime("%Y-%m-%d %H:%M:%S").to_string(),
            units::duration(std::time::Duration::from_secs_f64(
                b.duration_seconds.max(0.0)
            )),
            units::bytes(b.stored_bytes),
            ops::backup_list::drill_line(b),
            ops::backup_list::coverage_line(b),
        );
    }
    for b in &items {
        if let Some(d) = b.last_pitr_drill.as_ref().filter(|d| d.result != "passed") {
            warn(&format!(
                "{}/{}: the latest PITR drill ({}) {}: {}",
                b.source,
                b.id,
                d.drill_id,
                d.result,
                d.problem.as_deref().unwrap_or("")
            ));
        }
    }
    Ok(())
}
