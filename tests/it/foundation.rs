//! The foundation's promises, checked from the outside: what the manifest says is what is on
//! disk; pg_dump is picked by version; memory stays bounded with no temporary file; the progress
//! line appears on a terminal only; the standard recipe restores; a snapshot without its
//! manifest does not exist; a server that never answers cannot hang a backup; the reference
//! decryptor refuses damage; throwaway clusters leave nothing running; `restore --clean`.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use offsitedb::cluster::{Cluster, ClusterOptions};
use offsitedb::postgres::binaries;

use crate::common::{Repo, Source, offsitedb_bin, pg_tool, sha256_hex, tree, venv_tool};

const SMALL_SQL: &str = "CREATE TABLE t (id int PRIMARY KEY, v text);
                         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g;
                         CREATE TABLE u (k text PRIMARY KEY, n bigint);
                         INSERT INTO u SELECT 'k' || g, g * g FROM generate_series(1, 3000) g;";

/// A source with database `app` and a local-folder repository (not created yet).
fn app(sql: &str) -> Repo {
    Repo::local().with_source("app", sql)
}

/// Backs up database `app` as source `app` and returns the snapshot id.
fn backup_app(f: &Repo) -> String {
    f.backup(&f.src().url("app"), "app").id
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

/// Polls `cond` every 50 ms; panics with `what` if it is still false after `limit` (a guard
/// against hanging forever, not a measurement).
fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "{what} (waited {limit:?})");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn local_backup_matches_its_manifest_byte_for_byte() {
    let f = app(SMALL_SQL);
    let before = jiff::Timestamp::now();
    let summary = f.backup(&f.src().url("app"), "app");
    let after = jiff::Timestamp::now();
    let id = summary.id.as_str();
    let m = f.show("latest");
    assert_eq!(m.snapshot_id, id);

    // The stored object, as it lies on disk, is the one the manifest describes.
    let data = f.object("app", id, "data");
    assert_eq!(m.data.key, format!("snapshots/app/{id}/data"));
    let stored = std::fs::read(&data).unwrap();
    assert_eq!(stored.len() as u64, m.sizes.stored_bytes);
    assert_eq!(summary.stored_bytes, m.sizes.stored_bytes);
    assert_eq!(sha256_hex(&stored), m.data.sha256_stored);

    // Decrypted: the compressed artifact, with the manifest's size and hash.
    let gz = f.dir.path().join("app.dump.gz");
    f.cli.ok(&["decrypt", "latest", "-o", gz.to_str().unwrap()]);
    let artifact = std::fs::read(&gz).unwrap();
    assert_eq!(artifact.len() as u64, m.sizes.compressed_bytes);
    assert_eq!(sha256_hex(&artifact), m.data.sha256_compressed);

    // Gunzipped (by gunzip itself): exactly the dump pg_dump wrote.
    let mut gunzip = Command::new("gunzip")
        .arg("-c")
        .arg(&gz)
        .stdout(Stdio::piped())
        .spawn()
        .expect("gunzip");
    let mut head = [0u8; 5];
    let mut out = gunzip.stdout.take().unwrap();
    out.read_exact(&mut head).unwrap();
    let rest = std::io::copy(&mut out, &mut std::io::sink()).unwrap();
    assert!(gunzip.wait().unwrap().success(), "gunzip failed");
    assert_eq!(&head, b"PGDMP", "not a pg_dump custom archive");
    assert_eq!(5 + rest, m.sizes.plain_bytes);
    assert_eq!(summary.plain_bytes, m.sizes.plain_bytes);

    // `created` is RFC 3339, in the run's time span, and the id's time part.
    let listed = f.list(None);
    assert_eq!(listed.len(), 1);
    let created_text = &listed[0].created;
    let created = jiff::Timestamp::from_str(created_text)
        .unwrap_or_else(|e| panic!("created {created_text:?} is not RFC 3339: {e}"));
    assert!(
        created >= before.round(jiff::Unit::Second).unwrap() - jiff::SignedDuration::from_secs(1)
            && created <= after,
        "created {created} is not between {before} and {after}"
    );
    assert_eq!(
        created.strftime("%Y%m%dT%H%M%SZ").to_string(),
        id[..16],
        "the snapshot id does not carry its creation second"
    );
    assert_eq!(jiff::Timestamp::from_str(&m.started).unwrap(), created);
}

