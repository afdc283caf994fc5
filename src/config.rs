/*!
Configuration: an `offsitedb.toml` file (from `--config`, `OFFSITEDB_CONFIG`, or `./offsitedb.toml`),
`${NAME}` environment interpolation so secrets stay out of the file, unknown keys rejected, and
the precedence rule every command shares: flag, then environment, then file.

Every command also works with no file at all, from flags and environment alone.
*/

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::catalog::check_source_name;
use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::pipeline::Compression;
use crate::postgres::ConnInfo;
use crate::storage::s3::{Credentials, S3Options, S3Store};
use crate::storage::{Location, WriteStore, local::LocalStore};

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
    /// Where `serve` answers /metrics and /healthz (default 127.0.0.1:8080).
    pub listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSection {
    /// The state file (run history, alert state); default `state.db` in the state directory.
    pub path: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositorySection {
    pub url: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    pub session_token: Option<Secret>,
    pub key_file: Option<PathBuf>,
    /// Multipart part size, e.g. "16MiB"; default: chosen from the database size.
    pub part_size: Option<String>,
    /// Parts uploaded at once (default 3).
    pub upload_concurrency: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    pub name: String,
    /// "postgres" (the default) or "directory".
    pub kind: Option<String>,
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
    /// Retention (default: 7 daily, 4 weekly, 12 monthly).
    pub keep: Option<crate::retention::Keep>,
    /// Alert when no backup succeeded for this long (default: twice the schedule's interval).
    pub stale_after: Option<String>,
    /// Start each scheduled job up to this much later, at random (default 0s).
    pub jitter: Option<String>,
    /// Drill each new snapshot as part of the job (default true).
    pub drill: Option<bool>,
    /// This source's own heartbeat URLs (pinged besides `[alerts] heartbeat`).
    #[serde(default)]
    pub heartbeat: Vec<Secret>,
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
    pub path: Option<PathBuf>,
    pub overrides: Overrides,
}

/// A database to back up.
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
    pub keep: crate::retention::Keep,
    /// Explicit `stale_after`; otherwise twice the schedule's interval.
    pub stale_after: Option<std::time::Duration>,
    pub jitter: std::time::Duration,
    pub drill: bool,
    pub heartbeat: Vec<Secret>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            schedule: None,
            tz: jiff::tz::TimeZone::UTC,
            keep: crate::retention::Keep::default(),
            stale_after: None,
            jitter: std::time::Duration::ZERO,
            drill: true,
            heartbeat: Vec::new(),
        }
    }
}

impl Policy {
    fn from_section(s: &SourceSection) -> Result<Policy> {
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
            keep: s.keep.unwrap_or_default(),
            stale_after: duration("stale_after", &s.stale_after).map_err(ctx)?,
            jitter: duration("jitter", &s.jitter)
                .map_err(ctx)?
                .unwrap_or_default(),
            drill: s.drill.unwrap_or(true),
            heartbeat: s.heartbeat.clone(),
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
    /// Finds and reads the configuration file, if any.
    pub fn load(overrides: Overrides) -> Result<Settings> {
        let explicit = overrides.config.clone().or_else(|| {
            std::env::var_os("OFFSITEDB_CONFIG")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        });
        let path = match explicit {
            Some(p) => {
                if !p.exists() {
                    return Err(Error::config(format!(
                        "configuration file {} does not exist",
                        p.display()
                    )));
                }
                Some(p)
            }
            None => Some(PathBuf::from("offsitedb.toml")).filter(|p| p.exists()),
        };
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
                // Relative paths in the file are relative to the file, not to wherever we run.
                let base = p.parent().unwrap_or(Path::new("."));
                if let Some(k) = file.repository.as_mut().and_then(|r| r.key_file.as_mut())
                    && k.is_relative()
                {
                    *k = base.join(&*k);
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
            overrides,
        })
    }

    pub fn repository_section(&self) -> &RepositorySection {
        static EMPTY: RepositorySection = RepositorySection {
            url: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            key_file: None,
            part_size: None,
            upload_concurrency: None,
        };
        self.file.repository.as_ref().unwrap_or(&EMPTY)
    }

