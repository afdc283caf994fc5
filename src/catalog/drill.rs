/*!
The drill record: what one restore drill of a snapshot did and found. Each drill writes a new
sealed object `snapshots/<source>/<snapshot-id>/drills/<drill-id>` and never rewrites one, so the
history of a snapshot's drills is append-only (and works under Object Lock). A snapshot is
*sealed* when its latest drill passed. "Latest" is by drill id (a UTC second, like snapshot ids),
among the records not dated ahead of this machine's clock ([`super::future_dated`]): those are
reported and trusted for nothing. A latest record that cannot be read counts as a failed drill
(`ops::list`).
*/

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::ids::SnapshotId;
use super::manifest::VerifyMethod;

pub const DRILL_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrillResult {
    Passed,
    Failed,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillRecord {
    pub drill_version: u32,
    pub drill_id: SnapshotId,
    pub snapshot_id: SnapshotId,
    pub source: String,
    pub result: DrillResult,
    pub started: Timestamp,
    pub finished: Timestamp,
    pub timings: Timings,
    /// Where it was restored: "throwaway cluster" or the redacted scratch server.
    pub target: String,
    /// The PostgreSQL version restored into, e.g. "16.4".
    pub server_version: String,
    pub pg_restore_version: String,
    pub jobs: usize,
    pub method: VerifyMethod,
    pub tables: Vec<TableCheck>,
    /// Every problem found, one line each, with the fix where known.
    pub problems: Vec<String>,
    /// Things worth knowing that are not problems (owners skipped, fallbacks).
    pub notes: Vec<String>,
    pub created_by: String,
}

/// Seconds per phase; `total` is the tested restore time.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timings {
    pub download: f64,
    pub restore: f64,
    pub verify: f64,
    pub total: f64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableCheck {
    pub schema: String,
    pub name: String,
    pub expected_rows: u64,
    /// `None` when the table could not be read back (missing after the restore).
    pub restored_rows: Option<u64>,
    /// `None` when there was no digest to compare (counts-only manifests).
    pub digest_ok: Option<bool>,
}

impl TableCheck {
    pub fn ok(&self) -> bool {
        self.restored_rows == Some(self.expected_rows) && self.digest_ok != Some(false)
    }
}

impl DrillRecord {
    pub fn passed(&self) -> bool {
        self.result == DrillResult::Passed
    }
}
