/*!
`offsitedb verify`: proves the repository holds what its log says it should (restic's `check`,
pgBackRest's `verify`), per source:

- the log ([`crate::catalog::log`]) is whole: numbers from 1 with no gap, every entry sealed with
  our key, in its place, and linked to the one before by its digest;
- every snapshot, base backup and drill record the log vouches for is there, with the size and
  digest it was written with, unless a later prune entry explains its absence; a failed drill
  record that vanished is named as such (it would leave its snapshot looking untested);
- every manifest describes the object it is stored as (a manifest swapped from another source or
  snapshot is refused), and names a data object that exists with the recorded size;
- the WAL the base backups need is there (the `wal-verify` integrity check);
- the log is not older than the newest head this machine has seen (rollback), and the entry it
  remembers is still the same one (history rewritten);
- with `--read-data`, every data object and WAL file is downloaded and authenticated, streamed,
  several at once, in constant memory.

Objects the log does not vouch for (written by an older offsitedb, or by a writer that stopped
between its manifest and its log entry) are warnings: only the key holder can seal them.
*/

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::catalog::log::{self, Event, Head, Kind, Logged, vouched_kind};
use crate::catalog::{Repository, SnapshotId};
use crate::crypto::seal::{HEADER_LEN, Header};
use crate::error::{Error, ErrorKind, Result};
use crate::storage::ReadStore;

#[derive(Clone, Debug)]
pub struct VerifyOptions {
    pub read_data: bool,
    /// Objects read at once with `read_data`.
    pub jobs: usize,
    /// Take the repository's current log heads as the ones to remember, after a rollback the
    /// user has looked at and accepts.
    pub accept: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Error,
    Warning,
}

/// What `verify` found wrong (docs: docs/SECURITY.md "verify").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// An object the log vouches for is gone, and no prune entry explains it.
    Deleted,
    /// An object is not the one the log vouches for (size or digest differ).
    Replaced,
    /// An object cannot be read or authenticated.
    Damaged,
    /// A manifest describes another snapshot or source than the one it is stored as.
    Misplaced,
    /// A data object a manifest names is missing or has another size.
    MissingData,
    /// Log entries are missing: numbers skipped.
    LogGap,
    /// A log entry does not carry the digest of the one before it.
    BrokenLink,
    /// The log is older than the newest head this machine has seen.
    RolledBack,
    /// The log entry this machine remembers was replaced by another.
    Rewritten,
    /// WAL a base backup needs is missing or damaged.
    Wal,
    /// An object the log does not vouch for.
    Unlogged,
    /// The source has no log yet (its objects were written by an older offsitedb).
    NoLog,
}

impl FindingKind {
    pub fn severity(self) -> Severity {
        match self {
            FindingKind::Unlogged | FindingKind::NoLog => Severity::Warning,
            _ => Severity::Error,
        }
    }

