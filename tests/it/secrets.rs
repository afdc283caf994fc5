//! No password, key or secret ever appears in output, errors or manifests, and no child process
//! carries the database password on its command line (where any local user could read it).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Cli, DB_PASSWORD, Run, SECRET_KEY, SeaweedFs, Source, keygen};

const WRONG_PASSWORD: &str = "Wr0ng-Pa55-Zq81";
const WRONG_SECRET: &str = "Wr0ng-S3-Secret-77";

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
    let cli = Cli::new().s3();

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
        Cli::new()
            .env("AWS_ACCESS_KEY_ID", crate::common::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", WRONG_SECRET)
            .run(&["list", "--repo", &repo, "--key-file", k]),
        // The key given inline, and a wrong one.
        Cli::new()
            .s3()
            .env("OFFSITEDB_KEY", &key_b64)
            .run(&["list", "--repo", &repo]),
        Cli::new()
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
    let with_config = Cli::new()
        .env("S3_ID", crate::common::ACCESS_KEY)
        .env("S3_SECRET", SECRET_KEY)
        .env("DB_URL", &good)
        .env("BAD_URL", &wrong_pw)
        .cwd(dir.path());
    runs.push(with_config.run(&["backup"]));
    runs.push(with_config.run(&["list"]));

    for r in &runs {
        assert_clean(r, &secrets);
    }
    // The failures failed, the successes succeeded (so the check above saw both kinds).
    assert_eq!(runs[0].code, 0, "{}", runs[0].stderr);
    assert_eq!(runs[1].code, 5);
    assert_eq!(runs[2].code, 3);
    assert_eq!(runs[6].code, 0);
    assert_eq!(runs[8].code, 6);
    assert_eq!(runs[9].code, 0);
    assert_eq!(runs[10].code, 4);
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
        // Skip the `pg_dump --version` probes of binary discovery.
        if let Some(c) = find_child_cmdline(me, "pg_dump").filter(|c| !c.contains("--version")) {
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
