/*!
Configuration: an `offsitedb.toml` file found where daemons look ([`discover`]), `${NAME}`
environment interpolation so secrets stay out of the file, unknown keys rejected, and the
precedence rule every command shares: flag, then environment, then file. S3 settings also come
as the AWS tools read them ([`aws`]); sources are named the same way everywhere ([`sources`]).

Every command also works with no file at all, from flags and environment alone.
*/

pub mod aws;
pub mod discover;
pub mod sources;
mod worker;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::catalog::check_source_name;
use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::storage::s3::{Credentials, S3Options, S3Store};
use crate::storage::{Location, WriteStore, local::LocalStore};

pub use discover::Origin;
pub use sources::{
    Objectives, Policy, Selection, SourceArg, SourceKind, SourceSpec, StreamPolicy, check_slot_name,
};
pub use worker::{STATE_URL_ENV, WORKER_NAME_ENV, WorkerSettings, host_name};

/// A string that is never printed: `Debug` and `Display` show `***`.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub repository: Option<RepositorySection>,
    #[serde(default, rename = "source")]
    pub sources: Vec<SourceSection>,
    /// Extra directories holding pg_dump, pg_restore and server programs.
    #[serde(default)]
    pub pg_bin_dirs: Vec<PathBuf>,
    pub alerts: Option<AlertsSection>,
    pub server: Option<ServerSection>,
    pub state: Option<StateSection>,
    pub worker: Option<WorkerSection>,
}

