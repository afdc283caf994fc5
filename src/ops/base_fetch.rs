/*!
`offsitedb backup-fetch`: a base backup extracted into an empty (or new) data folder, ready for
PostgreSQL to start on (stolon's `dataRestoreCommand "offsitedb backup-fetch %d LATEST"`), and
the first step of `restore --pgdata` ([`fetch`]).

```text
download ─► unseal ─► decompress ─► untar ─► DIR (mode 0700)
   └─ size and SHA-256 of the object, checked against the manifest at the end
then: owner, syncfs (everything on disk), pg_verifybackup against the server's backup_manifest
```

A folder that holds anything is refused before a byte is written. Extraction is
[`crate::ops::directory::extract_as`]'s, for a data folder: nothing is written outside DIR, nor
through a symlink, and no symlink is taken under pg_wal or pg_tblspc (where the server,
pg_combinebackup and wal-fetch write); no owner, setuid bit or extended attribute of the archive is
applied. If
anything fails after DIR was created (or while it was empty), what was written is removed again,
so a retry starts clean and no half-copy can be started by mistake.

An incremental base backup (PostgreSQL 17+) is restored with the chain it is based on: the full
backup and each incremental, oldest first, are each extracted (and checked against their
manifests) into a temporary folder beside DIR, on the same file system, then `pg_combinebackup
FULL INCR... -o DIR` writes the data folder and its own `backup_manifest`, which
`pg_verifybackup` checks. From PostgreSQL 18 it hard-links the files it copies unchanged
(`--link`, unless DIR is a mount point): the temporary folders are removed after (also on
failure), so nothing else shares those files. A link of the chain that is missing or damaged fails the fetch, naming it, before
DIR is written (missing) or with DIR removed again (damaged).

Owner: run as root, the files go to the owner of DIR's parent folder when that is not root, else
to the `postgres` user when there is one (PostgreSQL refuses to run as root); run as anyone else,
they are the caller's. `backup_manifest` stays (PostgreSQL ignores it); no `recovery.signal` is
written (`restore --pgdata` writes the recovery settings).
*/

use std::ffi::CString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::catalog::Repository;
use crate::catalog::base::BaseManifest;
use crate::error::{Error, Result};
use crate::pipeline::{Counters, MeasureReader, Progress, decompressor};
use crate::postgres::{PgProgram, binaries};
use crate::process::ChildProcess;
use crate::storage::ReadStore;

/// How to fetch.
#[derive(Clone, Debug, Default)]
pub struct FetchOptions {
    /// Where to look for `pg_verifybackup` besides the usual places.
    pub pg_bin_dirs: Vec<PathBuf>,
    /// Show a progress line on a terminal.
    pub progress: bool,
}

/// What a fetch did.
#[derive(Clone, Debug, Serialize)]
pub struct FetchReport {
    pub backup_id: String,
    pub source: String,
    /// The data folder, as given.
    pub dir: String,
    /// Regular files written, and their bytes.
    pub files: u64,
    pub bytes: u64,
    /// Bytes downloaded (the sealed object).
    pub stored_bytes: u64,
    pub seconds: f64,
    /// Who the files were given to (run as root), e.g. "postgres (uid 999)"; `None`: the caller.
    pub owner: Option<String>,
    pub verify: Verify,
    /// For an incremental: how its chain was combined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub combined: Option<Combined>,
}

/// How an incremental's chain was combined into the data folder.
#[derive(Clone, Debug, Serialize)]
pub struct Combined {
    /// The base backups combined, oldest (the full) first, the fetched one last.
    pub chain: Vec<String>,
    /// "pg_combinebackup 18.1".
    pub program: String,
    /// Whether unchanged files were hard-linked (`--link`) rather than copied.
    pub linked: bool,
}

/// Whether `pg_verifybackup` checked the folder.
#[derive(Clone, Debug, Serialize)]
pub struct Verify {
    /// "pg_verifybackup 18.1" when it ran and passed; `None` when it did not run.
    pub program: Option<String>,
    /// Whether it also parsed the WAL in pg_wal (it needs its own pg_waldump, of the server's
    /// major version).
    pub wal: bool,
    /// Why it did not run, or did not parse the WAL.
    pub note: Option<String>,
}

