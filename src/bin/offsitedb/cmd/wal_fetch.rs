//! `offsitedb wal-fetch` (being built: issue 16).

use anyhow::Result;

use super::Global;

/// Fetch one WAL file (for restore_command = 'offsitedb wal-fetch %f %p')
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_a: Args, _g: &Global) -> Result<()> {
    Err(offsitedb::Error::config("wal-fetch is not built yet").into())
}
