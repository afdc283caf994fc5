//! The secrets sweep: every secret OffsiteDB is given, in every form it could be written in,
//! looked for in everything every command, the daemon and their children leave behind.

use std::time::{Duration, Instant};

use crate::common::{Cli, Repo, Run, SECRET_KEY, Source, tree};
use crate::secrets::WRONG_SECRET;

const SWEEP_DB_PASSWORD: &str = "Db-Sw33p/pw+Qz8@x:R4";
const SWEEP_WRONG_PASSWORD: &str = "Wr0ng-Sw33p-Pw-Lk5";
const SWEEP_SMTP_PASSWORD: &str = "Smtp-Sw33p-pw-K7vQ";
const SWEEP_HOOK_PATH_TOKEN: &str = "Wh-PathTok-6Tq9Lm2x";
const SWEEP_HOOK_QUERY_TOKEN: &str = "Wh-QueryTok-3Rz8Kp1v";
const SWEEP_DASHBOARD_TOKEN: &str = "Dash-Tok-9fWq2Lx7Vb3N";

/// `s` percent-encoded as a URL's user info or query needs it (every byte but the unreserved).
fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The forms `bytes` can take in text: hex (both cases), and base64 (standard and URL-safe),
/// at each of the three alignments it can have inside a longer encoded string (as in an HTTP
/// Basic header, `user:password`): only the characters that depend on `bytes` alone.
fn encodings(bytes: &[u8]) -> Vec<String> {
    use base64::Engine;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut out = vec![hex.to_uppercase(), hex];
    for engine in [
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ] {
        for k in 0..3usize {
            let mut v = vec![0u8; k];
            v.extend_from_slice(bytes);
            let enc = engine.encode(&v);
            let (from, to) = ((8 * k).div_ceil(6), 8 * (k + bytes.len()) / 6);
            out.push(enc[from..to].to_string());
        }
    }
    out
}

/// A secret and the forms it is looked for in: itself, percent-encoded, hex, base64.
fn forms(s: &str) -> Vec<String> {
    let mut v = vec![s.to_string(), percent(s)];
    v.extend(encodings(s.as_bytes()));
    v.sort();
    v.dedup();
    v
}

