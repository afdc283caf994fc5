/*!
The tamper-evidence log: per source, an append-only hash chain of sealed entries that says what
the repository should hold, so that a deleted snapshot, a vanished failed drill record or a bucket
rolled back to an older copy is found (`offsitedb verify`), not just a changed object.

```text
log/<source>/<seq, 16 digits>    sealed JSON, written with create-if-absent, never rewritten
```

Entry `n` records the SHA-256 of entry `n-1`'s stored (sealed) bytes, and what happened: a
snapshot, base backup or drill record committed (its key, size and the SHA-256 of its stored
bytes), or a prune (what it deletes, by which rule, written *before* it deletes). Only the key
holder can seal an entry, so without the key nobody can extend the chain, and deleting an object
leaves an entry naming it; deleting entries leaves a gap in the numbers or a broken link; deleting
the newest entries (a rollback) is caught against the newest head this machine has seen
([`HeadMemory`], in the state file).

Why a log beside the objects rather than a predecessor field in every manifest: drill records
and prunes must be in the same chain as the snapshots (a failed drill that vanishes must be
seen), manifests are written by several kinds of jobs, and the head is then found with one
listing (names sort by number) and one small read, with no object read twice.

The first writer to a source that already holds objects (a repository older than the log)
writes a `start` entry adopting them, so every object that existed is covered from then on.
WAL segments are not logged one by one (thousands a day): their names are contiguous, so a
deleted segment in the range a base backup needs is a gap that `verify` finds from the listing.
*/

use std::sync::Arc;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Repository;
use super::base::{base_manifest_key, base_prefix};
use super::base_drill::base_drill_key;
use super::ids::SnapshotId;
use super::repo::{drill_key, manifest_key, within_limit};
use crate::crypto::seal_bytes;
use crate::error::{Error, Result};
use crate::storage::{ReadStore, WriteStore};

pub const LOG_VERSION: u32 = 1;
/// An entry is a few hundred bytes; a `start` entry adopting a large repository or a prune of
/// many objects is larger: 16 MiB holds ~50,000 objects.
pub const LOG_ENTRY_MAX: u64 = 16 << 20;
/// Writers racing for the same number: each retries on the next.
const APPEND_TRIES: usize = 8;
/// Unreadable entries stepped over when looking for the head before giving up.
const UNREADABLE_MAX: usize = 16;

pub fn log_prefix(source: &str) -> String {
    format!("log/{source}/")
}

pub fn log_key(source: &str, seq: u64) -> String {
    format!("log/{source}/{seq:016}")
}

/// The number of a log entry from its key, when it is one.
pub fn seq_of(source: &str, key: &str) -> Option<u64> {
    let rest = key.strip_prefix(&log_prefix(source))?;
    (rest.len() == 16 && rest.bytes().all(|b| b.is_ascii_digit()))
        .then(|| rest.parse().ok())
        .flatten()
}

/// SHA-256 of stored bytes, in hex.
pub fn digest(bytes: &[u8]) -> String {
    crate::units::hex(&Sha256::digest(bytes))
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub log_version: u32,
    pub source: String,
    pub seq: u64,
    /// SHA-256 of entry `seq - 1` as stored; `None` for the first.
    pub prev: Option<String>,
    pub at: Timestamp,
    pub by: String,
    pub event: Event,
}

/// An object the log vouches for: its key, its size and the SHA-256 of its stored bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logged {
    pub key: String,
    pub size: u64,
    pub sha256: String,
}

impl Logged {
    pub fn of(key: &str, stored: &[u8]) -> Logged {
        Logged {
            key: key.to_string(),
            size: stored.len() as u64,
            sha256: digest(stored),
        }
    }
}

