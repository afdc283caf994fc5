//! No password, key or secret ever appears in output, errors or manifests, and no child process
//! carries the database password on its command line (where any local user could read it).

use std::time::{Duration, Instant};

use crate::common::{
    Cli, DB_PASSWORD, Manifest, Repo, Run, SECRET_KEY, Snapshot, Source, json, tree,
};

const WRONG_PASSWORD: &str = "Wr0ng-Pa55-Zq81";
pub(crate) const WRONG_SECRET: &str = "Wr0ng-S3-Secret-77";

/// No file under `dir` (names included) holds any of `secrets`.
pub fn assert_no_secret_in_files(dir: &std::path::Path, secrets: &[&str]) {
    for e in tree(dir) {
        for s in secrets {
            assert!(!e.contains(s), "a secret in a file name: {e}");
        }
        if let Some(rel) = e.strip_prefix("f ") {
            let rel = rel.rsplitn(3, ' ').nth(2).unwrap();
            let bytes = std::fs::read(dir.join(rel)).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            for s in secrets {
                assert!(
                    !text.contains(s),
                    "a secret leaked into {}:\n{text}",
                    dir.join(rel).display()
                );
            }
        }
    }
}

fn assert_clean(r: &Run, secrets: &[&str]) {
    for s in secrets {
        assert!(
            !r.stdout.contains(s) && !r.stderr.contains(s),
            "a secret leaked into the output:\nstdout: {}\nstderr: {}",
            r.stdout,
            r.stderr
        );
    }
}