/// Every form of every secret, each with the name of the secret it comes from.
struct Needles(Vec<(&'static str, String)>);

impl Needles {
    fn new(secrets: &[(&'static str, Vec<String>)]) -> Needles {
        let mut v = Vec::new();
        for (name, fs) in secrets {
            for f in fs {
                assert!(f.len() >= 12, "{name}: a form too short to look for: {f}");
                v.push((*name, f.clone()));
            }
        }
        Needles(v)
    }

    /// The first secret found in `text`, as "name (form)".
    fn find(&self, text: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(_, f)| text.contains(f.as_str()))
            .map(|(n, f)| format!("{n} (as {f})"))
    }

    fn assert_absent(&self, what: &str, text: &str) {
        if let Some(found) = self.find(text) {
            panic!("{found} leaked into {what}:\n{text}");
        }
    }

    /// No file under `dir` but those in `except` holds a secret (names included).
    fn assert_no_file_holds(&self, dir: &std::path::Path, except: &[&std::path::Path]) {
        for e in tree(dir) {
            self.assert_absent("a file name", &e);
            if let Some(rel) = e.strip_prefix("f ") {
                let path = dir.join(rel.rsplitn(3, ' ').nth(2).unwrap());
                if except.contains(&path.as_path()) {
                    continue;
                }
                let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
                self.assert_absent(&path.display().to_string(), &text);
            }
        }
    }
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A repository in SeaweedFS, a source database reached by a role with [`SWEEP_DB_PASSWORD`],
/// and a configuration whose every secret comes from the environment (`${VAR}`): the database
/// password inside the source URLs, the S3 secret, the SMTP password inside the email channel's
/// URL (a closed port), a webhook URL with tokens in its path and query (a closed port); the
/// dashboard token in `OFFSITEDB_SERVER_TOKEN`. Sources: `app` (works), `badpw` (a wrong
/// password), `gone` (nothing listens there). Debug logging on.
struct Sweep {
    repo: Repo,
    src: Source,
    cli: Cli,
    /// The state folder (inside the fixture's folder).
    state: std::path::PathBuf,
    /// Where drills and restores put their temporary files.
    tmp: tempfile::TempDir,
    needles: Needles,
    serve_port: u16,
}

impl Sweep {
    fn new(gone_schedule: &str) -> Sweep {
        let repo = Repo::s3("sweep");
        let src = Source::start();
        src.create_db(
            "app",
            "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g",
        );
        src.cluster
            .execute(
                "postgres",
                &format!("CREATE ROLE sweeper LOGIN SUPERUSER PASSWORD '{SWEEP_DB_PASSWORD}'"),
            )
            .unwrap();
        let dir = repo.dir.path();
        let state = dir.join("state");
        std::fs::create_dir(&state).unwrap();
        let tmp = tempfile::tempdir_in("/tmp").unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let (port, nowhere, serve_port) = (src.cluster.port(), closed_port(), closed_port());
        std::fs::write(
            repo.config_path(),
            format!(
                "[repository]\nurl = \"{}\"\naccess_key_id = \"${{S3_ID}}\"\n\
                 secret_access_key = \"${{S3_SECRET}}\"\nkey_file = \"master.key\"\n\n\
                 [server]\nlisten = \"127.0.0.1:{serve_port}\"\n\n\
                 [alerts]\nwebhook = [\"${{HOOK_URL}}\"]\n\
                 email = {{ smtp = \"smtp://alerts:${{SMTP_PASSWORD}}@127.0.0.1:{nowhere}?tls=none\", \
                 from = \"b@example.com\", to = [\"o@example.com\"] }}\n\n\
                 [[source]]\nname = \"app\"\nurl = \"postgres://sweeper:${{DB_PASSWORD}}@127.0.0.1:{port}/app\"\n\
                 schedule = \"0 0 1 1 *\"\n\n\
                 [[source]]\nname = \"badpw\"\nurl = \"postgres://sweeper:${{WRONG_PASSWORD}}@127.0.0.1:{port}/app\"\n\
                 schedule = \"0 0 1 1 *\"\n\n\
                 [[source]]\nname = \"gone\"\nurl = \"postgres://sweeper:${{DB_PASSWORD}}@127.0.0.1:{nowhere}/app\"\n\
                 schedule = \"{gone_schedule}\"\n",
                repo.url
            ),
        )
        .unwrap();
        let hook = format!(
            "http://127.0.0.1:{nowhere}/hooks/{SWEEP_HOOK_PATH_TOKEN}?token={SWEEP_HOOK_QUERY_TOKEN}"
        );
        let cli = Cli::new()
            .env("OFFSITEDB_STATE_DIR", state.to_str().unwrap())
            .env("OFFSITEDB_TMPDIR", tmp.path().to_str().unwrap())
            .env("S3_ID", crate::common::ACCESS_KEY)
            .env("S3_SECRET", SECRET_KEY)
            .env("DB_PASSWORD", &percent(SWEEP_DB_PASSWORD))
            .env("WRONG_PASSWORD", &percent(SWEEP_WRONG_PASSWORD))
            .env("SMTP_PASSWORD", SWEEP_SMTP_PASSWORD)
            .env("HOOK_URL", &hook)
            .env("OFFSITEDB_SERVER_TOKEN", SWEEP_DASHBOARD_TOKEN)
            .env("RUST_LOG", "debug")
            .cwd(dir);
        let key_line = repo.key_secret();
        let key_bytes = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(key_line.trim())
                .unwrap()
        };
        assert_eq!(key_bytes.len(), 32);
        let mut key_forms = encodings(&key_bytes);
        key_forms.extend(forms(key_line.trim()));
        let needles = Needles::new(&[
            ("the master key", key_forms),
            ("the database password", forms(SWEEP_DB_PASSWORD)),
            ("a wrong database password", forms(SWEEP_WRONG_PASSWORD)),
            ("the S3 secret", forms(SECRET_KEY)),
            ("the SMTP password", forms(SWEEP_SMTP_PASSWORD)),
            ("the webhook's path token", forms(SWEEP_HOOK_PATH_TOKEN)),
            ("the webhook's query token", forms(SWEEP_HOOK_QUERY_TOKEN)),
            ("the dashboard token", forms(SWEEP_DASHBOARD_TOKEN)),
        ]);
        // The sweep can see a secret where it would leak: inside an HTTP Basic header (base64
        // at an offset), a URL (percent-encoded), a hex dump.
        for text in [
            format!("Authorization: Basic {}", {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .encode(format!("alerts:{SWEEP_SMTP_PASSWORD}"))
            }),
            format!("postgres://sweeper:{}@h/db", percent(SWEEP_DB_PASSWORD)),
            format!("key={}", encodings(&key_bytes)[1]),
        ] {
            assert!(needles.find(&text).is_some(), "the sweep misses {text}");
        }
        Sweep {
            repo,
            src,
            cli,
            state,
            tmp,
            needles,
            serve_port,
        }
    }

    fn assert_clean(&self, what: &str, r: &Run) {
        self.needles
            .assert_absent(&format!("the stdout of {what}"), &r.stdout);
        self.needles
            .assert_absent(&format!("the stderr of {what}"), &r.stderr);
    }

    /// Every file the runs left: the fixture's folder (configuration, state, outputs) but the
    /// key file, and the temporary folder.
    fn assert_files_clean(&self) {
        self.needles
            .assert_no_file_holds(self.repo.dir.path(), &[self.repo.key.as_path()]);
        self.needles.assert_no_file_holds(self.tmp.path(), &[]);
    }
}

/// Every command, with `RUST_LOG=debug` and `--json` where it has it, succeeding and failing
/// (a wrong password, an unreachable host, undeliverable alerts, a wrong S3 secret): no secret,
/// in any form, in its output or in any file left under the fixture's and the state folder.
#[test]
fn the_sweep_finds_no_secret_in_any_command_output_or_file() {
    let s = Sweep::new("0 0 1 1 *");
    s.src.create_db("restored", "");
    let restored = format!(
        "postgres://sweeper:{}@127.0.0.1:{}/restored",
        percent(SWEEP_DB_PASSWORD),
        s.src.cluster.port()
    );
    let artifact = s.repo.dir.path().join("app.dump.gz");
    let art = artifact.to_str().unwrap();
    let commands: Vec<(Vec<&str>, bool)> = vec![
        (vec!["check", "app", "--json"], true),
        (vec!["backup", "--source", "app", "--json"], true),
        (vec!["list", "--json"], true),
        (vec!["show", "latest", "--source", "app", "--json"], true),
        (vec!["drill", "latest", "--source", "app", "--json"], true),
        (vec!["verify", "--json"], true),
        (
            vec!["decrypt", "latest", "--source", "app", "-o", art, "--json"],
            true,
        ),
        (
            vec![
                "restore", "latest", "--source", "app", "--to", &restored, "--json",
            ],
            true,
        ),
        (
            vec!["prune", "--source", "app", "--keep", "daily=7", "--json"],
            true,
        ),
        (vec!["history", "--json"], true),
        (vec!["list"], true),
        (vec!["show", "latest", "--source", "app"], true),
        (vec!["history"], true),
        (vec!["check", "app"], true),
        (vec!["verify"], true),
        (vec!["backup", "--source", "app"], true),
        (vec!["run", "app", "--json"], true),
        // Failures.
        (vec!["check", "--json"], false),
        (vec!["backup", "--source", "badpw", "--json"], false),
        (vec!["backup", "--source", "gone", "--json"], false),
        (vec!["run", "gone", "--json"], false),
        (vec!["alert-test", "--json"], false),
        (vec!["alert-test"], false),
        (vec!["check"], false),
        (vec!["backup", "--source", "gone"], false),
        (vec!["history", "--json"], true),
    ];
    let mut codes = Vec::new();
    for (args, ok) in &commands {
        let r = s.cli.run(args);
        s.assert_clean(&format!("{args:?}"), &r);
        assert_eq!(r.code == 0, *ok, "offsitedb {args:?}:\n{r:?}");
        if !ok {
            assert!(r.stderr.contains("error: "), "{args:?}: {}", r.stderr);
        }
        codes.push(r.code);
    }
    // A wrong S3 secret, through the configuration's ${S3_SECRET}.
    let r = s
        .cli
        .fresh()
        .env("OFFSITEDB_STATE_DIR", s.state.to_str().unwrap())
        .env("S3_SECRET", WRONG_SECRET)
        .run(&["list", "--json"]);
    assert_ne!(r.code, 0, "{r:?}");
    let wrong_s3 = Needles::new(&[("a wrong S3 secret", forms(WRONG_SECRET))]);
    for out in [&r.stdout, &r.stderr] {
        s.needles.assert_absent("list with a wrong S3 secret", out);
        wrong_s3.assert_absent("list with a wrong S3 secret", out);
    }
    // The runs did what they say (so both kinds of output were swept), and left files behind.
    assert_eq!(
        s.src.scalar_i64("restored", "SELECT count(*) FROM t"),
        20000
    );
    assert!(artifact.exists());
    assert!(s.state.read_dir().unwrap().count() > 0);
    s.assert_files_clean();
    wrong_s3.assert_no_file_holds(s.repo.dir.path(), &[s.repo.key.as_path()]);
    eprintln!("exit codes: {codes:?}");
}

/// One HTTP request on its own connection; the whole answer (head and body) as text.
fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The body of an answer, as JSON.
fn body_json(answer: &str) -> serde_json::Value {
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"))
}

/// Waits up to `limit` for `f`, then fails saying `what` with `log`.
fn wait_until(limit: Duration, what: &str, log: &dyn Fn() -> String, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < limit,
            "timed out waiting for {what}:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `serve --json` (debug logs) with a schedule: a source that keeps failing and alerting to
/// channels that cannot be reached, a backup and drill started through the API with the token;
/// every page and API answer, with and without the token (bearer, sign-in cookie), and the
/// daemon's whole log hold no secret in any form, nor does any file it left.
#[test]
fn the_sweep_finds_no_secret_in_what_serve_shows_or_logs() {
    let s = Sweep::new("every 2s");
    s.cli.ok(&["run", "app"]);
    let log_path = s.repo.dir.path().join("serve.log");
    let mut daemon = s
        .cli
        .command(crate::common::offsitedb_bin())
        .args(["serve", "--json"])
        .stdout(std::fs::File::create(s.repo.dir.path().join("serve.out")).unwrap())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let port = s.serve_port;
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    // Its children (pg_dump, the drills' servers, pg_restore), looked at until it stops.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (stop, pid) = (stop.clone(), daemon.id());
        std::thread::spawn(move || {
            let mut seen = std::collections::BTreeSet::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                seen.extend(descendants(pid));
                std::thread::sleep(Duration::from_millis(2));
            }
            seen.into_iter().collect::<Vec<Seen>>()
        })
    };
    wait_until(Duration::from_secs(30), "the dashboard", &log, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    // `gone` fails, and both alert channels fail to deliver (after their retries).
    wait_until(Duration::from_secs(40), "undelivered alerts", &log, || {
        let l = log();
        l.contains("webhook http://127.0.0.1") && l.contains("email via 127.0.0.1")
    });

    let bearer = format!("Bearer {SWEEP_DASHBOARD_TOKEN}");
    let auth = [("Authorization", bearer.as_str())];
    let runs = |source: &str| {
        body_json(&http(
            port,
            "GET",
            &format!("/api/v1/sources/{source}/runs"),
            &[],
            "",
        ))
    };
    let ok = |job: &str| {
        runs("app")
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["job"] == job && r["result"] == "ok")
            .count()
    };
    let (backups, drills) = (ok("backup"), ok("drill"));
    let started = http(port, "POST", "/api/v1/sources/app/backup", &auth, "");
    assert!(started.starts_with("HTTP/1.1 2"), "{started}");
    wait_until(
        Duration::from_secs(40),
        "the backup and drill asked for",
        &log,
        || ok("backup") > backups && ok("drill") > drills,
    );
    let snapshots = body_json(&http(port, "GET", "/api/v1/sources/app/snapshots", &[], ""));
    let id = snapshots[0]["id"].as_str().unwrap().to_string();
    let month = jiff::Zoned::now().strftime("%Y-%m").to_string();

    let form = ("Content-Type", "application/x-www-form-urlencoded");
    let signed_in = http(
        port,
        "POST",
        "/login",
        &[form],
        &format!("token={SWEEP_DASHBOARD_TOKEN}&next=/"),
    );
    assert!(signed_in.starts_with("HTTP/1.1 303"), "{signed_in}");
    let cookie = signed_in
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let with_cookie = [("Cookie", cookie.as_str())];
    let mut answers = vec![("POST /login".to_string(), signed_in)];
    let paths = [
        "/".to_string(),
        "/sources/app".into(),
        "/sources/gone".into(),
        "/sources/badpw".into(),
        format!("/sources/app/snapshots/{id}"),
        "/reports".into(),
        format!("/reports/{month}"),
        "/login".into(),
        "/metrics".into(),
        "/healthz".into(),
        "/api/v1/sources".into(),
        "/api/v1/sources/app".into(),
        "/api/v1/sources/gone".into(),
        "/api/v1/sources/app/snapshots".into(),
        format!("/api/v1/sources/app/snapshots/{id}"),
        "/api/v1/sources/app/drills".into(),
        "/api/v1/sources/app/runs".into(),
        "/api/v1/sources/gone/runs".into(),
        "/api/v1/reports".into(),
        format!("/api/v1/reports/{month}"),
    ];
    for p in &paths {
        for (how, headers) in [
            ("", &[][..]),
            (" (bearer)", &auth[..]),
            (" (signed in)", &with_cookie[..]),
        ] {
            let a = http(port, "GET", p, headers, "");
            assert!(a.starts_with("HTTP/1.1 200"), "GET {p}{how}:\n{a}");
            answers.push((format!("GET {p}{how}"), a));
        }
    }
    // The failing source's run, as the API and the pages show it, says why it failed.
    assert!(
        answers
            .iter()
            .any(|(w, a)| w.starts_with("GET /api/v1/sources/gone/runs") && a.contains("failed")),
        "{answers:#?}"
    );
    // Refused actions: no token, a wrong one, a forged form.
    for (what, headers, body) in [
        ("POST /api/v1/sources/app/drill", &[][..], ""),
        (
            "POST /api/v1/sources/app/drill",
            &[("Authorization", "Bearer not-the-token-at-all")][..],
            "",
        ),
        (
            "POST /sources/app/backup",
            &[form, ("Cookie", cookie.as_str())][..],
            "csrf=00",
        ),
    ] {
        let (method, path) = what.split_once(' ').unwrap();
        let a = http(port, method, path, headers, body);
        assert!(a.starts_with("HTTP/1.1 40"), "{what}: {a}");
        answers.push((what.to_string(), a));
    }
    for (what, a) in &answers {
        s.needles.assert_absent(what, a);
    }

    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(daemon.id() as i32, libc::SIGTERM);
    }
    assert_eq!(daemon.wait().unwrap().code(), Some(0), "{}", log());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let children = watcher.join().unwrap();
    let names: std::collections::BTreeSet<&str> =
        children.iter().map(|p| p.comm.as_str()).collect();
    assert!(
        names.contains("postgres"),
        "the drill's server was not seen: {names:?}"
    );
    assert_children_clean(&s.needles, &children);
    let l = log();
    assert!(l.contains("DEBUG"), "debug logging was on:\n{l}");
    s.needles.assert_absent("the daemon's log", &l);
    s.assert_files_clean();
}

/// What one look at a process in /proc saw.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Seen {
    pid: u32,
    comm: String,
    cmdline: String,
    environ: String,
}

