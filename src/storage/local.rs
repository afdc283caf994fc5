/*!
A repository in a local folder (or a mounted network share). Objects are files; writes go to a
hidden temporary file in the same folder, are fsynced, renamed into place, and the folder is
fsynced, so a crash leaves either the old state or the complete object, never a torn one.

Objects are regular files and nothing else: a symbolic link, a device or a fifo under the folder
is refused, never followed or opened for reading (a link to `/dev/zero` would never end, a fifo
would block), and listings skip them.
*/

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{IncompleteUpload, Object, ObjectInfo, ReadStore, Upload, WriteStore, check_key};
use crate::error::{Error, Result, describe_io};

const PARTIAL_MARK: &str = ".partial-";

/// A file system failure in the repository folder, with the fix when it is known.
fn storage_err(what: &str, path: &Path, e: &io::Error) -> Error {
    let err = Error::storage(format!("{what} {}: {}", path.display(), describe_io(e)));
    match e.raw_os_error() {
        Some(libc::ENOSPC) => {
            err.with_hint("the repository's file system is full: free space or move the repository")
        }
        Some(libc::EACCES) | Some(libc::EPERM) => {
            err.with_hint("check the folder's owner and permissions")
        }
        _ => err,
    }
}

/// Refuses what is not a regular file where an object should be.
fn not_a_file(key: &str, path: &Path, what: &str) -> Error {
    Error::integrity(format!(
        "object {key} is {what} ({}), not a regular file; it was not read",
        path.display()
    ))
    .with_hint("OffsiteDB writes only regular files into a repository folder: replace it with the object itself, or remove it")
}

pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn new(root: PathBuf) -> Self {
        LocalStore { root }
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    /// A temporary path beside `target`, hidden from listings.
    fn temp_for(target: &Path) -> Result<PathBuf> {
        let mut r = [0u8; 6];
        getrandom::fill(&mut r).map_err(|e| Error::internal(format!("random: {e}")))?;
        let name = target
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("object");
        Ok(target.with_file_name(format!(".{name}{PARTIAL_MARK}{}", crate::units::hex(&r))))
    }

    fn mkdirs(&self, target: &Path) -> Result<()> {
        let parent = target.parent().expect("object paths have a parent");
        fs::create_dir_all(parent).map_err(|e| storage_err("cannot create folder", parent, &e))
    }

    fn walk(&self, dir: &Path, out: &mut Vec<(PathBuf, u64)>, partial: bool) -> Result<()> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(storage_err("cannot list", dir, &e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| storage_err("cannot list", dir, &e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let ft = entry
                .file_type()
                .map_err(|e| storage_err("cannot stat", &entry.path(), &e))?;
            if ft.is_dir() {
                if !name.starts_with('.') {
                    self.walk(&entry.path(), out, partial)?;
                }
            } else if ft.is_file() && name.starts_with('.') == partial {
                if partial && !name.contains(PARTIAL_MARK) {
                    continue;
                }
                let len = entry
                    .metadata()
                    .map_err(|e| storage_err("cannot stat", &entry.path(), &e))?
                    .len();
                out.push((entry.path(), len));
            }
        }
        Ok(())
    }

    fn key_of(&self, path: &Path) -> String {
        let rel = path.strip_prefix(&self.root).unwrap_or(path);
        rel.components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The folder to start a walk from: the deepest folder named whole by `prefix`.
    fn walk_root(&self, prefix: &str) -> PathBuf {
        match prefix.rfind('/') {
            Some(i) => self.root.join(&prefix[..i]),
            None => self.root.clone(),
        }
    }
}

impl ReadStore for LocalStore {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn open(&self, key: &str) -> Result<Object> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.path(key)?;
        // O_NOFOLLOW: a symlink fails with ELOOP instead of being followed; O_NONBLOCK: a fifo
        // opens at once (and is refused below) instead of waiting for a writer.
        let opened = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path);
        let f = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::not_found(format!(
                    "object {key} does not exist in {}",
                    self.root.display()
                )));
            }
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(not_a_file(key, &path, "a symbolic link"));
            }
            Err(e) => return Err(storage_err("cannot open", &path, &e)),
        };
        let meta = f
            .metadata()
            .map_err(|e| storage_err("cannot stat", &path, &e))?;
        if !meta.is_file() {
            let what = if meta.is_dir() {
                "a folder"
            } else {
                "a device, fifo or socket"
            };
            return Err(not_a_file(key, &path, what));
        }
        Ok(Object {
            reader: Box::new(io::BufReader::with_capacity(1 << 16, f)),
            size: Some(meta.len()),
        })
    }

    fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        let path = self.path(key)?;
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(ObjectInfo {
                key: key.to_string(),
                size: m.len(),
            })),
            Ok(m) if m.is_dir() => Ok(None),
            Ok(m) if m.file_type().is_symlink() => Err(not_a_file(key, &path, "a symbolic link")),
            Ok(_) => Err(not_a_file(key, &path, "a device, fifo or socket")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(storage_err("cannot stat", &path, &e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut found = Vec::new();
        self.walk(&self.walk_root(prefix), &mut found, false)?;
        let mut out: Vec<ObjectInfo> = found
            .into_iter()
            .map(|(p, size)| ObjectInfo {
                key: self.key_of(&p),
                size,
            })
            .filter(|o| o.key.starts_with(prefix))
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

impl WriteStore for LocalStore {
    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        let mut up = self.upload(key, Some(data.len() as u64))?;
        up.write_all(data)
            .map_err(|e| Error::from_io(e, &format!("cannot write {key}")))?;
        up.finish().map(|_| ())
    }

    fn put_new(&self, key: &str, data: &[u8]) -> Result<bool> {
        let target = self.path(key)?;
        self.mkdirs(&target)?;
        let tmp = Self::temp_for(&target)?;
        let written = fs::write(&tmp, data)
            .and_then(|_| File::open(&tmp)?.sync_all())
            .map_err(|e| storage_err("cannot write", &tmp, &e));
        // A hard link fails when the name exists: the atomic create-if-absent of a folder.
        let linked = written.and_then(|_| match fs::hard_link(&tmp, &target) {
            Ok(()) => Ok(true),
            // On NFS a retransmitted LINK whose first reply was lost fails with EEXIST although
            // it created the name: the name then is our file (the same inode), as open(2) says.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(same_file(&tmp, &target)),
            Err(e) => Err(storage_err("cannot create", &target, &e)),
        });
        let _ = fs::remove_file(&tmp);
        if linked? {
            let parent = target.parent().expect("object paths have a parent");
            File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(|e| storage_err("cannot sync folder", parent, &e))?;
            return Ok(true);
        }
        Ok(false)
    }

    fn upload(&self, key: &str, _size_hint: Option<u64>) -> Result<Box<dyn Upload>> {
        let target = self.path(key)?;
        self.mkdirs(&target)?;
        let tmp = Self::temp_for(&target)?;
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| storage_err("cannot create", &tmp, &e))?;
        Ok(Box::new(LocalUpload {
            file: Some(BufWriter::with_capacity(1 << 20, file)),
            tmp,
            target,
            written: 0,
        }))
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(storage_err("cannot delete", &path, &e)),
        }
        // Folders emptied by the deletion go too (a pruned snapshot leaves nothing behind);
        // remove_dir fails on a folder that still holds something, which ends the walk.
        let mut dir = path.parent();
        while let Some(d) = dir.filter(|d| d.starts_with(&self.root) && *d != self.root) {
            if fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }

    fn incomplete_uploads(&self, prefix: &str) -> Result<Vec<IncompleteUpload>> {
        let mut found = Vec::new();
        self.walk(&self.walk_root(prefix), &mut found, true)?;
        Ok(found
            .into_iter()
            .map(|(p, _)| {
                let key = self.key_of(&p);
                // The last write is the liveness signal of a local upload.
                let started = fs::metadata(&p)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| jiff::Timestamp::try_from(t).ok())
                    .map(|t| t.to_string());
                IncompleteUpload {
                    id: key.clone(),
                    key,
                    started,
                }
            })
            .filter(|u| u.key.starts_with(prefix))
            .collect())
    }

    fn abort_incomplete(&self, upload: &IncompleteUpload) -> Result<()> {
        let path = self.root.join(&upload.id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(storage_err("cannot delete", &path, &e)),
        }
    }
}