/// What a prune deletes: every object under `prefix` (a snapshot's or base backup's folder), or
/// the WAL files named.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pruned {
    pub prefix: String,
    /// The retention's words: why it goes.
    pub rule: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Event {
    /// The first entry of a source that held objects before the log: they are vouched for.
    Start {
        adopted: Vec<Logged>,
    },
    /// `key rewrap` copied the source here from `from` (its log is not copied: its digests are
    /// of the old objects): every copied manifest and drill record is vouched for.
    Copied {
        adopted: Vec<Logged>,
        from: String,
    },
    Snapshot {
        object: Logged,
    },
    Drill {
        object: Logged,
        passed: bool,
    },
    Base {
        object: Logged,
    },
    BaseDrill {
        object: Logged,
        passed: bool,
    },
    /// Written before the deletions it announces (`late` when written after them: objects a
    /// prune deleted beyond what it announced, because the repository changed in between).
    Prune {
        deleted: Vec<Pruned>,
        late: bool,
    },
}

impl Event {
    /// The object this event vouches for, when it is one.
    pub fn object(&self) -> Option<&Logged> {
        match self {
            Event::Snapshot { object }
            | Event::Drill { object, .. }
            | Event::Base { object }
            | Event::BaseDrill { object, .. } => Some(object),
            _ => None,
        }
    }
}

/// The newest entry of a source's log: its number and the SHA-256 of its stored bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub seq: u64,
    pub sha256: String,
}

/// Where this machine remembers the newest head it has seen of each source of a repository:
/// the rollback check. Implemented by the state file.
pub trait HeadMemory: Send + Sync {
    fn recall(&self, repo: &str, source: &str) -> Result<Option<Head>>;
    /// Raises the remembered head to `head` when it is newer; never lowers it.
    fn remember(&self, repo: &str, source: &str, head: &Head) -> Result<()>;
    /// Sets the remembered head to `head` whatever it was: the user accepts the repository as
    /// it is now (after a rollback they looked at).
    fn accept(&self, repo: &str, source: &str, head: &Head) -> Result<()>;
    /// The sources of `repo` it remembers a head of.
    fn sources(&self, repo: &str) -> Result<Vec<String>>;
}

pub type Memory = Arc<dyn HeadMemory>;

/// The source's log entries as listed: (number, key, stored size), in order.
pub fn listed<S: ReadStore + ?Sized>(store: &S, source: &str) -> Result<Vec<(u64, String, u64)>> {
    let mut out: Vec<(u64, String, u64)> = store
        .list(&log_prefix(source))?
        .into_iter()
        .filter_map(|o| seq_of(source, &o.key).map(|n| (n, o.key, o.size)))
        .collect();
    out.sort();
    Ok(out)
}

/// Opens one stored entry and checks that it is what its name says.
pub fn open_entry<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    source: &str,
    seq: u64,
    stored: &[u8],
) -> Result<Entry> {
    let key = log_key(source, seq);
    let plain = crate::crypto::seal::unseal_bytes(repo.key(), stored)
        .map_err(|e| e.context(format!("log entry {key}")))?;
    let e: Entry = serde_json::from_slice(&plain)
        .map_err(|e| Error::integrity(format!("log entry {key} is not valid: {e}")))?;
    if e.log_version != LOG_VERSION {
        return Err(Error::config(format!(
            "log entry {key} has version {}, and this offsitedb reads version {LOG_VERSION}",
            e.log_version
        ))
        .with_hint("upgrade offsitedb"));
    }
    if e.seq != seq || e.source != source {
        return Err(Error::integrity(format!(
            "log entry {key} is entry {} of source {:?}: moved from where it was written",
            e.seq, e.source
        )));
    }
    Ok(e)
}

