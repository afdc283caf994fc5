/*!
`wal-fetch`: one WAL file out of the archive, for `restore_command = 'offsitedb wal-fetch %f %p'`,
with the next segments fetched ahead so that replay does not wait one round trip per segment.

The file is decoded (authenticated, its name, size and digest checked against the header inside
the seal) into a temporary file next to the destination, fsynced, and renamed: PostgreSQL never
sees a partial or unverified file.

"Not in the archive" is an answer ([`Fetched::NotInArchive`]: recovery ends there, or moves to
another timeline); everything else is an error, which the command turns into an exit code that
stops recovery. A missing object is only taken for "not in the archive" once the repository
opened with the key given and holds WAL of this source: a wrong repository URL, prefix, key or
source name would otherwise look like the end of the WAL, and the server would promote a
database that is missing data. Nor is a missing segment with WAL after it (a later file of its
timeline, or a timeline that branched off after it): that is a gap, an error naming it.

Prefetch: when the segment asked for is fetched from the store, the next `wal_concurrency`
segments of its timeline are fetched in parallel threads in the same call, each kept as the
sealed object's bytes in `offsitedb-prefetch/` next to the destination (pg_wal). A later call
for one of them decodes it from there, which authenticates it exactly as the store's copy, and
deletes it. Prefetched files older than the segment asked for are removed, and the folder never
holds more than `wal_concurrency` of them.
*/

use std::fs;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::catalog::{Repository, check_source_name};
use crate::crypto::MasterKey;
use crate::error::{Error, ErrorKind, Result};
use crate::ops::wal_show;
use crate::storage::ReadStore;
use crate::wal::name::{DEFAULT_SEGMENT_SIZE, Kind, WalName, check_segment_size};
use crate::wal::object::{self, WalHeader};
use crate::wal::{self, Archived};

/// The prefetch folder, in the folder of the destination (pg_wal).
pub const PREFETCH_DIR: &str = "offsitedb-prefetch";

#[derive(Clone, Debug)]
pub struct FetchOptions {
    pub source: String,
    /// Segments fetched ahead.
    pub concurrency: usize,
}

#[derive(Debug)]
pub enum Fetched {
    Written(FetchReport),
    /// The archive (which exists, opens with this key, and holds WAL of this source) has no
    /// such file.
    NotInArchive,
}

#[derive(Debug)]
pub struct FetchReport {
    pub name: WalName,
    pub size: u64,
    /// Decoded from the prefetch folder (no request).
    pub from_prefetch: bool,
    /// Segments this call fetched ahead.
    pub prefetched: usize,
    /// Served from the longest streamed partial of the segment (the complete segment is not
    /// archived yet): how many bytes of it hold WAL.
    pub streamed_end: Option<u32>,
    pub elapsed: Duration,
}

