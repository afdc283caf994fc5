//! The command line as a person meets it: keygen, the configuration file, `latest`, the demo.

use std::os::unix::fs::PermissionsExt;

use crate::common::{Cli, Manifest, Repo, Snapshot, Source, json, keygen};

/// Database `app`'s one small table.
const TEN_ROWS: &str = "CREATE TABLE t AS SELECT g FROM generate_series(1, 10) g";

#[test]
fn keygen_writes_a_private_key_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k");
    let r = Cli::new().ok(&["keygen", "-o", p.to_str().unwrap()]);
    assert!(r.stderr.contains("key id"), "{}", r.stderr);
    let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let before = std::fs::read(&p).unwrap();
    Cli::new().fails(
        &["keygen", "-o", p.to_str().unwrap()],
        4,
        "refusing to overwrite",
    );
    assert_eq!(std::fs::read(&p).unwrap(), before);
    // To standard output: the same format, a fresh key each time.
    let a = Cli::new().ok(&["keygen"]).stdout;
    let b = Cli::new().ok(&["keygen"]).stdout;
    assert_ne!(a, b);
    assert!(a.starts_with("# OffsiteDB master key, key id "));
}

#[test]
fn configuration_file_with_env_secrets_drives_every_command() {
    let src = Source::start();
    src.create_db(
        "one",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 500) g",
    );
    src.create_db(
        "two",
        "CREATE TABLE u AS SELECT g FROM generate_series(1, 700) g",
    );
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "master.key");
    std::fs::write(
        dir.path().join("offsitedb.toml"),
        format!(
            "[repository]\nurl = \"file://{}/repo\"\nkey_file = \"{}\"\n\n\
             [[source]]\nname = \"one\"\nurl = \"${{ONE_URL}}\"\n\n\
             [[source]]\nname = \"two\"\nurl = \"${{TWO_URL}}\"\ncompression = \"zstd\"\n",
            dir.path().display(),
            key.display()
        ),
    )
    .unwrap();
    let cli = Cli::new()
        .env("ONE_URL", &src.url("one"))
        .env("TWO_URL", &src.url("two"))
        .cwd(dir.path());

    // No arguments: every configured source.
    let r = cli.ok(&["backup"]);
    assert_eq!(r.stdout.lines().count(), 2, "{}", r.stdout);
    // --name picks one.
    cli.ok(&["backup", "--name", "two"]);
    let all: Vec<Snapshot> = json(&cli.ok(&["list", "--json"]));
    assert_eq!(all.len(), 3);
    let two: Vec<Snapshot> = json(&cli.ok(&["list", "--json", "--source", "two"]));
    assert_eq!(two.len(), 2);
    assert!(two.iter().all(|s| s.compression == "zstd:1"));

    // "latest" needs --source when two sources share the repository.
    cli.fails(&["show", "latest"], 3, "ambiguous");
    let m: Manifest = json(&cli.ok(&["show", "latest", "--source", "two", "--json"]));
    assert_eq!(m.snapshot_id, two[1].id);

    src.create_db("two_back", "");
    cli.ok(&[
        "restore",
        "latest",
        "--source",
        "two",
        "--to",
        &src.url("two_back"),
    ]);
    assert_eq!(src.scalar_i64("two_back", "SELECT count(*) FROM u"), 700);

    // Mistakes in the file are named.
    cli.without("TWO_URL").fails(&["list"], 3, "TWO_URL");
    std::fs::write(
        dir.path().join("bad.toml"),
        "[repository]\nurl = \"/x\"\nkey_fiel = \"/k\"\n",
    )
    .unwrap();
    Cli::new()
        .cwd(dir.path())
        .fails(&["--config", "bad.toml", "list"], 3, "key_fiel");
    cli.fails(
        &["backup", "--name", "three"],
        3,
        "no source named \"three\"",
    );
    Cli::new()
        .cwd(dir.path())
        .fails(&["--config", "missing.toml", "list"], 3, "does not exist");
}

