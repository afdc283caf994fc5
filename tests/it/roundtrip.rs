//! Data in, backup, restore, same data out: a database with every common type and shape, through
//! the real binary, into SeaweedFS and a local folder, restored and compared with the source
//! (schema dump, every table's content, large objects, sequence positions, and the full dump).

use std::process::Command;

use offsitedb::postgres::binaries;

use crate::common::{Repo, RestoreReport, Snapshot, Source, json, venv_tool};

/// Several schemas; bytea with every byte value; jsonb, arrays, numeric, timestamptz, enums,
/// domains; awkward text; a 20 MB toasted value; large objects; sequences; a partitioned table;
/// a view and a materialized view; a table with no columns.
pub const RICH_SQL: &str = r#"
CREATE SCHEMA app;
CREATE SCHEMA "audit log";
CREATE TYPE app.mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN app.email AS text CHECK (VALUE ~ '^[^@]+@[^@]+$');
CREATE TABLE app.everything (
    id serial PRIMARY KEY,
    i2 smallint, i4 int, i8 bigint, n numeric(40,12), f4 real, f8 double precision,
    b bool, t text, vc varchar(50), c char(5), bt bytea, j json, jb jsonb,
    arr int[], tarr text[], ts timestamp, tstz timestamptz, d date, tm time, iv interval,
    u uuid, ip inet, net cidr, mac macaddr, mood app.mood, mail app.email,
    pt point, rng int4range, bits bit varying(16)
);
INSERT INTO app.everything (i2, i4, i8, n, f4, f8, b, t, vc, c, bt, j, jb, arr, tarr, ts, tstz, d, tm, iv,
                            u, ip, net, mac, mood, mail, pt, rng, bits) VALUES
  (32767, -2147483648, 9223372036854775807, 1234567890123456789012345678.123456789012, 3.14, 'NaN', true,
   E'tab\there\nnewline\\backslash \u00e9\u00e8 \u65e5\u672c \U0001F418 ''quote''', 'varchar', 'ab',
   (SELECT decode(string_agg(lpad(to_hex(g), 2, '0'), ''), 'hex') FROM generate_series(0, 255) g),
   '{"a": [1, 2, {"b": null}]}', '{"z": 1, "a": "\u00fc\n\t"}', '{1,NULL,3}', '{"x y","\"q\"",NULL,"\\"}',
   '2026-11-21 03:15:00.123456', '2026-11-21 03:15:00.654321+05:30', '2026-02-28', '23:59:59.999999',
   '1 year 2 mons 3 days 04:05:06.789', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '192.168.0.1/24', '10.0.0.0/8',
   '08:00:2b:01:02:03', 'happy', 'ops@example.com', '(1.5,-2.25)', '[1,10)', B'1011'),
  (-32768, 0, -1, -0.000000000001, '-Infinity', 'Infinity', false, '', '', '', '\x', 'null', '[]', '{}', '{}',
   'infinity', '-infinity', '0001-01-01', '00:00', '-1 day', '00000000-0000-0000-0000-000000000000',
   '::1', '::/0', 'ff:ff:ff:ff:ff:ff', 'sad', 'a@b', '(0,0)', 'empty', B''),
  (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
   NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO app.everything (i4, t, jb) SELECT g, 'row ' || g, jsonb_build_object('g', g) FROM generate_series(1, 5000) g;

CREATE TABLE app.big_toast (id int PRIMARY KEY, payload text);
INSERT INTO app.big_toast SELECT 1, string_agg(md5(g::text), '') FROM generate_series(1, 655360) g;

CREATE SEQUENCE "audit log".counter START 100 INCREMENT 7;
SELECT nextval('"audit log".counter') FROM generate_series(1, 5);
CREATE SEQUENCE app.unused_seq;
CREATE SEQUENCE app.reset_seq;
SELECT setval('app.reset_seq', 42, false);

CREATE TABLE "audit log".events (id bigserial, at date NOT NULL, msg text) PARTITION BY RANGE (at);
CREATE TABLE "audit log".events_2025 PARTITION OF "audit log".events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE "audit log".events_2026 PARTITION OF "audit log".events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE "audit log".events_other PARTITION OF "audit log".events DEFAULT;
INSERT INTO "audit log".events (at, msg)
SELECT date '2024-12-01' + (g % 900), 'event ' || g FROM generate_series(1, 3000) g;

CREATE VIEW app.happy_people AS SELECT id, mail FROM app.everything WHERE mood = 'happy';
CREATE MATERIALIZED VIEW "audit log".per_year AS
  SELECT extract(year FROM at) AS y, count(*) AS n FROM "audit log".events GROUP BY 1;
CREATE INDEX ON app.everything (i4);
COMMENT ON TABLE app.everything IS 'every type, with a comment';
CREATE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.t := NEW.t; RETURN NEW; END $$;
CREATE TRIGGER touch BEFORE UPDATE ON app.everything FOR EACH ROW EXECUTE FUNCTION app.touch();

CREATE TABLE public.no_columns ();
INSERT INTO public.no_columns DEFAULT VALUES;
INSERT INTO public.no_columns DEFAULT VALUES;

SELECT lo_from_bytea(0, (SELECT decode(string_agg(lpad(to_hex(g % 256), 2, '0'), ''), 'hex') FROM generate_series(1, 300000) g));
SELECT lo_from_bytea(424242, '\x00ff00ff');
COMMENT ON LARGE OBJECT 424242 IS 'a large object with a comment';
"#;

/// Everything that must survive a round trip, in a form that compares with `==`.
#[derive(Debug, PartialEq)]
pub struct Fingerprint {
    /// (table, rows, md5 of the rows in a canonical order)
    pub tables: Vec<(String, i64, String)>,
    pub large_objects: Vec<(u32, String)>,
    pub sequences: Vec<(String, i64, bool)>,
}

pub fn fingerprint(src: &Source, db: &str) -> Fingerprint {
    let mut c = src.client(db);
    let rels: Vec<String> = c
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
             ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let tables = rels
        .into_iter()
        .map(|t| {
            let row = c
                .query_one(
                    &format!("SELECT count(*), coalesce(md5(string_agg(x::text, E'\\n' ORDER BY x::text)), '') FROM {t} x"),
                    &[],
                )
                .unwrap();
            (t, row.get(0), row.get(1))
        })
        .collect();
    let large_objects = c
        .query(
            "SELECT oid::int8, md5(lo_get(oid)) FROM pg_largeobject_metadata ORDER BY oid",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, i64>(0) as u32, r.get(1)))
        .collect();
    let seq_names: Vec<String> = c
        .query(
            "SELECT format('%I.%I', schemaname, sequencename) FROM pg_sequences ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let sequences = seq_names
        .into_iter()
        .map(|s| {
            let r = c
                .query_one(&format!("SELECT last_value, is_called FROM {s}"), &[])
                .unwrap();
            (s, r.get(0), r.get(1))
        })
        .collect();
    Fingerprint {
        tables,
        large_objects,
        sequences,
    }
}

/// pg_dump's plain output of a database, without the lines that differ on every run.
pub fn plain_dump(src: &Source, db: &str, extra: &[&str]) -> String {
    let pg_dump = binaries::pick(
        "pg_dump",
        src.cluster.version().major,
        &binaries::search_dirs(&[]),
        "test",
    )
    .unwrap();
    let out = Command::new(&pg_dump.path)
        .args(extra)
        .arg("--dbname")
        .arg(src.cluster.conninfo(db).to_conninfo_without_secrets())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The restored database equals the source: schema, data, large objects, sequences, everything.
pub fn assert_same(src: &Source, a: &str, b: &str) {
    let fa = fingerprint(src, a);
    let fb = fingerprint(src, b);
    assert!(
        fa.tables.len() >= 7,
        "the source looks too small: {:?}",
        fa.tables
    );
    assert!(
        fa.tables
            .iter()
            .any(|(t, n, _)| t == "app.big_toast" && *n == 1)
    );
    assert_eq!(fa.large_objects.len(), 2);
    assert_eq!(fa, fb, "restored data differs");
    assert_eq!(
        plain_dump(src, a, &["--schema-only"]),
        plain_dump(src, b, &["--schema-only"]),
        "schema differs"
    );
    assert_eq!(
        plain_dump(src, a, &[]),
        plain_dump(src, b, &[]),
        "full dump differs"
    );
}

#[test]
fn round_trip_through_seaweedfs_with_gzip() {
    let f = Repo::s3("prod").with_source("rich", RICH_SQL);
    let src = f.src();

    let summary = f.backup(&src.url("rich"), "rich");
    let id = summary.id.clone();
    assert_eq!(summary.source, "rich");
    assert_eq!(summary.compression, "gzip:6");
    assert!(summary.stored_bytes > 1_000_000);

    // A new machine with only the key and the bucket sees the snapshot.
    let listed: Vec<Snapshot> = json(&f.cli.fresh().ok(&["list", "--json"]));
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id);
    assert_eq!(listed[0].status, "not_drilled");
    // id, source, created, stored_bytes and status are there: `Snapshot` does not parse without.
    let l = &listed[0];
    assert!(
        !l.id.is_empty() && !l.source.is_empty() && !l.created.is_empty(),
        "{l:?}"
    );
    let manifest = f.show(&id[..12]);
    assert_eq!(manifest.snapshot_id, id);
    assert_eq!(manifest.server.major, src.cluster.version().major);
    assert!(manifest.server.system_identifier.is_some());
    assert_eq!(manifest.source.database, "rich");
    assert_eq!(manifest.dump.tool, "pg_dump");
    assert_eq!(manifest.data.sha256_stored.len(), 64);

    src.create_db("restored", "");
    f.cli
        .ok(&["restore", "latest", "--to", &src.url("restored")]);
    assert_same(src, "rich", "restored");
}

#[test]
fn round_trip_through_a_local_folder_with_zstd_and_parallel_restore() {
    let mut f = Repo::local().with_source("rich", RICH_SQL);
    // The repository named by a file:// URL.
    f.cli = f.cli.env("OFFSITEDB_REPO", &format!("file://{}", f.url));
    let src = f.src();

    f.cli.ok(&[
        "backup",
        "--source",
        &src.url("rich"),
        "--name",
        "rich",
        "--compression",
        "zstd",
    ]);
    let listed = f.list(None);
    assert_eq!(listed[0].compression, "zstd:1");

    src.create_db("restored", "");
    let restored = src.url("restored");
    let report: RestoreReport = json(&f.cli.ok(&[
        "restore", "latest", "--to", &restored, "--jobs", "2", "--json",
    ]));
    assert_eq!(report.jobs, 2);
    assert_same(src, "rich", "restored");

    // Restoring again over it needs --clean, and then gives the same database.
    f.cli
        .fails(&["restore", "latest", "--to", &restored], 3, "is not empty");
    f.cli
        .ok(&["restore", "latest", "--clean", "--to", &restored]);
    assert_same(src, "rich", "restored");
}

/// The proof that backups restore without OffsiteDB: the 40-line Python decryptor, gunzip and
/// pg_restore, on a real snapshot.
#[test]
fn reference_decryptor_restores_a_real_snapshot() {
    let f = Repo::local().with_source("rich", RICH_SQL);
    let src = f.src();
    let id = f.backup(&src.url("rich"), "rich").id;
    let data = f.object("rich", &id, "data");
    assert!(data.exists(), "{}", data.display());

    src.create_db("by_python", "");
    let script = format!(
        "set -euo pipefail; {py} {tool} {key} < {data} | gunzip | {pg_restore} --exit-on-error --dbname '{ci}'",
        py = venv_tool("python").display(),
        tool = crate::common::project_dir()
            .join("tools/offsitedb-decrypt.py")
            .display(),
        key = f.key.display(),
        data = data.display(),
        pg_restore = pg_restore_path(src).display(),
        ci = src
            .cluster
            .conninfo("by_python")
            .to_conninfo_without_secrets(),
    );
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same(src, "rich", "by_python");

    // The same artifact through `offsitedb decrypt` is byte-identical to the Python output.
    let ours = f.dir.path().join("ours.dump.gz");
    f.cli.ok(&["decrypt", &id, "-o", ours.to_str().unwrap()]);
    let theirs = Command::new(venv_tool("python"))
        .arg(crate::common::project_dir().join("tools/offsitedb-decrypt.py"))
        .arg(&f.key)
        .stdin(std::fs::File::open(&data).unwrap())
        .output()
        .unwrap();
    assert!(theirs.status.success());
    assert_eq!(std::fs::read(&ours).unwrap(), theirs.stdout);
}

fn pg_restore_path(src: &Source) -> std::path::PathBuf {
    binaries::pick(
        "pg_restore",
        src.cluster.version().major,
        &binaries::search_dirs(&[]),
        "test",
    )
    .unwrap()
    .path
}
