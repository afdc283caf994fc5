//! `prune` of base backups by what is known of them: their PITR drill records (a drill-passed
//! base backup is the "newest sealed" one retention always keeps; a newest one that failed its
//! drill holds everything) and base backup manifests that cannot be read (nothing older goes).
//! On the synthetic archive of wal_inspect.rs: base backups B1 (timeline 1, segment 2), B2
//! (timeline 1, segment 5), B3 (timeline 2, segment 12).

use offsitedb::catalog::SnapshotId;
use offsitedb::catalog::base::base_manifest_key;
use offsitedb::catalog::base_drill::{
    BASE_DRILL_VERSION, BaseDrillRecord, Check, PitrTimings, WalReplayed,
};
use offsitedb::catalog::drill::DrillResult;
use offsitedb::crypto::seal_bytes;
use offsitedb::wal::name::Lsn;
use serde_json::Value;

use crate::wal_inspect::{Archive, B1, B2, B3, SOURCE, seg};

/// A PITR drill record of `base`, dated an hour after it started.
pub(crate) fn drill_record(base: &str, passed: bool) -> BaseDrillRecord {
    let base_id = SnapshotId::parse(base).unwrap();
    let at = base_id.time() + jiff::SignedDuration::from_hours(1);
    let drill_id = SnapshotId::parse(&format!("{}-dddddd", at.strftime("%Y%m%dT%H%M%SZ"))).unwrap();
    BaseDrillRecord {
        base_drill_version: BASE_DRILL_VERSION,
        drill_id,
        base_id,
        source: SOURCE.into(),
        result: if passed {
            DrillResult::Passed
        } else {
            DrillResult::Failed
        },
        started: at,
        finished: at + jiff::SignedDuration::from_secs(30),
        timings: PitrTimings::default(),
        targets: Vec::new(),
        wal: WalReplayed {
            from_lsn: Lsn(0),
            ..WalReplayed::default()
        },
        verifybackup: Check::not_run("test"),
        amcheck: Check::not_run("test"),
        tables: Vec::new(),
        problems: if passed {
            Vec::new()
        } else {
            vec!["recovery to the end of the archived WAL failed".into()]
        },
        notes: Vec::new(),
        server_version: "18.1".into(),
        created_by: "base_retention test".into(),
    }
}

fn prune(a: &Archive, extra: &[&str]) -> Value {
    let mut args = vec!["prune", "--source", SOURCE, "--keep", "last=1", "--json"];
    args.extend_from_slice(extra);
    let r = a.cli().ok(&args);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    v.as_array().map_or(v.clone(), |a| a[0].clone())
}

