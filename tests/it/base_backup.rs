//! Base backups, for real: `backup-push` of PostgreSQL 18 and 13 sources into SeaweedFS, the
//! manifest checked against the server's own answers, `backup-fetch` into a new folder and a
//! server started on it that holds the source's data; the refusals (a folder that is not empty,
//! an unknown id, a role without REPLICATION, pg_hba without a replication line) and failures
//! that must leave nothing under `base/` (pg_basebackup killed mid-copy, a wrong password).
//!
//! The sources archive with `archive_command = '/bin/true'`: these tests are about base backups,
//! not the WAL archive.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use offsitedb::cluster::ClusterOptions;
use offsitedb::postgres::{ConnInfo, client};
use offsitedb::storage::ReadStore;

use crate::archiving::{archiving_conf, server_user};
use crate::common::{
    ACCESS_KEY, CheckItem, Cli, HistoryRun, Run, SECRET_KEY, SeaweedFs, Source, assert_interrupted,
    check_item, json, keygen, sigterm_when, tree,
};
use crate::drill::{join_dirs, npm_server, pg15, pypi_18};

/// A source server that could archive (wal_level replica, archive_mode on), a bucket, and a
/// runner whose configuration names source `app`.
struct Fixture {
    weed: SeaweedFs,
    src: Source,
    major: u32,
    dirs: Vec<PathBuf>,
    /// Holds the configuration, the key, and the folders fetched into (traversable by the
    /// server's user, as a data folder's parent must be).
    dir: tempfile::TempDir,
    cli: Cli,
    prefix: String,
}

/// A base backup's manifest as `backup-push --json` prints it: only the fields tests read.
#[derive(Debug, serde::Deserialize)]
struct Pushed {
    backup_id: String,
    timeline: u32,
    start_lsn: String,
    end_lsn: String,
    start_wal: String,
    segment_size: u64,
    server: PushedServer,
    server_manifest: bool,
    sizes: crate::common::Sizes,
    compression: PushedCompression,
    tool: PushedTool,
}

