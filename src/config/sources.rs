/*!
Naming a source, the same way on every command: `--source NAME|URL`.

- A NAME is a configured `[[source]]` (for commands that connect to it: `backup`, `check`,
  `role-sql`, `run`), or simply the name snapshots are grouped under (for commands that read the
  repository: `list`, `show`, `restore`, `drill`, `prune`, `history`, `decrypt`), so a new machine
  with only the key and the bucket can name any source the repository holds.
- A URL (`postgres://…`, `postgresql://…`, or a `key=value` conninfo string) is an ad-hoc source
  with no configuration at all; `--name` names it (default: its database name).

Source names never hold `:`, `/`, `=` or spaces ([`crate::catalog::check_source_name`]), so the
two cannot be confused. An unknown name lists the configured ones.
*/

use std::path::PathBuf;

use super::{Secret, Settings, SourceSection};
pub use crate::catalog::SourceKind;
use crate::catalog::check_source_name;
use crate::error::{Error, Result};
use crate::pipeline::Compression;
use crate::postgres::ConnInfo;

/// What `--source` holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceArg<'a> {
    Name(&'a str),
    Url(&'a str),
}

impl<'a> SourceArg<'a> {
    pub fn classify(s: &'a str) -> SourceArg<'a> {
        if s.contains("://") || s.contains('=') || s.starts_with("postgres") && s.contains(':') {
            SourceArg::Url(s)
        } else {
            SourceArg::Name(s)
        }
    }
}

/// What a command was told about its source: `--source`, `--name`, and for `backup` `--dir` and
/// `--compression`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Selection<'a> {
    pub source: Option<&'a str>,
    pub name: Option<&'a str>,
    pub dir: Option<&'a std::path::Path>,
    pub compression: Option<&'a str>,
}

/// A source to back up, check or run.
#[derive(Clone, Debug)]
pub struct SourceSpec {
    pub name: String,
    pub conninfo: ConnInfo,
    pub compression: Compression,
    pub policy: Policy,
    /// What was changed in the URL for its provider (a Neon pooled host made direct).
    pub notes: Vec<String>,
    /// A directory source's folder (then `conninfo` is unused).
    pub dir: Option<PathBuf>,
    /// Whether it is a `[[source]]` of the configuration (else given on the command line).
    pub configured: bool,
}

impl SourceSpec {
    /// A directory source: `path` backed up as a tar stream.
    pub fn directory(name: &str, path: PathBuf, compression: Compression) -> SourceSpec {
        SourceSpec {
            name: name.to_string(),
            conninfo: ConnInfo::default(),
            compression,
            policy: Policy::default(),
            notes: Vec::new(),
            dir: Some(path),
            configured: false,
        }
    }

    /// A database given by URL on the command line.
    pub fn url(name: &str, url: &str, compression: Compression) -> Result<SourceSpec> {
        let (conninfo, notes) = crate::postgres::provider::prepare(&ConnInfo::parse(url)?);
        Ok(SourceSpec {
            name: name.to_string(),
            conninfo,
            compression,
            policy: Policy::default(),
            notes,
            dir: None,
            configured: false,
        })
    }

    pub fn kind(&self) -> SourceKind {
        if self.dir.is_some() {
            SourceKind::Directory
        } else {
            SourceKind::Postgres
        }
    }

    /// What it backs up, for messages (passwords redacted).
    pub fn target(&self) -> String {
        match &self.dir {
            Some(d) => d.display().to_string(),
            None => self.conninfo.redacted(),
        }
    }
}

/// A source's job: when it runs, what it keeps, when silence means trouble.
#[derive(Clone, Debug)]
pub struct Policy {
    pub schedule: Option<crate::schedule::Schedule>,
    pub tz: jiff::tz::TimeZone,
    /// Retention; `None` when the source sets none (then nothing is ever pruned).
    pub keep: Option<crate::retention::Keep>,
    /// Explicit `stale_after`; otherwise twice the schedule's interval.
    pub stale_after: Option<std::time::Duration>,
    pub jitter: std::time::Duration,
    pub drill: bool,
    /// Worker labels this source's jobs need (fleets).
    pub requires: Vec<String>,
    pub heartbeat: Vec<Secret>,
    /// How WAL is archived (point-in-time recovery).
    pub wal: super::WalMode,
    /// When base backups are taken.
    pub base_schedule: Option<crate::schedule::Schedule>,
    /// WAL files pushed or fetched at once.
    pub wal_concurrency: usize,
    /// `wal = "stream"`: the slot, its alert threshold, and the partial upload interval.
    pub stream: StreamPolicy,
    /// Alert when the archive lags the server by more than this.
    pub wal_lag_alert: std::time::Duration,
    /// Objectives (`rpo`, `rto`): what the report, the dashboard and alerts measure against.
    pub objectives: Objectives,
}

/// What a source promises: the recovery point (the most time a loss may cost) and the recovery
/// time (the longest a restore may take). Every drill measures the second; the gaps between good
/// backups (or the WAL archive's lag) measure the first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Objectives {
    pub rpo: Option<std::time::Duration>,
    pub rto: Option<std::time::Duration>,
}

