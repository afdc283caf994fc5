//! The command line as a person meets it: keygen, the configuration file, `latest`, the demo.

use std::os::unix::fs::PermissionsExt;

use crate::common::{Cli, Source, keygen, list_json};

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
    let all: Vec<serde_json::Value> =
        serde_json::from_str(&cli.ok(&["list", "--json"]).stdout).unwrap();
    assert_eq!(all.len(), 3);
    let two: Vec<serde_json::Value> =
        serde_json::from_str(&cli.ok(&["list", "--json", "--source", "two"]).stdout).unwrap();
    assert_eq!(two.len(), 2);
    assert!(two.iter().all(|s| s["compression"] == "zstd:1"));

    // "latest" needs --source when two sources share the repository.
    cli.fails(&["show", "latest"], 3, "ambiguous");
    let shown = cli
        .ok(&["show", "latest", "--source", "two", "--json"])
        .stdout;
    let m: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(m["snapshot_id"], two[1]["id"]);

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
    cli.clone_with_env("TWO_URL", None)
        .fails(&["list"], 3, "TWO_URL");
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
    let src = Source::start();
    src.create_db(
        "app",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 10) g",
    );
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "master.key");
    let repo = dir.path().join("repo").display().to_string();
    let cli = Cli::new()
        .env("OFFSITEDB_REPO", &repo)
        .env("OFFSITEDB_KEY_FILE", key.to_str().unwrap())
        .cwd(dir.path());
    cli.ok(&["backup", "--source", &src.url("app"), "--name", "app"]);
    cli.fails(
        &["backup", "--source", &src.url("app")],
        3,
        "--name is required",
    );
    cli.fails(
        &["backup", "--source", &src.url("app"), "--name", "bad/name"],
        3,
        "invalid source name",
    );
    assert_eq!(list_json(&Cli::new(), &repo, &key).len(), 1);
    let table = cli.ok(&["list"]).stdout;
    assert!(table.contains("not drilled"), "{table}");
    // decrypt to a file: a standard gzip file that pg_restore reads after gunzip.
    let out = dir.path().join("app.dump.gz");
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
fn demo_runs_end_to_end() {
    let r = Cli::new().ok(&["demo"]);
    assert!(r.stdout.contains("demo passed"), "{}", r.stdout);
    assert!(r.stdout.contains("order_items"), "{}", r.stdout);
}

impl Cli {
    /// A copy of this runner with one variable removed or replaced.
    fn clone_with_env(&self, k: &str, v: Option<&str>) -> Cli {
        let mut c = Cli::new().cwd(&self.cwd_path());
        for (ek, ev) in self.env_pairs() {
            if ek != k {
                c = c.env(&ek, &ev);
            }
        }
        if let Some(v) = v {
            c = c.env(k, v);
        }
        c
    }
}

#[test]
fn relative_paths_in_the_config_file_are_relative_to_the_file() {
    let src = Source::start();
    src.create_db(
        "app",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 10) g",
    );
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