impl Verify {
    /// One line for people: "verified with pg_verifybackup 18.1", "pg_verifybackup not
    /// installed: not verified", ...
    pub fn summary(&self) -> String {
        match (&self.program, &self.note) {
            (Some(p), None) => format!("verified with {p}"),
            (Some(p), Some(n)) => format!("verified with {p} ({n})"),
            (None, Some(n)) => n.clone(),
            (None, None) => "not verified".into(),
        }
    }
}

/// Extracts base backup `m` into `dir` (missing, or an empty folder), gives it the right owner,
/// makes it durable and verifies it. Notes (owner, verification, metadata not applied) go to
/// `note`. On any error nothing is left in `dir` (a folder this call created is removed).
///
/// This is the whole of `backup-fetch`, and the first step of `restore --pgdata`.
pub fn fetch<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    m: &BaseManifest,
    dir: &Path,
    opts: &FetchOptions,
    note: &mut dyn FnMut(String),
) -> Result<FetchReport> {
    let t = Instant::now();
    // Every link's manifest first: a missing one writes nothing.
    let chain = chain_of(repo, m)?;
    let created = prepare(dir)?;
    let filled = if chain.len() == 1 {
        fill(repo, m, dir, opts, note).map(|f| (f, None))
    } else {
        combine(repo, &chain, dir, opts, note)
    };
    match filled {
        Ok(((files, bytes, stored, owner, verify), combined)) => Ok(FetchReport {
            backup_id: m.backup_id.to_string(),
            source: m.source.name.clone(),
            dir: dir.display().to_string(),
            files,
            bytes,
            stored_bytes: stored,
            seconds: t.elapsed().as_secs_f64(),
            owner,
            verify,
            combined,
        }),
        Err(e) => {
            if let Err(c) = undo(dir, created) {
                note(format!(
                    "cannot remove what was written to {}: {}",
                    dir.display(),
                    c.message()
                ));
            }
            Err(e)
        }
    }
}

type Filled = (u64, u64, u64, Option<String>, Verify);

fn fill<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    m: &BaseManifest,
    dir: &Path,
    opts: &FetchOptions,
    note: &mut dyn FnMut(String),
) -> Result<Filled> {
    let (files, bytes, stored) = extract_one(repo, m, dir, opts, note)?;
    let owner = owner_for(dir, note)?;
    // The folder's own entry is on the same file system, unless it is a mount point (then it
    // was there before).
    settle(dir, owner.as_ref().map(|o| (o.0, o.1)))?;
    let verify = verify(dir, m, &opts.pg_bin_dirs)?;
    Ok((files, bytes, stored, owner.map(|o| o.2), verify))
}

/// Downloads, unseals, decompresses and untars base backup `m` into the empty folder `dir`,
/// checked against its manifest. Returns (files, bytes, stored bytes).
fn extract_one<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    m: &BaseManifest,
    dir: &Path,
    opts: &FetchOptions,
    note: &mut dyn FnMut(String),
) -> Result<(u64, u64, u64)> {
    let what = format!("base backup {}/{}", m.source.name, m.backup_id);
    let counters = Counters::default();
    let measured = MeasureReader::new(repo.open_base_data(m).map_err(|e| e.context(&what))?)
        .with_live_counter(counters.input.clone());
    let stored = measured.handle();
    let mut plain = Counting {
        inner: decompressor(measured, m.compression.algorithm)?,
        n: 0,
    };
    let shown = Progress::start("fetch", &counters, opts.progress);
    let got = super::directory::extract_as(&mut plain, dir, super::directory::Holds::DataFolder);
    drop(shown);
    let got = got.map_err(|e| e.context(&what))?;
    // The tar's end blocks, then whatever follows the compressed data (there should be
    // nothing): read, so the whole object was authenticated.
    io::copy(&mut plain, &mut io::sink())
        .map_err(|e| Error::from_io(e, &format!("cannot read {what}")))?;
    let mut tail = Vec::new();
    plain
        .inner
        .into_inner()
        .read_to_end(&mut tail)
        .map_err(|e| Error::from_io(e, &format!("cannot read the end of {what}")))?;
    if !tail.is_empty() {
        return Err(Error::integrity(format!(
            "{what}: {} unexpected bytes after the end of the compressed data",
            tail.len()
        )));
    }
    let s = stored.result();
    if s.bytes != m.sizes.compressed_bytes
        || s.sha256 != m.data.sha256_compressed
        || plain.n != m.sizes.plain_bytes
    {
        return Err(Error::integrity(format!(
            "{what}: the data does not match its manifest ({} bytes compressed with sha256 {}, {} bytes of tar; expected {}, {} and {})",
            s.bytes,
            s.sha256,
            plain.n,
            m.sizes.compressed_bytes,
            m.data.sha256_compressed,
            m.sizes.plain_bytes
        )));
    }
    if let Some(p) = got.problems.first() {
        return Err(Error::integrity(format!(
            "{what}: {} entr{} of the tar could not be extracted; the first: {p}",
            got.problems.len(),
            if got.problems.len() == 1 { "y" } else { "ies" }
        )));
    }
    for n in got.notes.iter().take(10) {
        note(n.clone());
    }
    if !dir.join("backup_label").is_file() {
        return Err(Error::integrity(format!(
            "{what} has no backup_label: it is not a base backup PostgreSQL can start from"
        )));
    }
    let files = got.files.len() as u64;
    let bytes = got.files.values().map(|(n, _)| n).sum();
    Ok((files, bytes, s.bytes))
}

