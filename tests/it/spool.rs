//! The spool (`offsitedb::ops::spool`) that `restore --jobs N` and the spooled drill share: the
//! archive in a file with the data offsets pg_dump could not write to a pipe, so parallel
//! pg_restore workers seek to their tables; the file removed afterwards, whatever happened; a
//! small or full disk refused with one clear error.

use std::path::{Path, PathBuf};

use offsitedb::catalog::Repository;
use offsitedb::crypto::MasterKey;
use offsitedb::dump;
use offsitedb::ops::spool::Spool;
use offsitedb::pipeline::Counters;
use offsitedb::storage::local::LocalStore;

use crate::common::{Repo, Source};

/// Five tables of a few MB together, one of them with no primary key, and a large object.
const TABLES_SQL: &str = r#"
CREATE TABLE a AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 40000) g;
CREATE TABLE b AS SELECT g AS id, repeat(md5(g::text), 3) AS v FROM generate_series(1, 20000) g;
CREATE TABLE c (id int PRIMARY KEY, t timestamptz, n numeric);
INSERT INTO c SELECT g, '2024-01-01'::timestamptz + g * interval '1 minute', g / 7.0 FROM generate_series(1, 30000) g;
CREATE TABLE d (k text, v jsonb);
INSERT INTO d SELECT 'k' || g, jsonb_build_object('g', g, 's', md5(g::text)) FROM generate_series(1, 10000) g;
CREATE TABLE e (x int);
SELECT lo_from_bytea(0, decode(repeat('ab', 5000), 'hex'));
"#;

/// Each table's row count and content hash, and the large objects' hashes.
fn contents(src: &Source, db: &str) -> Vec<(String, i64, String)> {
    let mut c = src.client(db);
    let mut out = Vec::new();
    for t in ["a", "b", "c", "d", "e"] {
        let row = c
            .query_one(
                &format!(
                    "SELECT count(*), coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') FROM {t} x"
                ),
                &[],
            )
            .unwrap();
        out.push((t.to_string(), row.get(0), row.get(1)));
    }
    let row = c
        .query_one(
            "SELECT count(*), coalesce(md5(string_agg(md5(lo_get(oid)), '|' ORDER BY oid)), '') FROM pg_largeobject_metadata",
            &[],
        )
        .unwrap();
    out.push(("large objects".to_string(), row.get(0), row.get(1)));
    out
}

/// The fixture's repository through the library.
fn open(repo: &Repo) -> Repository<LocalStore> {
    let key = MasterKey::load_file(&repo.key, &mut |_| {}).unwrap();
    Repository::open(Box::new(LocalStore::new(PathBuf::from(&repo.url))), key).unwrap()
}

fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// A small tmpfs, unmounted when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "this test needs to mount a small tmpfs (run the tests as root)"
        );
        Tmpfs(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

/// The spool holds the archive with every data block's offset filled in (what pg_dump writes to
/// a file), and is gone when dropped; `restore --jobs 2` restores from such a spool, every
/// table and large object as in the source, and leaves nothing in its spool folder.
#[test]
fn restore_jobs_restores_from_a_spool_with_its_data_offsets_filled_in() {
    let src = Source::start();
    src.create_db("app", TABLES_SQL);
    let repo = Repo::local();
    repo.backup(&src.url("app"), "app");

    let lib = open(&repo);
    let entry = lib.resolve("latest", None).unwrap();
    let m = lib.manifest(&entry.source, &entry.id).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::write(&lib, &m, dir.path(), &Counters::default()).unwrap();
    assert_eq!(files_in(dir.path()).len(), 1);
    let bytes = std::fs::read(spool.path()).unwrap();
    assert_eq!(bytes.len() as u64, m.sizes.plain_bytes);
    let s = dump::inspect(&bytes[..]).unwrap();
    assert_eq!(spool.inspected().ok(), Some(&s));
    assert!(s.tables.len() >= 5, "{:?}", s.tables);
    // One offset a data block: five tables, the large objects (and nothing else here).
    assert!(s.data_offsets.len() >= 6, "{:?}", s.data_offsets);
    assert_eq!(s.off_size, 8);
    for o in &s.data_offsets {
        let at = o.field_pos as usize;
        assert_eq!(
            bytes[at], 2,
            "dump id {}: the offset flag says position not set",
            o.dump_id
        );
        let pos = u64::from_le_bytes(bytes[at + 1..at + 9].try_into().unwrap());
        assert_eq!(pos, o.block_pos, "dump id {}", o.dump_id);
        // The block pg_restore seeks to: a data block (1) or large objects (3) of that entry.
        assert!(
            matches!(bytes[pos as usize], 1 | 3),
            "dump id {}",
            o.dump_id
        );
    }
    drop(spool);
    assert!(files_in(dir.path()).is_empty(), "the spool file was left");

    src.create_db("restored", "");
    let spool_dir = tempfile::tempdir().unwrap();
    let out = repo.cli.ok(&[
        "restore",
        "latest",
        "--to",
        &src.url("restored"),
        "--jobs",
        "2",
        "--spool-dir",
        spool_dir.path().to_str().unwrap(),
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["jobs"], 2);
    assert_eq!(contents(&src, "restored"), contents(&src, "app"));
    assert!(
        files_in(spool_dir.path()).is_empty(),
        "restore --jobs left its spool file"
    );
}

/// Too little disk for the spool is refused before anything is downloaded, with the message a
/// drill gives (the sizes, what they are for, what is free) and the restore's own hint; a disk
/// that fills up while spooling is named as such; a damaged snapshot is an integrity error.
/// None of them leaves a spool file.
#[test]
fn restore_jobs_refuses_a_small_disk_like_a_drill_and_leaves_no_spool() {
    let src = Source::start();
    src.create_db("app", TABLES_SQL);
    let repo = Repo::local();
    let snap = repo.backup(&src.url("app"), "app");
    let lib = open(&repo);
    let entry = lib.resolve("latest", None).unwrap();
    let m = lib.manifest(&entry.source, &entry.id).unwrap();
    let plain = m.sizes.plain_bytes;
    assert!(
        plain > 2 << 20,
        "the archive is too small to fill 1 MiB: {plain}"
    );
    src.create_db("restored", "");

    let small = Tmpfs::mount("64m");
    let small_dir = small.path().to_str().unwrap();
    let restore = repo.cli.fails(
        &[
            "restore",
            "latest",
            "--to",
            &src.url("restored"),
            "--jobs",
            "2",
            "--spool-dir",
            small_dir,
        ],
        11,
        "not enough disk",
    );
    let said = format!(
        "error: not enough disk in {small_dir} for a restore of app/{}: it needs about {} (for a {} archive: its spooled copy), and ",
        snap.id,
        offsitedb::units::bytes(plain + (64 << 20)),
        offsitedb::units::bytes(plain)
    );
    assert!(restore.stderr.contains(&said), "{said}\n{}", restore.stderr);
    assert!(restore.stderr.contains(" is free"), "{}", restore.stderr);
    assert!(
        restore
            .stderr
            .contains("hint: pass --spool-dir on a larger disk"),
        "{}",
        restore.stderr
    );
    // The drill says it the same way.
    let drill = repo.cli.fails(
        &["drill", "latest", "--work-dir", small_dir],
        11,
        "not enough disk",
    );
    let drill_said = format!(
        "error: not enough disk in {small_dir} for a drill of app/{}: it needs about ",
        snap.id
    );
    assert!(drill.stderr.contains(&drill_said), "{}", drill.stderr);
    assert!(files_in(small.path()).is_empty());

    // A disk that fills up while spooling (the up-front check is the command's, so the library
    // is called here with a disk too small for the archive).
    let full = Tmpfs::mount("1m");
    let e = match Spool::write(&lib, &m, full.path(), &Counters::default()) {
        Ok(_) => panic!("a {plain}-byte archive fitted in 1 MiB"),
        Err(e) => e,
    };
    assert_eq!(e.kind(), offsitedb::ErrorKind::Io, "{e}");
    assert!(
        e.message().starts_with(&format!(
            "cannot write the spool file {}/offsitedb-spool-",
            full.path().display()
        )) && e.message().ends_with(": no space left on device"),
        "{e}"
    );
    assert!(
        e.hint().is_some_and(|h| h.contains("free some space")),
        "{e}"
    );
    assert!(
        files_in(full.path()).is_empty(),
        "a partial spool file was left"
    );

    // A damaged snapshot: the spool is authenticated before pg_restore sees it.
    let data = PathBuf::from(&repo.url).join(format!("snapshots/app/{}/data", snap.id));
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(&data, &bytes).unwrap();
    let spool_dir = tempfile::tempdir().unwrap();
    repo.cli.fails(
        &[
            "restore",
            "latest",
            "--to",
            &src.url("restored"),
            "--jobs",
            "2",
            "--spool-dir",
            spool_dir.path().to_str().unwrap(),
        ],
        7,
        "failed authentication",
    );
    assert!(files_in(spool_dir.path()).is_empty());
    assert_eq!(
        src.scalar_i64(
            "restored",
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ),
        0
    );
}
