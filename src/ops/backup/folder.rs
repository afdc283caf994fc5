/*!
A folder as a backup source (a Docker volume, uploads): a POSIX tar stream through the backup
skeleton ([`super`]), with a manifest of every file's size and SHA-256, so that a drill can check
every file it extracts (the restore side is [`crate::ops::directory`]).

The tar stream is POSIX (ustar with GNU long names): permissions, ownership (numeric), modification
times, symlinks, hard links (by device and inode), and extended attributes (PAX `SCHILY.xattr.`
records, as GNU tar and bsdtar write them). Sockets, devices and fifos are skipped, each named in
the manifest. Entries are written in sorted order, so the same folder gives the same stream. A
file that changes while it is read is stored as read (padded or cut to the size it had when its
header was written) and named in the manifest's `skipped` list, so a drill does not pass a copy
that differs from the live file silently. An entry that cannot be read fails the backup: a folder
with holes is never stored.
*/

use std::collections::HashMap;
use std::ffi::{CString, OsString};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

use crate::catalog::SourceKind;
use crate::catalog::manifest::{Described, FileRecord, FilesRecord, SourceInfo};
use crate::error::{Error, Result};
use crate::ops::directory::{Hashing, encode_path};

use super::Stream;

/// A folder, by its path.
pub struct Folder {
    name: String,
    path: PathBuf,
    /// Set by `prepare`: the resolved folder and its owner.
    root: Option<(PathBuf, u32)>,
    /// The walk's result, once the bytes ended.
    done: Option<Receiver<FilesRecord>>,
}

impl Folder {
    pub fn new(name: &str, path: &Path) -> Folder {
        Folder {
            name: name.to_string(),
            path: path.to_path_buf(),
            root: None,
            done: None,
        }
    }
}

impl super::Source for Folder {
    type Described = Described;

    fn kind(&self) -> SourceKind {
        SourceKind::Directory
    }

    fn prepare(&mut self, _note: &mut dyn FnMut(String)) -> Result<Option<u64>> {
        let meta = fs::metadata(&self.path).map_err(|e| {
            Error::io_at("cannot read the folder", &self.path, &e)
                .with_hint("check the path of the directory source")
        })?;
        if !meta.is_dir() {
            return Err(Error::config(format!(
                "{} is not a folder",
                self.path.display()
            )));
        }
        let root = self
            .path
            .canonicalize()
            .map_err(|e| Error::io_at("cannot resolve", &self.path, &e))?;
        self.root = Some((root, meta.uid()));
        Ok(None)
    }

    fn open(&mut self, _note: &mut dyn FnMut(String)) -> Result<Stream> {
        let (root, _) = self
            .root
            .clone()
            .ok_or_else(|| Error::internal("a folder source was opened before it was prepared"))?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Arc<Vec<u8>>>(4);
        let walker = spawn_walk(root, tx)?;
        // Commit only once the walk finished without an error.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        self.done = Some(done_rx);
        Ok(Stream {
            reader: Box::new(crate::pipeline::TapReader::new(rx)),
            tap: None,
            on_eof: Box::new(move || {
                let rec = walk_result(walker)?;
                let _ = done_tx.send(rec);
                Ok(())
            }),
        })
    }

    fn describe(self: Box<Self>, note: &mut dyn FnMut(String)) -> Result<Described> {
        let rec = self
            .done
            .as_ref()
            .and_then(|r| r.recv().ok())
            .ok_or_else(|| Error::internal("the folder walk ended without a result"))?;
        for s in rec.skipped.iter().take(20) {
            note(format!("left out or changed: {s}"));
        }
        let (root, uid) = self.root.clone().expect("prepared before described");
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        Ok(Described {
            source: SourceInfo {
                name: self.name.clone(),
                kind: SourceKind::Directory,
                host,
                port: 0,
                database: root.display().to_string(),
                user: uid.to_string(),
            },
            server: Default::default(),
            dump: Default::default(),
            files: Some(rec),
            verification: Default::default(),
        })
    }
}

/// Walks `root` into a tar stream on its own thread, sending 1 MiB buffers to `tx`.
fn spawn_walk(
    root: PathBuf,
    tx: SyncSender<Arc<Vec<u8>>>,
) -> Result<JoinHandle<io::Result<FilesRecord>>> {
    std::thread::Builder::new()
        .name("dir-walk".into())
        .spawn(move || -> io::Result<FilesRecord> {
            let mut w = Walk {
                root: &root,
                b: tar::Builder::new(ChannelWriter {
                    tx,
                    buf: Vec::with_capacity(1 << 20),
                }),
                rec: FilesRecord {
                    root: root.display().to_string(),
                    ..Default::default()
                },
                links: HashMap::new(),
                unreadable: Vec::new(),
            };
            w.b.mode(tar::HeaderMode::Complete);
            w.dir(Path::new(""))?;
            if !w.unreadable.is_empty() {
                // Failing here aborts the upload: a snapshot with holes is never committed.
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "{} entr{} of {} could not be read; the first: {}",
                        w.unreadable.len(),
                        if w.unreadable.len() == 1 { "y" } else { "ies" },
                        root.display(),
                        w.unreadable[0]
                    ),
                ));
            }
            let mut out = w.b.into_inner()?;
            out.flush()?;
            Ok(w.rec)
        })
        .map_err(|e| Error::internal(format!("cannot start a thread: {e}")))
}

