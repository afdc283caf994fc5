//! `offsitedb backup-fetch` (being built: issue 16).

use anyhow::Result;

use super::Global;

/// Extract a base backup into an empty data folder
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_a: Args, _g: &Global) -> Result<()> {
    Err(offsitedb::Error::config("backup-fetch is not built yet").into())
}
