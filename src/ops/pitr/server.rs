/*!
`restore --pgdata --start`: the restored server started on a private unix socket, watched until
recovery reaches its target, then stopped (or left running).

The server runs as the data folder's owner, with only what this run needs given on its command
line (so the data folder's own settings stay as they are for the next start): no TCP, a socket in
a private folder, and an `hba_file` that trusts local connections on that socket only (the folder
is 0700, so only the owner reaches it). Its log goes to `<data folder>.offsitedb.log`.

When recovery has reached its target is read from the server itself: promoted (`pg_is_in_recovery()`
is false), paused at the target ("pausing at the end of recovery" in its log), or shut down at the
target ("shutdown at recovery target"). A server that exits otherwise failed; its last FATAL or
PANIC line is the error (a `restore_command` that exited above 125 ends recovery there, which is
the point: a store outage must not become a promotion).
*/

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::postgres::{ConnInfo, binaries, client};

/// Where recovery stopped, as the server reports it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Reached {
    /// `promoted`, `paused` or `shut down`.
    pub state: String,
    /// `pg_last_wal_replay_lsn()`.
    pub replay_lsn: Option<String>,
    /// `pg_last_xact_replay_timestamp()`, UTC.
    pub last_transaction: Option<String>,
    /// The server's own line ("recovery stopping before commit of transaction 745, time ...").
    pub stopped: Option<String>,
    /// Left running: how to connect.
    pub socket_dir: Option<PathBuf>,
    pub port: Option<u16>,
    pub log: PathBuf,
}

pub struct Started {
    child: Child,
    run_dir: Option<tempfile::TempDir>,
    socket_dir: PathBuf,
    port: u16,
    log: PathBuf,
    users: Vec<String>,
}

/// Starts the server of `pgdata` (major version from its `PG_VERSION`).
pub fn start(
    pgdata: &Path,
    log: &Path,
    bin_dirs: &[PathBuf],
    users: Vec<String>,
    keep_running: bool,
) -> Result<Started> {
    let version = std::fs::read_to_string(pgdata.join("PG_VERSION"))
        .map_err(|e| Error::io_at("cannot read", &pgdata.join("PG_VERSION"), &e))?;
    let major: u32 = version.trim().parse().map_err(|_| {
        Error::integrity(format!(
            "{} says version {:?}",
            pgdata.join("PG_VERSION").display(),
            version.trim()
        ))
    })?;
    let program = binaries::server_dir(Some(major), &binaries::search_dirs(bin_dirs))?;
    let meta = std::fs::metadata(pgdata).map_err(|e| Error::io_at("cannot read", pgdata, &e))?;
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root && meta.uid() == 0 {
        return Err(Error::config(format!(
            "{} belongs to root, and PostgreSQL refuses to run as root",
            pgdata.display()
        ))
        .with_hint("give it to the user the server runs as (chown -R postgres: DIR)"));
    }
    let run_dir = tempfile::Builder::new()
        .prefix("offsitedb-restore-")
        .tempdir_in("/tmp")
        .map_err(|e| Error::io(format!("cannot create a socket folder in /tmp: {e}")))?;
    let socket_dir = run_dir.path().to_path_buf();
    let hba = socket_dir.join("pg_hba.conf");
    std::fs::write(&hba, "local all all trust\n")
        .map_err(|e| Error::io_at("cannot write", &hba, &e))?;
    if root {
        for p in [&socket_dir, &hba] {
            std::os::unix::fs::chown(p, Some(meta.uid()), Some(meta.gid()))
                .map_err(|e| Error::io_at("cannot change the owner of", p, &e))?;
        }
    }
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&socket_dir);
    let port = crate::cluster::free_port();
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| Error::io_at("cannot create", log, &e))?;
    let err = out
        .try_clone()
        .map_err(|e| Error::io_at("cannot open", log, &e))?;
    let mut cmd = crate::process::command(&program.path);
    cmd.arg("-D")
        .arg(pgdata)
        .args(["-c", "listen_addresses="])
        .arg("-c")
        .arg(format!("port={port}"))
        .arg("-c")
        .arg(format!("unix_socket_directories={}", socket_dir.display()))
        .arg("-c")
        .arg(format!("hba_file={}", hba.display()))
        .args(["-c", "logging_collector=off"])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .current_dir("/")
        // Its own process group: Ctrl-C in this terminal is ours to handle (we stop it), and a
        // server left running does not die with the terminal.
        .process_group(0);
    if root {
        // The owner's own home, not root's: its restore_command must not read root's files
        // (~/.aws) any more than a service manager's start would.
        cmd.uid(meta.uid()).gid(meta.gid()).env(
            "HOME",
            home_of(meta.uid()).unwrap_or_else(|| PathBuf::from("/")),
        );
    }
    let child = cmd
        .spawn()
        .map_err(|e| Error::tool(format!("cannot start {}: {e}", program.path.display())))?;
    Ok(Started {
        child,
        run_dir: if keep_running {
            let _ = run_dir.keep();
            None
        } else {
            Some(run_dir)
        },
        socket_dir,
        port,
        log: log.to_path_buf(),
        users,
    })
}

