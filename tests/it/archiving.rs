//! The point-in-time recovery fixture: a source server that archives its WAL with
//! `archive_command = 'offsitedb wal-push ...'` into a SeaweedFS bucket, set up as a database
//! host would be: a configuration file and a key file that the server's user can read (the
//! archiver runs as that user, with the server's environment, in the data folder).

// Shared by the PITR test files; not every file uses every helper.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use offsitedb::cluster::ClusterOptions;

use crate::common::{
    ACCESS_KEY, BUCKET, Cli, DB_PASSWORD, Run, SECRET_KEY, SeaweedFs, Source, keygen, offsitedb_bin,
};

/// The source name the fixture archives under.
pub const SOURCE: &str = "app";

pub struct Pitr {
    pub weed: SeaweedFs,
    /// Holds `offsitedb.toml` and `master.key`; owned by the server's user when we are root.
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub key: PathBuf,
    /// Runs offsitedb with `OFFSITEDB_CONFIG` pointing at the fixture's configuration.
    pub cli: Cli,
    pub src: Source,
    pub prefix: String,
    /// Where the programs of the source's major (and PostgreSQL 18's clients) are.
    pub bin_dirs: Vec<PathBuf>,
}

/// The user a throwaway cluster runs as when we are root (PostgreSQL refuses root).
pub fn server_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = std::env::var("OFFSITEDB_CLUSTER_USER").unwrap_or_else(|_| "postgres".into());
    let cname = std::ffi::CString::new(name).unwrap();
    // SAFETY: getpwnam returns null or a pointer to a valid passwd struct, read at once.
    let pw = unsafe { libc::getpwnam(cname.as_ptr()) };
    assert!(
        !pw.is_null(),
        "no postgres user to run the source server as"
    );
    // SAFETY: checked non-null above.
    Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

/// Gives `path` (and everything under it) to the server's user, when we are root.
pub fn give_to_server(path: &Path) {
    let Some((uid, gid)) = server_user() else {
        return;
    };
    for entry in walk(path) {
        std::os::unix::fs::chown(&entry, Some(uid), Some(gid)).unwrap();
    }
}

fn walk(path: &Path) -> Vec<PathBuf> {
    let mut out = vec![path.to_path_buf()];
    if path.is_dir() {
        for e in std::fs::read_dir(path).unwrap() {
            out.extend(walk(&e.unwrap().path()));
        }
    }
    out
}

/// The lines a source server that archives its WAL needs.
pub fn archiving_conf() -> String {
    "wal_level = replica\narchive_mode = on\narchive_timeout = 0\nmax_wal_senders = 4\n\
     wal_keep_size = '256MB'\nlogging_collector = on\nlog_directory = 'log'\n\
     log_filename = 'server.log'\n"
        .to_string()
}

impl Pitr {
    /// A source server of the given major version (the newest installed when `None`), archiving into a new
    /// bucket prefix with `extra_source` lines added to its `[[source]]`.
    pub fn start(major: Option<u32>, extra_source: &str) -> Pitr {
        Pitr::start_with(major, "push", extra_source)
    }

    /// [`Pitr::start`] with `wal = "WAL"`: the archive_command is set only for "push" (a
    /// streamed source's server archives nothing itself).
    pub fn start_with(major: Option<u32>, wal: &str, extra_source: &str) -> Pitr {
        let weed = SeaweedFs::start();
        // A major asked for comes from the npm server binaries (the version matrix); `None`
        // is the newest the machine has.
        // The server programs of that major, and PostgreSQL 18's client programs (pg_basebackup,
        // pg_verifybackup at least as new as any server of the matrix).
        let bin_dirs: Vec<PathBuf> = major
            .map(crate::drill::npm_server)
            .into_iter()
            .chain([crate::drill::pypi_18()])
            .collect();
        let src = Source::start_with(ClusterOptions {
            major,
            bin_dirs: major.map(crate::drill::npm_server).into_iter().collect(),
            extra_conf: archiving_conf(),
            ..Default::default()
        });
        if let Some(m) = major {
            assert_eq!(src.cluster.version().major, m);
        }
        let dir = tempfile::Builder::new()
            .prefix("offsitedb-pitr-")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let key = keygen(dir.path(), "master.key");
        let prefix = format!("pitr{}", std::process::id());
        let config = dir.path().join("offsitedb.toml");
        std::fs::write(
            &config,
            format!(
                "[repository]\nurl = \"{}\"\naccess_key_id = \"{ACCESS_KEY}\"\n\
                 secret_access_key = \"{SECRET_KEY}\"\nkey_file = \"master.key\"\n\n\
                 [[source]]\nname = \"{SOURCE}\"\nurl = \"{}\"\nwal = \"{wal}\"\n{extra_source}\n",
                weed.repo_url(&prefix),
                src.url("postgres"),
            ),
        )
        .unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
        give_to_server(dir.path());
        let cli = Cli::new()
            .env("OFFSITEDB_CONFIG", config.to_str().unwrap())
            .env("OFFSITEDB_PG_BIN_DIRS", &crate::drill::join_dirs(&bin_dirs));
        let p = Pitr {
            bin_dirs,
            weed,
            dir,
            config,
            key,
            cli,
            src,
            prefix,
        };
        if wal == "push" {
            p.set_archive_command(&p.archive_command());
        }
        p
    }

