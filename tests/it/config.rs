//! Settings from the outside: every command from flags and environment alone, the configuration
//! file where daemons look, the precedence of flags over environment over file, S3 settings as
//! the AWS tools read them, and a warning for a readable file that holds a secret.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::common::{
    ACCESS_KEY, BUCKET, CheckItem, Cli, Decrypted, Drill, HistoryRun, JobReport, Manifest, NewKey,
    PruneReport, Repo, RestoreReport, Run, SECRET_KEY, SeaweedFs, Snapshot, Source, check_item,
    json, keygen,
};

/// A row of the table below: arguments, the exit code, and what the output must show.
struct Row<'a> {
    args: Vec<&'a str>,
    code: i32,
    check: Box<dyn Fn(&Run) + 'a>,
}

fn row<'a>(args: &[&'a str], code: i32, check: impl Fn(&Run) + 'a) -> Row<'a> {
    Row {
        args: args.to_vec(),
        code,
        check: Box::new(check),
    }
}

/// The error line of a failed row.
fn says(needle: &'static str) -> impl Fn(&Run) {
    move |r: &Run| {
        let line = r
            .stderr
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or("");
        assert!(line.contains(needle), "{needle:?} not in:\n{}", r.stderr);
    }
}

#[test]
fn every_command_runs_from_flags_and_environment_alone() {
    let weed = SeaweedFs::start();
    let src = Source::start();
    src.create_db(
        "app",
        "CREATE SEQUENCE s; CREATE TABLE t (id int PRIMARY KEY DEFAULT nextval('s'), v text);
         INSERT INTO t (v) SELECT md5(g::text) FROM generate_series(1, 500) g;",
    );
    src.create_db("copy", "");
    let url = src.url("app");
    let copy = src.url("copy");
    // An empty folder, no configuration anywhere, and the repository URL without an endpoint:
    // the endpoint and region come as the AWS tools take them.
    let cwd = tempfile::tempdir().unwrap();
    let key = keygen(cwd.path(), "master.key");
    let dump = cwd.path().join("app.dump.gz");
    let newkey = cwd.path().join("new.key");
    let cli = Cli::new()
        .cwd(cwd.path())
        .env("OFFSITEDB_REPO", &format!("s3://{BUCKET}/flags"))
        .env("OFFSITEDB_KEY_FILE", key.to_str().unwrap())
        .env("AWS_ENDPOINT_URL_S3", &weed.endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY);

    let rows = vec![
        row(&["check", "--source", &url, "--json"], 0, |r| {
            let items: Vec<CheckItem> = json(r);
            let file = check_item(&items, "configuration", "file");
            assert!(file.detail.starts_with("none found"), "{file:?}");
            assert!(items.iter().any(|i| i.subject == "app"), "{items:?}");
            assert!(items.iter().all(|i| i.status != "fail"), "{items:?}");
        }),
        row(&["role-sql", "--source", &url], 0, |r| {
            assert!(r.stdout.contains("CREATE ROLE"), "{}", r.stdout)
        }),
        row(&["backup", "--source", &url, "--json"], 0, |r| {
            let s: Snapshot = json(r);
            assert_eq!((s.source.as_str(), s.database.as_str()), ("app", "app"));
        }),
        row(&["list", "--source", "app", "--json"], 0, |r| {
            assert_eq!(json::<Vec<Snapshot>>(r).len(), 1)
        }),
        // A URL names the same source as its database name.
        row(&["list", "--source", &url, "--json"], 0, |r| {
            assert_eq!(json::<Vec<Snapshot>>(r).len(), 1)
        }),
        row(&["show", "latest", "--source", "app", "--json"], 0, |r| {
            assert_eq!(json::<Manifest>(r).status, "not_drilled")
        }),
        row(&["drill", "latest", "--source", "app", "--json"], 0, |r| {
            assert_eq!(json::<Drill>(r).result, "passed")
        }),
        row(
            &[
                "decrypt",
                "latest",
                "--source",
                "app",
                "-o",
                dump.to_str().unwrap(),
                "--json",
            ],
            0,
            |r| assert_eq!(json::<Decrypted>(r).source, "app"),
        ),
        row(
            &[
                "restore", "latest", "--source", "app", "--to", &copy, "--json",
            ],
            0,
            |r| assert_eq!(json::<RestoreReport>(r).source, "app"),
        ),
        // The whole job for a URL source: backup and drill; no retention given, no prune.
        row(&["run", "--source", &url, "--json"], 0, |r| {
            let v: JobReport = json(r);
            assert!(
                v.drill.as_ref().and_then(|d| d.error.as_ref()).is_none(),
                "{v:#?}"
            );
            assert!(v.prune.is_none(), "{v:#?}");
            assert!(
                v.prune_skipped
                    .as_deref()
                    .unwrap()
                    .contains("no retention configured"),
                "{v:#?}"
            );
        }),
        row(
            &["prune", "--source", "app"],
            3,
            says("no retention configured for source app"),
        ),
        row(
            &[
                "prune",
                "--source",
                "app",
                "--keep",
                "last=1",
                "--dry-run",
                "--json",
            ],
            0,
            |r| {
                let p: Vec<PruneReport> = json(r);
                assert!(p[0].dry_run && p[0].source == "app", "{p:?}");
            },
        ),
        row(&["history", "--source", "app", "--json"], 0, |r| {
            let runs: Vec<HistoryRun> = json(r);
            assert!(
                runs.iter()
                    .any(|h| h.job == "backup" && h.result == "ok" && h.source == "app"),
                "{runs:?}"
            );
        }),
        row(
            &["check", "--source", "nope"],
            3,
            says("no source named \"nope\": no configuration file was found"),
        ),
        row(&["run", "nope"], 3, says("no source named \"nope\"")),
        row(&["alert-test"], 3, says("no alert channel is configured")),
        row(&["serve"], 3, says("no source has a schedule")),
        row(
            &["keygen", "-o", newkey.to_str().unwrap(), "--json"],
            0,
            |r| assert!(!json::<NewKey>(r).key_id.is_empty()),
        ),
    ];
    for r in rows {
        let out = cli.run(&r.args);
        assert_eq!(
            out.code, r.code,
            "offsitedb {:?}: expected exit {}, got {}:\n{}",
            r.args, r.code, out.code, out.stderr
        );
        // The same shape every failure has (`serve` logs its start before).
        if r.code != 0 && r.args[0] != "serve" {
            cli.fails(&r.args, r.code, "");
        }
        (r.check)(&out);
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    }
    // Both runs and the explicit backup are in the repository, under one name.
    let all: Vec<Snapshot> = json(&cli.ok(&["list", "--json"]));
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(all.iter().all(|s| s.source == "app"));
    // The restored copy has the rows.
    assert_eq!(src.scalar_i64("copy", "SELECT count(*) FROM t"), 500);
}

