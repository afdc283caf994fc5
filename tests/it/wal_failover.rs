//! `wal-stream` through a failover: the source URL names a primary and its streaming replica
//! (libpq's multi-host form), the primary dies, the replica is promoted (timeline 2), and the
//! stream follows it: the archive has the new timeline's history file and WAL, and a restore
//! to the end of the archive, or to a time after the promotion, has the rows written there.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use offsitedb::postgres::{ConnInfo, client};

use crate::archiving::{SOURCE, give_to_server, server_user};
use crate::common::{DB_PASSWORD, SECRET_KEY};
use crate::pitr::restore_running;
use crate::wal_stream::Streamed;

/// A streaming replica of the fixture's source, made with `pg_basebackup -R`, running as the
/// server's user; stopped (by its PID) when dropped.
struct Replica {
    dir: tempfile::TempDir,
    port: u16,
    server: Option<Child>,
}

impl Replica {
    fn start(s: &Streamed, major: u32) -> Replica {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::Builder::new()
            .prefix("offsitedb-replica-")
            .tempdir_in("/tmp")
            .unwrap();
        let data = dir.path().join("data");
        let sock = dir.path().join("sock");
        std::fs::create_dir(&sock).unwrap();
        give_to_server(dir.path());
        let as_server = |cmd: &mut std::process::Command| {
            cmd.current_dir("/").env("HOME", "/").env("LC_ALL", "C");
            if let Some((uid, gid)) = server_user() {
                cmd.uid(uid).gid(gid);
            }
        };
        // Over the primary's socket (trusted there), with the WAL written meanwhile.
        let src = &s.p.src.cluster;
        let mut bb = std::process::Command::new(crate::drill::pypi_18().join("pg_basebackup"));
        bb.arg("-D")
            .arg(&data)
            .args(["-R", "-X", "stream", "-c", "fast", "-U", "postgres"])
            .arg("-h")
            .arg(src.socket_dir())
            .arg("-p")
            .arg(src.port().to_string());
        as_server(&mut bb);
        let out = bb.output().unwrap();
        assert!(
            out.status.success(),
            "pg_basebackup of the primary failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // After the primary's postgresql.conf (copied along), so these win; primary_conninfo
        // again, plain: the one pg_basebackup 18 wrote names options older servers reject.
        let mut auto = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.auto.conf"))
            .unwrap();
        std::io::Write::write_all(
            &mut auto,
            format!(
                "port = {port}\nunix_socket_directories = '{}'\n\
                 listen_addresses = '127.0.0.1'\nhot_standby = on\n\
                 primary_conninfo = 'host={} port={} user=postgres'\n",
                sock.display(),
                src.socket_dir().display(),
                src.port()
            )
            .as_bytes(),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("postgres.out")).unwrap();
        let mut pg = std::process::Command::new(crate::drill::npm_server(major).join("postgres"));
        pg.arg("-D")
            .arg(&data)
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        as_server(&mut pg);
        // SAFETY: prctl is async-signal-safe; it runs in the child between fork and exec, after
        // the uid change: if the test dies, the kernel stops the replica.
        unsafe {
            pg.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                Ok(())
            });
        }
        let r = Replica {
            server: Some(pg.spawn().unwrap()),
            dir,
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while client::connect(&r.conninfo(), "the replica").is_err() {
            assert!(
                Instant::now() < deadline,
                "the replica did not accept connections in 60 s:\n{}",
                r.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        r
    }

    /// Over its socket, as the superuser (trusted there).
    fn conninfo(&self) -> ConnInfo {
        let mut ci = ConnInfo::default();
        ci.set("host", &self.dir.path().join("sock").to_string_lossy());
        ci.set("port", &self.port.to_string());
        ci.set("user", "postgres");
        ci.set("dbname", "postgres");
        ci
    }

    fn client(&self) -> client::Client {
        client::connect(&self.conninfo(), "the replica").unwrap()
    }

    fn text(&self, sql: &str) -> String {
        self.client().query_one(sql, &[]).unwrap().get(0)
    }

    /// Its postmaster's output and its server log.
    fn log(&self) -> String {
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        read(self.dir.path().join("postgres.out"))
            + &read(self.dir.path().join("data/log/server.log"))
    }

    /// Waits (up to 60 s) until it replayed `lsn`.
    fn wait_replayed(&self, lsn: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let replayed = self.text("SELECT coalesce(pg_last_wal_replay_lsn()::text, '0/0')");
            if parse_lsn(&replayed) >= parse_lsn(lsn) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the replica replayed up to {replayed}, not {lsn}, in 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(mut c) = self.server.take() {
            // SAFETY: kill has no memory-safety preconditions; the PID is this test's child.
            unsafe { libc::kill(c.id() as i32, libc::SIGQUIT) };
            let deadline = Instant::now() + Duration::from_secs(15);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An LSN ("16/B374D848") as a number.
fn parse_lsn(s: &str) -> u64 {
    let (hi, lo) = s.trim().split_once('/').expect("an LSN");
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

/// Rows `from..to`, one commit each, on `c`; returns them.
fn commit_rows(c: &mut client::Client, from: i64, to: i64) -> Vec<i64> {
    for n in from..to {
        c.execute("INSERT INTO t (n) VALUES ($1)", &[&n]).unwrap();
    }
    (from..to).collect()
}

/// The stream's JSON events so far.
fn events(s: &Streamed) -> Vec<serde_json::Value> {
    s.out()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Waits (up to 90 s: a reconnect after a failure waits up to 4 s) until the stream archived
/// WAL of `timeline` up to `lsn`.
fn wait_archived(s: &Streamed, timeline: u32, lsn: &str, r: &Replica) {
    let prefix = format!("{timeline:08X}");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let done = events(s).iter().any(|e| {
            let name = e["name"].as_str().unwrap_or("");
            name.starts_with(&prefix)
                && match e["event"].as_str() {
                    Some("partial") => {
                        parse_lsn(e["archived_lsn"].as_str().unwrap()) >= parse_lsn(lsn)
                    }
                    // A complete segment that holds the LSN.
                    Some("stored") => name.len() == 24 && segment_end(name) >= parse_lsn(lsn),
                    _ => false,
                }
        });
        if done {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the stream did not archive timeline {timeline} up to {lsn} in 90 s:\n{}\n{}\nreplica:\n{}",
            s.out(),
            s.err(),
            r.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Where a segment (16 MB, the default) ends.
fn segment_end(name: &str) -> u64 {
    let hi = u64::from_str_radix(&name[8..16], 16).unwrap();
    let lo = u64::from_str_radix(&name[16..24], 16).unwrap();
    (hi << 32) + ((lo + 1) << 24)
}

fn rows(c: &mut client::Client) -> BTreeSet<i64> {
    c.query("SELECT n FROM t", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn missing(committed: &[i64], have: &BTreeSet<i64>) -> Vec<i64> {
    committed
        .iter()
        .filter(|n| !have.contains(n))
        .copied()
        .collect()
}

/// `promote_late`: the stream reconnects to the replica while it is still a standby (it
/// creates its slot there and streams timeline 1 from it), and the promotion happens under it.
fn follows_a_failover(major: u32, promote_late: bool) {
    let mut s = Streamed::without_stream(major, "");
    let r = Replica::start(&s, major);

    // The stream reaches whichever of the two accepts: the primary while it lives.
    let url = format!(
        "postgres://postgres:{DB_PASSWORD}@127.0.0.1:{},127.0.0.1:{}/postgres",
        s.p.src.cluster.port(),
        r.port
    );
    let config = std::fs::read_to_string(&s.p.config).unwrap();
    let single = format!("url = \"{}\"", s.p.url());
    assert!(config.contains(&single), "{config}");
    std::fs::write(
        &s.p.config,
        config.replace(&single, &format!("url = \"{url}\"")),
    )
    .unwrap();
    // check probes every host of the URL.
    let checked = s.p.cli.run(&["check", "--source", SOURCE]);
    assert!(
        checked.stdout.contains(": one answers")
            && checked.stdout.contains("replication connection works"),
        "check with two hosts:\n{}{}",
        checked.stdout,
        checked.stderr
    );
    s.start_stream();
    s.wait_for("\"event\":\"started\"");
    s.p.cli.ok(&["backup-push", "--source", SOURCE]);

    // Timeline 1: rows committed on the primary, all replayed by the replica, then a crash.
    let mut committed = {
        let mut c = s.p.src.client("postgres");
        let mut rows = commit_rows(&mut c, 1, 301);
        c.batch_execute("INSERT INTO t (n) SELECT generate_series(1000, 20999)")
            .unwrap();
        rows.extend(1000..21000);
        rows.extend(commit_rows(&mut c, 30_000, 30_100));
        rows
    };
    let end_tl1 = s.p.text("SELECT pg_current_wal_lsn()::text");
    r.wait_replayed(&end_tl1);
    s.p.src.cluster.kill();
    if promote_late {
        let deadline = Instant::now() + Duration::from_secs(60);
        while s.out().matches("\"event\":\"started\"").count() < 2 {
            assert!(
                Instant::now() < deadline,
                "the stream did not reconnect to the standby in 60 s:\n{}\n{}",
                s.out(),
                s.err()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // Streaming from the standby for a moment (it uploads every 2 s).
        std::thread::sleep(Duration::from_secs(3));
    }

    // Timeline 2: the replica promoted, rows committed there in two batches a moment apart.
    let promoted: bool = r
        .client()
        .query_one("SELECT pg_promote()", &[])
        .unwrap()
        .get(0);
    assert!(promoted, "the replica was not promoted:\n{}", r.log());
    let mut c = r.client();
    committed.extend(commit_rows(&mut c, 100_000, 100_200));
    std::thread::sleep(Duration::from_millis(300));
    let between: String = c
        .query_one(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
            &[],
        )
        .unwrap()
        .get(0);
    std::thread::sleep(Duration::from_millis(300));
    let later = commit_rows(&mut c, 200_000, 200_100);
    let end_tl2: String = c
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .unwrap()
        .get(0);
    wait_archived(&s, 2, &end_tl2, &r);
    s.stop_stream();

    let out = s.out();
    let err = s.err();
    for secret in [SECRET_KEY, DB_PASSWORD] {
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "a secret is in wal-stream's output"
        );
    }
    // What the stream said through the failover (for the record when this fails).
    let said: Vec<String> = events(&s)
        .iter()
        .filter(|e| e["event"] != "partial")
        .map(|e| e.to_string())
        .collect();
    eprintln!("wal-stream through the failover:\n{}", said.join("\n"));
    assert!(
        out.matches("\"event\":\"slot_created\"").count() >= 2,
        "the slot was created on the primary and again on the promoted replica:\n{out}"
    );

    let show = s.p.cli.ok(&["wal-show", "--source", SOURCE, "--json"]);
    let show: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    let timelines: Vec<i64> = show["timelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["timeline"].as_i64().unwrap())
        .collect();
    assert!(
        timelines.contains(&1) && timelines.contains(&2),
        "the archive has both timelines: {show}"
    );

    // The end of the archive: every row of both timelines.
    let (latest, _) = restore_running(&s.p, "latest", &["--latest"]);
    let lost = missing(&committed, &rows(&mut latest.client()));
    assert!(
        lost.is_empty(),
        "{} committed rows are missing after restoring to the end of the archive (first {:?}); server log:\n{}",
        lost.len(),
        &lost[..lost.len().min(10)],
        latest.log()
    );
    drop(latest);

    // A time on timeline 2: the first batch there, not the second.
    let (at, _) = restore_running(
        &s.p,
        "after-promotion",
        &["--target-time", &between, "--target-action", "promote"],
    );
    let have = rows(&mut at.client());
    let before: Vec<i64> = committed
        .iter()
        .filter(|n| !later.contains(n))
        .copied()
        .collect();
    let lost = missing(&before, &have);
    assert!(
        lost.is_empty(),
        "{} rows committed before {between} are missing (first {:?}); server log:\n{}",
        lost.len(),
        &lost[..lost.len().min(10)],
        at.log()
    );
    assert!(
        later.iter().all(|n| !have.contains(n)),
        "rows committed after {between} were restored; server log:\n{}",
        at.log()
    );
    drop(at);
    s.p.cli.ok(&["wal-verify", "timeline", "--source", SOURCE]);
}

#[test]
fn follows_a_failover_on_18() {
    follows_a_failover(18, false);
}

#[test]
fn follows_a_standby_promoted_under_the_stream_on_18() {
    follows_a_failover(18, true);
}

#[test]
fn follows_a_failover_on_15() {
    follows_a_failover(15, false);
}
