//! `offsitedb check`: everything a backup needs, as a checklist with a fix for each failure.

use anyhow::Result;
use offsitedb::config::Settings;
use offsitedb::{Error, ErrorKind, ops};

use super::{Global, SourceArgs, SourceOrPositional};
use crate::output::{self, warn};

/// Test everything a backup needs (network, TLS, login, privileges, repository, key), with a fix for each failure
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub source: SourceOrPositional,
}

pub fn run(a: Args, g: &Global) -> Result<()> {
    let s = g.settings()?;
    check(&s, a.source.get(), g.json)
}

/// Also what `init` runs on the file it wrote.
pub fn check(s: &Settings, source: SourceArgs, json: bool) -> Result<()> {
    let specs = if source.source.is_none() && source.name.is_none() && s.file.sources.is_empty() {
        Vec::new()
    } else {
        s.sources(&source.selection())?
    };
    let mut items = ops::check::configuration(s);
    for spec in &specs {
        items.extend(ops::check::source(spec, s.pg_bin_dirs()));
    }
    items.extend(ops::check::repository(s, &mut |w| warn(&w)));
    if json {
        super::print_json(&items)?;
    } else {
        if specs.is_empty() {
            output::note("no source given or configured: checking the repository only");
        }
        output::checklist(&items);
    }
    let failed: Vec<_> = items
        .iter()
        .filter(|i| i.status == ops::check::Status::Fail)
        .collect();
    match failed.first() {
        None => Ok(()),
        Some(first) => Err(Error::new(
            first.kind.unwrap_or(ErrorKind::Config),
            format!(
                "{} check{} failed; the first: {} {}: {}",
                failed.len(),
                if failed.len() == 1 { "" } else { "s" },
                first.subject,
                first.check,
                first.detail
            ),
        )
        .into()),
    }
}
