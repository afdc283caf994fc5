//! `offsitedb backup-fetch`: a base backup extracted into an empty data folder (stolon's
//! `dataRestoreCommand "offsitedb backup-fetch %d LATEST"`).

use std::path::PathBuf;

use anyhow::Result;
use offsitedb::{ops, units};

use super::{Global, SourceArgs};
use crate::output;

/// Extract a base backup into an empty or new data folder, and verify it with pg_verifybackup
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The data folder: missing (it is created, mode 0700) or empty
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// A base backup id, a unique prefix of one, or LATEST
    #[arg(value_name = "ID|LATEST")]
    pub backup: String,
    #[command(flatten)]
    pub source: SourceArgs,
}

pub fn run(a: Args, g: &Global) -> Result<()> {
    let s = g.settings()?;
    let repo = super::open_read(&s)?;
    let source = match a.source.name_filter(&s)? {
        Some(n) => n,
        None => {
            let configured: Vec<String> = s.file.sources.iter().map(|c| c.name.clone()).collect();
            ops::base_fetch::default_source(&repo, &configured)?
        }
    };
    let m = repo.resolve_base(&a.backup, &source)?;
    let opts = ops::base_fetch::FetchOptions {
        pg_bin_dirs: s.pg_bin_dirs().to_vec(),
        progress: g.progress(),
    };
    let report = ops::base_fetch::fetch(&repo, &m, &a.dir, &opts, &mut |n| output::note(&n))?;
    if g.json {
        return super::print_json(&report);
    }
    output::info(&format!(
        "fetched base backup {}/{} into {}: {} files, {}, in {}",
        report.source,
        report.backup_id,
        report.dir,
        report.files,
        units::bytes(report.bytes),
        units::duration(std::time::Duration::from_secs_f64(report.seconds))
    ));
    if let Some(c) = &report.combined {
        output::info(&format!(
            "incremental: combined {} base backups ({}) with {}{}",
            c.chain.len(),
            c.chain.join(", "),
            c.program,
            if c.linked { " --link" } else { "" }
        ));
    }
    let verified = report.verify.summary();
    if report.verify.program.is_some() {
        output::info(&verified);
    } else {
        output::note(&verified);
    }
    Ok(())
}
