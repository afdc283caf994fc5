//! `offsitedb verify`: the repository holds what its log says, nothing was deleted or rolled
//! back, and (with `--read-data`) every byte authenticates.

use anyhow::Result;
use offsitedb::ops;
use offsitedb::ops::verify::{Severity, VerifyOptions};

use super::Global;
use crate::output::{outln, warn};

/// Prove the repository is whole: logs complete, nothing deleted unexplained, no rollback
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only this source (default: every source in the repository, and every one this machine
    /// has seen there)
    #[arg(long, value_name = "NAME")]
    pub source: Option<String>,
    /// Download and authenticate every data object and WAL file too (default: manifests, drill
    /// records and the log are read; data objects are checked by size)
    #[arg(long)]
    pub read_data: bool,
    /// Objects read at once with --read-data
    #[arg(long, short = 'j', default_value_t = 4, value_name = "N")]
    pub jobs: usize,
    /// Accept the repository as it is now: remember its current log heads even if they are
    /// older than the ones seen before (after you have looked at a rollback)
    #[arg(long)]
    pub accept: bool,
}

pub fn run(a: Args, g: &Global) -> Result<()> {
    let s = g.settings()?;
    if !(1..=32).contains(&a.jobs) {
        return Err(offsitedb::Error::config(format!(
            "--jobs {} is out of range (1 to 32)",
            a.jobs
        ))
        .into());
    }
    if let Some(name) = &a.source {
        offsitedb::catalog::check_source_name(name)?;
    }
    let repo = super::open_read(&s)?;
    let opts = VerifyOptions {
        read_data: a.read_data,
        jobs: a.jobs,
        accept: a.accept,
    };
    let quiet = g.json || g.quiet;
    let r = ops::verify::run(&repo, a.source.as_deref(), &opts, &mut |n| {
        if !quiet {
            warn(&n)
        }
    })?;
    if g.json {
        super::print_json(&r)?;
    } else {
        for src in &r.sources {
            let errors = src
                .findings
                .iter()
                .filter(|f| f.severity == Severity::Error)
                .count();
            outln!(
                "{}: {} ({} log entries; {} snapshots, {} base backups, {} drill records{}{}{})",
                src.source,
                if errors == 0 { "ok" } else { "PROBLEMS" },
                src.log_entries,
                src.snapshots,
                src.base_backups,
                src.drill_records,
                if src.pruned > 0 {
                    format!("; {} pruned as logged", src.pruned)
                } else {
                    String::new()
                },
                if src.wal_files_checked > 0 {
                    format!("; {} WAL files", src.wal_files_checked)
                } else {
                    String::new()
                },
                if r.read_data {
                    format!(
                        "; {} objects read, {}",
                        src.objects_read,
                        offsitedb::units::bytes(src.bytes_read)
                    )
                } else {
                    String::new()
                }
            );
            for f in &src.findings {
                let tag = match f.severity {
                    Severity::Error => "error",
                    Severity::Warning => "warning",
                };
                outln!("  {tag}: {}", f.message);
            }
        }
        let keys: Vec<String> = r.keys.iter().map(|(k, n)| format!("{k} ({n})")).collect();
        outln!(
            "keys needed: {}",
            if keys.is_empty() {
                "-".to_string()
            } else {
                keys.join(", ")
            }
        );
    }
    match r.error() {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