/// Every process descending from `root` now: its name, command line and environment (NUL
/// separators as spaces and new lines). Processes caught while exec'ing or exiting are skipped.
fn descendants(root: u32) -> Vec<Seen> {
    let mut parent = std::collections::HashMap::new();
    let mut comm = std::collections::HashMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let ppid: u32 = stat[close + 2..]
            .split(' ')
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        parent.insert(pid, ppid);
        comm.insert(pid, stat[open + 1..close].to_string());
    }
    let mut out = Vec::new();
    for &pid in parent.keys() {
        let mut p = pid;
        let mut below_root = false;
        for _ in 0..64 {
            match parent.get(&p) {
                Some(&pp) if pp == root => {
                    below_root = true;
                    break;
                }
                Some(&pp) if pp > 1 => p = pp,
                _ => break,
            }
        }
        if !below_root {
            continue;
        }
        let read = |f: &str| std::fs::read(format!("/proc/{pid}/{f}")).ok();
        let (Some(cmdline), Some(environ)) = (read("cmdline"), read("environ")) else {
            continue;
        };
        // A fork of offsitedb before its exec is offsitedb itself (the same memory and
        // environment, which hold the key by right); what it execs is what is looked at. Such
        // a fork carries the name of the thread that forked ("job-app"), so its program says.
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        if cmdline.is_empty()
            || comm[&pid] == "offsitedb"
            || exe.is_some_and(|e| e == std::path::Path::new(&crate::common::offsitedb_bin()))
        {
            continue;
        }
        out.push(Seen {
            pid,
            comm: comm[&pid].clone(),
            cmdline: String::from_utf8_lossy(&cmdline).replace('\0', " "),
            environ: String::from_utf8_lossy(&environ).replace('\0', "\n"),
        });
    }
    out
}

