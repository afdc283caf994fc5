//! Fleets: several `offsitedb serve` processes (each with its own state folder, as on separate
//! machines) sharing one PostgreSQL state database, backing up sources into real SeaweedFS.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::{HistoryRun, Repo, Source};
use crate::daemon::Receiver;

/// One worker: a `serve` process with its own name, state folder and port, logging to a file.
struct Worker {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    port: u16,
}

impl Worker {
    fn start(s: &Repo, name: &str, extra_env: &[(&str, &str)]) -> Worker {
        let dir = s.dir.path().join(format!("worker-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("serve.log");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = s.cli.command(crate::common::offsitedb_bin());
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("OFFSITEDB_WORKER_NAME", name)
            .env("OFFSITEDB_STATE_DIR", dir.join("state"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        Worker {
            name: name.into(),
            child: Some(cmd.spawn().unwrap()),
            log,
            port,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The body of `GET path` on this worker's dashboard.
    fn get(&self, path: &str) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{path}: {out}");
        out.split_once("\r\n\r\n").unwrap().1.to_string()
    }

    fn kill(&mut self) {
        let mut c = self.child.take().unwrap();
        c.kill().unwrap(); // SIGKILL
        c.wait().unwrap();
    }

    /// SIGTERM; it must stop by itself, with exit 0.
    fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let t = Instant::now();
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                assert_eq!(
                    st.code(),
                    Some(0),
                    "{} exited badly:\n{}",
                    self.name,
                    self.log()
                );
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(90),
                "{} did not stop:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn logs(ws: &[Worker]) -> String {
    ws.iter()
        .map(|w| format!("--- {} ---\n{}", w.name, w.log()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn wait_for(ws: &[Worker], limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < limit,
            "timed out waiting for {what}:\n{}",
            logs(ws)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn history(s: &Repo) -> Vec<HistoryRun> {
    s.history(&["--limit", "5000"])
}

fn ts(s: &str) -> jiff::Timestamp {
    s.parse().unwrap()
}

/// Every due time of a source ran once: two runs for one due time only when the first was
/// interrupted (its worker killed) and the second took it over. No two runs of a source
/// overlapped. Returns the number of finished backups per source.
fn exactly_once(h: &[HistoryRun]) -> BTreeMap<String, usize> {
    let mut by_due: BTreeMap<(String, String), Vec<&HistoryRun>> = BTreeMap::new();
    for r in h.iter().filter(|r| r.job == "backup" && r.due.is_some()) {
        by_due
            .entry((r.source.clone(), r.due.clone().unwrap()))
            .or_default()
            .push(r);
    }
    let mut done = BTreeMap::new();
    for ((source, due), runs) in &by_due {
        let ended: Vec<_> = runs
            .iter()
            .filter(|r| r.result == "ok" || r.result == "failed")
            .collect();
        assert!(
            ended.len() <= 1,
            "{source} ran twice for due time {due}: {runs:#?}"
        );
        if runs.len() > 1 {
            assert_eq!(runs.len(), 2, "{runs:#?}");
            let first = runs.iter().min_by_key(|r| r.id).unwrap();
            assert_eq!(first.result, "interrupted", "{runs:#?}");
        }
        *done.entry(source.clone()).or_insert(0) += ended.len();
    }
    // No overlap: each source's finished runs, in start order, start after the one before
    // ended (a worker runs a source's steps one after another, and one worker at a time).
    let mut by_source: BTreeMap<&str, Vec<&HistoryRun>> = BTreeMap::new();
    for r in h.iter().filter(|r| r.finished.is_some()) {
        by_source.entry(&r.source).or_default().push(r);
    }
    for (source, mut runs) in by_source {
        runs.sort_by_key(|r| ts(&r.started));
        for w in runs.windows(2) {
            assert!(
                ts(&w[1].started) >= ts(w[0].finished.as_deref().unwrap()),
                "two runs of {source} overlapped:\n{:#?}\n{:#?}",
                w[0],
                w[1]
            );
        }
    }
    done
}

#[test]
fn three_workers_share_six_sources_through_a_kill_and_a_state_restart() {
    let mut state_db = Source::start();
    state_db.create_db("fleet_state", "");
    let src = Source::start();
    for i in 1..=5 {
        src.create_db(
            &format!("s{i}"),
            &format!(
                "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, {}) g",
                200 * i
            ),
        );
    }
    // Big enough that its backup lasts a few seconds: the kill lands in the middle of one.
    src.create_db(
        "big",
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) || md5((g * 3)::text) AS v
           FROM generate_series(1, 1500000) g",
    );
    let mut body = format!(
        "[state]\nurl = \"{}\"\n\n[worker]\nlease = \"6s\"\n\n",
        state_db.url("fleet_state")
    );
    for (i, every) in [(1, 4), (2, 5), (3, 6), (4, 4), (5, 5)] {
        body.push_str(&format!(
            "[[source]]\nname = \"s{i}\"\nurl = \"{}\"\nschedule = \"every {every}s\"\ndrill = false\nkeep = {{ last = 3 }}\n\n",
            src.url(&format!("s{i}"))
        ));
    }
    body.push_str(&format!(
        "[[source]]\nname = \"big\"\nurl = \"{}\"\nschedule = \"every 10s\"\ndrill = false\ncompression = \"zstd:1\"\n",
        src.url("big")
    ));
    let s = Repo::s3("fleet").with_config(&body);
    let store = s.store();
    let mut ws: Vec<Worker> = ["w1", "w2", "w3"]
        .iter()
        .map(|n| Worker::start(&s, n, &[]))
        .collect();
    let t0 = Instant::now();

    // Kill the worker that is uploading `big`, in the middle of the upload.
    let mut killed_run: Option<HistoryRun> = None;
    wait_for(
        &ws,
        Duration::from_secs(90),
        "a backup of big uploading",
        || {
            let uploading = !store
                .incomplete_uploads("snapshots/big/")
                .unwrap()
                .is_empty();
            killed_run = history(&s)
                .into_iter()
                .find(|r| r.source == "big" && r.job == "backup" && r.result == "running");
            uploading && killed_run.is_some()
        },
    );
    let killed_run = killed_run.unwrap();
    let victim = killed_run.worker.clone().unwrap();
    let vi = ws.iter().position(|w| w.name == victim).unwrap();
    ws[vi].kill();

    // Another worker takes it over once the lease expires, for the same due time.
    let mut again: Option<HistoryRun> = None;
    wait_for(
        &ws,
        Duration::from_secs(120),
        "the backup of big taken over",
        || {
            again = history(&s).into_iter().find(|r| {
                r.source == "big"
                    && r.job == "backup"
                    && r.due == killed_run.due
                    && r.id != killed_run.id
                    && r.result == "ok"
            });
            again.is_some()
        },
    );
    let again = again.unwrap();
    assert_ne!(again.worker.as_deref(), Some(victim.as_str()));
    let dead = history(&s)
        .into_iter()
        .find(|r| r.id == killed_run.id)
        .unwrap();
    assert_eq!(dead.result, "interrupted", "{dead:#?}");
    let why = dead.error.clone().unwrap();
    assert!(
        why.contains(&format!("worker {victim} stopped renewing its lease")),
        "{why}"
    );
    // The one that took over aborted the upload the dead worker left.
    let taker = ws
        .iter()
        .find(|w| Some(&w.name) == again.worker.as_ref())
        .unwrap();
    assert!(
        taker
            .log()
            .contains("aborted the unfinished uploads the previous worker left"),
        "{}",
        taker.log()
    );
    // The history says what happened.
    let text = s.cli.ok(&["history", "--source", "big"]).stdout;
    assert!(text.contains(&format!("[{victim}]")), "{text}");
    assert!(text.contains("stopped renewing its lease"), "{text}");

    // The state database restarts: the workers ride it out and go on.
    let before_restart = history(&s).len();
    state_db.cluster.restart().unwrap();
    let restarted = jiff::Timestamp::now();
    wait_for(
        &ws,
        Duration::from_secs(90),
        "backups after the state restart",
        || {
            let h = history(&s);
            h.len() > before_restart
                && (1..=5).all(|i| {
                    h.iter().any(|r| {
                        r.source == format!("s{i}")
                            && r.job == "backup"
                            && r.result == "ok"
                            && ts(&r.started) > restarted
                    })
                })
        },
    );

    // `fleet` shows the workers and every source's jobs from the shared state; the killed one
    // shows silent once it has not been heard from for 10 s (`SILENT_AFTER`).
    let fleet = || -> serde_json::Value {
        serde_json::from_str(&s.cli.ok(&["fleet", "--json"]).stdout).unwrap()
    };
    let silent_since = Instant::now();
    let mut view = fleet();
    while view["workers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w["name"] == victim.as_str() && w["alive"] == true)
        && silent_since.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(500));
        view = fleet();
    }
    let alive: Vec<&str> = view["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["alive"] == true)
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(alive.len(), 2, "{view:#}");
    assert!(!alive.contains(&victim.as_str()), "{view:#}");
    let jobs = view["jobs"].as_array().unwrap();
    assert_eq!(
        jobs.iter().filter(|j| j["kind"] == "backup").count(),
        6,
        "{view:#}"
    );
    let text = s.cli.ok(&["fleet"]).stdout;
    assert!(
        text.contains("alive") && text.contains("every 10s"),
        "{text}"
    );

    // A couple of minutes in all.
    while t0.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_secs(1));
    }
    for w in ws.iter_mut() {
        w.stop();
    }
    let h = history(&s);
    let done = exactly_once(&h);
    for i in 1..=5 {
        let n = done.get(&format!("s{i}")).copied().unwrap_or(0);
        assert!(n >= 10, "s{i} ran {n} times in 120 s:\n{h:#?}");
    }
    assert!(done["big"] >= 2, "{done:?}");
    let workers: std::collections::BTreeSet<_> =
        h.iter().filter_map(|r| r.worker.clone()).collect();
    assert!(workers.len() >= 2, "{workers:?}");
    assert!(
        h.iter().all(|r| r.result != "running"),
        "runs left running after every worker stopped: {h:#?}"
    );

    // The repository: no partial snapshot, no upload left behind, and verify finds it whole.
    assert!(
        store.incomplete_uploads("snapshots/").unwrap().is_empty(),
        "an upload was left behind"
    );
    s.cli.ok(&["verify"]);
    for id in s.ids(Some("big")) {
        s.cli.ok(&["show", "--source", "big", &id]);
    }
}

/// A source that requires a label runs only on the worker that has it; a failing source alerts
/// once for the whole fleet, not once per worker.
#[test]
fn labels_choose_the_worker_and_the_fleet_alerts_once() {
    let state_db = Source::start();
    state_db.create_db("labels_state", "");
    let src = Source::start();
    src.create_db(
        "drilled",
        "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 500) g",
    );
    src.create_db("plain", "CREATE TABLE t (id int)");
    let hook = Receiver::start();
    let body = format!(
        "[worker]\nlease = \"5s\"\n\n[alerts]\nwebhook = [\"{}\"]\n\n\
         [[source]]\nname = \"drilled\"\nurl = \"{}\"\nschedule = \"every 6s\"\nrequires = [\"drill\"]\n\n\
         [[source]]\nname = \"plain\"\nurl = \"{}\"\nschedule = \"every 3s\"\ndrill = false\n\n\
         [[source]]\nname = \"broken\"\nurl = \"{}\"\nschedule = \"every 2s\"\ndrill = false\n",
        hook.url("/hook"),
        src.url("drilled"),
        src.url("plain"),
        src.url("no_such_database"),
    );
    // The state database through the environment this time.
    let state_url = state_db.url("labels_state");
    let s = Repo::s3("labels")
        .with_config(&body)
        .env("OFFSITEDB_STATE_URL", &state_url);
    let mut ws = vec![
        Worker::start(&s, "plain-1", &[]),
        Worker::start(&s, "plain-2", &[]),
        // Labels come from [worker] labels: this one's own configuration file says it.
        Worker::start(
            &s,
            "big-disk",
            &[(
                "OFFSITEDB_CONFIG",
                labelled_config(&s, &body).to_str().unwrap(),
            )],
        ),
    ];
    wait_for(&ws, Duration::from_secs(120), "drills and failures", || {
        let h = history(&s);
        h.iter()
            .filter(|r| r.source == "drilled" && r.job == "drill" && r.result == "ok")
            .count()
            >= 2
            && h.iter()
                .filter(|r| r.source == "broken" && r.result == "failed")
                .count()
                >= 6
    });
    // A second process under a live worker's name is refused: it would take that worker's
    // jobs for its own.
    let mut twin = Worker::start(&s, "twin", &[("OFFSITEDB_WORKER_NAME", "plain-1")]);
    let code = twin.child.take().unwrap().wait().unwrap().code();
    assert_eq!(code, Some(3), "{}", twin.log());
    assert!(
        twin.log().contains("another worker named plain-1 is alive"),
        "{}",
        twin.log()
    );
    // `check` reaches the shared state, and shows its URL without the password.
    let check = s.cli.run(&["check", "--source", "plain"]);
    let line = check
        .stdout
        .lines()
        .find(|l| l.contains("shared state"))
        .unwrap_or_else(|| panic!("{}{}", check.stdout, check.stderr));
    assert!(line.contains("3 workers recorded"), "{line}");
    assert!(
        !check.stdout.contains(crate::common::DB_PASSWORD),
        "{}",
        check.stdout
    );
    // Every worker's dashboard shows the whole fleet.
    let api: serde_json::Value = serde_json::from_str(&ws[0].get("/api/v1/fleet")).unwrap();
    let labelled = api["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "big-disk")
        .unwrap_or_else(|| panic!("{api:#}"));
    assert_eq!(labelled["labels"], serde_json::json!(["drill"]), "{api:#}");
    let page = ws[1].get("/fleet");
    assert!(
        page.contains("big-disk") && page.contains("plain-1") && page.contains("drill"),
        "{page}"
    );
    for w in ws.iter_mut() {
        w.stop();
    }
    let h = history(&s);
    let drilled: Vec<&HistoryRun> = h.iter().filter(|r| r.source == "drilled").collect();
    assert!(
        drilled
            .iter()
            .all(|r| r.worker.as_deref() == Some("big-disk")),
        "{drilled:#?}"
    );
    for w in &ws[..2] {
        assert!(
            w.log().contains("lacks a label the source requires"),
            "{}",
            w.log()
        );
    }
    exactly_once(&h);
    // However many workers saw `broken` fail, one alert.
    let (_, seen) = hook.alerts("/hook");
    let fired: Vec<_> = seen
        .iter()
        .filter(|(e, st)| e == "backup_failed" && st == "firing")
        .collect();
    assert_eq!(fired.len(), 1, "{seen:?}");
}

/// The same configuration with `[worker] labels = ["drill"]`, in a file of its own.
fn labelled_config(s: &Repo, body: &str) -> PathBuf {
    let path = s.dir.path().join("big-disk.toml");
    let text = std::fs::read_to_string(s.dir.path().join("offsitedb.toml"))
        .unwrap()
        .replace("[worker]\n", "[worker]\nlabels = [\"drill\"]\n");
    assert!(text.contains(body.lines().next().unwrap()));
    std::fs::write(&path, text).unwrap();
    path
}

/// A worker that ended a run and died before it released the job's row: the worker taking the
/// row over sees the run ended for that due time and moves on instead of running it twice.
#[test]
fn a_run_the_dead_worker_ended_is_not_run_again() {
    use offsitedb::state::{Job, Outcome, Planned, RunTag, StateAt};
    let s = Repo::local();
    std::fs::create_dir_all(s.dir.path().join("files")).unwrap();
    std::fs::write(s.dir.path().join("files/a.txt"), "a").unwrap();
    let s = s.with_config(
        "[state]\npath = \"state.db\"\n\n[worker]\nlease = \"3s\"\n\n\
         [[source]]\nname = \"x\"\nkind = \"directory\"\npath = \"files\"\nschedule = \"every 1h\"\n",
    );
    let at = StateAt::File(s.dir.path().join("state.db"));
    let st = at.open().unwrap();
    let due = jiff::Timestamp::now() - Duration::from_secs(60);
    st.plan(&Planned {
        name: "backup:x".into(),
        source: "x".into(),
        kind: "backup".into(),
        schedule: "every 1h".into(),
        due,
        requires: vec![],
    })
    .unwrap();
    let lease = st
        .take(
            "dead",
            &["backup:x".to_string()],
            jiff::Timestamp::now(),
            Duration::from_secs(3),
            1,
        )
        .unwrap();
    assert_eq!(lease.len(), 1);
    let run = at.open().unwrap().tagged(RunTag {
        worker: Some("dead".into()),
        due: Some(lease[0].due),
    });
    let id = run.start(Job::Backup, "x", jiff::Timestamp::now()).unwrap();
    run.finish(id, jiff::Timestamp::now(), &Outcome::default())
        .unwrap();
    drop((run, st));
    std::thread::sleep(Duration::from_secs(4));

    // (The state folder is the test's, where state.db is.)
    let dir = s.dir.path().to_str().unwrap().to_string();
    let mut w = Worker::start(&s, "next", &[("OFFSITEDB_STATE_DIR", dir.as_str())]);
    let ws = std::slice::from_ref(&w);
    wait_for(ws, Duration::from_secs(60), "the row taken over", || {
        w.log().contains("ended this run before it stopped")
    });
    std::thread::sleep(Duration::from_secs(2));
    w.stop();
    let h = at.open().unwrap().history(Some("x"), 10).unwrap();
    assert_eq!(h.len(), 1, "it ran again: {h:#?}");
    assert_eq!((h[0].id, h[0].job), (id, Job::Backup));
    let row = at
        .open()
        .unwrap()
        .jobs()
        .unwrap()
        .into_iter()
        .find(|r| r.name == "backup:x")
        .unwrap();
    assert!(row.due > jiff::Timestamp::now(), "{row:?}");
    assert_eq!(row.worker, None, "{row:?}");
}

/// Fleet settings that cannot work are refused with the setting named; a state database that
/// does not answer is said at once, without its password.
#[test]
fn bad_fleet_settings_are_refused_clearly() {
    let s = Repo::local().with_config(
        "[worker]\nlease = \"1s\"\n\n[[source]]\nname = \"x\"\nkind = \"directory\"\npath = \".\"\nschedule = \"every 1h\"\n",
    );
    let r = s.cli.run(&["serve", "--listen", "127.0.0.1:0"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("[worker] lease \"1s\" is too short"),
        "{}",
        r.stderr
    );
    s.write_config(
        "[worker]\njobs = 0\n\n[[source]]\nname = \"x\"\nkind = \"directory\"\npath = \".\"\nschedule = \"every 1h\"\n",
    );
    let r = s.cli.run(&["serve", "--listen", "127.0.0.1:0"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("[worker] jobs must be 1 or more"),
        "{}",
        r.stderr
    );
    s.write_config("[state]\nurl = \"mysql://root:Sekr1t-pw@db/x\"\n");
    let r = s.cli.fails(&["fleet"], 3, "[state] url");
    assert!(!r.stderr.contains("Sekr1t"), "{}", r.stderr);

    // Nothing listens there: one clear error, soon, and the password nowhere.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    s.write_config(&format!(
        "[state]\nurl = \"postgres://offsitedb:Sekr1t-pw@127.0.0.1:{port}/state\"\n"
    ));
    let t = Instant::now();
    let r = s.cli.run(&["fleet"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("cannot connect to the state database"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("Sekr1t"), "{}", r.stderr);
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
}
