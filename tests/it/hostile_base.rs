//! Base backups whose tar stream was crafted (by someone holding the key, or by a bug) to reach
//! outside the data folder they are fetched into: `..` and absolute paths, writes through a
//! symlink of the archive, hard links out, symlinks under pg_tblspc and pg_wal (where
//! pg_combinebackup, the server and wal-fetch write), devices and fifos, a symlinked
//! `postgresql.auto.conf` (which `restore --pgdata` appends to and gives away, as root), the
//! same in the first link of an incremental chain, and setgid bits and extended attributes.
//! Each is the server's own base backup with the hostile entries added, sealed with the
//! repository's key under a new id; a file and a folder outside must stay as they were.

use std::ffi::CString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use offsitedb::catalog::base::{BaseManifest, Incremental, base_data_key};
use offsitedb::catalog::manifest::{DataObject, Sizes};
use offsitedb::catalog::{Repository, SnapshotId};
use offsitedb::crypto::MasterKey;
use offsitedb::pipeline::{Counters, decompressor, sink};
use offsitedb::storage::WriteStore;
use offsitedb::storage::s3::S3Store;

use crate::archiving::{Pitr, SOURCE};

/// The server's base backup, entry by entry (header, data), without `backup_manifest` (a
/// crafted copy is not what the server's manifest lists) and without the entries `skip` names.
fn entries(
    repo: &Repository<S3Store>,
    m: &BaseManifest,
    skip: &[&str],
) -> Vec<(tar::Header, Vec<u8>)> {
    let r = decompressor(repo.open_base_data(m).unwrap(), m.compression.algorithm).unwrap();
    let mut a = tar::Archive::new(r);
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let path = path.trim_start_matches("./").to_string();
        if path == "backup_manifest" || skip.contains(&path.as_str()) {
            continue;
        }
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.push((e.header().clone(), data));
    }
    out
}