/// Whether two paths name one file (device and inode), without following links.
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::symlink_metadata(a), fs::symlink_metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Renames a finished temporary file into place and makes the rename durable.
fn commit(tmp: &Path, target: &Path) -> Result<()> {
    fs::rename(tmp, target).map_err(|e| storage_err("cannot rename into", target, &e))?;
    let parent = target.parent().expect("object paths have a parent");
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| storage_err("cannot sync folder", parent, &e))
}

struct LocalUpload {
    file: Option<BufWriter<File>>,
    tmp: PathBuf,
    target: PathBuf,
    written: u64,
}

impl Write for LocalUpload {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("upload already closed"))?;
        let n = f
            .write(buf)
            .map_err(|e| storage_err("cannot write", &self.tmp, &e).into_io())?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Upload for LocalUpload {
    fn finish(mut self: Box<Self>) -> Result<u64> {
        let bw = self.file.take().expect("finish once");
        let done = bw
            .into_inner()
            .map_err(|e| storage_err("cannot write", &self.tmp, e.error()))
            .and_then(|f| {
                f.sync_all()
                    .map_err(|e| storage_err("cannot sync", &self.tmp, &e))
            })
            .and_then(|_| commit(&self.tmp, &self.target));
        if done.is_err() {
            let _ = fs::remove_file(&self.tmp);
        }
        done.map(|_| self.written)
    }

    fn abort(mut self: Box<Self>) -> Result<()> {
        self.file.take();
        match fs::remove_file(&self.tmp) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(storage_err("cannot delete", &self.tmp, &e)),
        }
    }
}

impl Drop for LocalUpload {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}
