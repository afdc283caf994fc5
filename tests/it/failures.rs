//! Bad input is a feature: each of these ends in one clear `error:` line (and maybe a hint), a
//! specific non-zero exit code, and nothing half-written that anyone could mistake for a backup.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::{Repo, Snapshot, Source, assert_interrupted, json, keygen, sigterm_when, tree};

const SMALL_SQL: &str = "CREATE TABLE t (id int PRIMARY KEY, v text);
                         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g;";

/// A source with a small database `app` and a local repository holding one snapshot of it.
fn with_snapshot() -> Repo {
    let f = Repo::local().with_source("app", SMALL_SQL);
    f.cli
        .ok(&["backup", "--source", &f.src().url("app"), "--name", "app"]);
    f
}

/// The repository folder, every entry with its size and hash.
fn listing(f: &Repo) -> Vec<String> {
    let t = tree(f.path());
    assert!(!t.is_empty(), "the repository folder is empty");
    t
}

/// The whole fixture folder (key files, outputs and the repository).
fn everything(f: &Repo) -> Vec<String> {
    tree(f.dir.path())
}

/// The first snapshot's data object.
fn data_object(f: &Repo) -> PathBuf {
    let s = &f.list(None)[0];
    f.object(&s.source, &s.id, "data")
}

fn table_count(src: &Source, db: &str) -> i64 {
    src.scalar_i64(
        db,
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind = 'r' AND n.nspname = 'public'",
    )
}

#[test]
fn missing_key() {
    let f = with_snapshot();
    let before = listing(&f);
    let url = f.src().url("app");
    let no_key = f.cli.without("OFFSITEDB_KEY_FILE");
    for args in [
        vec!["backup", "--source", &url, "--name", "app"],
        vec!["list"],
    ] {
        no_key.fails(&args, 4, "no master key given");
    }
    // A key file that is not a key.
    let junk = f.dir.path().join("junk.key");
    std::fs::write(&junk, "not a key\n").unwrap();
    f.cli
        .clone_with("OFFSITEDB_KEY_FILE", junk.to_str().unwrap())
        .fails(&["list"], 4, "does not hold a valid");
    assert_eq!(
        listing(&f),
        before,
        "a failed command changed the repository"
    );
    assert_eq!(f.list(None).len(), 1);
}

#[test]
fn wrong_key_names_both_key_ids() {
    let f = with_snapshot();
    let other = keygen(f.dir.path(), "other.key");
    let id_of = |p: &Path| {
        let text = std::fs::read_to_string(p).unwrap();
        text.lines()
            .next()
            .unwrap()
            .rsplit(' ')
            .next()
            .unwrap()
            .to_string()
    };
    let (right, wrong) = (id_of(&f.key), id_of(&other));
    let before = everything(&f);
    assert_eq!(right.len(), 32);
    let url = f.src().url("app");
    let never = f.dir.path().join("never-written.dump.gz");
    let never_s = never.to_str().unwrap();
    let wrong_key = f
        .cli
        .clone_with("OFFSITEDB_KEY_FILE", other.to_str().unwrap());
    for args in [
        vec!["list"],
        vec!["backup", "--source", &url, "--name", "app"],
        vec!["restore", "latest", "--to", &url],
        vec!["decrypt", "latest", "-o", never_s],
    ] {
        let r = wrong_key.fails(&args, 4, "was created with key id");
        assert!(
            r.stderr.contains(&right) && r.stderr.contains(&wrong),
            "{}",
            r.stderr
        );
    }
    assert!(!never.exists());
    assert_eq!(
        everything(&f),
        before,
        "a failed command left something behind"
    );
    assert_eq!(f.list(None).len(), 1);
}

