//! The state's contract, kept by both stores: the SQLite file and a shared PostgreSQL database
//! (a real cluster). Runs, alerts switched once for several workers, leases taken by exactly one
//! worker, expired leases taken over, requests, heartbeats, and migrations.

use std::time::Duration;

use jiff::Timestamp;
use offsitedb::config::Secret;
use offsitedb::state::{Job, Lease, Outcome, Planned, RunResult, RunTag, StateAt, WorkerRow};

use crate::common::Source;

/// Both places: a file, and a database on `src`.
fn both(src: &Source, dir: &std::path::Path, db: &str) -> Vec<StateAt> {
    src.create_db(db, "");
    vec![
        StateAt::File(dir.join(format!("{db}.db"))),
        StateAt::Postgres(Secret::new(src.url(db))),
    ]
}

fn planned(name: &str, due: Timestamp) -> Planned {
    Planned {
        name: name.into(),
        source: name.trim_start_matches("backup:").into(),
        kind: "backup".into(),
        schedule: "every 1m".into(),
        due,
        requires: vec![],
    }
}

fn names(v: &[Lease]) -> Vec<String> {
    let mut n: Vec<String> = v.iter().map(|l| l.name.clone()).collect();
    n.sort();
    n
}

#[test]
fn both_stores_keep_the_same_contract() {
    let src = Source::start();
    let dir = tempfile::tempdir().unwrap();
    for at in both(&src, dir.path(), "contract") {
        let what = at.describe();
        let st = at.open().unwrap();
        let now = Timestamp::now();

        // Runs carry their worker and due time.
        let tagged = at.open().unwrap().tagged(RunTag {
            worker: Some("w1".into()),
            due: Some(now),
        });
        let id = tagged.start(Job::Backup, "app", now).unwrap();
        tagged
            .finish(
                id,
                now + Duration::from_millis(2500),
                &Outcome {
                    snapshot: Some("snap".into()),
                    stored_bytes: Some(12),
                    ..Default::default()
                },
            )
            .unwrap();
        let r = st.last("app", Job::Backup, Some(RunResult::Ok)).unwrap();
        let r = r.unwrap_or_else(|| panic!("{what}: no run"));
        assert_eq!(r.worker.as_deref(), Some("w1"), "{what}");
        assert_eq!(
            r.due.map(|d| d.as_millisecond()),
            Some(now.as_millisecond())
        );
        // (PostgreSQL keeps microseconds.)
        assert!((r.seconds.unwrap() - 2.5).abs() < 0.001, "{what}: {r:?}");
        let running = tagged.start(Job::Drill, "app", now).unwrap();
        let other = at
            .open()
            .unwrap()
            .tagged(RunTag {
                worker: Some("w2".into()),
                due: None,
            })
            .start(Job::Drill, "other", now)
            .unwrap();
        // Only w1's runs are closed when w1 starts again.
        assert_eq!(st.close_interrupted(Some("w1"), "w1 stopped").unwrap(), 1);
        let h = st.history(None, 10).unwrap();
        let by_id = |id: i64| h.iter().find(|r| r.id == id).unwrap().clone();
        assert_eq!(by_id(running).result, RunResult::Interrupted, "{what}");
        assert_eq!(by_id(other).result, RunResult::Running, "{what}");

        // An alert switches once, however many workers see the change at once.
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let at = at.clone();
                std::thread::spawn(move || {
                    at.open()
                        .unwrap()
                        .switch_alert("app", "backup_failed", true, "it failed", Timestamp::now())
                        .unwrap()
                        .is_some()
                })
            })
            .collect();
        let sent = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|s| *s)
            .count();
        assert_eq!(
            sent, 1,
            "{what}: the firing alert was switched {sent} times"
        );
        assert!(
            st.switch_alert("app", "backup_failed", true, "again", now)
                .unwrap()
                .is_none()
        );
        let was = st
            .switch_alert("app", "backup_failed", false, "ok again", now)
            .unwrap()
            .unwrap_or_else(|| panic!("{what}: the recovery was not a change"))
            .unwrap();
        assert!(was.firing, "{what}");
        // Nothing fired: a recovery is no change.
        assert!(
            st.switch_alert("app", "drill_failed", false, "fine", now)
                .unwrap()
                .is_none()
        );

        // Leases: due rows only, each to one worker; the token fences the others.
        let past = now - Duration::from_secs(5);
        for n in ["backup:a", "backup:b", "backup:c"] {
            st.plan(&planned(n, past)).unwrap();
        }
        st.plan(&planned("backup:later", now + Duration::from_secs(3600)))
            .unwrap();
        let all: Vec<String> = ["backup:a", "backup:b", "backup:c", "backup:later"]
            .map(String::from)
            .to_vec();
        let lease = Duration::from_secs(30);
        let w1 = st.take("w1", &all, now, lease, 2).unwrap();
        assert_eq!(names(&w1), ["backup:a", "backup:b"], "{what}");
        let w2 = st.take("w2", &all, now, lease, 10).unwrap();
        assert_eq!(names(&w2), ["backup:c"], "{what}: due and free only");
        assert!(st.take("w3", &all, now, lease, 10).unwrap().is_empty());
        assert!(st.renew("w1", &w1[0], lease).unwrap());
        assert!(!st.renew("w2", &w1[0], lease).unwrap(), "{what}");
        // A held row is nobody else's, not even a second process under the same name.
        assert!(
            st.take("w1", std::slice::from_ref(&w1[0].name), now, lease, 1)
                .unwrap()
                .is_empty(),
            "{what}"
        );
        // Planned again (another worker starting): the due time stays.
        st.plan(&planned("backup:c", now + Duration::from_secs(999)))
            .unwrap();
        // Released with its next due time: not taken before it.
        st.release("w2", &w2[0], now + Duration::from_secs(600))
            .unwrap();
        assert!(st.take("w3", &all, now, lease, 10).unwrap().is_empty());
        let rows = st.jobs().unwrap();
        let c = rows.iter().find(|r| r.name == "backup:c").unwrap();
        assert_eq!(c.worker, None, "{what}");
        assert!(c.due > now, "{what}");
        // A changed schedule moves the due time.
        let mut changed = planned("backup:later", past);
        changed.schedule = "every 2m".into();
        st.plan(&changed).unwrap();
        let later = st.take("w3", &all, now, lease, 10).unwrap();
        assert_eq!(names(&later), ["backup:later"], "{what}");

        // A request on a free row is taken at once, with its action; a held row refuses one.
        assert!(!st.request("backup:a", "drill", now).unwrap(), "{what}");
        st.release("w3", &later[0], now + Duration::from_secs(3600))
            .unwrap();
        assert!(st.request("backup:later", "drill", now).unwrap(), "{what}");
        let asked = st.take("w3", &all, now, lease, 10).unwrap();
        assert_eq!(asked.len(), 1, "{what}");
        assert_eq!(asked[0].action.as_deref(), Some("drill"));

        // An expired lease is taken over: the old worker's running run is interrupted, its
        // renewal and its release change nothing.
        st.plan(&planned("backup:x", past)).unwrap();
        let x = vec!["backup:x".to_string()];
        let dead = st.take("dead", &x, now, Duration::from_secs(1), 1).unwrap();
        assert_eq!(dead.len(), 1);
        let dead_run = at
            .open()
            .unwrap()
            .tagged(RunTag {
                worker: Some("dead".into()),
                due: Some(past),
            })
            .start(Job::Backup, "x", now)
            .unwrap();
        assert!(st.take("w1", &x, now, lease, 1).unwrap().is_empty());
        std::thread::sleep(Duration::from_millis(1500));
        let over = st.take("w1", &x, Timestamp::now(), lease, 1).unwrap();
        assert_eq!(over.len(), 1, "{what}: the expired lease was not taken");
        assert_eq!(over[0].taken_from.as_deref(), Some("dead"), "{what}");
        assert_eq!(over[0].due, dead[0].due, "{what}: the same due time");
        let r = st
            .history(Some("x"), 5)
            .unwrap()
            .into_iter()
            .find(|r| r.id == dead_run)
            .unwrap();
        assert_eq!(r.result, RunResult::Interrupted, "{what}");
        assert!(
            r.error
                .as_deref()
                .unwrap()
                .contains("worker dead stopped renewing its lease"),
            "{what}: {r:?}"
        );
        assert!(!st.renew("dead", &dead[0], lease).unwrap());
        st.release("dead", &dead[0], past).unwrap();
        let row = st
            .jobs()
            .unwrap()
            .into_iter()
            .find(|r| r.name == "backup:x")
            .unwrap();
        assert_eq!(row.worker.as_deref(), Some("w1"), "{what}");
        // A daemon alone on its file frees what its earlier runs held.
        assert!(st.free_leases().unwrap() >= 1, "{what}");
        assert!(
            st.jobs().unwrap().iter().all(|r| r.worker.is_none()),
            "{what}"
        );

        // Workers: heartbeats, and the silent ones forgotten with their runs interrupted.
        for (name, seen) in [("alive", now), ("gone", now - Duration::from_secs(600))] {
            st.heartbeat(&WorkerRow {
                name: name.into(),
                host: "h".into(),
                pid: 1,
                version: "0".into(),
                labels: vec!["drill".into()],
                started: seen,
                seen,
                running: vec![],
            })
            .unwrap();
        }
        let gone_run = at
            .open()
            .unwrap()
            .tagged(RunTag {
                worker: Some("gone".into()),
                due: None,
            })
            .start(Job::Backup, "g", now)
            .unwrap();
        let ws = st.workers().unwrap();
        assert_eq!(ws.len(), 2, "{what}");
        assert_eq!(ws[0].labels, ["drill"]);
        // (PostgreSQL stamps a heartbeat with its own clock, and reaps by it: "gone" is as
        // new as "alive" there, so both go with a limit of zero.)
        let silent = match &at {
            StateAt::File(_) => Duration::from_secs(60),
            StateAt::Postgres(_) => Duration::ZERO,
        };
        let reaped = st.reap(silent).unwrap();
        assert!(reaped >= 1, "{what}");
        let r = st
            .history(Some("g"), 1)
            .unwrap()
            .into_iter()
            .find(|r| r.id == gone_run)
            .unwrap();
        assert_eq!(r.result, RunResult::Interrupted, "{what}");
    }
}