/// Where alerts go. URLs can hold tokens (Slack, healthchecks.io), so they are secrets.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsSection {
    #[serde(default)]
    pub webhook: Vec<Secret>,
    #[serde(default)]
    pub slack: Vec<Secret>,
    pub email: Option<EmailSection>,
    /// healthchecks.io-style URLs: `/start` when a job starts, the bare URL on success, `/fail`.
    #[serde(default)]
    pub heartbeat: Vec<Secret>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailSection {
    /// `smtp://user:password@host:587` (STARTTLS), `smtps://...:465` (TLS from the start);
    /// `?tls=none` only for a local relay.
    pub smtp: Secret,
    pub from: String,
    pub to: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Where `serve` answers /metrics, /healthz, the dashboard and its API (default
    /// 127.0.0.1:8080).
    pub listen: Option<String>,
    /// Enables the dashboard's actions (back up now, drill now) for whoever presents it; without
    /// it the dashboard is read-only. `OFFSITEDB_SERVER_TOKEN` comes first.
    pub token: Option<Secret>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSection {
    /// The state file (run history, alert state); default `state.db` in the state directory.
    pub path: Option<PathBuf>,
    /// A PostgreSQL database shared by several `serve` workers (a fleet), instead of the file.
    /// `OFFSITEDB_STATE_URL` comes first. It may hold a password, so it is a secret.
    pub url: Option<Secret>,
}

/// This `serve` process as a worker of a fleet (`[state] url`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSection {
    /// Its name in the shared state (default: the host name and the process id; alone on a
    /// state file, the host name).
    /// `OFFSITEDB_WORKER_NAME` comes first.
    pub name: Option<String>,
    /// What it offers, e.g. `["drill", "region=eu"]`: a source's `requires` picks workers.
    #[serde(default)]
    pub labels: Vec<String>,
    /// How long a job stays this worker's without a renewal (default "30s"): a worker that
    /// dies loses its jobs to another after this.
    pub lease: Option<String>,
    /// Jobs it runs at once (default 8).
    pub jobs: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositorySection {
    pub url: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    pub session_token: Option<Secret>,
    pub key_file: Option<PathBuf>,
    /// An AWS profile of `~/.aws/credentials` / `~/.aws/config` for the S3 credentials.
    pub profile: Option<String>,
    /// Multipart part size, e.g. "16MiB"; default: chosen from the database size.
    pub part_size: Option<String>,
    /// Parts uploaded at once (default 3).
    pub upload_concurrency: Option<usize>,
    /// When `serve` runs `verify` (without reading data): a schedule, or "off"; default "weekly".
    pub verify_schedule: Option<String>,
    /// Lock every uploaded object: `{ mode = "governance" | "compliance", days = N }`.
    pub object_lock: Option<ObjectLockSection>,
}

/// `[repository] object_lock`, as written; checked by [`Settings::object_lock`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectLockSection {
    pub mode: String,
    pub days: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    pub name: String,
    /// `postgres` (the default) or `directory`.
    pub kind: Option<crate::catalog::SourceKind>,
    /// A connection URL (postgres sources); may hold a password, so it is a secret.
    pub url: Option<Secret>,
    /// The folder (directory sources).
    pub path: Option<PathBuf>,
    /// "gzip", "gzip:9", "zstd", "zstd:19".
    pub compression: Option<String>,
    /// When `serve` runs this source's job: "hourly", "daily at 03:00", "every 6h", cron.
    pub schedule: Option<String>,
    /// IANA time zone of the schedule and of retention's days and months (default UTC).
    pub timezone: Option<String>,
    /// Retention, e.g. `{ daily = 7, weekly = 4, monthly = 12 }`; without it nothing is pruned.
    pub keep: Option<crate::retention::Keep>,
    /// Alert when no backup succeeded for this long (default: twice the schedule's interval).
    pub stale_after: Option<String>,
    /// Start each scheduled job up to this much later, at random (default 0s).
    pub jitter: Option<String>,
    /// Recovery point objective: the most data (time) a loss may cost, e.g. "1h".
    pub rpo: Option<String>,
    /// Recovery time objective: the longest a restore may take, e.g. "30m".
    pub rto: Option<String>,
    /// Drill each new snapshot as part of the job (default true).
    pub drill: Option<bool>,
    /// Labels a `serve` worker must have to run this source's jobs (`[worker] labels`), e.g.
    /// `["drill"]` for the machines with disk and cores for its drills.
    #[serde(default)]
    pub requires: Vec<String>,
    /// This source's own heartbeat URLs (pinged besides `[alerts] heartbeat`).
    #[serde(default)]
    pub heartbeat: Vec<Secret>,
    /// How its WAL reaches the archive: "push" (`archive_command = 'offsitedb wal-push %p'`),
    /// or "off" (the default: no point-in-time recovery).
    pub wal: Option<WalMode>,
    /// When `serve` takes base backups of it (same forms as `schedule`).
    pub base_schedule: Option<String>,
    /// How many WAL files `wal-push` uploads at once (the one asked for and `.ready` ones after
    /// it) and `wal-fetch` fetches ahead; default 4.
    pub wal_concurrency: Option<usize>,
    /// `wal = "stream"`: the physical replication slot `wal-stream` uses (created when
    /// missing); default `offsitedb_<name>`.
    pub wal_slot: Option<String>,
    /// `wal = "stream"`: warn and alert when the slot holds back more WAL than this on the
    /// server (e.g. "1GiB", the default).
    pub wal_slot_max: Option<String>,
    /// `wal = "stream"`: how often the segment being written is uploaded (default "2s").
    pub wal_partial_interval: Option<String>,
    /// Alert when the WAL archive lags the server by more than this (default "5m").
    pub wal_lag_alert: Option<String>,
}

/// How a source's WAL is archived.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WalMode {
    /// No WAL archive.
    #[default]
    Off,
    /// The server's `archive_command` calls `offsitedb wal-push`.
    Push,
    /// `offsitedb wal-stream` (or `serve`) receives it over a replication connection.
    Stream,
}

/// What the command line says, before it is merged with the file and the environment.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    /// `--repo` (clap also reads `OFFSITEDB_REPO` into it).
    pub repo: Option<String>,
    pub key_file: Option<PathBuf>,
}

/// Everything resolved: what every command works from.
#[derive(Debug)]
pub struct Settings {
    pub file: ConfigFile,
    /// The configuration file read, if any, and how it was found.
    pub path: Option<PathBuf>,
    pub origin: Option<Origin>,
    pub overrides: Overrides,
}

