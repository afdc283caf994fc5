/*!
`wal-push`: one WAL file into the archive, for `archive_command = 'offsitedb wal-push %p'`, and
the `.ready` files after it in parallel (as pgBackRest's asynchronous archiving and wal-g's upload
concurrency do), so that a busy server's archiver does not fall behind by one round trip per
segment.

The archiver calls once per file, oldest first, and waits: exit 0 lets PostgreSQL recycle the
file. A call for X also stores up to `wal_concurrency - 1` other files that
`pg_wal/archive_status/` marks `.ready` (timeline history files first, then oldest first), and
for each one the store confirmed it writes a status entry `pg_wal/offsitedb/<name>` (one line:
size, XXH3-128 digest, source and repository; written to a temporary file, fsynced, renamed, the
folder fsynced). When the archiver then asks for that file, an entry that matches the file's size
and digest as they are *now* answers at once without a request; an entry that does not match is
not trusted (the file is pushed as usual). The entry's digest is XXH3-128, not SHA-256: it only
tells whether the local file changed since it was stored (an accidental match of 128 bits does
not happen; whoever can forge one can write pg_wal and owns the database anyway), and at about
20 GB/s it costs a millisecond per segment where SHA-256 costs ten, on every segment the
archiver asks for. Nothing is marked done that is not stored: entries are
written only after the store confirmed the object, and only PostgreSQL renames `.ready` to
`.done`. An entry whose `.ready` is gone is removed by the next call.

`pg_wal/offsitedb/` is not copied by pg_basebackup (which copies nothing from pg_wal but the
WAL it streams), and PostgreSQL ignores folders in pg_wal it does not know (wal-g keeps its
`walg_data` there the same way).

Storing is `put_new` (create if absent). When the object exists it is read back and
authenticated: the same digest is "already archived" (the archiver retries after a crash);
another digest is refused naming both. An archived file is never overwritten.
*/

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::catalog::{Repository, check_source_name};
use crate::crypto::MasterKey;
use crate::error::{Error, ErrorKind, Result};
use crate::storage::WriteStore;
use crate::wal::name::{DEFAULT_SEGMENT_SIZE, Kind, WalName, check_segment_size};
use crate::wal::object::{self, WalCompression, ZSTD_LEVEL};

/// The status folder, in the folder of the file pushed (pg_wal).
pub const STATUS_DIR: &str = "offsitedb";

/// At most this much WAL is held in memory by one call (the file asked for and those pushed
/// ahead): with 16 MB segments it does not limit `wal_concurrency`, with 1 GB ones it stops
/// pushing ahead.
const AHEAD_BYTES: u64 = 256 << 20;

/// What one call archives, and where.
#[derive(Clone, Debug)]
pub struct PushOptions {
    pub source: String,
    /// Files stored at once: the one asked for and up to `concurrency - 1` ahead.
    pub concurrency: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Stored by this call, as an object of this many bytes.
    Archived { stored: u64 },
    /// The archive already held these exact bytes.
    AlreadyArchived,
    /// An earlier call stored it ahead, and its status entry matches the file.
    ArchivedAhead,
}

#[derive(Debug)]
pub struct PushReport {
    pub name: WalName,
    /// The file's size.
    pub size: u64,
    pub outcome: Outcome,
    /// Other `.ready` files this call stored and recorded in the status folder.
    pub ahead: usize,
    /// Those it could not store (the archiver's own call for each will try again).
    pub ahead_failed: Vec<(WalName, Error)>,
    pub elapsed: Duration,
}

