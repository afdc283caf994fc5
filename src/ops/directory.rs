/*!
Folder snapshots, the restore side: `restore --to-dir` extracts a snapshot's tar stream, and a
folder drill extracts it into a temporary folder; both check every file against the manifest. (The
backup side, the tar walk, is [`crate::ops::backup::folder`].)

Extraction never touches anything outside the target: paths with `..` or a leading `/` are
refused, nothing is written through a symlink (whether the archive made it or it was already
there), a hard link may only point at a regular file this extraction wrote, by a path of real
folders, and link entries get no metadata of their own (it would land on their target).
*/

use std::collections::{HashMap, HashSet};
use std::ffi::{CString, OsStr};
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::catalog::manifest::FilesRecord;
use crate::catalog::{Manifest, Repository};
use crate::error::{Error, Result};
use crate::pipeline::{Counters, Progress};

/// `%XX` for bytes that are not UTF-8, and for `%` itself: reversible, and JSON-safe.
pub fn encode_path(p: &[u8]) -> String {
    let mut out = String::with_capacity(p.len());
    let mut rest = p;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                push_escaped(&mut out, s);
                break;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                push_escaped(&mut out, std::str::from_utf8(good).expect("valid prefix"));
                let n = e.error_len().unwrap_or(bad.len());
                for b in &bad[..n] {
                    out.push_str(&format!("%{b:02X}"));
                }
                rest = &bad[n..];
            }
        }
    }
    out
}

fn push_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        if c == '%' {
            out.push_str("%25");
        } else {
            out.push(c);
        }
    }
}

/// Hashes what passes through.
pub(crate) struct Hashing<R> {
    pub(crate) inner: R,
    pub(crate) hash: Sha256,
    pub(crate) n: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
}

/// What an extraction found: every regular file's digest, by encoded path.
pub struct Extracted {
    pub files: HashMap<String, (u64, String)>,
    /// Content that is not what the archive says (a hard link to nothing, an unknown entry).
    pub problems: Vec<String>,
    /// Metadata this machine could not apply (extended attributes on a file system without
    /// them): said, but the content is right.
    pub notes: Vec<String>,
}

/// Extracts the tar stream `r` into `dest` (which must exist): files, folders, symlinks, hard
/// links, permissions, times, extended attributes, and ownership when running as root.
///
/// Nothing outside `dest` is ever touched, whatever the archive says: paths that would leave it
/// are refused; nothing is written through a symlink, whether the archive made it or it was
/// already there; a hard link may only point at a regular file this extraction wrote, by a path
/// of real folders (so not at a symlink, a folder, a file that was there before, or anything
/// through a symlink); and a hard link gets no metadata of its own (it would land on its
/// target). Setuid and setgid bits are kept only on a file that has the owner and group the
/// archive gives it (as GNU tar does): otherwise they are dropped, and said in the notes.
pub fn extract(r: &mut dyn Read, dest: &Path) -> Result<Extracted> {
    extract_as(r, dest, Holds::AnyFolder)
}

/// What an archive is, which decides what of it is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holds {
    /// A folder snapshot: whatever a folder holds, with owners, modes and extended attributes.
    AnyFolder,
    /// A PostgreSQL data folder, as pg_basebackup writes it (without tablespaces, which base
    /// backups refuse): files and folders of the server's user, perhaps a symlink an
    /// administrator put there. No owner is applied (the fetch gives everything to the server's
    /// user), nor setuid, setgid or sticky bits, nor extended attributes (pg_basebackup writes
    /// none). A symlink at or under `pg_wal` or `pg_tblspc` is refused: pg_basebackup writes the
    /// WAL as files and tablespaces are not in base backups, and there the server,
    /// pg_combinebackup (as root) and wal-fetch write, so such a link would carry their writes
    /// out of the folder.
    DataFolder,
}

