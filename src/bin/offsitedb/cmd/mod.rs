//! One file per command: each parses its arguments (a clap `Args` struct), calls the library,
//! and prints (human text, or JSON with `--json`). Nothing here decides anything the library
//! could; what the commands share is below.

pub mod alert_test;
pub mod backup;
pub mod backup_fetch;
pub mod backup_list;
pub mod backup_push;
pub mod check;
pub mod decrypt;
pub mod demo;
pub mod drill;
pub mod fleet;
pub mod history;
pub mod init;
pub mod key;
pub mod keygen;
pub mod list;
pub mod prune;
pub mod report;
pub mod restore;
pub mod role_sql;
pub mod run;
pub mod serve;
pub mod show;
pub mod verify;
pub mod wal_fetch;
pub mod wal_push;
pub mod wal_show;
pub mod wal_stream;
pub mod wal_verify;

use std::path::PathBuf;

use anyhow::Result;
use offsitedb::catalog::Repository;
use offsitedb::config::{Overrides, Selection, Settings};
use offsitedb::crypto::MasterKey;
use offsitedb::lock::{SourceLock, Wait};
use offsitedb::storage::{ReadStore, WriteStore};

use crate::output::warn;

/// The options every command takes.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct Global {
    /// Configuration file (default: the first of ./offsitedb.toml,
    /// $XDG_CONFIG_HOME/offsitedb/offsitedb.toml, /etc/offsitedb/offsitedb.toml; or OFFSITEDB_CONFIG)
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Repository: s3://bucket/prefix?endpoint=..., file:///path, or a path
    #[arg(long, global = true, env = "OFFSITEDB_REPO", value_name = "URL")]
    pub repo: Option<String>,
    /// Master key file (or set OFFSITEDB_KEY_FILE, or OFFSITEDB_KEY with the key itself)
    #[arg(long, global = true, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Print the result as JSON on standard output
    #[arg(long, global = true)]
    pub json: bool,
    /// Say more: -v what is used and why (configuration file, credentials, programs), -vv debug
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Say less: no progress or summaries; notes, warnings, errors and the result still print
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// `--source NAME|URL` and `--name`, the same on every command that takes a source.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct SourceArgs {
    /// A configured source's name, or a database URL (postgres://user@host:5432/db)
    #[arg(long, value_name = "NAME|URL")]
    pub source: Option<String>,
    /// The name of a source given by URL (default: its database name)
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

/// `SOURCE` as a positional argument too (as earlier versions took it), for `check`,
/// `role-sql` and `run`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct SourceOrPositional {
    /// A configured source or a database URL (the same as --source)
    #[arg(value_name = "SOURCE", conflicts_with = "source")]
    positional: Option<String>,
    #[command(flatten)]
    source: SourceArgs,
}

impl SourceOrPositional {
    pub fn get(self) -> SourceArgs {
        let mut s = self.source;
        if s.source.is_none() {
            s.source = self.positional;
        }
        s
    }
}

impl SourceArgs {
    pub fn selection(&self) -> Selection<'_> {
        Selection {
            source: self.source.as_deref(),
            name: self.name.as_deref(),
            ..Default::default()
        }
    }

    /// The name a repository command filters on.
    pub fn name_filter(&self, s: &Settings) -> Result<Option<String>> {
        Ok(s.source_name(self.source.as_deref(), self.name.as_deref())?)
    }
}

impl Global {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            config: self.config.clone(),
            repo: self.repo.clone(),
            key_file: self.key_file.clone(),
        }
    }

    pub fn settings(&self) -> Result<Settings> {
        Ok(Settings::load(self.overrides(), &mut |w| warn(&w))?)
    }

    /// Whether a progress line may be shown.
    pub fn progress(&self) -> bool {
        !self.json && !self.quiet
    }
}

pub fn key(s: &Settings) -> Result<MasterKey> {
    Ok(s.master_key(&mut |w| warn(&w))?)
}

/// Opens an existing repository with only its read half: these commands cannot write.
pub fn open_read(s: &Settings) -> Result<Repository<dyn ReadStore>> {
    let store: Box<dyn ReadStore> = s.open_store()?;
    let repo = Repository::open(store, key(s)?)?;
    Ok(match s.head_memory() {
        Some(m) => repo.remembering(m),
        None => repo,
    })
}

/// Opens the repository for writing (an empty location becomes one at the first backup).
pub fn open_write(s: &Settings) -> Result<Repository<dyn WriteStore>> {
    Ok(s.open_repository(&mut |w| warn(&w))?)
}

/// Takes the source's lock on this machine (see `offsitedb::lock`). Waiting is said as a
/// warning: even with -q, a run that waits must not look hung.
pub fn lock(s: &Settings, source: &str, what: &str, no_wait: bool) -> Result<SourceLock> {
    Ok(offsitedb::lock::acquire(
        &s.lock_dir(&mut |w| warn(&w))?,
        &s.repository_identity()?,
        source,
        what,
        if no_wait { Wait::No } else { Wait::Yes },
        &mut |n| warn(&n),
    )?)
}

/// An error already reported (on stderr, in the form its reader expects), ending the run with
/// this exit code: `wal-push` and `wal-fetch` answer PostgreSQL (`offsitedb::exit::wal`).
#[derive(Debug)]
pub struct Exit(pub u8);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}", self.0)
    }
}

impl std::error::Error for Exit {}

/// The run history, for a backup typed by hand (it counts for `prune`'s hold and the dead man's
/// switch too); a state file that cannot be opened does not stop the backup, it is said.
pub fn state_for(s: &Settings, what: &str) -> Option<offsitedb::state::State> {
    match s.state_at().and_then(|a| a.open()) {
        Ok(st) => Some(st),
        Err(e) => {
            warn(&format!(
                "this {what} is not recorded in the history: {}",
                e.message()
            ));
            None
        }
    }
}

/// Prints `value` as pretty JSON on standard output.
pub fn print_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<()> {
    crate::output::outln!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