/// Archives the WAL file at `path` (and `.ready` files after it), into the repository on
/// `store`, creating the repository in an empty location. `Ok` only when the file is stored.
pub fn push(
    store: Box<dyn WriteStore>,
    key: MasterKey,
    path: &Path,
    opts: &PushOptions,
) -> Result<PushReport> {
    let started = Instant::now();
    check_source_name(&opts.source)?;
    let name = wal_name_of(path)?;
    let wal_dir = parent_of(path);
    let status = StatusDir::new(&wal_dir, &opts.source, &store.location());
    let content = read_wal(path, &name)?;
    let size = content.len() as u64;
    if status.take(&name, size, quick_digest(&content)) {
        return Ok(PushReport {
            name,
            size,
            outcome: Outcome::ArchivedAhead,
            ahead: 0,
            ahead_failed: Vec::new(),
            elapsed: started.elapsed(),
        });
    }
    let sha = object::digest(&content);
    let mut report = PushReport {
        name: name.clone(),
        size,
        outcome: Outcome::ArchivedAhead,
        ahead: 0,
        ahead_failed: Vec::new(),
        elapsed: Duration::ZERO,
    };
    status.remove_stale();

    let repo = Repository::open_for_writing(store, key)?;
    repo.ensure_created()?;
    let room = (AHEAD_BYTES / size.max(DEFAULT_SEGMENT_SIZE)) as usize;
    let max_ahead = opts
        .concurrency
        .saturating_sub(1)
        .min(room.saturating_sub(1));
    let ahead = ready_files(&wal_dir, &name, &status, max_ahead);
    let (main, others) = std::thread::scope(|s| {
        let handles: Vec<_> = ahead
            .iter()
            .map(|n| {
                let (repo, status, wal_dir) = (&repo, &status, &wal_dir);
                s.spawn(move || push_ahead(repo, &opts.source, wal_dir, n, status))
            })
            .collect();
        let main = store_file(&repo, &opts.source, &name, &content, &sha);
        let others: Vec<Result<bool>> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::internal("a push-ahead thread panicked")))
            })
            .collect();
        (main, others)
    });
    for (n, r) in ahead.into_iter().zip(others) {
        match r {
            Ok(true) => report.ahead += 1,
            Ok(false) => {}
            Err(e) => report.ahead_failed.push((n, e)),
        }
    }
    report.outcome = main?;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// What a status entry compares: whether the local file is still the one stored (see the
/// module's doc for why not SHA-256).
fn quick_digest(content: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(content)
}

/// The WAL name of the file at `path`: its file name, which must be one PostgreSQL archives.
fn wal_name_of(path: &Path) -> Result<WalName> {
    let hint = "archive_command passes the file's path: archive_command = 'offsitedb wal-push %p'";
    let file = path.file_name().and_then(|f| f.to_str()).ok_or_else(|| {
        Error::config(format!("{} names no WAL file", path.display())).with_hint(hint)
    })?;
    WalName::parse(file).map_err(|e| e.with_hint(hint))
}

/// The folder holding `path` (`.` for a bare file name).
fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Reads a WAL file whole, refusing one larger than a WAL file can be and a segment whose size
/// is not a segment size (a truncated copy would replay as the end of the WAL).
fn read_wal(path: &Path, name: &WalName) -> Result<Vec<u8>> {
    let meta = fs::metadata(path).map_err(|e| Error::io_at("cannot read", path, &e))?;
    if !meta.is_file() {
        return Err(Error::config(format!("{} is not a file", path.display())));
    }
    if meta.len() > object::MAX_FILE {
        return Err(Error::config(format!(
            "{} is {} bytes, over the 1 GB a WAL file can be",
            path.display(),
            meta.len()
        )));
    }
    let content = fs::read(path).map_err(|e| Error::io_at("cannot read", path, &e))?;
    if name.kind == Kind::Segment && check_segment_size(content.len() as u64).is_err() {
        return Err(Error::integrity(format!(
            "{} is {} bytes, which is not a WAL segment size (a power of two from 1 MB to 1 GB): \
             it is not a complete segment",
            path.display(),
            content.len()
        )));
    }
    Ok(content)
}

/// Stores one file: `put_new`, and when the object exists, the stored file read back and
/// compared by digest.
pub(crate) fn store_file(
    repo: &Repository<dyn WriteStore>,
    source: &str,
    name: &WalName,
    content: &[u8],
    sha: &[u8; 32],
) -> Result<Outcome> {
    let key = object::key(source, name);
    let sealed = object::encode(
        repo.key(),
        name,
        content,
        sha,
        WalCompression::Zstd(ZSTD_LEVEL),
    )?;
    if repo.store().put_new(&key, &sealed)? {
        return Ok(Outcome::Archived {
            stored: sealed.len() as u64,
        });
    }
    drop(sealed);
    let theirs = archived_header(repo, &key, name)?;
    if theirs.sha256 == *sha && theirs.size == content.len() as u64 {
        return Ok(Outcome::AlreadyArchived);
    }
    Err(Error::integrity(format!(
        "{name} is already archived with different content: the archive holds {} bytes with sha256 {}, \
         this file is {} bytes with sha256 {}; the archived file was kept (it is never overwritten)",
        theirs.size,
        theirs.digest_hex(),
        content.len(),
        crate::units::hex(sha)
    ))
    .with_hint(
        "two servers may be archiving under one source name (give each its own --source), or this \
         server's WAL diverged from the archived one (a data folder restored or reset while the \
         archive went on): archive it under a new source name",
    ))
}