/// Stub `pg_dump` programs of several versions, one per folder.
fn stub_pg_dumps(root: &Path, versions: &[&str]) -> Vec<PathBuf> {
    versions
        .iter()
        .map(|v| {
            let d = root.join(format!("pg-{v}"));
            std::fs::create_dir(&d).unwrap();
            let p = d.join("pg_dump");
            std::fs::write(&p, format!("#!/bin/sh\necho 'pg_dump (PostgreSQL) {v}'\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            d
        })
        .collect()
}

#[test]
fn pg_dump_of_the_lowest_major_at_least_the_servers_is_picked() {
    let root = tempfile::tempdir().unwrap();
    // Not in version order: the pick must not be "first found".
    let dirs = stub_pg_dumps(root.path(), &["17.0", "14.3", "16.1", "9.6.24"]);
    // A pg_dump that fails to run is ignored.
    let broken = root.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(broken.join("pg_dump"), "#!/bin/sh\nexit 1\n").unwrap();
    std::fs::set_permissions(
        broken.join("pg_dump"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let mut search = vec![broken];
    search.extend(dirs.iter().cloned());
    let dir_of = |v: &str| root.path().join(format!("pg-{v}"));

    for (server, want) in [
        (13, "14.3"),
        (14, "14.3"),
        (15, "16.1"),
        (16, "16.1"),
        (17, "17.0"),
    ] {
        let why = format!("the server runs PostgreSQL {server}.2");
        let p = binaries::pick("pg_dump", server, &search, &why)
            .unwrap_or_else(|e| panic!("server {server}: {e}"));
        assert_eq!(
            p.path.parent().unwrap(),
            dir_of(want),
            "server {server}: picked {p:?}"
        );
        assert_eq!(p.version, want);
    }

    let e = binaries::pick(
        "pg_dump",
        18,
        &search,
        "the server at db.example.com runs PostgreSQL 18.1",
    )
    .unwrap_err();
    assert_eq!(e.kind(), offsitedb::error::ErrorKind::Tool);
    assert_eq!(e.exit_code(), 9);
    let msg = e.message();
    assert!(msg.contains("PostgreSQL 18"), "{msg}");
    assert!(
        msg.contains("18.1"),
        "the server's version is not named: {msg}"
    );
    for v in ["14", "16", "17"] {
        assert!(msg.contains(v), "what was found is not named: {msg}");
    }
    let hint = e.hint().expect("a hint on what to install");
    assert!(hint.contains("postgresql-client-18"), "{hint}");
    assert!(hint.contains("OFFSITEDB_PG_BIN_DIRS"), "{hint}");
}

#[test]
fn backup_of_300_mb_stays_under_96_mib_and_writes_no_temporary_file() {
    let src = Source::start();
    // About 300 MB of pg_dump output: one INSERT … SELECT, unlogged so it writes no WAL.
    src.create_db(
        "big",
        "CREATE UNLOGGED TABLE events (id int, payload text);
         INSERT INTO events
         SELECT g, repeat(md5(g::text) || md5((g * 31)::text), 4)
         FROM generate_series(1, 1150000) g;",
    );
    let repo = Repo::local();
    let tmp = tempfile::tempdir().unwrap();
    let tmp_s = tmp.path().to_str().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let cli = repo
        .cli
        .clone_with("TMPDIR", tmp_s)
        .env("OFFSITEDB_TMPDIR", tmp_s);

    let child = cli.spawn_logged(
        &["backup", "--source", &src.url("big"), "--name", "big"],
        logs.path(),
    );
    let pid = child.id() as libc::pid_t;

    // While it runs: nothing appears in the temporary folder, and no file in it is open
    // (not even one already unlinked).
    let mut seen = std::collections::BTreeSet::new();
    let (status, usage) = loop {
        for e in std::fs::read_dir(tmp.path()).unwrap().flatten() {
            seen.insert(e.path().display().to_string());
        }
        if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
            for fd in fds.flatten() {
                if let Ok(target) = std::fs::read_link(fd.path()) {
                    if target.starts_with(tmp.path()) {
                        seen.insert(format!("open: {}", target.display()));
                    }
                }
            }
        }
        let mut status = 0;
        // SAFETY: a zeroed rusage is a valid value for wait4 to fill in.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waiting for our own child, with valid pointers.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break (status, usage);
        }
        assert_eq!(r, 0, "wait4: {}", std::io::Error::last_os_error());
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(child); // already reaped by wait4
    let stderr = std::fs::read_to_string(logs.path().join("err")).unwrap();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "backup failed (status {status:#x}):\n{stderr}"
    );

    let snaps = repo.list(None);
    assert_eq!(snaps.len(), 1);
    let plain = snaps[0].plain_bytes;
    assert!(
        plain > 280_000_000,
        "the database is smaller than intended: {plain} bytes"
    );

    let peak = usage.ru_maxrss as u64 * 1024; // ru_maxrss is in KiB on Linux
    eprintln!(
        "backup of a {} MB dump: peak RSS {:.1} MiB",
        plain / 1_000_000,
        peak as f64 / (1 << 20) as f64
    );
    assert!(
        peak < 96 << 20,
        "peak RSS {} MiB for a {} MB dump",
        peak >> 20,
        plain / 1_000_000
    );
    assert!(seen.is_empty(), "temporary files: {seen:?}");
    assert_eq!(tree(tmp.path()), Vec::<String>::new());
}

/// Holds an exclusive lock on `table` so a pg_dump of it waits (and a backup lasts as long as
/// the test wants). Rolled back on drop.
fn lock_table(src: &Source, db: &str, table: &str) -> offsitedb::postgres::client::Client {
    let mut c = src.client(db);
    c.batch_execute(&format!(
        "BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"
    ))
    .unwrap();
    c
}

fn sessions_waiting_for_a_lock(src: &Source, db: &str) -> i64 {
    src.scalar_i64(
        "postgres",
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' AND wait_event_type = 'Lock'"
        ),
    )
}

/// `\r\x1b[2Kbackup: 0 B read, 0 B written, 0 B/s, 1.0s`: the line progress.rs draws.
fn has_progress_line(out: &str) -> bool {
    out.split('\r').any(|seg| {
        let seg = seg.strip_prefix("\x1b[2K").unwrap_or(seg);
        seg.starts_with("backup: ")
            && seg.contains(" read, ")
            && seg.contains(" written, ")
            && seg.contains("/s, ")
    })
}

#[test]
fn progress_line_on_a_terminal_and_only_there() {
    let f = app(SMALL_SQL);
    let url = f.src().url("app");

    // Under a pseudo-terminal (script(1)): the progress line is drawn while pg_dump waits.
    let locker = lock_table(f.src(), "app", "t");
    let cmdline = format!(
        "'{}' backup --source '{url}' --name app",
        offsitedb_bin().display(),
    );
    let mut child = f
        .cli
        .command("script")
        .args(["-qefc", &cmdline, "/dev/null"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux)");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let seen = seen.clone();
        let mut out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let text =
        |seen: &Arc<Mutex<Vec<u8>>>| String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    wait_until(
        Duration::from_secs(60),
        "no progress line on the terminal while the backup waited",
        || {
            if let Some(st) = child.try_wait().unwrap() {
                panic!(
                    "the backup ended ({st}) while its table was locked:\n{}",
                    text(&seen)
                );
            }
            has_progress_line(&text(&seen))
        },
    );
    drop(locker);
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let out = text(&seen);
    assert!(status.success(), "backup under script failed: {out:?}");
    assert!(!out.contains("panicked"), "{out}");
    let snaps = f.list(None);
    assert_eq!(snaps.len(), 1);
    assert!(
        out.contains(&snaps[0].id),
        "the snapshot id was not printed: {out:?}"
    );

    // Without a terminal: the same long wait, and no progress line.
    let locker = lock_table(f.src(), "app", "t");
    let logs = tempfile::tempdir().unwrap();
    let mut child = f
        .cli
        .spawn_logged(&["backup", "--source", &url, "--name", "app"], logs.path());
    wait_until(
        Duration::from_secs(60),
        "pg_dump never waited for the lock",
        || sessions_waiting_for_a_lock(f.src(), "app") > 0,
    );
    // Long enough for several ticks of the display (one every 500 ms) had it been on.
    std::thread::sleep(Duration::from_millis(1500));
    drop(locker);
    let status = child.wait().unwrap();
    let stderr = std::fs::read_to_string(logs.path().join("err")).unwrap();
    let stdout = std::fs::read_to_string(logs.path().join("out")).unwrap();
    assert!(status.success(), "{stderr}");
    assert!(
        !has_progress_line(&stderr) && !stderr.contains('\r') && !stderr.contains('\x1b'),
        "progress drawn without a terminal: {stderr:?}"
    );
    assert!(
        !stdout.contains('\r') && !stdout.contains('\x1b'),
        "{stdout:?}"
    );
    assert_eq!(f.list(None).len(), 2);
}

#[test]
fn the_familiar_recipe_restores_and_a_flipped_byte_is_an_integrity_error() {
    let f = app(SMALL_SQL);
    let src = f.src();
    let id = backup_app(&f);
    src.create_db("restored", "");

    // The repository and key come from the environment: the README's recipe, without flags.
    let script = format!(
        "set -o pipefail; '{bin}' decrypt latest | gunzip | \
         '{pg_restore}' --exit-on-error --dbname '{ci}'",
        bin = offsitedb_bin().display(),
        pg_restore = pg_tool(src, "pg_restore").display(),
        ci = src
            .cluster
            .conninfo("restored")
            .to_conninfo_without_secrets(),
    );
    let out = f
        .cli
        .command("bash")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the recipe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for table in ["t", "u"] {
        let q = format!("SELECT count(*) FROM {table}");
        let n = src.scalar_i64("app", &q);
        assert!(n > 0);
        assert_eq!(src.scalar_i64("restored", &q), n, "{table}");
    }
    assert_eq!(
        crate::roundtrip::fingerprint(src, "app"),
        crate::roundtrip::fingerprint(src, "restored")
    );

    // One flipped byte in the stored object.
    let data = f.object("app", &id, "data");
    let len = std::fs::metadata(&data).unwrap().len() as usize;
    flip_byte(&data, len / 2);
    let to = f.dir.path().join("damaged.dump.gz");
    f.cli.fails(
        &["decrypt", "latest", "-o", to.to_str().unwrap()],
        7,
        "failed authentication",
    );
    assert!(!to.exists(), "a damaged artifact was written");
    // To a pipe, the same exit code.
    f.cli
        .fails(&["decrypt", "latest"], 7, "failed authentication");
}

#[test]
fn a_snapshot_whose_manifest_is_gone_does_not_exist() {
    let f = app(SMALL_SQL);
    let id = backup_app(&f);
    std::fs::remove_file(f.object("app", &id, "manifest")).unwrap();
    assert!(f.object("app", &id, "data").exists());

    assert!(f.list(None).is_empty());
    let table = f.cli.ok(&["list"]);
    assert!(!table.stdout.contains(&id), "{}", table.stdout);
    f.cli.fails(&["show", "latest"], 8, "no snapshots");
    f.cli.fails(&["show", &id], 8, "no snapshot");
    let out = f.dir.path().join("x.dump.gz");
    f.cli.fails(
        &["decrypt", &id, "-o", out.to_str().unwrap()],
        8,
        "no snapshot",
    );
    assert!(!out.exists());
    f.src().create_db("target", "");
    f.cli.fails(
        &["restore", "latest", "--to", &f.src().url("target")],
        8,
        "no snapshot",
    );

    // A later snapshot is the only one there is, and `latest`.
    let id2 = backup_app(&f);
    let listed = f.list(None);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id2);
    assert_eq!(f.show("latest").snapshot_id, id2);
    f.cli.fails(&["show", &id], 8, "no snapshot");
}

#[test]
fn a_server_that_never_answers_cannot_hang_a_backup() {
    // Accepts connections and never says a word.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming() {
            held.push(s);
        }
    });
    let f = Repo::local();
    let logs = tempfile::tempdir().unwrap();
    let url = format!("postgres://postgres:pw@127.0.0.1:{port}/app?connect_timeout=2");
    let mut child = f
        .cli
        .spawn_logged(&["backup", "--source", &url, "--name", "app"], logs.path());
    // A 2 s timeout ends it in about 2.5 s; 10 s means it hung (then it is killed).
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "backup still waiting for a silent server after 10 s (connect_timeout=2):\n{}",
                std::fs::read_to_string(logs.path().join("err")).unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(logs.path().join("err")).unwrap();
    assert_eq!(status.code(), Some(5), "{stderr}");
    let first = stderr.lines().next().unwrap_or("");
    assert!(first.starts_with("error: "), "{stderr}");
    assert!(first.contains("no answer within 2s"), "{stderr}");
    assert!(!stderr.contains("pw@"), "{stderr}");
    assert!(
        !f.path().exists(),
        "a repository was created: {:?}",
        tree(f.path())
    );
}

