//! `offsitedb backup-push`: a base backup (pg_basebackup) of one database server.

use anyhow::Result;
use offsitedb::config::Selection;
use offsitedb::ops::backup::basebackup;
use offsitedb::{ops, units};

use super::{Global, SourceArgs};
use crate::output::{self, outln};

/// Take a base backup (pg_basebackup) into the repository, for point-in-time recovery
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub source: SourceArgs,
    /// zstd (default for base backups), zstd:LEVEL, gzip, gzip:LEVEL
    #[arg(long)]
    pub compression: Option<String>,
    /// Copy only what changed since the source's newest base backup (PostgreSQL 17+, with
    /// summarize_wal = on); restores combine the chain with pg_combinebackup
    #[arg(long)]
    pub incremental: bool,
    /// Fail at once (exit 14) when another run of the same source holds its lock
    #[arg(long)]
    pub no_wait: bool,
}

pub fn run(a: Args, g: &Global) -> Result<()> {
    let s = g.settings()?;
    let spec = s.one_source(
        &Selection {
            compression: a.compression.as_deref(),
            ..a.source.selection()
        },
        "backup-push",
    )?;
    let compression = basebackup::compression_for(&s, &spec, a.compression.is_some());
    let repo = super::open_write(&s)?;
    let opts = ops::backup::BackupOptions {
        pg_bin_dirs: s.pg_bin_dirs().to_vec(),
        progress: g.progress(),
        threads: 0,
        counts_only: false,
        incremental: a.incremental,
    };
    let state = super::state_for(&s, "base backup");
    let _lock = super::lock(&s, &spec.name, "backup-push", a.no_wait)?;
    let m = basebackup::run_source(&repo, &spec, compression, &opts, state.as_ref(), &mut |n| {
        output::note(&n)
    })?;
    if g.json {
        return super::print_json(&m);
    }
    let kind = match &m.incremental {
        Some(i) => format!(
            "incremental base backup (on {}, {} in the chain)",
            i.parent,
            i.chain.len() + 1
        ),
        None => "base backup".to_string(),
    };
    output::info(&format!(
        "{}: {kind} of PostgreSQL {}, {} copied, {} stored ({}, {}), WAL {} to {} on timeline {}, in {}",
        spec.name,
        m.server.version,
        units::bytes(m.sizes.plain_bytes),
        units::bytes(m.sizes.stored_bytes),
        m.compression,
        m.encryption.algorithm,
        m.start_lsn,
        m.end_lsn,
        m.timeline,
        units::duration(std::time::Duration::from_secs_f64(m.duration_secs()))
    ));
    outln!("{}", m.backup_id);
    Ok(())
}