/// [`extract`] for an archive that is `holds`.
pub fn extract_as(r: &mut dyn Read, dest: &Path, holds: Holds) -> Result<Extracted> {
    let data_folder = holds == Holds::DataFolder;
    let mut archive = tar::Archive::new(r);
    let mut out = Extracted {
        files: HashMap::new(),
        problems: Vec::new(),
        notes: Vec::new(),
    };
    // SAFETY: geteuid has no preconditions. A data folder's owner is set by the fetch.
    let root = unsafe { libc::geteuid() } == 0 && !data_folder;
    // Folders get their owner, attributes, mode and time once everything is in: until then they
    // stay root's (or ours) and private, so nobody the archive names can reach into one while
    // it is filled.
    let mut dirs: Vec<Folder> = Vec::new();
    // Folders under `dest` known to be real folders (not symlinks), so that no entry is ever
    // written through a symlink, whether the archive made it or it was already there.
    let mut real: HashSet<PathBuf> = HashSet::new();
    // Regular files this extraction wrote and that are still there: the only things a hard
    // link may point at.
    let mut written: HashSet<PathBuf> = HashSet::new();
    let bad = |e: io::Error| Error::from_io(e, "cannot read the archive");
    for entry in archive.entries().map_err(bad)? {
        crate::interrupt::check()?;
        let mut entry = entry.map_err(bad)?;
        let raw = entry.path_bytes().into_owned();
        let shown = encode_path(&raw);
        let rel = beneath(&raw).ok_or_else(|| {
            Error::integrity(format!(
                "the archive holds a path outside its folder: {shown}"
            ))
        })?;
        let target = dest.join(&rel);
        if let Err(at) = real_folders(dest, &rel, &mut real) {
            return Err(Error::io(format!(
                "cannot restore {shown}: {} is a symlink, and nothing is written through one",
                encode_path(at.as_os_str().as_bytes())
            ))
            .with_hint("restore into an empty folder"));
        }
        let h = entry.header().clone();
        let mut mode = h.mode().unwrap_or(0o644) & 0o7777;
        if data_folder && mode & 0o7000 != 0 {
            mode &= 0o777;
            out.notes.push(format!(
                "{shown}: setuid, setgid and sticky bits dropped (a data folder has none)"
            ));
        }
        let mtime = h.mtime().unwrap_or(0);
        let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = match entry.pax_extensions() {
            Ok(Some(exts)) => exts
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    e.key_bytes()
                        .strip_prefix(b"SCHILY.xattr.")
                        .map(|k| (k.to_vec(), e.value_bytes().to_vec()))
                })
                .collect(),
            _ => Vec::new(),
        };
        if data_folder && !xattrs.is_empty() {
            xattrs.clear();
            out.notes.push(format!(
                "{shown}: extended attributes not restored (pg_basebackup writes none)"
            ));
        }
        let io_err = |e: io::Error| Error::io_at("cannot write", &target, &e);
        // Over an existing folder (restore --force): what stands where an entry goes is replaced,
        // never written through (a symlink or a hard link there must not redirect the write).
        if !matches!(h.entry_type(), tar::EntryType::Directory)
            && let Ok(old) = fs::symlink_metadata(&target)
        {
            if old.is_dir() {
                return Err(Error::io(format!(
                    "cannot restore {}: a folder of that name is in the way",
                    target.display()
                )));
            }
            fs::remove_file(&target).map_err(io_err)?;
            written.remove(&rel);
        }
        match h.entry_type() {
            tar::EntryType::Directory => {
                if fs::symlink_metadata(&target).is_ok_and(|m| m.file_type().is_symlink()) {
                    return Err(Error::io(format!(
                        "cannot restore {shown}: a symlink stands where the folder goes, and nothing is written through one"
                    ))
                    .with_hint("restore into an empty folder"));
                }
                fs::create_dir_all(&target).map_err(io_err)?;
                dirs.push(Folder {
                    path: target.clone(),
                    shown: shown.clone(),
                    owner: owner(&h).filter(|_| root),
                    xattrs,
                    mode,
                    mtime,
                });
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(p) = target.parent() {
                    fs::create_dir_all(p).map_err(io_err)?;
                }
                // Where it goes is free (emptied above): a new file, never an existing one.
                let f = {
                    use std::os::unix::fs::OpenOptionsExt;
                    fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&target)
                        .map_err(io_err)?
                };
                let mut w = io::BufWriter::with_capacity(1 << 20, f);
                let mut hr = Hashing {
                    inner: &mut entry,
                    hash: Sha256::new(),
                    n: 0,
                };
                io::copy(&mut hr, &mut w).map_err(|e| {
                    if e.kind() == io::ErrorKind::UnexpectedEof
                        || e.kind() == io::ErrorKind::InvalidData
                    {
                        bad(e)
                    } else {
                        io_err(e)
                    }
                })?;
                let f = w.into_inner().map_err(|e| io_err(e.into_error()))?;
                let sha = crate::units::hex(&hr.hash.finalize_reset());
                out.files.insert(shown.clone(), (hr.n, sha));
                written.insert(rel.clone());
                // Through the open file, so nothing else can receive it: owner, attributes,
                // then the mode (chown clears setuid bits, and a read-only file refuses
                // attributes), then the time.
                let wanted = owner(&h);
                if root && let Some((uid, gid)) = wanted {
                    let _ = std::os::unix::fs::fchown(&f, Some(uid), Some(gid));
                }
                set_xattrs(On::File(&f), &shown, &xattrs, &mut out.notes);
                let mut mode = mode;
                if mode & 0o6000 != 0 {
                    let has = f.metadata().map_err(io_err)?;
                    if wanted != Some((has.uid(), has.gid())) {
                        mode &= !0o6000;
                        out.notes.push(format!(
                            "{shown}: setuid/setgid bits dropped: it should belong to {}:{}, and is owned by {}:{}",
                            h.uid().map_or("?".into(), |u| u.to_string()),
                            h.gid().map_or("?".into(), |g| g.to_string()),
                            has.uid(),
                            has.gid()
                        ));
                    }
                }
                f.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(io_err)?;
                let t = filetime::FileTime::from_unix_time(mtime as i64, 0);
                let _ = filetime::set_file_handle_times(&f, None, Some(t));
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name_bytes()
                    .map(|l| l.into_owned())
                    .unwrap_or_default();
                if data_folder
                    && rel
                        .components()
                        .next()
                        .is_some_and(|c| c.as_os_str() == "pg_wal" || c.as_os_str() == "pg_tblspc")
                {
                    return Err(Error::integrity(format!(
                        "the base backup holds a symlink {shown} -> {}: pg_basebackup writes none under pg_wal, and base backups hold no tablespaces",
                        encode_path(&link)
                    ))
                    .with_hint("this base backup was crafted or damaged, and nothing was written through the link; fetch another one"));
                }
                if let Some(p) = target.parent() {
                    fs::create_dir_all(p).map_err(io_err)?;
                }
                std::os::unix::fs::symlink(OsStr::from_bytes(&link), &target).map_err(io_err)?;
                // Of the link itself; its time is left (setting it would follow the link).
                if root && let Some((uid, gid)) = owner(&h) {
                    let _ = std::os::unix::fs::lchown(&target, Some(uid), Some(gid));
                }
                set_xattrs(On::Path(&target), &shown, &xattrs, &mut out.notes);
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name_bytes()
                    .map(|l| l.into_owned())
                    .unwrap_or_default();
                let refused = |why: String| {
                    Error::integrity(format!(
                        "the archive links {shown} to {}, {why}",
                        encode_path(&link)
                    ))
                    .with_hint("offsitedb never writes such a link: this snapshot was crafted or damaged; restore another one")
                };
                let first = beneath(&link).ok_or_else(|| refused("outside its folder".into()))?;
                if let Err(at) = real_folders(dest, &first, &mut real) {
                    return Err(refused(format!(
                        "through the symlink {}",
                        encode_path(at.as_os_str().as_bytes())
                    )));
                }
                let is_file = fs::symlink_metadata(dest.join(&first)).is_ok_and(|m| m.is_file());
                if !written.contains(&first) || !is_file {
                    return Err(refused("which is not a file it extracted before it".into()));
                }
                if let Err(e) = fs::hard_link(dest.join(&first), &target) {
                    out.problems.push(format!(
                        "{shown}: cannot link to {}: {}",
                        encode_path(&link),
                        crate::error::describe_io(&e)
                    ));
                    continue;
                }
                // The same file as its target, which has its metadata already: none applied.
                written.insert(rel.clone());
            }
            tar::EntryType::XHeader
            | tar::EntryType::XGlobalHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => continue,
            other => {
                out.problems
                    .push(format!("{shown}: entry type {other:?} not extracted"));
                continue;
            }
        }
    }
    // Folders last, deepest first: writing into them changed their times, and a read-only
    // folder must stay writable until its content is in.
    for d in dirs.into_iter().rev() {
        if let Some((uid, gid)) = d.owner {
            let _ = std::os::unix::fs::lchown(&d.path, Some(uid), Some(gid));
        }
        set_xattrs(On::Path(&d.path), &d.shown, &d.xattrs, &mut out.notes);
        let _ = fs::set_permissions(&d.path, fs::Permissions::from_mode(d.mode));
        let t = filetime::FileTime::from_unix_time(d.mtime as i64, 0);
        let _ = filetime::set_file_mtime(&d.path, t);
    }
    Ok(out)
}

