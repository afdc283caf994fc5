//! The first ten minutes (issue 5): providers and poolers, for real.

use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{CheckItem, Cli, Drill, Repo, Source, check_item, json, keygen};

/// A real PgBouncer (Debian's package) in front of `upstream`, in `mode`.
struct PgBouncer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl PgBouncer {
    fn start(upstream: u16, mode: &str) -> PgBouncer {
        let bin = "/usr/sbin/pgbouncer";
        assert!(
            std::path::Path::new(bin).exists(),
            "pgbouncer is missing: run scripts/test.sh (it installs the Debian package)"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let ini = dir.path().join("pgbouncer.ini");
        std::fs::write(
            &ini,
            format!(
                "[databases]\n* = host=127.0.0.1 port={upstream} user=postgres password={}\n[pgbouncer]\n\
                 listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = any\npool_mode = {mode}\n",
                crate::common::DB_PASSWORD
            ),
        )
        .unwrap();
        // It holds the test cluster's password: readable by the postgres user it runs as.
        std::fs::set_permissions(&ini, std::fs::Permissions::from_mode(0o644)).unwrap();
        // PgBouncer refuses to run as root.
        let mut cmd = if unsafe { libc::geteuid() } == 0 {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", bin]);
            c
        } else {
            Command::new(bin)
        };
        // Its log goes to a file we opened (it may run as another user).
        let log = dir.path().join("log");
        let child = cmd
            .arg(&ini)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "pgbouncer did not start:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        PgBouncer {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // runuser passes SIGTERM on to pgbouncer.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

#[test]
fn a_pooler_in_transaction_mode_is_named_with_the_fix_and_the_direct_url_works() {
    let src = Source::start();
    src.create_db(
        "app",
        "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g",
    );
    let tx = PgBouncer::start(src.cluster.port(), "transaction");
    let session = PgBouncer::start(src.cluster.port(), "session");
    let f = Repo::local();
    let cli = &f.cli;
    let via = |port: u16| {
        src.url("app")
            .replace(&format!(":{}/", src.cluster.port()), &format!(":{port}/"))
    };

    let r = cli.fails(
        &["backup", "--source", &via(tx.port), "--name", "app"],
        5,
        "is behind a connection pooler in transaction or statement mode",
    );
    assert!(
        r.stderr.contains("use the database's direct address"),
        "{}",
        r.stderr
    );
    assert!(
        !r.stderr.contains(crate::common::DB_PASSWORD),
        "{}",
        r.stderr
    );
    assert!(!f.path().join("snapshots").exists(), "something was stored");

    // Session mode keeps one server session per client: that is fine, and so is the direct URL.
    cli.ok(&["backup", "--source", &via(session.port), "--name", "app"]);
    cli.ok(&["backup", "--source", &src.url("app"), "--name", "app"]);
}

/// The configuration's one source, `app` at `url`.
fn app(url: &str) -> String {
    format!("[[source]]\nname = \"app\"\nurl = \"{url}\"\n")
}

/// `check --json`: its exit code and its checklist.
fn items(cli: &Cli) -> (i32, Vec<CheckItem>) {
    let r = cli.run(&["check", "--json"]);
    (r.code, json(&r))
}

#[test]
fn check_names_each_failure_with_its_fix() {
    let src = Source::start();
    src.create_db(
        "app",
        "CREATE TABLE open (id int); CREATE TABLE secret (id int); CREATE SEQUENCE s;
         CREATE ROLE reader LOGIN PASSWORD 'reader-pw';
         CREATE ROLE writer LOGIN PASSWORD 'writer-pw';
         GRANT SELECT ON open TO reader; GRANT SELECT ON s TO reader;
         GRANT SELECT ON open, secret TO writer; GRANT SELECT ON s TO writer;
         GRANT INSERT ON open TO writer;",
    );
    let f = Repo::s3("check").with_config(&app(&src.url("app")));
    keygen(f.dir.path(), "other.key");
    let cli = &f.cli;
    let port = src.cluster.port();
    let url = |user: &str, pw: &str| format!("postgres://{user}:{pw}@127.0.0.1:{port}/app");

    // All good (the superuser is warned about).
    let (code, all) = items(cli);
    assert_eq!(code, 0, "{all:#?}");
    for c in ["dns", "tcp", "login", "server", "pooler", "read"] {
        assert_eq!(check_item(&all, "app", c).status, "ok", "{c}: {all:#?}");
    }
    assert_eq!(check_item(&all, "app", "tls").status, "warn");
    assert_eq!(check_item(&all, "app", "write").status, "warn");
    assert!(
        check_item(&all, "app", "server")
            .detail
            .contains("pg_dump 15")
    );
    for c in ["write", "read", "list", "delete", "lock", "key"] {
        assert_eq!(
            check_item(&all, "repository", c).status,
            "ok",
            "{c}: {all:#?}"
        );
    }
    assert!(
        check_item(&all, "repository", "lock")
            .detail
            .starts_with("Object Lock is off"),
        "{all:#?}"
    );
    let text = cli.ok(&["check"]).stdout;
    assert!(
        text.contains("✓ login")
            && text.contains("! write")
            && text.contains("fix: a read-only role"),
        "{text}"
    );

    // A wrong password: login fails, named, with the fix; later steps skipped.
    f.write_config(&app(&url("reader", "nope")));
    let r = cli.fails(&["check"], 5, "app login");
    assert!(
        r.stdout.contains("✗ login") && r.stdout.contains("refused the password"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("fix: check the password"), "{}", r.stdout);
    assert!(r.stdout.contains("- read"), "{}", r.stdout);
    assert!(!r.stdout.contains("nope") && !r.stderr.contains("nope"));

    // Nothing listens on the port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    f.write_config(&app(&format!("postgres://u:p@127.0.0.1:{closed}/app")));
    let r = cli.fails(&["check"], 5, "app tcp");
    assert!(
        r.stdout.contains("nothing answers on 127.0.0.1"),
        "{}",
        r.stdout
    );

    // A role that cannot read one table: the table is named.
    f.write_config(&app(&url("reader", "reader-pw")));
    let r = cli.fails(&["check"], 5, "app read");
    assert!(
        r.stdout.contains("cannot read 1 relation: public.secret"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("pg_read_all_data"), "{}", r.stdout);
    let (_, all) = items(cli);
    assert_eq!(check_item(&all, "app", "write").status, "ok");

    // A role that can write: a warning, not a failure.
    f.write_config(&app(&url("writer", "writer-pw")));
    let (code, all) = items(cli);
    assert_eq!(code, 0, "{all:#?}");
    assert_eq!(check_item(&all, "app", "write").status, "warn");
    assert!(
        check_item(&all, "app", "write")
            .detail
            .contains("can change 1 table")
    );

    // Row-level security that would hide rows: named, with the fix; BYPASSRLS mends it.
    src.cluster
        .execute(
            "app",
            "CREATE TABLE guarded (id int); ALTER TABLE guarded ENABLE ROW LEVEL SECURITY;
             CREATE POLICY nobody ON guarded USING (false);
             CREATE ROLE rls_reader LOGIN PASSWORD 'rls-pw';
             GRANT SELECT ON open, secret, guarded, s TO rls_reader;",
        )
        .unwrap();
    f.write_config(&app(&url("rls_reader", "rls-pw")));
    let r = cli.fails(&["check"], 5, "app rls");
    assert!(
        r.stdout.contains("public.guarded") && r.stdout.contains("BYPASSRLS"),
        "{}",
        r.stdout
    );
    src.cluster
        .execute("postgres", "ALTER ROLE rls_reader BYPASSRLS")
        .unwrap();
    cli.ok(&["check"]);

    // A wrong secret for the bucket.
    f.write_config(&app(&src.url("app")));
    let wrong = cli.clone_with("AWS_SECRET_ACCESS_KEY", "wrong-secret");
    let r = wrong.fails(&["check"], 6, "repository write");
    assert!(r.stdout.contains("✗ write"), "{}", r.stdout);
    assert!(!r.stdout.contains("wrong-secret") && !r.stderr.contains("wrong-secret"));

    // A key that is not the repository's (the repository exists after one backup).
    cli.ok(&["backup"]);
    // The same configuration, with the other key.
    let text = std::fs::read_to_string(f.config_path()).unwrap();
    std::fs::write(f.config_path(), text.replace("master.key", "other.key")).unwrap();
    let r = cli.fails(&["check"], 4, "repository key");
    assert!(r.stdout.contains("✗ key"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("fix: use the key file this repository was created with"),
        "{}",
        r.stdout
    );
}

/// role-sql's SQL, applied to a real server by a superuser, makes a role that backs up and
/// drills, and cannot write: on 15 (pg_read_all_data) and 13 (grants per schema).
fn role_sql_round_trip(major: u32) {
    let dirs = vec![crate::drill::npm_server(major), crate::drill::pypi_18()];
    let src = crate::drill::source(major, &dirs);
    src.create_db(
        "app",
        "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 500) g;
         CREATE SCHEMA sales; CREATE TABLE sales.orders (id serial PRIMARY KEY, total numeric);
         INSERT INTO sales.orders (total) SELECT g FROM generate_series(1, 50) g;
         CREATE TABLE private_notes (id int, owner text);
         INSERT INTO private_notes VALUES (1, 'alice'), (2, 'bob');
         ALTER TABLE private_notes ENABLE ROW LEVEL SECURITY;
         CREATE POLICY own ON private_notes USING (owner = current_user);",
    );
    let f = Repo::local()
        .env("OFFSITEDB_PG_BIN_DIRS", &crate::drill::join_dirs(&dirs))
        .with_config(&app(&src.url("app")));
    let cli = &f.cli;
    let sql = cli.ok(&["role-sql", "app"]).stdout;
    assert_eq!(sql.contains("pg_read_all_data TO"), major >= 14, "{sql}");
    src.cluster.execute("app", &sql).unwrap();
    let password = sql
        .split("PASSWORD '")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .unwrap()
        .to_string();
    let url = format!(
        "postgres://offsitedb_backup:{password}@127.0.0.1:{}/app",
        src.cluster.port()
    );
    f.write_config(&app(&url));
    let (code, all) = items(cli);
    assert_eq!(code, 0, "{all:#?}");
    assert_eq!(check_item(&all, "app", "read").status, "ok");
    assert_eq!(check_item(&all, "app", "write").status, "ok", "{all:#?}");
    cli.ok(&["backup"]);
    let d: Drill = json(&cli.ok(&["drill", "latest", "--json"]));
    assert_eq!(d.result, "passed");
    // Every row, past the row-level security policy.
    assert_eq!(d.tables.len(), 3, "{d:#?}");
    // And it cannot write, even when it asks for a read-write transaction.
    let mut c = postgres::Client::connect(
        &format!(
            "host=127.0.0.1 port={} user=offsitedb_backup password={password} dbname=app",
            src.cluster.port()
        ),
        postgres::NoTls,
    )
    .unwrap();
    let e = c
        .batch_execute("BEGIN READ WRITE; INSERT INTO t VALUES (0); COMMIT")
        .unwrap_err();
    let msg = e.as_db_error().unwrap().message().to_string();
    assert!(msg.contains("permission denied"), "{msg}");
    c.batch_execute("ROLLBACK").unwrap();
    let e = c
        .batch_execute("INSERT INTO sales.orders (total) VALUES (1)")
        .unwrap_err();
    let msg = e.as_db_error().unwrap().message().to_string();
    assert!(msg.contains("read-only transaction"), "{msg}");
}

#[test]
fn role_sql_makes_a_read_only_role_that_backs_up_on_15() {
    role_sql_round_trip(15);
}

#[test]
fn role_sql_makes_a_read_only_role_that_backs_up_on_13() {
    role_sql_round_trip(13);
}

#[test]
fn init_writes_a_configuration_that_checks_and_backs_up() {
    use std::os::unix::fs::PermissionsExt;
    let sw = crate::common::SeaweedFs::start();
    let src = Source::start();
    src.create_db("shop", "CREATE TABLE t AS SELECT 1 AS x");
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new().s3().cwd(dir.path());

    // Without a terminal, the missing values are named.
    cli.fails(&["init"], 3, "missing --source-url and --repo");

    // All flags: the file, the key, then the check, all in one go.
    let r = cli.ok(&[
        "init",
        "--source-url",
        &src.url("shop"),
        "--repo",
        &sw.repo_url("init"),
        "--schedule",
        "hourly",
        "--keep",
        "daily=3,weekly=2",
    ]);
    assert!(
        r.stdout.contains("✓ login") && r.stdout.contains("✓ key"),
        "{}",
        r.stdout
    );
    let conf = dir.path().join("offsitedb.toml");
    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(
        text.contains("name = \"shop\"") && text.contains("keep = { daily = 3, weekly = 2 }"),
        "{text}"
    );
    // It holds the database password and the S3 secret: only its owner reads it.
    assert_eq!(
        std::fs::metadata(&conf).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(dir.path().join("master.key").exists());
    cli.ok(&["run", "shop"]);
    cli.fails(
        &["init", "--source-url", &src.url("shop"), "--repo", "x"],
        3,
        "already exists",
    );

    // Asked, one answer at a time; a bad answer is asked again.
    let other = tempfile::tempdir().unwrap();
    let mut child = cli
        .clone_with("AWS_ACCESS_KEY_ID", "")
        .cwd(other.path())
        .command(crate::common::offsitedb_bin())
        .args(["init", "--interactive", "--no-check"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let answers = format!(
        "{}\n{}\n\nsometimes\nevery 6h\n\n",
        src.url("shop"),
        other.path().join("repo").display()
    );
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(answers.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("invalid schedule \"sometimes\""), "{err}");
    let text = std::fs::read_to_string(other.path().join("offsitedb.toml")).unwrap();
    assert!(
        text.contains("schedule = \"every 6h\"") && text.contains("name = \"shop\""),
        "{text}"
    );
    assert!(
        text.contains("keep = { daily = 7, weekly = 4, monthly = 12 }"),
        "{text}"
    );
    // A folder repository needs no S3 keys: none were asked or written.
    assert!(!text.contains("access_key_id"), "{text}");
}

/// A source that speaks TLS with a certificate from a private CA: `sslmode=verify-full` with
/// `sslrootcert` backs up (our connection and pg_dump both check it), another CA is refused.
#[test]
fn verify_full_with_a_ca_file() {
    use std::os::unix::fs::MetadataExt;
    let src = Source::start();
    src.create_db("app", "CREATE TABLE t AS SELECT 1 AS x");
    let certs = tempfile::tempdir().unwrap();
    let ok = Command::new(crate::common::venv_tool("python"))
        .arg(crate::common::project_dir().join("tests/fixtures/certs.py"))
        .arg(certs.path())
        .status()
        .unwrap();
    assert!(ok.success(), "certificate generation failed");
    // The server reads its certificate and key from its data folder, as its own user.
    let data = src.cluster.path().join("data");
    let owner = std::fs::metadata(&data).unwrap();
    for f in ["server.crt", "server.key"] {
        let to = data.join(f);
        std::fs::copy(certs.path().join(f), &to).unwrap();
        std::os::unix::fs::chown(&to, Some(owner.uid()), Some(owner.gid())).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // One statement at a time: ALTER SYSTEM refuses to run in a multi-statement transaction.
    for sql in [
        "ALTER SYSTEM SET ssl = on",
        "ALTER SYSTEM SET ssl_cert_file = 'server.crt'",
        "ALTER SYSTEM SET ssl_key_file = 'server.key'",
        "SELECT pg_reload_conf()",
    ] {
        src.cluster.execute("postgres", sql).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    let f = Repo::local();
    let url = |ca: &str| {
        format!(
            "{}?sslmode=verify-full&sslrootcert={}",
            src.url("app"),
            certs.path().join(ca).display()
        )
    };
    let cli = &f.cli;
    cli.ok(&["backup", "--source", &url("ca.pem"), "--name", "app"]);
    let r = cli.fails(
        &["backup", "--source", &url("other-ca.pem"), "--name", "app"],
        5,
        "tls failed",
    );
    assert!(r.stderr.contains("sslrootcert"), "{}", r.stderr);
    f.write_config(&app(&url("ca.pem")));
    let (code, all) = items(&Cli::new().cwd(f.dir.path()));
    assert_eq!(code, 0, "{all:#?}");
    assert_eq!(check_item(&all, "app", "tls").status, "ok");
}

#[test]
fn a_fly_private_name_says_where_it_resolves_and_both_fixes() {
    let f = Repo::local();
    let r = f.cli.fails(
        &[
            "backup",
            "--source",
            "postgres://u:pw@my-db.internal:5432/app",
            "--name",
            "app",
        ],
        5,
        "my-db.internal",
    );
    assert!(r.stderr.contains("Fly.io private address"), "{}", r.stderr);
    assert!(
        r.stderr.contains("same organization") && r.stderr.contains("fly ips allocate-v4"),
        "{}",
        r.stderr
    );
}
