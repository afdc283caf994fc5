//! `wal-stream`: a source's WAL received over a replication connection and archived as it
//! arrives, through a server restart and a crash, so that `restore --latest` loses at most the
//! last seconds; and the replication slot that keeps WAL while OffsiteDB is stopped.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::archiving::{Pitr, SOURCE};
use crate::common::{DB_PASSWORD, SECRET_KEY};
use crate::pitr::restore_running;

/// A streamed source: `wal = "stream"`, no archive_command, and `wal-stream` running.
pub(crate) struct Streamed {
    pub(crate) p: Pitr,
    pub(crate) logs: tempfile::TempDir,
    stream: Option<Child>,
}

impl Streamed {
    fn start(major: u32, extra: &str) -> Streamed {
        let mut s = Streamed::without_stream(major, extra);
        s.start_stream();
        s
    }

    /// The source and its configuration, nothing streaming yet.
    pub(crate) fn without_stream(major: u32, extra: &str) -> Streamed {
        let p = Pitr::start_with(Some(major), "stream", extra);
        p.sql("CREATE TABLE t (n bigint PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())");
        let logs = tempfile::tempdir().unwrap();
        Streamed {
            p,
            logs,
            stream: None,
        }
    }

    pub(crate) fn start_stream(&mut self) {
        self.stream = Some(self.p.cli.spawn_logged(
            &["wal-stream", "--source", SOURCE, "--json"],
            self.logs.path(),
        ));
    }

