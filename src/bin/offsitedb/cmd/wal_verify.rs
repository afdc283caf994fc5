//! `offsitedb wal-verify` (being built: issue 16).

use anyhow::Result;

use super::Global;

/// Check the WAL archive: integrity or timeline
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_a: Args, _g: &Global) -> Result<()> {
    Err(offsitedb::Error::config("wal-verify is not built yet").into())
}