/// Fetches the WAL file `file` of the source into `dest`.
pub fn fetch(
    store: Box<dyn ReadStore>,
    key: MasterKey,
    file: &str,
    dest: &Path,
    opts: &FetchOptions,
) -> Result<Fetched> {
    let started = Instant::now();
    check_source_name(&opts.source)?;
    let name = WalName::parse(file).map_err(|e| {
        e.with_hint("restore_command = 'offsitedb wal-fetch %f %p': the file name, then the path")
    })?;
    let dest_dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let pre = Prefetch {
        dir: dest_dir.join(PREFETCH_DIR),
    };
    // Its files are listed, removed and written: through a symlink (which a crafted base backup
    // or anyone who can write pg_wal could leave) that would be another folder's files.
    if fs::symlink_metadata(&pre.dir).is_ok_and(|m| !m.is_dir()) {
        return Err(Error::io(format!(
            "{} is not a folder (a symlink, or something else): wal-fetch keeps the segments it fetches ahead there, and touches nothing through it",
            pre.dir.display()
        ))
        .with_hint("remove it (wal-fetch creates the folder again)"));
    }
    if name.is_segment() {
        pre.remove_older(&name);
    }
    let mut report = FetchReport {
        name: name.clone(),
        size: 0,
        from_prefetch: false,
        prefetched: 0,
        streamed_end: None,
        elapsed: Duration::ZERO,
    };

    if let Some((file, path)) = pre.take(&name) {
        let what = format!("the prefetched copy {}", path.display());
        let (header, r) =
            object::read_header(BufReader::new(file), &key, &name).map_err(|e| e.context(&what))?;
        let h = write_dest(dest, &dest_dir, |out| {
            object::decode_rest(header, r, &name, out)
        })
        .map_err(|e| e.context(&what))?;
        report.size = h.size;
        report.from_prefetch = true;
        report.elapsed = started.elapsed();
        return Ok(Fetched::Written(report));
    }

    let obj_key = object::key(&opts.source, &name);
    let reader = match store.get_limited(&obj_key, object::MAX_OBJECT) {
        Ok(r) => r,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            if name.is_segment()
                && let Some(streamed) = newest_streamed(&*store, &opts.source, &name)?
            {
                let r =
                    store.get_limited(&object::key(&opts.source, &streamed), object::MAX_OBJECT)?;
                let h = write_dest(dest, &dest_dir, |out| {
                    object::decode(r, &key, &streamed, out)
                })?;
                pre.clear();
                report.size = h.size;
                report.streamed_end = match streamed.kind {
                    Kind::Streamed { end } => Some(end),
                    _ => None,
                };
                report.elapsed = started.elapsed();
                return Ok(Fetched::Written(report));
            }
            let answer = not_in_archive(store, key, &opts.source, &name)?;
            // Usually the end of recovery: nothing prefetched is left behind in pg_wal (a
            // timeline switch that still needs some is one more round of fetching).
            pre.clear();
            return Ok(answer);
        }
        Err(e) => return Err(e),
    };
    let (header, r) = object::read_header(reader, &key, &name)?;
    // The header gives the segment size, which says what the next segments are called.
    let ahead = match check_segment_size(header.size) {
        Ok(seg) if name.is_segment() => pre.plan(&name, seg, opts.concurrency),
        _ => Vec::new(),
    };
    let (written, fetched) = std::thread::scope(|s| {
        let handles: Vec<_> = ahead
            .iter()
            .map(|n| {
                let (store, pre, source) = (&*store, &pre, opts.source.as_str());
                s.spawn(move || pre.fetch(store, source, n))
            })
            .collect();
        let written = write_dest(dest, &dest_dir, |out| {
            object::decode_rest(header, r, &name, out)
        });
        let fetched = handles
            .into_iter()
            .map(|h| matches!(h.join(), Ok(Ok(true))))
            .filter(|&ok| ok)
            .count();
        (written, fetched)
    });
    report.size = written?.size;
    report.prefetched = fetched;
    report.elapsed = started.elapsed();
    Ok(Fetched::Written(report))
}

/// The longest streamed partial of segment `name` (`wal-stream` uploads one every few seconds
/// while the segment is written): what the archive holds of a segment that is not complete
/// yet. Served as the segment, its zeros after the last record end recovery there, as the end
/// of the WAL.
pub fn newest_streamed(
    store: &dyn ReadStore,
    source: &str,
    name: &WalName,
) -> Result<Option<WalName>> {
    let prefix = format!("{}.", object::key(source, name));
    Ok(store
        .list(&prefix)?
        .into_iter()
        .filter_map(|o| WalName::parse(o.key.rsplit('/').next()?).ok())
        .filter(|n| matches!(n.kind, Kind::Streamed { .. }) && n.plain() == *name)
        .max_by_key(|n| match n.kind {
            Kind::Streamed { end } => end,
            _ => 0,
        }))
}

