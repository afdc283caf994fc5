/*!
Directory sources: a folder (a Docker volume, uploads) backed up as a tar stream through the same
compress → seal → upload pipeline as a database, with a manifest of every file's size and SHA-256;
restored by extracting it, and drilled by extracting it into a temporary folder and checking every
file against the manifest.

The tar stream is POSIX (ustar with GNU long names): permissions, ownership (numeric), modification
times, symlinks, hard links (by device and inode), and extended attributes (PAX `SCHILY.xattr.`
records, as GNU tar and bsdtar write them). Sockets, devices and fifos are skipped, each named in
the manifest. Entries are written in sorted order, so the same folder gives the same stream. A
file that changes while it is read is stored as read (padded or cut to the size it had when its
header was written) and named in the manifest's `skipped` list, so a drill does not pass a copy
that differs from the live file silently.
*/

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
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
/// links, permissions, times, extended attributes, and ownership when running as root. Paths
/// that would leave `dest` are refused.
pub fn extract(r: &mut dyn Read, dest: &Path) -> Result<Extracted> {
    let mut archive = tar::Archive::new(r);
    let mut out = Extracted {
        files: HashMap::new(),
        problems: Vec::new(),
        notes: Vec::new(),
    };
    let root = unsafe { libc::geteuid() } == 0;
    let mut dirs: Vec<(PathBuf, u32, u64)> = Vec::new();
    // Folders under `dest` known to be real folders (not symlinks), so that no entry is ever
    // written through a symlink, whether the archive made it or it was already there.
    let mut real: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
    let bad = |e: io::Error| Error::from_io(e, "cannot read the archive");
    for entry in archive.entries().map_err(bad)? {
        crate::interrupt::check()?;
        let mut entry = entry.map_err(bad)?;
        let raw = entry.path_bytes().into_owned();
        let rel = PathBuf::from(OsStr::from_bytes(&raw));
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(Error::integrity(format!(
                "the archive holds a path outside its folder: {}",
                encode_path(&raw)
            )));
        }
        let shown = encode_path(&raw);
        let target = dest.join(&rel);
        if let Some(parent) = rel.parent() {
            let mut at = PathBuf::new();
            for c in parent.components() {
                at.push(c);
                if real.contains(&at) {
                    continue;
                }
                match fs::symlink_metadata(dest.join(&at)) {
                    Ok(m) if m.file_type().is_symlink() => {
                        return Err(Error::io(format!(
                            "cannot restore {shown}: {} is a symlink, and nothing is written through one",
                            encode_path(at.as_os_str().as_bytes())
                        ))
                        .with_hint("restore into an empty folder"));
                    }
                    Ok(m) if m.is_dir() => {
                        real.insert(at.clone());
                    }
                    // Not there yet (created below), or a file in the way (creation fails).
                    _ => {}
                }
            }
        }
        let h = entry.header().clone();
        let mode = h.mode().unwrap_or(0o644);
        let mtime = h.mtime().unwrap_or(0);
        let xattrs: Vec<(Vec<u8>, Vec<u8>)> = match entry.pax_extensions() {
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
                dirs.push((target.clone(), mode, mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(p) = target.parent() {
                    fs::create_dir_all(p).map_err(io_err)?;
                }
                let f = fs::File::create(&target).map_err(io_err)?;
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
                w.flush().map_err(io_err)?;
                let sha = crate::units::hex(&hr.hash.finalize_reset());
                out.files.insert(shown.clone(), (hr.n, sha));
                // Mode last (below), after ownership and attributes, as tar does: chown
                // clears setuid bits, and a read-only file refuses attributes.
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name_bytes()
                    .map(|l| l.into_owned())
                    .unwrap_or_default();
                if let Some(p) = target.parent() {
                    fs::create_dir_all(p).map_err(io_err)?;
                }
                std::os::unix::fs::symlink(OsStr::from_bytes(&link), &target).map_err(io_err)?;
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name_bytes()
                    .map(|l| l.into_owned())
                    .unwrap_or_default();
                let first = PathBuf::from(OsString::from_vec(link.clone()));
                if first.is_absolute()
                    || first
                        .components()
                        .any(|c| matches!(c, std::path::Component::ParentDir))
                {
                    return Err(Error::integrity(format!(
                        "the archive links outside its folder: {}",
                        encode_path(&link)
                    )));
                }
                if let Err(e) = fs::hard_link(dest.join(&first), &target) {
                    out.problems.push(format!(
                        "{shown}: cannot link to {}: {}",
                        encode_path(&link),
                        crate::error::describe_io(&e)
                    ));
                    continue;
                }
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
        let is_link = matches!(h.entry_type(), tar::EntryType::Symlink);
        if root && let (Ok(uid), Ok(gid)) = (h.uid(), h.gid()) {
            let _ = std::os::unix::fs::lchown(&target, Some(uid as u32), Some(gid as u32));
        }
        for (k, v) in &xattrs {
            if let (Ok(p), Ok(k)) = (
                CString::new(target.as_os_str().as_bytes()),
                CString::new(k.clone()),
            ) {
                // SAFETY: valid C strings and a buffer of the given length.
                let rc = unsafe {
                    libc::lsetxattr(p.as_ptr(), k.as_ptr(), v.as_ptr().cast(), v.len(), 0)
                };
                if rc != 0 {
                    out.notes.push(format!(
                        "{shown}: cannot set extended attribute {}: {}",
                        String::from_utf8_lossy(k.as_bytes()),
                        io::Error::last_os_error()
                    ));
                }
            }
        }
        if matches!(
            h.entry_type(),
            tar::EntryType::Regular | tar::EntryType::Continuous
        ) {
            fs::set_permissions(&target, fs::Permissions::from_mode(mode)).map_err(io_err)?;
        }
        if !is_link && !matches!(h.entry_type(), tar::EntryType::Directory) {
            let t = filetime::FileTime::from_unix_time(mtime as i64, 0);
            let _ = filetime::set_file_mtime(&target, t);
        }
    }
    // Folders last, deepest first: writing into them changed their times, and a read-only
    // folder must stay writable until its content is in.
    for (d, mode, mtime) in dirs.into_iter().rev() {
        let _ = fs::set_permissions(&d, fs::Permissions::from_mode(mode));
        let _ = filetime::set_file_mtime(&d, filetime::FileTime::from_unix_time(mtime as i64, 0));
    }
    Ok(out)
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
