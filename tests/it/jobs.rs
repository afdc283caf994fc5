//! Jobs (backup -> drill -> prune), retention on a repository of real snapshots, and the run
//! history, through the `offsitedb` binary with a configuration file.

use std::path::Path;

use crate::common::{JobReport, PruneReport, Repo, Source, json};

/// The configuration's source `app` at `url`, with more settings for it.
fn app(url: &str, source_extra: &str) -> String {
    format!("[[source]]\nname = \"app\"\nurl = \"{url}\"\n{source_extra}\n")
}

/// A folder with a key, a local repository and an `offsitedb.toml` for one source.
fn setup(url: &str, source_extra: &str) -> Repo {
    Repo::local().with_config(&app(url, source_extra))
}

/// `run app --json`.
fn run(s: &Repo) -> JobReport {
    json(&s.cli.ok(&["run", "app", "--json"]))
}

/// Writes a snapshot folder with a data object and no manifest, as a killed upload leaves it.
fn leftover(repo: &Path, id: &str) {
    let d = repo.join("snapshots/app").join(id);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("data"), b"half an upload").unwrap();
}

#[test]
fn jobs_prune_by_retention_and_never_while_backups_fail() {
    let src = Source::start();
    src.create_db(
        "app",
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 2000) g",
    );
    let url = src.url("app");
    let s = setup(&url, "keep = { last = 2 }");

    // Three jobs: each backs up, drills, and prunes down to the last two.
    let mut made = Vec::new();
    for _ in 0..3 {
        let r = run(&s);
        assert!(r.backup.error.is_none(), "{r:#?}");
        assert!(
            r.drill.as_ref().and_then(|d| d.error.as_ref()).is_none(),
            "{r:#?}"
        );
        assert!(r.restore_seconds.unwrap() > 0.0, "{r:#?}");
        made.push(r.snapshot.unwrap());
    }
    // Two jobs may finish within one second, and ids of the same second sort by their random
    // suffix: compare which snapshots are left, not their order.
    let mut left = s.ids(None);
    left.sort();
    let mut want = made[1..].to_vec();
    want.sort();
    assert_eq!(left, want, "the oldest snapshot is pruned");
    assert!(s.list(None).iter().all(|x| x.status == "sealed"));

    // History agrees with the repository: three of each step, newest first.
    let h = s.history(&[]);
    let steps: Vec<(&str, &str)> = h
        .iter()
        .map(|r| (r.job.as_str(), r.result.as_str()))
        .collect();
    assert_eq!(steps.len(), 9, "{h:#?}");
    assert!(steps.iter().all(|(_, r)| *r == "ok"), "{steps:?}");
    assert_eq!(
        &steps[..3],
        [("prune", "ok"), ("drill", "ok"), ("backup", "ok")]
    );
    assert_eq!(h[2].snapshot.as_ref(), Some(&made[2]));
    assert!(h[2].stored_bytes.unwrap() > 0);
    let text = s.cli.ok(&["history", "--source", "app"]).stdout;
    assert!(text.contains(&made[2]) && text.contains("backup"), "{text}");

    // Interrupted uploads: an old one is removed, a fresh one may still be uploading.
    let old = "20200101T000000Z-aaaaaa";
    let fresh = format!(
        "{}-bbbbbb",
        jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ")
    );
    leftover(s.path(), old);
    leftover(s.path(), &fresh);

    // A dry run says what it would do and does nothing.
    let dry = s
        .cli
        .ok(&["prune", "--keep", "last=1", "--source", "app", "--dry-run"])
        .stdout;
    assert!(dry.contains(&format!("would delete  {}", made[1])), "{dry}");
    assert!(dry.contains(&format!("keep          {}", made[2])), "{dry}");
    assert!(
        dry.contains("newest snapshot; newest sealed snapshot; last 1 (1 of 1)"),
        "{dry}"
    );
    assert!(
        dry.contains(old) && dry.contains("interrupted upload"),
        "{dry}"
    );
    assert!(dry.contains("may still be uploading"), "{dry}");
    assert_eq!(s.ids(None), made[1..]);
    assert!(s.path().join("snapshots/app").join(old).exists());

    // The source breaks: the next job's backup fails, and from then on nothing is pruned.
    s.write_config(&app(
        "postgres://postgres@127.0.0.1:1/app",
        "keep = { last = 2 }",
    ));
    let r = s.cli.fails(&["run", "app"], 5, "");
    assert!(r.stdout.contains("backup  FAILED"), "{}", r.stdout);
    let p: Vec<PruneReport> = json(
        &s.cli
            .ok(&["prune", "--keep", "last=1", "--source", "app", "--json"]),
    );
    let p = &p[0];
    assert!(
        p.plan
            .held
            .as_deref()
            .unwrap()
            .contains("nothing is deleted while backups are failing (the last backup"),
        "{p:#?}"
    );
    assert!(p.deleted.is_empty());
    assert!(p.leftovers_removed.is_empty(), "{p:#?}");
    assert!(s.path().join("snapshots/app").join(old).exists());
    assert_eq!(
        s.ids(None),
        made[1..],
        "a prune deleted snapshots while backups fail"
    );
    let h = s.history(&["--limit", "1"]);
    assert_eq!(h[0].job, "backup");
    assert_eq!(h[0].result, "failed");
    assert!(
        h[0].error.as_deref().unwrap().contains("127.0.0.1:1"),
        "{h:#?}"
    );

    // Fixed again: a successful job prunes by the policy, leftovers past the grace period go.
    s.write_config(&app(&url, "keep = { last = 1 }"));
    let r = run(&s);
    let newest = r.snapshot.clone().unwrap();
    assert_eq!(s.ids(None), std::slice::from_ref(&newest));
    let removed = &r.prune.as_ref().unwrap().leftovers_removed;
    assert_eq!(removed, &[old], "{r:#?}");
    assert!(!s.path().join("snapshots/app").join(old).exists());
    assert!(s.path().join("snapshots/app").join(&fresh).exists());

    // The state file is only history: without it every backup is still there and restores.
    let state = s.cli.state_dir().join("state.db");
    assert!(state.exists());
    std::fs::remove_file(&state).unwrap();
    assert_eq!(s.ids(None), std::slice::from_ref(&newest));
    assert!(s.history(&[]).is_empty());
    src.create_db("back", "");
    s.cli.ok(&["restore", "latest", "--to", &src.url("back")]);
    assert_eq!(src.scalar_i64("back", "SELECT count(*) FROM t"), 2000);
}