/// How `wal-stream` receives a source's WAL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamPolicy {
    /// The physical replication slot (created when missing).
    pub slot: String,
    /// Retained WAL on the server past which the slot is reported (bytes).
    pub slot_max: u64,
    /// How often the segment being written is uploaded.
    pub partial_interval: std::time::Duration,
}

/// The slot holds back at most this much WAL before `serve` alerts, unless a source says.
pub const DEFAULT_SLOT_MAX: u64 = 1 << 30;
/// The segment being written is uploaded this often, unless a source says.
pub const DEFAULT_PARTIAL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);
/// The WAL archive may lag this much before `serve` alerts, unless a source says.
pub const DEFAULT_WAL_LAG_ALERT: std::time::Duration = std::time::Duration::from_secs(300);

impl StreamPolicy {
    /// The default slot name of a source: `offsitedb_` and the name, lowercase, with anything
    /// a slot name may not hold (only `a-z`, `0-9`, `_`) as `_`.
    pub fn default_slot(source: &str) -> String {
        let tail: String = source
            .chars()
            .map(|c| match c.to_ascii_lowercase() {
                c @ ('a'..='z' | '0'..='9' | '_') => c,
                _ => '_',
            })
            .collect();
        let mut slot = format!("offsitedb_{tail}");
        slot.truncate(63);
        slot
    }

    fn new(source: &str) -> StreamPolicy {
        StreamPolicy {
            slot: StreamPolicy::default_slot(source),
            slot_max: DEFAULT_SLOT_MAX,
            partial_interval: DEFAULT_PARTIAL_INTERVAL,
        }
    }
}

/// Checks a replication slot name as PostgreSQL does (`ReplicationSlotValidateName`).
pub fn check_slot_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() < 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::config(format!(
            "wal_slot = {name:?} is not a replication slot name"
        ))
        .with_hint("use lower case letters, digits and underscores, at most 63 of them"))
    }
}

/// WAL files `wal-push` and `wal-fetch` handle at once unless a source says otherwise.
pub const DEFAULT_WAL_CONCURRENCY: usize = 4;

impl Default for Policy {
    fn default() -> Self {
        Policy {
            schedule: None,
            tz: jiff::tz::TimeZone::UTC,
            keep: None,
            stale_after: None,
            jitter: std::time::Duration::ZERO,
            drill: true,
            requires: Vec::new(),
            heartbeat: Vec::new(),
            wal: super::WalMode::Off,
            base_schedule: None,
            wal_concurrency: DEFAULT_WAL_CONCURRENCY,
            stream: StreamPolicy::new("source"),
            wal_lag_alert: DEFAULT_WAL_LAG_ALERT,
            objectives: Objectives::default(),
        }
    }
}