impl Started {
    /// Waits until recovery reached its target (`action`: promote, pause, shutdown, or
    /// "promote" for a restore to the end of the archive).
    pub fn wait(&mut self, action: &str) -> Result<Reached> {
        let mut announced = Instant::now();
        loop {
            if let Err(e) = crate::interrupt::check() {
                self.stop();
                return Err(e);
            }
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(|e| Error::process(format!("cannot watch the server: {e}")))?
            {
                if action == "shutdown"
                    && status.success()
                    && log.contains("shutdown at recovery target")
                {
                    return Ok(Reached {
                        state: "shut down".into(),
                        stopped: stopping_line(&log),
                        log: self.log.clone(),
                        ..Default::default()
                    });
                }
                return Err(self.failed(&log));
            }
            let paused = log.contains("pausing at the end of recovery")
                || log.contains("recovery has paused");
            if let Some(mut c) = self.connect() {
                let row = c
                    .query_one(
                        "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, \
                         to_char(pg_last_xact_replay_timestamp() AT TIME ZONE 'UTC', \
                         'YYYY-MM-DD HH24:MI:SS.US') || ' UTC'",
                        &[],
                    )
                    .map_err(|e| client::query_error("cannot ask the restored server", &e))?;
                let in_recovery: bool = row.get(0);
                if !in_recovery || (paused && action == "pause") {
                    return Ok(Reached {
                        state: if in_recovery { "paused" } else { "promoted" }.into(),
                        replay_lsn: row.get(1),
                        last_transaction: row.get(2),
                        stopped: stopping_line(&log),
                        socket_dir: Some(self.socket_dir.clone()),
                        port: Some(self.port),
                        log: self.log.clone(),
                    });
                }
            }
            if announced.elapsed() > Duration::from_secs(30) {
                tracing::info!("still recovering (see {})", self.log.display());
                announced = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn connect(&self) -> Option<client::Client> {
        self.users.iter().find_map(|u| {
            let mut ci = ConnInfo::default();
            ci.set("host", &self.socket_dir.to_string_lossy());
            ci.set("port", &self.port.to_string());
            ci.set("user", u);
            ci.set("dbname", "postgres");
            ci.set("connect_timeout", "5");
            client::connect(&ci, "the restored server").ok()
        })
    }

    fn failed(&self, log: &str) -> Error {
        let last = log
            .lines()
            .rev()
            .find(|l| {
                (l.contains("FATAL:") || l.contains("PANIC:"))
                    && !l.contains("the database system is starting up")
                    && !l.contains("not yet accepting connections")
            })
            .unwrap_or("(no FATAL line in its log)");
        Error::new(
            ErrorKind::Process,
            format!(
                "the restored server stopped before reaching the target: {}",
                last.trim()
            ),
        )
        .with_hint(format!(
            "its log is {}; the data folder is kept as it is",
            self.log.display()
        ))
    }

    /// Stops the server (fast shutdown; SIGKILL after a minute).
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // SAFETY: kill has no memory-safety preconditions; the PID is our child's.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(60);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        self.run_dir.take();
    }
}

impl Drop for Started {
    /// A server started only to reach the target never outlives the restore (an error on
    /// the way included); one asked to keep running has no `run_dir` to clean.
    fn drop(&mut self) {
        if self.run_dir.is_some() {
            self.stop();
        }
    }
}

/// A user's home folder, from the password database.
fn home_of(uid: u32) -> Option<PathBuf> {
    // SAFETY: getpwuid returns null or a pointer to static storage, read at once.
    let pw = unsafe { libc::getpwuid(uid) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: pw is non-null; pw_dir is a NUL-terminated string.
    let dir = unsafe { std::ffi::CStr::from_ptr((*pw).pw_dir) };
    use std::os::unix::ffi::OsStrExt;
    Some(PathBuf::from(std::ffi::OsStr::from_bytes(dir.to_bytes())))
}

/// The server's own words on where recovery stopped.
fn stopping_line(log: &str) -> Option<String> {
    log.lines()
        .rev()
        .find(|l| l.contains("recovery stopping") || l.contains("last completed transaction"))
        .map(|l| {
            l.split_once("LOG:")
                .map_or(l, |(_, m)| m)
                .trim()
                .to_string()
        })
}
