/*!
PITR drill records: what one point-in-time recovery drill of a base backup did and found (`drill
--pitr`: the base backup restored into a throwaway data folder, the archived WAL replayed to the
end of the archive and to a point inside the window, the copy checked with `pg_verifybackup` and
`pg_amcheck`, every table read). Like a snapshot's drills, each is a new sealed object next to
what it tested, never rewritten:

```text
base/<source>/<backup-id>/drills/<drill-id>   sealed JSON
```

A base backup's listing ([`Repository::base_entries`]) reads only `data` and `manifest`, so
these objects are invisible to it; `prune` deletes everything under a base backup's folder, its
drills with it. "Latest" is by drill id (a UTC second), as for snapshots.
*/

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::base::base_prefix;
use super::drill::DrillResult;
use super::ids::{SnapshotId, check_source_name};
use super::repo::{Repository, read_sealed, within_limit, wrong_key_error};
use crate::crypto::seal_bytes;
use crate::error::{Error, Result};
use crate::storage::{ReadStore, WriteStore};
use crate::wal::name::Lsn;

pub const BASE_DRILL_VERSION: u32 = 1;
/// One line per table read and per problem: 64 MiB is millions of tables.
pub const BASE_DRILL_MAX: u64 = 64 << 20;

pub fn base_drill_key(source: &str, base: &SnapshotId, drill: &SnapshotId) -> String {
    format!("base/{source}/{base}/drills/{drill}")
}

/// One PITR drill of one base backup. docs/PITR.md describes every field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseDrillRecord {
    pub base_drill_version: u32,
    pub drill_id: SnapshotId,
    pub base_id: SnapshotId,
    pub source: String,
    pub result: DrillResult,
    pub started: Timestamp,
    pub finished: Timestamp,
    pub timings: PitrTimings,
    /// One per recovery, in the order they ran.
    pub targets: Vec<TargetCheck>,
    pub wal: WalReplayed,
    /// What `pg_verifybackup` said of the fetched copy.
    pub verifybackup: Check,
    /// What `pg_amcheck` (heap and B-tree indexes, every database) said.
    pub amcheck: Check,
    /// Every table read once after the recovery to the end of the archive.
    pub tables: Vec<TableRead>,
    /// Every problem found, one line each; the drill passed when there is none.
    pub problems: Vec<String>,
    pub notes: Vec<String>,
    /// The PostgreSQL version of the base backup's server (the one recovered with).
    pub server_version: String,
    pub created_by: String,
}

/// Seconds per phase. `total` is the tested restore time (the base backup fetched, the WAL
/// replayed to the end of the archive, and the copy checked).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PitrTimings {
    pub fetch: f64,
    pub replay: f64,
    pub verify: f64,
    pub total: f64,
}

/// One recovery: what was asked, where the server says it stopped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetCheck {
    /// `latest`, `time` or `lsn`.
    pub kind: String,
    /// The time or LSN asked for (`None` for latest).
    pub value: Option<String>,
    /// Picked at random inside the window (not asked for by a person).
    pub random: bool,
    /// Whether recovery got there.
    pub reached: bool,
    /// `promoted` or `paused`; `None` when the server stopped.
    pub state: Option<String>,
    /// `pg_last_wal_replay_lsn()` where it stopped.
    pub lsn: Option<Lsn>,
    /// `pg_last_xact_replay_timestamp()`, UTC.
    pub last_transaction: Option<String>,
    /// The timeline of the last segment replayed.
    pub timeline: Option<u32>,
    /// The server's own line on where it stopped.
    pub stopped: Option<String>,
    pub seconds: f64,
}

/// The WAL the drill replayed: from the base backup's start to the furthest point reached.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalReplayed {
    pub from_lsn: Lsn,
    pub to_lsn: Option<Lsn>,
    pub bytes: u64,
    /// Segments spanned from `from_lsn` to `to_lsn`.
    pub segments: u64,
    /// Distinct segments the server fetched from the archive (through `wal-fetch`).
    pub segments_fetched: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Passed,
    Failed,
    NotRun,
}

/// A check's verdict and its words.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    pub verdict: Verdict,
    pub detail: String,
}

