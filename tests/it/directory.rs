//! Directory sources, for real: a folder with nested folders, a symlink, a hard link, an empty
//! file, a 200 MB file, names that are not UTF-8, odd permissions, and a fifo (skipped), backed up
//! to SeaweedFS, restored with `restore latest --source NAME --to-dir DIR` and compared with
//! `diff -r`; drilled; and a drill that fails when a file differs from its manifest digest.

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::common::{Cli, SeaweedFs, keygen};

fn tree(root: &Path) -> bool {
    std::fs::create_dir_all(root.join("a/b/c")).unwrap();
    std::fs::write(root.join("a/b/c/deep.txt"), "deep\n").unwrap();
    std::fs::write(root.join("a/notes.md"), "# notes\n").unwrap();
    std::fs::write(root.join("empty"), "").unwrap();
    std::fs::create_dir(root.join("private")).unwrap();
    std::fs::write(root.join("private/secret"), "s3cr3t").unwrap();
    std::fs::set_permissions(
        root.join("private/secret"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::set_permissions(root.join("private"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink("a/notes.md", root.join("link-to-notes")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", root.join("dangling")).unwrap();
    std::fs::hard_link(root.join("a/notes.md"), root.join("hard-notes")).unwrap();
    let odd = root.join(OsStr::from_bytes(b"caf\xe9-latin1.txt"));
    std::fs::write(&odd, "not utf-8 name").unwrap();
    std::fs::write(root.join("ünïcode ✓.txt"), "utf-8 name").unwrap();
    // 200 MB that does not compress to nothing.
    let mut big = std::io::BufWriter::new(std::fs::File::create(root.join("a/big.bin")).unwrap());
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..200 {
        for chunk in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        big.write_all(&block).unwrap();
    }
    big.flush().unwrap();
    // A fifo: skipped, and said so.
    let fifo = std::ffi::CString::new(root.join("pipe").as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    // An extended attribute, where the file system has them.
    let p = std::ffi::CString::new(root.join("empty").as_os_str().as_bytes()).unwrap();
    let (k, v) = (c"user.offsitedb", b"kept");
    unsafe { libc::setxattr(p.as_ptr(), k.as_ptr(), v.as_ptr().cast(), v.len(), 0) == 0 }
}

fn xattr(p: &Path) -> Option<Vec<u8>> {
    let p = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut buf = [0u8; 64];
    let n = unsafe {
        libc::getxattr(
            p.as_ptr(),
            c"user.offsitedb".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n >= 0).then(|| buf[..n as usize].to_vec())
}

#[test]
fn a_folder_round_trips_through_the_bucket_and_its_drill_checks_every_file() {
    let sw = SeaweedFs::start();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("uploads");
    std::fs::create_dir(&src).unwrap();
    let has_xattrs = tree(&src);
    keygen(dir.path(), "master.key");
    std::fs::write(
        dir.path().join("offsitedb.toml"),
        format!(
            "[repository]\nurl = \"{}\"\nkey_file = \"master.key\"\n\n\
             [[source]]\nname = \"uploads\"\nkind = \"directory\"\npath = \"uploads\"\ncompression = \"zstd\"\nkeep = {{ last = 5 }}\n",
            sw.repo_url("dirs")
        ),
    )
    .unwrap();
    let cli = Cli::new().s3().cwd(dir.path());
    let c = cli.ok(&["check"]).stdout;
    assert!(
        c.contains("✓ folder") && c.contains("uploads is readable"),
        "{c}"
    );
    let r = cli.ok(&["backup", "--name", "uploads", "--json"]);
    let snap: Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(
        r.stderr.contains("pipe: not a file, folder or symlink"),
        "{}",
        r.stderr
    );
    let id = snap["id"].as_str().unwrap().to_string();
    let m: Value = serde_json::from_str(&cli.ok(&["show", &id, "--json"]).stdout).unwrap();
    let files = &m["files"];
    assert_eq!(files["files"], 7, "{files:#}"); // deep, notes, empty, secret, latin1, unicode, big
    assert_eq!(files["hard_links"], 1);
    assert_eq!(files["symlinks"], 2);
    assert!(files["bytes"].as_u64().unwrap() > 200 << 20);
    let list = files["list"].as_array().unwrap();
    assert!(
        list.iter().any(|f| f["path"] == "caf%E9-latin1.txt"),
        "{list:?}"
    );
    assert!(
        m.get("server").is_none() && m.get("dump").is_none(),
        "{m:#}"
    );

    // `restore latest --source uploads --to-dir DIR`, with more arguments.
    let restore_args = |to: &Path, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["restore", "latest", "--source", "uploads", "--to-dir"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.push(to.to_str().unwrap().to_string());
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    // Restored into a new folder: identical, to the byte and the link.
    let out = dir.path().join("restored");
    cli.ok(&args(&restore_args(&out, &[])));
    std::fs::remove_file(src.join("pipe")).unwrap();
    let diff = Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(&src)
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        diff.status.success(),
        "diff -r found differences:\n{}{}",
        String::from_utf8_lossy(&diff.stdout),
        String::from_utf8_lossy(&diff.stderr)
    );
    let meta = |p: &str| std::fs::symlink_metadata(out.join(p)).unwrap();
    assert_eq!(
        meta("hard-notes").ino(),
        meta("a/notes.md").ino(),
        "the hard link is a copy"
    );
    assert_eq!(meta("private/secret").mode() & 0o777, 0o600);
    assert_eq!(meta("private").mode() & 0o777, 0o700);
    assert_eq!(
        std::fs::read_link(out.join("dangling")).unwrap(),
        Path::new("does/not/exist")
    );
    let orig = std::fs::metadata(src.join("a/big.bin")).unwrap();
    assert_eq!(meta("a/big.bin").mtime(), orig.mtime());
    if has_xattrs {
        assert_eq!(xattr(&out.join("empty")).as_deref(), Some(&b"kept"[..]));
    }

    // A folder with something in it is left alone, unless --force.
    cli.fails(&args(&restore_args(&out, &[])), 3, "is not empty");
    std::fs::write(out.join("a/notes.md"), "changed").unwrap();
    cli.ok(&args(&restore_args(&out, &["--force"])));
    assert_eq!(
        std::fs::read_to_string(out.join("a/notes.md")).unwrap(),
        "# notes\n"
    );
    // Nothing is written through a symlink that stands where a folder of the snapshot goes.
    let trap = dir.path().join("trap");
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&trap).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, trap.join("a")).unwrap();
    cli.fails(
        &args(&restore_args(&trap, &["--force"])),
        11,
        "and nothing is written through one",
    );
    assert_eq!(
        std::fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "written through the symlink"
    );
    // A folder snapshot is not restored into a database, and says how.
    cli.fails(
        &["restore", "latest", "--to", "postgres://x@127.0.0.1:1/x"],
        3,
        "is a backup of the folder",
    );

    // The drill extracts and checks every file (in a work folder it creates when missing).
    let work = dir.path().join("not/yet/there");
    let d: Value = serde_json::from_str(
        &cli.clone_with("OFFSITEDB_TMPDIR", work.to_str().unwrap())
            .ok(&["drill", "latest", "--json"])
            .stdout,
    )
    .unwrap();
    assert_eq!(
        std::fs::read_dir(&work).unwrap().count(),
        0,
        "the drill left files behind"
    );
    assert_eq!(d["result"], "passed", "{d:#}");
    assert_eq!(d["method"], "file_digests");
    let list_json: Value = serde_json::from_str(&cli.ok(&["list", "--json"]).stdout).unwrap();
    assert_eq!(list_json[0]["status"], "sealed");

    // A manifest whose digest for one file is not what the archive holds fails the drill,
    // naming the file.
    use offsitedb::crypto::{MasterKey, seal_bytes, unseal_bytes};
    use offsitedb::storage::{ReadStore, WriteStore};
    let key = MasterKey::load_file(&dir.path().join("master.key"), &mut |_| {}).unwrap();
    let store = sw.store("dirs");
    let mkey = format!("snapshots/uploads/{id}/manifest");
    let mut mj: Value =
        serde_json::from_slice(&unseal_bytes(&key, &store.get_bytes(&mkey).unwrap()).unwrap())
            .unwrap();
    let f = mj["files"]["list"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|f| f["path"] == "a/b/c/deep.txt")
        .unwrap();
    f["sha256"] = Value::from("0".repeat(64));
    store
        .put(
            &mkey,
            &seal_bytes(&key, &serde_json::to_vec(&mj).unwrap()).unwrap(),
        )
        .unwrap();
    let r = cli.run(&["drill", "latest", "--json"]);
    assert_eq!(r.code, 12, "{}", r.stderr);
    let d: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(d["result"], "failed");
    assert!(
        d["problems"].to_string().contains("a/b/c/deep.txt"),
        "{d:#}"
    );
    assert_eq!(d["problems"].as_array().unwrap().len(), 1, "{d:#}");

    // Once, from the command line, without a configuration entry.
    let once = cli.ok(&["backup", "--dir", src.to_str().unwrap(), "--name", "adhoc"]);
    assert!(once.stdout.trim().len() > 20, "{}", once.stdout);
    cli.ok(&["drill", "latest", "--source", "adhoc"]);

    // The same job as a database's: `run` backs up, drills and prunes the folder.
    let r: Value = serde_json::from_str(&cli.ok(&["run", "uploads", "--json"]).stdout).unwrap();
    assert!(r["drill"]["error"].is_null(), "{r:#}");
    assert!(
        r["prune"]["plan"]["decisions"].as_array().unwrap().len() >= 2,
        "{r:#}"
    );
}

/// A file the backup cannot read fails the backup (nothing stored) instead of storing a folder
/// with a hole: run as an unprivileged user over a root-only file.
#[test]
fn an_unreadable_file_fails_the_backup_and_stores_nothing() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root (CI runs as root)"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let src = dir.path().join("data");
    std::fs::create_dir(&src).unwrap();
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(src.join("public.txt"), "anyone").unwrap();
    std::fs::write(src.join("root-only"), "secret").unwrap();
    std::fs::set_permissions(
        src.join("root-only"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let key = keygen(dir.path(), "master.key");
    std::os::unix::fs::chown(&key, Some(postgres_uid()), None).unwrap();
    let repo = dir.path().join("repo");
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(crate::common::offsitedb_bin())
        .args(["backup", "--dir", src.to_str().unwrap(), "--name", "data"])
        .arg("--repo")
        .arg(&repo)
        .arg("--key-file")
        .arg(&key)
        .env("OFFSITEDB_STATE_DIR", dir.path().join("state"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(11), "{err}");
    assert!(
        err.contains("1 entry of") && err.contains("root-only: cannot read"),
        "{err}"
    );
    assert!(err.contains("nothing was stored"), "{err}");
    let stored: Vec<_> = walk(&repo.join("snapshots"));
    assert!(stored.is_empty(), "{stored:?}");
}

fn postgres_uid() -> u32 {
    let out = Command::new("id")
        .args(["-u", "postgres"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn walk(p: &Path) -> Vec<std::path::PathBuf> {
    let Ok(rd) = std::fs::read_dir(p) else {
        return Vec::new();
    };
    rd.flatten()
        .flat_map(|e| {
            if e.file_type().unwrap().is_dir() {
                walk(&e.path())
            } else {
                vec![e.path()]
            }
        })
        .collect()
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}
