/*!
The spool: a snapshot's archive as a file in a work folder, for `pg_restore --jobs N`, which runs
in parallel only from a file it can seek in. Both the spooled drill and `restore --jobs` use it.

The snapshot is downloaded, authenticated and decompressed into a temporary file, and the dump
inspector reads it on the way. pg_dump wrote to a pipe, so its table of contents says "position
not set" for every data block; the inspector saw where each block starts, and those offsets are
written in place ([`crate::dump::rewrite_offsets`]), so the file is what pg_dump writes to a file
and each pg_restore worker seeks straight to its tables instead of reading through the archive.
An archive the inspector cannot follow is spooled as it is (pg_restore then reads it
sequentially).

The free space is checked up front from the manifest's sizes ([`check_space`]), with one message
for every command; the file is removed when the [`Spool`] is dropped, also on any failure.
*/

use std::io::{BufWriter, Read, Write};
use std::path::Path;

use crate::catalog::{Manifest, Repository};
use crate::dump::{self, DumpSummary};
use crate::error::{Error, Result};
use crate::pipeline::Counters;
use crate::storage::ReadStore;

/// Disk kept free beside a spool when nothing else is named (the file system's own needs).
const MARGIN: u64 = 64 << 20;

/// A snapshot's archive in a temporary file, removed when this is dropped.
pub struct Spool {
    path: tempfile::TempPath,
    inspected: std::result::Result<DumpSummary, String>,
}

impl Spool {
    /// Downloads, authenticates and decompresses the snapshot into a new file in `dir`,
    /// inspecting the archive on the way and filling in its data offsets. Fails on damage
    /// (nothing is restored from a snapshot that does not authenticate), on a write error (a
    /// full disk, named as such) and on a signal; the file is removed then.
    pub fn write<S: ReadStore + ?Sized>(
        repo: &Repository<S>,
        m: &Manifest,
        dir: &Path,
        counters: &Counters,
    ) -> Result<Spool> {
        let file = tempfile::Builder::new()
            .prefix("offsitedb-spool-")
            .suffix(".dump")
            .tempfile_in(dir)
            .map_err(|e| Error::io_at("cannot create a temporary file in", dir, &e))?;
        // Read and write: the offsets rewrite checks what it overwrites.
        let (file, path) = file.into_parts();
        let cannot_write = |e: std::io::Error| {
            Error::from_io(
                e,
                &format!("cannot write the spool file {}", path.display()),
            )
        };
        let (mut dump_reader, handle) = super::open_dump(repo, m, Some(counters.input.clone()))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let inspected = copy_inspected(&mut dump_reader, &mut out).map_err(|e| match e {
            Copy::Read(e) => Error::from_io(e, "cannot read the snapshot"),
            Copy::Write(e) => cannot_write(e),
        })?;
        super::finish_dump(dump_reader, &handle, m)?;
        let mut file = out.into_inner().map_err(|e| cannot_write(e.into_error()))?;
        if let Ok(summary) = &inspected {
            dump::rewrite_offsets(&mut file, summary).map_err(cannot_write)?;
        }
        // No fsync: the spool lives as long as the restore, and a crash throws it away anyway.
        Ok(Spool { path, inspected })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the inspector found (the offsets are filled in), or why it could not follow the
    /// archive (they are not).
    pub fn inspected(&self) -> std::result::Result<&DumpSummary, &str> {
        self.inspected.as_ref().map_err(String::as_str)
    }
}

/// Why copying the archive into the spool stopped.
enum Copy {
    Read(std::io::Error),
    Write(std::io::Error),
}

/// Copies `from` into `out` through the inspector, and whatever the inspector left (all of it,
/// when it gave up early). Stops at a signal (as an `Interrupted` error) or a write error.
fn copy_inspected(
    from: &mut impl Read,
    out: &mut impl Write,
) -> std::result::Result<std::result::Result<DumpSummary, String>, Copy> {
    let write_err = std::cell::Cell::new(None::<std::io::Error>);
    let mut tee = Tee {
        inner: from,
        out,
        write_err: &write_err,
    };
    let inspected = dump::inspect(&mut tee);
    // A read error ends the copy at once (reading on would only hide it behind the reader's
    // "failed earlier"); an archive the inspector cannot follow is copied on to its end.
    let rest = match &inspected {
        Err(dump::DumpError::Io(_)) => Ok(0),
        _ => std::io::copy(&mut tee, &mut std::io::sink()),
    };
    // A write failure ends the reading: report it, not the read error it caused.
    if let Some(e) = write_err.take() {
        return Err(Copy::Write(e));
    }
    rest.map_err(Copy::Read)?;
    match inspected {
        Ok(summary) => Ok(Ok(summary)),
        Err(dump::DumpError::Io(e)) => Err(Copy::Read(e)),
        Err(e) => Ok(Err(e.to_string())),
    }
}

/// Copies what is read through it into `out`. A write failure ends the reading (as an error)
/// and is kept in `write_err`, so a full disk is reported as such.
struct Tee<'a, R: Read, W: Write> {
    inner: &'a mut R,
    out: &'a mut W,
    write_err: &'a std::cell::Cell<Option<std::io::Error>>,
}

impl<R: Read, W: Write> Read for Tee<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        crate::interrupt::check().map_err(Error::into_io)?;
        let n = self.inner.read(buf)?;
        if let Err(e) = self.out.write_all(&buf[..n]) {
            let msg = e.to_string();
            self.write_err.set(Some(e));
            return Err(std::io::Error::other(msg));
        }
        Ok(n)
    }
}

/// Fails before anything is downloaded when `dir` lacks the disk `operation` ("a drill", "a
/// restore") needs there: the spooled copy (when `spool`) and what `beside` names (bytes, and
/// what they are for), or else a small margin. `hint` names the command's own way out.
pub fn check_space(
    dir: &Path,
    m: &Manifest,
    operation: &str,
    spool: bool,
    beside: Option<(u64, &str)>,
    hint: &str,
) -> Result<()> {
    let plain = m.sizes.plain_bytes;
    let spool_bytes = if spool { plain } else { 0 };
    let need = spool_bytes + beside.map_or(MARGIN, |(bytes, _)| bytes);
    let what = match (spool, beside) {
        (true, Some((_, what))) => format!("its spooled copy, {what}"),
        (false, Some((_, what))) => what.to_string(),
        _ => "its spooled copy".to_string(),
    };
    if let Some(free) = free_space(dir)
        && free < need
    {
        return Err(Error::io(format!(
            "not enough disk in {} for {operation} of {}/{}: it needs about {} (for a {} archive: {what}), and {} is free",
            dir.display(),
            m.source.name,
            m.snapshot_id,
            crate::units::bytes(need),
            crate::units::bytes(plain),
            crate::units::bytes(free)
        ))
        .with_hint(hint));
    }
    Ok(())
}

/// Fails, naming the need and what is free, when `dir` has less than `need` bytes for us.
pub(crate) fn ensure_space(dir: &Path, need: u64, purpose: &str, hint: &str) -> Result<()> {
    match free_space(dir) {
        Some(free) if free < need => Err(Error::io(format!(
            "not enough space in {} {purpose}: needs {}, has {}",
            dir.display(),
            crate::units::bytes(need),
            crate::units::bytes(free)
        ))
        .with_hint(hint)),
        _ => Ok(()),
    }
}

/// Bytes available to us on the file system holding `dir`.
pub fn free_space(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated path and st a properly sized out-parameter.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}