#[test]
fn secrets_never_appear_in_output_or_manifests() {
    let f = Repo::s3("prod").with_source(
        "app",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g",
    );
    let src = f.src();
    let key_b64 = f.key_secret();
    let secrets = [
        DB_PASSWORD,
        SECRET_KEY,
        key_b64.as_str(),
        WRONG_PASSWORD,
        WRONG_SECRET,
    ];
    let port = src.cluster.port();
    let good = src.url("app");
    let wrong_pw = format!("postgres://postgres:{WRONG_PASSWORD}@127.0.0.1:{port}/app");
    // Every run shares one state folder (the fixture's), scanned at the end.
    let state = f.cli.state_dir();
    let state_s = state.to_str().unwrap().to_string();
    let shared = |c: Cli| c.env("OFFSITEDB_STATE_DIR", &state_s);
    let cli = &f.cli;
    src.create_db("restored", "");
    let restored = src.url("restored");
    let artifact = f.dir.path().join("app.dump.gz");

    let mut runs = vec![
        cli.run(&["backup", "--source", &good, "--name", "app", "--json"]),
        cli.run(&["backup", "--source", &wrong_pw, "--name", "app"]),
        cli.run(&[
            "backup",
            "--source",
            &format!("{good}?sslmode=bogus"),
            "--name",
            "app",
        ]),
        cli.run(&["list"]),
        cli.run(&["list", "--json"]),
        cli.run(&["show", "latest"]),
        cli.run(&["show", "latest", "--json"]),
        cli.run(&["restore", "latest", "--to", &wrong_pw]),
        shared(cli.clone_with("AWS_SECRET_ACCESS_KEY", WRONG_SECRET)).run(&["list"]),
        // The key given inline, and a wrong one.
        shared(cli.without("OFFSITEDB_KEY_FILE"))
            .env("OFFSITEDB_KEY", &key_b64)
            .run(&["list"]),
        shared(cli.without("OFFSITEDB_KEY_FILE"))
            .env("OFFSITEDB_KEY", "AAAA")
            .run(&["list"]),
    ];

    // Through a configuration file with ${ENV} secrets, including a failing source (in a folder
    // of its own: the runs above read no configuration).
    let conf = f.dir.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(
        conf.join("offsitedb.toml"),
        format!(
            "[repository]\nurl = \"{}\"\naccess_key_id = \"${{S3_ID}}\"\nsecret_access_key = \"${{S3_SECRET}}\"\nkey_file = \"{}\"\n\n\
             [[source]]\nname = \"app\"\nurl = \"${{DB_URL}}\"\n\n[[source]]\nname = \"broken\"\nurl = \"${{BAD_URL}}\"\n",
            f.url,
            f.key.display()
        ),
    )
    .unwrap();
    let with_config = shared(Cli::new())
        .env("S3_ID", crate::common::ACCESS_KEY)
        .env("S3_SECRET", SECRET_KEY)
        .env("DB_URL", &good)
        .env("BAD_URL", &wrong_pw)
        .cwd(&conf);
    runs.push(with_config.run(&["backup"]));
    runs.push(with_config.run(&["list"]));
    // decrypt, to a file and to a pipe, and a restore that succeeds (with the password in the
    // target URL).
    runs.push(cli.run(&[
        "decrypt",
        "latest",
        "--source",
        "app",
        "-o",
        artifact.to_str().unwrap(),
    ]));
    runs.push(cli.run(&["decrypt", "latest", "--source", "app"]));
    runs.push(cli.run(&["restore", "latest", "--source", "app", "--to", &restored]));
    runs.push(cli.run(&[
        "restore", "latest", "--source", "app", "--to", &restored, "--clean", "--json",
    ]));

    for r in &runs {
        assert_clean(r, &secrets);
    }
    // The failures failed, the successes succeeded (so the check above saw both kinds).
    let codes: Vec<i32> = runs.iter().map(|r| r.code).collect();
    assert_eq!(
        codes,
        [0, 5, 3, 0, 0, 0, 0, 5, 6, 0, 4, 5, 0, 0, 0, 0, 0],
        "exit codes (backup, backup wrong password, bad sslmode, list, list --json, show, \
         show --json, restore wrong password, list wrong secret, list inline key, list bad \
         inline key, backup from config, list from config, decrypt -o, decrypt to a pipe, \
         restore, restore --clean --json):\n{runs:#?}"
    );
    for i in [1, 2, 7, 8, 10] {
        assert!(
            runs[i].stderr.starts_with("error: ") && runs[i].stdout.is_empty(),
            "{:?}",
            runs[i]
        );
    }
    assert_eq!(
        src.scalar_i64("restored", "SELECT count(*) FROM t"),
        1000,
        "the restore did not restore"
    );
    assert!(artifact.exists());
    assert!(
        runs[14].stdout.len() > 100,
        "decrypt wrote nothing to the pipe"
    );
    let backup_all = &runs[11];
    assert_eq!(
        backup_all.code, 5,
        "one of two sources failed: {}",
        backup_all.stderr
    );
    assert!(
        backup_all.stderr.contains("broken"),
        "{}",
        backup_all.stderr
    );
    assert_eq!(json::<Vec<Snapshot>>(&runs[4]).len(), 1);
    // The manifest names the database without its password.
    assert_eq!(json::<Manifest>(&runs[6]).source.host, "127.0.0.1");

    // Nothing at rest holds a secret either: the local state folder and every stored object.
    assert_no_secret_in_files(&state, &secrets);
    let store = f.store();
    let objects = store.list("").unwrap();
    assert!(objects.len() >= 5, "{objects:?}");
    for o in objects {
        let bytes = store.get_bytes(&o.key).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for s in &secrets {
            assert!(
                !o.key.contains(s) && !text.contains(s),
                "a secret in object {}",
                o.key
            );
        }
    }
}

#[test]
fn pg_dump_never_gets_the_password_on_its_command_line() {
    let src = Source::start();
    src.create_db(
        "app",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g",
    );
    let f = Repo::local();

    // Hold a lock so pg_dump waits long enough to be inspected.
    let mut locker = src.client("app");
    let mut tx = locker.transaction().unwrap();
    tx.batch_execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        .unwrap();

    let backup = f
        .cli
        .spawn(&["backup", "--source", &src.url("app"), "--name", "app"]);
    let me = backup.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    let cmdline = loop {
        // Skip the `pg_dump --version` probes of binary discovery, and a process caught while
        // exec'ing or exiting (its command line reads empty then).
        if let Some(c) = find_child_cmdline(me, "pg_dump")
            .filter(|c| !c.trim().is_empty() && !c.contains("--version"))
        {
            break c;
        }
        assert!(Instant::now() < deadline, "pg_dump never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    tx.rollback().unwrap();
    let out = backup.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(cmdline.contains("--format=custom"), "{cmdline}");
    assert!(cmdline.contains("dbname=app"), "{cmdline}");
    assert!(
        !cmdline.contains(DB_PASSWORD),
        "password on pg_dump's command line: {cmdline}"
    );
}

/// The command line of a direct child of `parent` whose program name is `name`.
fn find_child_cmdline(parent: u32, name: &str) -> Option<String> {
    let pid = find_child(parent, name)?;
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(String::from_utf8_lossy(&raw).replace('\0', " "))
}

/// The pid of a direct child of `parent` whose program name is `name`.
fn find_child(parent: u32, name: &str) -> Option<u32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let comm = &stat[stat.find('(').unwrap() + 1..close];
        let ppid: u32 = stat[close + 2..]
            .split(' ')
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if ppid == parent && comm == name {
            return Some(pid);
        }
    }
    None
}

