//! Incremental base backups (PostgreSQL 17+): `backup-push --incremental` on the newest base
//! backup, `restore --pgdata` and `backup-fetch` combining the chain with pg_combinebackup,
//! `prune` keeping a chain whole, `backup-list` naming the parent; and the refusals (no
//! summarize_wal, no base backup to build on, PostgreSQL before 17, a missing link).

use std::path::Path;
use std::time::{Duration, Instant};

use offsitedb::storage::{ReadStore, WriteStore};
use serde_json::Value;

use crate::archiving::{Pitr, SOURCE};
use crate::pitr::{restore_running, server_now};

/// `backup-push --incremental? --json`: the manifest.
fn push(p: &Pitr, incremental: bool) -> (Value, String) {
    let mut args = vec!["backup-push", "--source", SOURCE, "--json"];
    if incremental {
        args.push("--incremental");
    }
    let r = p.cli.ok(&args);
    (serde_json::from_str(&r.stdout).unwrap(), r.stderr)
}

fn id(m: &Value) -> String {
    m["backup_id"].as_str().unwrap().to_string()
}

fn key(id: &str, leaf: &str) -> String {
    format!("base/{SOURCE}/{id}/{leaf}")
}

fn exists(p: &Pitr, k: &str) -> bool {
    p.store().list(k).unwrap().iter().any(|o| o.key == k)
}

