/*!
What a repository holds and how it is named: snapshot ids and source names ([`ids`]), the
manifest ([`manifest`]), and the repository with its listing ([`repo`]).
*/

pub mod ids;
pub mod manifest;
pub mod repo;

use jiff::Timestamp;
use serde::Serialize;

pub use ids::{SnapshotId, check_source_name};
pub use manifest::Manifest;
pub use repo::{Entry, Repository};

/// Where a snapshot stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Complete, not yet restored by a drill.
    NotDrilled,
    /// The manifest is there but the data object is missing or has the wrong size.
    Damaged,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
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
}

impl Summary {
    pub fn new(m: &Manifest, e: &Entry) -> Self {
        let status = if e.data_size == Some(m.sizes.stored_bytes) {
            Status::NotDrilled
        } else {
            Status::Damaged
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
        }
    }
}