const NOBODY: u32 = 65534;

/// The core size limit line of /proc/PID/limits, as "soft hard".
fn core_limit(pid: u32) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    line.split_whitespace()
        .skip(4)
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A backup run as an ordinary user (nobody), caught while pg_dump waits on a lock: offsitedb
/// itself is not dumpable (the kernel then gives its /proc files to root, though it runs as
/// nobody) and has a core size limit of 0; pg_dump is dumpable again (exec resets the flag) but
/// inherits the limit, and its environment holds the database password (how libpq gets it) and
/// no other secret: not the master key, not the S3 secret.
#[test]
fn the_process_holding_the_key_cannot_dump_core_and_children_get_only_the_db_password() {
    let src = Source::start();
    src.create_db("app", "CREATE TABLE t AS SELECT 1 AS g");
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let key = crate::common::keygen(dir.path(), "master.key");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    for p in [dir.path(), &state, &key] {
        std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let key_b64 = std::fs::read_to_string(&key).unwrap();
    let key_b64 = key_b64
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .unwrap()
        .trim()
        .to_string();
    let d = dir.path().to_str().unwrap();
    let cli = Cli::new()
        .env("OFFSITEDB_REPO", &format!("{d}/repo"))
        .env("OFFSITEDB_KEY", &key_b64)
        .env("OFFSITEDB_STATE_DIR", state.to_str().unwrap())
        .env("XDG_CONFIG_HOME", &format!("{d}/nowhere"))
        .env("HOME", d)
        // Not used by a folder repository: only here to be looked for.
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .cwd(dir.path());

    let mut locker = src.client("app");
    let mut tx = locker.transaction().unwrap();
    tx.batch_execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let mut cmd = cli.command(crate::common::offsitedb_bin());
    {
        use std::os::unix::process::CommandExt;
        cmd.args(["backup", "--source", &src.url("app"), "--name", "app"])
            .uid(NOBODY)
            .gid(NOBODY)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
    }
    let backup = cmd.spawn().unwrap();
    let me = backup.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    let pg_dump = loop {
        if let Some(pid) = find_child(me, "pg_dump").filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| !c.is_empty() && !String::from_utf8_lossy(&c).contains("--version"))
        }) {
            break pid;
        }
        assert!(Instant::now() < deadline, "pg_dump never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    use std::os::unix::fs::MetadataExt;
    // The kernel gives a non-dumpable process's /proc files (not the folder itself) to root.
    let owner = |pid: u32| {
        std::fs::metadata(format!("/proc/{pid}/environ"))
            .unwrap()
            .uid()
    };
    let status = std::fs::read_to_string(format!("/proc/{me}/status")).unwrap();
    let environ =
        String::from_utf8_lossy(&std::fs::read(format!("/proc/{pg_dump}/environ")).unwrap())
            .replace('\0', "\n");
    let seen = (
        owner(me),
        core_limit(me),
        owner(pg_dump),
        core_limit(pg_dump),
    );
    tx.rollback().unwrap();
    let out = backup.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains(&NOBODY.to_string())),
        "{status}"
    );
    assert_eq!(
        seen,
        (0, "0 0".to_string(), NOBODY, "0 0".to_string()),
        "(owner of /proc/offsitedb/environ, its core limit, owner of /proc/pg_dump/environ, its core limit)"
    );
    assert!(
        environ.contains(&format!("PGPASSWORD={DB_PASSWORD}")),
        "{environ}"
    );
    for s in [key_b64.as_str(), SECRET_KEY] {
        assert!(
            !environ.contains(s),
            "a secret in pg_dump's environment:\n{environ}"
        );
    }
    assert!(
        !environ.contains("OFFSITEDB_") && !environ.contains("AWS_"),
        "{environ}"
    );
}