#[test]
fn wrong_password_unreachable_host_and_missing_database() {
    let f = with_snapshot();
    let before = listing(&f);
    let port = f.src().cluster.port();
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cases = [
        (
            format!("postgres://postgres:wrong-password@127.0.0.1:{port}/app"),
            "refused the password",
        ),
        (
            format!("postgres://postgres:pw@127.0.0.1:{free}/app"),
            "connection refused",
        ),
        (f.src().url("no_such_db"), "does not exist"),
        (
            "postgres://postgres:pw@no-such-host.invalid:5432/app".to_string(),
            "does not resolve",
        ),
    ];
    for (url, needle) in &cases {
        f.cli
            .fails(&["backup", "--source", url, "--name", "app"], 5, needle);
    }
    // Restoring to a bad target fails the same way, before anything is read.
    f.cli.fails(
        &["restore", "latest", "--to", &cases[0].0],
        5,
        "refused the password",
    );
    assert_eq!(
        listing(&f),
        before,
        "a failed command changed the repository"
    );
    assert_eq!(f.list(None).len(), 1, "a failed backup left a snapshot");
}

#[test]
fn missing_bucket_and_wrong_s3_secret() {
    let f = Repo::s3("prod").with_source("app", SMALL_SQL);
    let url = f.src().url("app");
    let backup = ["backup", "--source", &url, "--name", "app"];

    let nobucket = format!(
        "s3://no-such-bucket/x?endpoint={}&region=us-east-1",
        f.weed.as_ref().unwrap().endpoint()
    );
    f.cli.clone_with("OFFSITEDB_REPO", &nobucket).fails(
        &backup,
        6,
        "bucket \"no-such-bucket\" does not exist",
    );

    let started = Instant::now();
    let r = f
        .cli
        .clone_with("AWS_SECRET_ACCESS_KEY", "wrong-secret-value")
        .fails(&backup, 6, "rejected the credentials");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "auth failures must not be retried: {r:?}"
    );
    f.cli
        .without("AWS_ACCESS_KEY_ID")
        .without("AWS_SECRET_ACCESS_KEY")
        .fails(&["list"], 3, "no s3 credentials");
    assert!(
        f.store().list("").unwrap().is_empty(),
        "something was written"
    );
}

