//! `offsitedb list`: every snapshot in the repository, from the repository alone.

use anyhow::Result;
use offsitedb::ops;

use super::{Global, SourceArgs};
use offsitedb::report::model::{Period, Scope};

use crate::output::{self, outln, warn};

/// List snapshots
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub source: SourceArgs,
}

pub fn run(a: Args, g: &Global) -> Result<()> {
    let s = g.settings()?;
    let name = a.source.name_filter(&s)?;
    let repo = super::open_read(&s)?;
    let items = ops::list::list(&repo, name.as_deref(), &mut |w| warn(&w))?;
    let mut sources: Vec<&str> = items.iter().map(|i| i.source.as_str()).collect();
    sources.extend(name.as_deref());
    sources.sort();
    sources.dedup();
    for source in sources {
        if let Some(w) = ops::verify::rolled_back(&repo, source)? {
            warn(&w);
        }
    }
    if g.json {
        super::print_json(&items)
    } else {
        if items.is_empty() {
            output::info(&format!("no snapshots in {}", repo.location()));
        } else {
            output::snapshot_table(&items);
        }
        objectives(&s, &repo, name.as_deref())
    }
}

/// Achieved against promised over the last 30 days, for the sources that promise something.
fn objectives(
    s: &offsitedb::config::Settings,
    repo: &offsitedb::catalog::Repository<dyn offsitedb::storage::ReadStore>,
    name: Option<&str>,
) -> Result<()> {
    let configured: Vec<_> = s
        .configured_sources(None)?
        .into_iter()
        .filter(|c| name.is_none_or(|n| n == c.name))
        .filter(|c| c.policy.objectives.rpo.is_some() || c.policy.objectives.rto.is_some())
        .collect();
    if configured.is_empty() {
        return Ok(());
    }
    let now = jiff::Timestamp::now();
    let location = s.location()?;
    for c in &configured {
        let scope = Scope {
            period: Period::last_days(now, 30),
            source: Some(&c.name),
            configured: std::slice::from_ref(c),
            history: None,
            repository: ops::report::repository_facts(&location, repo.key()),
            now,
        };
        let r = offsitedb::report::model::build(repo, &scope, &mut |_| {})?;
        for src in &r.sources {
            outln!("{}", offsitedb::report::compose::objectives_line(src));
        }
    }
    Ok(())
}
