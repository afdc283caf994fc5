/*!
`offsitedb wal-verify integrity|timeline` (wal-g's names): whether the WAL archive can carry every
base backup to the newest point. Read-only.

- `integrity`: every segment a restore of each base backup to its newest reachable timeline reads
  (from the oldest base backup's start, or with none from the oldest archived segment, to the
  newest archived segment, across timeline switches) is archived, and every file from there on
  authenticates. Without `--read-data` only each object's first sealed chunk is read (its
  header: the name inside must be the name asked for, the key must be the repository's, and the
  chunk must authenticate), so a check costs a listing and about one chunk per file; with
  `--read-data` every object is read whole, decompressed, and checked against the size and
  SHA-256 in its header. Either way a few objects are read at once, each streamed (memory is a
  chunk and a decompression window per thread, whatever the segment size).
- `timeline`: the history files ([`crate::wal::timeline::Archive::timeline_findings`]).

Problems are findings, not errors, so that one run names all of them; [`VerifyReport::error`]
turns them into the command's failure (kind `Integrity`). An archive with no WAL at all is an
error of kind `NotFound`; a store that cannot be reached stops the check (kind `Storage`).
*/

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde::Serialize;

use super::wal_show::{Loaded, SegmentSizeFrom, load, no_archive, unreadable};
use crate::catalog::Repository;
use crate::crypto::MasterKey;
use crate::error::{Error, ErrorKind, Result};
use crate::storage::ReadStore;
use crate::wal::Archived;
use crate::wal::object;
use crate::wal::timeline::Finding;

/// Which check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    Integrity,
    Timeline,
}

#[derive(Clone, Copy, Debug)]
pub struct VerifyOptions {
    pub check: Check,
    /// Read and check every object whole, not only its first chunk.
    pub read_data: bool,
    /// Objects read at once.
    pub jobs: usize,
}

/// What `wal-verify` found (docs: README "wal-verify --json").
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    pub source: String,
    pub check: Check,
    pub read_data: bool,
    pub segment_size: u64,
    pub segment_size_from: SegmentSizeFrom,
    pub base_backups: usize,
    /// The first and the last segment required (integrity).
    pub from: Option<String>,
    pub to: Option<String>,
    /// Files authenticated (integrity).
    pub checked: usize,
    pub problems: Vec<Finding>,
    pub ok: bool,
}

impl VerifyReport {
    /// The command's failure when there are problems: one line naming the first few.
    pub fn error(&self) -> Option<Error> {
        if self.problems.is_empty() {
            return None;
        }
        let shown: Vec<String> = self
            .problems
            .iter()
            .take(3)
            .map(|p| match p.kind.as_str() {
                "missing" => format!("{} missing", p.name),
                "damaged" => format!("{} damaged: {}", p.name, p.detail),
                _ => format!("{}: {}", p.name, p.detail),
            })
            .collect();
        let more = match self.problems.len() {
            n if n > 3 => format!(" (and {} more)", n - 3),
            _ => String::new(),
        };
        let what = match self.check {
            Check::Integrity => "integrity",
            Check::Timeline => "timeline",
        };
        Some(
            Error::integrity(format!(
                "wal-verify {what} of {}: {} problem{}: {}{more}",
                self.source,
                self.problems.len(),
                if self.problems.len() == 1 { "" } else { "s" },
                shown.join("; ")
            ))
            .with_hint(match self.check {
                Check::Integrity => format!(
                    "a restore cannot replay past a missing or damaged segment; take a new base backup (offsitedb backup-push --source {}) so that restores start after it",
                    self.source
                ),
                Check::Timeline => "a timeline history file is missing or wrong: restores may not follow timeline switches; --json lists every problem".to_string(),
            }),
        )
    }
}

/// Runs one check on a source's archive.
pub fn verify<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    source: &str,
    opts: &VerifyOptions,
    note: &mut dyn FnMut(String),
) -> Result<VerifyReport> {
    let loaded = load(repo, source, note)?;
    if loaded.archived.is_empty() {
        return Err(no_archive(repo, source));
    }
    if let Some(n) = loaded.assumed_note() {
        note(n);
    }
    let mut report = VerifyReport {
        source: source.to_string(),
        check: opts.check,
        read_data: opts.read_data,
        segment_size: loaded.segment_size,
        segment_size_from: loaded.segment_size_from,
        base_backups: loaded.bases.len(),
        from: None,
        to: None,
        checked: 0,
        problems: Vec::new(),
        ok: false,
    };
    match opts.check {
        Check::Timeline => {
            let oldest = loaded.base_starts().into_iter().next();
            report.problems = loaded.archive.timeline_findings(oldest.as_ref());
        }
        Check::Integrity => integrity(repo, &loaded, opts, &mut report, note)?,
    }
    report.ok = report.problems.is_empty();
    Ok(report)
}