    pub(crate) fn err(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("err")).unwrap_or_default()
    }

    pub(crate) fn out(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("out")).unwrap_or_default()
    }

    /// Waits (up to 60 s) until the stream's output holds `needle`.
    pub(crate) fn wait_for(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.out().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "wal-stream never said {needle:?}:\n{}\n{}",
                self.out(),
                self.err()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills `wal-stream` with SIGKILL: what it uploaded is all the archive has.
    pub(crate) fn kill_stream(&mut self) {
        if let Some(mut c) = self.stream.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and waits for it to end (it uploads what it received first).
    pub(crate) fn stop_stream(&mut self) {
        if let Some(mut c) = self.stream.take() {
            // SAFETY: kill has no memory-safety preconditions; the PID is this test's child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let status = c.wait().unwrap();
            assert!(status.success(), "wal-stream ended badly:\n{}", self.err());
        }
    }
}

impl Drop for Streamed {
    fn drop(&mut self) {
        self.kill_stream();
    }
}

/// Inserts one row every 20 ms until stopped, reconnecting through a restart; returns what
/// was committed (an insert whose commit was not confirmed is not counted).
fn writer(url: String, stop: Arc<AtomicBool>, from: i64) -> std::thread::JoinHandle<Vec<i64>> {
    std::thread::spawn(move || {
        let ci = offsitedb::postgres::ConnInfo::parse(&url).unwrap();
        let mut committed = Vec::new();
        let mut client = None;
        let mut n = from;
        while !stop.load(Ordering::SeqCst) {
            if client.is_none() {
                client = offsitedb::postgres::connect(&ci, "the source").ok();
                if client.is_none() {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
            n += 1;
            match client
                .as_mut()
                .unwrap()
                .execute("INSERT INTO t (n) VALUES ($1)", &[&n])
            {
                Ok(_) => committed.push(n),
                Err(_) => client = None,
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        committed
    })
}

/// Writes for 60 s while streaming, restarts the source in the middle, commits rows, kills the
/// source 5 s later (and the stream with it): a restore to the end of the archive has every
/// row committed before those 5 s, and none was lost across the restart.
fn streams_through_a_restart_and_a_crash(major: u32) {
    let mut s = Streamed::start(major, "");
    s.wait_for("\"event\":\"started\"");
    s.p.cli.ok(&["backup-push", "--source", SOURCE]);
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(s.p.url(), stop.clone(), 0);
    std::thread::sleep(Duration::from_secs(30));
    s.p.src.cluster.restart().unwrap();
    std::thread::sleep(Duration::from_secs(30));
    stop.store(true, Ordering::SeqCst);
    let mut committed = w.join().unwrap();
    assert!(
        committed.len() > 1000,
        "the writer committed {}",
        committed.len()
    );

    // The last commits, then 5 s, then a crash: no shutdown, nothing sent after.
    let mut c = s.p.src.client("postgres");
    for n in 1_000_000..1_000_050i64 {
        c.execute("INSERT INTO t (n) VALUES ($1)", &[&n]).unwrap();
        committed.push(n);
    }
    drop(c);
    std::thread::sleep(Duration::from_secs(5));
    s.p.src.cluster.kill();
    s.kill_stream();
    let err = s.err();
    let out = s.out();
    assert!(
        out.contains("\"event\":\"stopped\"") && out.matches("\"event\":\"started\"").count() >= 2,
        "the stream saw the restart and reconnected:\n{out}\n{err}"
    );
    for secret in [SECRET_KEY, DB_PASSWORD] {
        assert!(
            !err.contains(secret) && !s.out().contains(secret),
            "a secret is in wal-stream's output"
        );
    }

    let (restored, _) = restore_running(&s.p, "latest", &["--latest"]);
    let rows: BTreeSet<i64> = restored
        .client()
        .query("SELECT n FROM t", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let lost: Vec<i64> = committed
        .iter()
        .filter(|n| !rows.contains(n))
        .copied()
        .collect();
    assert!(
        lost.is_empty(),
        "{} committed rows are missing after restoring to the end of the archive (first {:?}); server log:\n{}",
        lost.len(),
        &lost[..lost.len().min(10)],
        restored.log()
    );
}

#[test]
fn streams_through_a_restart_and_a_crash_on_18() {
    streams_through_a_restart_and_a_crash(18);
}

#[test]
fn streams_through_a_restart_and_a_crash_on_15() {
    streams_through_a_restart_and_a_crash(15);
}

/// OffsiteDB stopped: the slot keeps the WAL on the server, the stream resumes without a gap,
/// and past `wal_slot_max` it warns (with how to drop the slot) until it caught up.
#[test]
fn the_slot_keeps_the_wal_while_offsitedb_is_stopped() {
    let mut s = Streamed::start(18, "wal_slot_max = \"20MB\"\n");
    s.wait_for("\"event\":\"started\"");
    s.p.cli.ok(&["backup-push", "--source", SOURCE]);
    s.p.sql("INSERT INTO t (n) SELECT generate_series(1, 1000)");
    s.wait_for("\"event\":\"partial\"");
    s.stop_stream();

    // Stopped: 48 MB of WAL in three switched segments and a big insert.
    s.p.sql("INSERT INTO t (n) SELECT generate_series(1001, 300000)");
    for _ in 0..3 {
        s.p.sql("SELECT pg_switch_wal()");
        s.p.sql("INSERT INTO t (n) SELECT generate_series(1, 10) + (SELECT max(n) FROM t)");
    }
    let retained = s.p.scalar(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint
           FROM pg_replication_slots WHERE slot_name = 'offsitedb_app'",
    );
    assert!(retained > 20 << 20, "the slot holds {retained} bytes");
    let last = s.p.scalar("SELECT max(n) FROM t");

    s.start_stream();
    s.wait_for("\"over\":true");
    s.wait_for("\"over\":false");
    let out = s.out();
    assert!(out.contains("slot_retention"), "{out}");
    // Caught up: the row written last is in the archive.
    std::thread::sleep(Duration::from_secs(3));
    s.stop_stream();
    let (restored, _) = restore_running(&s.p, "resumed", &["--latest"]);
    assert_eq!(restored.scalar("SELECT max(n) FROM t"), last);
    assert_eq!(
        restored.scalar("SELECT count(*) FROM t"),
        300_000 + 30,
        "every row, none lost while the stream was stopped"
    );
    s.p.cli.ok(&["wal-verify", "integrity", "--source", SOURCE]);
}

/// Said before streaming: a role without REPLICATION is refused with the fix; `check` says
/// whether a replication connection works.
#[test]
fn check_says_whether_the_source_can_stream() {
    let s = Streamed::start(18, "");
    let r = s.p.cli.ok(&["check", "--source", SOURCE]);
    assert!(
        r.stdout.contains("replication connection"),
        "check reports the replication connection:\n{}",
        r.stdout
    );
}

/// `serve` streams a `wal = "stream"` source with no schedule at all, reports it at /metrics,
/// alerts `slot_retention` when the slot held back too much while it was stopped (and resolves
/// it once caught up), and `wal_stream_failed` when the source is gone.
#[test]
fn serve_streams_and_alerts() {
    let mut s = Streamed::without_stream(18, "wal_slot_max = \"20MB\"\n");
    let listen = {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        format!("127.0.0.1:{port}")
    };
    let metrics = || {
        use std::io::{Read, Write};
        let Ok(mut c) = std::net::TcpStream::connect(&listen) else {
            return String::new();
        };
        c.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut page = String::new();
        let _ = c.read_to_string(&mut page);
        page
    };
    let serve = |s: &Streamed, name: &str| {
        let dir = s.logs.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        (
            s.p.cli
                .spawn_logged(&["serve", "--listen", &listen, "--json"], &dir),
            dir,
        )
    };
    let wait_until = |what: &str, dir: &Path, f: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(90);
        while !f() {
            assert!(
                Instant::now() < deadline,
                "{what} did not happen in 90 s; serve's log:\n{}",
                std::fs::read_to_string(dir.join("out")).unwrap_or_default()
                    + &std::fs::read_to_string(dir.join("err")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    let log = |dir: &Path| {
        std::fs::read_to_string(dir.join("out")).unwrap_or_default()
            + &std::fs::read_to_string(dir.join("err")).unwrap_or_default()
    };
    let stop = |mut c: Child| {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        assert!(c.wait().unwrap().success());
    };

    let (first, dir1) = serve(&s, "first");
    wait_until("streaming", &dir1, &|| {
        metrics().contains("offsitedb_wal_streaming{source=\"app\"} 1")
    });
    s.p.sql("INSERT INTO t (n) SELECT generate_series(1, 1000)");
    wait_until("a lag measured", &dir1, &|| {
        metrics().contains("offsitedb_wal_lag_seconds{source=\"app\"}")
    });
    stop(first);

    // Stopped while the server writes 48 MB: the slot holds it.
    s.p.sql("INSERT INTO t (n) SELECT generate_series(1001, 300000)");
    for _ in 0..3 {
        s.p.sql("SELECT pg_switch_wal()");
    }
    let (second, dir2) = serve(&s, "second");
    wait_until("the slot_retention alert", &dir2, &|| {
        log(&dir2)
            .lines()
            .any(|l| l.contains("slot_retention") && l.contains("firing"))
    });
    wait_until("the slot_retention alert resolved", &dir2, &|| {
        log(&dir2)
            .lines()
            .any(|l| l.contains("slot_retention") && l.contains("resolved"))
    });
    let fired = log(&dir2);
    assert!(
        fired.contains("pg_drop_replication_slot('offsitedb_app')"),
        "the alert says how to drop the slot:\n{fired}"
    );

    // The source is gone: after three failed connections in a row, an alert.
    s.p.src.cluster.kill();
    wait_until("the wal_stream_failed alert", &dir2, &|| {
        log(&dir2)
            .lines()
            .any(|l| l.contains("wal_stream_failed") && l.contains("firing"))
    });
    stop(second);
    let all = log(&dir1) + &log(&dir2);
    for secret in [SECRET_KEY, DB_PASSWORD] {
        assert!(!all.contains(secret), "a secret is in serve's log");
    }
}