impl<S: ?Sized + WriteStore> Repository<S> {
    /// Appends an event to the source's log; returns the new head. A source without a log that
    /// already holds objects gets a `start` entry adopting them first.
    pub fn append_log(&self, source: &str, event: Event) -> Result<Head> {
        for _ in 0..APPEND_TRIES {
            let listing = listed(self.store(), source)?;
            let found = self.readable_head(source, &listing)?;
            // The memory is a check, not a condition: a state file that cannot be read or
            // written (another user's, read-only) never stops a backup.
            let remembered = match self.memory().map(|m| m.recall(&self.id(), source)) {
                Some(Ok(r)) => r,
                Some(Err(e)) => {
                    tracing::warn!(
                        "cannot read the log heads this machine saw: {}",
                        e.message()
                    );
                    None
                }
                None => None,
            };
            if let Some(r) = remembered
                .as_ref()
                .filter(|r| found.as_ref().is_none_or(|f| f.seq < r.seq))
            {
                tracing::warn!(
                    "the log of {source} ends at entry {} but this machine has seen entry {}: the repository was rolled back or its newest entries deleted; run offsitedb verify --source {source}",
                    found.as_ref().map_or(0, |f| f.seq),
                    r.seq
                );
            }
            let (mut seq, prev) = match &found {
                Some(h) => (
                    h.seq.checked_add(1).ok_or_else(|| {
                        Error::integrity(format!("the log of {source} is full (entry {})", h.seq))
                    })?,
                    Some(h.sha256.clone()),
                ),
                // A log deleted whole is not laundered: objects are adopted only by a source
                // this machine never saw a log of.
                None if remembered.is_none() => {
                    let adopted = self.adoptable(source, event.object().map(|o| o.key.as_str()))?;
                    if adopted.is_empty() {
                        (1, None)
                    } else {
                        self.write_entry(source, 1, None, Event::Start { adopted })?;
                        continue;
                    }
                }
                None => (1, None),
            };
            // Numbers taken by entries that cannot be read (planted without the key) are
            // stepped over, not chained to.
            while listing.iter().any(|(n, _, _)| *n == seq) {
                seq += 1;
            }
            if let Some(h) = self.write_entry(source, seq, prev, event.clone())? {
                if let Some(Err(e)) = self.memory().map(|m| m.remember(&self.id(), source, &h)) {
                    tracing::warn!("cannot remember the log head of {source}: {}", e.message());
                }
                return Ok(h);
            }
        }
        Err(Error::new(
            crate::error::ErrorKind::Busy,
            format!(
                "could not append to the log of {source}: {APPEND_TRIES} other writers took each number first"
            ),
        ))
    }

    /// The newest entry that opens with our key and is what its name says.
    fn readable_head(&self, source: &str, listing: &[(u64, String, u64)]) -> Result<Option<Head>> {
        for (tried, (seq, key, _)) in listing.iter().rev().enumerate() {
            if tried == UNREADABLE_MAX {
                return Err(Error::integrity(format!(
                    "the newest {UNREADABLE_MAX} entries of the log of {source} cannot be read"
                ))
                .with_hint(format!("run offsitedb verify --source {source}")));
            }
            let stored = self.store().get_small(key, LOG_ENTRY_MAX)?;
            match open_entry(self, source, *seq, &stored) {
                Ok(_) => {
                    return Ok(Some(Head {
                        seq: *seq,
                        sha256: digest(&stored),
                    }));
                }
                Err(e) => tracing::warn!("{}", e.message()),
            }
        }
        Ok(None)
    }

    /// Writes entry `seq`; `None` when another writer took the number.
    fn write_entry(
        &self,
        source: &str,
        seq: u64,
        prev: Option<String>,
        event: Event,
    ) -> Result<Option<Head>> {
        let entry = Entry {
            log_version: LOG_VERSION,
            source: source.to_string(),
            seq,
            prev,
            at: Timestamp::now(),
            by: format!("offsitedb {}", crate::VERSION),
            event,
        };
        let json = serde_json::to_vec(&entry).expect("serializable");
        let sealed = seal_bytes(self.key(), &json)?;
        let key = log_key(source, seq);
        within_limit(&format!("log entry {key}"), &sealed, LOG_ENTRY_MAX)?;
        Ok(self.store().put_new(&key, &sealed)?.then(|| Head {
            seq,
            sha256: digest(&sealed),
        }))
    }