/// A database of about `mib` MiB that does not compress, written through COPY.
fn incompressible_db(src: &Source, db: &str, mib: usize) {
    src.create_db(db, "CREATE TABLE blob (id int, data bytea)");
    let mut c = src.client(db);
    let mut w = c.copy_in("COPY blob (id, data) FROM STDIN").unwrap();
    let mut x: u64 = 0x9E3779B97F4A7C15;
    let mut line = String::with_capacity(2 * 65536 + 32);
    for id in 0..mib * 16 {
        line.clear();
        line.push_str(&format!("{id}\t\\\\x"));
        for _ in 0..(65536 / 8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            line.push_str(&format!("{x:016x}"));
        }
        line.push('\n');
        w.write_all(line.as_bytes()).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn s3_server_killed_in_the_middle_of_an_upload() {
    let mut f = Repo::s3("prod");
    let src = Source::start();
    incompressible_db(&src, "big", 96);
    src.create_db("small", SMALL_SQL);
    let state = f.cli.state_dir();

    let mut backup = f
        .cli
        .spawn(&["backup", "--source", &src.url("big"), "--name", "app"]);

    // Kill the server once parts are flowing.
    let probe = f.store();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if probe
            .incomplete_uploads("")
            .map(|u| !u.is_empty())
            .unwrap_or(false)
        {
            break;
        }
        assert!(
            backup.try_wait().unwrap().is_none(),
            "the backup ended before its upload started"
        );
        assert!(Instant::now() < deadline, "no multipart upload appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    f.weed().kill();
    let out = backup.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("storage"), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "a snapshot id was printed for a failed backup"
    );

    // The upload it could not abort is remembered in the state folder, with no secret in it.
    let remembered = tree(&state);
    assert!(
        !remembered.is_empty(),
        "the unaborted upload was not remembered"
    );
    let key_b64 = f.key_secret();
    crate::secrets::assert_no_secret_in_files(
        &state,
        &[
            crate::common::SECRET_KEY,
            crate::common::DB_PASSWORD,
            &key_b64,
        ],
    );

    // Back up: nothing is listed; the unfinished upload is invisible.
    f.weed().restart();
    assert!(f.list(None).is_empty());

    // The next backup of the source cleans what the failed one could not abort.
    let r = f
        .cli
        .ok(&["backup", "--source", &src.url("small"), "--name", "app"]);
    assert!(
        r.stderr.contains("aborted 1 unfinished upload"),
        "{}",
        r.stderr
    );
    assert!(
        f.store().incomplete_uploads("").unwrap().is_empty(),
        "multipart upload left behind"
    );
    assert_eq!(f.list(None).len(), 1);
}

#[test]
fn a_flipped_byte_is_caught_and_nothing_is_restored() {
    let f = with_snapshot();
    let data = data_object(&f);
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(&data, &bytes).unwrap();
    let before = everything(&f);

    f.src().create_db("target", "");
    f.cli.fails(
        &["restore", "latest", "--to", &f.src().url("target")],
        7,
        "failed authentication",
    );
    assert_eq!(
        table_count(f.src(), "target"),
        0,
        "a partial restore was committed"
    );

    let out = f.dir.path().join("out.dump.gz");
    f.cli.fails(
        &["decrypt", "latest", "-o", out.to_str().unwrap()],
        7,
        "failed authentication",
    );
    assert!(!out.exists(), "a damaged artifact was written");
    let leftovers: Vec<_> = std::fs::read_dir(f.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert!(
        leftovers
            .iter()
            .all(|n| !n.to_string_lossy().starts_with(".offsitedb")),
        "{leftovers:?}"
    );
    assert_eq!(
        everything(&f),
        before,
        "a failed command left something behind"
    );
}

#[test]
fn a_truncated_object_is_caught() {
    let f = with_snapshot();
    let data = data_object(&f);
    let len = std::fs::metadata(&data).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&data).unwrap();
    file.set_len(len * 2 / 3).unwrap();
    drop(file);
    let before = everything(&f);

    assert_eq!(f.list(None)[0].status, "damaged");
    f.src().create_db("target", "");
    f.cli.fails(
        &["restore", "latest", "--to", &f.src().url("target")],
        7,
        "truncated",
    );
    assert_eq!(table_count(f.src(), "target"), 0);
    let out = f.dir.path().join("out.dump.gz");
    f.cli.fails(
        &["decrypt", "latest", "-o", out.to_str().unwrap()],
        7,
        "truncated",
    );
    assert_eq!(
        everything(&f),
        before,
        "a failed command left something behind"
    );
}

#[test]
fn a_data_object_from_another_snapshot_is_refused() {
    let f = with_snapshot();
    f.cli
        .ok(&["backup", "--source", &f.src().url("app"), "--name", "app"]);
    let snaps = f.list(None);
    assert_eq!(snaps.len(), 2);
    let path = |i: usize| f.object("app", &snaps[i].id, "data");
    // Same key, valid encryption, wrong object: the salt in the manifest says so.
    std::fs::copy(path(1), path(0)).unwrap();
    let first = snaps[0].id.as_str();
    let before = everything(&f);
    let out = f.dir.path().join("swapped.dump.gz");
    f.cli.fails(
        &["decrypt", first, "-o", out.to_str().unwrap()],
        7,
        "not the one its manifest describes",
    );
    assert!(!out.exists(), "an artifact was written");
    // --force over an existing file: refused the same way, and the file is left as it was.
    std::fs::write(&out, b"keep me").unwrap();
    f.cli.fails(
        &["decrypt", first, "-o", out.to_str().unwrap(), "--force"],
        7,
        "not the one its manifest describes",
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
    std::fs::remove_file(&out).unwrap();
    assert_eq!(
        everything(&f),
        before,
        "a failed command left something behind"
    );
}

#[test]
fn a_repository_location_that_holds_other_things_is_not_taken_over() {
    let f = Repo::local().with_source("app", SMALL_SQL);
    let repo = f.path();
    std::fs::create_dir(repo).unwrap();
    std::fs::write(repo.join("family-photos.zip"), b"precious").unwrap();
    f.cli.fails(
        &["backup", "--source", &f.src().url("app"), "--name", "app"],
        6,
        "is not empty",
    );
    assert_eq!(tree(repo).len(), 1, "{:?}", tree(repo));
    let keys: Vec<String> = f
        .store()
        .list("")
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys, ["family-photos.zip"]);
}

#[test]
fn a_damaged_manifest_does_not_hide_the_other_snapshots() {
    let f = with_snapshot();
    f.cli
        .ok(&["backup", "--source", &f.src().url("app"), "--name", "app"]);
    let snaps = f.list(None);
    assert_eq!(snaps.len(), 2);
    let first = snaps[0].id.clone();
    let manifest = f.object("app", &first, "manifest");
    let mut bytes = std::fs::read(&manifest).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&manifest, bytes).unwrap();
    let before = listing(&f);

    let r = f.cli.ok(&["list", "--json"]);
    let listed: Vec<Snapshot> = json(&r);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, snaps[1].id);
    assert!(
        r.stderr
            .contains(&format!("snapshot app/{first} is unreadable")),
        "{}",
        r.stderr
    );
    f.cli.fails(&["show", &first], 7, "failed authentication");
    assert_eq!(listing(&f), before, "list or show changed the repository");
}