#[test]
fn bad_schedules_and_retention_are_config_errors() {
    let url = "postgres://x@127.0.0.1:1/app";
    let s = setup(url, "schedule = \"every 5 fortnights\"");
    s.cli.fails(
        &["run", "app"],
        3,
        "invalid schedule \"every 5 fortnights\"",
    );
    s.write_config(&app(url, "timezone = \"Mars/Olympus\""));
    s.cli.fails(&["list"], 3, "unknown time zone");
    s.write_config(&app(url, "keep = { dayly = 3 }"));
    s.cli.fails(&["list"], 3, "dayly");
    s.write_config(&app(url, ""));
    s.cli.fails(
        &["prune", "--keep", "fortnightly=2"],
        3,
        "unknown kind \"fortnightly\"",
    );
}

/// Two runs on one source never overlap: a prune started while a backup of the same source is
/// running waits for it (saying so), or with --no-wait exits 14 naming the holder; another
/// source is not held up.
#[test]
fn a_prune_started_during_a_backup_of_its_source_waits_for_it() {
    let src = Source::start();
    src.create_db(
        "app",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g",
    );
    src.create_db("other", "CREATE TABLE u AS SELECT 1 AS x");
    let repo = Repo::local();
    repo.backup(&src.url("app"), "app");
    // The next backup's pg_dump will wait for this session's lock: a backup held mid-way.
    let mut blocker = src.client("app");
    blocker
        .batch_execute("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let backup = repo
        .cli
        .spawn(&["backup", "--source", &src.url("app"), "--name", "app"]);
    let t = std::time::Instant::now();
    while src.scalar_i64(
        "postgres",
        "SELECT count(*) FROM pg_stat_activity WHERE datname = 'app' AND wait_event_type = 'Lock' AND query LIKE 'LOCK TABLE%'",
    ) == 0
    {
        assert!(t.elapsed().as_secs() < 60, "pg_dump never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let r = repo.cli.fails(
        &["prune", "--source", "app", "--keep", "last=1", "--no-wait"],
        14,
        "source app is busy: another offsitedb run holds its lock: backup (pid",
    );
    assert!(r.stdout.is_empty());
    // However the repository is spelled (here with a trailing slash), it is the same lock.
    let spelled = format!("{}/", repo.url);
    repo.cli.fails(
        &[
            "prune",
            "--source",
            "app",
            "--keep",
            "last=1",
            "--no-wait",
            "--repo",
            &spelled,
        ],
        14,
        "source app is busy",
    );
    // The job of the same source too (what serve runs).
    repo.cli.fails(
        &[
            "run",
            "--source",
            &src.url("app"),
            "--name",
            "app",
            "--no-wait",
        ],
        14,
        "source app is busy",
    );
    // Another source is free.
    repo.backup(&src.url("other"), "other");
    // Without --no-wait, prune waits, says so once, and runs when the backup is done.
    let prune = repo
        .cli
        .spawn(&["prune", "--source", "app", "--keep", "last=1", "--json"]);
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(
        repo.list(Some("app")).len(),
        1,
        "prune ran during the backup"
    );
    blocker.batch_execute("COMMIT").unwrap();
    let b = backup.wait_with_output().unwrap();
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let p = prune.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&p.stderr);
    assert!(p.status.success(), "{stderr}");
    assert_eq!(
        stderr.matches("warning: waiting for source app").count(),
        1,
        "{stderr}"
    );
    // It pruned after the backup, so it saw the new snapshot and kept it.
    let kept = repo.list(Some("app"));
    assert_eq!(kept.len(), 1);
    let new_id = String::from_utf8_lossy(&b.stdout).trim().to_string();
    assert_eq!(kept[0].id, new_id);
}

/// Locks are shared by every user of the machine: a lock file root made (a backup typed by
/// hand) does not lock the service's user out, and a run without any state folder (no HOME)
/// still backs up, its locks in a folder of its own, said.
#[test]
fn a_lock_made_by_another_user_or_without_a_state_folder_does_not_stop_a_backup() {
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root (the CI machines run as root)"
    );
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (state, data) = (root.path().join("state"), root.path().join("data"));
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("a.txt"), "a").unwrap();
    let key = crate::common::keygen(root.path(), "master.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let repo = root.path().join("repo");
    let cli = crate::common::Cli::new()
        .cwd(root.path())
        .env("OFFSITEDB_STATE_DIR", state.to_str().unwrap())
        .env("OFFSITEDB_REPO", repo.to_str().unwrap())
        .env("OFFSITEDB_KEY_FILE", key.to_str().unwrap());
    let args = ["backup", "--dir", data.to_str().unwrap(), "--name", "files"];
    cli.ok(&args);
    // The repository is open to all here, so only the lock (and the history) are root's.
    std::process::Command::new("chmod")
        .args(["-R", "a+rwX"])
        .arg(&repo)
        .status()
        .unwrap();
    let as_nobody = |cmd: &mut std::process::Command| {
        let out = cmd.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = as_nobody(
        cli.command("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(crate::common::offsitedb_bin())
            .args(args),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("lock"), "{stderr}");
    // No HOME and no state folder at all: the backup runs, and says where its locks are.
    let (code, stderr) = as_nobody(
        cli.without("OFFSITEDB_STATE_DIR")
            .command(crate::common::offsitedb_bin())
            .env_remove("HOME")
            .env_remove("XDG_STATE_HOME")
            .args(args),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("no usable state folder") && stderr.contains("locks are kept in"),
        "{stderr}"
    );
    assert_eq!(
        crate::common::Cli::new()
            .env("OFFSITEDB_REPO", repo.to_str().unwrap())
            .env("OFFSITEDB_KEY_FILE", key.to_str().unwrap())
            .cwd(root.path())
            .ok(&["list", "--json"])
            .stdout
            .matches("\"id\"")
            .count(),
        3
    );
}