impl Settings {
    /// Finds and reads the configuration file, if any ([`discover::find`]). `warn` hears about
    /// a file that holds a secret and is readable by other users.
    pub fn load(overrides: Overrides, warn: &mut dyn FnMut(String)) -> Result<Settings> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let found = discover::find(overrides.config.as_deref(), &env)?;
        let (path, origin) = match found {
            Some((p, o)) => (Some(p), Some(o)),
            None => (None, None),
        };
        match &path {
            Some(p) => {
                tracing::info!(file = %p.display(), how = origin.as_ref().map_or("", |o| o.describe()), "configuration")
            }
            None => tracing::info!(looked_in = %discover::looked_in(&env), "no configuration file"),
        }
        let file = match &path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    Error::config(format!(
                        "cannot read {}: {}",
                        p.display(),
                        crate::error::describe_io(&e)
                    ))
                })?;
                let mut file = parse(&text, &p.display().to_string(), &|k| std::env::var(k).ok())?;
                if let Some(w) = exposed_secret(p, &text) {
                    warn(w);
                }
                // Relative paths in the file are relative to the file, not to wherever we run.
                // Made absolute, so that what check and messages show means one place.
                let abs = std::path::absolute(p).unwrap_or_else(|_| p.clone());
                let base = abs.parent().unwrap_or(Path::new("."));
                if let Some(k) = file.repository.as_mut().and_then(|r| r.key_file.as_mut())
                    && k.is_relative()
                {
                    *k = base.join(&*k);
                }
                // A repository that is a relative folder, too (not s3:// or file:// URLs).
                if let Some(u) = file.repository.as_mut().and_then(|r| r.url.as_mut())
                    && !u.contains("://")
                    && !u.trim().is_empty()
                    && Path::new(u.trim()).is_relative()
                {
                    *u = base.join(u.trim()).display().to_string();
                }
                for d in &mut file.pg_bin_dirs {
                    if d.is_relative() {
                        *d = base.join(&*d);
                    }
                }
                if let Some(p) = file.state.as_mut().and_then(|s| s.path.as_mut())
                    && p.is_relative()
                {
                    *p = base.join(&*p);
                }
                for src in &mut file.sources {
                    if let Some(p) = src.path.as_mut()
                        && p.is_relative()
                    {
                        *p = base.join(&*p);
                    }
                }
                file
            }
            None => ConfigFile::default(),
        };
        Ok(Settings {
            file,
            path,
            origin,
            overrides,
        })
    }

    /// "/etc/offsitedb/offsitedb.toml (found in /etc/offsitedb)", or that none was found.
    pub fn describe_file(&self) -> String {
        match (&self.path, &self.origin) {
            (Some(p), Some(o)) => format!("{} ({})", p.display(), o.describe()),
            (Some(p), None) => p.display().to_string(),
            (None, _) => format!(
                "none found (looked in {})",
                discover::looked_in(&|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
            ),
        }
    }

    pub fn repository_section(&self) -> &RepositorySection {
        static EMPTY: RepositorySection = RepositorySection {
            url: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            key_file: None,
            profile: None,
            part_size: None,
            upload_concurrency: None,
            verify_schedule: None,
            object_lock: None,
        };
        self.file.repository.as_ref().unwrap_or(&EMPTY)
    }

    /// The repository location: `--repo`/`OFFSITEDB_REPO`, else `[repository] url`; an S3 URL
    /// without an endpoint or region takes them as the AWS tools would ([`aws`]).
    pub fn location(&self) -> Result<Location> {
        let url = self
            .overrides
            .repo
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| self.repository_section().url.clone())
            .ok_or_else(|| {
                Error::config("no repository given").with_hint(
                    "pass --repo URL, set OFFSITEDB_REPO, or set url under [repository] in offsitedb.toml",
                )
            })?;
        if !url.trim_start().starts_with("s3://") {
            return Location::parse(&url, None);
        }
        let aws = self.aws()?;
        let mut url = url.trim().to_string();
        if let Some(endpoint) = &aws.endpoint {
            let query = url.split_once('?').map_or("", |(_, q)| q);
            if !query.split('&').any(|p| p.starts_with("endpoint=")) {
                url.push(if url.contains('?') { '&' } else { '?' });
                url.push_str("endpoint=");
                url.push_str(endpoint);
            }
        }
        Location::parse(&url, aws.region.as_deref())
    }

    /// One name per repository, however its location is spelled (a trailing `/`, a relative
    /// path, a symlink): what a source's lock is keyed by.
    pub fn repository_identity(&self) -> Result<String> {
        Ok(match self.location()? {
            Location::Local(p) => {
                let p = std::path::absolute(&p).unwrap_or(p);
                // The folder may not exist yet (the first backup creates it): then its parent.
                p.canonicalize()
                    .ok()
                    .or_else(|| Some(p.parent()?.canonicalize().ok()?.join(p.file_name()?)))
                    .unwrap_or(p)
                    .display()
                    .to_string()
            }
            Location::S3(s) => format!("s3://{}/{}/{}", s.host, s.bucket, s.prefix),
        })
    }

    /// The S3 settings the environment, the AWS shared files and the file give.
    pub fn aws(&self) -> Result<aws::Resolved> {
        let r = self.repository_section();
        aws::resolve(
            &|k| std::env::var(k).ok(),
            &aws::FileSettings {
                access_key_id: r.access_key_id.as_deref(),
                secret_access_key: r.secret_access_key.as_ref().map(|s| s.expose()),
                session_token: r.session_token.as_ref().map(|s| s.expose()),
                profile: r.profile.as_deref(),
            },
        )
    }

    /// S3 credentials ([`aws`] says in which order they are looked for); empty when none.
    pub fn credentials(&self) -> Result<Credentials> {
        let aws = self.aws()?;
        if let Some(from) = &aws.credentials_from {
            tracing::debug!(from = %from, "S3 credentials");
        }
        Ok(aws.credentials.unwrap_or_default())
    }

    pub fn s3_options(&self) -> Result<S3Options> {
        let r = self.repository_section();
        let mut o = S3Options::default();
        if let Some(p) = &r.part_size {
            o.part_size = Some(crate::units::parse_bytes(p)?);
        }
        if let Some(c) = r.upload_concurrency {
            if !(1..=32).contains(&c) {
                return Err(Error::config("upload_concurrency must be between 1 and 32"));
            }
            o.concurrency = c;
        }
        o.abandoned_log = self
            .state_dir()
            .ok()
            .map(|d| d.join("abandoned-uploads.jsonl"));
        o.object_lock = self.object_lock()?;
        Ok(o)
    }

    /// `[repository] object_lock`, checked; a folder repository with one is refused (a folder
    /// has no lock, and a backup that silently is not locked is worse than none configured).
    pub fn object_lock(&self) -> Result<Option<crate::storage::lock::LockSetting>> {
        let Some(l) = &self.repository_section().object_lock else {
            return Ok(None);
        };
        let lock = crate::storage::lock::LockSetting::parse(&l.mode, l.days)?;
        if let Location::Local(p) = self.location()? {
            return Err(Error::config(format!(
                "object_lock is set under [repository], but the repository is a folder ({}): a folder cannot lock its files",
                p.display()
            ))
            .with_hint(
                "remove object_lock, or use an S3 bucket created with Object Lock enabled",
            ));
        }
        Ok(Some(lock))
    }

    /// Opens the repository's store (not the repository: no key needed yet).
    pub fn open_store(&self) -> Result<Box<dyn WriteStore>> {
        Ok(match self.location()? {
            Location::Local(p) => {
                self.object_lock()?;
                Box::new(LocalStore::new(p))
            }
            Location::S3(s) => Box::new(S3Store::with_options(
                s,
                self.credentials()?,
                self.s3_options()?,
            )?),
        })
    }

    /// The master key: `--key-file`, `OFFSITEDB_KEY_FILE`, `OFFSITEDB_KEY`, then `key_file`.
    pub fn master_key(&self, warn: &mut dyn FnMut(String)) -> Result<MasterKey> {
        MasterKey::resolve(
            self.overrides.key_file.as_deref(),
            self.repository_section().key_file.as_deref(),
            warn,
        )
    }

    pub fn pg_bin_dirs(&self) -> &[PathBuf] {
        &self.file.pg_bin_dirs
    }

    /// The dashboard's token: `OFFSITEDB_SERVER_TOKEN`, else `[server] token`; `None` when
    /// neither is set (or set empty).
    pub fn server_token(&self) -> Option<Secret> {
        std::env::var(SERVER_TOKEN_ENV)
            .ok()
            .map(Secret::new)
            .or_else(|| self.file.server.as_ref().and_then(|s| s.token.clone()))
            .filter(|t| !t.expose().is_empty())
    }

    /// The folder of the state file, where locks and the abandoned-uploads log live too.
    pub fn state_dir(&self) -> Result<PathBuf> {
        let p = self.state_path()?;
        Ok(p.parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")))
    }

    /// Where the sources' locks live: the state folder, else (no HOME, or a folder this user
    /// cannot write) a folder of this user's under `$XDG_RUNTIME_DIR` or the temporary folder,
    /// which `warn` hears about (runs that see another folder do not see those locks).
    pub fn lock_dir(&self, warn: &mut dyn FnMut(String)) -> Result<PathBuf> {
        let why = match self.state_dir() {
            Ok(d) => match std::fs::create_dir_all(&d) {
                // The locks folder is open to every user (see `lock`): enough when the state
                // folder itself is another user's (the service's, with root typing a command).
                Ok(()) if writable(&d) || writable(&d.join("locks")) => return Ok(d),
                Ok(()) => format!("{} is not writable", d.display()),
                Err(e) => format!(
                    "cannot create {}: {}",
                    d.display(),
                    crate::error::describe_io(&e)
                ),
            },
            Err(e) => e.message().to_string(),
        };
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        let fallback = std::env::var_os("XDG_RUNTIME_DIR")
            .filter(|v| !v.is_empty())
            .map(|d| PathBuf::from(d).join("offsitedb"))
            .unwrap_or_else(|| std::env::temp_dir().join(format!("offsitedb-{uid}")));
        {
            use std::os::unix::fs::DirBuilderExt;
            let _ = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&fallback);
        }
        if !writable(&fallback) {
            return Err(Error::io(format!(
                "no folder for the sources' locks: {why}, and {} is not writable",
                fallback.display()
            ))
            .with_hint(
                "set OFFSITEDB_STATE_DIR, or path under [state], to a folder this user can write",
            ));
        }
        warn(format!(
            "no usable state folder ({why}): the sources' locks are kept in {}, where only runs that see the same folder notice them",
            fallback.display()
        ));
        Ok(fallback)
    }

    /// The state file: `[state] path`, else `state.db` in the state directory.
    /// `OFFSITEDB_STATE_DIR` (the environment) comes before the file, as everywhere.
    /// The state file as the repository's memory of log heads (the rollback check); `None`
    /// when there is no place for it.
    pub fn head_memory(&self) -> Option<crate::catalog::log::Memory> {
        let at = self.state_at().ok()?;
        Some(std::sync::Arc::new(crate::state::StateMemory(at)))
    }

    /// Opens the repository for writing, remembering the log heads it shows in the state file.
    pub fn open_repository(
        &self,
        warn: &mut dyn FnMut(String),
    ) -> Result<crate::catalog::Repository<dyn WriteStore>> {
        let repo = crate::catalog::Repository::open_for_writing(
            self.open_store()?,
            self.master_key(warn)?,
        )?;
        Ok(match self.head_memory() {
            Some(m) => repo.remembering(m),
            None => repo,
        })
    }

    /// When `serve` verifies the repository; `None` when turned off.
    pub fn verify_schedule(&self) -> Result<Option<crate::schedule::Schedule>> {
        match self.repository_section().verify_schedule.as_deref() {
            Some("off") => Ok(None),
            s => crate::schedule::Schedule::parse(s.unwrap_or("weekly"), None)
                .map(Some)
                .map_err(|e| e.context("[repository] verify_schedule")),
        }
    }

    pub fn state_path(&self) -> Result<PathBuf> {
        let env = std::env::var_os("OFFSITEDB_STATE_DIR")
            .filter(|v| !v.is_empty())
            .map(|d| PathBuf::from(d).join(STATE_FILE));
        env.or_else(|| self.file.state.as_ref().and_then(|s| s.path.clone()))
            .or_else(|| state_dir().map(|d| d.join(STATE_FILE)))
            .ok_or_else(|| {
                Error::config("no place for the state file: HOME is not set")
                    .with_hint("set OFFSITEDB_STATE_DIR, or path under [state] in offsitedb.toml")
            })
    }
}

