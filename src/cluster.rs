/*!
Throwaway PostgreSQL clusters: `initdb` into a private temporary folder (or a copy of what initdb
made before, see `cluster/template.rs`), a server listening on a unix socket only (no TCP), stopped
and deleted when the value is dropped. The demo, the drills and every test use them.

PostgreSQL refuses to run as root, so when we are root the cluster runs as an unprivileged user
(`postgres`, or `OFFSITEDB_CLUSTER_USER`) and its folder belongs to that user.
*/

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::postgres::{ConnInfo, PgProgram, binaries, client};
use crate::process::ChildProcess;

mod template;

pub const SUPERUSER: &str = "postgres";

#[derive(Clone, Debug, Default)]
pub struct ClusterOptions {
    /// The exact major version; `None` takes the newest installed.
    pub major: Option<u32>,
    /// Extra directories to search for server programs.
    pub bin_dirs: Vec<PathBuf>,
    /// Settings for restore speed (no fsync, minimal WAL); for clusters whose data is disposable.
    pub tuned_for_restore: bool,
    /// Where the temporary folder goes; default `$OFFSITEDB_TMPDIR` or the system temp dir.
    pub parent_dir: Option<PathBuf>,
    /// Also listen on 127.0.0.1 (port [`Cluster::port`]), with password (SCRAM) authentication
    /// for TCP connections. For tests that need a server reached like a remote one.
    pub tcp: bool,
    /// Where freshly initialized data folders are kept for the next start (see
    /// `cluster/template.rs`); `None`: `OFFSITEDB_CACHE_DIR`, else the user's cache folder.
    pub template_cache: Option<PathBuf>,
    /// Connections the server accepts; `None`: 30.
    pub max_connections: Option<u32>,
    /// More `postgresql.conf` lines (a source that archives WAL: `archive_mode = on`, ...).
    pub extra_conf: String,
}

pub struct Cluster {
    program: PgProgram,
    dir: Option<tempfile::TempDir>,
    socket_dir: PathBuf,
    port: u16,
    server: Option<ChildProcess>,
    /// Stop without a shutdown checkpoint: the data is thrown away with the folder.
    immediate_stop: bool,
}

/// The unprivileged user a cluster runs as when we are root.
pub(crate) struct RunAs {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

pub(crate) fn run_as() -> Result<Option<RunAs>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = std::env::var("OFFSITEDB_CLUSTER_USER").unwrap_or_else(|_| "postgres".into());
    let cname = std::ffi::CString::new(name.clone())
        .map_err(|_| Error::config("OFFSITEDB_CLUSTER_USER holds a NUL byte"))?;
    // SAFETY: getpwnam returns null or a pointer to static storage that we read at once.
    let pw = unsafe { libc::getpwnam(cname.as_ptr()) };
    if pw.is_null() {
        return Err(Error::tool(format!(
            "running as root, but there is no user {name:?} to run a throwaway PostgreSQL as (PostgreSQL refuses root)"
        ))
        .with_hint("create one (useradd --system postgres), install the postgresql package, or set OFFSITEDB_CLUSTER_USER"));
    }
    // SAFETY: pw is non-null and points to a valid passwd struct.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok(Some(RunAs { uid, gid }))
}

/// Where throwaway clusters (and drills' work folders) go: `explicit`, else `OFFSITEDB_TMPDIR`,
/// else the system's temporary folder. As root the cluster runs as an unprivileged user, who
/// must be able to enter it: a private TMPDIR (mode 0700, as `mktemp -d` makes) falls back to
/// /tmp when no folder was asked for; an asked-for folder it cannot enter is an error.
pub fn work_parent(explicit: Option<PathBuf>) -> Result<PathBuf> {
    let asked = explicit.or_else(|| std::env::var_os("OFFSITEDB_TMPDIR").map(PathBuf::from));
    let parent = asked.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&parent)
        .map_err(|e| Error::io_at("cannot create the work folder", &parent, &e))?;
    let Some(w) = run_as()? else {
        return Ok(parent);
    };
    if reachable(&parent, &w) {
        return Ok(parent);
    }
    let fallback = PathBuf::from("/tmp");
    if asked.is_none() && reachable(&fallback, &w) {
        return Ok(fallback);
    }
    Err(Error::io(format!(
        "the throwaway cluster runs as an unprivileged user (PostgreSQL refuses root), who cannot enter {}",
        parent.display()
    ))
    .with_hint(
        "point OFFSITEDB_TMPDIR (or --work-dir) at a folder that user can reach, such as /var/tmp",
    ))
}