/// Workers polling at once: every due row is taken exactly once.
#[test]
fn concurrent_workers_take_each_due_job_once() {
    let src = Source::start();
    let dir = tempfile::tempdir().unwrap();
    for at in both(&src, dir.path(), "race") {
        let st = at.open().unwrap();
        let past = Timestamp::now() - Duration::from_secs(1);
        let all: Vec<String> = (0..40).map(|i| format!("backup:s{i}")).collect();
        for n in &all {
            st.plan(&planned(n, past)).unwrap();
        }
        let threads: Vec<_> = (0..4)
            .map(|w| {
                let (at, all) = (at.clone(), all.clone());
                std::thread::spawn(move || {
                    let st = at.open().unwrap();
                    let mut mine: Vec<String> = Vec::new();
                    for _ in 0..30 {
                        // As a worker does: never asking again for what it holds.
                        let free: Vec<String> =
                            all.iter().filter(|n| !mine.contains(n)).cloned().collect();
                        let got = st
                            .take(
                                &format!("w{w}"),
                                &free,
                                Timestamp::now(),
                                Duration::from_secs(60),
                                3,
                            )
                            .unwrap();
                        mine.extend(got.into_iter().map(|l| l.name));
                    }
                    mine
                })
            })
            .collect();
        let mut taken: Vec<String> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        taken.sort();
        let mut want = all.clone();
        want.sort();
        assert_eq!(taken, want, "{}", at.describe());
    }
}