/// The manifests a restore of `m` combines, oldest (the full) first, `m` last; just `m` for a
/// full backup. A link that is missing or unreadable is named.
fn chain_of<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    m: &BaseManifest,
) -> Result<Vec<BaseManifest>> {
    let Some(inc) = &m.incremental else {
        return Ok(vec![m.clone()]);
    };
    let source = &m.source.name;
    let hint = format!(
        "restore from a full base backup, or an incremental whose chain is whole (offsitedb backup-list --source {source})"
    );
    let mut out: Vec<BaseManifest> = Vec::new();
    for id in &inc.chain {
        let link = repo.base_manifest(source, id).map_err(|e| {
            let missing = e.kind() == crate::error::ErrorKind::NotFound;
            Error::new(
                if missing {
                    crate::error::ErrorKind::NotFound
                } else {
                    crate::error::ErrorKind::Integrity
                },
                format!(
                    "base backup {source}/{id} is {}: incremental base backup {} is based on it ({})",
                    if missing { "missing" } else { "damaged" },
                    m.backup_id,
                    e.message()
                ),
            )
            .with_hint(hint.clone())
        })?;
        // Each link is based on the ones before it, and all are of one database system.
        let expected: Vec<_> = out.iter().map(|l| l.backup_id.clone()).collect();
        let based_on = link.incremental.as_ref().map(|i| i.chain.clone());
        if based_on.unwrap_or_default() != expected
            || link.server.system_identifier != m.server.system_identifier
        {
            return Err(Error::integrity(format!(
                "base backup {source}/{id} does not belong to the chain of incremental base backup {}: it is based on other backups, or of another database system",
                m.backup_id
            ))
            .with_hint(hint));
        }
        out.push(link);
    }
    out.push(m.clone());
    Ok(out)
}

/// Folders removed (whatever they hold) when dropped.
struct Temporaries(Vec<PathBuf>);

impl Drop for Temporaries {
    fn drop(&mut self) {
        for d in &self.0 {
            super::directory::make_removable(d);
            let _ = fs::remove_dir_all(d);
        }
    }
}