/// Writes a configuration that names `repo` (a folder) and a key next to it.
fn write_config(path: &Path, repo: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(
        path,
        format!("[repository]\nurl = \"{repo}\"\nkey_file = \"master.key\"\n"),
    )
    .unwrap();
    keygen(path.parent().unwrap(), "master.key");
}

/// Which configuration file `check` reports.
fn file_used(cli: &Cli, extra: &[&str]) -> String {
    let mut args = extra.to_vec();
    args.extend(["check", "--json"]);
    let items: Vec<CheckItem> = json(&cli.run(&args));
    check_item(&items, "configuration", "file").detail.clone()
}

#[test]
fn the_configuration_is_found_where_daemons_look_and_check_and_v_say_which() {
    let root = tempfile::tempdir().unwrap();
    let xdg = root.path().join("xdg");
    let xdg_file = xdg.join("offsitedb/offsitedb.toml");
    write_config(&xdg_file, "repo-xdg");
    // A service's working folder (a data directory, or /) has no configuration of its own.
    let elsewhere = root.path().join("pgdata");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let cli = Cli::new()
        .cwd(&elsewhere)
        .env("XDG_CONFIG_HOME", xdg.to_str().unwrap());
    assert_eq!(
        file_used(&cli, &[]),
        format!(
            "{} (found in the user's configuration folder)",
            xdg_file.display()
        )
    );
    // -v says which file, and where the key in it is relative to.
    let r = cli.run(&["-v", "list"]);
    assert!(
        r.stderr.contains("configuration")
            && r.stderr.contains(&xdg_file.display().to_string())
            && r.stderr
                .contains("found in the user's configuration folder"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(&format!(
            "no OffsiteDB repository at {}",
            xdg.join("offsitedb/repo-xdg").display()
        )),
        "{}",
        r.stderr
    );
    // Without -v, no log lines.
    let quiet = cli.run(&["list"]);
    assert!(!quiet.stderr.contains("INFO"), "{}", quiet.stderr);
    // RUST_LOG turns them on too.
    let logged = cli.clone_with("RUST_LOG", "info").run(&["list"]);
    assert!(
        logged.stderr.contains(&xdg_file.display().to_string()),
        "{}",
        logged.stderr
    );

    // The working folder's file comes before the user's.
    write_config(&elsewhere.join("offsitedb.toml"), "repo-here");
    assert_eq!(
        file_used(&cli, &[]),
        "offsitedb.toml (found in the working directory)"
    );
    // OFFSITEDB_CONFIG before both, --config before that.
    let env_file = root.path().join("env/o.toml");
    write_config(&env_file, "repo-env");
    let flag_file = root.path().join("flag/o.toml");
    write_config(&flag_file, "repo-flag");
    let with_env = cli.clone_with("OFFSITEDB_CONFIG", env_file.to_str().unwrap());
    assert_eq!(
        file_used(&with_env, &[]),
        format!("{} (given by OFFSITEDB_CONFIG)", env_file.display())
    );
    assert_eq!(
        file_used(&with_env, &["--config", flag_file.to_str().unwrap()]),
        format!("{} (given by --config)", flag_file.display())
    );
    // An explicit file that does not exist is an error, not a fall-through to another.
    cli.clone_with("OFFSITEDB_CONFIG", "/nonexistent/o.toml")
        .fails(
            &["list"],
            3,
            "configuration file /nonexistent/o.toml does not exist (given by OFFSITEDB_CONFIG)",
        );
}

#[test]
fn flags_beat_the_environment_and_the_environment_beats_the_file() {
    let src = Source::start();
    src.create_db("app", "CREATE TABLE t AS SELECT 1 AS x");
    let root = tempfile::tempdir().unwrap();
    let d = root.path();
    // Three repositories, each holding one source named after it, each with its own key.
    for name in ["file", "env", "flag"] {
        let key = keygen(d, &format!("{name}.key"));
        Cli::new().ok(&[
            "backup",
            "--source",
            &src.url("app"),
            "--name",
            name,
            "--repo",
            d.join(name).to_str().unwrap(),
            "--key-file",
            key.to_str().unwrap(),
        ]);
    }
    std::fs::write(
        d.join("offsitedb.toml"),
        "[repository]\nurl = \"file\"\nkey_file = \"file.key\"\n",
    )
    .unwrap();
    let sources = |cli: &Cli, extra: &[&str]| -> Vec<String> {
        let mut args = vec!["list", "--json"];
        args.extend_from_slice(extra);
        json::<Vec<Snapshot>>(&cli.ok(&args))
            .into_iter()
            .map(|s| s.source)
            .collect()
    };
    let cli = Cli::new().cwd(d);
    assert_eq!(sources(&cli, &[]), ["file"]);
    let env = cli
        .clone_with("OFFSITEDB_REPO", d.join("env").to_str().unwrap())
        .env("OFFSITEDB_KEY_FILE", d.join("env.key").to_str().unwrap());
    assert_eq!(sources(&env, &[]), ["env"]);
    let (flag_repo, flag_key) = (d.join("flag"), d.join("flag.key"));
    let flags = [
        "--repo",
        flag_repo.to_str().unwrap(),
        "--key-file",
        flag_key.to_str().unwrap(),
    ];
    assert_eq!(sources(&env, &flags), ["flag"]);
    // The key alone: the environment's key beats the file's, the flag's beats the environment's.
    let env_key = cli.clone_with("OFFSITEDB_KEY_FILE", d.join("env.key").to_str().unwrap());
    env_key.fails(&["list"], 4, "was created with key id");
    env_key.ok(&["list", "--repo", d.join("env").to_str().unwrap()]);
    env_key.fails(
        &[
            "list",
            "--repo",
            d.join("env").to_str().unwrap(),
            "--key-file",
            d.join("flag.key").to_str().unwrap(),
        ],
        4,
        "was created with key id",
    );
}

#[test]
fn s3_settings_come_as_the_aws_tools_read_them() {
    let weed = SeaweedFs::start();
    let src = Source::start();
    src.create_db("app", "CREATE TABLE t AS SELECT 1 AS x");
    let home = tempfile::tempdir().unwrap();
    let aws = home.path().join(".aws");
    std::fs::create_dir_all(&aws).unwrap();
    // The default profile has a wrong secret; profile "weed" has the right one, and its
    // endpoint and region in the config file.
    std::fs::write(
        aws.join("credentials"),
        format!(
            "[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = wrong-secret\n\n\
             [weed]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        aws.join("config"),
        format!(
            "[profile weed]\nregion = us-east-1\nendpoint_url = {}\n",
            weed.endpoint()
        ),
    )
    .unwrap();
    let key = keygen(home.path(), "master.key");
    let cli = Cli::new()
        .cwd(home.path())
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            aws.join("credentials").to_str().unwrap(),
        )
        .env("AWS_CONFIG_FILE", aws.join("config").to_str().unwrap())
        .env("OFFSITEDB_REPO", &format!("s3://{BUCKET}/aws"))
        .env("OFFSITEDB_KEY_FILE", key.to_str().unwrap());
    // AWS_PROFILE: credentials, endpoint and region from the shared files.
    let profiled = cli.clone_with("AWS_PROFILE", "weed");
    profiled.ok(&["backup", "--source", &src.url("app")]);
    assert_eq!(
        json::<Vec<Snapshot>>(&profiled.ok(&["list", "--json"])).len(),
        1
    );
    // A profile that does not exist is named.
    cli.clone_with("AWS_PROFILE", "nope")
        .fails(&["list"], 3, "the AWS profile \"nope\"");
    // The default profile's wrong secret is refused by the store (and never printed).
    let endpoint = cli.clone_with("AWS_ENDPOINT_URL_S3", &weed.endpoint());
    let r = endpoint.fails(&["list"], 6, "");
    assert!(!r.stderr.contains("wrong-secret"), "{}", r.stderr);
    // Keys in the configuration file beat the default profile...
    std::fs::write(
        home.path().join("offsitedb.toml"),
        format!(
            "[repository]\naccess_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"{SECRET_KEY}\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        home.path().join("offsitedb.toml"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    endpoint.ok(&["list"]);
    // ...and keys in the environment beat the file (here: a wrong secret wins, and fails).
    endpoint
        .clone_with("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", "env-wrong")
        .fails(&["list"], 6, "");
    // AWS_ENDPOINT_URL_S3 beats AWS_ENDPOINT_URL (a port nothing listens on).
    endpoint
        .clone_with("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .ok(&["list"]);
    // check says where the credentials came from.
    let items: Vec<CheckItem> = json(&profiled.run(&["check", "--json"]));
    let keys = items.iter().find(|i| i.check == "s3 keys").unwrap();
    assert!(keys.detail.contains("AWS profile \"weed\""), "{keys:?}");
}

#[test]
fn a_readable_file_that_holds_a_secret_gets_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("offsitedb.toml");
    keygen(dir.path(), "master.key");
    std::fs::write(
        &file,
        "[repository]\nurl = \"repo\"\nkey_file = \"master.key\"\n\
         [[source]]\nname = \"app\"\nurl = \"postgres://u:Hunter2-Secret@127.0.0.1:1/app\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cli = Cli::new().cwd(dir.path());
    let r = cli.run(&["list"]);
    assert!(
        r.stderr.contains("warning: offsitedb.toml is readable by every user (mode 644) and holds a secret (the password in source \"app\"'s url)"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("Hunter2"), "{}", r.stderr);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(!cli.run(&["list"]).stderr.contains("readable by every user"));
    // A reference to the environment is no secret in the file.
    std::fs::write(
        &file,
        "[repository]\nurl = \"repo\"\nkey_file = \"master.key\"\n\
         [[source]]\nname = \"app\"\nurl = \"postgres://u:${PW}@127.0.0.1:1/app\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = cli.clone_with("PW", "x").run(&["list"]);
    assert!(!r.stderr.contains("readable by every user"), "{}", r.stderr);
}

#[test]
fn an_unknown_source_name_lists_the_configured_ones() {
    let dir = tempfile::tempdir().unwrap();
    keygen(dir.path(), "master.key");
    std::fs::write(
        dir.path().join("offsitedb.toml"),
        "[repository]\nurl = \"repo\"\nkey_file = \"master.key\"\n\
         [[source]]\nname = \"shop\"\nurl = \"postgres://u@127.0.0.1:1/shop\"\n\
         [[source]]\nname = \"uploads\"\nkind = \"directory\"\npath = \"up\"\n",
    )
    .unwrap();
    let cli = Cli::new().cwd(dir.path());
    for cmd in [
        &["backup", "--source", "shpo"][..],
        &["check", "--source", "shpo"],
        &["check", "shpo"],
        &["role-sql", "--source", "shpo"],
        &["run", "shpo"],
        &["run", "--source", "shpo"],
    ] {
        cli.fails(
            cmd,
            3,
            "no source named \"shpo\" in the configuration (it has: shop, uploads)",
        );
    }
    // `run` with two configured sources asks which.
    cli.fails(
        &["run"],
        3,
        "which source? the configuration has 2 (shop, uploads)",
    );
}

#[test]
fn quiet_says_only_the_result_and_verbose_says_more() {
    let src = Source::start();
    src.create_db("app", "CREATE TABLE t AS SELECT 1 AS x");
    let repo = Repo::local();
    let r = repo.cli.ok(&["-q", "backup", "--source", &src.url("app")]);
    assert_eq!(r.stderr, "", "-q printed on stderr");
    assert_eq!(r.stdout.trim().len(), 23, "the snapshot id: {}", r.stdout);
    // Without -q the same backup says what it stored.
    let r = repo.cli.ok(&["backup", "--source", &src.url("app")]);
    assert!(r.stderr.contains("app: "), "{}", r.stderr);
    // -v adds log lines (where the settings came from), never on standard output.
    let r = repo.cli.ok(&["-v", "list", "--json"]);
    assert!(r.stderr.contains("no configuration file"), "{}", r.stderr);
    assert_eq!(json::<Vec<Snapshot>>(&r).len(), 2);
    // Errors still show with -q.
    repo.cli.fails(&["-q", "show", "nope"], 8, "no snapshot");
}

/// One name, one source: a folder under a database's name, or another database under a
/// configured source's name, would mix into its snapshots (and a success would lift the prune
/// hold of a source whose backups fail); both are refused before anything is written.
#[test]
fn one_name_holds_one_source() {
    let repo = crate::common::Repo::local().with_source("app", "CREATE TABLE t AS SELECT 1 AS x");
    repo.src()
        .create_db("other", "CREATE TABLE u AS SELECT 2 AS y");
    repo.backup(&repo.src().url("app"), "app");
    let folder = repo.dir.path().join("files");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("a.txt"), "a").unwrap();
    repo.cli.fails(
        &["backup", "--dir", folder.to_str().unwrap(), "--name", "app"],
        3,
        "the repository's snapshots of app are of a database (app), and this source is a folder: they would mix",
    );
    assert_eq!(repo.list(Some("app")).len(), 1);
    // A configured source's name given to another database on the command line.
    let url = repo.src().url("app");
    let repo = repo.with_config(&format!(
        "[[source]]\nname = \"app\"\nurl = \"{url}\"\nkeep = {{ last = 2 }}\n"
    ));
    repo.cli.fails(
        &[
            "backup",
            "--source",
            &repo.src().url("other"),
            "--name",
            "app",
        ],
        3,
        "\"app\" names a configured source",
    );
    // The configured database itself, given by URL, is fine.
    repo.cli.ok(&[
        "backup",
        "--source",
        &repo.src().url("app"),
        "--name",
        "app",
    ]);
    assert_eq!(repo.list(Some("app")).len(), 2);
}

/// The state folder follows the rule too (the environment before the file), `check` names it,
/// and `init` writes its file where OFFSITEDB_CONFIG points, keeping typed paths as typed.
#[test]
fn the_state_folder_and_init_follow_the_same_rules() {
    let dir = tempfile::tempdir().unwrap();
    keygen(dir.path(), "master.key");
    std::fs::write(
        dir.path().join("offsitedb.toml"),
        "[repository]\nurl = \"repo\"\nkey_file = \"master.key\"\n[state]\npath = \"file-state/state.db\"\n",
    )
    .unwrap();
    let state_of = |cli: &Cli| -> String {
        let items: Vec<CheckItem> = json(&cli.run(&["check", "--json"]));
        check_item(&items, "configuration", "state").detail.clone()
    };
    let file_only = Cli::new().cwd(dir.path()).without("OFFSITEDB_STATE_DIR");
    assert!(
        state_of(&file_only).starts_with(&format!(
            "{}",
            dir.path().join("file-state/state.db").display()
        )),
        "{}",
        state_of(&file_only)
    );
    let env_dir = dir.path().join("env-state");
    let with_env = file_only.clone_with("OFFSITEDB_STATE_DIR", env_dir.to_str().unwrap());
    assert!(
        state_of(&with_env).starts_with(&format!("{}", env_dir.join("state.db").display())),
        "{}",
        state_of(&with_env)
    );

    // init: the file goes where later commands look first; a typed relative path keeps its
    // meaning (relative to where it was typed), the file's own defaults go next to the file.
    let work = tempfile::tempdir().unwrap();
    let target = work.path().join("etc/o.toml");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    let cli = Cli::new()
        .cwd(work.path())
        .env("OFFSITEDB_CONFIG", target.to_str().unwrap());
    cli.ok(&[
        "init",
        "--source",
        "postgres://u@127.0.0.1:1/app",
        "--repo",
        "myrepo",
        "--no-check",
    ]);
    let text = std::fs::read_to_string(&target).unwrap();
    assert!(
        text.contains(&work.path().join("myrepo").display().to_string()),
        "{text}"
    );
    assert!(target.parent().unwrap().join("master.key").exists());
    assert!(!work.path().join("offsitedb.toml").exists());
}
