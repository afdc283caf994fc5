//! Drills of databases that are right but awkward (each made a good snapshot fail its drill
//! once): an extension's own configuration rows, a database named `postgres`, partitions written
//! through their root, PGOPTIONS in pg_dump's environment, and row level security on the drill
//! server. The shared helpers are in drill.rs.

use crate::common::{Drill, json};
use crate::drill::{app_on_15, drill_repo, pg15, pypi_18, source};

/// A test extension with a configuration table (like PostGIS's `spatial_ref_sys`): it creates
/// 100 rows itself, and pg_dump dumps only the rows added later. Installed into PostgreSQL 18's
/// own folder under .pg/ (written under a temporary name, then renamed: tests run in parallel).
fn install_config_extension() {
    let dir = pypi_18().join("../share/extension");
    for (name, text) in [
        (
            "offsitedb_test_cfg.control",
            "default_version = '1.0'\nrelocatable = false\nschema = public\n\
             comment = 'OffsiteDB tests: an extension with a configuration table'\n",
        ),
        (
            "offsitedb_test_cfg--1.0.sql",
            "CREATE TABLE cfg (id int PRIMARY KEY, note text);\n\
             INSERT INTO cfg SELECT g, 'shipped ' || g FROM generate_series(1, 100) g;\n\
             SELECT pg_catalog.pg_extension_config_dump('cfg', 'WHERE id > 100');\n",
        ),
    ] {
        let tmp = dir.join(format!("{name}.{}", std::process::id()));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

/// Databases that are right but awkward, each of which made a good snapshot fail its drill:
/// the source database is named `postgres` (every new cluster has one); an extension's
/// configuration table holds rows the extension creates itself; pg_dump writes a partitioned
/// table's rows through its root (it must, for hash partitioning on an enum), so rows may land
/// in other partitions on restore; and pg_dump ran with a PGOPTIONS time zone in its environment.
#[test]
fn awkward_but_correct_databases_pass_their_drills() {
    install_config_extension();
    let dirs = vec![pypi_18()];
    let src = source(18, &dirs);
    src.cluster
        .execute(
            "postgres",
            "CREATE EXTENSION offsitedb_test_cfg;
             INSERT INTO cfg SELECT g, 'mine ' || g FROM generate_series(101, 130) g;
             CREATE TYPE spent AS ENUM ('a', 'b', 'c', 'd', 'e', 'f', 'g');
             DROP TYPE spent; -- so that the restore gives the labels other OIDs, other hashes
             CREATE TYPE color AS ENUM ('red', 'green', 'blue');
             CREATE TABLE p (c color, v int) PARTITION BY HASH (c);
             CREATE TABLE p0 PARTITION OF p FOR VALUES WITH (MODULUS 2, REMAINDER 0);
             CREATE TABLE p1 PARTITION OF p FOR VALUES WITH (MODULUS 2, REMAINDER 1);
             INSERT INTO p SELECT (ARRAY['red', 'green', 'blue'])[1 + g % 3]::color, g
               FROM generate_series(1, 999) g;
             CREATE TABLE happened (id int, at timestamptz);
             INSERT INTO happened SELECT g, timestamptz '2026-03-29 00:30:00+00' + g * interval '7 minutes'
               FROM generate_series(1, 300) g;",
        )
        .unwrap();
    let mut repo = drill_repo(&dirs);
    // Tiny batches over three connections, and every table read in block ranges.
    repo.cli = repo
        .cli
        .clone_with("OFFSITEDB_DRILL_BATCH_KIB", "1")
        .env("OFFSITEDB_DRILL_SPLIT_MIB", "0");
    let with_tz = repo
        .cli
        .clone_with("PGOPTIONS", "-c TimeZone=Pacific/Chatham");
    let backup = with_tz.backup(&src.url("postgres"), "app");
    let id = backup.id.as_str();
    let manifest = repo.show(id);
    let copies: Vec<&str> = manifest
        .verification
        .tables
        .iter()
        .filter_map(|t| t.copy.as_deref())
        .collect();
    assert!(
        copies
            .iter()
            .any(|c| c.contains("COPY public.p (c, v) FROM stdin;")),
        "pg_dump wrote the partitions through their root: {copies:?}"
    );

    let (r, drill) = repo.drill(id, &["--jobs", "3"]);
    assert_eq!(r.code, 0, "{}\n{drill:#?}", r.stderr);
    let p = drill.table("p");
    assert_eq!((p.expected_rows, p.restored_rows), (999, Some(999)));
    assert_eq!(p.digest_ok, Some(true));
    let cfg = drill.table("cfg");
    assert_eq!((cfg.expected_rows, cfg.restored_rows), (30, Some(30)));
    assert_eq!(cfg.digest_ok, Some(true));
    assert_eq!(drill.table("happened").digest_ok, Some(true));
    let notes = drill.notes.join("\n");
    assert!(
        notes.contains("restored as offsitedb_drill_postgres"),
        "{notes}"
    );
    assert!(
        notes.contains("public.cfg belongs to an extension, which created 100"),
        "{notes}"
    );
}

/// On a `--drill-server` whose role is not a superuser, the drill's role owns the restored tables,
/// and FORCE ROW LEVEL SECURITY would hold it to the policies: rows it may not see must not
/// read as missing rows.
#[test]
fn row_level_security_does_not_hide_rows_from_a_drill() {
    let (src, repo) = app_on_15(
        "CREATE TABLE docs (id int, owner text);
         INSERT INTO docs SELECT g, 'user' || (g % 3) FROM generate_series(1, 90) g;
         ALTER TABLE docs ENABLE ROW LEVEL SECURITY;
         ALTER TABLE docs FORCE ROW LEVEL SECURITY;
         CREATE POLICY mine ON docs USING (owner = current_user);",
    );
    let scratch = source(15, &pg15());
    scratch
        .cluster
        .execute(
            "postgres",
            "CREATE ROLE driller LOGIN CREATEDB PASSWORD 'drill-pw'",
        )
        .unwrap();
    let url = format!(
        "postgres://driller:drill-pw@127.0.0.1:{}/postgres",
        scratch.cluster.port()
    );
    repo.backup(&src.url("app"), "app");
    let counted = repo.cli.clone_with("OFFSITEDB_VERIFY", "counts");
    counted.ok(&["backup", "--source", &src.url("app"), "--name", "counted"]);
    for (cli, source) in [(&repo.cli, "app"), (&counted, "counted")] {
        let r = cli.run(&[
            "drill",
            "latest",
            "--source",
            source,
            "--drill-server",
            &url,
            "--json",
        ]);
        assert_eq!(r.code, 0, "{source}: {}\n{}", r.stderr, r.stdout);
        let drill: Drill = json(&r);
        assert_eq!(drill.tables[0].restored_rows, Some(90), "{drill:#?}");
        assert!(
            drill
                .notes
                .join("\n")
                .contains("FORCE ROW LEVEL SECURITY turned off"),
            "{drill:#?}"
        );
    }
}