impl Policy {
    pub(super) fn from_section(s: &SourceSection) -> Result<Policy> {
        let ctx = |e: Error| e.context(format!("source {:?}", s.name));
        let duration = |what: &str, v: &Option<String>| -> Result<Option<std::time::Duration>> {
            v.as_deref()
                .map(|t| {
                    crate::schedule::parse_duration(t).map_err(|why| {
                        Error::config(format!("invalid {what} {t:?}: {why}"))
                            .with_hint("write it like \"30s\", \"15m\", \"3h\" or \"2d\"")
                    })
                })
                .transpose()
        };
        let tz = match &s.timezone {
            Some(name) => jiff::tz::TimeZone::get(name).map_err(|_| {
                ctx(Error::config(format!("unknown time zone {name:?}")).with_hint(
                    "use an IANA name such as \"UTC\", \"Europe/Berlin\" or \"America/New_York\"",
                ))
            })?,
            None => jiff::tz::TimeZone::UTC,
        };
        Ok(Policy {
            schedule: s
                .schedule
                .as_deref()
                .map(|t| crate::schedule::Schedule::parse(t, s.timezone.as_deref()))
                .transpose()
                .map_err(ctx)?,
            tz,
            keep: s.keep,
            stale_after: duration("stale_after", &s.stale_after).map_err(ctx)?,
            jitter: duration("jitter", &s.jitter)
                .map_err(ctx)?
                .unwrap_or_default(),
            drill: s.drill.unwrap_or(true),
            requires: s.requires.clone(),
            heartbeat: s.heartbeat.clone(),
            wal: s.wal.unwrap_or_default(),
            base_schedule: s
                .base_schedule
                .as_deref()
                .map(|t| crate::schedule::Schedule::parse(t, s.timezone.as_deref()))
                .transpose()
                .map_err(|e| ctx(e.context("base_schedule")))?,
            wal_concurrency: match s.wal_concurrency {
                None => DEFAULT_WAL_CONCURRENCY,
                Some(n @ 1..=64) => n,
                Some(n) => {
                    return Err(ctx(Error::config(format!(
                        "wal_concurrency = {n} is out of range (1 to 64)"
                    ))));
                }
            },
            stream: StreamPolicy {
                slot: match &s.wal_slot {
                    Some(slot) => {
                        check_slot_name(slot).map_err(ctx)?;
                        slot.clone()
                    }
                    None => StreamPolicy::default_slot(&s.name),
                },
                slot_max: match &s.wal_slot_max {
                    Some(v) => {
                        crate::units::parse_bytes(v).map_err(|e| ctx(e.context("wal_slot_max")))?
                    }
                    None => DEFAULT_SLOT_MAX,
                },
                partial_interval: duration("wal_partial_interval", &s.wal_partial_interval)
                    .map_err(ctx)?
                    .unwrap_or(DEFAULT_PARTIAL_INTERVAL)
                    .max(std::time::Duration::from_millis(200)),
            },
            wal_lag_alert: duration("wal_lag_alert", &s.wal_lag_alert)
                .map_err(ctx)?
                .unwrap_or(DEFAULT_WAL_LAG_ALERT),
            objectives: Objectives {
                rpo: duration("rpo", &s.rpo).map_err(ctx)?,
                rto: duration("rto", &s.rto).map_err(ctx)?,
            },
        })
    }

    /// How long without a successful backup is too long: `stale_after`, else twice the
    /// schedule's longest normal gap; `None` without either.
    pub fn stale_after(&self, now: jiff::Timestamp) -> Option<std::time::Duration> {
        self.stale_after
            .or_else(|| self.schedule.as_ref().map(|s| s.interval(now) * 2))
    }
}