/// A warning when the file at `path` holds a secret written in it (not a `${VAR}` reference) and
/// other users may read it.
fn exposed_secret(path: &Path, text: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    if mode & 0o004 == 0 {
        return None;
    }
    let raw: ConfigFile = toml::from_str(text).ok()?;
    let held = secrets_in(&raw);
    let first = held.first()?;
    Some(format!(
        "{} is readable by every user (mode {:o}) and holds a secret ({}{}): chmod 600 {}, or move the secret into the environment (${{VAR}}) or a password file",
        path.display(),
        mode & 0o777,
        first,
        if held.len() > 1 {
            format!(" and {} more", held.len() - 1)
        } else {
            String::new()
        },
        path.display()
    ))
}

/// The keys of `c` that hold a secret literally (without `${...}`).
fn secrets_in(c: &ConfigFile) -> Vec<String> {
    let literal = |v: &str| !v.is_empty() && !v.contains("${");
    // user:password@ in a URL; a database URL may also say ?password= or password=.
    let url_password = |v: &str| {
        literal(v)
            && (v
                .split_once("://")
                .and_then(|(_, rest)| rest.split(['/', '?']).next())
                .is_some_and(|auth| auth.rsplit_once('@').is_some_and(|(u, _)| u.contains(':')))
                || v.contains("password="))
    };
    let mut out = Vec::new();
    if let Some(r) = &c.repository {
        if r.secret_access_key
            .as_ref()
            .is_some_and(|s| literal(s.expose()))
        {
            out.push("repository.secret_access_key".to_string());
        }
        if r.session_token
            .as_ref()
            .is_some_and(|s| literal(s.expose()))
        {
            out.push("repository.session_token".to_string());
        }
    }
    for src in &c.sources {
        if src.url.as_ref().is_some_and(|u| url_password(u.expose())) {
            out.push(format!("the password in source {:?}'s url", src.name));
        }
        if src.heartbeat.iter().any(|h| literal(h.expose())) {
            out.push(format!("source {:?}'s heartbeat URL", src.name));
        }
    }
    if c.state
        .as_ref()
        .and_then(|s| s.url.as_ref())
        .is_some_and(|u| url_password(u.expose()))
    {
        out.push("the password in state.url".to_string());
    }
    if let Some(a) = &c.alerts {
        for (what, list) in [
            ("alerts.webhook", &a.webhook),
            ("alerts.slack", &a.slack),
            ("alerts.heartbeat", &a.heartbeat),
        ] {
            if list.iter().any(|u| literal(u.expose())) {
                out.push(format!("an {what} URL"));
            }
        }
        if a.email
            .as_ref()
            .is_some_and(|e| url_password(e.smtp.expose()))
        {
            out.push("the password in alerts.email.smtp".to_string());
        }
    }
    if c.server
        .as_ref()
        .and_then(|s| s.token.as_ref())
        .is_some_and(|t| literal(t.expose()))
    {
        out.push("server.token".to_string());
    }
    out
}

