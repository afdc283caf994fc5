//! Folder snapshots whose tar stream was crafted to reach outside the folder it is restored into:
//! hard links whose target passes through a symlink (made by the archive, or already in a
//! `--force` target), hard links to symlinks, `..` and absolute link targets, and setuid files
//! whose owner cannot be set. Each goes through `restore --to-dir` and the folder drill, as root,
//! and a file outside the target must keep its content, mode, owner, times, links and extended
//! attributes.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use jiff::Timestamp;
use serde_json::Value;

use crate::common::Cli;
use crate::planted::Planted;

/// What the attacker wants to change on the file outside.
const UID: u64 = 1234;
const MTIME: u64 = 86_400 * 400;

/// Everything about a file that a restore could change.
#[derive(Debug, PartialEq)]
struct Seen {
    content: Vec<u8>,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    nlink: u64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

fn seen(p: &Path) -> Seen {
    let m = std::fs::metadata(p).unwrap();
    Seen {
        content: std::fs::read(p).unwrap(),
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        mtime: m.mtime(),
        nlink: m.nlink(),
        xattrs: xattrs(p),
    }
}

fn xattrs(p: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 4096];
    let n = unsafe { libc::listxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(n >= 0, "listxattr {}", p.display());
    names.truncate(n as usize);
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cn = CString::new(name).unwrap();
        let mut v = vec![0u8; 4096];
        let len =
            unsafe { libc::getxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        assert!(len >= 0);
        v.truncate(len as usize);
        out.push((name.to_vec(), v));
    }
    out
}

/// `dir/outside/victim`: owned by 4242:4242, mode 0640, an old mtime, an extended attribute.
fn victim(dir: &Path) -> std::path::PathBuf {
    let outside = dir.join("outside");
    std::fs::create_dir(&outside).unwrap();
    let v = outside.join("victim");
    std::fs::write(&v, "precious\n").unwrap();
    std::fs::set_permissions(&v, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&v, Some(4242), Some(4242)).unwrap();
    filetime::set_file_mtime(&v, filetime::FileTime::from_unix_time(1_000_000_000, 0)).unwrap();
    let c = CString::new(v.as_os_str().as_bytes()).unwrap();
    let val = b"original";
    let rc = unsafe {
        libc::setxattr(
            c.as_ptr(),
            c"user.offsitedb".as_ptr(),
            val.as_ptr().cast(),
            val.len(),
            0,
        )
    };
    assert_eq!(rc, 0, "this test needs a file system with user xattrs");
    v
}

fn root_only() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root (CI runs as root): ownership is what it checks"
    );
}

