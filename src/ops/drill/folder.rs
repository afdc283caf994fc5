/*!
The drill of a folder snapshot (`backup --dir`): extract it into a temporary folder (checked
against the manifest's sizes up front), compare every file's size and SHA-256 with the manifest,
and record the result. No database is involved; the record's method is `file-digests`.
*/

use std::time::Instant;

use jiff::Timestamp;

use crate::catalog::manifest::{FilesRecord, VerifyMethod};
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
    let work = work_folder(&rec, opts)?;
    let checked = extract_and_compare(repo, m, &rec, work.path(), opts.progress, t0);
    crate::ops::directory::make_removable(work.path());
    drop(work);
    let checked = checked?;
    let restored = Restored {
        download_secs: checked.restore_secs,
        restore_secs: checked.restore_secs,
        verify_secs: checked.verify_secs,
        target_label: "a temporary folder".into(),
        problems: checked.problems,
        notes: folder_notes(&rec, checked.notes),
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
    let failure =
        (!record.passed()).then(|| checked.failure_of_read.unwrap_or_else(|| failed(&record)));
    Ok(DrillOutcome { record, failure })
}

/// What extracting and comparing found.
struct Checked {
    restore_secs: f64,
    verify_secs: f64,
    problems: Vec<String>,
    /// What the extraction noticed (up to 20).
    notes: Vec<String>,
    /// The snapshot's own fault (it does not decrypt or authenticate), which fails the drill.
    failure_of_read: Option<Error>,
}

/// A temporary folder with room for the snapshot's files.
fn work_folder(rec: &FilesRecord, opts: &DrillOptions) -> Result<tempfile::TempDir> {
    let parent = crate::ops::work_parent(opts.work_dir.clone())?;
    crate::ops::spool::ensure_space(
        &parent,
        rec.bytes + (64 << 20),
        "to extract the snapshot",
        "pass --work-dir on a larger disk (or set OFFSITEDB_TMPDIR)",
    )?;
    tempfile::Builder::new()
        .prefix("offsitedb-drill-")
        .tempdir_in(&parent)
        .map_err(|e| Error::io_at("cannot create a temporary folder in", &parent, &e))
}

/// Extracts the snapshot into `dir` and compares what came out with the manifest. Only the
/// snapshot's own faults fail the drill; this machine's (a full disk) are errors.
fn extract_and_compare<S: WriteStore + ?Sized>(
    repo: &Repository<S>,
    m: &Manifest,
    rec: &FilesRecord,
    dir: &std::path::Path,
    progress: bool,
    t0: Instant,
) -> Result<Checked> {
    let counters = Counters::default();
    let (mut dump, handle) = crate::ops::open_dump(repo, m, Some(counters.input.clone()))?;
    let progress = Progress::start("drill", &counters, progress);
    let extracted = crate::ops::directory::extract(&mut Interruptible(&mut dump), dir);
    drop(progress);
    let restore_secs = t0.elapsed().as_secs_f64();
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let failure_of_read = match extracted {
        Ok(got) => {
            let tail = std::io::copy(&mut dump, &mut std::io::sink())
                .map_err(|e| Error::from_io(e, "cannot read the snapshot"))
                .and_then(|_| crate::ops::finish_dump(dump, &handle, m));
            problems.extend(crate::ops::directory::compare(rec, &got));
            notes.extend(got.notes.iter().take(20).cloned());
            tail.err()
        }
        Err(e) => Some(e),
    };
    let failure_of_read = match failure_of_read {
        Some(e) if !matches!(e.kind(), ErrorKind::Integrity | ErrorKind::Key) => return Err(e),
        f => f,
    };
    if let Some(e) = &failure_of_read {
        problems.insert(0, e.message().to_string());
    }
    Ok(Checked {
        restore_secs,
        verify_secs: t0.elapsed().as_secs_f64() - restore_secs,
        problems,
        notes,
        failure_of_read,
    })
}

/// What the drill checked, then what the extraction noticed and what the backup left out.
fn folder_notes(rec: &FilesRecord, noticed: Vec<String>) -> Vec<String> {
    let mut notes = vec![format!(
        "{} files ({}), {} folders, {} symlinks, {} hard links extracted and checked",
        rec.files,
        crate::units::bytes(rec.bytes),
        rec.directories,
        rec.symlinks,
        rec.hard_links
    )];
    notes.extend(noticed);
    if !rec.skipped.is_empty() {
        notes.push(format!(
            "{} entries were left out or changed during the backup (see the manifest)",
            rec.skipped.len()
        ));
    }
    notes
}
