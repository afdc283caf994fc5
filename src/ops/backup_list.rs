/*!
`offsitedb backup-list`: every base backup with its WAL range (start and end LSN, timeline) and
how far the archived WAL after it reaches: to which LSN on which timeline a restore of it can
go, and the first missing segment when a gap stops it short ([`crate::wal::timeline::Coverage`]).
Incremental base backups say so, with the base backup they are based on and their chain.
Read-only: manifests, the WAL listing and the history files.
*/

use jiff::Timestamp;
use serde::Serialize;

use super::wal_show::{SegmentSizeFrom, load};
use crate::catalog::Repository;
use crate::error::Result;
use crate::storage::ReadStore;
use crate::wal::name::Lsn;
use crate::wal::timeline::Coverage;

/// One base backup as `backup-list` prints it (docs: README "backup-list --json").
#[derive(Clone, Debug, Serialize)]
pub struct BaseSummary {
    pub source: String,
    pub id: String,
    /// "full" or "incremental".
    pub kind: &'static str,
    /// For an incremental: the base backup it is based on (`null` for a full one).
    pub parent: Option<String>,
    /// For an incremental: every base backup a restore combines before it, the full first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<String>,
    pub timeline: u32,
    pub start_lsn: Lsn,
    pub end_lsn: Lsn,
    pub start_wal: String,
    pub started: Timestamp,
    pub finished: Timestamp,
    pub duration_seconds: f64,
    /// The tar as pg_basebackup wrote it, compressed, and as stored (sealed).
    pub plain_bytes: u64,
    pub compressed_bytes: u64,
    pub stored_bytes: u64,
    pub server_version: String,
    pub segment_size: u64,
    pub segment_size_from: SegmentSizeFrom,
    /// How far the WAL after it reaches; `None` when its `start_wal` is not a segment name.
    pub wal: Option<Coverage>,
    /// PITR drills of it (`drill --pitr`) so far, and the latest one.
    pub pitr_drills: usize,
    pub last_pitr_drill: Option<PitrDrillSummary>,
}

/// A base backup's latest PITR drill, as `backup-list` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct PitrDrillSummary {
    pub drill_id: String,
    /// `passed`, `failed`, or `unreadable` (the record cannot be read: counted as failed).
    pub result: String,
    pub finished: Option<Timestamp>,
    /// Seconds from the fetch to the checked copy at the end of the archive, when it passed:
    /// the tested PITR restore time.
    pub tested_restore_seconds: Option<f64>,
    /// Its first problem, when it failed.
    pub problem: Option<String>,
}

/// Every base backup (of one source, or of all), oldest first. Unreadable manifests are
/// reported through `note` and left out.
pub fn list<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    source: Option<&str>,
    note: &mut dyn FnMut(String),
) -> Result<Vec<BaseSummary>> {
    let sources: std::collections::BTreeSet<String> = match source {
        Some(s) => [s.to_string()].into(),
        None => repo
            .base_entries(None)?
            .into_iter()
            .map(|e| e.source)
            .collect(),
    };
    let mut out = Vec::new();
    for s in sources {
        let loaded = load(repo, &s, note)?;
        let drills = repo.base_drill_ids(&s)?;
        for m in &loaded.bases {
            let ids = drills.get(&m.backup_id);
            out.push(BaseSummary {
                source: s.clone(),
                id: m.backup_id.to_string(),
                kind: if m.incremental.is_some() {
                    "incremental"
                } else {
                    "full"
                },
                parent: m.incremental.as_ref().map(|i| i.parent.to_string()),
                chain: m
                    .incremental
                    .as_ref()
                    .map(|i| i.chain.iter().map(|c| c.to_string()).collect())
                    .unwrap_or_default(),
                timeline: m.timeline,
                start_lsn: m.start_lsn,
                end_lsn: m.end_lsn,
                start_wal: m.start_wal.clone(),
                started: m.started,
                finished: m.finished,
                duration_seconds: m.duration_secs(),
                plain_bytes: m.sizes.plain_bytes,
                compressed_bytes: m.sizes.compressed_bytes,
                stored_bytes: m.sizes.stored_bytes,
                server_version: m.server.version.clone(),
                segment_size: loaded.segment_size,
                segment_size_from: loaded.segment_size_from,
                wal: loaded.base_start(m).map(|b| loaded.archive.coverage(&b)),
                pitr_drills: ids.map_or(0, Vec::len),
                last_pitr_drill: ids.and_then(|v| v.last()).map(|d| last_drill(repo, m, d)),
            });
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id).then(a.source.cmp(&b.source)));
    Ok(out)
}

/// What the latest PITR drill record says (an unreadable one counts as failed).
fn last_drill<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    m: &crate::catalog::base::BaseManifest,
    drill: &crate::catalog::SnapshotId,
) -> PitrDrillSummary {
    match repo.base_drill(&m.source.name, &m.backup_id, drill) {
        Ok(r) => PitrDrillSummary {
            drill_id: drill.to_string(),
            result: if r.passed() { "passed" } else { "failed" }.into(),
            finished: Some(r.finished),
            tested_restore_seconds: r.passed().then_some(r.timings.total),
            problem: r.problems.first().cloned(),
        },
        Err(e) => PitrDrillSummary {
            drill_id: drill.to_string(),
            result: "unreadable".into(),
            finished: None,
            tested_restore_seconds: None,
            problem: Some(e.message().to_string()),
        },
    }
}

/// The latest PITR drill in words: "passed, tested restore 12s", "FAILED: ...", "-".
pub fn drill_line(b: &BaseSummary) -> String {
    match &b.last_pitr_drill {
        None => "-".into(),
        Some(d) if d.result == "passed" => format!(
            "passed in {}",
            crate::units::duration(std::time::Duration::from_secs_f64(
                d.tested_restore_seconds.unwrap_or(0.0).max(0.0)
            ))
        ),
        Some(d) => d.result.to_uppercase(),
    }
}

/// The coverage in words: "WAL to 0/9000000 on timeline 2, complete".
pub fn coverage_line(b: &BaseSummary) -> String {
    let Some(c) = &b.wal else {
        return format!(
            "no WAL position: start_wal {:?} is not a segment",
            b.start_wal
        );
    };
    let mut line = match (c.restorable_to, c.timeline, &c.missing_from) {
        (None, _, missing) => format!(
            "WAL missing from {}",
            missing.as_deref().unwrap_or(&b.start_wal)
        ),
        (Some(to), Some(tl), Some(missing)) => {
            format!("WAL to {to} on timeline {tl}, then missing from {missing}")
        }
        (Some(to), tl, None) => {
            let tl = tl.unwrap_or(c.target_timeline);
            if c.consistent {
                format!("WAL to {to} on timeline {tl}, complete")
            } else {
                format!(
                    "WAL to {to} on timeline {tl}, not yet to the backup's end {}: not restorable yet",
                    b.end_lsn
                )
            }
        }
        (Some(to), None, Some(missing)) => format!("WAL to {to}, then missing from {missing}"),
    };
    if c.restorable_to.is_some() && c.missing_from.is_some() && !c.consistent {
        line.push_str(&format!(
            " (before the backup's end {}: not restorable)",
            b.end_lsn
        ));
    }
    if let Some(why) = &c.newest_unreachable {
        line.push_str(&format!(
            "; the newest timeline is out of its reach ({why})"
        ));
    }
    line
}