/// Extracts each base backup of `chain` into a temporary folder beside `dir`, combines them into
/// `dir` with pg_combinebackup, and verifies the result.
fn combine<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    chain: &[BaseManifest],
    dir: &Path,
    opts: &FetchOptions,
    note: &mut dyn FnMut(String),
) -> Result<(Filled, Option<Combined>)> {
    let last = chain.last().expect("a chain has its incremental");
    let major = last.server.major;
    let program = binaries::pick(
        "pg_combinebackup",
        major,
        &binaries::search_dirs(&opts.pg_bin_dirs),
        &format!(
            "base backup {}/{} is incremental, of PostgreSQL {major}: its chain is combined with pg_combinebackup",
            last.source.name, last.backup_id
        ),
    )?;
    let abs = absolute(dir)?;
    let parent = abs.parent().unwrap_or(Path::new("/")).to_path_buf();
    let name = abs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pgdata".into());
    let mut temps = Temporaries(Vec::new());
    let mut stored = 0;
    for m in chain {
        let t = tempfile::Builder::new()
            .prefix(&format!(".{name}.offsitedb-{}-", m.backup_id))
            .tempdir_in(&parent)
            .map_err(|e| Error::io_at("cannot create a temporary folder in", &parent, &e))?
            .keep();
        temps.0.push(t.clone());
        let (_, _, s) = extract_one(repo, m, &t, opts, note)?;
        stored += s;
    }
    // pg_combinebackup 18 hard-links what it copies unchanged: the temporaries are removed
    // after, so the data folder is the files' only name left. Not when DIR is a mount point
    // (the temporaries are then on another file system).
    let dev = |p: &Path| fs::metadata(p).map(|m| m.dev()).ok();
    let linked = program.major >= 18 && dev(&abs).is_some() && dev(&abs) == dev(&parent);
    let mut cmd = crate::process::command(&program.path);
    cmd.args(&temps.0)
        .arg("--output")
        .arg(&abs)
        .arg("--no-sync");
    if linked {
        cmd.arg("--link");
    }
    let mut child = ChildProcess::spawn(cmd, "pg_combinebackup", false)?;
    child.drain_stdout();
    let exit = child.wait_exit()?;
    if !exit.status.success() {
        let reason = exit.reason();
        return Err(Error::process(format!(
            "{} could not combine incremental base backup {}/{} with its chain: {}",
            format_args!("pg_combinebackup {}", program.version),
            last.source.name,
            last.backup_id,
            reason
                .strip_prefix("pg_combinebackup: error: ")
                .unwrap_or(&reason)
        ))
        .with_hint(format!(
            "pg_combinebackup must be of PostgreSQL {major}: install it, or list its directory in OFFSITEDB_PG_BIN_DIRS"
        )));
    }
    drop(temps);
    let owner = owner_for(dir, note)?;
    settle(dir, owner.as_ref().map(|o| (o.0, o.1)))?;
    let verify = verify(dir, last, &opts.pg_bin_dirs)?;
    let (mut files, mut bytes) = (0, 0);
    walk(dir, &mut |_, meta| {
        if meta.is_file() {
            files += 1;
            bytes += meta.len();
        }
        Ok(())
    })?;
    Ok((
        (files, bytes, stored, owner.map(|o| o.2), verify),
        Some(Combined {
            chain: chain.iter().map(|m| m.backup_id.to_string()).collect(),
            program: format!("pg_combinebackup {}", program.version),
            linked,
        }),
    ))
}

/// Counts what is read.
struct Counting<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// Whether the fetch made the folder, or found it empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Created {
    New,
    WasEmpty,
}

/// Makes `dir` an empty folder of mode 0700, or refuses: nothing is written into a folder that
/// holds anything.
fn prepare(dir: &Path) -> Result<Created> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {
            let mut rd = fs::read_dir(dir).map_err(|e| Error::io_at("cannot read", dir, &e))?;
            if rd.next().is_some() {
                return Err(Error::config(format!(
                    "{} is not empty: a base backup is fetched into an empty or new folder",
                    dir.display()
                ))
                .with_hint("name a new folder (it is created), or empty this one first; nothing was written"));
            }
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::io_at("cannot set the mode of", dir, &e))?;
            Ok(Created::WasEmpty)
        }
        Ok(_) => Err(Error::config(format!(
            "{} exists and is not a folder",
            dir.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new().mode(0o700).create(dir).map_err(|e| {
                let err = Error::io_at("cannot create", dir, &e);
                if e.kind() == io::ErrorKind::NotFound {
                    err.with_hint("create its parent folder first")
                } else {
                    err
                }
            })?;
            // The umask may have taken bits away, never added: 0700 exactly.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::io_at("cannot set the mode of", dir, &e))?;
            Ok(Created::New)
        }
        Err(e) => Err(Error::io_at("cannot read", dir, &e)),
    }
}

