//! `offsitedb wal-show`: a source's WAL archive by timeline.

use anyhow::Result;
use offsitedb::config::Settings;
use offsitedb::ops::wal_show::SegmentSizeFrom;
use offsitedb::{ops, units};

use super::{Global, SourceArgs};
use crate::output::{outln, warn};

/// Show the WAL archive: timelines, segment ranges, gaps
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub source: SourceArgs,
}

pub fn run(a: Args, g: &Global) -> Result<()> {
    let s = g.settings()?;
    let source = wal_source(&s, &a.source, "wal-show")?;
    let repo = super::open_read(&s)?;
    let r = ops::wal_show::show(&repo, &source, &mut |w| warn(&w))?;
    if g.json {
        return super::print_json(&r);
    }
    outln!(
        "{}: {} WAL file{}, {} stored; {} segments ({})",
        r.source,
        r.files,
        if r.files == 1 { "" } else { "s" },
        units::bytes(r.bytes),
        units::bytes(r.segment_size),
        size_from(r.segment_size_from)
    );
    for t in &r.timelines {
        let mut head = format!("timeline {}", t.timeline);
        if let (Some(p), Some(at)) = (t.parent, t.switch_lsn) {
            head.push_str(&format!(", from timeline {p} at {at}"));
            if let Some(why) = t.reason.as_deref().filter(|r| !r.is_empty()) {
                head.push_str(&format!(" ({why})"));
            }
        }
        match t.history.as_str() {
            "archived" | "none" => {}
            "missing" => head.push_str(", no history file"),
            other => head.push_str(&format!(", history file {other}")),
        }
        outln!("{head}");
        // Ranges and the gaps between them, in order (names of one timeline sort as numbers).
        let mut lines: Vec<(&str, String)> = t
            .ranges
            .iter()
            .map(|r| {
                (
                    r.first.as_str(),
                    format!(
                        "  segments {}  {} segment{}, {}",
                        span(&r.first, &r.last),
                        r.segments,
                        if r.segments == 1 { "" } else { "s" },
                        units::bytes(r.bytes)
                    ),
                )
            })
            .chain(t.gaps.iter().map(|g| {
                (
                    g.first.as_str(),
                    format!(
                        "  GAP      {}  {} segment{} missing",
                        span(&g.first, &g.last),
                        g.segments,
                        if g.segments == 1 { "" } else { "s" }
                    ),
                )
            }))
            .collect();
        lines.sort();
        for (_, l) in lines {
            outln!("{l}");
        }
        for p in &t.partial {
            outln!("  partial  {p}");
        }
        for b in &t.backup {
            outln!("  backup   {b}");
        }
    }
    match &r.newest {
        Some(n) => outln!(
            "newest   {} (WAL to {}), {}",
            n.name,
            n.end_lsn,
            match (&n.archived_at, &n.unreadable) {
                (Some(t), _) => format!("archived {} UTC", t.strftime("%Y-%m-%d %H:%M:%S")),
                (None, Some(why)) => format!("its header is unreadable: {why}"),
                (None, None) => "archive time unknown".to_string(),
            }
        ),
        None => outln!("newest   no segment archived yet"),
    }
    Ok(())
}

/// `FIRST..LAST`, or the one name.
fn span(first: &str, last: &str) -> String {
    if first == last {
        first.to_string()
    } else {
        format!("{first}..{last}")
    }
}

fn size_from(f: SegmentSizeFrom) -> &'static str {
    match f {
        SegmentSizeFrom::BaseBackup => "from the base backups",
        SegmentSizeFrom::WalHeader => "from the newest segment",
        SegmentSizeFrom::Default => "assumed: PostgreSQL's default",
    }
}

/// The one source a WAL command is about: `--source NAME` (any source the repository holds),
/// or the only configured one.
pub(super) fn wal_source(s: &Settings, a: &SourceArgs, command: &str) -> Result<String> {
    if let Some(n) = a.name_filter(s)? {
        return Ok(n);
    }
    let names: Vec<&str> = s.file.sources.iter().map(|x| x.name.as_str()).collect();
    match names.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(
            offsitedb::Error::config("no source given, and none is configured")
                .with_hint(format!("name it: offsitedb {command} --source NAME"))
                .into(),
        ),
        many => Err(offsitedb::Error::config(format!(
            "which source? the configuration has {} ({})",
            many.len(),
            many.join(", ")
        ))
        .with_hint(format!("name one: offsitedb {command} --source NAME"))
        .into()),
    }
}
