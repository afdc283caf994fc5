//! `offsitedb wal-verify integrity|timeline`: whether the WAL archive can carry every base backup
//! to the newest point.

use anyhow::Result;
use offsitedb::ops;
use offsitedb::ops::wal_verify::{Check, VerifyOptions};

use super::{Global, SourceArgs};
use crate::output::{outln, warn};

/// Check the WAL archive: integrity or timeline
#[derive(clap::Args, Debug)]
pub struct Args {
    /// integrity: every segment from the oldest base backup to the newest archived one is there
    /// and authenticates; timeline: the history files are consistent and the newest timeline is
    /// reachable
    #[arg(value_enum)]
    pub check: CheckArg,
    #[command(flatten)]
    pub source: SourceArgs,
    /// integrity: read and check every object whole (default: the first chunk of each)
    #[arg(long)]
    pub read_data: bool,
    /// integrity: objects read at once
    #[arg(long, short = 'j', default_value_t = 4, value_name = "N")]
    pub jobs: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckArg {
    Integrity,
    Timeline,
}

pub fn run(a: Args, g: &Global) -> Result<()> {
    let s = g.settings()?;
    let check = match a.check {
        CheckArg::Integrity => Check::Integrity,
        CheckArg::Timeline => Check::Timeline,
    };
    if a.read_data && check == Check::Timeline {
        return Err(
            offsitedb::Error::config("--read-data is for wal-verify integrity")
                .with_hint("wal-verify timeline reads only the history files")
                .into(),
        );
    }
    if !(1..=32).contains(&a.jobs) {
        return Err(offsitedb::Error::config(format!(
            "--jobs {} is out of range (1 to 32)",
            a.jobs
        ))
        .into());
    }
    let source = super::wal_show::wal_source(&s, &a.source, "wal-verify")?;
    let repo = super::open_read(&s)?;
    let opts = VerifyOptions {
        check,
        read_data: a.read_data,
        jobs: a.jobs,
    };
    let r = ops::wal_verify::verify(&repo, &source, &opts, &mut |w| warn(&w))?;
    if g.json {
        super::print_json(&r)?;
    } else {
        match check {
            Check::Integrity => outln!(
                "{}: {} {}..{}: {} file{} authenticated ({})",
                r.source,
                if r.ok { "WAL complete" } else { "WAL checked" },
                r.from.as_deref().unwrap_or("-"),
                r.to.as_deref().unwrap_or("-"),
                r.checked,
                if r.checked == 1 { "" } else { "s" },
                if r.read_data {
                    "every byte"
                } else {
                    "the first chunk of each"
                }
            ),
            Check::Timeline => outln!(
                "{}: timeline history {}",
                r.source,
                if r.ok { "consistent" } else { "has problems" }
            ),
        }
        for p in &r.problems {
            outln!("  {:<12} {}  {}", p.kind, p.name, p.detail);
        }
    }
    match r.error() {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
