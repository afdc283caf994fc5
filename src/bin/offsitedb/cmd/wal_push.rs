//! `offsitedb wal-push` (being built: issue 16).

use anyhow::Result;

use super::Global;

/// Archive one WAL file (for archive_command = 'offsitedb wal-push %p')
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_a: Args, _g: &Global) -> Result<()> {
    Err(offsitedb::Error::config("wal-push is not built yet").into())
}