/// A tar stream, entry by entry.
struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    fn new() -> Tar {
        Tar(tar::Builder::new(Vec::new()))
    }

    fn header(kind: tar::EntryType, mode: u32, uid: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(uid);
        h.set_mtime(MTIME);
        h.set_size(0);
        h
    }

    /// A PAX header giving the next entry the extended attribute user.offsitedb=pwned.
    fn pax_xattr(&mut self) {
        let rec = b"SCHILY.xattr.user.offsitedb=pwned\n";
        let mut body = rec.len() + 1;
        while format!("{body} ").len() + rec.len() != body {
            body = format!("{body} ").len() + rec.len();
        }
        let data = [format!("{body} ").as_bytes(), rec].concat();
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(data.len() as u64);
        h.set_path("././@PaxHeader").unwrap();
        h.set_cksum();
        self.0.append(&h, data.as_slice()).unwrap();
    }

    fn dir(self, path: &str) -> Tar {
        self.dir_as(path, 0o755, 0)
    }

    fn dir_as(mut self, path: &str, mode: u32, uid: u64) -> Tar {
        let mut h = Self::header(tar::EntryType::Directory, mode, uid);
        self.0.append_data(&mut h, path, std::io::empty()).unwrap();
        self
    }

    fn symlink(mut self, path: &str, target: &str) -> Tar {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, UID);
        self.0.append_link(&mut h, path, target).unwrap();
        self
    }

    /// A hard link with every piece of metadata an attacker would like applied to its target.
    fn hard_link(mut self, path: &str, target: &str) -> Tar {
        self.pax_xattr();
        let mut h = Self::header(tar::EntryType::Link, 0o6777, UID);
        self.0.append_link(&mut h, path, target).unwrap();
        self
    }

    fn file(mut self, path: &str, content: &[u8], mode: u32, uid: u64) -> Tar {
        let mut h = Self::header(tar::EntryType::Regular, mode, uid);
        h.set_size(content.len() as u64);
        self.0.append_data(&mut h, path, content).unwrap();
        self
    }

    fn done(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

/// The archives that try to reach `victim` from inside the folder they are extracted into.
fn hostile(victim: &Path) -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let outside = victim.parent().unwrap().to_str().unwrap();
    let v = victim.to_str().unwrap();
    vec![
        (
            "a symlink of the archive, then a hard link through it",
            Tar::new()
                .file("a.txt", b"a\n", 0o644, 0)
                .symlink("s", outside)
                .hard_link("x", "s/victim")
                .done(),
            "links x to s/victim",
        ),
        (
            "the same, a few folders down",
            Tar::new()
                .dir("d")
                .dir("d/e")
                .symlink("d/e/s", outside)
                .hard_link("x", "d/e/s/victim")
                .done(),
            "links x to d/e/s/victim",
        ),
        (
            "a hard link to a symlink of the archive",
            Tar::new().symlink("l", v).hard_link("x", "l").done(),
            "links x to l",
        ),
        (
            "a hard link to a folder of the archive",
            Tar::new().dir("d").hard_link("x", "d").done(),
            "links x to d",
        ),
        (
            "a link target with ..",
            Tar::new()
                .hard_link("x", "../../../../../../../../../../../../..")
                .done(),
            "links x to ../",
        ),
        (
            "an absolute link target",
            Tar::new().hard_link("x", v).done(),
            "links x to /",
        ),
    ]
}

#[test]
fn hard_links_never_reach_outside_the_restored_folder_or_the_drill() {
    root_only();
    let dir = tempfile::tempdir().unwrap();
    let victim = victim(dir.path());
    let before = seen(&victim);
    let p = Planted::new(dir.path());
    let cli = Cli::new();
    for (i, (what, tar, needle)) in hostile(&victim).into_iter().enumerate() {
        let files: &[(&str, &[u8])] = if what.starts_with("a symlink of") {
            &[("a.txt", b"a\n")]
        } else {
            &[]
        };
        let id = p.folder("files", Timestamp::now(), &tar, files);
        let to = dir.path().join(format!("restored-{i}"));
        let r = p.run(
            &cli,
            &["restore", id.as_str(), "--to-dir", to.to_str().unwrap()],
        );
        assert_eq!(
            seen(&victim),
            before,
            "{what}: restore changed the file outside"
        );
        assert_eq!(r.code, 7, "{what}: restore: {}", r.stderr);
        let err = r.error_line();
        assert!(
            err.contains("the archive") && err.contains(needle),
            "{what}: {err}"
        );

        let r = p.run(&cli, &["drill", id.as_str(), "--json"]);
        assert_eq!(
            seen(&victim),
            before,
            "{what}: the drill changed the file outside"
        );
        // A drill fails a damaged or crafted snapshot with the integrity error's code.
        assert_eq!(r.code, 7, "{what}: drill: {}", r.stderr);
        let d: Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(d["result"], "failed", "{what}: {d:#}");
        assert!(
            d["problems"][0].as_str().unwrap().contains(needle),
            "{what}: {d:#}"
        );
    }
}

