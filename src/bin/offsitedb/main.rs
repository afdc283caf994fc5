//! The `offsitedb` command: parses arguments, calls the library, prints. Every decision is in
//! the `offsitedb` library crate; this file only translates between it and a terminal.

mod commands;
mod init;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "offsitedb",
    version,
    about = "Encrypted PostgreSQL backups into a bucket you own, proven by restoring them",
    after_help = "Exit codes: 0 ok, 1 internal, 2 usage, 3 config, 4 key, 5 database, 6 storage, \
                  7 integrity, 8 not found, 9 missing tool, 10 child process failed, 11 local i/o, \
                  12 drill failed, 13 alert channel failed, 130 interrupted, 141 output pipe closed."
)]
struct Cli {
    /// Configuration file (default: ./offsitedb.toml if present)
    #[arg(long, global = true, env = "OFFSITEDB_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Repository: s3://bucket/prefix?endpoint=..., file:///path, or a path
    #[arg(long, global = true, env = "OFFSITEDB_REPO", value_name = "URL")]
    repo: Option<String>,
    /// Master key file (or set OFFSITEDB_KEY_FILE, or OFFSITEDB_KEY with the key itself)
    #[arg(long, global = true, value_name = "FILE")]
    key_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new master key
    Keygen {
        /// Write the key to this file (mode 0600; never overwrites). Default: standard output
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Back up a database into the repository
    Backup {
        /// Database URL (postgres://user:password@host:5432/db); default: the configured sources
        #[arg(long, value_name = "URL")]
        source: Option<String>,
        /// A folder to back up instead of a database (with --name)
        #[arg(long, value_name = "PATH", conflicts_with = "source")]
        dir: Option<PathBuf>,
        /// Name of the source (required with --source or --dir; selects a configured source otherwise)
        #[arg(long)]
        name: Option<String>,
        /// gzip (default), gzip:LEVEL, zstd, zstd:LEVEL
        #[arg(long)]
        compression: Option<String>,
        /// Print the snapshot summary as JSON
        #[arg(long)]
        json: bool,
    },
    /// List snapshots
    List {
        /// Only this source
        #[arg(long, value_name = "NAME")]
        source: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one snapshot's manifest
    Show {
        /// Snapshot id, a unique prefix of one, or "latest"
        snapshot: String,
        #[arg(long, value_name = "NAME")]
        source: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Write a snapshot's artifact, unencrypted (.dump.gz or .dump.zst), for pg_restore
    Decrypt {
        /// Snapshot id, a unique prefix of one, or "latest"
        snapshot: String,
        #[arg(long, value_name = "NAME")]
        source: Option<String>,
        /// Output file (default: standard output)
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Replace an existing output file
        #[arg(long)]
        force: bool,
    },
    /// Restore a snapshot into a database
    Restore {
        /// Snapshot id, a unique prefix of one, or "latest"
        snapshot: String,
        /// Target database URL
        #[arg(
            long,
            value_name = "URL",
            required_unless_present = "to_dir",
            conflicts_with = "to_dir"
        )]
        to: Option<String>,
        /// Target folder, for a directory snapshot
        #[arg(long, value_name = "DIR")]
        to_dir: Option<PathBuf>,
        /// With --to-dir: write into a folder that is not empty
        #[arg(long, requires = "to_dir")]
        force: bool,
        #[arg(long, value_name = "NAME")]
        source: Option<String>,
        /// Drop the snapshot's objects in the target before restoring them
        #[arg(long)]
        clean: bool,
        /// Parallel restore jobs (stages the archive in a temporary file first)
        #[arg(long, short = 'j', default_value_t = 1)]
        jobs: usize,
        /// Do not restore ownership (when the roles do not exist on the target)
        #[arg(long)]
        no_owner: bool,
        /// Do not restore grants
        #[arg(long)]
        no_privileges: bool,
        /// Where to stage the archive for --jobs > 1
        #[arg(long, value_name = "DIR")]
        spool_dir: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Prove a snapshot restores: restore it into a throwaway cluster and verify every table
    Drill {
        /// Snapshot id, a unique prefix of one, or "latest"
        snapshot: String,
        #[arg(long, value_name = "NAME")]
        source: Option<String>,
        /// Restore into a temporary database on this server instead of a throwaway cluster
        #[arg(long, value_name = "URL")]
        drill_server: Option<String>,
        /// Where the drill runs its cluster (default: $OFFSITEDB_TMPDIR or /tmp)
        #[arg(long, value_name = "DIR")]
        work_dir: Option<PathBuf>,
        /// Connections that load and verify tables (default: one per core, up to 16; at most 64)
        #[arg(long, short = 'j', default_value_t = 0)]
        jobs: usize,
        /// Keep the drill database on the --drill-server afterwards, to look into it
        #[arg(long, requires = "drill_server")]
        keep: bool,
        /// Print the drill record as JSON
        #[arg(long)]
        json: bool,
    },
    /// Write a first offsitedb.toml (source, repository, new key, schedule, retention), then check it
    Init {
        /// The database URL (postgres://user:password@host:5432/db)
        #[arg(long, value_name = "URL")]
        source_url: Option<String>,
        /// A name for the source (default: the database's name)
        #[arg(long)]
        name: Option<String>,
        /// S3 access key id (default: AWS_ACCESS_KEY_ID, else not written)
        #[arg(long)]
        access_key_id: Option<String>,
        /// S3 secret access key (default: AWS_SECRET_ACCESS_KEY, else not written)
        #[arg(long)]
        secret_access_key: Option<String>,
        /// When backups run
        #[arg(long)]
        schedule: Option<String>,
        /// Retention, e.g. "daily=7,weekly=4,monthly=12"
        #[arg(long)]
        keep: Option<String>,
        /// Replace an existing configuration file
        #[arg(long)]
        force: bool,
        /// Do not run check afterwards
        #[arg(long)]
        no_check: bool,
        /// Ask for missing values even when standard input is not a terminal
        #[arg(long)]
        interactive: bool,
    },
    /// Test everything a backup needs (network, TLS, login, privileges, repository, key), with a fix for each failure
    Check {
        /// Only this configured source (default: every one)
        source: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Print the SQL for a read-only backup role, for the server's version
    RoleSql {
        /// A configured source: its server's version and database decide the SQL
        source: Option<String>,
        /// The role's name
        #[arg(long, default_value = "offsitedb_backup")]
        role: String,
        /// Only these schemas, comma-separated (default: all)
        #[arg(long, value_delimiter = ',')]
        schemas: Vec<String>,
        /// The server's major version, without connecting (e.g. 13)
        #[arg(long, value_name = "N")]
        major: Option<u32>,
    },
    /// Run a source's job now: backup, drill, prune (what `serve` runs on its schedule)
    Run {
        /// A configured source
        source: String,
        #[arg(long)]
        json: bool,
    },
    /// Run every scheduled source's job on its schedule, alert, and serve /metrics
    Serve {
        /// Address for /metrics and /healthz (default: [server] listen, else 127.0.0.1:8080)
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Log lines as human text or JSON objects
        #[arg(
            long,
            value_enum,
            env = "OFFSITEDB_LOG_FORMAT",
            default_value = "human"
        )]
        log_format: LogFormat,
    },
    /// Send a test alert to every configured channel and ping every heartbeat URL
    AlertTest,
    /// Delete snapshots that the retention policy no longer keeps
    Prune {
        /// Only this source (default: every configured source)
        #[arg(long, value_name = "NAME")]
        source: Option<String>,
        /// Retention for this run, e.g. "daily=7,weekly=4,monthly=12" (default: the source's keep)
        #[arg(long, value_name = "RULES")]
        keep: Option<String>,
        /// Show what would be kept and deleted, delete nothing
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Past runs (backups, drills, prunes) on this machine, newest first
    History {
        #[arg(long, value_name = "NAME")]
        source: Option<String>,
        /// How many runs
        #[arg(long, default_value_t = 30)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Back up a sample database, restore it and compare: the whole story in a minute
    Demo {
        /// Keep the demo repository and its key in this (new or empty) folder
        #[arg(long, value_name = "DIR")]
        keep: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    offsitedb::interrupt::install();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = output::print_error(&e);
            ExitCode::from(code)
        }
    }
}