/// The decision on `id`: kept or not, and its reasons in one string.
fn decision(p: &Value, id: &str) -> (bool, String) {
    let d = p["base_backups"]["plan"]["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id)
        .unwrap_or_else(|| panic!("no decision on {id}: {p:#}"));
    (d["keep"] == true, d["reasons"].to_string())
}

fn base_exists(a: &Archive, id: &str) -> bool {
    let id = SnapshotId::parse(id).unwrap();
    a.store()
        .head(&base_manifest_key(SOURCE, &id))
        .unwrap()
        .is_some()
}

/// B1 passed its PITR drill, B2 and B3 failed theirs: keep last=1 must not let B1 (the only
/// base backup known to restore) and the WAL from its start age out while the newer ones fail.
#[test]
fn the_newest_drill_passed_base_backup_and_its_wal_stay_while_newer_ones_fail() {
    let a = Archive::standard();
    a.r.commit_base_drill(&drill_record(B1, true)).unwrap();
    a.r.commit_base_drill(&drill_record(B2, false)).unwrap();
    a.r.commit_base_drill(&drill_record(B3, false)).unwrap();
    let p = prune(&a, &[]);
    assert_eq!(p["base_backups"]["deleted"], serde_json::json!([]), "{p:#}");
    let held = p["base_backups"]["plan"]["held"].as_str().unwrap_or("");
    assert!(
        held.contains(&format!("the newest base backup, {B3}, is drill failed")),
        "{p:#}"
    );
    let (kept, why) = decision(&p, B1);
    assert!(kept && why.contains("whose PITR drill passed"), "{why}");
    assert_eq!(p["wal"]["files_deleted"], 0, "{p:#}");
    for id in [B1, B2, B3] {
        assert!(base_exists(&a, id), "{id} was deleted");
    }
    assert!(a.exists(&seg(1, 2)), "the WAL from B1's start is gone");

    // Without the hold (the newest is not drilled yet): the newest drill-passed one is kept
    // by the "newest sealed" rule, the failed one between goes, and B1's WAL stays.
    let a = Archive::standard();
    a.r.commit_base_drill(&drill_record(B1, true)).unwrap();
    a.r.commit_base_drill(&drill_record(B2, false)).unwrap();
    let p = prune(&a, &["--dry-run"]);
    assert!(p["base_backups"]["plan"]["held"].is_null(), "{p:#}");
    let (kept, why) = decision(&p, B1);
    assert!(kept && why.contains("whose PITR drill passed"), "{why}");
    assert!(!decision(&p, B2).0, "{p:#}");
    assert_eq!(p["wal"]["keep_from"], seg(1, 2), "{p:#}");

    // An unreadable latest record counts as a failed drill, and keeps the base backup.
    let garbage = format!("base/{SOURCE}/{B2}/drills/20261112T000000Z-zzzzzz");
    a.store().put(&garbage, b"not a drill record").unwrap();
    let p = prune(&a, &[]);
    let (kept, why) = decision(&p, B2);
    assert!(kept && why.contains("PITR drill record"), "{why}");
    assert!(why.contains("unreadable"), "{why}");
    assert_eq!(p["base_backups"]["deleted"], serde_json::json!([]), "{p:#}");
    assert!(base_exists(&a, B1) && base_exists(&a, B2) && base_exists(&a, B3));
}

/// A base backup manifest that cannot be read (garbage, or of a version this offsitedb does not
/// read) may be an incremental whose chain the older base backups are: keep last=1 deletes none
/// older than it, and says why; the ones newer than it follow the rules.
#[test]
fn no_base_backup_older_than_an_unreadable_manifest_is_deleted() {
    let plant = |a: &Archive, id: &str, bytes: &[u8]| {
        let id = SnapshotId::parse(id).unwrap();
        a.store()
            .put(&base_manifest_key(SOURCE, &id), bytes)
            .unwrap();
    };
    // Newer than all three, garbage.
    let a = Archive::standard();
    let newest = "20261125T030000Z-uuuuuu";
    plant(&a, newest, b"not a manifest");
    let p = prune(&a, &[]);
    assert_eq!(p["base_backups"]["deleted"], serde_json::json!([]), "{p:#}");
    for id in [B1, B2] {
        let (kept, why) = decision(&p, id);
        assert!(kept, "{p:#}");
        assert!(
            why.contains(&format!(
                "older than base backup {newest}, whose manifest is unreadable"
            )),
            "{why}"
        );
        assert!(base_exists(&a, id), "{id} was deleted");
    }
    assert!(a.exists(&seg(1, 2)), "the WAL from B1's start is gone");

    // Between B1 and B2, sealed with the repository's key but of a version from the future:
    // B1 stays, B2 (newer than it, no rule keeps it) goes.
    let a = Archive::standard();
    let between = "20261105T030000Z-uuuuuu";
    let sealed = seal_bytes(a.r.key(), br#"{"base_manifest_version": 99}"#).unwrap();
    plant(&a, between, &sealed);
    let p = prune(&a, &[]);
    assert!(
        p["base_backups"]["unreadable"]
            .to_string()
            .contains(between),
        "{p:#}"
    );
    assert_eq!(
        p["base_backups"]["deleted"],
        serde_json::json!([B2]),
        "{p:#}"
    );
    let (kept, why) = decision(&p, B1);
    assert!(kept && why.contains(between), "{why}");
    assert!(base_exists(&a, B1) && !base_exists(&a, B2) && base_exists(&a, B3));
}

/// LATEST for base backups agrees with `latest` for snapshots: a newest base backup dated ahead
/// of this machine's clock is refused, naming it and the newest one before now.
#[test]
fn latest_base_backup_is_not_a_future_dated_one() {
    let a = Archive::standard();
    let future = "20991101T030000Z-ffffff";
    a.base(future, 2, 14);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("pgdata");
    let r = a.cli().fails(
        &[
            "backup-fetch",
            "--source",
            SOURCE,
            target.to_str().unwrap(),
            "LATEST",
        ],
        3,
        "\"latest\" is unclear",
    );
    assert!(
        r.stderr.contains(future) && r.stderr.contains(B3),
        "{}",
        r.stderr
    );
    assert!(!target.exists(), "nothing was fetched");
}