/// Runs `offsitedb ARGS` and looks at every descendant of it, as often as it can, until it
/// exits (`tick` runs after each look, with what was seen so far); what it printed and every
/// distinct look.
fn watch(cli: &Cli, args: &[&str], mut tick: impl FnMut(&[Seen])) -> (Run, Vec<Seen>) {
    let mut child = cli.spawn(args);
    let me = child.id();
    let out_reader = {
        let mut o = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut o, &mut s).unwrap();
            s
        })
    };
    let err_reader = {
        let mut e = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            s
        })
    };
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        seen.extend(descendants(me));
        let so_far: Vec<Seen> = seen.iter().cloned().collect();
        tick(&so_far);
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "offsitedb {args:?} did not end");
        std::thread::sleep(Duration::from_millis(2));
    };
    let run = Run {
        code: status.code().unwrap_or(-1),
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    };
    (run, seen.into_iter().collect())
}

/// libpq's clients: the only processes that may hold the database password, in PGPASSWORD.
const LIBPQ_CLIENTS: &[&str] = &["pg_dump", "pg_restore", "psql"];

/// No secret on any command line; none in any environment but the database password in a libpq
/// client's PGPASSWORD.
fn assert_children_clean(needles: &Needles, seen: &[Seen]) {
    let allowed = format!("PGPASSWORD={SWEEP_DB_PASSWORD}");
    for p in seen {
        needles.assert_absent(&format!("the command line of {p:#?}"), &p.cmdline);
        let rest: Vec<&str> = p
            .environ
            .lines()
            .filter(|l| !(LIBPQ_CLIENTS.contains(&p.comm.as_str()) && *l == allowed))
            .collect();
        needles.assert_absent(&format!("the environment of {p:#?}"), &rest.join("\n"));
    }
}