#[test]
fn a_first_backup_that_cannot_log_in_creates_nothing() {
    let f = Repo::local().with_source("app", SMALL_SQL);
    let port = f.src().cluster.port();
    let wrong = format!("postgres://postgres:wrong-password@127.0.0.1:{port}/app");
    let at = |repo: &Path| f.cli.clone_with("OFFSITEDB_REPO", repo.to_str().unwrap());

    // An empty folder stays empty; a folder that does not exist is not created.
    let empty = f.dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let absent = f.dir.path().join("absent");
    for repo in [&empty, &absent] {
        at(repo).fails(
            &["backup", "--source", &wrong, "--name", "app"],
            5,
            "refused the password",
        );
        assert!(!repo.join("offsitedb.repo").exists());
        assert_eq!(tree(repo), Vec::<String>::new(), "{}", repo.display());
    }
    assert!(!absent.exists(), "the repository folder was created");
    // The same empty location with the right password becomes a repository.
    at(&empty).ok(&["backup", "--source", &f.src().url("app"), "--name", "app"]);
    assert!(empty.join("offsitedb.repo").exists());
}

/// Sessions of `application` (pg_dump, pg_restore) on the source server, once they are gone
/// (the server notices a dropped client within moments).
fn wait_no_sessions(src: &Source, application: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let sql =
        format!("SELECT count(*) FROM pg_stat_activity WHERE application_name = '{application}'");
    while src.scalar_i64("postgres", &sql) > 0 {
        assert!(
            Instant::now() < deadline,
            "{application} is still connected"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGTERM in the middle of a backup and of a restore: each stops at once with one clear error
/// and exit 130; the backup stores nothing (its multipart upload aborted), the restore commits
/// nothing, and neither leaves pg_dump or pg_restore connected.
#[test]
fn sigterm_stops_a_backup_and_a_restore_leaving_nothing() {
    let f = Repo::s3("prod");
    let src = Source::start();
    incompressible_db(&src, "big", 96);
    let cli = &f.cli;
    let store = f.store();

    let backup = cli.spawn(&["backup", "--source", &src.url("big"), "--name", "app"]);
    let out = sigterm_when(backup, "an upload in progress", || {
        store
            .incomplete_uploads("")
            .map(|u| !u.is_empty())
            .unwrap_or(false)
    });
    assert_interrupted(&out);
    assert_eq!(
        store.list("snapshots/").unwrap().len(),
        0,
        "something was stored"
    );
    assert!(
        store.incomplete_uploads("").unwrap().is_empty(),
        "the upload was not aborted"
    );
    wait_no_sessions(&src, "pg_dump");

    cli.ok(&["backup", "--source", &src.url("big"), "--name", "app"]);
    src.create_db("target", "");
    let restore = cli.spawn(&["restore", "latest", "--to", &src.url("target")]);
    let out = sigterm_when(restore, "rows being restored", || {
        src.scalar_i64(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'target' AND query LIKE 'COPY%'",
        ) > 0
    });
    assert_interrupted(&out);
    wait_no_sessions(&src, "pg_restore");
    let tables = src.scalar_i64(
        "target",
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
    );
    assert_eq!(tables, 0, "an interrupted restore committed tables");
}
