//! `offsitedb serve` for real: schedules on two sources, history, metrics and the repository in
//! agreement, alerts (webhook, Slack-style, email through a real SMTP server, heartbeats) once per
//! change, the dead man's switch, and shutdown in the middle of an upload.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Cli, HistoryRun, Repo, Source, project_dir, venv_tool};

/// A local HTTP server that records every request (path and body) and answers 200.
pub struct Receiver {
    pub port: u16,
    hits: Arc<Mutex<Vec<(String, String)>>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let h = hits.clone();
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let h = h.clone();
                std::thread::spawn(move || {
                    let mut r = BufReader::new(&conn);
                    let mut first = String::new();
                    if r.read_line(&mut first).is_err() {
                        return;
                    }
                    let mut len = 0usize;
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; len];
                    let _ = r.read_exact(&mut body);
                    let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
                    h.lock()
                        .unwrap()
                        .push((path, String::from_utf8_lossy(&body).into_owned()));
                    let _ = (&conn).write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    );
                });
            }
        });
        Receiver { port, hits }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// JSON alerts received on `path`, and their (event, status) pairs in order.
    pub fn alerts(&self, path: &str) -> (Vec<Alert>, Vec<(String, String)>) {
        let all: Vec<Alert> = self
            .bodies(path)
            .iter()
            .map(|b| serde_json::from_str(b).unwrap_or_else(|e| panic!("{e}: {b}")))
            .collect();
        let seen = all
            .iter()
            .map(|a| (a.event.clone(), a.status.clone()))
            .collect();
        (all, seen)
    }

    /// Bodies received on `path`.
    pub fn bodies(&self, path: &str) -> Vec<String> {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, b)| b.clone())
            .collect()
    }
}

/// A webhook alert as it is posted (README: "Alerts").
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Alert {
    pub event: String,
    /// "firing" or "resolved".
    pub status: String,
    pub source: String,
    pub message: String,
    pub last_success: Option<String>,
}

/// A real SMTP server (aiosmtpd), see tests/fixtures/smtp_server.py.
pub struct Smtp {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub ca: Option<PathBuf>,
}

