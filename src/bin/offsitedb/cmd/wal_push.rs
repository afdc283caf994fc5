//! `offsitedb wal-push PATH`: PostgreSQL's `archive_command` (`%p`). It answers the archiver,
//! not a person: exit 0 when the file is stored, 1 for every failure (the archiver retries; an
//! exit above 125 would make PostgreSQL restart the archiver), and one line on stderr per call,
//! which lands in the server log.

use std::path::PathBuf;

use anyhow::Result;
use offsitedb::config::{Policy, Settings};
use offsitedb::exit::wal;
use offsitedb::ops::wal_push::{Outcome, PushOptions, PushReport};
use offsitedb::{Error, units};

use super::{Exit, Global};

/// Archive one WAL file (archive_command = 'offsitedb wal-push %p')
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The source the WAL is archived under (default: the configured source, when there is one)
    #[arg(long, value_name = "NAME")]
    pub source: Option<String>,
    /// The WAL file (%p: its path from the data folder, such as pg_wal/000000010000000000000003)
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
}

pub fn run(a: Args, g: &Global) -> Result<()> {
    let shown = a
        .path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| a.path.display().to_string());
    match push(&a, g) {
        Ok(r) => {
            if !g.quiet {
                log(&format!("offsitedb wal-push: {}", summary(&r)));
            }
            Ok(())
        }
        Err(e) => {
            report_error("wal-push", &shown, &e, None);
            Err(Exit(wal::RETRY).into())
        }
    }
}

fn push(a: &Args, g: &Global) -> Result<PushReport> {
    let s = g.settings()?;
    let (source, policy) = wal_source(&s, a.source.as_deref(), "wal-push")?;
    let store = s.open_store()?;
    let key = super::key(&s)?;
    Ok(offsitedb::ops::wal_push::push(
        store,
        key,
        &a.path,
        &PushOptions {
            source,
            concurrency: policy.wal_concurrency,
        },
    )?)
}

fn summary(r: &PushReport) -> String {
    let ms = r.elapsed.as_millis();
    let mut line = match r.outcome {
        Outcome::Archived { stored } => format!(
            "archived {} ({} -> {}) in {ms} ms",
            r.name,
            units::bytes(r.size),
            units::bytes(stored)
        ),
        Outcome::AlreadyArchived => format!(
            "{} already archived (same content, {}) in {ms} ms",
            r.name,
            units::bytes(r.size)
        ),
        Outcome::ArchivedAhead => format!(
            "{} already archived ahead (status entry matches, {}) in {ms} ms",
            r.name,
            units::bytes(r.size)
        ),
    };
    if r.ahead > 0 {
        line += &format!("; {} more ahead", r.ahead);
    }
    if let Some((n, e)) = r.ahead_failed.first() {
        line += &format!(
            "; {} ahead not stored (they are retried when asked for; {n}: {})",
            r.ahead_failed.len(),
            e.message()
        );
    }
    line
}

/// The source a WAL command archives under or fetches from, and its policy: `--source NAME`
/// (configured or not: the name alone names the archive folder), else the one configured
/// source that archives WAL (`wal = "push"` or `"stream"`), else the one configured source.
pub fn wal_source(s: &Settings, name: Option<&str>, command: &str) -> Result<(String, Policy)> {
    let name = match name {
        Some(n) => {
            offsitedb::catalog::check_source_name(n)?;
            n.to_string()
        }
        None => {
            let all: Vec<&str> = s.file.sources.iter().map(|x| x.name.as_str()).collect();
            let pushing: Vec<&str> = s
                .file
                .sources
                .iter()
                .filter(|x| x.wal.is_some_and(|w| w != offsitedb::config::WalMode::Off))
                .map(|x| x.name.as_str())
                .collect();
            match (pushing.as_slice(), all.as_slice()) {
                ([one], _) | (_, [one]) => one.to_string(),
                (_, []) => {
                    return Err(Error::config(match &s.path {
                        Some(p) => format!("no source given, and {} has no [[source]]", p.display()),
                        None => "no source given, and no configuration file was found".to_string(),
                    })
                    .with_hint(format!(
                        "name the source its WAL is archived under: offsitedb {command} --source NAME"
                    ))
                    .into());
                }
                (_, many) => {
                    return Err(Error::config(format!(
                        "which source? the configuration has {} ({})",
                        many.len(),
                        many.join(", ")
                    ))
                    .with_hint(format!("name one: offsitedb {command} --source NAME"))
                    .into());
                }
            }
        }
    };
    let policy = if s.file.sources.iter().any(|x| x.name == name) {
        s.configured_source(&name, None)?.policy
    } else {
        Policy::default()
    };
    Ok((name, policy))
}

/// The error line (and hint) of a WAL command, naming the file: it lands in the server log.
/// `fallback_hint` is said when the error has none.
pub fn report_error(command: &str, file: &str, e: &anyhow::Error, fallback_hint: Option<&str>) {
    let (message, hint) = match e.downcast_ref::<Error>() {
        Some(err) => (err.message().to_string(), err.hint()),
        None => (format!("{e:#}"), None),
    };
    let mut text = format!("error: {command} {file}: {message}");
    if let Some(h) = hint.or(fallback_hint) {
        text += &format!("\nhint: {h}");
    }
    log(&text);
}

/// One line (and its hint) on stderr, in one write (see `output::stderr_lines`).
pub fn log(text: &str) {
    crate::output::stderr_lines(text);
}