/// Whether `who` may traverse every folder on the way to `dir` (and `dir` itself).
fn reachable(dir: &Path, who: &RunAs) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(dir) = std::fs::canonicalize(dir) else {
        return false;
    };
    dir.ancestors().all(|d| match std::fs::metadata(d) {
        Ok(m) => {
            let mode = m.mode();
            if m.uid() == who.uid {
                mode & 0o100 != 0
            } else if m.gid() == who.gid {
                mode & 0o010 != 0
            } else {
                mode & 0o001 != 0
            }
        }
        Err(_) => false,
    })
}

pub(crate) fn chown_tree(path: &Path, who: &RunAs) -> Result<()> {
    std::os::unix::fs::chown(path, Some(who.uid), Some(who.gid))
        .map_err(|e| Error::io_at("cannot change the owner of", path, &e))
}

/// A TCP port nobody listens on now. The cluster does not listen on TCP; the port only names
/// its socket file, but a free one keeps `psql -p` habits working.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(54329)
}

impl Cluster {
    pub fn start(opts: &ClusterOptions) -> Result<Cluster> {
        let mut cached = None;
        match Cluster::start_from(opts, &mut cached) {
            // A cached data folder the server could not start from (damaged in a way the copy
            // could not see) is thrown away, and initdb makes a new one.
            Err(_) if cached.is_some() => {
                let entry = cached.take().expect("just checked");
                let _ = std::fs::remove_dir_all(&entry);
                Cluster::start_from(opts, &mut None)
            }
            r => r,
        }
    }

    /// Starts a cluster; `cached` is set to the template cache entry its data folder was
    /// copied from, if it was.
    fn start_from(opts: &ClusterOptions, cached: &mut Option<PathBuf>) -> Result<Cluster> {
        let dirs = binaries::search_dirs(&opts.bin_dirs);
        let program = binaries::server_dir(opts.major, &dirs)?;
        let bin = program
            .path
            .parent()
            .expect("program path has a folder")
            .to_path_buf();
        let who = run_as()?;

        let parent = work_parent(opts.parent_dir.clone())?;
        let dir = tempfile::Builder::new()
            .prefix("offsitedb-pg-")
            .tempdir_in(&parent)
            .map_err(|e| Error::io_at("cannot create a temporary folder in", &parent, &e))?;
        let data = dir.path().join("data");
        let socket_dir = dir.path().join("sock");
        std::fs::create_dir(&socket_dir)
            .map_err(|e| Error::io_at("cannot create", &socket_dir, &e))?;
        if let Some(w) = &who {
            chown_tree(dir.path(), w)?;
            chown_tree(&socket_dir, w)?;
        }

        let template = opts
            .template_cache
            .clone()
            .or_else(template::default_root)
            .and_then(|root| template::entry(&root, &bin));
        let owner = who.as_ref().map(|w| (w.uid, w.gid));
        if let Some(t) = template
            .as_deref()
            .filter(|t| template::restore(t, &data, owner))
        {
            *cached = Some(t.to_path_buf());
        } else {
            initdb(&bin, &data, &who)?;
            if let Some(t) = &template {
                template::save(t, &data);
            }
        }

        let port = free_port();
        let listen = if opts.tcp { "127.0.0.1" } else { "" };
        let mut conf = format!(
            "\n# offsitedb throwaway cluster\nlisten_addresses = '{listen}'\nport = {port}\n\
             unix_socket_directories = '{}'\nmax_connections = {}\n",
            socket_dir.display(),
            opts.max_connections.unwrap_or(30)
        );
        if opts.tuned_for_restore {
            conf.push_str(
                "fsync = off\nfull_page_writes = off\nsynchronous_commit = off\n\
                 wal_level = minimal\nmax_wal_senders = 0\nmax_wal_size = '4GB'\n\
                 checkpoint_timeout = '30min'\nmaintenance_work_mem = '512MB'\n\
                 autovacuum = off\n\
                 wal_init_zero = off\nwal_recycle = off\nwal_buffers = '64MB'\njit = off\n",
            );
        }
        conf.push_str(&opts.extra_conf);
        conf.push('\n');
        let conf_path = data.join("postgresql.conf");
        let mut existing = std::fs::read_to_string(&conf_path)
            .map_err(|e| Error::io_at("cannot read", &conf_path, &e))?;
        existing.push_str(&conf);
        std::fs::write(&conf_path, existing)
            .map_err(|e| Error::io_at("cannot write", &conf_path, &e))?;

        let mut cluster = Cluster {
            program,
            dir: Some(dir),
            socket_dir,
            port,
            server: None,
            immediate_stop: opts.tuned_for_restore,
        };
        cluster.server = Some(cluster.spawn_server(&who)?);
        cluster.wait_ready()?;
        Ok(cluster)
    }

