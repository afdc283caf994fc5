/*!
`offsitedb decrypt`: the snapshot's artifact exactly as it was compressed (a standard `.dump.gz`
or `.dump.zst`), for `gunzip | pg_restore` without OffsiteDB in the path.

To a file, it writes a hidden temporary file beside the target and renames it only once the whole
object authenticated and matched its manifest: a file with the target's name is always complete.
To a pipe, a damaged object ends the stream early and the command exits non-zero.
*/

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::catalog::{Entry, Manifest, Repository};
use crate::error::{Error, Result};
use crate::storage::ReadStore;

pub enum Output<'a> {
    File { path: &'a Path, force: bool },
    Stream(&'a mut dyn Write),
}

pub fn run<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    entry: &Entry,
    out: Output,
) -> Result<Manifest> {
    let m = repo.manifest(&entry.source, &entry.id)?;
    let (mut artifact, handle) = super::open_artifact(repo, &m, None)?;
    match out {
        Output::Stream(w) => {
            crate::pipeline::copy_large(&mut artifact, w).map_err(|e| {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    Error::io("the program reading the output stopped before the end (broken pipe)")
                } else {
                    Error::from_io(e, "cannot write the artifact")
                }
            })?;
            super::check_artifact(&m, &handle.result())?;
        }
        Output::File { path, .. } if path.exists() && !path.is_file() => {
            // A device or a FIFO (/dev/null, a named pipe): write into it; nothing to rename.
            let mut f = fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| Error::io_at("cannot open", path, &e))?;
            crate::pipeline::copy_large(&mut artifact, &mut f)
                .map_err(|e| Error::from_io(e, &format!("cannot write {}", path.display())))?;
            super::check_artifact(&m, &handle.result())?;
        }
        Output::File { path, force } => {
            if path.exists() && !force {
                return Err(Error::config(format!("{} already exists", path.display()))
                    .with_hint("choose another file name, or pass --force to replace it"));
            }
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => std::env::current_dir()?,
            };
            let mut tmp = tempfile::Builder::new()
                .prefix(".offsitedb-decrypt-")
                .tempfile_in(&dir)
                .map_err(|e| Error::io_at("cannot create a file in", &dir, &e))?;
            crate::pipeline::copy_large(&mut artifact, tmp.as_file_mut())
                .map_err(|e| Error::from_io(e, &format!("cannot write {}", path.display())))?;
            super::check_artifact(&m, &handle.result())?;
            tmp.as_file()
                .sync_all()
                .map_err(|e| Error::io_at("cannot sync", tmp.path(), &e))?;
            let perm = fs::Permissions::from_mode(0o600);
            let _ = fs::set_permissions(tmp.path(), perm);
            let persisted = if force {
                tmp.persist(path)
            } else {
                // Another process may have created the file meanwhile: never replace it.
                tmp.persist_noclobber(path)
            };
            persisted.map_err(|e| Error::io_at("cannot rename into", path, &e.error))?;
        }
    }
    Ok(m)
}