#[test]
fn flags_and_environment_alone_work_without_a_file() {
    // The fixture names the repository and key through OFFSITEDB_REPO and OFFSITEDB_KEY_FILE.
    let f = Repo::local().with_source("app", TEN_ROWS);
    let (src, cli) = (f.src(), &f.cli);
    cli.ok(&["backup", "--source", &src.url("app"), "--name", "app"]);
    // Without --name, a URL source is named after its database.
    cli.ok(&["backup", "--source", &src.url("app")]);
    cli.fails(
        &["backup", "--source", &src.url("app"), "--name", "bad/name"],
        3,
        "invalid source name",
    );
    // The same repository through flags alone.
    let listed: Vec<Snapshot> = json(&Cli::new().ok(&[
        "list",
        "--json",
        "--repo",
        &f.url,
        "--key-file",
        f.key.to_str().unwrap(),
    ]));
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|s| s.source == "app"), "{listed:?}");
    let table = cli.ok(&["list"]).stdout;
    assert!(table.contains("not drilled"), "{table}");
    // decrypt to a file: a standard gzip file that pg_restore reads after gunzip.
    let out = f.dir.path().join("app.dump.gz");
    cli.ok(&["decrypt", "latest", "-o", out.to_str().unwrap()]);
    let gz = std::fs::read(&out).unwrap();
    assert_eq!(&gz[..2], &[0x1f, 0x8b]);
    cli.fails(
        &["decrypt", "latest", "-o", out.to_str().unwrap()],
        3,
        "already exists",
    );
    cli.fails(&["show", "20200101T000000Z-aaaaaa"], 8, "no snapshot");
}

#[test]
fn demo_runs_end_to_end_and_cleans_up_its_temporary_folder() {
    let tmp = shared_empty_dir();
    let r = Cli::new()
        .env("TMPDIR", tmp.path().to_str().unwrap())
        .ok(&["demo"]);
    assert!(r.stdout.contains("demo passed"), "{}", r.stdout);
    assert!(r.stdout.contains("order_items"), "{}", r.stdout);
    assert_eq!(
        crate::common::tree(tmp.path()),
        Vec::<String>::new(),
        "the demo left files in TMPDIR"
    );
}

#[test]
fn relative_paths_in_the_config_file_are_relative_to_the_file() {
    let src = Source::start();
    src.create_db("app", TEN_ROWS);
    let dir = tempfile::tempdir().unwrap();
    keygen(dir.path(), "master.key");
    std::fs::create_dir(dir.path().join("etc")).unwrap();
    let config = dir.path().join("etc/offsitedb.toml");
    std::fs::write(
        &config,
        format!(
            "[repository]\nurl = \"{}/repo\"\nkey_file = \"../master.key\"\n\n[[source]]\nname = \"app\"\nurl = \"{}\"\n",
            dir.path().display(),
            src.url("app")
        ),
    )
    .unwrap();
    // Run from somewhere else entirely.
    let cli = Cli::new().cwd(std::path::Path::new("/"));
    cli.ok(&["--config", config.to_str().unwrap(), "backup"]);
    let r = cli.ok(&["list", "--config", config.to_str().unwrap()]);
    assert!(r.stdout.contains("app"), "{}", r.stdout);
}

#[test]
fn offsitedb_config_names_the_configuration_file() {
    let src = Source::start();
    src.create_db("app", TEN_ROWS);
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "master.key");
    let config_for = |repo: &str| {
        format!(
            "[repository]\nurl = \"{}/{repo}\"\nkey_file = \"{}\"\n\n[[source]]\nname = \"app\"\nurl = \"{}\"\n",
            dir.path().display(),
            key.display(),
            src.url("app")
        )
    };
    std::fs::create_dir(dir.path().join("etc")).unwrap();
    let chosen = dir.path().join("etc/chosen.toml");
    std::fs::write(&chosen, config_for("chosen-repo")).unwrap();
    // The working folder has its own offsitedb.toml: OFFSITEDB_CONFIG wins over it.
    let cwd = dir.path().join("work");
    std::fs::create_dir(&cwd).unwrap();
    std::fs::write(cwd.join("offsitedb.toml"), config_for("cwd-repo")).unwrap();

    let cli = Cli::new()
        .env("OFFSITEDB_CONFIG", chosen.to_str().unwrap())
        .cwd(&cwd);
    cli.ok(&["backup"]);
    assert_eq!(json::<Vec<Snapshot>>(&cli.ok(&["list", "--json"])).len(), 1);
    assert!(dir.path().join("chosen-repo/offsitedb.repo").exists());
    assert!(
        !dir.path().join("cwd-repo").exists(),
        "the working folder's offsitedb.toml was used"
    );

    // A missing file named by OFFSITEDB_CONFIG is an error, not a silent fallback.
    Cli::new()
        .env(
            "OFFSITEDB_CONFIG",
            dir.path().join("nope.toml").to_str().unwrap(),
        )
        .cwd(&cwd)
        .fails(&["list"], 3, "does not exist");
    // --config beats the variable.
    let r = Cli::new()
        .env(
            "OFFSITEDB_CONFIG",
            dir.path().join("nope.toml").to_str().unwrap(),
        )
        .cwd(&cwd)
        .ok(&["list", "--json", "--config", chosen.to_str().unwrap()]);
    assert_eq!(json::<Vec<Snapshot>>(&r).len(), 1);
}