/// The header of the stored object, after reading and authenticating all of it.
fn archived_header(
    repo: &Repository<dyn WriteStore>,
    key: &str,
    name: &WalName,
) -> Result<object::WalHeader> {
    let damaged = |e: Error| {
        let hint = format!(
            "the archived object {key} is damaged; it is never overwritten: after finding out \
             why, delete it, and the next attempt stores this file again"
        );
        Error::integrity(format!(
            "{name} is already in the archive, and the stored object fails its check: {}",
            e.message()
        ))
        .with_hint(hint)
    };
    let r = repo.store().get_limited(key, object::MAX_OBJECT)?;
    object::decode(r, repo.key(), name, &mut std::io::sink()).map_err(|e| match e.kind() {
        ErrorKind::Integrity | ErrorKind::Key => damaged(e),
        _ => e.context(format!("reading back the archived {name}")),
    })
}

/// Stores a `.ready` file other than the one asked for, and records it. `Ok(false)` when the
/// file is gone (archived and recycled meanwhile).
fn push_ahead(
    repo: &Repository<dyn WriteStore>,
    source: &str,
    wal_dir: &Path,
    name: &WalName,
    status: &StatusDir,
) -> Result<bool> {
    let content = match read_wal(&wal_dir.join(name.to_string()), name) {
        Ok(c) => c,
        Err(_) if !wal_dir.join(name.to_string()).exists() => return Ok(false),
        Err(e) => return Err(e),
    };
    let sha = object::digest(&content);
    store_file(repo, source, name, &content, &sha)?;
    status.record(name, content.len() as u64, quick_digest(&content))?;
    Ok(true)
}

/// Up to `max` files other than `asked` that PostgreSQL marked `.ready` and no status entry
/// covers yet: history files first (as the archiver orders them), then oldest first.
fn ready_files(wal_dir: &Path, asked: &WalName, status: &StatusDir, max: usize) -> Vec<WalName> {
    if max == 0 {
        return Vec::new();
    }
    let Ok(entries) = fs::read_dir(wal_dir.join("archive_status")) else {
        return Vec::new();
    };
    let mut out: Vec<WalName> = entries
        .filter_map(|e| {
            let f = e.ok()?.file_name();
            let n = WalName::parse(f.to_str()?.strip_suffix(".ready")?).ok()?;
            (n != *asked && !status.has(&n)).then_some(n)
        })
        .collect();
    out.sort_by_key(|n| (n.kind != Kind::History, n.clone()));
    out.truncate(max);
    out
}

/// `pg_wal/offsitedb/`: one entry per file stored ahead, until the archiver asks for it.
struct StatusDir {
    dir: PathBuf,
    ready: PathBuf,
    /// The source and repository (redacted) the entries are about: an entry written for
    /// another archive is not trusted.
    tag: String,
}

impl StatusDir {
    fn new(wal_dir: &Path, source: &str, location: &str) -> StatusDir {
        StatusDir {
            dir: wal_dir.join(STATUS_DIR),
            ready: wal_dir.join("archive_status"),
            tag: format!("{source} {location}"),
        }
    }

    fn entry(&self, name: &WalName) -> PathBuf {
        self.dir.join(name.to_string())
    }

    fn line(&self, size: u64, digest: u128) -> String {
        format!("{size} xxh3:{digest:032x} {}\n", self.tag)
    }

    fn has(&self, name: &WalName) -> bool {
        self.entry(name).exists()
    }

    /// Whether an entry says that exactly these bytes were stored in this archive. The entry
    /// is removed either way: it is used once, and a wrong one is worthless.
    fn take(&self, name: &WalName, size: u64, digest: u128) -> bool {
        let path = self.entry(name);
        let Ok(text) = fs::read_to_string(&path) else {
            return false;
        };
        let _ = fs::remove_file(&path);
        text == self.line(size, digest)
    }

