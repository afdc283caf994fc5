//! `wal-push` as a real server's `archive_command` and `wal-fetch` as a `restore_command` would
//! call it, against SeaweedFS: every segment archived, one log line per call and no secret in
//! the server log, the same file again accepted and different bytes refused, a backlog pushed
//! ahead with its status entries checked, and wal-fetch's exit codes (1 only for "not in the
//! archive", 200 for a store outage or a damaged object or prefetched copy).

use std::path::Path;

use offsitedb::storage::{ReadStore, WriteStore};
use offsitedb::wal::name::WalName;
use offsitedb::wal::object;

use crate::archiving::{Pitr, SOURCE, give_to_server};
use crate::common::{Cli, SECRET_KEY, sha256_hex};

/// The names archived for the fixture's source.
fn archived(p: &Pitr) -> Vec<String> {
    offsitedb::wal::list(&p.store(), SOURCE)
        .unwrap()
        .into_iter()
        .map(|a| a.name.to_string())
        .collect()
}

/// The lines wal-push wrote to the server log about `name`.
fn push_lines(log: &str, name: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("offsitedb wal-push") && l.contains(name))
        .map(str::to_string)
        .collect()
}

fn insert_some(p: &Pitr, n: u32) {
    p.sql(&format!(
        "INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series(1, {n}) g"
    ));
}

