//! `offsitedb wal-show` (being built: issue 16).

use anyhow::Result;

use super::Global;

/// Show the WAL archive: timelines, segment ranges, gaps
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_a: Args, _g: &Global) -> Result<()> {
    Err(offsitedb::Error::config("wal-show is not built yet").into())
}