/// A database that gzip cannot shrink much: md5 of random(), about 3 MB compressed.
const RANDOM_SQL: &str = "CREATE TABLE r (id int, a text, b text);
    INSERT INTO r SELECT g, md5(random()::text), md5(random()::text) FROM generate_series(1, 100000) g;";

#[test]
fn reference_decryptor_refuses_a_damaged_or_truncated_multi_chunk_object() {
    let f = app(RANDOM_SQL);
    let id = backup_app(&f);
    let data = f.object("app", &id, "data");
    let stored = std::fs::read(&data).unwrap();
    // Header (62 bytes) and chunks of 1 MiB + 16-byte tag: more than two chunks.
    assert!(
        stored.len() > 2 * ((1 << 20) + 16) + 62,
        "the object has too few chunks: {} bytes",
        stored.len()
    );

    let decrypt = |object: &Path| {
        Command::new(venv_tool("python"))
            .arg(crate::common::project_dir().join("tools/offsitedb-decrypt.py"))
            .arg(&f.key)
            .stdin(std::fs::File::open(object).unwrap())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap()
    };
    // The intact object decrypts (so the failures below are about the damage).
    let ok = decrypt(&data);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    // One flipped byte in the last chunk.
    let flipped = f.dir.path().join("flipped");
    let mut bytes = stored.clone();
    let at = bytes.len() - 40;
    bytes[at] ^= 0x80;
    std::fs::write(&flipped, &bytes).unwrap();
    let r = decrypt(&flipped);
    assert!(
        !r.status.success(),
        "a flipped byte in the last chunk passed"
    );

    // The last 100 bytes cut off.
    let truncated = f.dir.path().join("truncated");
    std::fs::write(&truncated, &stored[..stored.len() - 100]).unwrap();
    let r = decrypt(&truncated);
    assert!(!r.status.success(), "a truncated object passed");

    // OffsiteDB agrees on both.
    for damaged in [&flipped, &truncated] {
        std::fs::copy(damaged, &data).unwrap();
        let out = f.dir.path().join("out.dump.gz");
        f.cli
            .fails(&["decrypt", &id, "-o", out.to_str().unwrap()], 7, "");
        assert!(!out.exists());
    }
}