    /// The rollback findings end with their own exit code.
    pub fn rollback(self) -> bool {
        matches!(self, FindingKind::RolledBack | FindingKind::Rewritten)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub severity: Severity,
    /// The object or range it is about.
    pub object: String,
    pub message: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct SourceReport {
    pub source: String,
    /// Log entries, and the head (number) at the end.
    pub log_entries: usize,
    pub head: Option<Head>,
    /// The head this machine remembered before this run.
    pub remembered: Option<Head>,
    pub snapshots: usize,
    pub base_backups: usize,
    pub drill_records: usize,
    /// Objects the log vouches for that prune entries explain as deleted.
    pub pruned: usize,
    pub wal_files_checked: usize,
    /// Objects downloaded and authenticated whole (`--read-data`), and their bytes.
    pub objects_read: usize,
    pub bytes_read: u64,
    pub findings: Vec<Finding>,
}

#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    pub repository: String,
    pub read_data: bool,
    pub sources: Vec<SourceReport>,
    /// The key ids the objects read are sealed with, and how many of them each.
    pub keys: BTreeMap<String, usize>,
    pub errors: usize,
    pub warnings: usize,
}

impl VerifyReport {
    /// The command's failure: rollback first (its own exit code), else any other error.
    pub fn error(&self) -> Option<Error> {
        let errors: Vec<&Finding> = self
            .sources
            .iter()
            .flat_map(|s| &s.findings)
            .filter(|f| f.severity == Severity::Error)
            .collect();
        let first = errors
            .iter()
            .find(|f| f.kind.rollback())
            .or(errors.first())?;
        let more = match errors.len() {
            1 => String::new(),
            n => format!(
                " (and {} more problem{})",
                n - 1,
                if n == 2 { "" } else { "s" }
            ),
        };
        let msg = format!("verify: {}{more}", first.message);
        Some(if first.kind.rollback() {
            Error::new(ErrorKind::RolledBack, msg).with_hint(
                "restore the bucket's newer state (versioning, a replica) or find who changed it; \
                 once you accept the repository as it is: offsitedb verify --accept",
            )
        } else {
            Error::integrity(msg).with_hint(
                "--json lists every finding; a deleted or damaged snapshot cannot come back: take a \
                 new backup, and find out who deleted it (bucket logs)",
            )
        })
    }
}

/// The cheap rollback check `list` and the daemon make: one listing of the source's log against
/// the head this machine remembers. A sentence when the log is shorter than it was.
pub fn rolled_back<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    source: &str,
) -> Result<Option<String>> {
    let Some(memory) = repo.memory() else {
        return Ok(None);
    };
    let Some(seen) = memory.recall(&repo.id(), source).ok().flatten() else {
        return Ok(None);
    };
    let now = log::listed(repo.store(), source)?
        .last()
        .map_or(0, |(n, _, _)| *n);
    Ok((now < seen.seq).then(|| {
        format!(
            "the log of {source} ends at entry {now}, but this machine has seen entry {}: the repository was rolled back or its newest objects deleted; run offsitedb verify --source {source}",
            seen.seq
        )
    }))
}

/// Every source of the repository: in its listing, and the ones this machine remembers.
pub fn sources<S: ReadStore + ?Sized>(repo: &Repository<S>) -> Result<Vec<String>> {
    let mut out = BTreeSet::new();
    for top in ["snapshots/", "base/", "log/", "wal/"] {
        for o in repo.store().list(top)? {
            if let Some(s) = o.key.strip_prefix(top).and_then(|r| r.split('/').next())
                && crate::catalog::check_source_name(s).is_ok()
            {
                out.insert(s.to_string());
            }
        }
    }
    if let Some(Ok(remembered)) = repo.memory().map(|m| m.sources(&repo.id())) {
        out.extend(remembered);
    }
    Ok(out.into_iter().collect())
}

pub fn run<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    only: Option<&str>,
    opts: &VerifyOptions,
    note: &mut dyn FnMut(String),
) -> Result<VerifyReport> {
    let names = match only {
        Some(s) => vec![s.to_string()],
        None => sources(repo)?,
    };
    let keys = Mutex::new(BTreeMap::new());
    let mut sources = Vec::new();
    for name in names {
        note(format!("verifying {name}"));
        sources.push(source(repo, &name, opts, &keys, note)?);
    }
    let count = |sev| {
        sources
            .iter()
            .flat_map(|s: &SourceReport| &s.findings)
            .filter(|f| f.severity == sev)
            .count()
    };
    Ok(VerifyReport {
        repository: repo.location(),
        read_data: opts.read_data,
        errors: count(Severity::Error),
        warnings: count(Severity::Warning),
        keys: keys.into_inner().expect("not poisoned"),
        sources,
    })
}

fn key_of(stored: &[u8]) -> Option<String> {
    let h: &[u8; HEADER_LEN] = stored.get(..HEADER_LEN)?.try_into().ok()?;
    Header::decode(h).ok().map(|h| h.key_id.to_string())
}