/// Turns `summarize_wal` on and waits until new sessions see it.
fn summarize_wal(p: &Pitr) {
    p.sql("ALTER SYSTEM SET summarize_wal = on");
    p.sql("SELECT pg_reload_conf()");
    let deadline = Instant::now() + Duration::from_secs(30);
    while p.text("SELECT current_setting('summarize_wal')") != "on" {
        assert!(Instant::now() < deadline, "summarize_wal stays off");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Nothing but `keep` in `dir`'s parent starts with `dir`'s name (no temporaries left).
fn no_temporaries(dir: &Path) {
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let left: Vec<String> = std::fs::read_dir(dir.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(&name) && n.contains("offsitedb-"))
        .collect();
    assert!(left.is_empty(), "temporaries left: {left:?}");
}

#[test]
fn incremental_chain_restores_fetches_and_is_kept_whole_on_18() {
    let p = Pitr::start(Some(18), "");
    let incr = ["backup-push", "--source", SOURCE, "--incremental"];
    // summarize_wal off: refused, with the fix.
    let r = p.cli.fails(&incr, 5, "summarize_wal is off");
    assert!(
        r.stderr.contains(
            "hint: as a superuser: ALTER SYSTEM SET summarize_wal = on; SELECT pg_reload_conf()"
        ),
        "{}",
        r.stderr
    );
    summarize_wal(&p);
    // Nothing to build on yet.
    p.cli
        .fails(&incr, 8, "no base backup of app to base an incremental");

    p.sql("CREATE TABLE t (id int PRIMARY KEY, note text); INSERT INTO t SELECT g, 'full' FROM generate_series(1, 100) g;");
    let (full, _) = push(&p, false);
    let full_id = id(&full);
    assert!(full.get("incremental").is_none(), "{full}");
    assert!(exists(&p, &key(&full_id, "backup_manifest")));
    // A base backup taken before the separate copy existed: the next one reads the tar.
    p.store().delete(&key(&full_id, "backup_manifest")).unwrap();

    p.sql("INSERT INTO t SELECT g, 'incr1' FROM generate_series(101, 200) g;");
    let (inc1, said) = push(&p, true);
    let inc1_id = id(&inc1);
    assert!(
        said.contains("reading it from the end of its tar"),
        "{said}"
    );
    assert_eq!(inc1["base_manifest_version"], 2);
    assert_eq!(inc1["incremental"]["parent"], full_id.as_str());
    assert_eq!(inc1["incremental"]["chain"], serde_json::json!([full_id]));
    assert!(exists(&p, &key(&inc1_id, "backup_manifest")));

    p.sql("UPDATE t SET note = 'changed' WHERE id <= 10; INSERT INTO t SELECT g, 'incr2' FROM generate_series(201, 300) g;");
    let (inc2, said) = push(&p, true);
    let inc2_id = id(&inc2);
    assert!(!said.contains("from the end of its tar"), "{said}");
    assert_eq!(inc2["incremental"]["parent"], inc1_id.as_str());
    assert_eq!(
        inc2["incremental"]["chain"],
        serde_json::json!([full_id, inc1_id])
    );
    assert!(
        inc2["sizes"]["plain_bytes"].as_u64().unwrap()
            < full["sizes"]["plain_bytes"].as_u64().unwrap(),
        "an incremental copies less than the full backup"
    );

    p.sql("INSERT INTO t SELECT g, 'after incr2' FROM generate_series(301, 400) g;");
    std::thread::sleep(Duration::from_millis(300));
    let t = server_now(&p);
    std::thread::sleep(Duration::from_millis(300));
    p.sql("INSERT INTO t SELECT g, 'after T' FROM generate_series(401, 500) g;");
    p.switch_and_archive();

    // backup-list: the kind and the parent, in JSON and in words.
    let list: Vec<Value> = serde_json::from_str(
        &p.cli
            .ok(&["backup-list", "--source", SOURCE, "--json"])
            .stdout,
    )
    .unwrap();
    // (Ids of one second order at random: by id, not by position.)
    let kinds: std::collections::BTreeMap<&str, (&str, &Value)> = list
        .iter()
        .map(|b| {
            (
                b["id"].as_str().unwrap(),
                (b["kind"].as_str().unwrap(), &b["parent"]),
            )
        })
        .collect();
    let (full_v, inc1_v) = (Value::from(full_id.as_str()), Value::from(inc1_id.as_str()));
    assert_eq!(
        kinds,
        [
            (full_id.as_str(), ("full", &Value::Null)),
            (inc1_id.as_str(), ("incremental", &full_v)),
            (inc2_id.as_str(), ("incremental", &inc1_v)),
        ]
        .into_iter()
        .collect()
    );
    let human = p.cli.ok(&["backup-list", "--source", SOURCE]).stdout;
    assert!(
        human.contains(&format!("{inc2_id}  incr of {inc1_id}")),
        "{human}"
    );

    // A restore to a time after the second incremental combines the chain.
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
    assert_eq!(report.backup, inc2_id);
    assert_eq!(at_t.scalar("SELECT count(*) FROM t"), 400, "{}", at_t.log());
    assert_eq!(
        at_t.scalar("SELECT count(*) FROM t WHERE note = 'changed'"),
        10
    );
    drop(at_t);
    no_temporaries(&p.dir.path().join("at-time"));

    // backup-fetch of the second incremental: a folder that starts, with the rows up to it.
    let fetched = p.new_data_dir("fetched");
    let r = p.cli.ok(&[
        "backup-fetch",
        "--source",
        SOURCE,
        "--json",
        fetched.to_str().unwrap(),
        &inc2_id,
    ]);
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        report["combined"]["chain"],
        serde_json::json!([full_id, inc1_id, inc2_id])
    );
    assert!(
        report["verify"]["program"]
            .as_str()
            .is_some_and(|v| v.starts_with("pg_verifybackup")),
        "{report}"
    );
    no_temporaries(&fetched);
    {
        let s = crate::base_backup::Restored::start_on(
            18,
            &p.bin_dirs,
            &fetched,
            &p.dir.path().join("started.log"),
        );
        let n: i64 = s
            .connect("postgres")
            .unwrap()
            .query_one("SELECT count(*) FROM t", &[])
            .unwrap()
            .get(0);
        assert_eq!(n, 300);
    }

    // Retention: keeping only the newest keeps its chain, and says why; the WAL from the full's
    // start stays (the full is a base backup a restore may start from).
    let r = p
        .cli
        .ok(&["prune", "--source", SOURCE, "--keep", "last=1", "--json"]);
    let reports: Value = serde_json::from_str(&r.stdout).unwrap();
    let report = reports
        .as_array()
        .map(|a| a[0].clone())
        .unwrap_or(reports.clone());
    let base = &report["base_backups"];
    assert_eq!(base["deleted"], serde_json::json!([]), "{report}");
    let why = |id: &str| -> String {
        base["plan"]["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id)
            .map(|d| {
                assert_eq!(d["keep"], true, "{d}");
                d["reasons"].to_string()
            })
            .unwrap()
    };
    assert!(
        why(&full_id).contains(&format!("needed by incremental {inc1_id}, {inc2_id}")),
        "{report}"
    );
    assert!(
        why(&inc1_id).contains(&format!("needed by incremental {inc2_id}")),
        "{report}"
    );
    assert_eq!(report["wal"]["keep_from"], full["start_wal"], "{report}");
    for id in [&full_id, &inc1_id, &inc2_id] {
        assert!(exists(&p, &key(id, "manifest")), "{id} was deleted");
        assert!(exists(&p, &key(id, "data")), "{id} was deleted");
    }
    let human = p
        .cli
        .ok(&["prune", "--source", SOURCE, "--keep", "last=1", "--dry-run"])
        .stdout;
    assert!(
        human.contains("needed by incremental"),
        "prune says why:\n{human}"
    );

    // A damaged link: the full's data is gone. The fetch names it and leaves nothing.
    p.store().delete(&key(&full_id, "data")).unwrap();
    let dir = p.new_data_dir("damaged");
    let args = [
        "backup-fetch",
        "--source",
        SOURCE,
        dir.to_str().unwrap(),
        &inc2_id,
    ];
    let r = p
        .cli
        .fails(&args, 8, &format!("base backup {SOURCE}/{full_id}"));
    eprintln!("damaged link: {}", r.stderr);
    assert!(!dir.exists(), "nothing is left of a failed fetch");
    no_temporaries(&dir);
    // A missing link: the full's manifest is gone too.
    p.store().delete(&key(&full_id, "manifest")).unwrap();
    let r = p.cli.fails(
        &args,
        8,
        &format!("base backup {SOURCE}/{full_id} is missing: incremental base backup {inc2_id} is based on it"),
    );
    assert!(r.stderr.contains("hint: restore from a full base backup"));
    assert!(!dir.exists());
}

#[test]
fn incremental_base_backups_need_postgresql_17() {
    let p = Pitr::start(Some(15), "");
    p.cli.ok(&["backup-push", "--source", SOURCE]);
    let r = p.cli.fails(
        &["backup-push", "--source", SOURCE, "--incremental"],
        3,
        "runs PostgreSQL 15",
    );
    assert!(
        r.stderr
            .contains("cannot take incremental base backups (PostgreSQL 17 and later can)")
            && r.stderr.contains("hint: take full base backups"),
        "{}",
        r.stderr
    );
}