    /// The repository location: `--repo`/`OFFSITEDB_REPO`, else `[repository] url`.
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
        let env_region = std::env::var("AWS_REGION")
            .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
            .ok();
        Location::parse(&url, env_region.as_deref())
    }

    /// S3 credentials: the file's, else `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.
    pub fn credentials(&self) -> Credentials {
        let r = self.repository_section();
        match (&r.access_key_id, &r.secret_access_key) {
            (Some(id), Some(secret)) => Credentials {
                access_key_id: id.clone(),
                secret_access_key: secret.expose().to_string(),
                session_token: r.session_token.as_ref().map(|t| t.expose().to_string()),
            },
            _ => Credentials::from_env().unwrap_or_default(),
        }
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
        o.abandoned_log = state_dir().map(|d| d.join("abandoned-uploads.jsonl"));
        Ok(o)
    }

    /// Opens the repository's store (not the repository: no key needed yet).
    pub fn open_store(&self) -> Result<Box<dyn WriteStore>> {
        Ok(match self.location()? {
            Location::Local(p) => Box::new(LocalStore::new(p)),
            Location::S3(s) => Box::new(S3Store::with_options(
                s,
                self.credentials(),
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

    /// The state file: `[state] path`, else `state.db` in the state directory.
    pub fn state_path(&self) -> Result<PathBuf> {
        self.file
            .state
            .as_ref()
            .and_then(|s| s.path.clone())
            .or_else(crate::state::State::default_path)
            .ok_or_else(|| {
                Error::config("no place for the state file: HOME is not set")
                    .with_hint("set OFFSITEDB_STATE_DIR, or path under [state] in offsitedb.toml")
            })
    }

    /// The databases a backup command means: `--source URL --name NAME`; or `--name` picking a
    /// configured source; or every configured source.
    pub fn backup_sources(
        &self,
        url: Option<&str>,
        name: Option<&str>,
        compression: Option<&str>,
    ) -> Result<Vec<SourceSpec>> {
        let flag_compression = compression.map(str::parse::<Compression>).transpose()?;
        if let Some(url) = url {
            let name = name.ok_or_else(|| {
                Error::config("--name is required with --source URL")
                    .with_hint("name the source, e.g. --name app-db: snapshots are grouped by name")
            })?;
            check_source_name(name)?;
            let (conninfo, notes) = crate::postgres::provider::prepare(&ConnInfo::parse(url)?);
            return Ok(vec![SourceSpec {
                name: name.to_string(),
                conninfo,
                compression: flag_compression.unwrap_or_default(),
                policy: Policy::default(),
                notes,
                dir: None,
            }]);
        }
        let configured: Vec<SourceSpec> = self
            .file
            .sources
            .iter()
            .filter(|s| name.is_none_or(|n| n == s.name))
            .map(|s| {
                let (conninfo, notes, dir) = match (s.kind.as_deref(), &s.url, &s.path) {
                    (None | Some("postgres"), Some(url), None) => {
                        let (c, n) = crate::postgres::provider::prepare(
                            &ConnInfo::parse(url.expose())
                                .map_err(|e| e.context(format!("source {:?}", s.name)))?,
                        );
                        (c, n, None)
                    }
                    (Some("directory"), None, Some(path)) => {
                        (ConnInfo::default(), Vec::new(), Some(path.clone()))
                    }
                    _ => return Err(source_shape_error(s)),
                };
                Ok(SourceSpec {
                    name: s.name.clone(),
                    conninfo,
                    notes,
                    dir,
                    compression: match (&flag_compression, &s.compression) {
                        (Some(c), _) => *c,
                        (None, Some(c)) => c.parse()?,
                        (None, None) => Compression::default(),
                    },
                    policy: Policy::from_section(s)?,
                })
            })
            .collect::<Result<_>>()?;
        if configured.is_empty() {
            return Err(match name {
                Some(n) if !self.file.sources.is_empty() => Error::config(format!(
                    "no source named {n:?} in the configuration (it has: {})",
                    self.file
                        .sources
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                _ => Error::config("no source to back up").with_hint(
                    "pass --source URL --name NAME, or add a [[source]] to offsitedb.toml",
                ),
            });
        }
        Ok(configured)
    }
}

/// A `[[source]]` whose keys do not fit its kind.
fn source_shape_error(s: &SourceSection) -> Error {
    Error::config(format!(
        "source {:?}: a database source has url (and no path), a directory source has kind = \"directory\" and path (and no url)",
        s.name
    ))
    .with_hint("kind is \"postgres\" (the default) or \"directory\"")
}

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
                Policy::from_section(s).map_err(|e| e.context(origin))?;
                let shape_ok = matches!(
                    (s.kind.as_deref(), &s.url, &s.path),
                    (None | Some("postgres"), Some(_), None) | (Some("directory"), None, Some(_))
                );
                if !shape_ok {
                    return Err(source_shape_error(s).context(origin));
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
            crate::retention::Keep {
                last: 3,
                ..crate::retention::Keep::NONE
            }
        );
        let b = Policy::from_section(&c.sources[1]).unwrap();
        assert_eq!(b.keep, crate::retention::Keep::default());
    }

    #[test]
    fn invalid_source_names_are_rejected() {
        let e = parse("[[source]]\nname = \"a/b\"\nurl = \"x\"\n", "f", &env).unwrap_err();
        assert!(e.message().contains("invalid source name"), "{e:?}");
    }
}
