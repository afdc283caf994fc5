//! Point-in-time recovery end to end: a server archiving with `archive_command = 'offsitedb
//! wal-push %p'`, base backups with `backup-push`, and `restore --pgdata` to a time, an LSN, the
//! end of the archive, and across a timeline switch; and the failures that must stop recovery
//! instead of promoting a database that is missing data.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use offsitedb::postgres::{ConnInfo, client};
use serde::Deserialize;

use crate::archiving::{Pitr, SOURCE, give_to_server};
use crate::common::{DB_PASSWORD, SECRET_KEY, json};

#[derive(Debug, Deserialize)]
pub(crate) struct Report {
    pub(crate) backup: String,
    pub(crate) reached: Option<Reached>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Reached {
    pub(crate) state: String,
    pub(crate) replay_lsn: Option<String>,
    socket_dir: Option<PathBuf>,
    port: Option<u16>,
}

/// A restored server left running by `restore --start --keep-running`; stopped when dropped.
pub(crate) struct Restored {
    pgdata: PathBuf,
    socket_dir: PathBuf,
    port: u16,
}

impl Restored {
    pub(crate) fn client(&self) -> client::Client {
        let mut ci = ConnInfo::default();
        ci.set("host", &self.socket_dir.to_string_lossy());
        ci.set("port", &self.port.to_string());
        ci.set("user", "postgres");
        ci.set("dbname", "postgres");
        client::connect(&ci, "the restored server").unwrap()
    }

    pub(crate) fn scalar(&self, sql: &str) -> i64 {
        self.client().query_one(sql, &[]).unwrap().get(0)
    }

    pub(crate) fn text(&self, sql: &str) -> String {
        self.client().query_one(sql, &[]).unwrap().get(0)
    }