/// Removes what a failed fetch wrote: the folder it created, or the content of the empty folder
/// it was given.
fn undo(dir: &Path, created: Created) -> Result<()> {
    super::directory::make_removable(dir);
    match created {
        Created::New => {
            fs::remove_dir_all(dir).map_err(|e| Error::io_at("cannot remove", dir, &e))?;
        }
        Created::WasEmpty => {
            let rd = fs::read_dir(dir).map_err(|e| Error::io_at("cannot read", dir, &e))?;
            for e in rd.flatten() {
                let p = e.path();
                let r = if e.file_type().is_ok_and(|t| t.is_dir()) {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
                r.map_err(|e| Error::io_at("cannot remove", &p, &e))?;
            }
        }
    }
    Ok(())
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).map_err(|e| Error::io_at("cannot resolve", p, &e))
}

/// Who gets the files when we are root: the owner of the parent folder if that is not root,
/// else `postgres`. `None`: they stay the caller's.
fn owner_for(dir: &Path, note: &mut dyn FnMut(String)) -> Result<Option<(u32, u32, String)>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let abs = absolute(dir)?;
    let parent = abs.parent().unwrap_or(Path::new("/"));
    let meta = fs::metadata(parent).map_err(|e| Error::io_at("cannot read", parent, &e))?;
    let (uid, gid, why) = if meta.uid() != 0 {
        let gid = user_by_uid(meta.uid()).map_or(meta.gid(), |u| u.1);
        (
            meta.uid(),
            gid,
            format!("the owner of {}", parent.display()),
        )
    } else if let Some((uid, gid)) = user_by_name("postgres") {
        (uid, gid, format!("{} belongs to root", parent.display()))
    } else {
        note(format!(
            "the files belong to root: {} belongs to root and there is no postgres user; give the folder to the server's user before starting PostgreSQL (it refuses to run as root)",
            parent.display()
        ));
        return Ok(None);
    };
    let name = user_by_uid(uid).map_or_else(|| uid.to_string(), |u| u.0);
    let owner = format!("{name} (uid {uid})");
    note(format!("the files belong to {owner}: {why}"));
    Ok(Some((uid, gid, owner)))
}

/// (name, primary group) of a user id.
fn user_by_uid(uid: u32) -> Option<(String, u32)> {
    // SAFETY: getpwuid returns null or a pointer to a valid passwd struct, read at once.
    unsafe {
        let pw = libc::getpwuid(uid);
        if pw.is_null() {
            return None;
        }
        let name = std::ffi::CStr::from_ptr((*pw).pw_name)
            .to_string_lossy()
            .into_owned();
        Some((name, (*pw).pw_gid))
    }
}

/// (uid, primary group) of a user name.
fn user_by_name(name: &str) -> Option<(u32, u32)> {
    let c = CString::new(name).ok()?;
    // SAFETY: getpwnam returns null or a pointer to a valid passwd struct, read at once.
    unsafe {
        let pw = libc::getpwnam(c.as_ptr());
        if pw.is_null() {
            None
        } else {
            Some(((*pw).pw_uid, (*pw).pw_gid))
        }
    }
}