/// A missing object means "not in the archive" only in a repository that opens with this key
/// and holds WAL of this source, and, for a segment, only at the end of the WAL: a segment
/// missing before others is a gap (lost, or withheld by the store), and answering "not in the
/// archive" would make the server promote there and silently drop everything after it.
fn not_in_archive(
    store: Box<dyn ReadStore>,
    key: MasterKey,
    source: &str,
    name: &WalName,
) -> Result<Fetched> {
    let repo = Repository::open(store, key)?;
    let no_wal = || {
        Error::not_found(format!(
            "no WAL of source {source:?} is archived in {}",
            repo.location()
        ))
        .with_hint(
            "check the source name (--source NAME): it must be the one the server archived under",
        )
    };
    if !name.is_segment() {
        if repo.store().any(&object::source_prefix(source))?.is_none() {
            return Err(no_wal());
        }
        return Ok(Fetched::NotInArchive);
    }
    let archived = wal::list(repo.store(), source)?;
    if archived.is_empty() {
        return Err(no_wal());
    }
    if let Some(why) = gap_evidence(&repo, name, &archived)? {
        return Err(Error::integrity(format!(
            "WAL segment {name} of source {source:?} is missing from the archive, but {why}: \
             a gap in the WAL, not its end"
        ))
        .with_hint(format!(
            "recovery stops here (exit {}) rather than promoting without the WAL after {name}; \
             put the segment back (`offsitedb wal-verify` lists every gap), or restore to a \
             point before it (--target-time, --target-lsn)",
            crate::exit::wal::FATAL
        )));
    }
    Ok(Fetched::NotInArchive)
}

/// Why the missing segment `name` is a gap and not the end of the WAL, when it is: a later file
/// on its timeline, or a later timeline that branched off its timeline after this segment (so
/// the WAL went on past it). Names compare by their number's hex digits, whatever the segment
/// size; a switch point needs the segment size, read from a segment's header.
fn gap_evidence<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    name: &WalName,
    archived: &[Archived],
) -> Result<Option<String>> {
    let at = number_hex(name);
    if let Some(a) = archived.iter().find(|a| {
        a.name.timeline == name.timeline && a.name.kind != Kind::History && number_hex(&a.name) > at
    }) {
        return Ok(Some(format!("{} is archived", a.name)));
    }
    let mut segment_size = None;
    for h in archived
        .iter()
        .filter(|a| a.name.kind == Kind::History && a.name.timeline > name.timeline)
    {
        let history = wal_show::read_history(repo, h)?;
        let Some(switch) = history.iter().find(|s| s.parent == name.timeline) else {
            continue;
        };
        let size = match segment_size {
            Some(s) => s,
            None => *segment_size.insert(archive_segment_size(repo, name, archived)?),
        };
        if switch.switch_lsn.segment(size) > name.segment_number(size) {
            return Ok(Some(format!(
                "timeline {} branched off timeline {} after it, at {}",
                h.name.timeline, name.timeline, switch.switch_lsn
            )));
        }
    }
    Ok(None)
}

/// The archive's segment size, from the header of a segment of `name`'s timeline before it (or
/// any segment); PostgreSQL's default when none is archived.
fn archive_segment_size<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    name: &WalName,
    archived: &[Archived],
) -> Result<u64> {
    let pick = archived
        .iter()
        .rfind(|a| a.name.is_segment() && a.name.timeline == name.timeline && a.name < *name)
        .or_else(|| archived.iter().find(|a| a.name.is_segment()));
    match pick {
        Some(a) => check_segment_size(wal_show::read_header(repo, a)?.size),
        None => Ok(DEFAULT_SEGMENT_SIZE),
    }
}

