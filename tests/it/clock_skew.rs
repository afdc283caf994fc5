//! Retention and "sealed" must rest on what can be trusted: a snapshot or a drill record dated
//! ahead of this machine's clock (a host whose clock ran ahead, or someone holding the key) is
//! reported and neither counts as the newest nor seals anything; and a drill record that cannot be
//! read counts as a failed drill, so it never lifts the prune's hold nor exposes the only good copy.
//! Snapshots and records are written through the library (tests/it/planted.rs) with crafted dates.

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use crate::common::Cli;
use crate::planted::Planted;

fn hours(h: i64) -> SignedDuration {
    SignedDuration::from_hours(h)
}

fn list(p: &Planted, cli: &Cli) -> (Vec<Value>, String) {
    let r = p.run(cli, &["list", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    (serde_json::from_str(&r.stdout).unwrap(), r.stderr)
}

fn status<'a>(listed: &'a [Value], id: &str) -> &'a Value {
    listed
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("{id} not listed: {listed:#?}"))
}

/// `prune --source files --keep last=1 --json`: the report of the one source.
fn prune(p: &Planted, cli: &Cli) -> (Value, String) {
    let r = p.run(
        cli,
        &["prune", "--source", "files", "--keep", "last=1", "--json"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: Vec<Value> = serde_json::from_str(&r.stdout).unwrap();
    (v[0].clone(), r.stderr)
}

#[test]
fn a_future_dated_snapshot_neither_lifts_the_hold_nor_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let p = Planted::new(dir.path());
    let cli = Cli::new();
    let now = Timestamp::now();
    // Two sealed copies, then two backups whose drills failed...
    let mut ids = Vec::new();
    for (age, passed) in [(72, true), (48, true), (24, false), (1, false)] {
        let id = p.empty_folder("files", now - hours(age));
        p.drill("files", &id, now - hours(age) + hours(1) / 2, passed);
        ids.push(id);
    }
    // ...and one from a host whose clock runs 400 days ahead, drilled there and sealed.
    let ahead = now + hours(24 * 400);
    let future = p.empty_folder("files", ahead);
    p.drill("files", &future, ahead + hours(1), true);

    let (listed, warnings) = list(&p, &cli);
    assert_eq!(listed.len(), 5);
    assert!(
        warnings.contains(&format!("snapshot files/{future} is future-dated"))
            && warnings.contains("9600 hours ahead of this machine's clock"),
        "{warnings}"
    );
    assert_ne!(status(&listed, future.as_str())["status"], "sealed");
    // `latest` (for restore, drill, show) is not guessed when the newest is future-dated: the
    // error names it and the newest before now.
    let shown = p.run(&cli, &["show", "latest", "--source", "files"]);
    assert_eq!(shown.code, 3, "{}", shown.stderr);
    assert!(
        shown.stderr.contains("\"latest\" is unclear")
            && shown.stderr.contains(future.as_str())
            && shown
                .stderr
                .contains(&format!("or {} (the newest before now)", ids[3])),
        "{}",
        shown.stderr
    );

    // The newest snapshot that is not in the future failed its drill: nothing is deleted, and
    // the future-dated one is kept and named.
    let (report, _) = prune(&p, &cli);
    assert_eq!(report["deleted"], Value::Array(vec![]), "{report:#}");
    let held = report["plan"]["held"].as_str().unwrap_or_default();
    assert!(
        held.contains(&format!("the newest snapshot, {}, is drill failed", ids[3])),
        "{report:#}"
    );
    let decision = report["plan"]["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == future.as_str())
        .unwrap();
    assert!(
        decision["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("future-dated: started "),
        "{decision:#}"
    );
    assert_eq!(list(&p, &cli).0.len(), 5);

    // Once a backup passes its drill, retention runs again: the recent sealed copy is the
    // newest sealed one, and the future-dated snapshot is still kept.
    let good = p.empty_folder("files", now - hours(1) / 2);
    p.drill("files", &good, now - hours(1) / 4, true);
    let (report, _) = prune(&p, &cli);
    assert!(report["plan"]["held"].is_null(), "{report:#}");
    let mut left: Vec<String> = list(&p, &cli)
        .0
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    left.sort();
    let mut want = vec![good.to_string(), future.to_string()];
    want.sort();
    assert_eq!(left, want);
}

#[test]
fn a_future_dated_passing_drill_does_not_keep_a_snapshot_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let p = Planted::new(dir.path());
    let cli = Cli::new();
    let now = Timestamp::now();
    let id = p.empty_folder("files", now - hours(3));
    p.drill("files", &id, now - hours(2), true);
    p.drill("files", &id, now - hours(1), false);
    let forged = p.drill("files", &id, now + hours(24 * 30), true);

    let (listed, warnings) = list(&p, &cli);
    let s = status(&listed, id.as_str());
    assert_eq!(s["status"], "drill_failed", "{s:#}");
    assert!(
        warnings.contains(&format!(
            "drill record {forged} of files/{id} is future-dated"
        )) && warnings.contains("not trusted"),
        "{warnings}"
    );
    assert!(s["warnings"].to_string().contains("future-dated"), "{s:#}");

    // A drill record a few minutes ahead (clocks disagree a little) is trusted.
    let id = p.empty_folder("files", now - hours(1));
    p.drill("files", &id, now - hours(1) / 2, false);
    p.drill("files", &id, now + SignedDuration::from_mins(5), true);
    let (listed, _) = list(&p, &cli);
    assert_eq!(status(&listed, id.as_str())["status"], "sealed");
}

#[test]
fn an_unreadable_latest_drill_record_counts_as_a_failed_drill() {
    let dir = tempfile::tempdir().unwrap();
    let p = Planted::new(dir.path());
    let cli = Cli::new();
    let now = Timestamp::now();
    // The only sealed snapshot, whose latest drill record is then damaged in the repository.
    let only = p.empty_folder("files", now - hours(48));
    p.drill("files", &only, now - hours(47), true);
    let latest = p.drill("files", &only, now - hours(46), true);
    let file = p.drill_file("files", &only, &latest);
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() - 20;
    bytes[at] ^= 0x40;
    std::fs::write(&file, bytes).unwrap();
    // A newer snapshot, not drilled yet.
    let newer = p.empty_folder("files", now - hours(1));

    let (listed, warnings) = list(&p, &cli);
    let s = status(&listed, only.as_str());
    assert_eq!(s["status"], "drill_failed", "{s:#}");
    assert!(
        s["status_reason"]
            .as_str()
            .unwrap_or_default()
            .starts_with("latest drill record unreadable"),
        "{s:#}"
    );
    assert!(
        warnings.contains(&format!(
            "the latest drill record of files/{only} ({latest}) is unreadable"
        )) && warnings.contains("counted as a failed drill"),
        "{warnings}"
    );

    // keep last=1 would keep only the newer one: the sealed copy stays all the same.
    let (report, _) = prune(&p, &cli);
    assert_eq!(report["deleted"], Value::Array(vec![]), "{report:#}");
    let decision = report["plan"]["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == only.as_str())
        .unwrap();
    assert!(
        decision["reasons"].to_string().contains("unreadable"),
        "{decision:#}"
    );
    assert_eq!(list(&p, &cli).0.len(), 2);

    // Garbage under a drill record's name, written without the key, on the newest snapshot:
    // it counts as a failed drill of the newest, and holds the prune.
    let garbage = offsitedb::catalog::SnapshotId::new(now - hours(1) / 2).unwrap();
    let path = p.drill_file("files", &newer, &garbage);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"not a drill record").unwrap();
    let (report, _) = prune(&p, &cli);
    assert_eq!(report["deleted"], Value::Array(vec![]), "{report:#}");
    assert!(
        report["plan"]["held"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("the newest snapshot, {newer}, is drill failed")),
        "{report:#}"
    );
    // `show` says the same.
    let r = p.run(&cli, &["show", newer.as_str(), "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["status"], "drill_failed", "{v:#}");
}