/// Gives everything under `root` (and it) to `owner`, then makes it durable with one
/// `syncfs(2)` of its file system. An fsync per file (what initdb and pg_basebackup do by
/// default) commits the file system's journal once per file: seconds for an empty cluster's
/// 1,300 files here, minutes for a large one, against one commit for all of them. (syncfs
/// reports write-back errors since Linux 5.8; PostgreSQL offers the same choice as
/// `--sync-method=syncfs`.)
fn settle(root: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    if let Some((uid, gid)) = owner {
        walk(root, &mut |path, _| {
            std::os::unix::fs::lchown(path, Some(uid), Some(gid))
                .map_err(|e| Error::io_at("cannot change the owner of", path, &e))
        })?;
    }
    use std::os::fd::AsRawFd;
    let f = fs::File::open(root).map_err(|e| Error::io_at("cannot open", root, &e))?;
    // SAFETY: syncfs on a descriptor we own.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(Error::io_at(
            "cannot flush to disk",
            root,
            &io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Calls `f` on everything under `path`, children before their folder.
fn walk(path: &Path, f: &mut dyn FnMut(&Path, &fs::Metadata) -> Result<()>) -> Result<()> {
    let meta = fs::symlink_metadata(path).map_err(|e| Error::io_at("cannot read", path, &e))?;
    if meta.is_dir() {
        let rd = fs::read_dir(path).map_err(|e| Error::io_at("cannot read", path, &e))?;
        for e in rd {
            let e = e.map_err(|e| Error::io_at("cannot read", path, &e))?;
            walk(&e.path(), f)?;
        }
    }
    f(path, &meta)
}

/// Runs `pg_verifybackup` on `dir` when the server's manifest is there and the program is
/// installed: the newest major is not needed, one at least as new as the server is (a 13 reads
/// manifests of 13 to 17; 18 writes a newer one). It parses the WAL too when it is of the
/// server's own major with its pg_waldump beside it (pg_waldump reads only its own major's WAL).
fn verify(dir: &Path, m: &BaseManifest, pg_bin_dirs: &[PathBuf]) -> Result<Verify> {
    let not = |note: String| Verify {
        program: None,
        wal: false,
        note: Some(note),
    };
    if !dir.join("backup_manifest").is_file() {
        return Ok(not(format!(
            "no backup_manifest (PostgreSQL {} writes none): not verified with pg_verifybackup",
            m.server.major
        )));
    }
    let all = binaries::find_all("pg_verifybackup", &binaries::search_dirs(pg_bin_dirs));
    let can_parse =
        |p: &PgProgram| p.major == m.server.major && p.path.with_file_name("pg_waldump").exists();
    let usable = || all.iter().filter(|p| p.major >= m.server.major);
    let Some(program) = usable()
        .find(|p| can_parse(p))
        .or_else(|| usable().min_by_key(|p| p.major))
    else {
        return Ok(not(format!(
            "pg_verifybackup not installed: not verified (it needs pg_verifybackup of PostgreSQL {} or newer)",
            m.server.major
        )));
    };
    let wal = can_parse(program);
    let mut cmd = crate::process::command(&program.path);
    if !wal {
        cmd.arg("--no-parse-wal");
    }
    cmd.arg("--quiet").arg(dir);
    let mut child = ChildProcess::spawn(cmd, "pg_verifybackup", false)?;
    child.drain_stdout();
    let exit = child.wait_exit()?;
    let name = format!("pg_verifybackup {}", program.version);
    if !exit.status.success() {
        let first = exit
            .errors
            .first()
            .cloned()
            .unwrap_or_else(|| exit.reason());
        let first = first
            .strip_prefix("pg_verifybackup: error: ")
            .unwrap_or(&first);
        let more = exit
            .errors
            .iter()
            .filter(|l| l.contains("error:"))
            .count()
            .saturating_sub(1);
        return Err(Error::integrity(format!(
            "{name} found that {} does not match the server's backup_manifest: {first}{}",
            dir.display(),
            if more > 0 {
                format!(" (and {more} more)")
            } else {
                String::new()
            }
        ))
        .with_hint("the copy is not usable and was removed; fetch another base backup"));
    }
    Ok(Verify {
        program: Some(name),
        wal,
        note: (!wal).then(|| {
            if program.major == m.server.major {
                "WAL not parsed: no pg_waldump beside it".to_string()
            } else {
                format!(
                    "WAL not parsed: it reads only PostgreSQL {}'s WAL, the backup is of {}",
                    program.major, m.server.major
                )
            }
        }),
    })
}

/// The source a base backup command means when none was named (stolon's `backup-fetch %d
/// LATEST` names none): the one configured source, else the one source with base backups in
/// the repository.
pub fn default_source<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    configured: &[String],
) -> Result<String> {
    if let [one] = configured {
        return Ok(one.clone());
    }
    let mut found: Vec<String> = repo
        .base_entries(None)?
        .into_iter()
        .map(|e| e.source)
        .collect();
    found.sort();
    found.dedup();
    match found.as_slice() {
        [one] if configured.is_empty() => Ok(one.clone()),
        _ => {
            let names = if configured.is_empty() {
                found
            } else {
                configured.to_vec()
            };
            Err(Error::config(if names.is_empty() {
                format!("no base backups at {}", repo.location())
            } else {
                format!("which source? base backups can be of {}", names.join(", "))
            })
            .with_hint("name one: --source NAME"))
        }
    }
}