/// The postmaster's pid, from the cluster's postmaster.pid.
fn postmaster_pid(c: &Cluster) -> i32 {
    let text = std::fs::read_to_string(c.path().join("data/postmaster.pid")).unwrap();
    text.lines().next().unwrap().trim().parse().unwrap()
}

/// Inodes of the TCP sockets in LISTEN state (IPv4 and IPv6).
fn listening_inodes() -> std::collections::HashSet<u64> {
    let mut out = std::collections::HashSet::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() > 9 && cols[3] == "0A" {
                out.insert(cols[9].parse().unwrap());
            }
        }
    }
    out
}

/// Whether process `pid` holds a listening TCP socket.
fn listens_on_tcp(pid: i32) -> bool {
    let listening = listening_inodes();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|t| {
            t.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse::<u64>()
                .ok()
        })
        .any(|inode| listening.contains(&inode))
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn a_throwaway_cluster_listens_on_no_port_and_leaves_nothing() {
    let c = Cluster::start(&ClusterOptions::default()).unwrap();
    let pid = postmaster_pid(&c);
    let dir = c.path().to_path_buf();
    assert!(alive(pid));
    c.execute("postgres", "SELECT 1").unwrap();
    assert!(!listens_on_tcp(pid), "a default cluster listens on TCP");
    let refused = std::net::TcpStream::connect(("127.0.0.1", c.port()));
    assert!(refused.is_err(), "something answers on its port");

    // The check can tell: a cluster asked to listen does.
    let tcp = Source::start();
    let tcp_pid = postmaster_pid(&tcp.cluster);
    assert!(listens_on_tcp(tcp_pid), "the TCP cluster does not listen");

    drop(c);
    assert!(!alive(pid), "the server {pid} still runs after drop");
    assert!(!dir.exists(), "{} remains", dir.display());
    let tcp_dir = tcp.cluster.path().to_path_buf();
    tcp.cluster.stop();
    assert!(!alive(tcp_pid));
    assert!(!tcp_dir.exists());
}

