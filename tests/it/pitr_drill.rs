//! `drill --pitr`: the newest base backup and the WAL archive recovered into a throwaway copy (to
//! a random point inside the window, then to the end of the archive), checked with pg_amcheck
//! and a read of every table, and recorded next to the base backup; and the failures that must
//! fail the drill, name what is broken, and still be recorded: a segment missing from the middle
//! of the archive, a damaged segment, a damaged base backup.

use std::time::Duration;

use serde_json::Value;

use crate::archiving::{Pitr, SOURCE};

/// `drill --pitr ARGS --json` that must pass; its record.
fn drill_ok(p: &Pitr, args: &[&str]) -> Value {
    let mut all = vec!["drill", "--pitr", "--source", SOURCE, "--json"];
    all.extend_from_slice(args);
    let r = p.cli.run(&all);
    assert_eq!(
        r.code, 0,
        "drill --pitr {args:?} failed:\n{}\n{}",
        r.stdout, r.stderr
    );
    serde_json::from_str(&r.stdout).unwrap()
}

/// `drill --pitr ARGS --json` that must fail as a drill (exit 12) with `needle` on its error
/// line; its record (printed all the same).
fn drill_fails(p: &Pitr, args: &[&str], needle: &str) -> Value {
    let mut all = vec!["drill", "--pitr", "--source", SOURCE, "--json"];
    all.extend_from_slice(args);
    let r = p.cli.fails(&all, 12, needle);
    let record: Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("no record on stdout ({e}):\n{}\n{}", r.stdout, r.stderr));
    assert_eq!(record["result"], "failed", "{record:#}");
    assert!(
        record["problems"].to_string().contains(needle),
        "the record's problems name {needle}: {record:#}"
    );
    record
}

/// `backup-list --json`: the one base backup.
fn listed(p: &Pitr) -> Value {
    let r = p.cli.ok(&["backup-list", "--source", SOURCE, "--json"]);
    let v: Vec<Value> = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v.len(), 1, "{v:?}");
    v.into_iter().next().unwrap()
}

fn server_now(p: &Pitr) -> String {
    p.text(
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )
}