/// A folder of the archive, and the metadata it gets once its content is in.
struct Folder {
    path: PathBuf,
    shown: String,
    owner: Option<(u32, u32)>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    mode: u32,
    mtime: u64,
}

/// An archive path as a path beneath the destination, `.` components dropped; `None` when it is
/// absolute or has a `..` component.
fn beneath(raw: &[u8]) -> Option<PathBuf> {
    let p = Path::new(OsStr::from_bytes(raw));
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

/// Checks that every folder on the way to `rel` under `dest` (not `rel` itself) is a real folder;
/// those found are remembered in `real`. A folder not there yet is fine (it is created as a real
/// one); a symlink on the way is returned.
fn real_folders(
    dest: &Path,
    rel: &Path,
    real: &mut HashSet<PathBuf>,
) -> std::result::Result<(), PathBuf> {
    let Some(parent) = rel.parent() else {
        return Ok(());
    };
    let mut at = PathBuf::new();
    for c in parent.components() {
        at.push(c);
        if real.contains(&at) {
            continue;
        }
        match fs::symlink_metadata(dest.join(&at)) {
            Ok(m) if m.file_type().is_symlink() => return Err(at),
            Ok(m) if m.is_dir() => {
                real.insert(at.clone());
            }
            // Not there yet (created later), or a file in the way (creation fails).
            _ => {}
        }
    }
    Ok(())
}

/// The owner and group an entry asks for, when this system can represent them: `(uid_t)-1`
/// means "leave unchanged" to chown, and a larger id must not be cut to a small one (2^32 is not
/// root).
fn owner(h: &tar::Header) -> Option<(u32, u32)> {
    let fit = |n: u64| u32::try_from(n).ok().filter(|n| *n != u32::MAX);
    Some((fit(h.uid().ok()?)?, fit(h.gid().ok()?)?))
}

/// What extended attributes are set on: a path itself (never through a symlink), or an open file.
enum On<'a> {
    Path(&'a Path),
    File(&'a fs::File),
}

/// Sets extended attributes; what fails is noted.
fn set_xattrs(on: On<'_>, shown: &str, xattrs: &[(Vec<u8>, Vec<u8>)], notes: &mut Vec<String>) {
    use std::os::fd::AsRawFd;
    for (k, v) in xattrs {
        let Ok(k) = CString::new(k.clone()) else {
            continue;
        };
        // SAFETY: valid C strings, an open descriptor, and a buffer of the given length.
        let rc = match on {
            On::Path(p) => {
                let Ok(p) = CString::new(p.as_os_str().as_bytes()) else {
                    return;
                };
                unsafe { libc::lsetxattr(p.as_ptr(), k.as_ptr(), v.as_ptr().cast(), v.len(), 0) }
            }
            On::File(f) => unsafe {
                libc::fsetxattr(f.as_raw_fd(), k.as_ptr(), v.as_ptr().cast(), v.len(), 0)
            },
        };
        if rc != 0 {
            notes.push(format!(
                "{shown}: cannot set extended attribute {}: {}",
                String::from_utf8_lossy(k.as_bytes()),
                io::Error::last_os_error()
            ));
        }
    }
}

/// Gives the owner write access to every folder under `dir`, so that a copy with read-only
/// folders can be removed (a drill's temporary folder).
pub fn make_removable(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    for e in rd.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            make_removable(&e.path());
        }
    }
}