/// A drill's cluster: tuned for restore speed (what the server reports, not what was written),
/// and still on a unix socket only.
#[test]
fn a_cluster_tuned_for_restore_runs_with_the_restore_settings() {
    let c = Cluster::start(&ClusterOptions {
        tuned_for_restore: true,
        ..Default::default()
    })
    .unwrap();
    let mut conn = c.connect("postgres").unwrap();
    let show = |conn: &mut offsitedb::postgres::client::Client, name: &str| -> String {
        conn.query_one(&format!("SHOW {name}"), &[]).unwrap().get(0)
    };
    for (name, want) in [
        ("fsync", "off"),
        ("full_page_writes", "off"),
        ("synchronous_commit", "off"),
        ("wal_level", "minimal"),
        ("maintenance_work_mem", "512MB"),
        ("autovacuum", "off"),
        ("listen_addresses", ""),
    ] {
        assert_eq!(show(&mut conn, name), want, "{name}");
    }
    assert!(
        !listens_on_tcp(postmaster_pid(&c)),
        "a drill cluster listens on TCP"
    );
}

#[test]
fn restore_clean_puts_back_what_the_snapshot_holds() {
    let f = app(SMALL_SQL);
    let src = f.src();
    backup_app(&f);
    src.create_db("target", "");
    let to = src.url("target");
    f.cli.ok(&["restore", "latest", "--to", &to]);
    let fp = |db: &str| crate::roundtrip::fingerprint(src, db);
    assert_eq!(fp("app"), fp("target"));

    // Someone changes the target: rows added, removed and edited, a column and a table added.
    src.cluster
        .execute(
            "target",
            "INSERT INTO t VALUES (999999, 'extra');
             DELETE FROM t WHERE id <= 10;
             UPDATE u SET n = -1 WHERE k = 'k7';
             ALTER TABLE u ADD COLUMN note text DEFAULT 'x';
             CREATE TABLE stray (x int); INSERT INTO stray VALUES (1);",
        )
        .unwrap();
    assert_ne!(fp("app"), fp("target"));
    // Without --clean the non-empty target is refused and left alone.
    f.cli
        .fails(&["restore", "latest", "--to", &to], 3, "is not empty");
    assert_eq!(src.scalar_i64("target", "SELECT count(*) FROM stray"), 1);

    f.cli.ok(&["restore", "latest", "--to", &to, "--clean"]);
    // --clean replaces the snapshot's objects; a table the snapshot does not know stays
    // (as documented: "Drop the snapshot's objects in the target before restoring them").
    assert_eq!(src.scalar_i64("target", "SELECT count(*) FROM stray"), 1);
    src.cluster.execute("target", "DROP TABLE stray").unwrap();
    assert_eq!(fp("app"), fp("target"));
    assert_eq!(
        crate::roundtrip::plain_dump(src, "app", &[]),
        crate::roundtrip::plain_dump(src, "target", &[]),
        "the restored database differs from the source"
    );
}