/// The walk's record, or why the folder could not be read whole.
fn walk_result(walker: JoinHandle<io::Result<FilesRecord>>) -> Result<FilesRecord> {
    let r = walker
        .join()
        .map_err(|_| Error::internal("the folder walk panicked"))?;
    r.map_err(|e| {
        if e.kind() == io::ErrorKind::PermissionDenied {
            Error::io(format!("cannot back up the folder: {e}")).with_hint(
                "run offsitedb as a user who can read the whole folder (for a Docker volume, root); nothing was stored",
            )
        } else {
            Error::from_io(e, "cannot read the folder")
        }
    })
}

/// Sends what is written, in 1 MiB buffers, to the pipeline.
struct ChannelWriter {
    tx: SyncSender<Arc<Vec<u8>>>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        crate::interrupt::check().map_err(|_| io::Error::other("interrupted by a signal"))?;
        self.buf.extend_from_slice(b);
        if self.buf.len() >= 1 << 20 {
            self.flush()?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let b = std::mem::replace(&mut self.buf, Vec::with_capacity(1 << 20));
            self.tx
                .send(Arc::new(b))
                .map_err(|_| io::Error::other("the upload stopped"))?;
        }
        Ok(())
    }
}

/// The extended attributes of `p` (not following symlinks); empty where unsupported.
fn xattrs(p: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
        return Vec::new();
    };
    // SAFETY: llistxattr/lgetxattr with a valid path and buffers of the sizes given.
    unsafe {
        let n = libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0);
        if n <= 0 {
            return Vec::new();
        }
        let mut names = vec![0u8; n as usize];
        let n = libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len());
        if n <= 0 {
            return Vec::new();
        }
        names.truncate(n as usize);
        let mut out = Vec::new();
        for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
            let Ok(cn) = CString::new(name) else { continue };
            let len = libc::lgetxattr(c.as_ptr(), cn.as_ptr(), std::ptr::null_mut(), 0);
            if len < 0 {
                continue;
            }
            let mut v = vec![0u8; len as usize];
            let len = libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len());
            if len < 0 {
                continue;
            }
            v.truncate(len as usize);
            out.push((name.to_vec(), v));
        }
        out
    }
}

/// A PAX extended header entry carrying `records` for the entry that follows.
fn append_pax(
    b: &mut tar::Builder<ChannelWriter>,
    records: &[(Vec<u8>, Vec<u8>)],
) -> io::Result<()> {
    let mut data = Vec::new();
    for (k, v) in records {
        // "LEN KEY=VALUE\n", where LEN counts itself.
        let body = 3 + k.len() + v.len();
        let mut len = body + 1;
        while len.to_string().len() + body != len {
            len = len.to_string().len() + body;
        }
        data.extend_from_slice(len.to_string().as_bytes());
        data.push(b' ');
        data.extend_from_slice(k);
        data.push(b'=');
        data.extend_from_slice(v);
        data.push(b'\n');
    }
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_path("././@PaxHeader")?;
    h.set_cksum();
    b.append(&h, data.as_slice())
}

struct Walk<'a> {
    root: &'a Path,
    b: tar::Builder<ChannelWriter>,
    rec: FilesRecord,
    /// (device, inode) of files with several links → their first path in the archive.
    links: HashMap<(u64, u64), PathBuf>,
    /// Entries that could not be read: the backup fails rather than store a folder with holes.
    unreadable: Vec<String>,
}

