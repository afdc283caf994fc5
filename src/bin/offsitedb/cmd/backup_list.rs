//! `offsitedb backup-list` (being built: issue 16).

use anyhow::Result;

use super::Global;

/// List base backups with their WAL ranges and coverage
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_a: Args, _g: &Global) -> Result<()> {
    Err(offsitedb::Error::config("backup-list is not built yet").into())
}