    pub(crate) fn log(&self) -> String {
        let name = self
            .pgdata
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        std::fs::read_to_string(self.pgdata.with_file_name(format!("{name}.offsitedb.log")))
            .unwrap_or_default()
    }
}

impl Drop for Restored {
    fn drop(&mut self) {
        stop_server(&self.pgdata);
    }
}

/// Stops the server running on `pgdata` (its PID from postmaster.pid), if one is.
fn stop_server(pgdata: &Path) {
    let Ok(pid) = std::fs::read_to_string(pgdata.join("postmaster.pid")) else {
        return;
    };
    let pid: i32 = pid.lines().next().unwrap().trim().parse().unwrap();
    // SAFETY: kill has no memory-safety preconditions; the server is one this test started.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(30);
    // SAFETY: as above; signal 0 only asks whether the process exists.
    while unsafe { libc::kill(pid, 0) } == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// `restore --pgdata DIR --start --keep-running ARGS --json` as a running server.
pub(crate) fn restore_running(p: &Pitr, dir: &str, args: &[&str]) -> (Restored, Report) {
    let pgdata = p.new_data_dir(dir);
    let mut all = vec![
        "restore",
        "--source",
        SOURCE,
        "--pgdata",
        pgdata.to_str().unwrap(),
        "--start",
        "--keep-running",
        "--json",
    ];
    all.extend_from_slice(args);
    let r = p.cli.run(&all);
    if r.code != 0 {
        stop_server(&pgdata);
        panic!(
            "restore {args:?} failed ({}):\n{}\nserver log:\n{}",
            r.code,
            r.stderr,
            std::fs::read_to_string(pgdata.with_file_name(format!("{dir}.offsitedb.log")))
                .unwrap_or_default()
        );
    }
    // No secret in anything the restore says (the S3 secret and the key are in the files it
    // writes next to the data folder, mode 0600, never on its output).
    let key_line = std::fs::read_to_string(&p.key)
        .unwrap()
        .lines()
        .find(|l| !l.starts_with('#'))
        .unwrap()
        .to_string();
    for secret in [SECRET_KEY, DB_PASSWORD, key_line.as_str()] {
        assert!(
            !r.stdout.contains(secret) && !r.stderr.contains(secret),
            "a secret is in the restore's output"
        );
    }
    let report: Report = json(&r);
    let reached = report
        .reached
        .as_ref()
        .expect("--start reports where it stopped");
    let restored = Restored {
        pgdata,
        socket_dir: reached.socket_dir.clone().unwrap(),
        port: reached.port.unwrap(),
    };
    (restored, report)
}

/// The server's clock, as an RFC 3339 UTC time.
pub(crate) fn server_now(p: &Pitr) -> String {
    p.text(
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )
}

/// Data, a base backup, commits before and after a noted moment, a DROP TABLE, all archived;
/// then restores to the moment, to the LSN of the moment, and to the end of the archive.
fn restore_to_time_lsn_and_latest(major: Option<u32>) {
    let p = Pitr::start(major, "");
    p.sql("CREATE TABLE t (id int PRIMARY KEY, note text); INSERT INTO t SELECT g, 'before the base backup' FROM generate_series(1, 100) g;");
    p.cli.ok(&["backup-push", "--source", SOURCE]);
    p.sql("INSERT INTO t SELECT g, 'after the base backup' FROM generate_series(101, 200) g;");
    // Commits on either side of T are apart by more than the clock's resolution.
    std::thread::sleep(Duration::from_millis(300));
    let t = server_now(&p);
    let lsn = p.text("SELECT pg_current_wal_lsn()::text");
    std::thread::sleep(Duration::from_millis(300));
    p.sql("INSERT INTO t SELECT g, 'after T' FROM generate_series(201, 300) g;");
    p.sql("DROP TABLE t;");
    p.switch_and_archive();

    // Trial restores: promoted, they must not archive a new timeline into the source's archive
    // (the restore to the end would follow it, and miss the DROP TABLE).
    let (at_t, report) = restore_running(
        &p,
        "at-time",
        &[
            "--target-time",
            &t,
            "--target-action",
            "promote",
            "--no-archive",
        ],
    );
    assert_eq!(report.reached.as_ref().unwrap().state, "promoted");
    assert_eq!(
        at_t.text("SELECT current_setting('archive_mode')"),
        "off",
        "--no-archive:\n{}",
        std::fs::read_to_string(at_t.pgdata.join("postgresql.auto.conf")).unwrap()
    );
    assert!(!report.backup.is_empty());
    assert_eq!(at_t.scalar("SELECT count(*) FROM t"), 200, "{}", at_t.log());
    assert_eq!(at_t.scalar("SELECT max(id)::bigint FROM t"), 200);
    drop(at_t);

    let (at_lsn, report) = restore_running(
        &p,
        "at-lsn",
        &[
            "--target-lsn",
            &lsn,
            "--target-action",
            "promote",
            "--no-archive",
        ],
    );
    assert_eq!(
        at_lsn.scalar("SELECT count(*) FROM t"),
        200,
        "{}",
        at_lsn.log()
    );
    let replayed = report.reached.unwrap().replay_lsn.unwrap();
    assert!(!replayed.is_empty());
    drop(at_lsn);

    let (latest, _) = restore_running(&p, "latest", &["--latest", "--no-archive"]);
    assert_eq!(
        latest.text("SELECT coalesce(to_regclass('t')::text, 'dropped')"),
        "dropped",
        "the restore to the end of the archive replays the DROP TABLE:\n{}\n{}",
        latest.log(),
        p.cli.run(&["wal-show", "--source", SOURCE]).stdout
    );
    drop(latest);

    // Targets outside the window are refused before anything is written, naming the window.
    let outside = p.new_data_dir("outside");
    let dir = outside.to_str().unwrap();
    for (target, needle) in [
        (
            "2020-01-01T00:00:00Z",
            "before the window that can be restored",
        ),
        (
            "2999-01-01T00:00:00Z",
            "after the window that can be restored",
        ),
    ] {
        p.cli.fails(
            &[
                "restore",
                "--source",
                SOURCE,
                "--pgdata",
                dir,
                "--target-time",
                target,
            ],
            3,
            needle,
        );
    }
    let r = p.cli.fails(
        &[
            "restore",
            "--source",
            SOURCE,
            "--pgdata",
            dir,
            "--target-time",
            "2026-12-04 10:00:00",
        ],
        3,
        "not a time with a time zone",
    );
    assert!(
        r.stderr.contains("hint: give the time zone"),
        "{}",
        r.stderr
    );
    assert!(!outside.exists(), "nothing is written for a refused target");

    // Nothing secret reached the server's log through the archiver.
    let log = p.server_log();
    assert!(
        log.contains("wal-push"),
        "the archiver's lines are in the log:\n{log}"
    );
    for secret in [SECRET_KEY, DB_PASSWORD] {
        assert!(!log.contains(secret), "a secret is in the server log");
    }
}

#[test]
fn restores_to_a_time_an_lsn_and_the_end_on_18() {
    restore_to_time_lsn_and_latest(Some(18));
}

#[test]
fn restores_to_a_time_an_lsn_and_the_end_on_15() {
    restore_to_time_lsn_and_latest(Some(15));
}

#[test]
fn restores_to_a_time_an_lsn_and_the_end_on_13() {
    restore_to_time_lsn_and_latest(Some(13));
}

/// Restore and promote (timeline 2), keep writing and archiving on timeline 2, then restore to
/// a moment on timeline 2 into a third folder.
#[test]
fn follows_a_timeline_switch() {
    let p = Pitr::start(None, "");
    p.sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 50);");
    p.cli.ok(&["backup-push", "--source", SOURCE]);
    p.sql("INSERT INTO t SELECT generate_series(51, 100);");
    std::thread::sleep(Duration::from_millis(300));
    let t1 = server_now(&p);
    std::thread::sleep(Duration::from_millis(300));
    p.sql("INSERT INTO t SELECT generate_series(101, 150);");
    p.switch_and_archive();

    // The restored server keeps the source's archive_command: promoted, it archives timeline 2
    // into the same archive, as a real recovery does.
    let (tl2, _) = restore_running(
        &p,
        "timeline2",
        &["--target-time", &t1, "--target-action", "promote"],
    );
    assert_eq!(tl2.scalar("SELECT count(*) FROM t"), 100);
    let tli: i64 = tl2.scalar("SELECT timeline_id::bigint FROM pg_control_checkpoint()");
    assert!(tli >= 2, "promotion starts a new timeline");
    tl2.client()
        .batch_execute("INSERT INTO t SELECT generate_series(1001, 1050); CHECKPOINT;")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t2 = tl2.text(
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    );
    std::thread::sleep(Duration::from_millis(300));
    tl2.client()
        .batch_execute("INSERT INTO t SELECT generate_series(2001, 2050);")
        .unwrap();
    let closed = tl2.text("SELECT pg_walfile_name(pg_switch_wal())");
    let deadline = Instant::now() + Duration::from_secs(60);
    while tl2.text("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") < closed {
        assert!(
            Instant::now() < deadline,
            "timeline 2 was not archived:\n{}",
            tl2.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(tl2);

    let (third, _) = restore_running(
        &p,
        "third",
        &["--target-time", &t2, "--target-action", "promote"],
    );
    assert_eq!(
        third.scalar("SELECT count(*) FROM t"),
        150,
        "{}",
        third.log()
    );
    assert_eq!(third.scalar("SELECT count(*) FROM t WHERE id > 1000"), 50);
    drop(third);

    let show = p.cli.ok(&["wal-show", "--source", SOURCE, "--json"]);
    let show: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    let timelines: Vec<i64> = show["timelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["timeline"].as_i64().unwrap())
        .collect();
    assert!(
        timelines.contains(&1) && timelines.iter().any(|&t| t >= 2),
        "wal-show lists both timelines: {show}"
    );

    // The real archive verifies, across the switch; a deleted segment is named.
    p.cli
        .ok(&["wal-verify", "integrity", "--source", SOURCE, "--read-data"]);
    p.cli.ok(&["wal-verify", "timeline", "--source", SOURCE]);
    let gone = offsitedb::wal::list(&p.store(), SOURCE)
        .unwrap()
        .into_iter()
        .filter(|a| a.name.is_segment() && a.name.timeline == 1)
        .nth(1)
        .expect("timeline 1 has segments after the base backup's first");
    offsitedb::storage::WriteStore::delete(&p.store(), &gone.key).unwrap();
    p.cli.fails(
        &["wal-verify", "integrity", "--source", SOURCE],
        7,
        &gone.name.to_string(),
    );
}

/// A server started by the test on a restored data folder, as a service manager would: its
/// own environment only, a private socket.
struct TestServer {
    child: std::process::Child,
    sock: PathBuf,
    port: u16,
    log: PathBuf,
}

enum Outcome {
    /// It stopped; with its log.
    Exited(std::process::ExitStatus, String),
    /// It finished recovery and accepts connections.
    Promoted,
}

impl TestServer {
    fn start(p: &Pitr, pgdata: &Path, env: &[(&str, &str)]) -> TestServer {
        use std::os::unix::process::CommandExt;
        let major = std::fs::read_to_string(pgdata.join("PG_VERSION")).unwrap();
        let program = offsitedb::postgres::binaries::server_dir(
            Some(major.trim().parse().unwrap()),
            &offsitedb::postgres::binaries::search_dirs(&p.bin_dirs),
        )
        .unwrap();
        let name = pgdata.file_name().unwrap().to_string_lossy().into_owned();
        let sock = p.new_data_dir(&format!("sock-{name}"));
        std::fs::create_dir_all(&sock).unwrap();
        give_to_server(&sock);
        let hba = sock.join("hba.conf");
        std::fs::write(&hba, "local all all trust\n").unwrap();
        give_to_server(&hba);
        let log = sock.join("server.log");
        let out = std::fs::File::create(&log).unwrap();
        let port = 20000 + (std::process::id() % 20000) as u16;
        let mut cmd = std::process::Command::new(&program.path);
        cmd.env_clear()
            .envs(env.iter().copied())
            .arg("-D")
            .arg(pgdata)
            .args([
                "-c",
                "listen_addresses=",
                "-c",
                "logging_collector=off",
                "-c",
                "archive_mode=off",
            ])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", sock.display()))
            .arg("-c")
            .arg(format!("hba_file={}", hba.display()))
            .arg("-c")
            .arg(format!("port={port}"))
            .current_dir(pgdata)
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        if let Some((uid, gid)) = crate::archiving::server_user() {
            cmd.uid(uid).gid(gid);
        }
        TestServer {
            child: cmd.spawn().unwrap(),
            sock,
            port,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (up to 120 s) until it stops or finishes recovery.
    fn wait(&mut self) -> Outcome {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Outcome::Exited(status, self.log());
            }
            let text = self.log();
            if text.contains("database system is ready to accept connections")
                && (text.contains("archive recovery complete")
                    || text.contains("selected new timeline"))
            {
                return Outcome::Promoted;
            }
            assert!(
                Instant::now() < deadline,
                "the server neither stopped nor promoted in 120 s:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for it to stop with an error (it must not promote); returns its log.
    fn must_stop(&mut self) -> String {
        match self.wait() {
            Outcome::Exited(status, log) => {
                assert!(!status.success(), "the server stopped cleanly:\n{log}");
                log
            }
            Outcome::Promoted => panic!(
                "the server promoted although recovery had to stop:\n{}",
                self.log()
            ),
        }
    }

    fn scalar(&self, sql: &str) -> i64 {
        let mut ci = ConnInfo::default();
        ci.set("host", &self.sock.to_string_lossy());
        ci.set("port", &self.port.to_string());
        ci.set("user", "postgres");
        ci.set("dbname", "postgres");
        client::connect(&ci, "the test server")
            .unwrap()
            .query_one(sql, &[])
            .unwrap()
            .get(0)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; the PID is this test's child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The store down, or a damaged segment: wal-fetch exits above 125 and recovery stops with an
/// error instead of promoting at what looks like the end of the WAL.
#[test]
fn recovery_stops_when_the_store_is_down_or_a_segment_is_damaged() {
    let mut p = Pitr::start(None, "");
    p.sql("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 10);");
    p.cli.ok(&["backup-push", "--source", SOURCE]);
    p.sql("INSERT INTO t SELECT generate_series(11, 20);");
    let needed = p.switch_and_archive();
    p.sql("INSERT INTO t SELECT generate_series(21, 30);");
    p.switch_and_archive();

    // A damaged segment after the base backup: authentication fails, recovery stops there.
    let damaged = p.new_data_dir("damaged");
    p.cli.ok(&[
        "restore",
        "--source",
        SOURCE,
        "--pgdata",
        damaged.to_str().unwrap(),
        "--latest",
    ]);
    let store = p.store();
    let key = offsitedb::wal::object::key(
        SOURCE,
        &offsitedb::wal::name::WalName::parse(&needed).unwrap(),
    );
    let mut bytes = offsitedb::storage::ReadStore::get_bytes(&store, &key).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    offsitedb::storage::WriteStore::put(&store, &key, &bytes).unwrap();
    let log = TestServer::start(&p, &damaged, &[]).must_stop();
    assert!(
        log.contains(&needed),
        "recovery stopped at the damaged segment:\n{log}"
    );
    assert!(log.contains("200"), "wal-fetch exited 200 (fatal):\n{log}");
    assert!(!log.contains(SECRET_KEY), "a secret is in the server log");

    // The store down: the first file recovery asks for cannot be fetched; it stops.
    let down = p.new_data_dir("store-down");
    p.cli.ok(&[
        "restore",
        "--source",
        SOURCE,
        "--pgdata",
        down.to_str().unwrap(),
        "--latest",
    ]);
    p.weed.kill();
    let log = TestServer::start(&p, &down, &[]).must_stop();
    assert!(log.contains("200"), "wal-fetch exited 200 (fatal):\n{log}");
    assert!(!log.contains(SECRET_KEY), "a secret is in the server log");
}

/// A segment missing with WAL after it (lost, or withheld by the store) is a gap, not the end of
/// the archive: wal-fetch names it and exits 200, and recovery stops instead of promoting there
/// without everything after it.
#[test]
fn a_missing_segment_in_the_middle_stops_recovery() {
    let p = Pitr::start(None, "");
    p.sql("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 10);");
    p.cli.ok(&["backup-push", "--source", SOURCE]);
    p.sql("INSERT INTO t SELECT generate_series(11, 20);");
    let gone = p.switch_and_archive();
    p.sql("INSERT INTO t SELECT generate_series(21, 30);");
    let after = p.switch_and_archive();

    let pgdata = p.new_data_dir("gap");
    p.cli.ok(&[
        "restore",
        "--source",
        SOURCE,
        "--pgdata",
        pgdata.to_str().unwrap(),
        "--latest",
    ]);
    let store = p.store();
    offsitedb::storage::WriteStore::delete(
        &store,
        &offsitedb::wal::object::key(
            SOURCE,
            &offsitedb::wal::name::WalName::parse(&gone).unwrap(),
        ),
    )
    .unwrap();
    let dest = p.new_data_dir("gap-fetch");
    std::fs::create_dir_all(&dest).unwrap();
    let r = p.cli.fails(
        &[
            "wal-fetch",
            "--source",
            SOURCE,
            &gone,
            dest.join("RECOVERYXLOG").to_str().unwrap(),
        ],
        200,
        "a gap in the WAL",
    );
    assert!(
        r.stderr.contains(&gone) && r.stderr.contains(&after),
        "{}",
        r.stderr
    );

    let log = TestServer::start(&p, &pgdata, &[]).must_stop();
    assert!(
        log.contains(&format!("error: wal-fetch {gone}: ")) && log.contains("a gap in the WAL"),
        "recovery stopped at the missing segment, naming it:\n{log}"
    );
}

/// stolon's recipe: `backup-fetch %d LATEST`, then a restore_command of `offsitedb wal-fetch
/// "%f" "%p"` that finds its configuration through OFFSITEDB_CONFIG in the server's environment.
#[test]
fn stolon_style_backup_fetch_then_wal_fetch_recovers() {
    let p = Pitr::start(None, "");
    p.sql("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 10);");
    p.cli.ok(&["backup-push", "--source", SOURCE]);
    // Rows only the archived WAL after the base backup holds.
    p.sql("INSERT INTO t SELECT generate_series(11, 25);");
    p.switch_and_archive();

    let dir = p.new_data_dir("stolon");
    p.cli.ok(&[
        "backup-fetch",
        "--source",
        SOURCE,
        dir.to_str().unwrap(),
        "LATEST",
    ]);
    std::fs::write(dir.join("recovery.signal"), "").unwrap();
    let mut auto = std::fs::read_to_string(dir.join("postgresql.auto.conf")).unwrap();
    auto.push_str(&format!(
        "\nrestore_command = '{} wal-fetch \"%f\" \"%p\"'\n",
        env!("CARGO_BIN_EXE_offsitedb")
    ));
    std::fs::write(dir.join("postgresql.auto.conf"), auto).unwrap();
    give_to_server(&dir);
    let config = p.config.to_str().unwrap().to_string();
    let mut server = TestServer::start(&p, &dir, &[("OFFSITEDB_CONFIG", &config)]);
    match server.wait() {
        Outcome::Promoted => {}
        Outcome::Exited(_, log) => panic!("recovery failed:\n{log}"),
    }
    assert_eq!(
        server.scalar("SELECT count(*) FROM t"),
        25,
        "{}",
        server.log()
    );
    assert!(
        server.log().contains("restored log file"),
        "wal-fetch served the WAL:\n{}",
        server.log()
    );
}

/// `serve` takes base backups on the source's `base_schedule` (a source with no dump schedule
/// at all), records them in the history and shows them in /metrics.
#[test]
fn serve_takes_base_backups_on_base_schedule() {
    let p = Pitr::start(None, "base_schedule = \"every 2s\"");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut serve = p.cli.spawn(&["serve", "--listen", &listen]);
    let deadline = Instant::now() + Duration::from_secs(90);
    let listed = loop {
        let r = p.cli.run(&["backup-list", "--source", SOURCE, "--json"]);
        let list: Vec<serde_json::Value> = serde_json::from_str(&r.stdout).unwrap_or_default();
        if list.len() >= 2 {
            break list;
        }
        if Instant::now() > deadline || serve.try_wait().unwrap().is_some() {
            let _ = serve.kill();
            let out = serve.wait_with_output().unwrap();
            panic!(
                "serve took no two base backups in 90 s:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(listed.iter().all(|b| b["timeline"] == 1), "{listed:?}");
    // Each good base backup is drilled (drill --pitr), recorded in the history.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let h = p.cli.ok(&["history", "--source", SOURCE, "--json"]).stdout;
        let runs: Vec<serde_json::Value> = serde_json::from_str(&h).unwrap();
        if runs
            .iter()
            .any(|r| r["job"] == "pitr_drill" && r["result"] == "ok")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "serve ran no passing PITR drill after its base backups: {h}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The archive's lag is measured off the scheduler's thread, a few seconds after the first
    // base backup archived WAL.
    let deadline = Instant::now() + Duration::from_secs(60);
    let metrics = loop {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&listen).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut page = String::new();
        s.read_to_string(&mut page).unwrap();
        if page.contains("offsitedb_wal_lag_seconds{source=\"app\"}") || Instant::now() > deadline {
            break page;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    // The dashboard's overview lists the source (it has no dump) with its WAL archive's time.
    let get = |path: &str| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&listen).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut page = String::new();
        s.read_to_string(&mut page).unwrap();
        page.split_once("\r\n\r\n").unwrap().1.to_string()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let app = loop {
        let v: serde_json::Value = serde_json::from_str(&get("/api/v1/sources")).unwrap();
        let app = v["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == SOURCE)
            .cloned();
        if let Some(a) = app.filter(|a| !a["wal_archived_to"].is_null()) {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "no WAL time on the dashboard: {v}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let reasons = app["health"]["reasons"].to_string();
    assert!(reasons.contains("WAL archived up to"), "{reasons}");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(serve.id() as i32, libc::SIGTERM) };
    let out = serve.wait_with_output().unwrap();
    assert!(
        metrics.contains("offsitedb_base_backup_last_success_timestamp_seconds{source=\"app\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("offsitedb_last_pitr_drill_success{source=\"app\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("offsitedb_wal_lag_seconds{source=\"app\"}"),
        "a push source's archive lag is measured: {metrics}"
    );
    let history = p.cli.ok(&["history", "--source", SOURCE, "--json"]).stdout;
    assert!(history.contains("base_backup"), "{history}");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("base backup done"), "{log}");
}
