//! A hostile (or broken) repository must not exhaust memory or hang `list` and `show`: a 3 GB
//! manifest (a sparse file in a folder, a real 300 MiB object in SeaweedFS), an `offsitedb.repo`
//! that is a link to /dev/zero or a fifo. Each run ends with a clear error (or, for `list`, a
//! warning and the other snapshots) and a small peak RSS, read from the kernel's accounting of
//! that one child (`wait4`), with its address space capped so that a regression ends in a failed
//! allocation instead of taking the machine's memory.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;

use offsitedb::storage::WriteStore;

use crate::common::{Cli, Run, SeaweedFs, keygen, offsitedb_bin};

/// Peak RSS allowed for `list` and `show` here: DESIGN's bound for a whole backup.
const MAX_RSS_KIB: i64 = 64 << 10;

/// Runs `offsitedb args` like `Cli::run`, and returns its peak RSS in KiB too.
// The child is reaped by `wait4`, which returns its resource usage; `Child::wait` does not.
#[allow(clippy::zombie_processes)]
fn run_measured(cli: &Cli, args: &[&str]) -> (Run, i64) {
    let mut cmd = cli.command(offsitedb_bin());
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let cap = libc::rlimit {
                rlim_cur: 4 << 30,
                rlim_max: 4 << 30,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &cap) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("run offsitedb");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 reaps our own child and fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    assert_eq!(unsafe { libc::wait4(pid, &mut status, 0, &mut usage) }, pid);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    let run = Run {
        code,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    };
    (run, usage.ru_maxrss)
}

/// A run that failed with `code` and one `error:` line holding `needle`, in bounded memory.
fn fails_small(cli: &Cli, args: &[&str], code: i32, needle: &str) {
    let (r, rss) = run_measured(cli, args);
    assert!(rss < MAX_RSS_KIB, "offsitedb {args:?} peaked at {rss} KiB");
    assert_eq!(r.code, code, "offsitedb {args:?}:\n{}", r.stderr);
    assert!(
        r.error_line().starts_with("error: ") && r.error_line().contains(needle),
        "offsitedb {args:?}: error line lacks {needle:?}:\n{}",
        r.stderr
    );
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
}

/// `list --json` succeeds with the good snapshots only, warns about the bad one, and stays small.
fn list_skips(cli: &Cli, good: &str, bad: &str, needle: &str) {
    let (r, rss) = run_measured(cli, &["list", "--json"]);
    assert!(rss < MAX_RSS_KIB, "list peaked at {rss} KiB");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let ids: Vec<String> = serde_json::from_str::<Vec<serde_json::Value>>(&r.stdout)
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, [good]);
    assert!(
        r.stderr
            .lines()
            .any(|l| l.starts_with("warning: ") && l.contains(bad) && l.contains(needle)),
        "{}",
        r.stderr
    );
}

/// A folder source and its configuration, the repository at `url`.
fn setup(dir: &Path, url: &str) -> Cli {
    let src = dir.join("files");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a.txt"), "hello\n").unwrap();
    keygen(dir, "master.key");
    std::fs::write(
        dir.join("offsitedb.toml"),
        format!(
            "[repository]\nurl = \"{url}\"\nkey_file = \"master.key\"\n\n\
             [[source]]\nname = \"files\"\nkind = \"directory\"\npath = \"files\"\n"
        ),
    )
    .unwrap();
    Cli::new().s3().cwd(dir)
}

