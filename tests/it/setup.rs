//! The first ten minutes (issue 5): providers and poolers, for real.

use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Cli, Source, keygen};

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
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "master.key");
    let repo = dir.path().join("repo");
    let cli = Cli::new()
        .env("OFFSITEDB_REPO", repo.to_str().unwrap())
        .env("OFFSITEDB_KEY_FILE", key.to_str().unwrap());
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
    assert!(!repo.join("snapshots").exists(), "something was stored");

    // Session mode keeps one server session per client: that is fine, and so is the direct URL.
    cli.ok(&["backup", "--source", &via(session.port), "--name", "app"]);
    cli.ok(&["backup", "--source", &src.url("app"), "--name", "app"]);
}