/// One vouched-for object as the log knows it.
struct Vouched {
    logged: Logged,
    kind: Kind,
    seq: u64,
    failed_drill: bool,
}

fn source<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    name: &str,
    opts: &VerifyOptions,
    keys: &Mutex<BTreeMap<String, usize>>,
    note: &mut dyn FnMut(String),
) -> Result<SourceReport> {
    let store = repo.store();
    let mut r = SourceReport {
        source: name.to_string(),
        ..Default::default()
    };
    let find = |r: &mut SourceReport, kind: FindingKind, object: &str, message: String| {
        r.findings.push(Finding {
            kind,
            severity: kind.severity(),
            object: object.to_string(),
            message,
        })
    };
    let count_key = |stored: &[u8]| {
        if let Some(k) = key_of(stored) {
            *keys.lock().expect("not poisoned").entry(k).or_insert(0) += 1;
        }
    };
    let listed: BTreeMap<String, u64> = store
        .list(&format!("snapshots/{name}/"))?
        .into_iter()
        .chain(store.list(&crate::catalog::base::base_prefix(name))?)
        .map(|o| (o.key, o.size))
        .collect();

    // The log: read whole, checked link by link.
    let entries = log::listed(store, name)?;
    let mut vouched: BTreeMap<String, Vouched> = BTreeMap::new();
    let mut pruned: Vec<(u64, String)> = Vec::new();
    let mut digests: BTreeMap<u64, String> = BTreeMap::new();
    let mut prev: Option<(u64, String)> = None;
    for (seq, key, _) in &entries {
        let stored = match store.get_small(key, log::LOG_ENTRY_MAX) {
            Ok(b) => b,
            Err(e) => {
                find(
                    &mut r,
                    FindingKind::Damaged,
                    key,
                    format!("log entry {key} cannot be read: {}", e.message()),
                );
                prev = None;
                continue;
            }
        };
        count_key(&stored);
        let digest = log::digest(&stored);
        digests.insert(*seq, digest.clone());
        let expected_first = prev.as_ref().map_or(1, |(n, _)| n + 1);
        if *seq > expected_first && (prev.is_some() || *seq > 1) {
            let from = if prev.is_some() { expected_first } else { 1 };
            find(
                &mut r,
                FindingKind::LogGap,
                &log::log_key(name, from),
                if from + 1 == *seq {
                    format!("log entry {from} of {name} is missing: deleted from the repository")
                } else {
                    format!(
                        "log entries {from} to {} of {name} are missing: deleted from the repository",
                        seq - 1
                    )
                },
            );
        }
        let entry = match log::open_entry(repo, name, *seq, &stored) {
            Ok(e) => e,
            Err(e) => {
                find(&mut r, FindingKind::Damaged, key, e.message().to_string());
                prev = Some((*seq, digest));
                continue;
            }
        };
        r.log_entries += 1;
        match (&prev, &entry.prev) {
            (Some((n, d)), Some(p)) if *n + 1 == *seq && d != p => find(
                &mut r,
                FindingKind::BrokenLink,
                key,
                format!(
                    "log entry {seq} of {name} does not follow entry {n}: the entry before it was replaced"
                ),
            ),
            (_, None) if *seq != 1 => find(
                &mut r,
                FindingKind::BrokenLink,
                key,
                format!("log entry {seq} of {name} claims to be the first"),
            ),
            _ => {}
        }
        match &entry.event {
            Event::Start { adopted } | Event::Copied { adopted, .. } => {
                for o in adopted {
                    if let Some(kind) = vouched_kind(name, &o.key) {
                        vouched.insert(
                            o.key.clone(),
                            Vouched {
                                logged: o.clone(),
                                kind,
                                seq: *seq,
                                failed_drill: false,
                            },
                        );
                    }
                }
            }
            Event::Prune { deleted, .. } => {
                pruned.extend(deleted.iter().map(|p| (*seq, p.prefix.clone())));
            }
            ev => {
                let o = ev.object().expect("the other events vouch for an object");
                let failed_drill = matches!(
                    ev,
                    Event::Drill { passed: false, .. } | Event::BaseDrill { passed: false, .. }
                );
                match vouched_kind(name, &o.key) {
                    Some(kind) => {
                        vouched.insert(
                            o.key.clone(),
                            Vouched {
                                logged: o.clone(),
                                kind,
                                seq: *seq,
                                failed_drill,
                            },
                        );
                    }
                    None => find(
                        &mut r,
                        FindingKind::Damaged,
                        key,
                        format!(
                            "log entry {seq} of {name} vouches for {}, which is not an object of {name}",
                            o.key
                        ),
                    ),
                }
            }
        }
        prev = Some((*seq, digest));
    }
    r.head = entries.last().map(|(seq, _, _)| Head {
        seq: *seq,
        sha256: digests.get(seq).cloned().unwrap_or_default(),
    });

    // Every vouched-for object: there, the same, or explained by a later prune.
    for (key, v) in &vouched {
        let explained = pruned
            .iter()
            .any(|(seq, prefix)| *seq > v.seq && key.starts_with(prefix));
        match listed.get(key) {
            None if explained => r.pruned += 1,
            None => {
                let what = describe(key, v.kind);
                let msg = if v.failed_drill {
                    format!(
                        "{what} was deleted: it recorded a FAILED drill (log entry {}), so its backup now looks untested; no prune entry explains it",
                        v.seq
                    )
                } else {
                    format!(
                        "{what} was deleted: log entry {} vouches for it and no prune entry explains it",
                        v.seq
                    )
                };
                find(&mut r, FindingKind::Deleted, key, msg);
            }
            Some(size) if *size != v.logged.size => find(
                &mut r,
                FindingKind::Replaced,
                key,
                format!(
                    "{} was replaced: it is {size} bytes, log entry {} vouches for {} bytes",
                    describe(key, v.kind),
                    v.seq,
                    v.logged.size
                ),
            ),
            Some(_) => {}
        }
    }
    let vouched_keys: BTreeSet<&String> = vouched.keys().collect();
    let unlogged: Vec<&String> = listed
        .keys()
        .filter(|k| vouched_kind(name, k).is_some() && !vouched_keys.contains(k))
        .collect();
    if entries.is_empty() && !unlogged.is_empty() {
        find(
            &mut r,
            FindingKind::NoLog,
            &log::log_prefix(name),
            format!(
                "{name} has no log yet: its {} manifests and drill records were written by an older offsitedb; the next backup, drill or prune starts it",
                unlogged.len()
            ),
        );
    } else {
        for k in unlogged {
            let kind = vouched_kind(name, k).expect("filtered");
            find(
                &mut r,
                FindingKind::Unlogged,
                k,
                format!(
                    "{} is not in the log: written by a job that stopped before its log entry, or by someone else with the key",
                    describe(k, kind)
                ),
            );
        }
    }

    // Manifests: where they claim to be, same as vouched, naming data that exists.
    let mut to_read: Vec<Work> = Vec::new();
    for key in listed.keys() {
        let Some(kind) = vouched_kind(name, key) else {
            continue;
        };
        match kind {
            Kind::Drill | Kind::BaseDrill => r.drill_records += 1,
            Kind::Snapshot => r.snapshots += 1,
            Kind::Base => r.base_backups += 1,
        }
        let check_digest = matches!(kind, Kind::Snapshot | Kind::Base) || opts.read_data;
        if !check_digest {
            continue;
        }
        let stored = match store.get_small(key, crate::catalog::repo::MANIFEST_MAX) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => {
                find(
                    &mut r,
                    FindingKind::Damaged,
                    key,
                    format!("{key} cannot be read: {}", e.message()),
                );
                continue;
            }
        };
        count_key(&stored);
        if let Some(v) = vouched.get(key)
            && v.logged.size == stored.len() as u64
            && v.logged.sha256 != log::digest(&stored)
        {
            find(
                &mut r,
                FindingKind::Replaced,
                key,
                format!(
                    "{} was replaced: its bytes are not the ones log entry {} vouches for",
                    describe(key, kind),
                    v.seq
                ),
            );
        }
        let id = key
            .split('/')
            .nth(2)
            .and_then(|s| SnapshotId::parse(s).ok());
        let Some(id) = id else { continue };
        // Opened from the bytes just hashed: each object is read once.
        let plain =
            crate::crypto::seal::unseal_bytes(repo.key(), &stored).map_err(|e| e.context(key));
        let d = key
            .rsplit('/')
            .next()
            .and_then(|s| SnapshotId::parse(s).ok());
        let data =
            match (kind, plain, d) {
                (_, Err(e), _) => Err(e),
                (Kind::Snapshot, Ok(p), _) => crate::catalog::repo::parse_manifest(&p, name, &id)
                    .map(|m| {
                        let (k, s) = (m.data.key.clone(), m.sizes.stored_bytes);
                        to_read.push(Work::Snapshot(Box::new(m)));
                        Some((k, s))
                    }),
                (Kind::Base, Ok(p), _) => crate::catalog::base::parse_base_manifest(&p, name, &id)
                    .map(|m| {
                        let (k, s) = (m.data.key.clone(), m.sizes.stored_bytes);
                        to_read.push(Work::Base(Box::new(m)));
                        Some((k, s))
                    }),
                (Kind::Drill, Ok(p), Some(d)) => {
                    crate::catalog::repo::parse_drill(&p, name, &id, &d).map(|_| None)
                }
                (Kind::BaseDrill, Ok(p), Some(d)) => {
                    crate::catalog::base_drill::parse_base_drill(&p, name, &id, &d).map(|_| None)
                }
                (_, Ok(_), None) => Ok(None),
            };
        match data {
            Err(e) => find(
                &mut r,
                misplaced_or_damaged(&e),
                key,
                e.message().to_string(),
            ),
            Ok(None) => {}
            Ok(Some((data_key, want))) => match listed.get(&data_key) {
                None => find(
                    &mut r,
                    FindingKind::MissingData,
                    &data_key,
                    format!(
                        "{} names data object {data_key}, which is missing",
                        describe(key, kind)
                    ),
                ),
                Some(got) if *got != want => find(
                    &mut r,
                    FindingKind::MissingData,
                    &data_key,
                    format!("data object {data_key} is {got} bytes, its manifest records {want}"),
                ),
                Some(_) => {}
            },
        }
    }

    if opts.read_data {
        read_all(repo, to_read, opts.jobs, &mut r, keys);
    }

    // The WAL the base backups need.
    if store
        .any(&crate::wal::object::source_prefix(name))?
        .is_some()
    {
        let wopts = super::wal_verify::VerifyOptions {
            check: super::wal_verify::Check::Integrity,
            read_data: opts.read_data,
            jobs: opts.jobs,
        };
        match super::wal_verify::verify(repo, name, &wopts, note) {
            Ok(w) => {
                r.wal_files_checked = w.checked;
                for p in w.problems {
                    find(
                        &mut r,
                        FindingKind::Wal,
                        &p.name,
                        format!("WAL of {name}: {} {}: {}", p.name, p.kind, p.detail),
                    );
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => find(
                &mut r,
                FindingKind::Wal,
                &format!("wal/{name}/"),
                format!("WAL of {name}: {}", e.message()),
            ),
        }
    }

    // Rollback: against the newest head this machine has seen.
    if let Some(memory) = repo.memory() {
        let rid = repo.id();
        r.remembered = memory.recall(&rid, name).unwrap_or_else(|e| {
            note(format!(
                "cannot read the log heads this machine saw: {}",
                e.message()
            ));
            None
        });
        if let Some(seen) = r.remembered.clone() {
            let now = r.head.as_ref().map_or(0, |h| h.seq);
            if now < seen.seq {
                find(
                    &mut r,
                    FindingKind::RolledBack,
                    &log::log_prefix(name),
                    format!(
                        "the log of {name} ends at entry {now}, but this machine has seen entry {}: the repository was rolled back to an older copy, or its newest objects were deleted",
                        seen.seq
                    ),
                );
            } else if digests.get(&seen.seq).is_some_and(|d| *d != seen.sha256) {
                find(
                    &mut r,
                    FindingKind::Rewritten,
                    &log::log_key(name, seen.seq),
                    format!(
                        "log entry {} of {name} is not the one this machine saw: the repository was rolled back and written again since",
                        seen.seq
                    ),
                );
            }
        }
        let rolled = r.findings.iter().any(|f| f.kind.rollback());
        if let Some(h) = &r.head {
            if opts.accept {
                memory.accept(&rid, name, h)?;
            } else if !rolled && let Err(e) = memory.remember(&rid, name, h) {
                note(format!(
                    "cannot remember the log head of {name}: {}",
                    e.message()
                ));
            }
        }
    }
    Ok(r)
}

fn misplaced_or_damaged(e: &Error) -> FindingKind {
    if e.message().contains("describes") {
        FindingKind::Misplaced
    } else {
        FindingKind::Damaged
    }
}

fn describe(key: &str, kind: Kind) -> String {
    let parts: Vec<&str> = key.split('/').collect();
    match (kind, parts.as_slice()) {
        (Kind::Snapshot | Kind::Base, [_, s, id, ..]) => format!("{} {s}/{id}", kind.noun()),
        (Kind::Drill | Kind::BaseDrill, [_, s, id, _, d]) => {
            format!("{} {d} of {s}/{id}", kind.noun())
        }
        _ => key.to_string(),
    }
}

enum Work {
    Snapshot(Box<crate::catalog::Manifest>),
    Base(Box<crate::catalog::base::BaseManifest>),
}

/// Downloads and authenticates every data object, `jobs` at once, each streamed through a
/// fixed buffer.
fn read_all<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    work: Vec<Work>,
    jobs: usize,
    r: &mut SourceReport,
    keys: &Mutex<BTreeMap<String, usize>>,
) {
    let queue = Mutex::new(work);
    let found = Mutex::new(Vec::new());
    let (objects, bytes) = (AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| {
                loop {
                    let Some(w) = queue.lock().expect("not poisoned").pop() else {
                        return;
                    };
                    let (what, key, opened) = match &w {
                        Work::Snapshot(m) => (
                            format!("snapshot {}/{}", m.source.name, m.snapshot_id),
                            m.data.key.clone(),
                            repo.open_data(m),
                        ),
                        Work::Base(m) => (
                            format!("base backup {}/{}", m.source.name, m.backup_id),
                            m.data.key.clone(),
                            repo.open_base_data(m),
                        ),
                    };
                    let read = opened.and_then(|mut reader| {
                        let kid = reader.header().key_id.to_string();
                        *keys.lock().expect("not poisoned").entry(kid).or_insert(0) += 1;
                        let mut buf = vec![0u8; 1 << 16];
                        let mut n = 0u64;
                        loop {
                            match reader.read(&mut buf) {
                                Ok(0) => return Ok(n),
                                Ok(k) => n += k as u64,
                                Err(e) => return Err(Error::from_io(e, &format!("{what}: {key}"))),
                            }
                        }
                    });
                    match read {
                        Ok(n) => {
                            objects.fetch_add(1, Ordering::Relaxed);
                            bytes.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(e) => found.lock().expect("not poisoned").push(Finding {
                            kind: FindingKind::Damaged,
                            severity: Severity::Error,
                            object: key,
                            message: format!("{what} is damaged: {}", e.message()),
                        }),
                    }
                }
            });
        }
    });
    r.objects_read += objects.into_inner() as usize;
    r.bytes_read += bytes.into_inner();
    r.findings.extend(found.into_inner().expect("not poisoned"));
}