fn passes_on_a_good_archive(major: u32) {
    let p = Pitr::start(Some(major), "");
    p.sql("CREATE TABLE t (id int PRIMARY KEY, note text); INSERT INTO t SELECT g, repeat('x', g % 50) FROM generate_series(1, 100) g;");
    p.sql("CREATE DATABASE other");
    p.src
        .cluster
        .execute(
            "other",
            "CREATE SCHEMA s; CREATE TABLE s.\"Odd Name\" (v text); INSERT INTO s.\"Odd Name\" SELECT 'line' || E'\\n' || g FROM generate_series(1, 7) g;",
        )
        .unwrap();
    p.switch_and_archive();
    p.cli.ok(&["backup-push", "--source", SOURCE]);
    // Rows only the archived WAL after the base backup holds, over several segments.
    p.sql("INSERT INTO t SELECT g, 'after' FROM generate_series(101, 250) g;");
    std::thread::sleep(Duration::from_millis(300));
    let t = server_now(&p);
    std::thread::sleep(Duration::from_millis(300));
    p.switch_and_archive();
    p.sql("INSERT INTO t SELECT g, 'later' FROM generate_series(251, 300) g;");
    p.switch_and_archive();

    let d = drill_ok(&p, &[]);
    assert_eq!(d["result"], "passed", "{d:#}");
    assert!(d["problems"].as_array().unwrap().is_empty(), "{d:#}");
    let targets = d["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2, "a random point, then the end: {d:#}");
    assert_eq!(targets[0]["kind"], "lsn");
    assert_eq!(targets[0]["random"], true);
    assert_eq!(targets[1]["kind"], "latest");
    for t in targets {
        assert_eq!(t["reached"], true, "{d:#}");
        assert!(t["lsn"].is_string(), "{d:#}");
        assert_eq!(t["timeline"], 1, "{d:#}");
    }
    assert_eq!(targets[0]["state"], "paused");
    assert_eq!(targets[1]["state"], "promoted");
    // The rows of every database, read back from the copy recovered to the end.
    let rows = |db: &str, schema: &str, name: &str| {
        d["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["database"] == db && t["schema"] == schema && t["name"] == name)
            .unwrap_or_else(|| panic!("{db}.{schema}.{name} not read: {d:#}"))["rows"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(rows("postgres", "public", "t"), 300);
    assert_eq!(rows("other", "s", "Odd Name"), 7);
    assert_eq!(d["amcheck"]["verdict"], "passed", "{d:#}");
    assert!(
        d["amcheck"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("pg_amcheck"),
        "{d:#}"
    );
    assert_eq!(d["verifybackup"]["verdict"], "passed", "{d:#}");
    assert!(d["wal"]["segments_fetched"].as_u64().unwrap() >= 2, "{d:#}");
    assert!(d["wal"]["bytes"].as_u64().unwrap() > 0, "{d:#}");
    assert!(d["timings"]["total"].as_f64().unwrap() > 0.0);
    assert!(
        d["server_version"]
            .as_str()
            .unwrap()
            .starts_with(&major.to_string()),
        "{d:#}"
    );

    // A drill never touches the archive: nothing of a new timeline was archived.
    let wal = offsitedb::wal::list(&p.store(), SOURCE).unwrap();
    assert!(wal.iter().all(|a| a.name.timeline == 1), "{wal:?}");

    // backup-list shows it, with the tested restore time; history has the run.
    let b = listed(&p);
    assert_eq!(b["pitr_drills"], 1);
    assert_eq!(b["last_pitr_drill"]["result"], "passed", "{b:#}");
    assert_eq!(b["last_pitr_drill"]["drill_id"], d["drill_id"]);
    assert_eq!(
        b["last_pitr_drill"]["tested_restore_seconds"],
        d["timings"]["total"]
    );
    let history = p.cli.ok(&["history", "--source", SOURCE, "--json"]).stdout;
    let history: Vec<Value> = serde_json::from_str(&history).unwrap();
    let run = history
        .iter()
        .find(|r| r["job"] == "pitr_drill")
        .unwrap_or_else(|| panic!("no pitr_drill run: {history:?}"));
    assert_eq!(run["result"], "ok");
    assert_eq!(run["snapshot"], d["base_id"]);

    // To a moment only: the copy holds what was committed by then.
    let at = drill_ok(&p, &["--target-time", &t]);
    let targets = at["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 1, "{at:#}");
    assert_eq!(
        (&targets[0]["kind"], &targets[0]["reached"]),
        (&"time".into(), &true.into())
    );
    let t_rows = at["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["database"] == "postgres" && x["name"] == "t")
        .unwrap()["rows"]
        .clone();
    assert_eq!(t_rows, 250, "{at:#}");

    // In words, to the end only.
    let r = p
        .cli
        .ok(&["drill", "--pitr", "--source", SOURCE, "--latest"]);
    assert!(r.stdout.starts_with("PASSED PITR drill"), "{}", r.stdout);
    assert!(r.stdout.contains("to the end of the archive: reached"));
    let r = p.cli.ok(&["backup-list", "--source", SOURCE]);
    assert!(r.stdout.contains("PITR DRILL"), "{}", r.stdout);
    assert!(r.stdout.contains("passed in"), "{}", r.stdout);
    assert_eq!(listed(&p)["pitr_drills"], 3);
}

#[test]
fn pitr_drill_passes_on_a_good_archive_on_15() {
    passes_on_a_good_archive(15);
}

#[test]
fn pitr_drill_passes_on_a_good_archive_on_18() {
    passes_on_a_good_archive(18);
}

/// An archive with four segments after the base backup: the second can be deleted or damaged,
/// `T` lies after it with commits on both sides.
struct Archive {
    p: Pitr,
    middle: String,
    after: String,
    t: String,
}

fn archive(major: u32) -> Archive {
    let p = Pitr::start(Some(major), "");
    p.sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100);");
    p.cli.ok(&["backup-push", "--source", SOURCE]);
    p.sql("INSERT INTO t SELECT generate_series(101, 200);");
    p.switch_and_archive();
    p.sql("INSERT INTO t SELECT generate_series(201, 300);");
    let middle = p.switch_and_archive();
    p.sql("INSERT INTO t SELECT generate_series(301, 400);");
    std::thread::sleep(Duration::from_millis(300));
    let t = server_now(&p);
    std::thread::sleep(Duration::from_millis(300));
    p.sql("INSERT INTO t SELECT generate_series(401, 500);");
    let after = p.switch_and_archive();
    p.sql("INSERT INTO t SELECT generate_series(501, 600);");
    p.switch_and_archive();
    Archive {
        p,
        middle,
        after,
        t,
    }
}

fn wal_key(name: &str) -> String {
    offsitedb::wal::object::key(SOURCE, &offsitedb::wal::name::WalName::parse(name).unwrap())
}

/// A segment deleted from the middle of the archive: recovery to the end stops there with
/// wal-fetch's error naming the gap (not an early end), and recovery to a time after it cannot
/// get there; then a damaged segment stops recovery
/// with wal-fetch's error. Each fails the drill naming the segment, and is recorded.
#[test]
fn pitr_drill_fails_naming_a_missing_or_damaged_segment() {
    use offsitedb::storage::{ReadStore, WriteStore};
    let a = archive(15);
    let p = &a.p;
    let store = p.store();
    let key = wal_key(&a.middle);
    let good = store.get_bytes(&key).unwrap();
    store.delete(&key).unwrap();

    let d = drill_fails(p, &["--latest"], &a.middle);
    assert_eq!(d["targets"][0]["reached"], false, "{d:#}");
    assert!(
        d["problems"][0]
            .as_str()
            .unwrap()
            .contains("a gap in the WAL"),
        "{d:#}"
    );
    let d = drill_fails(p, &["--target-time", &a.t], &a.middle);
    assert_eq!(d["targets"][0]["kind"], "time");
    assert_eq!(d["targets"][0]["reached"], false, "{d:#}");
    // Both recoveries: whichever one reaches the hole first names it.
    drill_fails(p, &[], &a.middle);
    let b = listed(p);
    assert_eq!(b["pitr_drills"], 3, "every failed drill is recorded: {b:#}");
    assert_eq!(b["last_pitr_drill"]["result"], "failed");

    // Back in place, and the next one damaged: wal-fetch refuses it, recovery stops.
    store.put(&key, &good).unwrap();
    let key = wal_key(&a.after);
    let mut bytes = store.get_bytes(&key).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    store.put(&key, &bytes).unwrap();
    let d = drill_fails(p, &[], &a.after);
    assert!(
        d["problems"].to_string().contains("wal-fetch"),
        "wal-fetch's own words: {d:#}"
    );
    assert_eq!(listed(p)["pitr_drills"], 4);
    let history = p.cli.ok(&["history", "--source", SOURCE, "--json"]).stdout;
    assert!(history.contains("pitr_drill"), "{history}");
    assert!(history.contains("\"failed\""), "{history}");
}

/// A byte flipped in the stored base backup: the fetch refuses it, the drill fails naming the
/// base backup, and is recorded.
#[test]
fn pitr_drill_fails_on_a_damaged_base_backup() {
    use offsitedb::storage::{ReadStore, WriteStore};
    let a = archive(18);
    let p = &a.p;
    let id = listed(p)["id"].as_str().unwrap().to_string();
    let store = p.store();
    let key = format!("base/{SOURCE}/{id}/data");
    let mut bytes = store.get_bytes(&key).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    store.put(&key, &bytes).unwrap();
    let named = format!("base backup {SOURCE}/{id}:");
    let d = drill_fails(p, &[], &named);
    assert!(d["targets"].as_array().unwrap().is_empty(), "{d:#}");
    let b = listed(p);
    assert_eq!(b["pitr_drills"], 1, "{b:#}");
    assert_eq!(b["last_pitr_drill"]["result"], "failed");
}
