/*!
`offsitedb report`: the monthly Restore Drill Report as PDF, HTML or JSON, and `report verify`.
Read-only on the repository (the daemon's monthly copy is written by [`store_month`]).

The report is stored in the repository as its JSON, sealed, at `reports/<YYYY-MM>`: written once
per month, never replaced (Object Lock friendly), and small; the PDF and HTML are drawn from it
whenever someone asks, so every format of a stored month says the same thing.
*/

use crate::catalog::Repository;
use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::report::model::{self, Period, Report, RepositoryFacts, Scope};
use crate::report::{compose, fingerprint};
use crate::storage::{Location, ReadStore, WriteStore};

/// The largest stored report read back (a month of a hundred hourly sources is a few MB).
const REPORT_MAX: u64 = 64 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Pdf(crate::report::pdf::Paper),
    Html,
    Json,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Pdf(_) => "pdf",
            Format::Html => "html",
            Format::Json => "json",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Pdf(_) => "application/pdf",
            Format::Html => "text/html; charset=utf-8",
            Format::Json => "application/json",
        }
    }
}

/// Where the data lives, for people: no credential is part of a [`Location`].
pub fn repository_facts(location: &Location, key: &MasterKey) -> RepositoryFacts {
    let (provider, bucket, region) = match location {
        Location::Local(_) => ("local folder".to_string(), None, None),
        Location::S3(s) => {
            let host = s.host.to_ascii_lowercase();
            let provider = if host.contains("backblazeb2.com") {
                "Backblaze B2".to_string()
            } else if host.contains("r2.cloudflarestorage.com") {
                "Cloudflare R2".to_string()
            } else if host.contains("amazonaws.com") {
                "Amazon S3".to_string()
            } else {
                format!("S3-compatible storage at {}", s.host)
            };
            (provider, Some(s.bucket.clone()), Some(s.region.clone()))
        }
    };
    RepositoryFacts {
        location: location.to_string(),
        provider,
        bucket,
        region,
        encryption: "AES-256-GCM, sealed on this side before upload: the storage never sees the data or the key".into(),
        key_id: key.id().to_string(),
        object_lock: None,
    }
}

/// Builds and signs the report.
pub fn generate<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    scope: &Scope<'_>,
    note: &mut dyn FnMut(String),
) -> Result<Report> {
    let mut r = model::build(repo, scope, note)?;
    if let Some(s) = scope.source
        && !scope.configured.iter().any(|c| c.name == s)
        && r.sources
            .iter()
            .all(|x| x.retention.kept == 0 && x.pitr.is_none())
    {
        return Err(Error::config(format!(
            "no source named {s:?} in the configuration or the repository"
        ))
        .with_hint("`offsitedb list` shows the sources that have backups"));
    }
    fingerprint::sign(&mut r, repo.key())?;
    Ok(r)
}

/// The report in `format`.
pub fn render(r: &Report, format: Format) -> Result<Vec<u8>> {
    match format {
        Format::Json => {
            let mut v = serde_json::to_vec_pretty(r).map_err(json_err)?;
            v.push(b'\n');
            Ok(v)
        }
        Format::Html => {
            Ok(crate::report::html::render(&compose::document(r, Some(carried(r)?))).into_bytes())
        }
        Format::Pdf(paper) => {
            crate::report::pdf::render(&compose::document(r, Some(carried(r)?)), paper)
        }
    }
}

/// The JSON a PDF or HTML carries: compact, so it starts with [`CARRIED_MARK`].
fn carried(r: &Report) -> Result<String> {
    serde_json::to_string(r).map_err(json_err)
}

const CARRIED_MARK: &[u8] = b"{\"offsitedb_report\":";

fn json_err(e: serde_json::Error) -> Error {
    Error::internal(format!("cannot serialize the report: {e}"))
}

/// What `report verify` found.
pub struct Verified {
    pub report: Report,
    /// The fingerprint matches the carried content under this key.
    pub authentic: bool,
}