/// A backup (pg_dump held on a lock until seen) and a drill (initdb, the throwaway server,
/// pg_restore), watched through /proc: every descendant's command line and environment hold
/// no secret in any form, but PGPASSWORD (the database password) in libpq clients.
#[test]
fn the_sweep_finds_only_pgpassword_and_only_in_libpq_clients_during_a_backup_and_a_drill() {
    let s = Sweep::new("0 0 1 1 *");
    let mut locker = s.src.client("app");
    let mut tx = Some(locker.transaction().unwrap());
    tx.as_mut()
        .unwrap()
        .batch_execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let real = |p: &Seen, name: &str| p.comm == name && !p.cmdline.contains("--version");
    let (r, backup) = watch(&s.cli, &["backup", "--source", "app", "--json"], |seen| {
        if tx.is_some() && seen.iter().any(|p| real(p, "pg_dump")) {
            tx.take().unwrap().rollback().unwrap();
        }
    });
    assert_eq!(r.code, 0, "{r:?}");
    s.assert_clean("backup", &r);
    let pg_dump = backup
        .iter()
        .find(|p| real(p, "pg_dump"))
        .expect("pg_dump was seen");
    assert!(
        pg_dump
            .environ
            .lines()
            .any(|l| l == format!("PGPASSWORD={SWEEP_DB_PASSWORD}")),
        "libpq gets the password from PGPASSWORD: {pg_dump:#?}"
    );
    assert_children_clean(&s.needles, &backup);

    // The key and the S3 credentials in offsitedb's own environment this time: its children
    // must not inherit them.
    let cli = s
        .cli
        .fresh()
        .env("OFFSITEDB_STATE_DIR", s.state.to_str().unwrap())
        .env("OFFSITEDB_KEY", s.repo.key_secret().trim())
        .env("AWS_ACCESS_KEY_ID", crate::common::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
    let (r, drill) = watch(
        &cli,
        &["drill", "latest", "--source", "app", "--json"],
        |_| {},
    );
    assert_eq!(r.code, 0, "{r:?}");
    s.assert_clean("drill", &r);
    let names: std::collections::BTreeSet<&str> = drill.iter().map(|p| p.comm.as_str()).collect();
    // The throwaway cluster is copied from a template (no initdb): its server and pg_restore.
    for n in ["postgres", "pg_restore"] {
        assert!(
            names.contains(n),
            "{n} was not seen in the drill: {names:?}"
        );
    }
    assert_children_clean(&s.needles, &drill);
    s.assert_files_clean();
}