    /// After `key rewrap` copied a source here: vouches for everything it holds.
    pub fn log_copied(&self, source: &str, from: &str) -> Result<Head> {
        let adopted = self.adoptable(source, None)?;
        self.append_log(
            source,
            Event::Copied {
                adopted,
                from: from.to_string(),
            },
        )
    }

    /// Manifests and drill records of a source that predate its log, but `except`.
    fn adoptable(&self, source: &str, except: Option<&str>) -> Result<Vec<Logged>> {
        let store = self.store();
        let mut keys: Vec<String> = store
            .list(&format!("snapshots/{source}/"))?
            .into_iter()
            .chain(store.list(&base_prefix(source))?)
            .map(|o| o.key)
            .filter(|k| vouched_kind(source, k).is_some() && Some(k.as_str()) != except)
            .collect();
        keys.sort();
        keys.iter()
            .map(|k| {
                Ok(Logged::of(
                    k,
                    &store.get_small(k, super::repo::MANIFEST_MAX)?,
                ))
            })
            .collect()
    }
}

/// What the log vouches for under a key: a snapshot's manifest, a base backup's manifest, or a
/// drill record of either. `None` for anything else (data, WAL, leftovers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Snapshot,
    Drill,
    Base,
    BaseDrill,
}

impl Kind {
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Snapshot => "snapshot",
            Kind::Drill => "drill record",
            Kind::Base => "base backup",
            Kind::BaseDrill => "PITR drill record",
        }
    }
}

pub fn vouched_kind(source: &str, key: &str) -> Option<Kind> {
    let parts: Vec<&str> = key.split('/').collect();
    let id = |s: &str| SnapshotId::parse(s).ok();
    match parts.as_slice() {
        ["snapshots", s, snap, "manifest"] if *s == source => {
            let snap = id(snap)?;
            (key == manifest_key(source, &snap)).then_some(Kind::Snapshot)
        }
        ["snapshots", s, snap, "drills", d] if *s == source => {
            let (snap, d) = (id(snap)?, id(d)?);
            (key == drill_key(source, &snap, &d)).then_some(Kind::Drill)
        }
        ["base", s, b, "manifest"] if *s == source => {
            let b = id(b)?;
            (key == base_manifest_key(source, &b)).then_some(Kind::Base)
        }
        ["base", s, b, "drills", d] if *s == source => {
            let (b, d) = (id(b)?, id(d)?);
            (key == base_drill_key(source, &b, &d)).then_some(Kind::BaseDrill)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_number_and_only_ours_parse() {
        assert_eq!(log_key("app", 7), "log/app/0000000000000007");
        assert!(log_key("app", 9) < log_key("app", 10));
        assert_eq!(seq_of("app", "log/app/0000000000000010"), Some(10));
        assert_eq!(seq_of("app", "log/app2/0000000000000010"), None);
        assert_eq!(seq_of("app", "log/app/10"), None);
        assert_eq!(seq_of("app", "log/app/000000000000001x"), None);
    }

    #[test]
    fn vouched_kinds_are_exact() {
        let id = "20261121T031500Z-k3f7qa";
        assert_eq!(
            vouched_kind("app", &format!("snapshots/app/{id}/manifest")),
            Some(Kind::Snapshot)
        );
        assert_eq!(
            vouched_kind("app", &format!("snapshots/app/{id}/drills/{id}")),
            Some(Kind::Drill)
        );
        assert_eq!(
            vouched_kind("app", &format!("base/app/{id}/drills/{id}")),
            Some(Kind::BaseDrill)
        );
        assert_eq!(
            vouched_kind("app", &format!("snapshots/app/{id}/data")),
            None
        );
        assert_eq!(
            vouched_kind("app", &format!("snapshots/other/{id}/manifest")),
            None
        );
        assert_eq!(vouched_kind("app", "snapshots/app/latest/manifest"), None);
    }

    #[test]
    fn events_round_trip_in_json() {
        let e = Event::Drill {
            object: Logged::of("k", b"abc"),
            passed: false,
        };
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains(r#""kind":"drill""#), "{json}");
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), e);
    }
}
