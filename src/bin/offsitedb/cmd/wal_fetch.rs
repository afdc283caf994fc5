//! `offsitedb wal-fetch FILE DEST`: PostgreSQL's `restore_command` (`%f %p`). Exit 0 when the
//! file is written, 1 only when it is not in the archive (recovery ends there or follows another
//! timeline), and 200 for anything else, so that a store outage, a wrong key or a damaged object
//! stops recovery instead of looking like the end of the WAL.

use std::path::PathBuf;

use anyhow::Result;
use offsitedb::exit::wal;
use offsitedb::ops::wal_fetch::{FetchOptions, FetchReport, Fetched};
use offsitedb::units;

use super::wal_push::{log, report_error, wal_source};
use super::{Exit, Global};

/// Fetch one WAL file (restore_command = 'offsitedb wal-fetch %f %p')
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The source the WAL was archived under (default: the configured source, when there is one)
    #[arg(long, value_name = "NAME")]
    pub source: Option<String>,
    /// The WAL file wanted (%f), such as 000000010000000000000003 or 00000002.history
    #[arg(value_name = "FILE")]
    pub file: String,
    /// Where to write it (%p: a path from the data folder, such as pg_wal/RECOVERYXLOG)
    #[arg(value_name = "DEST")]
    pub dest: PathBuf,
}

pub fn run(a: Args, g: &Global) -> Result<()> {
    match fetch(&a, g) {
        Ok(Fetched::Written(r)) => {
            if !g.quiet {
                log(&format!("offsitedb wal-fetch: {}", summary(&r)));
            }
            Ok(())
        }
        Ok(Fetched::NotInArchive) => {
            // PostgreSQL asks for files that do not exist as a matter of course.
            log(&format!(
                "offsitedb wal-fetch: {} is not in the archive",
                a.file
            ));
            Err(Exit(wal::NOT_FOUND).into())
        }
        Err(e) => {
            let hint = format!(
                "recovery stops here (exit {}) rather than ending early; fix the cause and start the server again",
                wal::FATAL
            );
            report_error("wal-fetch", &a.file, &e, Some(&hint));
            Err(Exit(wal::FATAL).into())
        }
    }
}

fn fetch(a: &Args, g: &Global) -> Result<Fetched> {
    let s = g.settings()?;
    let (source, policy) = wal_source(&s, a.source.as_deref(), "wal-fetch")?;
    let store = s.open_store()?;
    let key = super::key(&s)?;
    Ok(offsitedb::ops::wal_fetch::fetch(
        store,
        key,
        &a.file,
        &a.dest,
        &FetchOptions {
            source,
            concurrency: policy.wal_concurrency,
        },
    )?)
}

fn summary(r: &FetchReport) -> String {
    let mut line = format!(
        "{} ({}) {} in {} ms",
        r.name,
        units::bytes(r.size),
        if r.from_prefetch {
            "from the prefetched copy"
        } else {
            "from the archive"
        },
        r.elapsed.as_millis()
    );
    if r.prefetched > 0 {
        line += &format!("; {} more fetched ahead", r.prefetched);
    }
    if let Some(end) = r.streamed_end {
        line += &format!(
            "; not complete yet: its streamed copy, {} of WAL",
            units::bytes(u64::from(end))
        );
    }
    line
}