impl Smtp {
    pub fn start(user: Option<(&str, &str)>, tls: bool) -> Smtp {
        let dir = tempfile::tempdir().unwrap();
        let python = venv_tool("python");
        assert!(
            Command::new(&python)
                .args(["-c", "import aiosmtpd"])
                .status()
                .is_ok_and(|s| s.success()),
            "aiosmtpd is missing from .venv: run scripts/test.sh (it installs it)"
        );
        let mut cmd = Command::new(python);
        cmd.arg(project_dir().join("tests/fixtures/smtp_server.py"))
            .arg("--dir")
            .arg(dir.path());
        if let Some((u, p)) = user {
            cmd.args(["--user", u, "--password", p]);
        }
        if tls {
            cmd.arg("--tls-dir").arg(dir.path());
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .expect("the SMTP server prints its port");
        let ca = tls.then(|| dir.path().join("ca.pem"));
        Smtp {
            child,
            port,
            dir,
            ca,
        }
    }

    /// Messages received so far.
    pub fn messages(&self) -> Vec<String> {
        let mut v: Vec<(u32, String)> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let n = name.strip_suffix(".eml")?.parse().ok()?;
                Some((n, std::fs::read_to_string(e.path()).unwrap()))
            })
            .collect();
        v.sort();
        v.into_iter().map(|(_, m)| m).collect()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `offsitedb serve`, logging to a file.
struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    fn start(cli: &Cli, dir: &Path, extra: &[&str]) -> Daemon {
        let log = dir.join(format!(
            "serve-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let child = cli
            .command(crate::common::offsitedb_bin())
            .arg("serve")
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon {
            child: Some(child),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, and the exit code; it must come within `limit`.
    fn stop(&mut self, limit: Duration) -> i32 {
        let mut c = self.child.take().unwrap();
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let t = Instant::now();
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            if t.elapsed() > limit {
                let _ = c.kill();
                panic!("serve did not stop within {limit:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `promtool check metrics` (Debian's prometheus package, installed by scripts/test.sh) finds
/// nothing wrong with a /metrics page: Prometheus naming, types, help text.
fn promtool_accepts(page: &str) {
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is missing: run scripts/test.sh (apt-get install prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics:\n{}{}\n{page}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = out.split_once("\r\n\r\n").unwrap().1.to_string();
    (code, body)
}

/// `name{source="s"} value` from a metrics page.
fn metric(page: &str, name: &str, source: &str) -> Option<f64> {
    let prefix = format!("{name}{{source=\"{source}\"}} ");
    page.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.parse().unwrap())
}

fn history(s: &Repo) -> Vec<HistoryRun> {
    s.history(&["--limit", "1000"])
}

fn count(h: &[HistoryRun], source: &str, job: &str, result: &str) -> usize {
    h.iter()
        .filter(|r| r.source == source && r.job == job && r.result == result)
        .count()
}

/// Waits until `f` holds, or fails with the daemon's log.
fn wait_for(d: &Daemon, limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < limit,
            "timed out waiting for {what}:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `repo` with an `offsitedb.toml` that keeps the state file next to it, then `body`.
fn setup(repo: Repo, body: &str) -> Repo {
    repo.with_config(&format!("[state]\npath = \"state.db\"\n\n{body}"))
}

#[test]
fn serve_runs_two_sources_and_history_metrics_and_repository_agree() {
    let src = Source::start();
    src.create_db(
        "a",
        "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g",
    );
    src.create_db(
        "b",
        "CREATE TABLE u AS SELECT g AS id, md5(g::text) FROM generate_series(1, 500) g",
    );
    let port = free_port();
    let hb = Receiver::start();
    let s = setup(
        Repo::s3("serve"),
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\n\
             [[source]]\nname = \"a\"\nurl = \"{}\"\nschedule = \"every 2s\"\nstale_after = \"1m\"\n\
             heartbeat = [\"{}\"]\n\
             keep = {{ last = 2 }}\n\n\
             [[source]]\nname = \"b\"\nurl = \"{}\"\nschedule = \"*/3 * * * * *\"\ndrill = false\nstale_after = \"1m\"\n\
             keep = {{ last = 2 }}\n",
            src.url("a"),
            hb.url("/hb-a"),
            src.url("b")
        ),
    );
    let mut d = Daemon::start(&s.cli, s.dir.path(), &["--log-format", "json"]);
    wait_for(&d, Duration::from_secs(120), "3 jobs per source", || {
        let h = history(&s);
        count(&h, "a", "prune", "ok") >= 3 && count(&h, "b", "prune", "ok") >= 3
    });
    assert_eq!(get(port, "/healthz"), (200, "ok\n".to_string()));
    assert_eq!(get(port, "/nothing").0, 404);
    // Metrics as of the last finished job: read between two identical histories.
    let (page, h) = loop {
        let before = history(&s);
        let page = get(port, "/metrics").1;
        let after = history(&s);
        if before == after && after.iter().all(|r| r.result != "running") {
            break (page, after);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(d.stop(Duration::from_secs(30)), 0, "{}", d.log());
    promtool_accepts(&page);

    for source in ["a", "b"] {
        let ids = s.ids(Some(source));
        assert_eq!(ids.len(), 2, "{source}: keep last 2");
        // The repository holds exactly the two newest successful backups of the history.
        let mut backed: Vec<String> = h
            .iter()
            .filter(|r| r.source == source && r.job == "backup" && r.result == "ok")
            .map(|r| r.snapshot.clone().unwrap())
            .collect();
        backed.reverse();
        assert_eq!(ids, backed[backed.len() - 2..], "{source}");
        assert_eq!(
            metric(&page, "offsitedb_snapshots", source),
            Some(2.0),
            "{page}"
        );
        assert!(metric(&page, "offsitedb_snapshot_bytes", source).unwrap() > 0.0);
        assert_eq!(
            metric(&page, "offsitedb_last_attempt_success", source),
            Some(1.0)
        );
        let jobs = format!("offsitedb_jobs_total{{source=\"{source}\",result=\"succeeded\"}} ");
        assert_eq!(
            page.lines()
                .find_map(|l| l.strip_prefix(&jobs))
                .map(|v| v.parse::<f64>().unwrap()),
            Some(count(&h, source, "prune", "ok") as f64),
            "{page}"
        );
        let newest = h
            .iter()
            .find(|r| r.source == source && r.job == "backup" && r.result == "ok")
            .unwrap();
        let finished: jiff::Timestamp = newest.finished.as_deref().unwrap().parse().unwrap();
        let m = metric(&page, "offsitedb_last_success_timestamp_seconds", source).unwrap();
        assert!(
            (m - finished.as_millisecond() as f64 / 1000.0).abs() < 0.002,
            "{m} vs {finished}"
        );
        assert_eq!(metric(&page, "offsitedb_stale", source), Some(0.0));
    }
    // Source a's own heartbeat hears a's jobs only (b's would double the count).
    let a_jobs = count(&h, "a", "backup", "ok");
    let pinged = hb.bodies("/hb-a").len();
    assert!(
        pinged >= a_jobs && pinged <= a_jobs + 1,
        "{pinged} pings, {a_jobs} jobs of a"
    );
    // Source a drills, b does not.
    assert!(metric(&page, "offsitedb_tested_restore_seconds", "a").unwrap() > 0.0);
    assert_eq!(metric(&page, "offsitedb_tested_restore_seconds", "b"), None);
    assert!(count(&h, "a", "drill", "ok") >= 3);
    assert_eq!(count(&h, "b", "drill", "ok"), 0);
    // Logs are JSON lines, and no password is in them.
    let log = d.log();
    assert!(
        log.lines()
            .all(|l| serde_json::from_str::<Value>(l).is_ok()),
        "{log}"
    );
    assert!(!log.contains(crate::common::DB_PASSWORD), "{log}");
    assert!(log.contains("backup done"), "{log}");

    // A restart picks the schedules up again.
    let before = count(&history(&s), "a", "backup", "ok");
    let mut d = Daemon::start(&s.cli, s.dir.path(), &[]);
    wait_for(
        &d,
        Duration::from_secs(60),
        "a backup after the restart",
        || count(&history(&s), "a", "backup", "ok") > before,
    );
    assert_eq!(d.stop(Duration::from_secs(30)), 0);
}

/// The source's backup role loses its login, then gets it back: exactly one alert per channel
/// when backups start failing, one when they stop being recent, and one for each recovery.
#[test]
fn alerts_fire_once_per_change_and_the_dead_mans_switch_names_the_last_success() {
    let src = Source::start();
    src.create_db(
        "app",
        "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 100) g",
    );
    src.cluster
        .execute(
            "postgres",
            "CREATE ROLE bk LOGIN SUPERUSER PASSWORD 'bk-secret-pw'",
        )
        .unwrap();
    let url = format!(
        "postgres://bk:bk-secret-pw@127.0.0.1:{}/app",
        src.cluster.port()
    );
    let hooks = Receiver::start();
    let smtp = Smtp::start(Some(("alerts", "mail-secret")), true);
    let s = setup(
        Repo::s3("alerts").env("SMTP_PASSWORD", "mail-secret"),
        &format!(
            "[server]\nlisten = \"127.0.0.1:{}\"\n\n\
             [alerts]\nwebhook = [\"{}\"]\nslack = [\"{}\"]\nheartbeat = [\"{}\"]\n\
             email = {{ smtp = \"smtp://alerts:${{SMTP_PASSWORD}}@127.0.0.1:{}?ca={}\", from = \"backups@example.com\", to = [\"ops@example.com\"] }}\n\n\
             [[source]]\nname = \"app\"\nurl = \"{url}\"\nschedule = \"every 1s\"\ndrill = false\nstale_after = \"4s\"\n",
            free_port(),
            hooks.url("/hook"),
            hooks.url("/slack"),
            hooks.url("/hb"),
            smtp.port,
            smtp.ca.as_ref().unwrap().display()
        ),
    );
    let mut d = Daemon::start(&s.cli, s.dir.path(), &[]);
    wait_for(&d, Duration::from_secs(60), "a successful backup", || {
        count(&history(&s), "app", "backup", "ok") >= 1
    });
    src.cluster
        .execute("postgres", "ALTER ROLE bk NOLOGIN")
        .unwrap();
    wait_for(&d, Duration::from_secs(60), "the dead man's switch", || {
        hooks
            .bodies("/hook")
            .iter()
            .any(|b| b.contains("no_recent_backup"))
    });
    let failed = count(&history(&s), "app", "backup", "failed");
    assert!(failed >= 2, "several failing jobs, one alert");
    src.cluster
        .execute("postgres", "ALTER ROLE bk LOGIN")
        .unwrap();
    wait_for(&d, Duration::from_secs(60), "the recovery alerts", || {
        hooks.bodies("/hook").len() >= 4 && smtp.messages().len() >= 4
    });
    // A few more successful jobs: nothing more is sent.
    let ok = count(&history(&s), "app", "backup", "ok");
    wait_for(&d, Duration::from_secs(60), "more jobs", || {
        count(&history(&s), "app", "backup", "ok") >= ok + 2
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(d.stop(Duration::from_secs(30)), 0);

    let (hook, seen) = hooks.alerts("/hook");
    let mut by: BTreeMap<(String, String), usize> = BTreeMap::new();
    for k in &seen {
        *by.entry(k.clone()).or_default() += 1;
    }
    let expect: BTreeMap<(String, String), usize> = [
        (("backup_failed", "firing"), 1),
        (("backup_failed", "resolved"), 1),
        (("no_recent_backup", "firing"), 1),
        (("no_recent_backup", "resolved"), 1),
    ]
    .into_iter()
    .map(|((e, s), n)| ((e.to_string(), s.to_string()), n))
    .collect();
    assert_eq!(by, expect, "{seen:?}");
    assert_eq!(seen[0], ("backup_failed".into(), "firing".into()));
    let failing = &hook[0];
    assert_eq!(failing.source, "app");
    assert!(failing.message.contains("bk"), "{failing:#?}");
    let stale = hook.iter().find(|a| a.event == "no_recent_backup").unwrap();
    let last_ok = stale
        .last_success
        .as_deref()
        .expect("the last success time");
    assert!(stale.message.contains(last_ok), "{stale:#?}");

    // Slack and email got the same four, as text.
    let slack = hooks.bodies("/slack");
    assert_eq!(slack.len(), 4, "{slack:?}");
    assert!(slack[0].contains("backup failed for app"), "{}", slack[0]);
    let mail = smtp.messages();
    assert_eq!(mail.len(), 4, "{mail:?}");
    assert!(
        mail[0].contains("Subject: [OffsiteDB] backup failed for app"),
        "{}",
        mail[0]
    );
    assert!(
        mail.iter()
            .any(|m| m.contains("Subject: [OffsiteDB] resolved: no recent backup for app"))
    );
    // Heartbeats on every job: /start each time, the bare URL on success, /fail on failure.
    let h = history(&s);
    let jobs = count(&h, "app", "backup", "ok") + count(&h, "app", "backup", "failed");
    let starts = hooks.bodies("/hb/start").len();
    assert!(
        starts >= jobs - 1 && starts <= jobs + 1,
        "{starts} starts, {jobs} jobs"
    );
    assert!(hooks.bodies("/hb/fail").len() >= 2);
    assert!(hooks.bodies("/hb").len() >= 3);
    // No secret in anything that left the machine or the log.
    let everything = format!(
        "{:?}{:?}{:?}{}",
        hooks.bodies("/hook"),
        slack,
        mail,
        d.log()
    );
    for secret in ["bk-secret-pw", "mail-secret"] {
        assert!(!everything.contains(secret), "{secret} leaked");
    }
}

/// A wrong SMTP password is logged (not retried: it would be refused again), never fatal;
/// alert-test reports it.
#[test]
fn an_smtp_auth_failure_is_reported_not_fatal() {
    let smtp = Smtp::start(Some(("alerts", "right")), false);
    let hooks = Receiver::start();
    let s = setup(
        Repo::local(),
        &format!(
            "[alerts]\nwebhook = [\"{}\"]\n\
             email = {{ smtp = \"smtp://alerts:wrong@127.0.0.1:{}?tls=none\", from = \"b@example.com\", to = [\"o@example.com\"] }}\n\n\
             [[source]]\nname = \"app\"\nurl = \"postgres://nobody@127.0.0.1:1/app\"\n",
            hooks.url("/hook"),
            smtp.port
        ),
    );
    let r = s
        .cli
        .fails(&["alert-test"], 13, "1 of 2 alert channels failed");
    assert!(
        r.stdout.contains("ok      webhook http://127.0.0.1"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("FAILED  email via 127.0.0.1"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("smtp authentication failed for user alerts"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("wrong"), "{}", r.stdout);
    assert_eq!(hooks.bodies("/hook").len(), 1);

    // A failing job: the backup's own error decides the exit; the mail failure is a warning.
    let r = s.cli.run(&["run", "app"]);
    assert_eq!(r.code, 5, "{}", r.stderr);
    assert!(
        r.stderr.contains("alert delivery to email via 127.0.0.1")
            && r.stderr.contains("authentication failed"),
        "{}",
        r.stderr
    );
    assert_eq!(
        hooks.bodies("/hook").len(),
        2,
        "the webhook still got the alert"
    );
    assert!(smtp.messages().is_empty());
}

/// SIGTERM while a backup uploads: the upload is aborted, no partial snapshot is visible, the
/// daemon exits in time, and the next start runs the missed job.
#[test]
fn shutdown_during_an_upload_leaves_no_partial_snapshot() {
    let src = Source::start();
    // About 400 MB of dump: the upload lasts long enough to be caught in the middle.
    src.create_db(
        "big",
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) || md5((g * 3)::text) || md5((g * 7)::text) AS v
           FROM generate_series(1, 4000000) g",
    );
    let s = setup(
        Repo::s3("shutdown"),
        &format!(
            "[server]\nlisten = \"127.0.0.1:{}\"\n\n\
             [[source]]\nname = \"big\"\nurl = \"{}\"\nschedule = \"every 1h\"\ndrill = false\ncompression = \"zstd:1\"\n",
            free_port(),
            src.url("big")
        ),
    );
    // A first backup on record, an hour "ago" for the schedule: the daemon runs the missed job
    // at start.
    let state = offsitedb::state::State::open(&s.cli.state_dir().join("state.db")).unwrap();
    let past = jiff::Timestamp::now() - Duration::from_secs(7200);
    let id = state
        .start(offsitedb::state::Job::Backup, "big", past)
        .unwrap();
    state.finish(id, past, &Default::default()).unwrap();
    drop(state);

    let store = s.store();
    let mut d = Daemon::start(&s.cli, s.dir.path(), &[]);
    wait_for(&d, Duration::from_secs(60), "an upload in progress", || {
        !store.incomplete_uploads("snapshots/").unwrap().is_empty()
    });
    let t = Instant::now();
    assert_eq!(d.stop(Duration::from_secs(60)), 0);
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        store.incomplete_uploads("snapshots/").unwrap().is_empty(),
        "the upload was not aborted"
    );
    let objects = store.list("snapshots/").unwrap();
    assert!(
        objects.is_empty(),
        "something of the partial snapshot is visible: {objects:?}"
    );
    // (The daemon's first verify may be in the history too: the newest backup is the one.)
    let h: Vec<HistoryRun> = history(&s)
        .into_iter()
        .filter(|r| r.job == "backup")
        .collect();
    assert_eq!(h[0].result, "interrupted", "{h:#?}");
    assert!(
        h[0].error.as_deref().unwrap().contains("interrupted"),
        "{h:#?}"
    );

    // Started again, the missed run goes first, and completes.
    let mut d = Daemon::start(&s.cli, s.dir.path(), &[]);
    wait_for(&d, Duration::from_secs(120), "the missed backup", || {
        count(&history(&s), "big", "backup", "ok") >= 2
    });
    assert!(d.log().contains("missed"), "{}", d.log());
    assert_eq!(d.stop(Duration::from_secs(30)), 0);
    assert_eq!(s.ids(Some("big")).len(), 1);
}

/// The storage goes away and comes back: `storage_unreachable` fires once, then resolves.
#[test]
fn an_unreachable_repository_alerts_and_recovers() {
    let src = Source::start();
    src.create_db("app", "CREATE TABLE t (id int)");
    let hooks = Receiver::start();
    let mut s = setup(
        Repo::s3("gone"),
        &format!(
            "[server]\nlisten = \"127.0.0.1:{}\"\n[alerts]\nwebhook = [\"{}\"]\n\n\
             [[source]]\nname = \"app\"\nurl = \"{}\"\nschedule = \"every 1s\"\ndrill = false\nstale_after = \"1h\"\n",
            free_port(),
            hooks.url("/hook"),
            src.url("app")
        ),
    );
    let mut d = Daemon::start(&s.cli, s.dir.path(), &[]);
    wait_for(&d, Duration::from_secs(60), "a backup", || {
        count(&history(&s), "app", "backup", "ok") >= 1
    });
    s.weed().kill();
    wait_for(&d, Duration::from_secs(90), "the storage alert", || {
        !hooks.bodies("/hook").is_empty()
    });
    s.weed().restart();
    wait_for(&d, Duration::from_secs(90), "the recovery", || {
        hooks.bodies("/hook").len() >= 2
    });
    assert_eq!(d.stop(Duration::from_secs(60)), 0);
    let (hook, seen) = hooks.alerts("/hook");
    let seen: Vec<(&str, &str)> = seen.iter().map(|(e, s)| (e.as_str(), s.as_str())).collect();
    assert_eq!(
        seen,
        [
            ("storage_unreachable", "firing"),
            ("storage_unreachable", "resolved")
        ],
        "{hook:#?}"
    );
    assert!(hook[0].message.contains("127.0.0.1"), "{hook:#?}");
}

/// A snapshot that does not restore: the job's drill fails, the alert goes out once over two
/// jobs, the prune deletes nothing, and a passing drill resolves it. Through `offsitedb run`,
/// the same path as `serve`.
#[test]
fn a_failing_drill_alerts_once_and_holds_the_prune() {
    let src = Source::start();
    // A CHECK that depends on a database setting pg_dump does not carry: the rows dump, but do
    // not load anywhere else.
    crate::drill::guarded_database(&src, "");
    let hooks = Receiver::start();
    let s = setup(
        Repo::local(),
        &format!(
            "[alerts]\nwebhook = [\"{}\"]\n\n[[source]]\nname = \"app\"\nurl = \"{}\"\n\
             keep = {{ last = 1 }}\n",
            hooks.url("/hook"),
            src.url("app")
        ),
    );
    for _ in 0..2 {
        let r = s.cli.fails(&["run", "app"], 12, "did not load");
        assert!(r.stdout.contains("drill   FAILED"), "{}", r.stdout);
        assert!(
            r.stdout
                .contains("nothing is deleted while backups are failing"),
            "{}",
            r.stdout
        );
    }
    assert_eq!(s.ids(Some("app")).len(), 2, "the prune deleted a snapshot");
    // The data is fixed: the next drill passes, the alert resolves, the prune catches up.
    src.client("app")
        .batch_execute("ALTER TABLE guarded DROP CONSTRAINT guarded_check")
        .unwrap();
    s.cli.ok(&["run", "app"]);
    assert_eq!(s.ids(Some("app")).len(), 1);
    let (hook, seen) = hooks.alerts("/hook");
    let seen: Vec<(&str, &str)> = seen.iter().map(|(e, s)| (e.as_str(), s.as_str())).collect();
    assert_eq!(
        seen,
        [("drill_failed", "firing"), ("drill_failed", "resolved")],
        "{hook:#?}"
    );
    assert!(hook[0].message.contains("guarded"), "{hook:#?}");
}

/// The daemon started in this process on port 0 and stopped through its handle: what the
/// dashboard's and the fleet's tests build on. Its /metrics page passes `promtool check metrics`.
#[test]
fn the_daemon_runs_in_process_on_a_given_listener_and_stops_through_its_handle() {
    let src = Source::start();
    src.create_db(
        "app",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g",
    );
    let s = setup(
        Repo::local(),
        &format!(
            "[[source]]\nname = \"app\"\nurl = \"{}\"\nschedule = \"every 1s\"\ndrill = false\n\
             keep = {{ last = 1 }}\n",
            src.url("app")
        ),
    );
    let settings = offsitedb::config::Settings::load(
        offsitedb::config::Overrides {
            config: Some(s.config_path()),
            ..Default::default()
        },
        &mut |_| {},
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let running = offsitedb::daemon::spawn(settings, listener).unwrap();
    let port = running.addr.port();
    let t = Instant::now();
    let page = loop {
        let page = get(port, "/metrics").1;
        if page.contains("offsitedb_jobs_total{source=\"app\",result=\"succeeded\"} 2") {
            break page;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no jobs ran:\n{page}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    promtool_accepts(&page);
    let t = Instant::now();
    running.stop().unwrap();
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    // Stopped means the port is closed, not just the scheduler.
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    assert_eq!(s.ids(Some("app")).len(), 1, "keep last 1");
}

/// `serve` verifies on `verify_schedule`: a snapshot deleted from the bucket behind its back
/// alerts once (`verify_failed`, naming it), and resolves when it is back.
#[test]
fn the_daemon_verifies_and_alerts_on_a_deleted_snapshot() {
    let src = Source::start();
    src.create_db(
        "app",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g",
    );
    let hooks = Receiver::start();
    let s = Repo::local().with_config(&format!(
        "verify_schedule = \"every 1s\"\n\n[state]\npath = \"state.db\"\n\n\
         [server]\nlisten = \"127.0.0.1:{}\"\n[alerts]\nwebhook = [\"{}\"]\n\n\
         [[source]]\nname = \"app\"\nurl = \"{}\"\nschedule = \"every 1h\"\ndrill = false\n",
        free_port(),
        hooks.url("/hook"),
        src.url("app")
    ));
    let first = s.cli.backup(&src.url("app"), "app").id;
    s.cli.backup(&src.url("app"), "app");
    let mut d = Daemon::start(&s.cli, s.dir.path(), &[]);
    wait_for(&d, Duration::from_secs(60), "a clean verify", || {
        count(&history(&s), "*", "verify", "ok") >= 1
    });
    let dir = s.path().join("snapshots/app").join(&first);
    let aside = s.dir.path().join("aside");
    std::fs::rename(&dir, &aside).unwrap();
    wait_for(&d, Duration::from_secs(60), "the verify alert", || {
        !hooks.bodies("/hook").is_empty()
    });
    std::fs::rename(&aside, &dir).unwrap();
    wait_for(&d, Duration::from_secs(60), "the resolution", || {
        hooks.bodies("/hook").len() >= 2
    });
    assert_eq!(d.stop(Duration::from_secs(60)), 0);
    let (hook, seen) = hooks.alerts("/hook");
    let seen: Vec<(&str, &str)> = seen.iter().map(|(e, s)| (e.as_str(), s.as_str())).collect();
    assert_eq!(
        seen,
        [("verify_failed", "firing"), ("verify_failed", "resolved")],
        "{hook:#?}"
    );
    assert!(
        hook[0]
            .message
            .contains(&format!("snapshot app/{first} was deleted")),
        "{hook:#?}"
    );
    assert!(count(&history(&s), "*", "verify", "failed") >= 1);
}
