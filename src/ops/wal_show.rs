/*!
`offsitedb wal-show`: a source's WAL archive by timeline (parent and switch point, segment ranges,
gaps, `.partial` and `.backup` files) and when its newest segment was archived. Read-only.

[`load`] is what `backup-list`, `wal-verify` and `prune` read too: the listing, every base backup
manifest, and the history files (tiny: read and authenticated whole); the decisions are in the
pure model, [`crate::wal::timeline`]. A segment's number depends on the segment size, which base
backup manifests record; without one it is read from the newest segment's header (its size),
and only when that fails is PostgreSQL's default assumed, and said.
*/

use std::collections::BTreeMap;
use std::io::Write;

use jiff::Timestamp;
use serde::Serialize;

use crate::catalog::Repository;
use crate::catalog::base::BaseManifest;
use crate::error::{Error, ErrorKind, Result};
use crate::storage::ReadStore;
use crate::wal::name::{
    DEFAULT_SEGMENT_SIZE, Kind, Lsn, WalName, check_segment_size, parse_history,
};
use crate::wal::object::{self, WalHeader};
use crate::wal::timeline::{Archive, BaseStart, File, HistoryRead, TimelineView};
use crate::wal::{self, Archived};

/// The largest history file read (one line per timeline switch: a few kB at most).
const HISTORY_MAX: u64 = 1 << 20;

/// Where the segment size came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentSizeFrom {
    /// The base backup manifests.
    BaseBackup,
    /// The size of the newest archived segment, from its header.
    WalHeader,
    /// PostgreSQL's default, assumed.
    Default,
}

/// A source's WAL archive and base backups, read.
pub struct Loaded {
    pub source: String,
    pub archived: Vec<Archived>,
    pub archive: Archive,
    /// Readable base backup manifests, oldest first.
    pub bases: Vec<BaseManifest>,
    /// Base backups whose manifest could not be read: "id: why".
    pub unreadable_bases: Vec<String>,
    pub segment_size: u64,
    pub segment_size_from: SegmentSizeFrom,
    /// The newest segment's header, when it was read.
    newest_header: Option<(WalName, WalHeader)>,
}

impl Loaded {
    /// Where a base backup starts, for the model; `None` when its `start_wal` is not a segment
    /// name (reported by `note` in [`load`]).
    pub fn base_start(&self, m: &BaseManifest) -> Option<BaseStart> {
        let w = m.start_segment().ok().filter(WalName::is_segment)?;
        Some(BaseStart {
            id: m.backup_id.to_string(),
            timeline: w.timeline,
            start_segment: w.segment_number(self.segment_size),
            start_lsn: m.start_lsn,
            end_lsn: m.end_lsn,
        })
    }

    pub fn base_starts(&self) -> Vec<BaseStart> {
        self.bases
            .iter()
            .filter_map(|m| self.base_start(m))
            .collect()
    }

    /// "16 MiB segments (assumed: ...)" for people, when the size was not read anywhere.
    pub fn assumed_note(&self) -> Option<String> {
        (self.segment_size_from == SegmentSizeFrom::Default).then(|| {
            format!(
                "segment size assumed to be PostgreSQL's default, {} (no base backup records it and no segment header could be read)",
                crate::units::bytes(self.segment_size)
            )
        })
    }
}

/// Reads a source's WAL listing, its history files and its base backup manifests. A manifest
/// that cannot be read is reported through `note` and left out (listed in `unreadable_bases`).
pub fn load<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    source: &str,
    note: &mut dyn FnMut(String),
) -> Result<Loaded> {
    let store = repo.store();
    let archived = wal::list(store, source)?;
    let mut bases = Vec::new();
    let mut unreadable_bases = Vec::new();
    for e in repo.base_entries(Some(source))? {
        match repo.base_manifest(&e.source, &e.id) {
            Ok(m) => bases.push(m),
            Err(err) if unreadable(&err) => {
                note(format!(
                    "base backup {source}/{} is unreadable: {}",
                    e.id,
                    err.message()
                ));
                unreadable_bases.push(format!("{}: {}", e.id, err.message()));
            }
            Err(err) => return Err(err),
        }
    }
    for m in &bases {
        if m.start_segment().ok().filter(WalName::is_segment).is_none() {
            note(format!(
                "base backup {source}/{} names no WAL segment to start from ({:?})",
                m.backup_id, m.start_wal
            ));
        }
    }

    let mut newest_header = None;
    let (segment_size, segment_size_from) = match bases.last() {
        Some(newest) => {
            if let Some(other) = bases.iter().find(|m| m.segment_size != newest.segment_size) {
                note(format!(
                    "base backups of {source} disagree on the WAL segment size ({} in {}, {} in {}); using the newest's",
                    other.segment_size, other.backup_id, newest.segment_size, newest.backup_id
                ));
            }
            (
                check_segment_size(newest.segment_size)?,
                SegmentSizeFrom::BaseBackup,
            )
        }
        None => match newest_plain(&archived) {
            Some(a) => match read_header(repo, a) {
                Ok(h) => {
                    let size = check_segment_size(h.size).ok();
                    newest_header = Some((a.name.clone(), h));
                    match size {
                        Some(s) => (s, SegmentSizeFrom::WalHeader),
                        None => (DEFAULT_SEGMENT_SIZE, SegmentSizeFrom::Default),
                    }
                }
                Err(e) if unreadable(&e) => {
                    note(format!(
                        "cannot read the header of {}: {}",
                        a.name,
                        e.message()
                    ));
                    (DEFAULT_SEGMENT_SIZE, SegmentSizeFrom::Default)
                }
                Err(e) => return Err(e),
            },
            None => (DEFAULT_SEGMENT_SIZE, SegmentSizeFrom::Default),
        },
    };

    let mut histories: BTreeMap<u32, HistoryRead> = BTreeMap::new();
    for a in archived.iter().filter(|a| a.name.kind == Kind::History) {
        let read = match read_history(repo, a) {
            Ok(h) => Ok(h),
            Err(e) if unreadable(&e) || e.kind() == ErrorKind::Io => Err(e.message().to_string()),
            Err(e) => return Err(e),
        };
        histories.insert(a.name.timeline, read);
    }
    let files = archived
        .iter()
        .map(|a| File {
            name: a.name.clone(),
            size: a.size,
        })
        .collect();
    Ok(Loaded {
        source: source.to_string(),
        archive: Archive::new(files, histories, segment_size),
        archived,
        bases,
        unreadable_bases,
        segment_size,
        segment_size_from,
        newest_header,
    })
}