#[test]
fn a_cached_template_starts_clusters_and_a_bad_cache_is_ignored() {
    let cache = tempfile::tempdir().unwrap();
    let opts = ClusterOptions {
        template_cache: Some(cache.path().to_path_buf()),
        ..Default::default()
    };
    let cluster_name = |c: &Cluster| {
        let mut conn = c.connect("postgres").unwrap();
        conn.query_one("SHOW cluster_name", &[])
            .unwrap()
            .get::<_, String>(0)
    };
    // The first start runs initdb and keeps its result.
    let first = Cluster::start(&opts).unwrap();
    assert_eq!(cluster_name(&first), "");
    drop(first);
    let root = cache.path().join("initdb");
    let entries: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    let template_conf = entry.join("data/postgresql.conf");
    assert!(entry.join("data/global/pg_control").is_file());

    // The next start copies it (a mark put into the template shows), owned right for the server.
    let mut conf = std::fs::read_to_string(&template_conf).unwrap();
    conf.push_str("\ncluster_name = 'from the cache'\n");
    std::fs::write(&template_conf, &conf).unwrap();
    let second = Cluster::start(&opts).unwrap();
    assert_eq!(cluster_name(&second), "from the cache");
    second
        .execute("postgres", "CREATE TABLE t AS SELECT 1 AS x")
        .unwrap();
    drop(second);

    // A cache folder others may write to is not used.
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).unwrap();
    let open = Cluster::start(&opts).unwrap();
    assert_eq!(
        cluster_name(&open),
        "",
        "a cache writable by others was used"
    );
    drop(open);
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).unwrap();

    // A damaged entry is not used, and is made again from the next initdb; making it removes
    // what was not used for 30 days (another build's entry), not what was.
    let stale = root.join("0123456789abcdef01234567");
    let recent = root.join("89abcdef0123456789abcdef");
    for (dir, days) in [(&stale, 31), (&recent, 29)] {
        std::fs::create_dir_all(dir.join("data/global")).unwrap();
        let when = std::time::SystemTime::now() - Duration::from_secs(days * 24 * 3600);
        filetime::set_file_mtime(dir, filetime::FileTime::from_system_time(when)).unwrap();
    }
    std::fs::remove_file(entry.join("data/global/pg_control")).unwrap();
    let fresh = Cluster::start(&opts).unwrap();
    assert_eq!(cluster_name(&fresh), "");
    drop(fresh);
    assert!(entry.join("data/global/pg_control").is_file());
    let conf = std::fs::read_to_string(&template_conf).unwrap();
    assert!(
        !conf.contains("from the cache"),
        "the damaged entry was kept"
    );
    // An entry the server cannot start from is thrown away: the cluster starts from initdb.
    std::fs::remove_file(entry.join("data/PG_VERSION")).unwrap();
    let retried = Cluster::start(&opts).unwrap();
    retried.execute("postgres", "SELECT 1").unwrap();
    drop(retried);
    assert!(
        entry.join("data/PG_VERSION").is_file(),
        "the entry was not made again"
    );

    let mut left: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    left.sort();
    let mut want = vec![entry.clone(), recent];
    want.sort();
    assert_eq!(left, want, "stale or temporary entries were left behind");
}