#[test]
fn a_forced_restore_never_links_to_what_was_already_in_the_folder() {
    root_only();
    let dir = tempfile::tempdir().unwrap();
    let victim = victim(dir.path());
    let p = Planted::new(dir.path());
    let cli = Cli::new();

    // A symlink to the outside, already in the target folder.
    let to = dir.path().join("with-symlink");
    std::fs::create_dir(&to).unwrap();
    std::os::unix::fs::symlink(victim.parent().unwrap(), to.join("s")).unwrap();
    let before = seen(&victim);
    let id = p.folder(
        "files",
        Timestamp::now(),
        &Tar::new().hard_link("x", "s/victim").done(),
        &[],
    );
    let args = [
        "restore",
        id.as_str(),
        "--to-dir",
        to.to_str().unwrap(),
        "--force",
    ];
    let r = p.run(&cli, &args);
    assert_eq!(seen(&victim), before, "through a symlink already there");
    assert_eq!(r.code, 7, "{}", r.stderr);
    assert!(
        r.error_line().contains("links x to s/victim"),
        "{}",
        r.stderr
    );

    // A file already there that is a hard link to the file outside (the same inode).
    let to = dir.path().join("with-hard-link");
    std::fs::create_dir(&to).unwrap();
    std::fs::hard_link(&victim, to.join("pre")).unwrap();
    let before = seen(&victim);
    let id = p.folder(
        "files",
        Timestamp::now(),
        &Tar::new().hard_link("x", "pre").done(),
        &[],
    );
    let args = [
        "restore",
        id.as_str(),
        "--to-dir",
        to.to_str().unwrap(),
        "--force",
    ];
    let r = p.run(&cli, &args);
    assert_eq!(seen(&victim), before, "through a hard link already there");
    assert_eq!(r.code, 7, "{}", r.stderr);
    assert!(r.error_line().contains("links x to pre"), "{}", r.stderr);
}

#[test]
fn setuid_and_setgid_bits_are_kept_only_with_the_owner_they_were_archived_with() {
    root_only();
    let dir = tempfile::tempdir().unwrap();
    let p = Planted::new(dir.path());
    let cli = Cli::new();
    let script = b"#!/bin/sh\nid\n";
    let tar = Tar::new()
        // (uid_t)-1 means "leave the owner": chown succeeds and changes nothing.
        .file("minus-one", script, 0o6755, u32::MAX as u64)
        // Cut to 32 bits this is uid 0.
        .file("wraps-to-root", script, 0o6755, 1 << 32)
        .file("owned", script, 0o6755, 4242)
        // A folder gets its owner, attributes and mode after its content is in.
        .dir_as("d", 0o750, 4242);
    let mut tar = tar;
    tar.pax_xattr();
    let tar = tar
        .dir_as("d/e", 0o500, 4343)
        .file("d/e/f", script, 0o644, 4242)
        .done();
    let files: &[(&str, &[u8])] = &[
        ("minus-one", script),
        ("wraps-to-root", script),
        ("owned", script),
        ("d/e/f", script),
    ];
    let id = p.folder("files", Timestamp::now(), &tar, files);
    let to = dir.path().join("restored");
    let r = p.run(
        &cli,
        &["restore", id.as_str(), "--to-dir", to.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    for name in ["minus-one", "wraps-to-root"] {
        let m = std::fs::metadata(to.join(name)).unwrap();
        assert_eq!(
            m.mode() & 0o7777,
            0o755,
            "{name}: owned by {}:{} with mode {:o}",
            m.uid(),
            m.gid(),
            m.mode() & 0o7777
        );
        assert!(
            r.stderr
                .contains(&format!("{name}: setuid/setgid bits dropped")),
            "{}",
            r.stderr
        );
    }
    let m = std::fs::metadata(to.join("owned")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (4242, 4242, 0o6755));
    let m = std::fs::metadata(to.join("d")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (4242, 4242, 0o750));
    let m = std::fs::metadata(to.join("d/e")).unwrap();
    assert_eq!(
        (m.uid(), m.mode() & 0o7777, m.mtime()),
        (4343, 0o500, MTIME as i64)
    );
    assert_eq!(
        xattrs(&to.join("d/e")),
        [(b"user.offsitedb".to_vec(), b"pwned".to_vec())]
    );

    // The drill extracts the same way, passes (the content is right) and says what it dropped.
    let r = p.run(&cli, &["drill", id.as_str(), "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let d: Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(
        d["notes"]
            .to_string()
            .contains("minus-one: setuid/setgid bits dropped"),
        "{d:#}"
    );
}
