/*!
What a repository holds and how it is named: snapshot ids and source names ([`ids`]), the
manifest ([`manifest`]), and the repository with its listing ([`repo`]); and where a snapshot
stands ([`Summary`], [`Status`]).

Dates in the repository are written by whichever host made the object, and by anyone who holds
the key: one further ahead of this machine's clock than [`FUTURE_TOLERANCE`] is *future-dated*,
reported, and trusted for nothing (it does not count as the newest, and a future-dated drill
record seals nothing).
*/

pub mod base;
pub mod base_drill;
pub mod drill;
pub mod ids;
pub mod keys;
pub mod log;
pub mod manifest;
pub mod repo;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

pub use drill::{DrillRecord, DrillResult};
pub use ids::{SnapshotId, check_source_name};
pub use manifest::{Manifest, SourceKind};
pub use repo::{Entry, Repository};

/// How far ahead of this machine's clock a date may be and still be trusted: hosts' clocks
/// disagree by seconds, rarely by minutes.
pub const FUTURE_TOLERANCE: SignedDuration = SignedDuration::from_mins(10);

/// True when `t` is further ahead of `now` than [`FUTURE_TOLERANCE`].
pub fn future_dated(t: Timestamp, now: Timestamp) -> bool {
    t.duration_since(now) > FUTURE_TOLERANCE
}

/// "started 2027-01-05T03:00:00Z, 9600 hours ahead of this machine's clock".
pub fn ahead(verb: &str, t: Timestamp, now: Timestamp) -> String {
    let d = t.duration_since(now);
    let by = if d >= SignedDuration::from_hours(1) {
        format!("{} hours", (d.as_secs_f64() / 3600.0).round())
    } else {
        format!("{} minutes", (d.as_secs_f64() / 60.0).round())
    };
    format!(
        "{verb} {}, {by} ahead of this machine's clock",
        t.round(jiff::Unit::Second).unwrap_or(t)
    )
}

/// Where a snapshot stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Its latest drill (of those not future-dated) restored it and found every row and digest
    /// as dumped.
    Sealed,
    /// Its latest drill failed, or its latest drill record cannot be read.
    DrillFailed,
    /// Complete, not yet restored by a drill.
    NotDrilled,
    /// The manifest is there but the data object is missing or has the wrong size.
    Damaged,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Sealed => "sealed",
            Status::DrillFailed => "drill failed",
            Status::NotDrilled => "not drilled",
            Status::Damaged => "damaged",
        }
    }
}

/// What a snapshot's drill records say: its latest one that is not future-dated.
#[derive(Clone, Debug)]
pub enum DrillEvidence {
    /// No drill record (or only future-dated ones).
    None,
    Record(Box<DrillRecord>),
    /// It exists and cannot be read (damaged, garbage, or written by a newer version): counted
    /// as a failed drill, and the snapshot is kept whatever the retention policy says, since an
    /// older drill may have sealed it.
    Unreadable {
        id: SnapshotId,
        why: String,
    },
}

/// One line of `offsitedb list`, and one element of `list --json`.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub id: SnapshotId,
    pub source: String,
    pub created: Timestamp,
    pub finished: Timestamp,
    pub duration_seconds: f64,
    pub database: String,
    pub server_version: String,
    pub plain_bytes: u64,
    pub stored_bytes: u64,
    pub compression: String,
    pub status: Status,
    /// Drills so far.
    pub drills: usize,
    /// The id of the drill record the status rests on: the latest not future-dated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_drill: Option<SnapshotId>,
    /// Seconds the latest passing drill took from download to verified: the tested restore time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tested_restore_seconds: Option<f64>,
    /// Why the status is what it is, when the latest drill record alone does not say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// Its latest drill record cannot be read (see [`DrillEvidence::Unreadable`]).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub drill_unreadable: bool,
    /// What is not trusted about it: future-dated dates, an unreadable drill record.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Summary {
    /// `last_drill` is the snapshot's latest drill, if it has one.
    pub fn new(m: &Manifest, e: &Entry, last_drill: Option<&DrillRecord>) -> Self {
        let evidence = match last_drill {
            Some(d) => DrillEvidence::Record(Box::new(d.clone())),
            None => DrillEvidence::None,
        };
        Self::judge(m, e, &evidence)
    }

    /// Where the snapshot stands, given what its drill records say.
    pub fn judge(m: &Manifest, e: &Entry, drill: &DrillEvidence) -> Self {
        let last_drill = match drill {
            DrillEvidence::Record(d) => Some(&**d),
            _ => None,
        };
        let mut status_reason = None;
        let status = if e.data_size != Some(m.sizes.stored_bytes) {
            Status::Damaged
        } else {
            match drill {
                DrillEvidence::Record(d) if d.passed() => Status::Sealed,
                DrillEvidence::Record(_) => Status::DrillFailed,
                DrillEvidence::Unreadable { id, why } => {
                    status_reason = Some(format!("latest drill record unreadable ({id}): {why}"));
                    Status::DrillFailed
                }
                DrillEvidence::None => Status::NotDrilled,
            }
        };
        Summary {
            id: m.snapshot_id.clone(),
            source: m.source.name.clone(),
            created: m.started,
            finished: m.finished,
            duration_seconds: (m.duration_secs() * 10.0).round() / 10.0,
            database: m.source.database.clone(),
            server_version: m.server.version.clone(),
            plain_bytes: m.sizes.plain_bytes,
            stored_bytes: m.sizes.stored_bytes,
            compression: m.compression.to_string(),
            status,
            drills: e.drills.len(),
            last_drill: match drill {
                DrillEvidence::Record(d) => Some(d.drill_id.clone()),
                DrillEvidence::Unreadable { id, .. } => Some(id.clone()),
                DrillEvidence::None => None,
            },
            tested_restore_seconds: last_drill
                .filter(|d| d.passed())
                .map(|d| (d.timings.total * 10.0).round() / 10.0),
            status_reason,
            drill_unreadable: matches!(drill, DrillEvidence::Unreadable { .. }),
            warnings: Vec::new(),
        }
    }
}
