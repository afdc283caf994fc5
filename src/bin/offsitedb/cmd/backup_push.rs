//! `offsitedb backup-push` (being built: issue 16).

use anyhow::Result;

use super::Global;

/// Take a base backup (pg_basebackup) into the repository
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_a: Args, _g: &Global) -> Result<()> {
    Err(offsitedb::Error::config("backup-push is not built yet").into())
}