impl Settings {
    /// Every configured source, in the file's order.
    pub fn configured_sources(&self, compression: Option<&str>) -> Result<Vec<SourceSpec>> {
        let flag = compression.map(str::parse::<Compression>).transpose()?;
        self.file
            .sources
            .iter()
            .map(|s| configured(s, flag))
            .collect()
    }

    /// The sources a command that connects to them means (`backup`, `check`, `role-sql`,
    /// `run`): `--dir PATH --name NAME`; `--source URL [--name NAME]`; `--source NAME` (or
    /// `--name NAME` alone) for a configured one; or, given neither, every configured source
    /// (an error when there is none).
    pub fn sources(&self, sel: &Selection<'_>) -> Result<Vec<SourceSpec>> {
        let flag = sel.compression.map(str::parse::<Compression>).transpose()?;
        if let Some(dir) = sel.dir {
            let name = sel.name.ok_or_else(|| {
                Error::config("--name is required with --dir").with_hint(
                    "name the source, e.g. --name uploads: snapshots are grouped by name",
                )
            })?;
            check_source_name(name)?;
            let spec = SourceSpec::directory(name, dir.to_path_buf(), flag.unwrap_or_default());
            self.same_as_configured(&spec)?;
            return Ok(vec![spec]);
        }
        match sel.source.map(SourceArg::classify) {
            Some(SourceArg::Url(url)) => {
                let name = url_name(url, sel.name)?;
                let spec = SourceSpec::url(&name, url, flag.unwrap_or_default())?;
                self.same_as_configured(&spec)?;
                Ok(vec![spec])
            }
            Some(SourceArg::Name(n)) => {
                if let Some(other) = sel.name.filter(|o| *o != n) {
                    return Err(Error::config(format!(
                        "--source {n} names a configured source; --name {other} names a URL source"
                    ))
                    .with_hint("give one of them"));
                }
                Ok(vec![self.configured_source(n, flag)?])
            }
            // `backup --name NAME`, as before `--source` took names.
            None => match sel.name {
                Some(n) => Ok(vec![self.configured_source(n, flag)?]),
                None => {
                    let all = self.configured_sources(sel.compression)?;
                    if all.is_empty() {
                        return Err(no_source(self));
                    }
                    Ok(all)
                }
            },
        }
    }

    /// Exactly one source: [`Settings::sources`], which must give one.
    pub fn one_source(&self, sel: &Selection<'_>, command: &str) -> Result<SourceSpec> {
        let mut all = self.sources(sel)?;
        if all.len() == 1 {
            return Ok(all.remove(0));
        }
        Err(Error::config(format!(
            "which source? the configuration has {} ({})",
            all.len(),
            names(self)
        ))
        .with_hint(format!("name one: offsitedb {command} --source NAME")))
    }

    /// The source name a command that reads the repository filters on: a name as given (it need
    /// not be configured: the repository may hold it), or a URL's `--name` / database name.
    pub fn source_name(&self, source: Option<&str>, name: Option<&str>) -> Result<Option<String>> {
        match source.map(SourceArg::classify) {
            Some(SourceArg::Url(url)) => url_name(url, name).map(Some),
            Some(SourceArg::Name(n)) => {
                if let Some(other) = name.filter(|o| *o != n) {
                    return Err(Error::config(format!(
                        "--source {n} and --name {other} name two sources"
                    ))
                    .with_hint("give one of them (--name names a source given by URL)"));
                }
                check_source_name(n)?;
                Ok(Some(n.to_string()))
            }
            None => match name {
                Some(n) => {
                    check_source_name(n)?;
                    Ok(Some(n.to_string()))
                }
                None => Ok(None),
            },
        }
    }