/// Finds the report a file carries (a JSON report, or the data inside an HTML or PDF one) and
/// checks its fingerprint with `key`.
pub fn verify(bytes: &[u8], key: &MasterKey) -> Result<Verified> {
    let report: Report = match serde_json::from_slice(bytes) {
        Ok(r) => r,
        Err(_) => {
            let at = memchr::memmem::find(bytes, CARRIED_MARK).ok_or_else(|| {
                Error::integrity("this file carries no OffsiteDB report data").with_hint(
                    "give the .pdf, .html or .json file `offsitedb report` wrote, unchanged",
                )
            })?;
            // Exactly one JSON value from the mark: what follows (PDF syntax, HTML) is not read.
            serde_json::Deserializer::from_slice(&bytes[at..])
                .into_iter::<Report>()
                .next()
                .ok_or_else(|| Error::integrity("the report data in this file is cut short"))?
                .map_err(|e| {
                    Error::integrity(format!("the report data in this file is damaged: {e}"))
                })?
        }
    };
    if report.offsitedb_report != model::REPORT_VERSION {
        return Err(Error::config(format!(
            "report format {} is not read by this version (it reads {})",
            report.offsitedb_report,
            model::REPORT_VERSION
        ))
        .with_hint("upgrade offsitedb"));
    }
    let authentic = fingerprint::check(&report, key)?;
    Ok(Verified { report, authentic })
}

pub fn month_key(month: &str) -> String {
    format!("reports/{month}")
}

/// Writes the month's report into the repository, sealed, unless one is there already (a
/// stored month is never replaced). Returns whether it wrote it.
pub fn store_month<S: WriteStore + ?Sized>(repo: &Repository<S>, r: &Report) -> Result<bool> {
    let json = serde_json::to_vec(r).map_err(json_err)?;
    let sealed = crate::crypto::seal::seal_bytes(repo.key(), &json)?;
    repo.store().put_new(&month_key(&r.period.month), &sealed)
}

/// The months stored in the repository, oldest first.
pub fn stored_months<S: ReadStore + ?Sized>(repo: &Repository<S>) -> Result<Vec<String>> {
    let mut months: Vec<String> = repo
        .store()
        .list("reports/")?
        .into_iter()
        .filter_map(|o| {
            let m = o.key.strip_prefix("reports/")?;
            Period::month(m, jiff::Timestamp::now())
                .ok()
                .filter(|p| p.month == m)
                .map(|_| m.to_string())
        })
        .collect();
    months.sort();
    Ok(months)
}

/// A stored month's report, authenticated.
pub fn read_month<S: ReadStore + ?Sized>(repo: &Repository<S>, month: &str) -> Result<Report> {
    let key = month_key(month);
    let sealed = repo.store().get_small(&key, REPORT_MAX)?;
    let plain = crate::crypto::seal::unseal_bytes(repo.key(), &sealed)
        .map_err(|e| e.context(key.clone()))?;
    serde_json::from_slice(&plain)
        .map_err(|e| Error::integrity(format!("{key} is not a report: {e}")))
}

/// Whether a stored month exists (a store that cannot answer is an error).
pub fn month_stored<S: ReadStore + ?Sized>(repo: &Repository<S>, month: &str) -> Result<bool> {
    Ok(repo.store().head(&month_key(month))?.is_some())
}

/// What the bucket's Object Lock says, in words (`None` for a folder or when it cannot be read).
pub fn object_lock_fact<S: WriteStore + ?Sized>(store: &S) -> Option<String> {
    match store.object_lock() {
        Ok(Some(l)) if l.enabled => Some(match (&l.mode, &l.retention) {
            (Some(m), Some(r)) => format!("on: {m} mode, {r} default retention"),
            _ => "on, without a default retention".into(),
        }),
        Ok(Some(_)) => Some("off: a deleted object is gone at once".into()),
        Ok(None) => Some("not available (a folder)".into()),
        Err(_) => None,
    }
}