/// Whether this process may create files in `dir`.
fn writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access(2) with a valid C string.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

/// The environment variable of the dashboard's token.
pub const SERVER_TOKEN_ENV: &str = "OFFSITEDB_SERVER_TOKEN";

/// The state file's name in the state folder.
pub const STATE_FILE: &str = "state.db";

/// Where OffsiteDB keeps local state (never backups): `OFFSITEDB_STATE_DIR`, else
/// `$XDG_STATE_HOME/offsitedb`, else `~/.local/state/offsitedb`.
pub fn state_dir() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("OFFSITEDB_STATE_DIR")
        .or_else(|| env("XDG_STATE_HOME").map(|d| d.join("offsitedb")))
        .or_else(|| env("HOME").map(|h| h.join(".local/state/offsitedb")))
}

/// Parses configuration text: structure first (so errors carry line numbers), then `${NAME}`
/// interpolation through `lookup`.
pub fn parse(
    text: &str,
    origin: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<ConfigFile> {
    let bad = |e: toml::de::Error| {
        Error::config(format!("{origin}: {}", e.message().trim_end())).with_hint(match e.span() {
            Some(span) => format!("at line {}", text[..span.start].matches('\n').count() + 1),
            None => "see README.md for the file's shape".to_string(),
        })
    };
    // Structure first, with positions in messages.
    toml::from_str::<ConfigFile>(text).map_err(bad)?;
    let mut value: toml::Value = toml::from_str(text).map_err(bad)?;
    interpolate(&mut value, "", lookup).map_err(|e| e.context(origin))?;
    value
        .try_into::<ConfigFile>()
        .map_err(|e| Error::config(format!("{origin}: {}", e.message().trim_end())))
        .and_then(|c| {
            let mut seen = std::collections::BTreeSet::new();
            for s in &c.sources {
                check_source_name(&s.name).map_err(|e| e.context(origin))?;
                if !seen.insert(s.name.as_str()) {
                    return Err(Error::config(format!(
                        "{origin}: two sources are named {:?}",
                        s.name
                    )));
                }
                sources::Policy::from_section(s).map_err(|e| e.context(origin))?;
                // An empty table (or a `${VAR}` left at zeros) must not mean "delete all but one".
                if s.keep == Some(crate::retention::Keep::NONE) {
                    return Err(Error::config(format!(
                        "{origin}: source {:?} has a keep that names no rule: it would keep nothing but the newest snapshot",
                        s.name
                    ))
                    .with_hint("name at least one rule, e.g. keep = { daily = 7, weekly = 4, monthly = 12 }, or leave keep out (then nothing is pruned)"));
                }
                let shape_ok = matches!(
                    (s.kind.unwrap_or_default(), &s.url, &s.path),
                    (SourceKind::Postgres, Some(_), None) | (SourceKind::Directory, None, Some(_))
                );
                if !shape_ok {
                    return Err(sources::shape_error(s).context(origin));
                }
            }
            Ok(c)
        })
}

fn interpolate(
    v: &mut toml::Value,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<()> {
    match v {
        toml::Value::String(s) => *s = expand(s, path, lookup)?,
        toml::Value::Array(a) => {
            for (i, x) in a.iter_mut().enumerate() {
                interpolate(x, &format!("{path}[{i}]"), lookup)?;
            }
        }
        toml::Value::Table(t) => {
            for (k, x) in t.iter_mut() {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                interpolate(x, &p, lookup)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Replaces `${NAME}` with the variable's value; `$${` stands for a literal `${`.
fn expand(s: &str, path: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail
                .find('}')
                .ok_or_else(|| Error::config(format!("{path}: unclosed ${{ in the value")))?;
            let name = &tail[..end];
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(Error::config(format!(
                    "{path}: invalid variable name {name:?}"
                )));
            }
            let val = lookup(name).ok_or_else(|| {
                Error::config(format!("{path} uses ${{{name}}}, which is not set"))
                    .with_hint(format!("export {name}=... before running offsitedb"))
            })?;
            out.push_str(&val);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Reads a config file (for tests and tools).
pub fn parse_file(path: &Path) -> Result<ConfigFile> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::config(format!("cannot read {}: {e}", path.display())))?;
    parse(&text, &path.display().to_string(), &|k| {
        std::env::var(k).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "B2_KEY_ID" => Some("004abc".into()),
            "B2_APPLICATION_KEY" => Some("K004secret".into()),
            "FLY_DATABASE_URL" => Some("postgres://u:pw@db.internal:5432/app".into()),
            _ => None,
        }
    }

    const EXAMPLE: &str = r#"
[repository]
url = "s3://my-backups/offsitedb?endpoint=https://s3.us-west-004.backblazeb2.com&region=us-west-004"
access_key_id = "${B2_KEY_ID}"
secret_access_key = "${B2_APPLICATION_KEY}"
key_file = "/etc/offsitedb/master.key"

[[source]]
name = "fly-db"
url = "${FLY_DATABASE_URL}"
"#;

    #[test]
    fn the_documented_example_parses() {
        let c = parse(EXAMPLE, "t", &env).unwrap();
        let r = c.repository.unwrap();
        assert_eq!(r.access_key_id.as_deref(), Some("004abc"));
        assert_eq!(r.secret_access_key.unwrap().expose(), "K004secret");
        assert_eq!(c.sources[0].name, "fly-db");
        assert_eq!(
            c.sources[0].url.as_ref().unwrap().expose(),
            "postgres://u:pw@db.internal:5432/app"
        );
        // Secrets never show in Debug.
        let dbg = format!("{:?}", parse(EXAMPLE, "t", &env).unwrap());
        assert!(
            !dbg.contains("K004secret") && !dbg.contains(":pw@"),
            "{dbg}"
        );
    }

    #[test]
    fn unknown_keys_are_errors_with_a_line() {
        let e = parse(
            "[repository]\nurl = \"/x\"\ncolour = \"blue\"\n",
            "f.toml",
            &env,
        )
        .unwrap_err();
        assert!(e.message().contains("colour"), "{e:?}");
        assert_eq!(e.hint(), Some("at line 3"));
        assert!(
            parse(
                "[[source]]\nname = \"a\"\nurl = \"x\"\nport = 1\n",
                "f",
                &env
            )
            .is_err()
        );
        assert!(parse("[nonsense]\n", "f", &env).is_err());
    }

    #[test]
    fn unset_variables_are_named() {
        let e = parse("[repository]\nurl = \"${NOPE}\"\n", "f.toml", &env).unwrap_err();
        assert!(
            e.message()
                .contains("repository.url uses ${NOPE}, which is not set"),
            "{e:?}"
        );
    }

    #[test]
    fn expansion_rules() {
        let p = "x";
        assert_eq!(expand("a${B2_KEY_ID}b", p, &env).unwrap(), "a004abcb");
        assert_eq!(
            expand("cost $5 $${HOME}", p, &env).unwrap(),
            "cost $5 ${HOME}"
        );
        assert!(expand("${unclosed", p, &env).is_err());
        assert!(expand("${bad-name}", p, &env).is_err());
    }

    #[test]
    fn keep_names_what_it_keeps() {
        let c = parse(
            "[[source]]\nname = \"a\"\nurl = \"x\"\nkeep = { last = 3 }\n\
             [[source]]\nname = \"b\"\nurl = \"x\"\n",
            "f",
            &env,
        )
        .unwrap();
        let a = Policy::from_section(&c.sources[0]).unwrap();
        assert_eq!(
            a.keep,
            Some(crate::retention::Keep {
                last: 3,
                ..crate::retention::Keep::NONE
            })
        );
        // No keep: no retention at all (prune refuses, jobs do not prune).
        let b = Policy::from_section(&c.sources[1]).unwrap();
        assert_eq!(b.keep, None);
        // An empty keep would delete all but the newest: refused.
        for empty in ["keep = {}", "keep = { daily = 0 }"] {
            let e = parse(
                &format!("[[source]]\nname = \"a\"\nurl = \"x\"\n{empty}\n"),
                "f",
                &env,
            )
            .unwrap_err();
            assert!(e.message().contains("names no rule"), "{e:?}");
        }
    }

    #[test]
    fn secrets_written_in_the_file_are_found_and_references_are_not() {
        let c: ConfigFile = toml::from_str(
            "[repository]\nurl = \"s3://b/p\"\naccess_key_id = \"id\"\nsecret_access_key = \"${S}\"\n\
             [[source]]\nname = \"a\"\nurl = \"postgres://u:${PW}@h/db\"\n\
             [[source]]\nname = \"b\"\nurl = \"postgres://u@h/db\"\n",
        )
        .unwrap();
        assert!(secrets_in(&c).is_empty(), "{:?}", secrets_in(&c));
        let c: ConfigFile = toml::from_str(
            "[repository]\nsecret_access_key = \"K004\"\n\
             [[source]]\nname = \"a\"\nurl = \"postgres://u:pw@h/db\"\n\
             [alerts]\nemail = { smtp = \"smtp://me:pw@mail:587\", from = \"a@b.c\", to = [\"d@e.f\"] }\n",
        )
        .unwrap();
        assert_eq!(
            secrets_in(&c),
            [
                "repository.secret_access_key",
                "the password in source \"a\"'s url",
                "the password in alerts.email.smtp"
            ]
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("o.toml");
        let text = "[[source]]\nname = \"a\"\nurl = \"postgres://u:pw@h/db\"\n";
        std::fs::write(&f, text).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let w = exposed_secret(&f, text).unwrap();
        assert!(w.contains("mode 644") && w.contains("chmod 600"), "{w}");
        assert!(!w.contains("pw@"), "{w}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(exposed_secret(&f, text), None);
    }

    #[test]
    fn invalid_source_names_are_rejected() {
        let e = parse("[[source]]\nname = \"a/b\"\nurl = \"x\"\n", "f", &env).unwrap_err();
        assert!(e.message().contains("invalid source name"), "{e:?}");
    }
}