    /// A source given on the command line under the name of a configured one must be that
    /// source: another database or folder under its name would mix into its snapshots (and a
    /// success would lift its prune hold).
    fn same_as_configured(&self, spec: &SourceSpec) -> Result<()> {
        let Some(c) = self.file.sources.iter().find(|s| s.name == spec.name) else {
            return Ok(());
        };
        let configured = configured(c, None)?;
        let same = match (&configured.dir, &spec.dir) {
            (Some(a), Some(b)) => {
                a.canonicalize()
                    .ok()
                    .is_some_and(|a| b.canonicalize().ok() == Some(a))
                    || a == b
            }
            (None, None) => {
                let (a, b) = (&configured.conninfo, &spec.conninfo);
                (a.host(), a.port(), a.dbname()) == (b.host(), b.port(), b.dbname())
            }
            _ => false,
        };
        if same {
            return Ok(());
        }
        Err(Error::config(format!(
            "{:?} names a configured source ({}), and this is another one ({}): their snapshots would mix",
            spec.name,
            configured.target(),
            spec.target()
        ))
        .with_hint(format!(
            "give it another name (--name NAME), or back up the configured one: --source {}",
            spec.name
        )))
    }

    /// The configured source called `name`, or an error listing the configured ones.
    pub fn configured_source(&self, name: &str, flag: Option<Compression>) -> Result<SourceSpec> {
        match self.file.sources.iter().find(|s| s.name == name) {
            Some(s) => configured(s, flag),
            None if self.file.sources.is_empty() => Err(Error::config(format!(
                "no source named {name:?}: {}",
                match &self.path {
                    Some(p) => format!("{} has no [[source]]", p.display()),
                    None => format!(
                        "no configuration file was found (looked in {})",
                        super::discover::looked_in(&|k| std::env::var(k).ok())
                    ),
                }
            ))
            .with_hint(
                "give the database URL instead: --source postgres://USER@HOST:5432/DB (with --name NAME)",
            )),
            None => Err(Error::config(format!(
                "no source named {name:?} in the configuration (it has: {})",
                names(self)
            ))),
        }
    }
}

