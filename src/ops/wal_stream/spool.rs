/*!
The spool: the folder `pg_receivewal` writes into (`<state>/wal-stream/<source>/`), and what is
uploaded from it.

`pg_receivewal` writes the segment it receives as `<segment>.partial` (the whole segment's size,
zeros after the last byte received), renames it to `<segment>` once complete, and writes the
history file of each timeline it follows. Each [`Spool::sync`]:

1. Uploads every complete segment and history file as `wal-push` does (same object names,
   create-if-absent, the same bytes again is fine, other bytes under an archived name refused),
   then deletes the streamed partials of that segment from the archive. The local copy is
   deleted once a newer file exists: `pg_receivewal` starts again from the newest file in the
   folder, so the newest is always kept.
2. Uploads the newest `.partial` when it grew since the last upload, as a new object
   `<segment>.<end>.partial` (`end`: the offset after its last non-zero byte, rounded up to
   PostgreSQL's 8-byte alignment), then deletes the older streamed partials of that segment.
   New names, never a replaced object: Object Lock can refuse the delete, never the upload. A
   delete that fails is retried by the next sync and by `prune`.
3. A `.partial` that is not the newest file (a timeline switch left it: the old timeline ended
   inside it) is uploaded as `<segment>.partial`, as PostgreSQL's archiver does after a
   promotion, and deleted locally.
*/

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::catalog::Repository;
use crate::error::{Error, Result};
use crate::ops::wal_push::{self, Outcome};
use crate::storage::WriteStore;
use crate::wal::name::{Kind, Lsn, WalName};
use crate::wal::object;

/// What one sync did.
#[derive(Debug, Default)]
pub struct Synced {
    /// Complete segments and history files stored (not those already archived).
    pub stored: Vec<WalName>,
    /// The streamed partial uploaded, if the segment being written grew.
    pub partial: Option<WalName>,
    /// Objects that could not be deleted (kept for a later sync or prune).
    pub not_deleted: Vec<String>,
}

/// One file of the spool.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    name: WalName,
    path: PathBuf,
}

pub struct Spool {
    dir: PathBuf,
    source: String,
    /// Files stored in this process's life (so each is uploaded once).
    stored: BTreeSet<WalName>,
    /// Per segment being written: the streamed partials in the archive, by end.
    partials: BTreeMap<WalName, BTreeSet<u32>>,
    /// Streamed partial objects whose delete failed.
    undeleted: BTreeSet<String>,
    /// The end of the newest WAL in the archive that this process uploaded (timeline, LSN).
    archived: Option<(u32, Lsn)>,
}

/// A file name `pg_receivewal` writes: a segment, `.partial`, or `.history`.
fn parse(leaf: &str) -> Option<WalName> {
    let n = WalName::parse(leaf).ok()?;
    matches!(n.kind, Kind::Segment | Kind::Partial | Kind::History).then_some(n)
}

/// The offset after the last non-zero byte, rounded up to 8 (records start MAXALIGNed).
pub fn meaningful_end(bytes: &[u8]) -> u32 {
    let last = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    (last.div_ceil(8) * 8).min(bytes.len()) as u32
}