/// Decodes into a temporary file next to `dest`, then fsync and rename: `dest` appears only
/// complete and verified.
fn write_dest(
    dest: &Path,
    dest_dir: &Path,
    decode: impl FnOnce(&mut dyn Write) -> Result<WalHeader>,
) -> Result<WalHeader> {
    use std::os::unix::fs::OpenOptionsExt;
    let leaf = dest
        .file_name()
        .ok_or_else(|| Error::config(format!("{} names no file", dest.display())))?;
    let tmp = dest_dir.join(format!(".{}.offsitedb-tmp", leaf.to_string_lossy()));
    // A new file: whatever a crash (or anyone) left under that name is replaced, never written
    // through (a symlink there would send the WAL elsewhere).
    let _ = fs::remove_file(&tmp);
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::io_at("cannot create", &tmp, &e))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let done = decode(&mut out).and_then(|h| {
        let file = out
            .into_inner()
            .map_err(|e| Error::io_at("cannot write", &tmp, e.error()))?;
        file.sync_all()
            .map_err(|e| Error::io_at("cannot write", &tmp, &e))?;
        fs::rename(&tmp, dest).map_err(|e| Error::io_at("cannot create", dest, &e))?;
        Ok(h)
    });
    if done.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    done
}

/// `pg_wal/offsitedb-prefetch/`: sealed objects fetched ahead, by file name.
struct Prefetch {
    dir: PathBuf,
}

/// The 16 hex digits of a segment's number: the same order as the numbers, whatever the
/// segment size.
fn number_hex(n: &WalName) -> String {
    n.to_string()[8..24].to_string()
}

impl Prefetch {
    /// The prefetched copy of `name`, opened and already unlinked (it is used once, good or
    /// bad: a damaged copy is fetched again from the store when recovery is restarted).
    fn take(&self, name: &WalName) -> Option<(fs::File, PathBuf)> {
        let path = self.dir.join(name.to_string());
        let file = fs::File::open(&path).ok()?;
        let _ = fs::remove_file(&path);
        Some((file, path))
    }