/// Compares an extraction with the manifest: every file there, with its size and digest, and
/// nothing else.
pub fn compare(rec: &FilesRecord, got: &Extracted) -> Vec<String> {
    let mut problems = got.problems.clone();
    let mut seen = 0;
    for f in &rec.list {
        match got.files.get(&f.path) {
            None => problems.push(format!("{}: missing from the archive", f.path)),
            Some((size, sha)) => {
                seen += 1;
                if *size != f.size || *sha != f.sha256 {
                    problems.push(format!(
                        "{}: {} bytes with SHA-256 {}, the manifest says {} bytes with {}",
                        f.path, size, sha, f.size, f.sha256
                    ));
                }
            }
        }
    }
    if got.files.len() != seen {
        problems.push(format!(
            "the archive holds {} files, the manifest lists {}",
            got.files.len(),
            rec.list.len()
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_encode_reversibly_and_as_json() {
        assert_eq!(encode_path(b"a/b.txt"), "a/b.txt");
        assert_eq!(encode_path("ünï/100%".as_bytes()), "ünï/100%25");
        assert_eq!(encode_path(b"bad\xff\xfename"), "bad%FF%FEname");
    }
}

/// How a folder restore went.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DirRestoreReport {
    pub snapshot: String,
    pub source: String,
    pub target: String,
    pub files: u64,
    pub bytes: u64,
    pub seconds: f64,
    /// Metadata that could not be applied here (extended attributes).
    pub notes: Vec<String>,
}

/// True when `dir` does not exist or holds nothing.
fn empty_or_missing(dir: &Path) -> Result<bool> {
    match fs::read_dir(dir) {
        Ok(mut rd) => Ok(rd.next().is_none()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(Error::io_at("cannot read", dir, &e)),
    }
}

/// Restores a directory snapshot into `dest`: refused when `dest` holds anything, unless `force`
/// (then files of the snapshot replace those of the same name; others stay). Every file is checked
/// against the manifest as it is written.
pub fn restore<S: crate::storage::ReadStore + ?Sized>(
    repo: &Repository<S>,
    m: &Manifest,
    dest: &Path,
    force: bool,
    progress: bool,
) -> Result<DirRestoreReport> {
    let t = std::time::Instant::now();
    let Some(rec) = &m.files else {
        return Err(
            Error::config(format!("snapshot {} is a database backup", m.snapshot_id))
                .with_hint("restore it into a database with --to URL"),
        );
    };
    if !force && !empty_or_missing(dest)? {
        return Err(
            Error::config(format!("{} is not empty", dest.display())).with_hint(
                "restore into an empty or new folder, or pass --force to write over what is there",
            ),
        );
    }
    fs::create_dir_all(dest).map_err(|e| Error::io_at("cannot create", dest, &e))?;
    let counters = Counters::default();
    let (mut dump, handle) = super::open_dump(repo, m, Some(counters.input.clone()))?;
    let shown = Progress::start("restore", &counters, progress);
    let got = extract(&mut dump, dest);
    drop(shown);
    let got = got?;
    // The tar stream's zero blocks and the rest of the object: read, so all of it authenticated.
    io::copy(&mut dump, &mut io::sink())
        .map_err(|e| Error::from_io(e, "cannot read the snapshot"))?;
    super::finish_dump(dump, &handle, m)?;
    let problems = compare(rec, &got);
    if let Some(first) = problems.first() {
        return Err(Error::integrity(format!(
            "the restored folder differs from the snapshot's manifest in {} place{}; the first: {first}",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        )));
    }
    Ok(DirRestoreReport {
        snapshot: m.snapshot_id.to_string(),
        source: m.source.name.clone(),
        target: dest.display().to_string(),
        files: rec.files,
        bytes: rec.bytes,
        seconds: t.elapsed().as_secs_f64(),
        notes: got.notes,
    })
}