impl Spool {
    pub fn open(dir: &Path, source: &str) -> Result<Spool> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io_at("cannot create", dir, &e))?;
        Ok(Spool {
            dir: dir.to_path_buf(),
            source: source.to_string(),
            stored: BTreeSet::new(),
            partials: BTreeMap::new(),
            undeleted: BTreeSet::new(),
            archived: None,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the archive ends, as far as this process uploaded it.
    pub fn archived(&self) -> Option<(u32, Lsn)> {
        self.archived
    }

    fn entries(&self) -> Result<Vec<Entry>> {
        let mut out: Vec<Entry> = fs::read_dir(&self.dir)
            .map_err(|e| Error::io_at("cannot read", &self.dir, &e))?
            .flatten()
            .filter_map(|e| {
                let name = parse(e.file_name().to_str()?)?;
                Some(Entry {
                    name,
                    path: e.path(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The newest segment file (complete or partial), by timeline and number: where
    /// `pg_receivewal` goes on.
    fn newest(entries: &[Entry], segment_size: u64) -> Option<&Entry> {
        entries
            .iter()
            .filter(|e| e.name.kind != Kind::History)
            .max_by_key(|e| {
                (
                    e.name.segment_number(segment_size),
                    e.name.timeline,
                    e.name.kind == Kind::Partial,
                )
            })
    }

    fn advance(&mut self, timeline: u32, end: Lsn) {
        if self.archived.is_none_or(|a| (timeline, end) > a) {
            self.archived = Some((timeline, end));
        }
    }

    /// Uploads what changed since the last call (see the module's doc).
    pub fn sync(&mut self, repo: &Repository<dyn WriteStore>, segment_size: u64) -> Result<Synced> {
        let mut out = Synced::default();
        let entries = self.entries()?;
        let newest = Spool::newest(&entries, segment_size).cloned();
        // History files first: a restore that follows a timeline needs them.
        let mut ordered: Vec<&Entry> = entries.iter().collect();
        ordered.sort_by_key(|e| (e.name.kind != Kind::History, e.name.clone()));
        for e in ordered {
            let is_newest = newest.as_ref() == Some(e);
            match e.name.kind {
                Kind::History | Kind::Segment => {
                    if !self.stored.contains(&e.name) {
                        let Some(content) = read(&e.path)? else {
                            continue;
                        };
                        self.store(repo, &e.name, &content, &mut out)?;
                        if e.name.is_segment() {
                            let end = Lsn(e.name.start_lsn(segment_size).0 + segment_size);
                            self.advance(e.name.timeline, end);
                            self.forget_partials(repo, &e.name, None);
                        }
                    }
                    if e.name.is_segment() && !is_newest {
                        let _ = fs::remove_file(&e.path);
                    }
                }
                Kind::Partial if is_newest => {
                    let Some(content) = read(&e.path)? else {
                        continue;
                    };
                    let end = meaningful_end(&content);
                    let plain = e.name.plain();
                    self.know_partials(repo, &plain)?;
                    let have = self
                        .partials
                        .get(&plain)
                        .and_then(|s| s.last().copied())
                        .unwrap_or(0);
                    if end > have {
                        let name = plain.streamed(end);
                        self.store(repo, &name, &content, &mut out)?;
                        self.partials.entry(plain.clone()).or_default().insert(end);
                        self.advance(
                            plain.timeline,
                            Lsn(plain.start_lsn(segment_size).0 + u64::from(end)),
                        );
                        self.forget_partials(repo, &plain, Some(end));
                        out.partial = Some(name);
                    }
                }
                Kind::Partial => {
                    // A timeline ended inside this segment: keep it as PostgreSQL's archiver
                    // would, then the streamed copies are not needed.
                    let Some(content) = read(&e.path)? else {
                        continue;
                    };
                    self.store(repo, &e.name, &content, &mut out)?;
                    self.forget_partials(repo, &e.name.plain(), None);
                    let _ = fs::remove_file(&e.path);
                }
                _ => {}
            }
        }
        out.not_deleted = self.undeleted.iter().cloned().collect();
        Ok(out)
    }

    fn store(
        &mut self,
        repo: &Repository<dyn WriteStore>,
        name: &WalName,
        content: &[u8],
        out: &mut Synced,
    ) -> Result<()> {
        let sha = object::digest(content);
        match wal_push::store_file(repo, &self.source, name, content, &sha)? {
            // Streamed partials are said by `Synced::partial`.
            Outcome::Archived { .. } if !matches!(name.kind, Kind::Streamed { .. }) => {
                out.stored.push(name.clone())
            }
            Outcome::Archived { .. } => {}
            Outcome::AlreadyArchived | Outcome::ArchivedAhead => {}
        }
        if !matches!(name.kind, Kind::Streamed { .. }) {
            self.stored.insert(name.clone());
        }
        Ok(())
    }

    /// Learns which streamed partials of `segment` the archive holds (once per segment: after
    /// that, this process knows what it uploaded and deleted).
    fn know_partials(
        &mut self,
        repo: &Repository<dyn WriteStore>,
        segment: &WalName,
    ) -> Result<()> {
        if self.partials.contains_key(segment) {
            return Ok(());
        }
        let prefix = format!("{}.", object::key(&self.source, segment));
        let ends: BTreeSet<u32> = repo
            .store()
            .list(&prefix)?
            .into_iter()
            .filter_map(
                |o| match WalName::parse(o.key.rsplit('/').next()?).ok()?.kind {
                    Kind::Streamed { end } => Some(end),
                    _ => None,
                },
            )
            .collect();
        self.partials.insert(segment.clone(), ends);
        Ok(())
    }

    /// Deletes the streamed partials of `segment` (all, or those shorter than `keep`), and
    /// retries the deletes that failed before.
    fn forget_partials(
        &mut self,
        repo: &Repository<dyn WriteStore>,
        segment: &WalName,
        keep: Option<u32>,
    ) {
        if keep.is_none() && !self.partials.contains_key(segment) {
            // Complete before this process saw it being written: ask the archive.
            if self.know_partials(repo, segment).is_err() {
                return;
            }
        }
        let ends = self.partials.remove(segment).unwrap_or_default();
        let (gone, kept): (Vec<u32>, Vec<u32>) =
            ends.into_iter().partition(|e| keep.is_none_or(|k| *e < k));
        if keep.is_some() {
            self.partials
                .insert(segment.clone(), kept.into_iter().collect());
        }
        for end in gone {
            self.undeleted
                .insert(object::key(&self.source, &segment.streamed(end)));
        }
        let pending: Vec<String> = self.undeleted.iter().cloned().collect();
        for key in pending {
            if repo.store().delete(&key).is_ok() {
                self.undeleted.remove(&key);
            }
        }
    }
}

/// A file's bytes, or `None` when it is gone (renamed by `pg_receivewal` meanwhile).
fn read(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => {
            if b.len() as u64 > object::MAX_FILE {
                return Err(Error::integrity(format!(
                    "{} is {} bytes, over the 1 GB a WAL file can be",
                    path.display(),
                    b.len()
                )));
            }
            Ok(Some(b))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io_at("cannot read", path, &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;
    use crate::storage::local::LocalStore;

    const SEG: u64 = 1 << 20;

    fn seg(n: u64) -> WalName {
        WalName::segment(1, n, SEG)
    }

    fn fixture() -> (tempfile::TempDir, Repository<dyn WriteStore>, Spool) {
        let tmp = tempfile::tempdir().unwrap();
        let store: Box<dyn WriteStore> = Box::new(LocalStore::new(tmp.path().join("repo")));
        let repo = Repository::open_for_writing(store, MasterKey::generate().unwrap()).unwrap();
        repo.ensure_created().unwrap();
        let spool = Spool::open(&tmp.path().join("spool"), "db").unwrap();
        (tmp, repo, spool)
    }

    fn keys(tmp: &tempfile::TempDir) -> Vec<String> {
        let mut out: Vec<String> =
            crate::wal::list(&LocalStore::new(tmp.path().join("repo")), "db")
                .unwrap()
                .into_iter()
                .map(|a| a.name.to_string())
                .collect();
        out.sort();
        out
    }

    fn partial(bytes_used: usize) -> Vec<u8> {
        let mut v = vec![0u8; SEG as usize];
        for (i, b) in v.iter_mut().take(bytes_used).enumerate() {
            *b = (i % 251) as u8 | 1;
        }
        v
    }

    #[test]
    fn the_end_is_after_the_last_record_aligned() {
        assert_eq!(meaningful_end(&[0; 64]), 0);
        assert_eq!(meaningful_end(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0]), 8);
        assert_eq!(meaningful_end(&[1; 9]), 9);
        let mut v = vec![0u8; 100];
        v[16] = 7;
        assert_eq!(meaningful_end(&v), 24);
    }

    #[test]
    fn a_growing_partial_gets_new_names_and_the_complete_segment_replaces_them() {
        let (tmp, repo, mut spool) = fixture();
        let p = spool.dir().join(format!("{}.partial", seg(3)));
        fs::write(&p, partial(1000)).unwrap();
        let s = spool.sync(&repo, SEG).unwrap();
        assert_eq!(s.partial, Some(seg(3).streamed(1000)));
        assert_eq!(keys(&tmp), [format!("{}.000003E8.partial", seg(3))]);
        assert_eq!(
            spool.archived(),
            Some((1, Lsn(seg(3).start_lsn(SEG).0 + 1000)))
        );
        // Unchanged: nothing uploaded.
        assert!(spool.sync(&repo, SEG).unwrap().partial.is_none());
        fs::write(&p, partial(5000)).unwrap();
        let s = spool.sync(&repo, SEG).unwrap();
        assert_eq!(s.partial, Some(seg(3).streamed(5000)));
        assert_eq!(keys(&tmp), [format!("{}.00001388.partial", seg(3))]);
        // Complete, and the next one begun: the segment replaces its partials, and the
        // complete file is deleted locally only once a newer one exists.
        fs::remove_file(&p).unwrap();
        fs::write(spool.dir().join(seg(3).to_string()), partial(SEG as usize)).unwrap();
        let s = spool.sync(&repo, SEG).unwrap();
        assert_eq!(s.stored, [seg(3)]);
        assert_eq!(keys(&tmp), [seg(3).to_string()]);
        assert!(spool.dir().join(seg(3).to_string()).exists());
        fs::write(spool.dir().join(format!("{}.partial", seg(4))), partial(64)).unwrap();
        spool.sync(&repo, SEG).unwrap();
        assert!(!spool.dir().join(seg(3).to_string()).exists());
        assert_eq!(
            keys(&tmp),
            [seg(3).to_string(), format!("{}.00000040.partial", seg(4))]
        );
    }

    #[test]
    fn a_timeline_switch_keeps_the_old_partial_and_the_history() {
        let (tmp, repo, mut spool) = fixture();
        fs::write(
            spool.dir().join(format!("{}.partial", seg(5))),
            partial(800),
        )
        .unwrap();
        spool.sync(&repo, SEG).unwrap();
        fs::write(
            spool.dir().join("00000002.history"),
            "1\t0/500320\tno recovery target specified\n",
        )
        .unwrap();
        let tl2 = WalName::segment(2, 5, SEG);
        fs::write(spool.dir().join(format!("{tl2}.partial")), partial(900)).unwrap();
        spool.sync(&repo, SEG).unwrap();
        assert_eq!(
            keys(&tmp),
            [
                format!("{}.partial", seg(5)),
                "00000002.history".to_string(),
                format!("{tl2}.00000388.partial"),
            ]
        );
        assert!(!spool.dir().join(format!("{}.partial", seg(5))).exists());
    }

    #[test]
    fn different_bytes_under_an_archived_name_are_refused() {
        let (_tmp, repo, mut spool) = fixture();
        fs::write(spool.dir().join(seg(2).to_string()), partial(SEG as usize)).unwrap();
        fs::write(spool.dir().join(format!("{}.partial", seg(3))), partial(8)).unwrap();
        spool.sync(&repo, SEG).unwrap();
        let mut other = Spool::open(&spool.dir().join("other"), "db").unwrap();
        let mut changed = partial(SEG as usize);
        changed[100] ^= 0xff;
        fs::write(other.dir().join(seg(2).to_string()), changed).unwrap();
        let e = other.sync(&repo, SEG).unwrap_err();
        assert!(
            e.message()
                .contains("already archived with different content"),
            "{e}"
        );
    }
}
