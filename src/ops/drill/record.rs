/*!
The drill record and its verdict: what a restore that ran found ([`Restored`]) becomes a
[`DrillRecord`] (timings, tables, problems, notes), passed when it found no problem. The stored
archive is checked against its manifest here too ([`compare_archive`]), and a drill stopped by a
signal records nothing ([`stopped`]).
*/

use std::time::Instant;

use jiff::Timestamp;

use crate::catalog::drill::{DRILL_VERSION, DrillResult, Timings};
use crate::catalog::manifest::{TableRecord, VerifyMethod};
use crate::catalog::{DrillRecord, Manifest, SnapshotId};
use crate::dump::{self, DumpSummary};
use crate::error::{Error, ErrorKind, Result};

use crate::storage::WriteStore;

use super::{Ctx, DrillOutcome, Restored};

/// The drill object of a restore that ran: passed when it found no problem.
pub(super) fn drill_record(
    m: &Manifest,
    started: Timestamp,
    t0: Instant,
    r: Restored,
    pg_restore_version: String,
    jobs: usize,
    method: VerifyMethod,
) -> DrillRecord {
    DrillRecord {
        drill_version: DRILL_VERSION,
        drill_id: SnapshotId::new(started).unwrap_or_else(|_| m.snapshot_id.clone()),
        snapshot_id: m.snapshot_id.clone(),
        source: m.source.name.clone(),
        result: if r.problems.is_empty() {
            DrillResult::Passed
        } else {
            DrillResult::Failed
        },
        started,
        finished: Timestamp::now(),
        timings: Timings {
            download: round(r.download_secs),
            restore: round(r.restore_secs),
            verify: round(r.verify_secs),
            total: round(t0.elapsed().as_secs_f64()),
        },
        target: r.target_label,
        server_version: r.server_version,
        pg_restore_version,
        jobs,
        method,
        tables: r.tables,
        problems: r.problems,
        notes: r.notes,
        created_by: format!("offsitedb {}", crate::VERSION),
    }
}

/// The error of a drill that ran and found problems: its first one.
pub(super) fn failed(record: &DrillRecord) -> Error {
    Error::new(
        ErrorKind::DrillFailed,
        format!(
            "drill of {}/{} failed: {}",
            record.source,
            record.snapshot_id,
            record.problems.first().map(String::as_str).unwrap_or("")
        ),
    )
}

/// A drill stopped by a signal proves nothing either way: no record is written (a Ctrl-C or a
/// service manager's SIGTERM also reaches pg_restore and the throwaway server, which would
/// otherwise make a good snapshot look like a failed one).
pub(super) fn stopped() -> Result<()> {
    crate::interrupt::check().map_err(|e| e.context("drill stopped, nothing recorded"))
}

fn round(s: f64) -> f64 {
    (s * 100.0).round() / 100.0
}

/// The stored archive against its manifest: a dump that changed after the manifest was made is
/// caught here, before anything is restored.
pub(super) fn compare_archive(m: &Manifest, s: &DumpSummary, problems: &mut Vec<String>) {
    if m.verification.method != VerifyMethod::ArchiveDigest {
        return;
    }
    let mut expected: std::collections::BTreeMap<(String, String), &TableRecord> = m
        .verification
        .tables
        .iter()
        .map(|t| ((t.schema.clone(), t.name.clone()), t))
        .collect();
    for t in &s.tables {
        match expected.remove(&(t.schema.clone(), t.name.clone())) {
            Some(e) => {
                let digest = dump::digest_hex(t.digest);
                if e.rows != t.rows || e.digest.as_deref() != Some(digest.as_str()) {
                    problems.push(format!(
                        "the stored archive differs from its manifest in table {}.{}: {} rows (digest {}), the manifest says {} rows (digest {})",
                        t.schema,
                        t.name,
                        t.rows,
                        digest,
                        e.rows,
                        e.digest.as_deref().unwrap_or("none")
                    ));
                }
            }
            None => problems.push(format!(
                "the stored archive has table {}.{}, which its manifest does not list",
                t.schema, t.name
            )),
        }
    }
    for (k, _) in expected {
        problems.push(format!(
            "table {}.{} is in the manifest but not in the stored archive",
            k.0, k.1
        ));
    }
}

/// Records a restore that ran. A snapshot that cannot be read back is a failed drill, recorded
/// as one (its error first among the problems); otherwise the record passes when the restore
/// found no problem. Nothing is recorded after a signal.
pub(super) fn conclude<S: WriteStore + ?Sized>(
    ctx: &Ctx<'_, S>,
    pg_restore_version: String,
    mut restored: Restored,
    unreadable: Option<Error>,
    note: &mut dyn FnMut(String),
) -> Result<DrillOutcome> {
    let m = ctx.m;
    let method = m.verification.method;
    let finish = |r: Restored| {
        let version = pg_restore_version.clone();
        drill_record(m, ctx.started, ctx.t0, r, version, ctx.jobs, method)
    };
    if let Some(error) = unreadable {
        restored.problems.insert(0, error.message().to_string());
        let record = finish(restored);
        stopped()?;
        ctx.repo.commit_drill(&record)?;
        return Ok(DrillOutcome {
            record,
            failure: Some(error),
        });
    }
    if method == VerifyMethod::None {
        restored.notes.push(format!(
            "the manifest holds no row data ({}): only the restore itself was tested",
            m.verification
                .note
                .as_deref()
                .unwrap_or("no reason recorded")
        ));
    }
    let record = finish(restored);
    for n in &record.notes {
        note(n.clone());
    }
    stopped()?;
    ctx.repo.commit_drill(&record)?;
    let failure = (!record.passed()).then(|| failed(&record));
    Ok(DrillOutcome { record, failure })
}
