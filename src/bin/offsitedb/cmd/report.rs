//! `offsitedb report`: the monthly Restore Drill Report (PDF, HTML, JSON) and `report verify`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use offsitedb::ops::report::{self, Format};
use offsitedb::report::model::{Period, Scope};
use offsitedb::report::pdf::Paper;

use super::{Global, SourceArgs};
use crate::output::{self, outln, warn};

/// Write the Restore Drill Report for a month (default: the last full month, as PDF)
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub verify: Option<Sub>,
    /// The month, YYYY-MM (default: the last full month; the running month says "so far")
    #[arg(long, value_name = "YYYY-MM")]
    pub month: Option<String>,
    #[command(flatten)]
    pub source: SourceArgs,
    /// pdf, html or json
    #[arg(long, default_value = "pdf", value_parser = ["pdf", "html", "json"])]
    pub format: String,
    /// Page size of the PDF: a4 or letter
    #[arg(long, default_value = "a4", value_parser = ["a4", "letter"])]
    pub paper: String,
    /// Where to write it (`-` for standard output; default: offsitedb-report-MONTH.EXT here,
    /// JSON to standard output)
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
pub enum Sub {
    /// Check a report's fingerprint with the repository's key (exit 0 when it matches)
    Verify {
        /// A report written by `offsitedb report` (.pdf, .html or .json)
        file: PathBuf,
    },
}

pub fn run(a: Args, g: &Global) -> Result<()> {
    if let Some(Sub::Verify { file }) = a.verify {
        return verify(&file, g);
    }
    let s = g.settings()?;
    let name = a.source.name_filter(&s)?;
    let now = jiff::Timestamp::now();
    let period = match &a.month {
        Some(m) => Period::month(m, now)?,
        None => Period::last_full(now),
    };
    let format = match a.format.as_str() {
        "html" => Format::Html,
        "json" => Format::Json,
        _ => Format::Pdf(a.paper.parse::<Paper>()?),
    };
    let key = super::key(&s)?;
    let mut facts = report::repository_facts(&s.location()?, &key);
    let repo = offsitedb::catalog::Repository::open(s.open_store()?, key)?;
    facts.object_lock = report::object_lock_fact(repo.store());
    let configured = s.configured_sources(None)?;
    // The history adds failed runs when this machine has one; a report never creates it.
    let history = s
        .state_at()
        .ok()
        .filter(|a| a.exists())
        .and_then(|a| a.open().ok());
    let scope = Scope {
        period,
        source: name.as_deref(),
        configured: &configured,
        history: history.as_ref(),
        repository: facts,
        now,
    };
    let r = report::generate(&repo, &scope, &mut |w| warn(&w))?;
    let bytes = report::render(&r, format)?;
    let out = match (&a.output, format) {
        (Some(p), _) => p.clone(),
        (None, Format::Json) => PathBuf::from("-"),
        (None, f) => PathBuf::from(format!(
            "offsitedb-report-{}{}.{}",
            r.period.month,
            name.map(|n| format!("-{n}")).unwrap_or_default(),
            f.extension()
        )),
    };
    if out == Path::new("-") {
        std::io::stdout().lock().write_all(&bytes)?;
        return Ok(());
    }
    write_file(&out, &bytes, a.output.is_some())?;
    if !g.quiet {
        output::info(&format!(
            "wrote the {} report for {} to {} (fingerprint {})",
            format.extension().to_uppercase(),
            r.period.title(),
            out.display(),
            r.fingerprint
        ));
    }
    Ok(())
}

/// Writes beside the target and renames, so a reader never sees half a report. A default name
/// that exists is not replaced (name the file with -o to replace it).
fn write_file(path: &Path, bytes: &[u8], replace: bool) -> Result<()> {
    if !replace && path.exists() {
        return Err(
            offsitedb::Error::config(format!("{} exists", path.display()))
                .with_hint("remove it, or name the file to write with -o FILE")
                .into(),
        );
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn verify(file: &Path, g: &Global) -> Result<()> {
    let bytes = std::fs::read(file)
        .map_err(|e| offsitedb::Error::io(format!("cannot read {}: {e}", file.display())))?;
    let s = g.settings()?;
    let v = report::verify(&bytes, &super::key(&s)?)?;
    let r = &v.report;
    if g.json {
        super::print_json(&serde_json::json!({
            "authentic": v.authentic,
            "fingerprint": r.fingerprint,
            "month": r.period.month,
            "partial": r.period.partial,
            "generated_at": r.generated_at,
            "sources": r.sources.iter().map(|s| serde_json::json!({
                "name": s.name, "verdict": s.verdict.kind, "headline": s.verdict.headline,
            })).collect::<Vec<_>>(),
        }))?;
    } else {
        outln!(
            "{}: the report for {}{} generated {} by {}",
            file.display(),
            r.period.title(),
            if r.period.partial {
                " so far (the month had not ended)"
            } else {
                ""
            },
            r.generated_at,
            r.generated_by
        );
        for s in &r.sources {
            outln!(
                "  {}: {}: {}",
                s.name,
                offsitedb::report::compose::verdict_word(s.verdict.kind),
                s.verdict.headline
            );
        }
    }
    if v.authentic {
        if !g.json {
            outln!(
                "fingerprint {} matches: this key's holder wrote this content and it is unchanged",
                r.fingerprint
            );
        }
        Ok(())
    } else {
        Err(offsitedb::Error::integrity(format!(
            "the fingerprint {} does not match the report's content: it was changed, or written with another repository's key",
            r.fingerprint
        ))
        .with_hint("regenerate it with `offsitedb report --month MONTH` from the repository")
        .into())
    }
}