    /// Records a file the store confirmed: temporary file, fsync, rename, folder fsync, so an
    /// entry exists only complete and only after the object does.
    fn record(&self, name: &WalName, size: u64, digest: u128) -> Result<()> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let at = |what: &str, p: &Path, e: std::io::Error| Error::io_at(what, p, &e);
        match fs::DirBuilder::new().mode(0o700).create(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(at("cannot create", &self.dir, e)),
        }
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let written = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(self.line(size, digest).as_bytes())?;
                f.sync_all()
            });
        if let Err(e) = written.and_then(|_| fs::rename(&tmp, self.entry(name))) {
            let _ = fs::remove_file(&tmp);
            return Err(at("cannot write a status entry in", &self.dir, e));
        }
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| at("cannot sync", &self.dir, e))
    }

    /// Removes entries whose file PostgreSQL no longer marks `.ready` (archived by another
    /// call, or recycled), and temporary files a crash left.
    fn remove_stale(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let f = e.file_name();
            let Some(f) = f.to_str() else { continue };
            let stale = f.starts_with('.') || !self.ready.join(format!("{f}.ready")).exists();
            if stale {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::local::LocalStore;

    const SEG: usize = 1 << 20;

    /// A pg_wal folder with archive_status, and a folder store.
    struct Fixture {
        _tmp: tempfile::TempDir,
        wal: PathBuf,
        repo: PathBuf,
        key: MasterKey,
    }

    impl Fixture {
        fn new() -> Fixture {
            let tmp = tempfile::tempdir().unwrap();
            let wal = tmp.path().join("pg_wal");
            fs::create_dir_all(wal.join("archive_status")).unwrap();
            let repo = tmp.path().join("repo");
            Fixture {
                wal,
                repo,
                key: MasterKey::from_bytes([5; 32]),
                _tmp: tmp,
            }
        }

        fn store(&self) -> Box<dyn WriteStore> {
            Box::new(LocalStore::new(self.repo.clone()))
        }

        /// A segment file with content from `seed`, marked `.ready`.
        fn segment(&self, name: &str, seed: u8) -> PathBuf {
            let p = self.wal.join(name);
            let mut c = vec![0u8; SEG];
            for (i, b) in c.iter_mut().enumerate().take(4096) {
                *b = seed.wrapping_add(i as u8);
            }
            fs::write(&p, c).unwrap();
            fs::write(self.wal.join(format!("archive_status/{name}.ready")), "").unwrap();
            p
        }

        fn push(&self, path: &Path, concurrency: usize) -> Result<PushReport> {
            push(
                self.store(),
                self.key.clone(),
                path,
                &PushOptions {
                    source: "db".into(),
                    concurrency,
                },
            )
        }

        fn stored(&self, name: &str) -> Option<Vec<u8>> {
            let n = WalName::parse(name).unwrap();
            let store = self.store();
            let r = store.get(&object::key("db", &n)).ok()?;
            let mut out = Vec::new();
            object::decode(r, &self.key, &n, &mut out).unwrap();
            Some(out)
        }

        fn entries(&self) -> Vec<String> {
            let mut v: Vec<String> = fs::read_dir(self.wal.join(STATUS_DIR))
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            v.sort();
            v
        }
    }

    #[test]
    fn refuses_what_is_not_a_wal_file() {
        let f = Fixture::new();
        for bad in [
            "RECOVERYXLOG",
            "xlogtemp.123",
            "000000010000000000000001.tmp",
        ] {
            let p = f.wal.join(bad);
            fs::write(&p, b"x").unwrap();
            let e = f.push(&p, 1).unwrap_err();
            assert!(
                e.message().contains("is not a WAL file name"),
                "{}",
                e.message()
            );
            assert!(e.hint().unwrap().contains("%p"));
        }
        // A segment that is not a segment's size (a truncated copy).
        let p = f.wal.join("000000010000000000000001");
        fs::write(&p, vec![0u8; 1000]).unwrap();
        let e = f.push(&p, 1).unwrap_err();
        assert!(
            e.message().contains("not a WAL segment size"),
            "{}",
            e.message()
        );
        assert!(!f.repo.join("wal").exists(), "nothing was stored");
    }

    #[test]
    fn stores_once_accepts_the_same_bytes_and_refuses_others() {
        let f = Fixture::new();
        let p = f.segment("000000010000000000000001", 1);
        let r = f.push(&p, 1).unwrap();
        assert!(matches!(r.outcome, Outcome::Archived { .. }), "{r:?}");
        assert!(
            f.repo.join("offsitedb.repo").exists(),
            "the repository was created"
        );
        assert_eq!(
            f.stored("000000010000000000000001").unwrap(),
            fs::read(&p).unwrap()
        );

        assert_eq!(f.push(&p, 1).unwrap().outcome, Outcome::AlreadyArchived);

        let before = fs::read(f.repo.join("wal/db/00000001/000000010000000000000001")).unwrap();
        let original = fs::read(&p).unwrap();
        f.segment("000000010000000000000001", 2);
        let e = f.push(&p, 1).unwrap_err();
        let (ours, theirs) = (
            crate::units::hex(&object::digest(&fs::read(&p).unwrap())),
            crate::units::hex(&object::digest(&original)),
        );
        assert!(
            e.message().contains(&ours) && e.message().contains(&theirs),
            "{}",
            e.message()
        );
        assert!(e.message().contains("different content"), "{}", e.message());
        let after = fs::read(f.repo.join("wal/db/00000001/000000010000000000000001")).unwrap();
        assert_eq!(before, after, "the archived object is unchanged");
    }

    #[test]
    fn pushes_ready_files_ahead_and_trusts_only_matching_entries() {
        let f = Fixture::new();
        let names: Vec<String> = (1..=6)
            .map(|i| format!("00000001000000000000000{i}"))
            .collect();
        let paths: Vec<PathBuf> = names
            .iter()
            .enumerate()
            .map(|(i, n)| f.segment(n, i as u8))
            .collect();
        fs::write(f.wal.join("00000002.history"), "1\t0/5000000\tno reason\n").unwrap();
        fs::write(f.wal.join("archive_status/00000002.history.ready"), "").unwrap();
        // Not WAL names: never picked up.
        fs::write(f.wal.join("archive_status/junk.ready"), "").unwrap();

        let r = f.push(&paths[0], 4).unwrap();
        assert_eq!(r.ahead, 3, "{r:?}");
        assert!(r.ahead_failed.is_empty(), "{r:?}");
        // History first, then the oldest segments.
        assert_eq!(f.entries(), vec![&names[1], &names[2], "00000002.history"]);
        for n in ["00000002.history", &names[1], &names[2]] {
            assert!(f.stored(n).is_some(), "{n} is stored");
        }
        assert!(f.stored(&names[3]).is_none());

        // PostgreSQL marks the first done; the next call answers from its entry, with no store
        // at all (the repository folder is gone).
        fs::rename(
            f.wal.join(format!("archive_status/{}.ready", names[0])),
            f.wal.join(format!("archive_status/{}.done", names[0])),
        )
        .unwrap();
        fs::rename(&f.repo, f.repo.with_extension("away")).unwrap();
        let r = f.push(&paths[1], 4).unwrap();
        assert_eq!(r.outcome, Outcome::ArchivedAhead);
        assert!(!f.entries().contains(&names[1]), "the entry is used once");
        fs::rename(f.repo.with_extension("away"), &f.repo).unwrap();

        // An entry that does not match the file is not trusted: the file is pushed (and with
        // its object deleted, stored again).
        let entry = f.wal.join(STATUS_DIR).join(&names[2]);
        let text = fs::read_to_string(&entry).unwrap();
        let mut parts: Vec<&str> = text.splitn(3, ' ').collect();
        let zeros = format!("xxh3:{}", "0".repeat(32));
        assert_eq!(parts[1].len(), zeros.len(), "{text}");
        parts[1] = &zeros;
        fs::write(&entry, parts.join(" ")).unwrap();
        fs::remove_file(f.repo.join(format!("wal/db/00000001/{}", names[2]))).unwrap();
        let r = f.push(&paths[2], 1).unwrap();
        assert!(matches!(r.outcome, Outcome::Archived { .. }), "{r:?}");
        assert_eq!(f.stored(&names[2]).unwrap(), fs::read(&paths[2]).unwrap());

        // An entry for a file PostgreSQL no longer marks .ready is stale and removed.
        fs::remove_file(f.wal.join("archive_status/00000002.history.ready")).unwrap();
        f.push(&paths[3], 1).unwrap();
        assert!(
            !f.entries().contains(&"00000002.history".to_string()),
            "{:?}",
            f.entries()
        );
    }

    #[test]
    fn a_damaged_archived_object_is_reported_not_overwritten() {
        let f = Fixture::new();
        let p = f.segment("000000010000000000000001", 1);
        f.push(&p, 1).unwrap();
        let obj = f.repo.join("wal/db/00000001/000000010000000000000001");
        let mut b = fs::read(&obj).unwrap();
        let at = b.len() - 20;
        b[at] ^= 1;
        fs::write(&obj, &b).unwrap();
        let e = f.push(&p, 1).unwrap_err();
        assert!(e.message().contains("fails its check"), "{}", e.message());
        assert_eq!(fs::read(&obj).unwrap(), b);
    }
}