fn backup(cli: &Cli) -> String {
    let r = cli.ok(&["backup", "--name", "files", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    v["id"].as_str().unwrap().to_string()
}

#[test]
fn a_folder_repository_with_a_huge_manifest_or_a_linked_repository_file() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let cli = setup(dir.path(), repo.to_str().unwrap());
    let bad = backup(&cli);
    let good = backup(&cli);

    // A 3 GB manifest (sparse: it costs no disk).
    let manifest = repo.join(format!("snapshots/files/{bad}/manifest"));
    std::fs::remove_file(&manifest).unwrap();
    std::fs::File::create(&manifest)
        .unwrap()
        .set_len(3 << 30)
        .unwrap();
    list_skips(&cli, &good, &bad, "3.0 GiB, over the 256.0 MiB limit");
    fails_small(&cli, &["show", &bad], 7, "over the 256.0 MiB limit");
    cli.ok(&["show", &good]);

    // The repository file a link to /dev/zero, then a fifo: refused, never read.
    let repo_file = repo.join("offsitedb.repo");
    std::fs::rename(&repo_file, dir.path().join("saved.repo")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &repo_file).unwrap();
    fails_small(&cli, &["list"], 7, "offsitedb.repo is a symbolic link");
    fails_small(&cli, &["show", &good], 7, "not a regular file");
    std::fs::remove_file(&repo_file).unwrap();
    let fifo = std::ffi::CString::new(repo_file.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    fails_small(&cli, &["list"], 7, "a device, fifo or socket");

    // Put back, it is a repository again.
    std::fs::remove_file(&repo_file).unwrap();
    std::fs::rename(dir.path().join("saved.repo"), &repo_file).unwrap();
    list_skips(&cli, &good, &bad, "limit");
}

#[test]
fn a_bucket_with_a_huge_manifest() {
    let weed = SeaweedFs::start();
    let dir = tempfile::tempdir().unwrap();
    let cli = setup(dir.path(), &weed.repo_url("hostile"));
    let good = backup(&cli);

    // 300 MiB under an older snapshot's manifest name.
    let bad = "20200101T000000Z-aaaaaa";
    let store = weed.store("hostile");
    let mut up = store
        .upload(&format!("snapshots/files/{bad}/manifest"), Some(300 << 20))
        .unwrap();
    let block = vec![0x5au8; 1 << 20];
    for _ in 0..300 {
        up.write_all(&block).unwrap();
    }
    up.finish().unwrap();

    list_skips(&cli, &good, bad, "300.0 MiB, over the 256.0 MiB limit");
    fails_small(&cli, &["show", bad], 7, "over the 256.0 MiB limit");
}

/// Objects planted in a folder repository (no key needed for any of them) cannot make `list`
/// fail as a whole: a manifest sealed under another key id is one unreadable snapshot, and a
/// folder under `snapshots/` that is no source name is not a source.
#[test]
fn planted_objects_do_not_hide_the_other_snapshots() {
    use offsitedb::catalog::SnapshotId;
    use offsitedb::crypto::{MasterKey, seal_bytes};

    let dir = tempfile::tempdir().unwrap();
    let p = crate::planted::Planted::new(dir.path());
    let now = jiff::Timestamp::now();
    let good = p.empty_folder("docs", now - jiff::SignedDuration::from_hours(2));
    let cli = Cli::new();

    // Sealed with another key: its header names another key id.
    let forged = SnapshotId::new(now - jiff::SignedDuration::from_hours(3)).unwrap();
    let other = MasterKey::from_bytes([7; 32]);
    let bytes = seal_bytes(&other, b"{}").unwrap();
    let path = p.path.join(format!("snapshots/docs/{forged}/manifest"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    // A folder that is no source name.
    let odd = p.path.join(format!("snapshots/-odd/{forged}/manifest"));
    std::fs::create_dir_all(odd.parent().unwrap()).unwrap();
    std::fs::write(&odd, b"garbage").unwrap();

    let r = p.run(&cli, &["list", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains(good.as_str()), "{}", r.stdout);
    assert!(!r.stdout.contains("-odd"), "{}", r.stdout);
    assert!(
        r.stderr
            .contains(&format!("snapshot docs/{forged} is unreadable")),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    // Nor is "-odd" a second source that makes "latest" ambiguous.
    let r = p.run(&cli, &["show", "latest"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains(good.as_str()), "{}", r.stdout);
}