/// Extra entries of a crafted archive.
enum Extra {
    File(&'static str, u32),
    Dir(&'static str, u32),
    Symlink(String, String),
    HardLink(&'static str, String),
    Special(&'static str, tar::EntryType),
    /// A file with the extended attribute user.offsitedb=pwned.
    XattrFile(&'static str),
}

fn tar_of(base: Vec<(tar::Header, Vec<u8>)>, extra: &[Extra]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (h, data) in base {
        b.append(&h, data.as_slice()).unwrap();
    }
    let head = |kind: tar::EntryType, mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(0);
        h
    };
    for x in extra {
        match x {
            Extra::File(path, mode) => {
                let mut h = head(tar::EntryType::Regular, *mode);
                h.set_size(6);
                // Raw names: `..` and absolute paths as they are (append_data refuses them).
                h.as_gnu_mut().unwrap().name[..path.len()].copy_from_slice(path.as_bytes());
                h.set_cksum();
                b.append(&h, &b"pwned\n"[..]).unwrap();
            }
            Extra::Dir(path, mode) => {
                let mut h = head(tar::EntryType::Directory, *mode);
                b.append_data(&mut h, path, std::io::empty()).unwrap();
            }
            Extra::Symlink(path, target) => {
                let mut h = head(tar::EntryType::Symlink, 0o777);
                b.append_link(&mut h, path, target).unwrap();
            }
            Extra::HardLink(path, target) => {
                let mut h = head(tar::EntryType::Link, 0o644);
                h.as_gnu_mut().unwrap().name[..path.len()].copy_from_slice(path.as_bytes());
                h.as_gnu_mut().unwrap().linkname[..target.len()].copy_from_slice(target.as_bytes());
                h.set_cksum();
                b.append(&h, std::io::empty()).unwrap();
            }
            Extra::Special(path, kind) => {
                let mut h = head(*kind, 0o644);
                b.append_data(&mut h, path, std::io::empty()).unwrap();
            }
            Extra::XattrFile(path) => {
                let rec = b"SCHILY.xattr.user.offsitedb=pwned\n";
                let body = format!("{} ", rec.len() + 3).into_bytes();
                let data = [body.as_slice(), rec].concat();
                assert_eq!(data.len(), rec.len() + 3);
                let mut x = tar::Header::new_ustar();
                x.set_entry_type(tar::EntryType::XHeader);
                x.set_size(data.len() as u64);
                x.set_path("././@PaxHeader").unwrap();
                x.set_cksum();
                b.append(&x, data.as_slice()).unwrap();
                let mut h = head(tar::EntryType::Regular, 0o600);
                h.set_size(6);
                b.append_data(&mut h, path, &b"pwned\n"[..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// Stores `tar` as a new base backup like `base` (sealed with the key), based on `chain`.
fn plant(repo: &Repository<S3Store>, base: &BaseManifest, tar: &[u8], chain: &[&str]) -> String {
    let id = SnapshotId::new(base.started).unwrap();
    let key = base_data_key(SOURCE, &id);
    let spec = sink::SinkSpec {
        upload: repo.store().upload(&key, None).unwrap(),
        key: repo.key(),
        compression: base.compression,
        threads: 1,
        counters: Counters::default(),
    };
    let r = sink::run(spec, &mut &tar[..], None, || Ok(())).unwrap();
    let mut m = base.clone();
    m.backup_id = id.clone();
    m.sizes = Sizes::stored(&r);
    m.data = DataObject::stored(key, &r);
    m.server_manifest = false;
    m.incremental = (!chain.is_empty()).then(|| Incremental {
        parent: SnapshotId::parse(chain.last().unwrap()).unwrap(),
        chain: chain
            .iter()
            .map(|c| SnapshotId::parse(c).unwrap())
            .collect(),
    });
    if m.incremental.is_some() {
        m.base_manifest_version = 2;
    }
    repo.commit_base_manifest(&m).unwrap();
    id.to_string()
}

/// Everything about the folder outside that a fetch could change.
fn outside_state(dir: &Path) -> Vec<(String, String, u32, u32, u64)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let content = if m.is_file() {
                String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned()
            } else {
                String::new()
            };
            (
                p.display().to_string(),
                content,
                m.mode(),
                m.uid(),
                m.nlink(),
            )
        })
        .collect();
    v.sort();
    v
}

fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut v = vec![0u8; 256];
    // SAFETY: valid C strings and a buffer of the given length.
    let len = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
    (len >= 0).then(|| {
        v.truncate(len as usize);
        v
    })
}

/// The `error:` line of a run (notes may come before it).
fn error(r: &crate::common::Run) -> &str {
    r.stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or("")
}

#[test]
fn crafted_base_backups_write_nothing_outside_the_data_folder() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root (CI runs as root)"
    );
    let p = Pitr::start(None, "");
    p.sql("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 10);");
    p.cli.ok(&["backup-push", "--source", SOURCE]);
    p.switch_and_archive();

    let key = MasterKey::load_file(&p.key, &mut |_| {}).unwrap();
    let repo = Repository::open_for_writing(Box::new(p.store()), key).unwrap();
    let base = repo.base_manifests(SOURCE).unwrap().pop().unwrap();

    // Outside the data folders: a folder holding a file, both the attacker's aim.
    // Not under the fixture's folder, which is given to the server's user again and again.
    let elsewhere = tempfile::tempdir_in("/tmp").unwrap();
    let outside: PathBuf = elsewhere.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let victim = outside.join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let before = outside_state(&outside);
    let out = outside.to_str().unwrap().to_string();
    let v = victim.to_str().unwrap().to_string();

    let cases: Vec<(&str, Vec<Extra>, &str)> = vec![
        (
            "a path with ..",
            vec![Extra::File("../../outside/escaped", 0o644)],
            "a path outside its folder: ../../outside/escaped",
        ),
        (
            "an absolute path",
            vec![Extra::File(
                Box::leak(format!("{out}/escaped").into_boxed_str()),
                0o644,
            )],
            "a path outside its folder: /",
        ),
        (
            "a symlink of the archive, then a file through it",
            vec![
                Extra::Symlink("s".into(), out.clone()),
                Extra::File("s/escaped", 0o644),
            ],
            "s is a symlink, and nothing is written through one",
        ),
        (
            "a hard link to a file outside",
            vec![Extra::HardLink("x", v.clone())],
            "links x to /",
        ),
        (
            "a tablespace link",
            vec![Extra::Symlink("pg_tblspc/16384".into(), out.clone())],
            "holds a symlink pg_tblspc/16384",
        ),
        (
            "wal-fetch's prefetch folder as a link",
            vec![Extra::Symlink(
                "pg_wal/offsitedb-prefetch".into(),
                out.clone(),
            )],
            "holds a symlink pg_wal/offsitedb-prefetch",
        ),
        (
            "a fifo",
            vec![Extra::Special("pg_wal/fifo", tar::EntryType::Fifo)],
            "pg_wal/fifo: entry type Fifo not extracted",
        ),
        (
            "a device",
            vec![Extra::Special("console", tar::EntryType::Char)],
            "console: entry type Char not extracted",
        ),
    ];
    for (i, (what, extra, needle)) in cases.into_iter().enumerate() {
        let id = plant(
            &repo,
            &base,
            &tar_of(entries(&repo, &base, &[]), &extra),
            &[],
        );
        let dir = p.new_data_dir(&format!("fetched-{i}"));
        let r = p.cli.run(&[
            "backup-fetch",
            "--source",
            SOURCE,
            dir.to_str().unwrap(),
            &id,
        ]);
        assert_ne!(r.code, 0, "{what}: {r:?}");
        assert!(error(&r).contains(needle), "{what}: {}", r.stderr);
        assert_eq!(
            outside_state(&outside),
            before,
            "{what}: the folder outside changed"
        );
        assert!(!dir.exists(), "{what}: the half-fetched folder is left");
    }

    // The first link of an incremental chain, before pg_combinebackup (run as root) would
    // create the tablespace where the link points.
    let hostile_full = plant(
        &repo,
        &base,
        &tar_of(
            entries(&repo, &base, &[]),
            &[Extra::Symlink(
                "pg_tblspc/16385".into(),
                format!("{out}/ts"),
            )],
        ),
        &[],
    );
    let incr = plant(
        &repo,
        &base,
        &tar_of(entries(&repo, &base, &[]), &[]),
        &[&hostile_full],
    );
    let dir = p.new_data_dir("combined");
    let r = p.cli.run(&[
        "backup-fetch",
        "--source",
        SOURCE,
        dir.to_str().unwrap(),
        &incr,
    ]);
    assert!(
        error(&r).contains("holds a symlink pg_tblspc/16385"),
        "{}",
        r.stderr
    );
    assert_eq!(outside_state(&outside), before, "the chain wrote outside");
    assert!(!dir.exists());

    // postgresql.auto.conf as a link to the file outside: restore --pgdata appends the recovery
    // settings to it and gives it to the server's user.
    let id = plant(
        &repo,
        &base,
        &tar_of(
            entries(&repo, &base, &["postgresql.auto.conf"]),
            &[Extra::Symlink("postgresql.auto.conf".into(), v.clone())],
        ),
        &[],
    );
    let dir = p.new_data_dir("restored");
    let r = p.cli.run(&[
        "restore",
        "--source",
        SOURCE,
        "--pgdata",
        dir.to_str().unwrap(),
        "--latest",
        "--backup",
        &id,
    ]);
    assert_eq!(
        outside_state(&outside),
        before,
        "restore wrote through postgresql.auto.conf"
    );
    assert_eq!(r.code, 7, "{}", r.stderr);
    assert!(
        error(&r).contains("postgresql.auto.conf is not a file"),
        "{}",
        r.stderr
    );

    // Setgid and sticky bits, and extended attributes: a data folder has none; the copy is
    // fetched without them.
    let id = plant(
        &repo,
        &base,
        &tar_of(
            entries(&repo, &base, &[]),
            &[Extra::Dir("shared", 0o3777), Extra::XattrFile("marked")],
        ),
        &[],
    );
    let dir = p.new_data_dir("bits");
    let r = p.cli.run(&[
        "backup-fetch",
        "--source",
        SOURCE,
        dir.to_str().unwrap(),
        &id,
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mode = std::fs::metadata(dir.join("shared")).unwrap().mode();
    assert_eq!(mode & 0o7777, 0o777, "mode {mode:o}");
    assert_eq!(xattr(&dir.join("marked"), "user.offsitedb"), None);
    assert!(
        r.stderr
            .contains("shared: setuid, setgid and sticky bits dropped"),
        "{}",
        r.stderr
    );
}
