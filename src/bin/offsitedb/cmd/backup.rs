//! `offsitedb backup`: one snapshot of each source named (or of every configured source).

use std::path::PathBuf;

use anyhow::Result;
use offsitedb::catalog::{Entry, Summary};
use offsitedb::config::Selection;
use offsitedb::{Error, ops, units};

use super::{Global, SourceArgs};
use crate::output::{self, outln};

/// Back up a database (or a folder) into the repository
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub source: SourceArgs,
    /// A folder to back up instead of a database (with --name)
    #[arg(long, value_name = "PATH", conflicts_with = "source")]
    pub dir: Option<PathBuf>,
    /// gzip (default), gzip:LEVEL, zstd, zstd:LEVEL
    #[arg(long)]
    pub compression: Option<String>,
    /// Fail at once (exit 14) when another run of the same source holds its lock
    #[arg(long)]
    pub no_wait: bool,
}

pub fn run(a: Args, g: &Global) -> Result<()> {
    let s = g.settings()?;
    let specs = s.sources(&Selection {
        dir: a.dir.as_deref(),
        compression: a.compression.as_deref(),
        ..a.source.selection()
    })?;
    let repo = super::open_write(&s)?;
    let opts = ops::backup::BackupOptions {
        pg_bin_dirs: s.pg_bin_dirs().to_vec(),
        progress: g.progress(),
        threads: 0,
        counts_only: false,
        incremental: false,
    };
    let state = super::state_for(&s, "backup");
    let mut failed: Option<Error> = None;
    let mut done = Vec::new();
    for spec in &specs {
        if specs.len() > 1 {
            output::note(&format!("backing up {}", spec.name));
        }
        let result = super::lock(&s, &spec.name, "backup", a.no_wait).and_then(|_lock| {
            Ok(ops::backup::run_source(
                &repo,
                spec,
                &opts,
                state.as_ref(),
                &mut |n| output::note(&n),
            )?)
        });
        match result {
            Ok(m) => {
                let entry = Entry {
                    source: spec.name.clone(),
                    id: m.snapshot_id.clone(),
                    data_size: Some(m.sizes.stored_bytes),
                    drills: Vec::new(),
                };
                if !g.json {
                    output::info(&format!(
                        "{}: {} dumped, {} stored ({}, {}), in {}",
                        spec.name,
                        units::bytes(m.sizes.plain_bytes),
                        units::bytes(m.sizes.stored_bytes),
                        m.compression,
                        m.encryption.algorithm,
                        units::duration(std::time::Duration::from_secs_f64(m.duration_secs()))
                    ));
                    outln!("{}", m.snapshot_id);
                }
                done.push(Summary::new(&m, &entry, None));
            }
            Err(e) if specs.len() > 1 => {
                let e = output::library_error(e)?;
                output::print_error_for(&spec.name, &e);
                failed.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    if g.json {
        if specs.len() == 1 && done.len() == 1 {
            super::print_json(&done[0])?;
        } else {
            super::print_json(&done)?;
        }
    }
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
