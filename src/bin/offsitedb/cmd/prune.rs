//! `offsitedb prune`: deletes what the retention policy no longer keeps: snapshots, base backups,
//! and the WAL older than the oldest base backup kept.

use anyhow::Result;
use offsitedb::{ops, units};

use super::{Global, SourceArgs};
use crate::output::{self, outln, warn};

/// Delete snapshots, base backups and WAL that the retention policy no longer keeps
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
    let state_at = s.state_at()?;
    let state = if state_at.exists() {
        Some(state_at.open()?)
    } else {
        warn(&format!(
            "no run history on this machine ({}): only the repository can show failing backups (a newest snapshot that failed its drill)",
            state_at.describe()
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
            pitr_report(&r);
        }
        reports.push(r);
    }
    if g.json {
        super::print_json(&reports)?;
    }
    Ok(())
}

/// The base backups' and the WAL's part of a prune, after the snapshots'.
fn pitr_report(r: &ops::prune::PruneReport) {
    let verb = if r.dry_run { "would delete" } else { "delete" };
    if let Some(b) = &r.base_backups {
        outln!("{}: base backups, keep {}", r.source, r.policy);
        if let Some(h) = &b.plan.held {
            outln!("  {h}");
        }
        for d in &b.plan.decisions {
            if d.keep {
                outln!("  keep          {}  {}", d.id, d.reasons.join("; "));
            } else {
                outln!("  {verb:<13} {}", d.id);
            }
        }
        for s in &b.skipped {
            outln!("  skipped       {s}");
        }
        for u in &b.unreadable {
            outln!("  keep          {u} (unreadable manifest)");
        }
        for l in &b.leftovers_removed {
            outln!("  {verb:<13} {l}  (interrupted base backup, no manifest)");
        }
        for l in &b.leftovers_kept {
            outln!("  keep          {l}");
        }
        let n = b.plan.deletions().count();
        if r.dry_run {
            outln!("{}: dry run, {n} base backup(s) would be deleted", r.source);
        } else {
            outln!("{}: {} base backup(s) deleted", r.source, b.deleted.len());
        }
    }
    if let Some(w) = &r.wal {
        if let Some(h) = &w.held {
            outln!("{}: WAL: nothing deleted ({h})", r.source);
            return;
        }
        if let Some(k) = &w.keep_from {
            outln!(
                "{}: WAL: keep from segment {k} on (the oldest base backup kept starts there), and every history file",
                r.source
            );
        }
        for d in &w.deleted {
            outln!(
                "  {verb:<13} {}..{}  {} file{}, {} (timeline {})",
                d.first,
                d.last,
                d.files,
                if d.files == 1 { "" } else { "s" },
                units::bytes(d.bytes),
                d.timeline
            );
        }
        for s in &w.skipped {
            outln!("  skipped       {s}");
        }
        outln!(
            "{}: WAL: {} file(s), {} {}; {} file(s), {} kept",
            r.source,
            w.files_deleted,
            units::bytes(w.bytes_deleted),
            if r.dry_run {
                "would be deleted"
            } else {
                "deleted"
            },
            w.files_kept,
            units::bytes(w.bytes_kept)
        );
    }
}
