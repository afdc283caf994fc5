/*!
The drill of a folder snapshot (`backup --dir`): extract it into a temporary folder (checked
against the manifest's sizes up front), compare every file's size and SHA-256 with the manifest,
and record the result. No database is involved; the record's method is `file-digests`.
*/

use std::time::Instant;

use jiff::Timestamp;

use crate::catalog::manifest::VerifyMethod;
use crate::catalog::{Manifest, Repository};
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::{Counters, Progress};
use crate::storage::WriteStore;

use super::record::{drill_record, failed, stopped};
use super::{DrillOptions, DrillOutcome, Interruptible, Restored};

/// A directory snapshot's drill: extract it into a temporary folder (checked against the
/// manifest's sizes up front), compare every file's size and SHA-256 with the manifest, and
/// record the result.
pub(super) fn directory_drill<S: WriteStore + ?Sized>(
    repo: &Repository<S>,
    m: &Manifest,
    opts: &DrillOptions,
    started: Timestamp,
    note: &mut dyn FnMut(String),
) -> Result<DrillOutcome> {
    let t0 = Instant::now();
    let rec = m.files.clone().unwrap_or_default();
    let parent = crate::ops::work_parent(opts.work_dir.clone())?;
    crate::ops::spool::ensure_space(
        &parent,
        rec.bytes + (64 << 20),
        "to extract the snapshot",
        "pass --work-dir on a larger disk (or set OFFSITEDB_TMPDIR)",
    )?;
    let work = tempfile::Builder::new()
        .prefix("offsitedb-drill-")
        .tempdir_in(&parent)
        .map_err(|e| Error::io_at("cannot create a temporary folder in", &parent, &e))?;
    let counters = Counters::default();
    let (mut dump, handle) = crate::ops::open_dump(repo, m, Some(counters.input.clone()))?;
    let progress = Progress::start("drill", &counters, opts.progress);
    let extracted = crate::ops::directory::extract(&mut Interruptible(&mut dump), work.path());
    drop(progress);
    let restore_secs = t0.elapsed().as_secs_f64();
    let mut problems = Vec::new();
    let mut extra_notes = Vec::new();
    let failure_of_read = match extracted {
        Ok(got) => {
            let tail = std::io::copy(&mut dump, &mut std::io::sink())
                .map_err(|e| Error::from_io(e, "cannot read the snapshot"))
                .and_then(|_| crate::ops::finish_dump(dump, &handle, m));
            problems.extend(crate::ops::directory::compare(&rec, &got));
            extra_notes.extend(got.notes.iter().take(20).cloned());
            tail.err()
        }
        Err(e) => Some(e),
    };
    // Only the snapshot's own faults fail it; this machine's (a full disk) are errors.
    if let Some(e) = &failure_of_read
        && !matches!(e.kind(), ErrorKind::Integrity | ErrorKind::Key)
    {
        crate::ops::directory::make_removable(work.path());
        return Err(failure_of_read.expect("checked above"));
    }
    if let Some(e) = &failure_of_read {
        problems.insert(0, e.message().to_string());
    }
    let verify_secs = t0.elapsed().as_secs_f64() - restore_secs;
    crate::ops::directory::make_removable(work.path());
    drop(work);
    let mut notes = vec![format!(
        "{} files ({}), {} folders, {} symlinks, {} hard links extracted and checked",
        rec.files,
        crate::units::bytes(rec.bytes),
        rec.directories,
        rec.symlinks,
        rec.hard_links
    )];
    notes.extend(extra_notes);
    if !rec.skipped.is_empty() {
        notes.push(format!(
            "{} entries were left out or changed during the backup (see the manifest)",
            rec.skipped.len()
        ));
    }
    let restored = Restored {
        download_secs: restore_secs,
        restore_secs,
        verify_secs,
        target_label: "a temporary folder".into(),
        problems,
        notes,
        ..Restored::default()
    };
    let record = drill_record(
        m,
        started,
        t0,
        restored,
        String::new(),
        1,
        VerifyMethod::FileDigests,
    );
    for n in &record.notes {
        note(n.clone());
    }
    stopped()?;
    repo.commit_drill(&record)?;
    let failure = (!record.passed()).then(|| failure_of_read.unwrap_or_else(|| failed(&record)));
    Ok(DrillOutcome { record, failure })
}