/// A state an older offsitedb left is upgraded in place; a newer one is refused.
#[test]
fn migrations_upgrade_an_older_state_and_refuse_a_newer_one() {
    let src = Source::start();
    let dir = tempfile::tempdir().unwrap();
    for at in both(&src, dir.path(), "migrate") {
        let what = at.describe();
        drop(
            at.open_at_version(offsitedb::state::SCHEMA_VERSION - 1)
                .unwrap(),
        );
        // A run as the previous version wrote it (no worker, no due time).
        let t: Timestamp = "2026-11-01T03:00:00Z".parse().unwrap();
        let insert = "INSERT INTO runs (job, source, started, finished, result)
                      VALUES ('backup', 'app', '2026-11-01T03:00:00Z', '2026-11-01T03:00:00Z', 'ok')";
        let id: i64 = match &at {
            StateAt::File(p) => {
                let c = rusqlite::Connection::open(p).unwrap();
                c.execute(insert, []).unwrap();
                c.last_insert_rowid()
            }
            StateAt::Postgres(_) => {
                let mut c = src.client("migrate");
                c.batch_execute("SET search_path = offsitedb").unwrap();
                c.query_one(&format!("{insert} RETURNING id"), &[])
                    .unwrap()
                    .get(0)
            }
        };
        // Several workers upgrading at once: one migrates, the others wait and agree.
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let at = at.clone();
                std::thread::spawn(move || at.open().map(|_| ()))
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        let st = at.open().unwrap();
        let r = st.last("app", Job::Backup, None).unwrap().unwrap();
        assert_eq!((r.id, r.worker), (id, None), "{what}");
        st.plan(&planned("backup:app", t)).unwrap();
        assert_eq!(st.jobs().unwrap().len(), 1, "{what}");
        drop(st);

        // A newer offsitedb's state.
        match &at {
            StateAt::File(p) => {
                rusqlite::Connection::open(p)
                    .unwrap()
                    .pragma_update(None, "user_version", 99)
                    .unwrap();
            }
            StateAt::Postgres(_) => src
                .client("migrate")
                .execute("UPDATE offsitedb.schema_version SET version = 99", &[])
                .map(|_| ())
                .unwrap(),
        }
        let e = at
            .open_at_version(offsitedb::state::SCHEMA_VERSION)
            .err()
            .unwrap_or_else(|| panic!("{what}: a newer state was opened"));
        assert!(
            e.message()
                .contains("written by a newer offsitedb (schema 99"),
            "{what}: {e:?}"
        );
        assert!(
            e.hint().unwrap_or("").contains("upgrade offsitedb"),
            "{e:?}"
        );
    }
}