    /// `'offsitedb' wal-push --config 'CONFIG' %p`: the README's line with an explicit file.
    pub fn archive_command(&self) -> String {
        format!(
            "'{}' wal-push --config '{}' %p",
            env!("CARGO_BIN_EXE_offsitedb"),
            self.config.display()
        )
    }

    /// Sets `archive_command` and reloads (archive_mode is on from the start).
    pub fn set_archive_command(&self, cmd: &str) {
        // Two statements, not one batch: a batch runs as one transaction, and ALTER SYSTEM
        // refuses to run inside one.
        self.sql(&format!(
            "ALTER SYSTEM SET archive_command = '{}'",
            cmd.replace('\'', "''")
        ));
        self.sql("SELECT pg_reload_conf()");
    }

    /// Runs SQL in database `postgres`.
    pub fn sql(&self, sql: &str) {
        self.src.cluster.execute("postgres", sql).unwrap();
    }

    /// One text value from a query in database `postgres`.
    pub fn text(&self, sql: &str) -> String {
        self.src
            .client("postgres")
            .query_one(sql, &[])
            .unwrap()
            .get::<_, String>(0)
    }

    pub fn scalar(&self, sql: &str) -> i64 {
        self.src.scalar_i64("postgres", sql)
    }

    /// The source URL (TCP, with the password): what backup-push connects to.
    pub fn url(&self) -> String {
        self.src.url("postgres")
    }

    /// Switches to a new WAL segment and waits until the one just closed is archived;
    /// returns its name.
    pub fn switch_and_archive(&self) -> String {
        let name = self.text("SELECT pg_walfile_name(pg_switch_wal())");
        self.wait_archived(&name);
        name
    }

    /// Waits (up to 60 s) until the archiver reports `name` (or a later file) archived.
    pub fn wait_archived(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let row = self
                .src
                .client("postgres")
                .query_one(
                    "SELECT coalesce(last_archived_wal, ''), coalesce(last_failed_wal, ''), failed_count FROM pg_stat_archiver",
                    &[],
                )
                .unwrap();
            let last: String = row.get(0);
            if !last.is_empty() && last.as_str() >= name {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} was not archived in 60 s (last archived {last:?}, last failed {:?}, {} failures); server log:\n{}",
                row.get::<_, String>(1),
                row.get::<_, i64>(2),
                self.server_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What the server wrote to its log so far (the archiver's and restore commands' stderr
    /// included: the logging collector catches it).
    pub fn server_log(&self) -> String {
        let log = self.src.cluster.data_dir().join("log/server.log");
        std::fs::read_to_string(log).unwrap_or_default()
    }

    /// The data folder: the archiver's working folder.
    pub fn data_dir(&self) -> PathBuf {
        self.src.cluster.data_dir()
    }

    /// Runs offsitedb as the archiver does: as the server's user (when we are root, so that
    /// what it writes under pg_wal stays the server's), in the data folder, with `HOME=/`.
    pub fn run_as_server(&self, args: &[&str]) -> Run {
        let out = self.server_command(args).output().expect("run offsitedb");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `offsitedb ARGS` as [`Pitr::run_as_server`] runs it, with its output piped.
    pub fn server_command(&self, args: &[&str]) -> std::process::Command {
        use std::os::unix::process::CommandExt;
        let mut cmd = self.cli.command(offsitedb_bin());
        cmd.args(args)
            .current_dir(self.data_dir())
            .env("HOME", "/")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some((uid, gid)) = server_user() {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    /// The server log once a line holds all of `needles` (up to 30 s: the logging collector
    /// writes a moment after the archiver reported).
    pub fn wait_log_line(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.server_log();
            if log.lines().any(|l| needles.iter().all(|n| l.contains(n))) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "no line with {needles:?} in the server log in 30 s:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A new folder the server's user owns, for a data folder to restore into.
    pub fn new_data_dir(&self, name: &str) -> PathBuf {
        let d = self.dir.path().join(name);
        give_to_server(self.dir.path());
        d
    }

    /// The repository's objects through the library.
    pub fn store(&self) -> offsitedb::storage::s3::S3Store {
        self.weed.store(&self.prefix)
    }

    /// The bucket URL of the repository.
    pub fn repo_url(&self) -> String {
        self.weed.repo_url(&self.prefix)
    }

    pub fn db_password(&self) -> &'static str {
        DB_PASSWORD
    }

    pub fn bucket(&self) -> &'static str {
        BUCKET
    }
}