/// A folder the throwaway cluster's unprivileged user can enter (like /tmp), empty.
fn shared_empty_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    d
}

#[test]
fn demo_keep_leaves_a_repository_that_list_reads() {
    let tmp = shared_empty_dir();
    let tmp_s = tmp.path().to_str().unwrap();
    let keep_root = tempfile::tempdir().unwrap();
    let keep = keep_root.path().join("demo");
    let r = Cli::new()
        .env("TMPDIR", tmp_s)
        .ok(&["demo", "--keep", keep.to_str().unwrap()]);
    assert!(r.stdout.contains("demo passed"), "{}", r.stdout);
    assert_eq!(crate::common::tree(tmp.path()), Vec::<String>::new());
    let repo = keep.join("repository").display().to_string();
    let snaps: Vec<Snapshot> =
        json(&Cli::for_repo(&repo, &keep.join("master.key")).ok(&["list", "--json"]));
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].source, "shop");
    assert!(r.stdout.contains(&snaps[0].id), "{}", r.stdout);
    // The kept folder must be new or empty.
    Cli::new().env("TMPDIR", tmp_s).fails(
        &["demo", "--keep", keep.to_str().unwrap()],
        3,
        "not empty",
    );
    assert_eq!(
        crate::common::tree(tmp.path()),
        Vec::<String>::new(),
        "a failed demo left files in TMPDIR"
    );
}

#[test]
fn list_into_a_closed_pipe_ends_quietly() {
    let f = Repo::local().with_source("app", TEN_ROWS);
    let (src, cli) = (f.src(), &f.cli);
    for _ in 0..3 {
        cli.ok(&["backup", "--source", &src.url("app"), "--name", "app"]);
    }
    let bin = crate::common::offsitedb_bin();

    // The everyday case: `offsitedb list | head -1` in a shell.
    let err = f.dir.path().join("err");
    let script = format!(
        "'{}' list 2>'{}' | head -1; echo \"list exit ${{PIPESTATUS[0]}}\"",
        bin.display(),
        err.display()
    );
    let out = cli.command("bash").args(["-c", &script]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = std::fs::read_to_string(&err).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].starts_with("ID "), "{stdout}");
    assert!(
        lines[1] == "list exit 0" || lines[1] == "list exit 141",
        "{stdout}\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    // A reader gone before the first byte: always the broken-pipe path, exit 141, quietly.
    let mut fds = [0; 2];
    // SAFETY: pipe fills two fds; we own both and close the read end at once.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: fds[0] is ours and used nowhere else.
    unsafe { libc::close(fds[0]) };
    // SAFETY: fds[1] is an open fd that we own; OwnedFd closes it.
    let write_end =
        unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fds[1]) };
    let out = cli
        .command(&bin)
        .arg("list")
        .stdout(std::process::Stdio::from(write_end))
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("error"), "{stderr}");
}

// As root, the throwaway cluster runs as the `postgres` user, who cannot enter a private TMPDIR
// (mode 0700, as `mktemp -d` makes): the cluster then goes to /tmp, and TMPDIR stays empty.
#[test]
fn demo_works_with_a_private_tmpdir() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let r = Cli::new()
        .env("TMPDIR", tmp.path().to_str().unwrap())
        .run(&["demo"]);
    assert_eq!(
        r.code,
        0,
        "demo with TMPDIR={} (mode 0700) failed:\n{}",
        tmp.path().display(),
        r.stderr
    );
    assert!(r.stdout.contains("demo passed"), "{}", r.stdout);
    assert_eq!(crate::common::tree(tmp.path()), Vec::<String>::new());
}