    fn spawn_server(&self, who: &Option<RunAs>) -> Result<ChildProcess> {
        let bin = self
            .program
            .path
            .parent()
            .expect("program path has a folder");
        let mut server = crate::process::command(bin.join("postgres"));
        server.arg("-D").arg(self.data_dir()).env("LC_ALL", "C");
        as_user(&mut server, who);
        let mut child = ChildProcess::spawn(server, "postgres", false)?;
        child.drain_stdout();
        Ok(child)
    }

    /// Stops the server (fast shutdown) and starts it again on the same folder and port, as a
    /// source restarted under a running WAL stream is.
    pub fn restart(&mut self) -> Result<()> {
        if let Some(mut s) = self.server.take() {
            s.signal(libc::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(30);
            while !s.has_exited() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = s.kill();
        }
        self.server = Some(self.spawn_server(&run_as()?)?);
        self.wait_ready()
    }

    /// Kills the server with SIGKILL, as a crash does: no shutdown checkpoint, nothing more
    /// sent to a replication connection. The folder stays until the cluster is dropped.
    pub fn kill(&mut self) {
        if let Some(s) = self.server.take() {
            s.kill();
        }
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.server.as_mut().is_some_and(|s| s.has_exited()) {
                let exit = self.server.take().unwrap().wait_exit()?;
                return Err(Error::process(format!(
                    "the throwaway PostgreSQL {} did not start: {}",
                    self.program.version,
                    exit.reason()
                )));
            }
            match client::connect(&self.conninfo("postgres"), "the throwaway cluster") {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(e.context("the throwaway cluster did not become ready in 60s"));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(25)),
            }
        }
    }

    pub fn version(&self) -> &PgProgram {
        &self.program
    }

    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The folder holding the cluster (data and socket); removed on drop.
    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("running").path()
    }

    /// The data folder.
    pub fn data_dir(&self) -> PathBuf {
        self.path().join("data")
    }

    /// How to reach database `db` as the superuser.
    pub fn conninfo(&self, db: &str) -> ConnInfo {
        let mut ci = ConnInfo::default();
        ci.set("host", &self.socket_dir.to_string_lossy());
        ci.set("port", &self.port.to_string());
        ci.set("user", SUPERUSER);
        ci.set("dbname", db);
        ci
    }

    pub fn connect(&self, db: &str) -> Result<client::Client> {
        client::connect(&self.conninfo(db), "the throwaway cluster")
    }

    /// Runs SQL statements (no results) in `db`.
    pub fn execute(&self, db: &str, sql: &str) -> Result<()> {
        let mut c = self.connect(db)?;
        c.batch_execute(sql)
            .map_err(|e| client::query_error("query on the throwaway cluster failed", &e))
    }

    pub fn create_database(&self, name: &str) -> Result<()> {
        self.execute(
            "postgres",
            &format!(
                "CREATE DATABASE \"{}\" TEMPLATE template0",
                name.replace('"', "\"\"")
            ),
        )
    }

    /// Stops the server (fast shutdown, or immediate for a cluster tuned for restore, whose
    /// data is disposable; SIGKILL after 15 s) and deletes the folder.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.signal(if self.immediate_stop {
                libc::SIGQUIT
            } else {
                libc::SIGINT
            });
            let deadline = Instant::now() + Duration::from_secs(15);
            while !s.has_exited() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if s.has_exited() {
                let _ = s.wait_exit();
            } else {
                s.kill();
            }
        }
        if let Some(d) = self.dir.take() {
            let _ = d.close();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A new data folder. Its arguments are part of the template cache's key (`template::FORMAT`).
fn initdb(bin: &Path, data: &Path, who: &Option<RunAs>) -> Result<()> {
    let mut initdb = crate::process::command(bin.join("initdb"));
    initdb
        .arg("-D")
        .arg(data)
        .args([
            "-U",
            SUPERUSER,
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
        ])
        .args(["-E", "UTF8", "--locale=C", "-N"])
        .env("LC_ALL", "C")
        .env_remove("PGDATA");
    as_user(&mut initdb, who);
    let mut c = ChildProcess::spawn(initdb, "initdb", false)?;
    c.drain_stdout();
    c.wait()
        .map_err(|e| e.context("cannot create a throwaway cluster"))?;
    Ok(())
}

fn as_user(cmd: &mut Command, who: &Option<RunAs>) {
    use std::os::unix::process::CommandExt;
    // If we die without stopping the cluster (SIGKILL, a crash), the kernel stops it for us:
    // nobody else knows about its temporary folder.
    // SAFETY: prctl is async-signal-safe; this runs in the child between fork and exec, after
    // the uid change (which would otherwise clear the setting).
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            Ok(())
        });
    }
    if let Some(w) = who {
        cmd.uid(w.uid).gid(w.gid);
        // The server must not inherit root's home or a cwd it cannot read.
        cmd.current_dir("/");
        cmd.env("HOME", "/");
    }
}