fn integrity<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    loaded: &Loaded,
    opts: &VerifyOptions,
    report: &mut VerifyReport,
    note: &mut dyn FnMut(String),
) -> Result<()> {
    let bases = loaded.base_starts();
    if bases.is_empty() {
        note(format!(
            "no base backup of {}: checking from the oldest archived segment",
            loaded.source
        ));
    }
    let archive = &loaded.archive;
    let start = match archive.integrity_window(&bases) {
        Some(w) => {
            report.from = Some(w.first.to_string());
            report.to = w.last.as_ref().map(ToString::to_string);
            for (tl, a, b) in &w.missing {
                let (first, last) = (archive.name(*tl, *a), archive.name(*tl, *b));
                report.problems.push(Finding {
                    kind: "missing".into(),
                    name: if a == b {
                        first.to_string()
                    } else {
                        format!("{first}..{last}")
                    },
                    detail: format!(
                        "{} segment{} of timeline {tl} not archived",
                        b - a + 1,
                        if a == b { "" } else { "s" }
                    ),
                });
            }
            w.start
        }
        // No segment at all: only history files to check.
        None => u64::MAX,
    };
    let in_window: Vec<&Archived> = {
        let names: std::collections::BTreeSet<&crate::wal::name::WalName> =
            archive.in_window(start).iter().map(|f| &f.name).collect();
        loaded
            .archived
            .iter()
            .filter(|a| names.contains(&a.name))
            .collect()
    };
    let known_size =
        (loaded.segment_size_from != SegmentSizeFrom::Default).then_some(loaded.segment_size);
    let damaged = authenticate(
        repo.store(),
        repo.key(),
        &in_window,
        opts.read_data,
        opts.jobs,
        known_size,
    )?;
    report.checked = in_window.len();
    report.problems.extend(damaged);
    Ok(())
}

/// Authenticates `files`, `jobs` at a time: their headers, or (`read_data`) all of them.
/// Returns one finding per file that fails, in name order; a failure to reach the store (or an
/// interruption) stops the check with that error.
fn authenticate<S: ReadStore + ?Sized>(
    store: &S,
    key: &MasterKey,
    files: &[&Archived],
    read_data: bool,
    jobs: usize,
    segment_size: Option<u64>,
) -> Result<Vec<Finding>> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let found: Mutex<Vec<(usize, Finding)>> = Mutex::new(Vec::new());
    let fatal: Mutex<Option<Error>> = Mutex::new(None);
    let one = |a: &Archived| -> Result<object::WalHeader> {
        let r = store.get(&a.key)?;
        if read_data {
            object::decode(r, key, &a.name, &mut std::io::sink())
        } else {
            object::read_header(r, key, &a.name).map(|(h, _)| h)
        }
    };
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, 32).min(files.len().max(1)) {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(a) = files.get(i) else { break };
                    let outcome = crate::interrupt::check().and_then(|()| one(a));
                    let finding = match outcome {
                        Ok(h) => match segment_size {
                            Some(size) if a.name.is_segment() && h.size != size => Some(format!(
                                "it holds {} bytes, and a segment is {size}",
                                h.size
                            )),
                            _ => None,
                        },
                        Err(e) if unreadable(&e) => Some(match e.kind() {
                            ErrorKind::NotFound => "listed, and gone when read".to_string(),
                            _ => e.message().to_string(),
                        }),
                        Err(e) => {
                            stop.store(true, Ordering::Relaxed);
                            fatal.lock().unwrap().get_or_insert(e);
                            None
                        }
                    };
                    if let Some(detail) = finding {
                        found.lock().unwrap().push((
                            i,
                            Finding {
                                kind: "damaged".into(),
                                name: a.name.to_string(),
                                detail,
                            },
                        ));
                    }
                }
            });
        }
    });
    if let Some(e) = fatal.into_inner().unwrap() {
        return Err(e);
    }
    let mut found = found.into_inner().unwrap();
    found.sort_by_key(|(i, _)| *i);
    Ok(found.into_iter().map(|(_, f)| f).collect())
}