impl Settings {
    /// The sources `prune` works on, each with the retention that applies: `--keep` for this
    /// run, else the source's `keep`. A source with neither is refused: nothing is deleted by a
    /// policy nobody wrote down. `name` None means every configured source.
    pub fn retention_targets(
        &self,
        name: Option<&str>,
        flag: Option<crate::retention::Keep>,
    ) -> Result<Vec<(String, crate::retention::Keep, jiff::tz::TimeZone)>> {
        // Only names and policies: prune connects to no source.
        let policies: Vec<(String, Policy)> = match name {
            Some(n) => match self.file.sources.iter().find(|s| s.name == n) {
                Some(section) => vec![(n.to_string(), Policy::from_section(section)?)],
                // A source only in the repository is pruned by the rules given.
                None => {
                    check_source_name(n)?;
                    vec![(n.to_string(), Policy::default())]
                }
            },
            None => {
                if self.file.sources.is_empty() {
                    return Err(no_source(self));
                }
                self.file
                    .sources
                    .iter()
                    .map(|s| Ok((s.name.clone(), Policy::from_section(s)?)))
                    .collect::<Result<_>>()?
            }
        };
        let mut out = Vec::new();
        let mut missing = Vec::new();
        for (name, policy) in policies {
            match flag.or(policy.keep) {
                Some(k) => out.push((name, k, policy.tz)),
                None => missing.push(name),
            }
        }
        if !missing.is_empty() {
            return Err(Error::config(format!(
                "no retention configured for {}: prune deletes nothing without one",
                missing
                    .iter()
                    .map(|n| format!("source {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .with_hint(
                "add keep = { daily = 7, weekly = 4, monthly = 12 } to the [[source]], or pass --keep daily=7,weekly=4,monthly=12",
            ));
        }
        Ok(out)
    }
}

fn names(s: &Settings) -> String {
    s.file
        .sources
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn no_source(s: &Settings) -> Error {
    Error::config(match &s.path {
        Some(p) => format!("no source given, and {} has no [[source]]", p.display()),
        None => "no source given, and no configuration file was found".to_string(),
    })
    .with_hint("pass --source postgres://USER@HOST:5432/DB (or --dir PATH --name NAME), or add a [[source]] to the configuration")
}

/// The name of a URL source: `--name`, else the database name.
fn url_name(url: &str, name: Option<&str>) -> Result<String> {
    let name = match name {
        Some(n) => n.to_string(),
        None => {
            // The database named in the URL: not a default taken from PGDATABASE or the user.
            let db = ConnInfo::parse(url)?.get("dbname").map(str::to_string).ok_or_else(|| {
                Error::config("the URL names no database, so it cannot name the source")
                    .with_hint("add the database to the URL (postgres://USER@HOST:5432/DB), or name the source: --name NAME")
            })?;
            check_source_name(&db).map_err(|_| {
                Error::config(format!(
                    "the database name {db:?} cannot name the source (use letters, digits, '.', '_' or '-')"
                ))
                .with_hint("name it: --name NAME")
            })?;
            db
        }
    };
    check_source_name(&name)?;
    Ok(name)
}

/// A `[[source]]` as a spec.
fn configured(s: &SourceSection, flag: Option<Compression>) -> Result<SourceSpec> {
    let (conninfo, notes, dir) = match (s.kind.unwrap_or_default(), &s.url, &s.path) {
        (SourceKind::Postgres, Some(url), None) => {
            let (c, n) = crate::postgres::provider::prepare(
                &ConnInfo::parse(url.expose())
                    .map_err(|e| e.context(format!("source {:?}", s.name)))?,
            );
            (c, n, None)
        }
        (SourceKind::Directory, None, Some(path)) => {
            (ConnInfo::default(), Vec::new(), Some(path.clone()))
        }
        _ => return Err(shape_error(s)),
    };
    Ok(SourceSpec {
        name: s.name.clone(),
        conninfo,
        notes,
        dir,
        compression: match (flag, &s.compression) {
            (Some(c), _) => c,
            (None, Some(c)) => c.parse()?,
            (None, None) => Compression::default(),
        },
        policy: Policy::from_section(s)?,
        configured: true,
    })
}

/// A `[[source]]` whose keys do not fit its kind.
pub(super) fn shape_error(s: &SourceSection) -> Error {
    Error::config(format!(
        "source {:?}: a database source has url (and no path), a directory source has kind = \"directory\" and path (and no url)",
        s.name
    ))
    .with_hint("kind is \"postgres\" (the default) or \"directory\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_urls_are_told_apart() {
        for url in [
            "postgres://u@h/db",
            "postgresql://h/db",
            "host=h dbname=db",
            "postgres:///db?host=/tmp",
        ] {
            assert_eq!(SourceArg::classify(url), SourceArg::Url(url), "{url}");
        }
        for name in ["app", "app-db", "postgres", "db.prod_1"] {
            assert_eq!(SourceArg::classify(name), SourceArg::Name(name), "{name}");
        }
    }

    fn settings(text: &str) -> Settings {
        Settings {
            file: super::super::parse(text, "t.toml", &|_| None).unwrap(),
            path: Some("t.toml".into()),
            origin: None,
            overrides: Default::default(),
        }
    }

    #[test]
    fn selection_rules() {
        let s = settings(
            "[[source]]\nname = \"a\"\nurl = \"postgres://u@h/adb\"\n\
             [[source]]\nname = \"b\"\nkind = \"directory\"\npath = \"/srv\"\n",
        );
        let sel = |source, name| Selection {
            source,
            name,
            ..Default::default()
        };
        let names = |v: Vec<SourceSpec>| v.into_iter().map(|s| s.name).collect::<Vec<_>>();
        assert_eq!(names(s.sources(&sel(None, None)).unwrap()), ["a", "b"]);
        assert_eq!(names(s.sources(&sel(Some("b"), None)).unwrap()), ["b"]);
        assert_eq!(names(s.sources(&sel(None, Some("a"))).unwrap()), ["a"]);
        // A URL is named by --name, else by its database.
        assert_eq!(
            names(s.sources(&sel(Some("postgres://u@h/shop"), None)).unwrap()),
            ["shop"]
        );
        let u = s
            .sources(&sel(Some("postgres://u@h/shop"), Some("eu-shop")))
            .unwrap();
        assert_eq!(u[0].name, "eu-shop");
        assert!(!u[0].configured && u[0].policy.keep.is_none());
        // An unknown name lists the configured ones.
        let e = s.sources(&sel(Some("c"), None)).unwrap_err();
        assert_eq!(
            e.message(),
            "no source named \"c\" in the configuration (it has: a, b)"
        );
        // A database name that is no source name needs --name.
        let e = s
            .sources(&sel(Some("postgres://u@h/my%20db"), None))
            .unwrap_err();
        assert!(e.hint().unwrap().contains("--name"), "{e:?}");
        // Repository commands take any valid name.
        assert_eq!(
            s.source_name(Some("elsewhere"), None).unwrap().as_deref(),
            Some("elsewhere")
        );
        assert_eq!(
            s.source_name(Some("postgres://u@h/shop"), None)
                .unwrap()
                .as_deref(),
            Some("shop")
        );
        assert!(s.source_name(Some("a b"), None).is_err());
        assert!(s.source_name(Some("a"), Some("zzz")).is_err());
        // A URL without a database does not take its name from PGDATABASE or the user.
        let e = s.sources(&sel(Some("postgres://u@h"), None)).unwrap_err();
        assert!(e.message().contains("names no database"), "{e:?}");
        // Under a configured source's name, only that source: another database or a folder
        // would mix into its snapshots.
        assert_eq!(
            names(
                s.sources(&sel(Some("postgres://x@h:5432/adb"), Some("a")))
                    .unwrap()
            ),
            ["a"]
        );
        for (source, name) in [
            ("postgres://u@other/adb", "a"),
            ("postgres://u@h/shop", "a"),
            ("postgres://u@h/shop", "b"),
        ] {
            let e = s.sources(&sel(Some(source), Some(name))).unwrap_err();
            assert!(e.message().contains("their snapshots would mix"), "{e:?}");
        }
        let dir = |d: &'static str, n| Selection {
            dir: Some(std::path::Path::new(d)),
            name: Some(n),
            ..Default::default()
        };
        assert!(s.sources(&dir("/srv", "b")).is_ok());
        assert!(s.sources(&dir("/elsewhere", "b")).is_err());
        assert!(s.sources(&dir("/srv", "a")).is_err());
        assert!(s.one_source(&sel(None, None), "run").is_err());
        // Prune: a configured source's keep, else --keep; without either, refused by name.
        let e = s.retention_targets(Some("a"), None).unwrap_err();
        assert!(
            e.message().contains("no retention configured for source a"),
            "{e:?}"
        );
        let e = s.retention_targets(None, None).unwrap_err();
        assert!(e.message().contains("source a, source b"), "{e:?}");
        let k = crate::retention::parse_rules("last=1").unwrap();
        let t = s.retention_targets(Some("elsewhere"), Some(k)).unwrap();
        assert_eq!((t[0].0.as_str(), t[0].1), ("elsewhere", k));
        assert!(s.retention_targets(Some("elsewhere"), None).is_err());
    }

    #[test]
    fn no_file_means_no_configured_source() {
        let s = Settings {
            file: Default::default(),
            path: None,
            origin: None,
            overrides: Default::default(),
        };
        let e = s
            .sources(&Selection {
                source: Some("app"),
                ..Default::default()
            })
            .unwrap_err();
        assert!(
            e.message()
                .starts_with("no source named \"app\": no configuration file was found"),
            "{e:?}"
        );
        assert!(e.hint().unwrap().contains("--source postgres://"), "{e:?}");
        let e = s.sources(&Selection::default()).unwrap_err();
        assert!(e.message().contains("no source given"), "{e:?}");
    }
}