/// An error that says something about the object read, not about reaching the store.
pub(crate) fn unreadable(e: &Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Integrity | ErrorKind::Key | ErrorKind::Config | ErrorKind::NotFound
    )
}

fn newest_plain(archived: &[Archived]) -> Option<&Archived> {
    archived.iter().rev().find(|a| a.name.is_segment())
}

/// The header of a stored WAL file: only its first sealed chunk is read.
pub(crate) fn read_header<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    a: &Archived,
) -> Result<WalHeader> {
    let r = repo.store().get(&a.key)?;
    let (h, _rest) = object::read_header(r, repo.key(), &a.name)?;
    Ok(h)
}

/// Reads, authenticates and parses a history file.
pub(crate) fn read_history<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    a: &Archived,
) -> Result<Vec<crate::wal::name::TimelineSwitch>> {
    let r = repo.store().get_limited(&a.key, HISTORY_MAX)?;
    let mut out = Capped(Vec::new());
    object::decode(r, repo.key(), &a.name, &mut out)?;
    let text = String::from_utf8(out.0)
        .map_err(|_| Error::integrity(format!("{} is not text", a.name)))?;
    parse_history(&text)
}

/// A buffer that refuses more than [`HISTORY_MAX`] bytes (a header may claim a gigabyte).
struct Capped(Vec<u8>);

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > HISTORY_MAX as usize {
            return Err(std::io::Error::other(Error::integrity(format!(
                "a history file larger than {} bytes",
                HISTORY_MAX
            ))));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The newest archived segment and when it was archived.
#[derive(Clone, Debug, Serialize)]
pub struct Newest {
    pub name: String,
    pub timeline: u32,
    /// The end of the segment: the WAL is archived up to here.
    pub end_lsn: Lsn,
    /// When `wal-push` stored it (its header's time, the archiving host's clock).
    pub archived_at: Option<Timestamp>,
    /// Why its header could not be read, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
}

/// What `wal-show` prints (docs: README "wal-show --json").
#[derive(Clone, Debug, Serialize)]
pub struct WalShow {
    pub source: String,
    pub segment_size: u64,
    pub segment_size_from: SegmentSizeFrom,
    /// Every archived file, and their stored bytes.
    pub files: usize,
    pub bytes: u64,
    pub base_backups: usize,
    pub timelines: Vec<TimelineView>,
    pub newest: Option<Newest>,
}

/// Shows a source's archive. No WAL archived at all is an error of kind `NotFound`.
pub fn show<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    source: &str,
    note: &mut dyn FnMut(String),
) -> Result<WalShow> {
    let loaded = load(repo, source, note)?;
    if loaded.archived.is_empty() {
        return Err(no_archive(repo, source));
    }
    let newest = match newest_plain(&loaded.archived) {
        None => None,
        Some(a) => {
            let header = match &loaded.newest_header {
                Some((n, h)) if *n == a.name => Ok(h.clone()),
                _ => read_header(repo, a),
            };
            let (archived_at, unreadable) = match header {
                Ok(h) => (Some(h.pushed_at), None),
                Err(e) if unreadable(&e) => (None, Some(e.message().to_string())),
                Err(e) => return Err(e),
            };
            Some(Newest {
                name: a.name.to_string(),
                timeline: a.name.timeline,
                end_lsn: Lsn(a.name.start_lsn(loaded.segment_size).0 + loaded.segment_size),
                archived_at,
                unreadable,
            })
        }
    };
    Ok(WalShow {
        source: source.to_string(),
        segment_size: loaded.segment_size,
        segment_size_from: loaded.segment_size_from,
        files: loaded.archived.len(),
        bytes: loaded.archived.iter().map(|a| a.size).sum(),
        base_backups: loaded.bases.len(),
        timelines: loaded.archive.timelines(),
        newest,
    })
}

/// No WAL file at all under the source.
pub(crate) fn no_archive<S: ReadStore + ?Sized>(repo: &Repository<S>, source: &str) -> Error {
    Error::not_found(format!(
        "no WAL archived for source {source:?} at {}",
        repo.location()
    ))
    .with_hint(format!(
        "set the server's archive_command to offsitedb wal-push --source {source} %p (README: point-in-time recovery)"
    ))
}