impl Walk<'_> {
    fn header(&self, m: &fs::Metadata, kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(m.mode() & 0o7777);
        h.set_uid(m.uid() as u64);
        h.set_gid(m.gid() as u64);
        h.set_mtime(m.mtime().max(0) as u64);
        h.set_size(0);
        h
    }

    fn dir(&mut self, rel: &Path) -> io::Result<()> {
        let abs = self.root.join(rel);
        let shown = encode_path(rel.as_os_str().as_bytes());
        let mut names: Vec<OsString> = Vec::new();
        match fs::read_dir(&abs) {
            Ok(rd) => {
                for e in rd {
                    match e {
                        Ok(e) => names.push(e.file_name()),
                        Err(e) => self.unreadable.push(format!(
                            "{shown}: cannot list: {}",
                            crate::error::describe_io(&e)
                        )),
                    }
                }
            }
            Err(e) => {
                self.unreadable.push(format!(
                    "{shown}: cannot list: {}",
                    crate::error::describe_io(&e)
                ));
                return Ok(());
            }
        }
        names.sort();
        for name in names {
            let rel = rel.join(&name);
            self.entry(&rel)?;
        }
        Ok(())
    }

    fn entry(&mut self, rel: &Path) -> io::Result<()> {
        let abs = self.root.join(rel);
        let shown = encode_path(rel.as_os_str().as_bytes());
        let m = match fs::symlink_metadata(&abs) {
            Ok(m) => m,
            // Gone since the listing: nothing to keep.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                self.unreadable
                    .push(format!("{shown}: {}", crate::error::describe_io(&e)));
                return Ok(());
            }
        };
        let ft = m.file_type();
        let attrs = if ft.is_symlink() {
            Vec::new()
        } else {
            xattrs(&abs)
        };
        let pax: Vec<(Vec<u8>, Vec<u8>)> = attrs
            .into_iter()
            .map(|(k, v)| ([b"SCHILY.xattr.".as_slice(), &k].concat(), v))
            .collect();
        if ft.is_dir() {
            if !pax.is_empty() {
                append_pax(&mut self.b, &pax)?;
            }
            let mut h = self.header(&m, tar::EntryType::Directory);
            self.b.append_data(&mut h, rel, io::empty())?;
            self.rec.directories += 1;
            return self.dir(rel);
        }
        if ft.is_symlink() {
            let target = match fs::read_link(&abs) {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => {
                    self.unreadable
                        .push(format!("{shown}: {}", crate::error::describe_io(&e)));
                    return Ok(());
                }
            };
            let mut h = self.header(&m, tar::EntryType::Symlink);
            self.b.append_link(&mut h, rel, &target)?;
            self.rec.symlinks += 1;
            return Ok(());
        }
        if !ft.is_file() {
            self.rec.skipped.push(format!(
                "{shown}: not a file, folder or symlink (socket, device or fifo)"
            ));
            return Ok(());
        }
        let id = (m.dev(), m.ino());
        if m.nlink() > 1
            && let Some(first) = self.links.get(&id).cloned()
        {
            let mut h = self.header(&m, tar::EntryType::Link);
            self.b.append_link(&mut h, rel, &first)?;
            self.rec.hard_links += 1;
            return Ok(());
        }
        // Not following a symlink swapped in since the listing, and not waiting on a fifo.
        let opened = {
            use std::os::unix::fs::OpenOptionsExt;
            fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(&abs)
        };
        let file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                self.unreadable.push(format!(
                    "{shown}: cannot read: {}",
                    crate::error::describe_io(&e)
                ));
                return Ok(());
            }
        };
        match file.metadata() {
            Ok(now) if now.is_file() && (now.dev(), now.ino()) == id => {}
            _ => {
                self.rec.skipped.push(format!(
                    "{shown}: replaced by something else while the folder was read: left out"
                ));
                return Ok(());
            }
        }
        if !pax.is_empty() {
            append_pax(&mut self.b, &pax)?;
        }
        let size = m.len();
        let mut h = self.header(&m, tar::EntryType::Regular);
        h.set_size(size);
        let mut r = Hashing {
            inner: file.take(size),
            hash: Sha256::new(),
            n: 0,
        };
        // The header promised `size` bytes: a file that shrank meanwhile is padded with zeros
        // (hashed too, so the drill compares what was stored), and named.
        let mut padded = PadTo {
            inner: &mut r,
            left: size,
            padded: 0,
        };
        self.b.append_data(&mut h, rel, &mut padded)?;
        let short = padded.padded;
        if short > 0 {
            self.rec.skipped.push(format!(
                "{shown}: changed while it was read ({short} bytes shorter than when it started): its copy is padded with zeros"
            ));
        } else if fs::metadata(&abs)
            .map(|n| n.len() != size || n.mtime() != m.mtime())
            .unwrap_or(false)
        {
            self.rec.skipped.push(format!(
                "{shown}: changed while it was read: its copy may mix old and new content"
            ));
        }
        if m.nlink() > 1 {
            self.links.insert(id, rel.to_path_buf());
        }
        self.rec.files += 1;
        self.rec.bytes += size;
        self.rec.list.push(FileRecord {
            path: shown,
            size,
            sha256: crate::units::hex(&r.hash.finalize_reset()),
        });
        Ok(())
    }
}

/// Reads `left` bytes from `inner`, then zeros if it ended early.
struct PadTo<'a, R> {
    inner: &'a mut Hashing<R>,
    left: u64,
    padded: u64,
}

impl<R: Read> Read for PadTo<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let max = buf.len().min(self.left as usize);
        let n = self.inner.read(&mut buf[..max])?;
        if n > 0 {
            self.left -= n as u64;
            return Ok(n);
        }
        buf[..max].fill(0);
        self.inner.hash.update(&buf[..max]);
        self.left -= max as u64;
        self.padded += max as u64;
        Ok(max)
    }
}
