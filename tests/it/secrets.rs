//! No password, key or secret ever appears in output, errors or manifests, and no child process
//! carries the database password on its command line (where any local user could read it).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use offsitedb::storage::ReadStore;

use crate::common::{Cli, DB_PASSWORD, Run, SECRET_KEY, SeaweedFs, Source, keygen, tree};

const WRONG_PASSWORD: &str = "Wr0ng-Pa55-Zq81";
const WRONG_SECRET: &str = "Wr0ng-S3-Secret-77";

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
    let weed = SeaweedFs::start();
    let src = Source::start();
    src.create_db(
        "app",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g",
    );
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "master.key");
    let key_b64 = std::fs::read_to_string(&key)
        .unwrap()
        .lines()
        .find(|l| !l.starts_with('#'))
        .unwrap()
        .to_string();
    let secrets = [
        DB_PASSWORD,
        SECRET_KEY,
        key_b64.as_str(),
        WRONG_PASSWORD,
        WRONG_SECRET,
    ];
    let k = key.to_str().unwrap();
    let repo = weed.repo_url("prod");
    let port = src.cluster.port();
    let good = src.url("app");
    let wrong_pw = format!("postgres://postgres:{WRONG_PASSWORD}@127.0.0.1:{port}/app");
    // Every run shares one state folder, scanned at the end.
    let state = tempfile::tempdir().unwrap();
    let state_s = state.path().to_str().unwrap().to_string();
    let fresh = || Cli::new().env("OFFSITEDB_STATE_DIR", &state_s);
    let cli = fresh().s3();
    src.create_db("restored", "");
    let restored = src.url("restored");
    let artifact = dir.path().join("app.dump.gz");

    let mut runs = vec![
        cli.run(&[
            "backup",
            "--repo",
            &repo,
            "--key-file",
            k,
            "--source",
            &good,
            "--name",
            "app",
            "--json",
        ]),
        cli.run(&[
            "backup",
            "--repo",
            &repo,
            "--key-file",
            k,
            "--source",
            &wrong_pw,
            "--name",
            "app",
        ]),
        cli.run(&[
            "backup",
            "--repo",
            &repo,
            "--key-file",
            k,
            "--source",
            &format!("{good}?sslmode=bogus"),
            "--name",
            "app",
        ]),
        cli.run(&["list", "--repo", &repo, "--key-file", k]),
        cli.run(&["list", "--json", "--repo", &repo, "--key-file", k]),
        cli.run(&["show", "latest", "--repo", &repo, "--key-file", k]),
        cli.run(&["show", "latest", "--json", "--repo", &repo, "--key-file", k]),
        cli.run(&[
            "restore",
            "latest",
            "--to",
            &wrong_pw,
            "--repo",
            &repo,
            "--key-file",
            k,
        ]),
        fresh()
            .env("AWS_ACCESS_KEY_ID", crate::common::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", WRONG_SECRET)
            .run(&["list", "--repo", &repo, "--key-file", k]),
        // The key given inline, and a wrong one.
        fresh()
            .s3()
            .env("OFFSITEDB_KEY", &key_b64)
            .run(&["list", "--repo", &repo]),
        fresh()
            .s3()
            .env("OFFSITEDB_KEY", "AAAA")
            .run(&["list", "--repo", &repo]),
    ];

    // Through a configuration file with ${ENV} secrets, including a failing source.
    let config = dir.path().join("offsitedb.toml");
    std::fs::write(
        &config,
        format!(
            "[repository]\nurl = \"{repo}\"\naccess_key_id = \"${{S3_ID}}\"\nsecret_access_key = \"${{S3_SECRET}}\"\nkey_file = \"{k}\"\n\n\
             [[source]]\nname = \"app\"\nurl = \"${{DB_URL}}\"\n\n[[source]]\nname = \"broken\"\nurl = \"${{BAD_URL}}\"\n"
        ),
    )
    .unwrap();
    let with_config = fresh()
        .env("S3_ID", crate::common::ACCESS_KEY)
        .env("S3_SECRET", SECRET_KEY)
        .env("DB_URL", &good)
        .env("BAD_URL", &wrong_pw)
        .cwd(dir.path());
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
        "--repo",
        &repo,
        "--key-file",
        k,
    ]));
    runs.push(cli.run(&[
        "decrypt",
        "latest",
        "--source",
        "app",
        "--repo",
        &repo,
        "--key-file",
        k,
    ]));
    runs.push(cli.run(&[
        "restore",
        "latest",
        "--source",
        "app",
        "--to",
        &restored,
        "--repo",
        &repo,
        "--key-file",
        k,
    ]));
    runs.push(cli.run(&[
        "restore",
        "latest",
        "--source",
        "app",
        "--to",
        &restored,
        "--clean",
        "--json",
        "--repo",
        &repo,
        "--key-file",
        k,
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
    let listing: Vec<serde_json::Value> = serde_json::from_str(&runs[4].stdout).unwrap();
    assert_eq!(listing.len(), 1);
    // The manifest names the database without its password.
    assert!(
        runs[6].stdout.contains("\"host\": \"127.0.0.1\""),
        "{}",
        runs[6].stdout
    );

    // Nothing at rest holds a secret either: the local state folder and every stored object.
    assert_no_secret_in_files(state.path(), &secrets);
    let store = weed.store("prod");
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
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "master.key");
    let repo = dir.path().join("repo");

    // Hold a lock so pg_dump waits long enough to be inspected.
    let mut locker = src.client("app");
    let mut tx = locker.transaction().unwrap();
    tx.batch_execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        .unwrap();

    let backup = Command::new(env!("CARGO_BIN_EXE_offsitedb"))
        .args([
            "backup",
            "--repo",
            repo.to_str().unwrap(),
            "--key-file",
            key.to_str().unwrap(),
        ])
        .args(["--source", &src.url("app"), "--name", "app"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
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
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            return Some(String::from_utf8_lossy(&raw).replace('\0', " "));
        }
    }
    None
}
