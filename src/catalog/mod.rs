/*!
What a repository holds and how it is named: snapshot ids and source names ([`ids`]), the
manifest ([`manifest`]), and the repository with its listing ([`repo`]).
*/

pub mod drill;
pub mod ids;
pub mod manifest;
pub mod repo;

use jiff::Timestamp;
use serde::Serialize;

pub use drill::{DrillRecord, DrillResult};
pub use ids::{SnapshotId, check_source_name};
pub use manifest::{Manifest, SourceKind};
pub use repo::{Entry, Repository};

/// Where a snapshot stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Its latest drill restored it and found every row and digest as dumped.
    Sealed,
    /// Its latest drill failed.
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
    /// The latest drill's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_drill: Option<SnapshotId>,
    /// Seconds the latest passing drill took from download to verified: the tested restore time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tested_restore_seconds: Option<f64>,
}

impl Summary {
    /// `last_drill` is the snapshot's latest drill, if it has one.
    pub fn new(m: &Manifest, e: &Entry, last_drill: Option<&DrillRecord>) -> Self {
        let status = if e.data_size != Some(m.sizes.stored_bytes) {
            Status::Damaged
        } else {
            match last_drill.map(|d| d.result) {
                Some(DrillResult::Passed) => Status::Sealed,
                Some(DrillResult::Failed) => Status::DrillFailed,
                None => Status::NotDrilled,
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
            last_drill: e.drills.last().cloned(),
            tested_restore_seconds: last_drill
                .filter(|d| d.passed())
                .map(|d| (d.timings.total * 10.0).round() / 10.0),
        }
    }
}