    /// What is in the folder: prefetched names, and anything else.
    fn names(&self) -> Vec<(PathBuf, Option<WalName>)> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|e| {
                let n = e
                    .file_name()
                    .to_str()
                    .and_then(|f| WalName::parse(f).ok())
                    .filter(WalName::is_segment);
                (e.path(), n)
            })
            .collect()
    }

    /// Removes the segments before `asked` (recovery is past them), on every timeline, and
    /// anything that is not a prefetched segment (temporary files a crash left).
    fn remove_older(&self, asked: &WalName) {
        let at = number_hex(asked);
        for (path, n) in self.names() {
            if n.is_none_or(|n| number_hex(&n) < at) {
                let _ = fs::remove_file(path);
            }
        }
    }

    /// Removes the folder and everything in it.
    fn clear(&self) {
        for (path, _) in self.names() {
            let _ = fs::remove_file(path);
        }
        let _ = fs::remove_dir(&self.dir);
    }

    /// The segments after `asked` on its timeline to fetch: up to `max`, not already here,
    /// and no more than keeps the folder at `max` files.
    fn plan(&self, asked: &WalName, segment_size: u64, max: usize) -> Vec<WalName> {
        let have: Vec<WalName> = self.names().into_iter().filter_map(|(_, n)| n).collect();
        let room = max.saturating_sub(have.len());
        let first = asked.segment_number(segment_size);
        (1..=max as u64)
            .map(|k| WalName::segment(asked.timeline, first + k, segment_size))
            .filter(|n| !have.contains(n))
            .take(room)
            .collect()
    }

    /// Fetches one segment's object into the folder. `Ok(false)` when the archive has no such
    /// segment (yet). Nothing is checked here but the size: the copy is authenticated when used.
    fn fetch(&self, store: &dyn ReadStore, source: &str, name: &WalName) -> Result<bool> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let mut r = match store.get_limited(&object::key(source, name), object::MAX_OBJECT) {
            Ok(r) => r,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        match fs::DirBuilder::new().mode(0o700).create(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io_at("cannot create", &self.dir, &e)),
        }
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let _ = fs::remove_file(&tmp);
        let copied = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|f| {
                let mut w = BufWriter::with_capacity(1 << 20, f);
                std::io::copy(&mut r, &mut w)?;
                w.into_inner().map_err(|e| e.into_error())?.sync_all()
            })
            .and_then(|_| fs::rename(&tmp, self.dir.join(name.to_string())));
        if let Err(e) = copied {
            let _ = fs::remove_file(&tmp);
            return Err(Error::from_io(e, &format!("cannot prefetch {name}")));
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::wal_push::{PushOptions, push};
    use crate::storage::WriteStore;
    use crate::storage::local::LocalStore;

    const SEG: u64 = 1 << 20;
    /// Timeline 2 branched off timeline 1 in segment 3 (1 MB segments).
    const HISTORY: &str = "1\t0/300000\tno recovery target specified\n";

    struct Fixture {
        tmp: tempfile::TempDir,
        repo: PathBuf,
        /// The restoring server's pg_wal.
        wal: PathBuf,
        key: MasterKey,
    }

    impl Fixture {
        /// A repository holding segments 1..=count of timeline 1 (1 MB segments) and the
        /// history file of timeline 2; returns their contents by segment number.
        fn new(count: u64) -> (Fixture, Vec<Vec<u8>>) {
            let tmp = tempfile::tempdir().unwrap();
            let src = tmp.path().join("src");
            fs::create_dir_all(src.join("archive_status")).unwrap();
            let f = Fixture {
                repo: tmp.path().join("repo"),
                wal: tmp.path().join("pg_wal"),
                key: MasterKey::from_bytes([9; 32]),
                tmp,
            };
            fs::create_dir_all(&f.wal).unwrap();
            let mut contents = vec![Vec::new()];
            for i in 1..=count {
                let mut c = vec![0u8; SEG as usize];
                c[..8].copy_from_slice(&i.to_be_bytes());
                let p = src.join(WalName::segment(1, i, SEG).to_string());
                fs::write(&p, &c).unwrap();
                f.push(&p);
                contents.push(c);
            }
            let h = src.join("00000002.history");
            fs::write(&h, HISTORY).unwrap();
            f.push(&h);
            (f, contents)
        }

        fn push(&self, p: &Path) {
            let opts = PushOptions {
                source: "db".into(),
                concurrency: 1,
            };
            push(
                Box::new(LocalStore::new(self.repo.clone())),
                self.key.clone(),
                p,
                &opts,
            )
            .unwrap();
        }

        fn fetch_as(&self, source: &str, key: &MasterKey, file: &str) -> Result<Fetched> {
            fetch(
                Box::new(LocalStore::new(self.repo.clone())),
                key.clone(),
                file,
                &self.wal.join("RECOVERYXLOG"),
                &FetchOptions {
                    source: source.into(),
                    concurrency: 3,
                },
            )
        }

        fn fetch(&self, n: u64) -> Result<Fetched> {
            self.fetch_as("db", &self.key, &WalName::segment(1, n, SEG).to_string())
        }

        fn written(&self) -> Vec<u8> {
            fs::read(self.wal.join("RECOVERYXLOG")).unwrap()
        }

        fn prefetched(&self) -> Vec<String> {
            let mut v: Vec<String> = fs::read_dir(self.wal.join(PREFETCH_DIR))
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

    fn report(f: Fetched) -> FetchReport {
        match f {
            Fetched::Written(r) => r,
            Fetched::NotInArchive => panic!("not in the archive"),
        }
    }

    fn seg(n: u64) -> String {
        WalName::segment(1, n, SEG).to_string()
    }

    /// A symlink where wal-fetch keeps its prefetched copies (a crafted base backup could
    /// leave one in pg_wal) is refused: through it, the folder's other files would be removed.
    #[test]
    fn a_symlinked_prefetch_folder_is_refused() {
        let (f, _) = Fixture::new(3);
        let elsewhere = f.tmp.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        fs::write(elsewhere.join("precious"), b"keep me").unwrap();
        std::os::unix::fs::symlink(&elsewhere, f.wal.join(PREFETCH_DIR)).unwrap();
        let e = f.fetch(1).unwrap_err();
        assert!(e.message().contains("is not a folder"), "{e}");
        let left: Vec<_> = fs::read_dir(&elsewhere)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["precious"]);
        assert!(!f.wal.join("RECOVERYXLOG").exists());
    }

    /// A symlink left under a temporary file's name is replaced, not written through.
    #[test]
    fn temporary_names_are_never_written_through() {
        let (f, c) = Fixture::new(3);
        let victim = f.tmp.path().join("victim");
        fs::write(&victim, b"keep me").unwrap();
        std::os::unix::fs::symlink(&victim, f.wal.join(".RECOVERYXLOG.offsitedb-tmp")).unwrap();
        fs::create_dir(f.wal.join(PREFETCH_DIR)).unwrap();
        std::os::unix::fs::symlink(
            &victim,
            f.wal.join(PREFETCH_DIR).join(format!(".{}.tmp", seg(2))),
        )
        .unwrap();
        report(f.fetch(1).unwrap());
        assert_eq!(f.written(), c[1]);
        assert_eq!(
            String::from_utf8_lossy(&fs::read(&victim).unwrap()),
            "keep me"
        );
        assert!(f.prefetched().contains(&seg(2)), "{:?}", f.prefetched());
    }

    #[test]
    fn fetches_and_prefetches_the_next_segments() {
        let (f, c) = Fixture::new(5);
        let r = report(f.fetch(1).unwrap());
        assert!(!r.from_prefetch);
        assert_eq!(r.prefetched, 3);
        assert_eq!(f.written(), c[1]);
        assert_eq!(f.prefetched(), vec![seg(2), seg(3), seg(4)]);

        let r = report(f.fetch(2).unwrap());
        assert!(r.from_prefetch, "{r:?}");
        assert_eq!(f.written(), c[2]);
        assert_eq!(f.prefetched(), vec![seg(3), seg(4)]);

        // Asked for 5 (recovery went past 3 and 4): they go, and only what exists is fetched.
        let r = report(f.fetch(5).unwrap());
        assert!(!r.from_prefetch);
        assert_eq!(r.prefetched, 0);
        assert_eq!(f.written(), c[5]);
        assert!(f.prefetched().is_empty(), "{:?}", f.prefetched());

        // The end of the archive: nothing prefetched stays in pg_wal.
        report(f.fetch(3).unwrap());
        assert_eq!(f.prefetched(), vec![seg(4), seg(5)]);
        assert!(matches!(
            f.fetch_as("db", &f.key, "00000003.history").unwrap(),
            Fetched::NotInArchive
        ));
        assert!(!f.wal.join(PREFETCH_DIR).exists());

        // History files: fetched alike, nothing ahead.
        let r = report(f.fetch_as("db", &f.key, "00000002.history").unwrap());
        assert_eq!(r.prefetched, 0);
        assert_eq!(f.written(), HISTORY.as_bytes());
        assert!(
            fs::read_dir(&f.wal)
                .unwrap()
                .flatten()
                .all(|e| !e.file_name().to_string_lossy().contains("tmp")),
            "no temporary file is left"
        );
    }

    #[test]
    fn the_prefetch_folder_stays_bounded() {
        let (f, _) = Fixture::new(8);
        let dir = f.wal.join(PREFETCH_DIR);
        fs::create_dir_all(&dir).unwrap();
        // Leftovers of another timeline ahead of the one asked for count against the bound.
        for n in [3, 4] {
            fs::write(dir.join(WalName::segment(2, n, SEG).to_string()), b"x").unwrap();
        }
        fs::write(dir.join(".000000010000000000000009.tmp"), b"x").unwrap();
        let r = report(f.fetch(1).unwrap());
        assert_eq!(r.prefetched, 1);
        assert_eq!(
            f.prefetched(),
            vec![
                seg(2),
                WalName::segment(2, 3, SEG).to_string(),
                WalName::segment(2, 4, SEG).to_string()
            ]
        );
    }

    #[test]
    fn a_tampered_prefetched_copy_fails_authentication() {
        let (f, c) = Fixture::new(3);
        report(f.fetch(1).unwrap());
        let copy = f.wal.join(PREFETCH_DIR).join(seg(2));
        let mut b = fs::read(&copy).unwrap();
        let at = b.len() - 30;
        b[at] ^= 0x40;
        fs::write(&copy, &b).unwrap();
        let e = f.fetch(2).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Integrity, "{}", e.message());
        assert!(e.message().contains("prefetched copy"), "{}", e.message());
        assert_ne!(f.written(), c[2], "nothing was written for it");
        assert!(!copy.exists(), "the bad copy is gone");
        // Fetched again from the store, it is fine.
        report(f.fetch(2).unwrap());
        assert_eq!(f.written(), c[2]);
    }

    #[test]
    fn missing_means_not_in_archive_only_in_the_right_archive() {
        let (f, _) = Fixture::new(1);
        assert!(matches!(f.fetch(7).unwrap(), Fetched::NotInArchive));
        assert!(matches!(
            f.fetch_as("db", &f.key, "00000003.history").unwrap(),
            Fetched::NotInArchive
        ));
        // Another source name: nothing of it is archived.
        let e = f.fetch_as("other", &f.key, &seg(1)).unwrap_err();
        assert!(e.message().contains("no WAL of source"), "{}", e.message());
        // Another key: the repository does not open (nor does an object).
        let wrong = MasterKey::from_bytes([1; 32]);
        let e = f.fetch_as("db", &wrong, &seg(7)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Key, "{}", e.message());
        let e = f.fetch_as("db", &wrong, &seg(1)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Key, "{}", e.message());
        // No repository there at all.
        let e = fetch(
            Box::new(LocalStore::new(f.tmp.path().join("elsewhere"))),
            f.key.clone(),
            &seg(1),
            &f.wal.join("RECOVERYXLOG"),
            &FetchOptions {
                source: "db".into(),
                concurrency: 1,
            },
        )
        .unwrap_err();
        assert!(
            e.message().contains("no OffsiteDB repository"),
            "{}",
            e.message()
        );
        // %p %f swapped.
        let e = f.fetch_as("db", &f.key, "pg_wal/RECOVERYXLOG").unwrap_err();
        assert!(e.hint().unwrap().contains("%f %p"));
    }

    #[test]
    fn a_missing_segment_before_others_is_a_gap_not_the_end() {
        let (f, _) = Fixture::new(5);
        let store = LocalStore::new(f.repo.clone());
        store
            .delete(&object::key("db", &WalName::segment(1, 3, SEG)))
            .unwrap();
        let e = f.fetch(3).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Integrity, "{}", e.message());
        assert!(e.message().contains(&seg(3)), "{}", e.message());
        assert!(e.message().contains(&seg(4)), "{}", e.message());
        assert!(e.hint().unwrap().contains("wal-verify"));
        // After the newest segment: the end of the WAL.
        assert!(matches!(f.fetch(6).unwrap(), Fetched::NotInArchive));

        // Timeline 2 branched off timeline 1 at 0/300000 (segment 3): segment 2 of timeline
        // 1 is WAL that timeline 2 goes on from, segment 3 is not read on timeline 1.
        let (f, _) = Fixture::new(1);
        let e = f.fetch(2).unwrap_err();
        assert!(
            e.message().contains(&seg(2)) && e.message().contains("timeline 2 branched off"),
            "{}",
            e.message()
        );
        assert!(matches!(f.fetch(3).unwrap(), Fetched::NotInArchive));
    }

    #[test]
    fn a_swapped_object_is_refused() {
        let (f, _) = Fixture::new(2);
        let store = LocalStore::new(f.repo.clone());
        let one = store
            .get_bytes(&object::key("db", &WalName::segment(1, 1, SEG)))
            .unwrap();
        store
            .put(&object::key("db", &WalName::segment(1, 2, SEG)), &one)
            .unwrap();
        let e = f.fetch(2).unwrap_err();
        assert!(e.message().contains("swapped"), "{}", e.message());
        assert!(!f.wal.join("RECOVERYXLOG").exists());
    }
}