/// A runner for wal-fetch in a folder of its own, with a pg_wal to write into.
fn fetcher(p: &Pitr) -> (tempfile::TempDir, Cli) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("pg_wal")).unwrap();
    let cli = p.cli.fresh().cwd(dir.path());
    (dir, cli)
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn archive_command_end_to_end_and_wal_fetch_exit_codes() {
    let mut p = Pitr::start(Some(18), "");
    p.sql("CREATE TABLE t (id int, pad text)");
    let mut names = Vec::new();
    for _ in 0..3 {
        insert_some(&p, 2000);
        names.push(p.switch_and_archive());
    }

    // Every archived segment is in the bucket, and said so in one line of the server log.
    let stored = archived(&p);
    let log = p.wait_log_line(&["offsitedb wal-push: archived", names.last().unwrap()]);
    for n in &names {
        assert!(stored.contains(n), "{n} is not in the archive: {stored:?}");
        let lines = push_lines(&log, n);
        assert_eq!(lines.len(), 1, "one line for {n}; server log:\n{log}");
        assert!(
            lines[0].starts_with(&format!("offsitedb wal-push: archived {n} (")),
            "{lines:?}"
        );
    }
    let key_text = std::fs::read_to_string(&p.key).unwrap();
    let key_line = key_text.lines().find(|l| !l.starts_with('#')).unwrap();
    for secret in [SECRET_KEY, key_line, p.db_password()] {
        assert!(
            !log.contains(secret),
            "a secret is in the server log:\n{log}"
        );
    }

    // The same file again (the archiver retries after a crash): fine, nothing rewritten.
    let first = &names[0];
    let key = object::key(SOURCE, &WalName::parse(first).unwrap());
    let before = p.store().get_bytes(&key).unwrap();
    let config = p.config.to_str().unwrap().to_string();
    let wal_path = format!("pg_wal/{first}");
    let r = p.run_as_server(&["wal-push", "--config", &config, &wal_path]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("already archived (same content"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.lines().count(), 1, "one line:\n{}", r.stderr);

    // Different bytes under the archived name: refused with both digests, exit 1.
    let original = read(&p.data_dir().join(&wal_path));
    let other_dir = p.dir.path().join("other/pg_wal");
    std::fs::create_dir_all(&other_dir).unwrap();
    let mut changed = original.clone();
    changed[100] ^= 0xff;
    std::fs::write(other_dir.join(first), &changed).unwrap();
    give_to_server(&p.dir.path().join("other"));
    let other = other_dir.join(first);
    let r = p.run_as_server(&["wal-push", "--config", &config, other.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.starts_with("error: "), "{}", r.stderr);
    assert!(r.stderr.contains("different content"), "{}", r.stderr);
    assert!(r.stderr.contains(&sha256_hex(&original)), "{}", r.stderr);
    assert!(r.stderr.contains(&sha256_hex(&changed)), "{}", r.stderr);
    assert_eq!(
        p.store().get_bytes(&key).unwrap(),
        before,
        "the stored object is unchanged"
    );

    // wal-fetch: the segment as it was pushed, and the next ones fetched ahead.
    let (dir, cli) = fetcher(&p);
    let r = cli.ok(&["wal-fetch", first, "pg_wal/RECOVERYXLOG"]);
    assert_eq!(read(&dir.path().join("pg_wal/RECOVERYXLOG")), original);
    assert!(r.stderr.contains("fetched ahead"), "{}", r.stderr);
    let prefetched = dir.path().join("pg_wal/offsitedb-prefetch").join(&names[1]);
    assert!(prefetched.exists(), "{} was fetched ahead", names[1]);
    let r = cli.ok(&["wal-fetch", &names[1], "pg_wal/RECOVERYXLOG"]);
    assert!(
        r.stderr.contains("from the prefetched copy"),
        "{}",
        r.stderr
    );
    assert_eq!(
        read(&dir.path().join("pg_wal/RECOVERYXLOG")),
        read(&p.data_dir().join("pg_wal").join(&names[1]))
    );
    assert!(!prefetched.exists(), "a prefetched copy is used once");

    // A tampered prefetched copy fails as a tampered object does.
    let copy = dir.path().join("pg_wal/offsitedb-prefetch").join(&names[2]);
    let mut b = read(&copy);
    let at = b.len() / 2;
    b[at] ^= 1;
    std::fs::write(&copy, b).unwrap();
    cli.fails(
        &["wal-fetch", &names[2], "pg_wal/RECOVERYXLOG"],
        200,
        "failed authentication",
    );

    // Not in the archive: exit 1 and one calm line (PostgreSQL asks for such files).
    for missing in ["0000000100000000000000FE", "00000009.history"] {
        let r = cli.run(&["wal-fetch", missing, "pg_wal/RECOVERYXLOG"]);
        assert_eq!(r.code, 1, "{}", r.stderr);
        assert_eq!(
            r.stderr.trim(),
            format!("offsitedb wal-fetch: {missing} is not in the archive")
        );
    }
    // A source that archived nothing is not "the end of the WAL".
    cli.fails(
        &[
            "wal-fetch",
            "--source",
            "nope",
            first,
            "pg_wal/RECOVERYXLOG",
        ],
        200,
        "no WAL of source",
    );

    // A flipped byte in the stored object: exit 200, nothing written.
    let (dir2, cli2) = fetcher(&p);
    let key3 = object::key(SOURCE, &WalName::parse(&names[2]).unwrap());
    let mut obj = p.store().get_bytes(&key3).unwrap();
    let at = obj.len() - 20;
    obj[at] ^= 1;
    p.store().put(&key3, &obj).unwrap();
    cli2.fails(
        &["wal-fetch", &names[2], "pg_wal/RECOVERYXLOG"],
        200,
        "failed authentication",
    );
    assert!(!dir2.path().join("pg_wal/RECOVERYXLOG").exists());

    // The store down: wal-fetch exits 200, never 1. Meanwhile a wal-push that gets SIGTERM
    // (a service manager stopping everything) still answers the archiver with 1, not 130.
    p.weed.kill();
    let push = p
        .server_command(&["wal-push", "--config", &config, &wal_path])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    // SAFETY: signalling our own child by pid.
    unsafe {
        libc::kill(push.id() as i32, libc::SIGTERM);
    }
    let (_dir3, cli3) = fetcher(&p);
    let r = cli3.run(&["wal-fetch", first, "pg_wal/RECOVERYXLOG"]);
    assert_eq!(r.code, 200, "{}", r.stderr);
    assert!(r.stderr.starts_with("error: wal-fetch"), "{}", r.stderr);
    assert!(!r.stderr.contains(SECRET_KEY));
    let out = push.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("error: wal-push"), "{stderr}");
}

#[test]
fn a_backlog_is_pushed_ahead_and_only_matching_status_entries_are_trusted() {
    let p = Pitr::start(Some(15), "wal_concurrency = 4\n");
    p.sql("CREATE TABLE t (id int, pad text)");
    let first = p.switch_and_archive();
    // Archiving paused: .ready files pile up (segments and a backup history file).
    p.set_archive_command("");
    let mut names = Vec::new();
    for i in 0..9 {
        insert_some(&p, 500);
        if i == 4 {
            let mut c = p.src.client("postgres");
            c.batch_execute("SELECT pg_backup_start('wal-archive test', true)")
                .unwrap();
            c.batch_execute("SELECT * FROM pg_backup_stop(false)")
                .unwrap();
        }
        names.push(p.text("SELECT pg_walfile_name(pg_switch_wal())"));
    }
    let wal = p.data_dir().join("pg_wal");
    for n in &names {
        assert!(
            wal.join(format!("archive_status/{n}.ready")).exists(),
            "{n} waits"
        );
    }
    let backup = std::fs::read_dir(&wal)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|f| f.ends_with(".backup") && wal.join(format!("archive_status/{f}.ready")).exists())
        .expect("a .backup file waits");

    // A status entry in the right form, for this source and store, but with a digest that is
    // not the file's: it must not be trusted (or that segment would never be stored).
    let liar = names[6].clone();
    let status = wal.join("offsitedb");
    std::fs::create_dir(&status).unwrap();
    let size = std::fs::metadata(wal.join(&liar)).unwrap().len();
    std::fs::write(
        status.join(&liar),
        format!(
            "{size} xxh3:{} {SOURCE} {}\n",
            "0".repeat(32),
            p.store().location()
        ),
    )
    .unwrap();
    give_to_server(&status);

    p.set_archive_command(&p.archive_command());
    let last = names.last().unwrap();
    p.wait_archived(last);

    let stored = archived(&p);
    for n in names.iter().chain([&first, &backup]) {
        assert!(stored.contains(n), "{n} is not in the archive: {stored:?}");
    }
    let log = p.wait_log_line(&["offsitedb wal-push:", last]);
    assert!(
        log.lines()
            .any(|l| l.contains("offsitedb wal-push: archived") && l.contains("more ahead")),
        "no call pushed ahead; server log:\n{log}"
    );
    let answered_ahead = names
        .iter()
        .filter(|n| {
            push_lines(&log, n)
                .iter()
                .any(|l| l.contains("already archived ahead (status entry matches"))
        })
        .count();
    assert!(
        answered_ahead >= 3,
        "at least 3 calls answered from status entries; server log:\n{log}"
    );
    // The lying entry was not trusted: the segment was pushed by its own call, and it is the
    // file's content that is stored.
    assert!(
        push_lines(&log, &liar)
            .iter()
            .any(|l| l.contains(&format!("archived {liar} ("))),
        "{liar} was pushed by its own call; server log:\n{log}"
    );
    let (dir, cli) = fetcher(&p);
    cli.ok(&["wal-fetch", &liar, "pg_wal/RECOVERYXLOG"]);
    assert_eq!(
        read(&dir.path().join("pg_wal/RECOVERYXLOG")),
        read(&wal.join(&liar))
    );
    // Every entry was used by the archiver's call for its file.
    let left: Vec<_> = std::fs::read_dir(&status)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "status entries left: {left:?}");
}