impl Check {
    pub fn not_run(why: impl Into<String>) -> Check {
        Check {
            verdict: Verdict::NotRun,
            detail: why.into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableRead {
    pub database: String,
    pub schema: String,
    pub name: String,
    pub rows: u64,
}

impl BaseDrillRecord {
    pub fn passed(&self) -> bool {
        self.result == DrillResult::Passed
    }
}

/// Checks an opened PITR drill record: its version, its JSON, and that it is the one asked for.
pub(crate) fn parse_base_drill(
    plain: &[u8],
    source: &str,
    base: &SnapshotId,
    drill: &SnapshotId,
) -> Result<BaseDrillRecord> {
    let key = base_drill_key(source, base, drill);
    let invalid = |e: serde_json::Error| {
        Error::integrity(format!("PITR drill record {key} is not valid: {e}"))
    };
    let version = serde_json::from_slice::<Version>(plain)
        .map_err(invalid)?
        .base_drill_version;
    if version != Some(BASE_DRILL_VERSION as u64) {
        return Err(Error::config(format!(
            "PITR drill record {key} has version {}, and this offsitedb reads version {BASE_DRILL_VERSION}",
            version.map_or("(none)".to_string(), |v| v.to_string())
        ))
        .with_hint("upgrade offsitedb"));
    }
    let r: BaseDrillRecord = serde_json::from_slice(plain).map_err(invalid)?;
    if &r.base_id != base || r.source != source || &r.drill_id != drill {
        return Err(Error::integrity(format!(
            "PITR drill record at {key} describes another drill ({}/{}/{})",
            r.source, r.base_id, r.drill_id
        )));
    }
    Ok(r)
}

#[derive(Deserialize)]
struct Version {
    base_drill_version: Option<u64>,
}

impl<S: ?Sized + ReadStore> Repository<S> {
    /// The drill ids of every base backup of `source` (oldest first), from one listing.
    pub fn base_drill_ids(&self, source: &str) -> Result<BTreeMap<SnapshotId, Vec<SnapshotId>>> {
        check_source_name(source)?;
        let mut out: BTreeMap<SnapshotId, Vec<SnapshotId>> = BTreeMap::new();
        for obj in self.store().list(&base_prefix(source))? {
            let parts: Vec<&str> = obj.key.split('/').collect();
            if let ["base", _, id, "drills", drill] = parts.as_slice()
                && let (Ok(id), Ok(drill)) = (SnapshotId::parse(id), SnapshotId::parse(drill))
            {
                out.entry(id).or_default().push(drill);
            }
        }
        for v in out.values_mut() {
            v.sort();
            v.dedup();
        }
        Ok(out)
    }

    /// Reads one PITR drill record.
    pub fn base_drill(
        &self,
        source: &str,
        base: &SnapshotId,
        drill: &SnapshotId,
    ) -> Result<BaseDrillRecord> {
        let key = base_drill_key(source, base, drill);
        let plain = read_sealed(self.store(), self.key(), &key, BASE_DRILL_MAX, |k| {
            wrong_key_error(k, self.key())
        })
        .map_err(|e| e.context(format!("PITR drill record {key}")))?;
        parse_base_drill(&plain, source, base, drill)
    }
}

impl<S: ?Sized + WriteStore> Repository<S> {
    /// Writes a PITR drill record as a new object (never over another).
    pub fn commit_base_drill(&self, r: &BaseDrillRecord) -> Result<()> {
        let json = serde_json::to_vec(r).expect("serializable");
        let key = base_drill_key(&r.source, &r.base_id, &r.drill_id);
        let sealed = seal_bytes(self.key(), &json)?;
        within_limit(&format!("PITR drill record {key}"), &sealed, BASE_DRILL_MAX)?;
        if !self.store().put_new(&key, &sealed)? {
            return Err(Error::storage(format!("{key} already exists")));
        }
        self.append_log(
            &r.source,
            super::log::Event::BaseDrill {
                object: super::log::Logged::of(&key, &sealed),
                passed: r.passed(),
            },
        )
        .map(drop)
    }
}
