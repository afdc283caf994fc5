//! `offsitedb verify`: the attacks that change no object but delete or roll back (a snapshot in
//! the middle, the newest one, a failed drill record, a whole bucket a day older, manifests
//! swapped between sources), each found and named, on real PostgreSQL and real storage.

use std::path::Path;

use offsitedb::catalog::{DrillResult, Repository, SnapshotId};
use offsitedb::crypto::MasterKey;
use offsitedb::storage::local::LocalStore;
use serde_json::Value;

use crate::common::{Repo, Run};

const SQL: &str = "CREATE TABLE t (id int PRIMARY KEY, v text);
                   INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 500) g;";

fn verify(f: &Repo, extra: &[&str]) -> (Run, Value) {
    let mut args = vec!["verify", "--json"];
    args.extend_from_slice(extra);
    let r = f.cli.run(&args);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| {
        panic!(
            "verify --json printed no JSON ({e}): {} {}",
            r.stdout, r.stderr
        )
    });
    (r, v)
}

/// Every finding of every source as (kind, message).
fn findings(v: &Value) -> Vec<(String, String)> {
    v["sources"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["findings"].as_array().unwrap().iter())
        .map(|f| {
            (
                f["kind"].as_str().unwrap().to_string(),
                f["message"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn clean(f: &Repo) -> Value {
    let (r, v) = verify(f, &[]);
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    assert_eq!(v["errors"], 0, "{v:#}");
    v
}

/// Expects exit `code` and a finding of `kind` whose message contains `needle`.
fn finds(f: &Repo, code: i32, kind: &str, needle: &str) -> Value {
    let (r, v) = verify(f, &[]);
    let all = findings(&v);
    assert_eq!(r.code, code, "{all:#?}\n{}", r.stderr);
    assert!(
        all.iter().any(|(k, m)| k == kind && m.contains(needle)),
        "no {kind} finding with {needle:?} in {all:#?}"
    );
    assert!(r.stderr.contains("error: verify: "), "{}", r.stderr);
    v
}

fn copy_dir(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

fn replace_dir(dir: &Path, with: &Path) {
    std::fs::remove_dir_all(dir).unwrap();
    copy_dir(with, dir);
}

/// A drill record saying the snapshot failed, written by the product's own writer (a real
/// failed drill needs a broken restore; the record is what matters here).
fn failed_drill_record(f: &Repo, source: &str, id: &str) -> String {
    let key = MasterKey::load_file(&f.key, &mut |_| {}).unwrap();
    let repo =
        Repository::open_for_writing(Box::new(LocalStore::new(f.path().into())), key).unwrap();
    let entry = repo.resolve(id, Some(source)).unwrap();
    let mut r = repo.last_drill(&entry).unwrap().expect("a drill ran");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    r.drill_id = SnapshotId::new(jiff::Timestamp::now()).unwrap();
    r.result = DrillResult::Failed;
    r.problems = vec!["table t: 499 rows restored, 500 dumped".into()];
    repo.commit_drill(&r).unwrap();
    format!("snapshots/{source}/{id}/drills/{}", r.drill_id)
}

#[test]
fn deleted_snapshots_a_vanished_failed_drill_and_a_rolled_back_bucket_are_found() {
    let f = Repo::local().with_source("app", SQL);
    let url = f.src().url("app");
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(f.backup(&url, "app").id);
    }
    let (r, _) = f.drill(&ids[1], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let failed = failed_drill_record(&f, "app", &ids[1]);
    let v = clean(&f);
    let app = &v["sources"][0];
    assert_eq!(app["snapshots"], 4, "{v:#}");
    assert_eq!(app["drill_records"], 2, "{v:#}");
    assert_eq!(app["log_entries"], 6, "{v:#}");
    let human = f.cli.ok(&["verify"]).stdout;
    assert!(
        human.contains("app: ok (6 log entries; 4 snapshots"),
        "{human}"
    );
    assert!(human.contains("keys needed: "), "{human}");

    let repo = f.path().to_path_buf();
    let good = f.dir.path().join("good-copy");
    copy_dir(&repo, &good);

    // A snapshot in the middle, deleted whole.
    std::fs::remove_dir_all(repo.join("snapshots/app").join(&ids[2])).unwrap();
    finds(
        &f,
        7,
        "deleted",
        &format!("snapshot app/{} was deleted: log entry", ids[2]),
    );
    replace_dir(&repo, &good);
    clean(&f);

    // The newest snapshot's manifest: it no longer exists for list, and verify says so.
    std::fs::remove_file(f.object("app", &ids[3], "manifest")).unwrap();
    assert_eq!(f.ids(Some("app")).len(), 3);
    finds(&f, 7, "deleted", &format!("snapshot app/{}", ids[3]));
    replace_dir(&repo, &good);

    // The failed drill record: the snapshot would look sealed again.
    std::fs::remove_file(repo.join(&failed)).unwrap();
    let status = |id: &str| {
        f.list(Some("app"))
            .into_iter()
            .find(|s| s.id == id)
            .unwrap()
            .status
    };
    assert_eq!(status(&ids[1]), "sealed");
    finds(&f, 7, "deleted", "recorded a FAILED drill");
    replace_dir(&repo, &good);

    // A manifest replaced by another snapshot's (same source): named as misplaced.
    std::fs::copy(
        f.object("app", &ids[0], "manifest"),
        f.object("app", &ids[3], "manifest"),
    )
    .unwrap();
    finds(&f, 7, "misplaced", &ids[0]);
    replace_dir(&repo, &good);
    clean(&f);

    // A prune deletes with a log entry first: nothing to report.
    let p = f.cli.ok(&["prune", "--source", "app", "--keep", "last=2"]);
    assert!(!p.stdout.is_empty());
    let v = clean(&f);
    assert_eq!(v["sources"][0]["pruned"].as_u64().unwrap(), 4, "{v:#}");

    // Rolled back to the copy taken before the prune (a day of backups earlier): the log is
    // shorter than the one this machine saw. list warns, verify fails with its own code.
    replace_dir(&repo, &good);
    let listed = f.cli.ok(&["list", "--source", "app"]);
    assert!(
        listed
            .stderr
            .contains("rolled back or its newest objects deleted"),
        "{}",
        listed.stderr
    );
    let v = finds(&f, 15, "rolled_back", "this machine has seen entry 7");
    assert_eq!(v["sources"][0]["remembered"]["seq"], 7);
    f.cli.fails(&["verify"], 15, "was rolled back");
    // Another machine (another state folder) cannot tell: it has not seen the newer log.
    let other = f.cli.clone_with(
        "OFFSITEDB_STATE_DIR",
        &f.dir.path().join("other").display().to_string(),
    );
    assert_eq!(other.run(&["verify"]).code, 0);
    // Written again after the rollback: the entry this machine saw is not the one there now.
    f.backup(&url, "app");
    finds(
        &f,
        15,
        "rewritten",
        "log entry 7 of app is not the one this machine saw",
    );
    // Accepted by the user: from then on it is the repository's state.
    assert_eq!(f.cli.run(&["verify", "--accept"]).code, 15);
    clean(&f);
}

#[test]
fn s3_manifests_swapped_between_sources_and_read_data_damage_are_named() {
    let f = Repo::s3("v").with_source("app", SQL);
    let url = f.src().url("app");
    let a = f.backup(&url, "alpha").id;
    let b = f.backup(&url, "beta").id;
    let v = clean(&f);
    assert_eq!(v["sources"].as_array().unwrap().len(), 2, "{v:#}");
    let (r, v) = verify(&f, &["--read-data", "--source", "alpha"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(v["sources"][0]["objects_read"], 1);
    assert!(v["sources"][0]["bytes_read"].as_u64().unwrap() > 0);

    let store = f.store();
    let get = |k: &str| {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut store.get(k).unwrap(), &mut out).unwrap();
        out
    };
    let (ka, kb) = (
        format!("snapshots/alpha/{a}/manifest"),
        format!("snapshots/beta/{b}/manifest"),
    );
    let (ma, mb) = (get(&ka), get(&kb));
    store.put(&ka, &mb).unwrap();
    store.put(&kb, &ma).unwrap();
    let v = finds(
        &f,
        7,
        "misplaced",
        &format!("describes beta/{b}, not alpha/{a}"),
    );
    assert!(
        findings(&v)
            .iter()
            .any(|(k, m)| k == "misplaced" && m.contains(&format!("describes alpha/{a}"))),
        "{v:#}"
    );
    store.put(&ka, &ma).unwrap();
    store.put(&kb, &mb).unwrap();
    clean(&f);

    // One flipped byte in a data object: same size, so only --read-data sees it.
    let data = format!("snapshots/alpha/{a}/data");
    let mut bytes = get(&data);
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    store.put(&data, &bytes).unwrap();
    clean(&f);
    let (r, v) = verify(&f, &["--read-data"]);
    assert_eq!(r.code, 7, "{}", r.stderr);
    assert!(
        findings(&v)
            .iter()
            .any(|(k, m)| k == "damaged" && m.contains(&format!("snapshot alpha/{a} is damaged"))),
        "{v:#}"
    );
}