#[derive(Debug, serde::Deserialize)]
struct PushedServer {
    major: u32,
    system_identifier: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
struct PushedCompression {
    algorithm: String,
}

#[derive(Debug, serde::Deserialize)]
struct PushedTool {
    tool: String,
    major: u32,
}

/// `backup-fetch --json`.
#[derive(Debug, serde::Deserialize)]
struct Fetched {
    backup_id: String,
    files: u64,
    owner: Option<String>,
    verify: FetchedVerify,
}

#[derive(Debug, serde::Deserialize)]
struct FetchedVerify {
    program: Option<String>,
    wal: bool,
    note: Option<String>,
}

fn lsn(s: &str) -> u64 {
    let (hi, lo) = s.split_once('/').unwrap();
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

impl Fixture {
    /// A PostgreSQL `major` source from `dirs` (which also hold the client programs), with a
    /// database `app`; `wal = "push"` in its configuration when `push`.
    fn start(major: u32, dirs: Vec<PathBuf>, push: bool) -> Fixture {
        let weed = SeaweedFs::start();
        let src = Source::start_with(ClusterOptions {
            major: Some(major),
            bin_dirs: dirs.clone(),
            extra_conf: archiving_conf(),
            ..Default::default()
        });
        assert_eq!(src.cluster.version().major, major);
        // Two statements: ALTER SYSTEM refuses to run in the implicit transaction of a batch.
        for sql in [
            "ALTER SYSTEM SET archive_command = '/bin/true'",
            "SELECT pg_reload_conf()",
        ] {
            src.cluster.execute("postgres", sql).unwrap();
        }
        src.create_db(
            "app",
            "CREATE TABLE t (id int PRIMARY KEY, v text, big text);
             INSERT INTO t SELECT g, md5(g::text), CASE WHEN g % 100 = 0 THEN repeat(md5(g::text), 400) END
               FROM generate_series(1, 20000) g;",
        );
        let dir = tempfile::Builder::new()
            .prefix("offsitedb-base-")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        keygen(dir.path(), "master.key");
        let prefix = format!("base{}", std::process::id());
        let cli = Cli::new()
            .cwd(dir.path())
            .env(
                "OFFSITEDB_CONFIG",
                dir.path().join("offsitedb.toml").to_str().unwrap(),
            )
            .env("OFFSITEDB_PG_BIN_DIRS", &join_dirs(&dirs));
        let f = Fixture {
            weed,
            src,
            major,
            dirs,
            dir,
            cli,
            prefix,
        };
        f.configure(&f.src.url("app"), push);
        f
    }

    /// Configures source `app` at `url`.
    fn configure(&self, url: &str, push: bool) {
        std::fs::write(
            self.dir.path().join("offsitedb.toml"),
            format!(
                "[repository]\nurl = \"{}\"\naccess_key_id = \"{ACCESS_KEY}\"\n\
                 secret_access_key = \"{SECRET_KEY}\"\nkey_file = \"master.key\"\n\n\
                 [[source]]\nname = \"app\"\nurl = \"{url}\"\n{}",
                self.weed.repo_url(&self.prefix),
                if push { "wal = \"push\"\n" } else { "" }
            ),
        )
        .unwrap();
        std::fs::set_permissions(
            self.dir.path().join("offsitedb.toml"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }

    fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/{db}",
            self.src.cluster.port()
        )
    }

    fn push(&self) -> Pushed {
        json(&self.cli.ok(&["backup-push", "--json"]))
    }

    /// Every key under `base/`, sorted.
    fn base_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .weed
            .store(&self.prefix)
            .list("base/")
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        keys.sort();
        keys
    }

    /// Nothing but `ids`' data, manifest and copy of the server's backup_manifest under `base/`
    /// (of source `app`), and no upload left unfinished.
    fn only(&self, ids: &[&str]) {
        self.only_of("app", ids)
    }

    fn only_of(&self, source: &str, ids: &[&str]) {
        let mut want: Vec<String> = ids
            .iter()
            .flat_map(|id| {
                [
                    format!("base/{source}/{id}/backup_manifest"),
                    format!("base/{source}/{id}/data"),
                    format!("base/{source}/{id}/manifest"),
                ]
            })
            .collect();
        want.sort();
        assert_eq!(self.base_keys(), want);
        let store = self.weed.store(&self.prefix);
        let open = offsitedb::storage::WriteStore::incomplete_uploads(&store, "base/").unwrap();
        assert!(open.is_empty(), "{open:?}");
    }

    /// One text value from the source's database `db`.
    fn text(&self, db: &str, sql: &str) -> String {
        self.src
            .client(db)
            .query_one(sql, &[])
            .unwrap()
            .get::<_, String>(0)
    }

    /// A path for a data folder under the fixture's folder (not created).
    fn data_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// What table `t` holds, in one string.
const DIGEST: &str =
    "SELECT count(*)::text || ' ' || md5(string_agg(t::text, ',' ORDER BY id)) FROM t";

/// A PostgreSQL server started on a fetched data folder (as the server's user when we are root),
/// on a unix socket of its own; stopped when dropped.
pub(crate) struct Restored {
    child: Child,
    sock: tempfile::TempDir,
    port: u16,
}

impl Restored {
    fn start(f: &Fixture, data: &Path) -> Restored {
        Restored::start_on(f.major, &f.dirs, data, &f.dir.path().join("restored.log"))
    }

    /// A server of `major` (from `dirs`) on `data`, its output in `log`.
    pub(crate) fn start_on(major: u32, dirs: &[PathBuf], data: &Path, log_path: &Path) -> Restored {
        let bin = offsitedb::postgres::binaries::server_dir(
            Some(major),
            &offsitedb::postgres::binaries::search_dirs(dirs),
        )
        .unwrap()
        .path;
        let sock = tempfile::Builder::new()
            .prefix("offsitedb-sock-")
            .tempdir_in("/tmp")
            .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new(&bin);
        cmd.arg("-D").arg(data);
        // The copy's postgresql.conf is the source's: its port, sockets and archiving are not
        // this server's.
        for setting in [
            format!("port={port}"),
            "listen_addresses=".to_string(),
            format!("unix_socket_directories={}", sock.path().display()),
            "archive_mode=off".to_string(),
            "logging_collector=off".to_string(),
        ] {
            cmd.arg("-c").arg(setting);
        }
        if let Some((uid, gid)) = server_user() {
            std::os::unix::fs::chown(sock.path(), Some(uid), Some(gid)).unwrap();
            cmd.uid(uid).gid(gid).current_dir("/").env("HOME", "/");
        }
        let log = std::fs::File::create(log_path).unwrap();
        let child = cmd
            .env_remove("PGDATA")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut r = Restored { child, sock, port };
        let deadline = Instant::now() + Duration::from_secs(90);
        while r.connect("postgres").is_err() {
            let log = std::fs::read_to_string(log_path).unwrap();
            assert!(
                r.child.try_wait().unwrap().is_none(),
                "the server on the fetched folder stopped:\n{log}"
            );
            assert!(
                Instant::now() < deadline,
                "the server on the fetched folder did not start:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        r
    }

    pub(crate) fn connect(&self, db: &str) -> offsitedb::Result<client::Client> {
        let mut ci = ConnInfo::default();
        ci.set("host", &self.sock.path().to_string_lossy());
        ci.set("port", &self.port.to_string());
        ci.set("user", "postgres");
        ci.set("dbname", db);
        client::connect(&ci, "the restored server")
    }

    fn text(&self, db: &str, sql: &str) -> String {
        self.connect(db)
            .unwrap()
            .query_one(sql, &[])
            .unwrap()
            .get::<_, String>(0)
    }
}

impl Drop for Restored {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by pid (SIGINT: a fast shutdown).
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The manifest says what the server says: timeline 1, a start before the end, the start's
/// segment, the system identifier, the server's backup_manifest (13 and later), zstd.
fn check_manifest(f: &Fixture, m: &Pushed, tool_major: u32) {
    assert_eq!(m.timeline, 1, "{m:?}");
    assert!(lsn(&m.start_lsn) <= lsn(&m.end_lsn), "{m:?}");
    assert_eq!(m.segment_size, 16 << 20);
    assert_eq!(
        m.start_wal,
        f.text(
            "postgres",
            &format!("SELECT pg_walfile_name('{}')", m.start_lsn)
        ),
        "{m:?}"
    );
    assert_eq!(
        m.server.system_identifier.as_deref(),
        Some(
            f.text(
                "postgres",
                "SELECT system_identifier::text FROM pg_control_system()"
            )
            .as_str()
        )
    );
    assert_eq!(m.server.major, f.major);
    assert!(m.server_manifest, "{m:?}");
    assert_eq!(m.compression.algorithm, "zstd");
    assert_eq!(
        (m.tool.tool.as_str(), m.tool.major),
        ("pg_basebackup", tool_major)
    );
    assert!(m.sizes.plain_bytes > m.sizes.stored_bytes, "{m:?}");
}

/// Owner and mode of a fetched folder: 0700, and the server's user's when we are root.
fn check_owner(dir: &Path) {
    let meta = std::fs::metadata(dir).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o700);
    if let Some((uid, _)) = server_user() {
        assert_eq!(meta.uid(), uid);
        let control = std::fs::metadata(dir.join("global/pg_control")).unwrap();
        assert_eq!(control.uid(), uid);
    }
}

#[test]
fn base_backups_of_18_push_fetch_and_start() {
    let f = Fixture::start(18, vec![npm_server(18), pypi_18()], true);

    // check: everything a base backup and the WAL archive need is there; archive_command does
    // not call wal-push here, which is said.
    let items: Vec<CheckItem> = json(&f.cli.ok(&["check", "--json"]));
    for c in [
        "replication",
        "wal_level",
        "max_wal_senders",
        "tablespaces",
        "pg_basebackup",
    ] {
        assert_eq!(check_item(&items, "app", c).status, "ok", "{c}: {items:#?}");
    }
    let archive = check_item(&items, "app", "archive_mode");
    assert_eq!(archive.status, "warn", "{items:#?}");
    assert!(archive.detail.contains("/bin/true"), "{items:#?}");

    let first = f.push();
    check_manifest(&f, &first, 18);
    f.only(&[&first.backup_id]);

    // More rows, a second base backup: LATEST is the newer one. (Ids sort by the second they
    // start in; two in the same second would sort by their random part.)
    std::thread::sleep(Duration::from_millis(1100));
    f.src
        .cluster
        .execute(
            "app",
            "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(20001, 25000) g",
        )
        .unwrap();
    let second = f.cli.ok(&["backup-push"]);
    let second_id = second.stdout.trim().to_string();
    assert!(
        second.stderr.contains("base backup of PostgreSQL 18"),
        "{}",
        second.stderr
    );
    assert!(second_id > first.backup_id);
    f.only(&[&first.backup_id, &second_id]);
    let history: Vec<HistoryRun> = json(&f.cli.ok(&["history", "--json"]));
    assert!(
        history.iter().any(|h| h.job == "base_backup"
            && h.result == "ok"
            && h.snapshot.as_deref() == Some(second_id.as_str())),
        "{history:#?}"
    );

    let data = f.data_dir("data");
    let r = f
        .cli
        .ok(&["backup-fetch", data.to_str().unwrap(), "LATEST"]);
    assert!(
        r.stderr
            .contains(&format!("fetched base backup app/{second_id} into")),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("verified with pg_verifybackup 18"),
        "{}",
        r.stderr
    );
    check_owner(&data);
    assert!(data.join("backup_manifest").exists());
    assert!(!data.join("recovery.signal").exists());

    // Not over a folder that holds anything: refused, and nothing changes.
    let before = tree(&data);
    let r = f.cli.fails(
        &["backup-fetch", data.to_str().unwrap(), &first.backup_id],
        3,
        "is not empty",
    );
    assert!(r.stderr.contains("hint: "), "{}", r.stderr);
    assert_eq!(tree(&data), before);

    // An unknown id says so, and creates nothing.
    let nowhere = f.data_dir("nowhere");
    f.cli.fails(
        &[
            "backup-fetch",
            nowhere.to_str().unwrap(),
            "20200101T000000Z-aaaaaa",
        ],
        8,
        "no base backup \"20200101T000000Z-aaaaaa\" of source \"app\"",
    );
    assert!(!nowhere.exists());

    // An id prefix names the older one.
    let older = f.data_dir("older");
    let got: Fetched = json(&f.cli.ok(&[
        "backup-fetch",
        older.to_str().unwrap(),
        &first.backup_id[..first.backup_id.len() - 2],
        "--json",
    ]));
    assert_eq!(got.backup_id, first.backup_id);
    assert!(got.files > 100, "{got:?}");
    assert!(got.verify.wal, "{got:?}");
    assert!(
        got.verify
            .program
            .as_deref()
            .is_some_and(|p| p.starts_with("pg_verifybackup 18")),
        "{got:?}"
    );
    if server_user().is_some() {
        assert!(got.owner.is_some_and(|o| o.starts_with("postgres")));
    }

    // A server started on the newest copy holds exactly the source's data.
    let want = f.text("app", DIGEST);
    let restored = Restored::start(&f, &data);
    assert_eq!(restored.text("app", DIGEST), want);
    assert_eq!(
        restored.text(
            "postgres",
            "SELECT system_identifier::text FROM pg_control_system()"
        ),
        first.server.system_identifier.clone().unwrap()
    );
}

#[test]
fn base_backups_of_13_with_newer_client_programs() {
    // Debian's PostgreSQL 15 programs copy and verify a 13 server: pg_verifybackup 15 checks
    // every file, and cannot read 13's WAL, which it says.
    let f = Fixture::start(13, vec![npm_server(13), pg15()[0].clone()], false);
    // From flags and the environment alone, no configuration file: a source by URL and name.
    let cli = Cli::new()
        .cwd(f.dir.path())
        .env("OFFSITEDB_REPO", &f.weed.repo_url(&f.prefix))
        .env(
            "OFFSITEDB_KEY_FILE",
            f.dir.path().join("master.key").to_str().unwrap(),
        )
        .s3()
        .env("OFFSITEDB_PG_BIN_DIRS", &join_dirs(&f.dirs));
    let url = f.src.url("app");
    let r = cli.ok(&["backup-push", "--source", &url, "--name", "adhoc", "--json"]);
    assert!(
        r.stderr.contains("note: the source has no wal = \"push\""),
        "{}",
        r.stderr
    );
    let m: Pushed = json(&r);
    check_manifest(&f, &m, 15);
    f.only_of("adhoc", &[&m.backup_id]);

    let data = f.data_dir("data");
    let got: Fetched = json(&cli.ok(&[
        "backup-fetch",
        "--source",
        "adhoc",
        data.to_str().unwrap(),
        "latest",
        "--json",
    ]));
    assert_eq!(got.backup_id, m.backup_id);
    assert!(!got.verify.wal, "{got:?}");
    assert!(
        got.verify
            .program
            .as_deref()
            .is_some_and(|p| p.starts_with("pg_verifybackup 15")),
        "{got:?}"
    );
    assert!(
        got.verify
            .note
            .as_deref()
            .is_some_and(|n| n.contains("WAL not parsed")),
        "{got:?}"
    );
    check_owner(&data);
    let want = f.text("app", DIGEST);
    let restored = Restored::start(&f, &data);
    assert_eq!(restored.text("app", DIGEST), want);
}

/// The pid of `parent`'s child whose command line holds `arg`, if it has one now.
fn child_with(parent: u32, arg: &str) -> Option<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{parent}/task")).ok()?;
    for t in tasks.flatten() {
        let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        for pid in children.split_whitespace() {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if cmdline.split(|b| *b == 0).any(|a| a == arg.as_bytes()) {
                return pid.parse().ok();
            }
        }
    }
    None
}

#[test]
fn failed_base_backups_leave_nothing_and_say_why() {
    let f = Fixture::start(15, pg15(), true);

    // A role without REPLICATION: refused before anything runs, with the fix; check agrees.
    f.src
        .cluster
        .execute("postgres", "CREATE ROLE norepl LOGIN PASSWORD 'norepl-pw'")
        .unwrap();
    f.configure(&f.url("norepl", "norepl-pw", "postgres"), true);
    let r = f.cli.fails(
        &["backup-push"],
        5,
        "the role norepl lacks the REPLICATION attribute",
    );
    assert!(
        r.stderr
            .contains("hint: as a superuser: ALTER ROLE \"norepl\" REPLICATION"),
        "{}",
        r.stderr
    );
    assert!(f.base_keys().is_empty());
    let c = f.cli.run(&["check", "--json"]);
    assert_eq!(c.code, 5, "{}", c.stderr);
    let items: Vec<CheckItem> = json(&c);
    let failed: Vec<&CheckItem> = items.iter().filter(|i| i.status == "fail").collect();
    assert_eq!(failed.len(), 1, "{items:#?}");
    assert_eq!(failed[0].check, "replication");
    // The fix works: with REPLICATION (and no superuser) the same role takes a base backup.
    f.src
        .cluster
        .execute("postgres", "ALTER ROLE norepl REPLICATION")
        .unwrap();
    assert_eq!(
        check_item(
            &json::<Vec<CheckItem>>(&f.cli.run(&["check", "--json"])),
            "app",
            "replication"
        )
        .status,
        "ok"
    );
    let ok = f.push();
    assert_eq!(ok.tool.major, 15);
    f.only(&[&ok.backup_id]);

    // A wrong password: nothing stored.
    f.configure(&f.url("norepl", "wrong-pw", "postgres"), true);
    f.cli.fails(&["backup-push"], 5, "refused the password");
    f.only(&[&ok.backup_id]);

    // pg_hba.conf without a replication line: pg_basebackup's refusal, named, with the fix.
    f.configure(&f.src.url("postgres"), true);
    let hba = f.src.cluster.data_dir().join("pg_hba.conf");
    let original = std::fs::read_to_string(&hba).unwrap();
    let without: String = original
        .lines()
        .filter(|l| !l.contains("replication"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&hba, without).unwrap();
    f.src
        .cluster
        .execute("postgres", "SELECT pg_reload_conf()")
        .unwrap();
    let r = f.cli.fails(
        &["backup-push"],
        5,
        "does not accept replication connections from this host",
    );
    assert!(
        r.stderr
            .contains("hint: add a line to the server's pg_hba.conf: host replication postgres"),
        "{}",
        r.stderr
    );
    f.only(&[&ok.backup_id]);
    std::fs::write(&hba, original).unwrap();
    f.src
        .cluster
        .execute("postgres", "SELECT pg_reload_conf()")
        .unwrap();

    // pg_basebackup killed while it copies: the upload is aborted, nothing is visible. The
    // table makes the copy long enough to be caught in the act.
    f.src
        .cluster
        .execute(
            "app",
            "CREATE TABLE filler AS SELECT g, repeat(md5(g::text), 8) AS v FROM generate_series(1, 300000) g",
        )
        .unwrap();
    let child = f.cli.spawn(&["backup-push"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let victim = loop {
        // The copy, not the `pg_basebackup --version` that finds it.
        if let Some(pid) = child_with(child.id(), "--pgdata=-") {
            break pid;
        }
        assert!(Instant::now() < deadline, "pg_basebackup never started");
        std::thread::sleep(Duration::from_millis(1));
    };
    // SAFETY: signalling a process we found as our child's child.
    unsafe {
        libc::kill(victim as i32, libc::SIGKILL);
    }
    let out = child.wait_with_output().unwrap();
    let r = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_eq!(r.code, 10, "{}", r.stderr);
    assert!(
        r.error_line()
            .contains("pg_basebackup was killed (signal 9)"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.is_empty());
    f.only(&[&ok.backup_id]);
    let history: Vec<HistoryRun> = json(&f.cli.ok(&["history", "--json"]));
    assert_eq!(history[0].job, "base_backup");
    assert_eq!(history[0].result, "failed", "{history:#?}");

    // Interrupted (SIGTERM, as a service manager stops it) while pg_basebackup copies: the same.
    let child = f.cli.spawn(&["backup-push"]);
    let pid = child.id();
    let out = sigterm_when(child, "pg_basebackup copying", || {
        child_with(pid, "--pgdata=-").is_some()
    });
    assert_interrupted(&out);
    f.only(&[&ok.backup_id]);

    // And the next one works.
    let next = f.push();
    f.only(&[&ok.backup_id, &next.backup_id]);
}
