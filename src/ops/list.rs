/*!
`offsitedb list` and `offsitedb show`: what the repository holds, read from the repository alone
(a new machine with the key and the bucket sees everything). Read-only by construction: these
take a repository over a [`ReadStore`].

A snapshot's status rests on its latest drill record that is not future-dated
([`crate::catalog::future_dated`]): a record dated ahead of this machine's clock is reported and
skipped, whatever it says, so a forged or skewed "passed" cannot keep a snapshot sealed over a
later failed drill. A latest record that cannot be read counts as a failed drill
([`DrillEvidence::Unreadable`]): garbage under a drill record's name must not lift the prune's
hold or the protection of a sealed copy.
*/

use jiff::Timestamp;

use crate::catalog::{
    DrillEvidence, DrillRecord, Entry, Manifest, Repository, Summary, ahead, future_dated,
};
use crate::error::{ErrorKind, Result};
use crate::storage::ReadStore;

/// Every snapshot (optionally of one source), oldest first. A snapshot whose manifest cannot be
/// read (damaged, or written by a newer version) is left out and reported through `note`, so one
/// bad object never hides the others; so are dates ahead of this machine's clock and unreadable
/// drill records (also in each summary's `warnings`).
pub fn list<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    source: Option<&str>,
    note: &mut dyn FnMut(String),
) -> Result<Vec<Summary>> {
    let now = Timestamp::now();
    let mut out = Vec::new();
    for e in repo.entries(source)? {
        match repo.manifest(&e.source, &e.id) {
            Ok(m) => {
                let s = summary(repo, &m, &e, now)?;
                for w in &s.warnings {
                    note(w.clone());
                }
                out.push(s)
            }
            // Another key id in its header (forgeable without the key), or gone since the
            // listing, is one unreadable snapshot too: one planted object hides no other.
            Err(err)
                if matches!(
                    err.kind(),
                    ErrorKind::Integrity | ErrorKind::Config | ErrorKind::Key | ErrorKind::NotFound
                ) =>
            {
                note(format!(
                    "snapshot {}/{} is unreadable: {}",
                    e.source,
                    e.id,
                    err.message()
                ))
            }
            Err(err) => return Err(err),
        }
    }
    Ok(out)
}

/// One snapshot by reference (`latest`, an id, or a unique prefix of one), with the drill record
/// its status rests on. What is not trusted is in the summary's `warnings`.
pub fn show<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    reference: &str,
    source: Option<&str>,
) -> Result<(Manifest, Summary, Option<Box<DrillRecord>>)> {
    let e = repo.resolve(reference, source)?;
    let m = repo.manifest(&e.source, &e.id)?;
    let now = Timestamp::now();
    let (drill, warnings) = evidence(repo, &e, now)?;
    let mut s = Summary::judge(&m, &e, &drill);
    s.warnings = snapshot_warnings(&m, &e, now);
    s.warnings.extend(warnings);
    let record = match drill {
        DrillEvidence::Record(d) => Some(d),
        _ => None,
    };
    Ok((m, s, record))
}

fn summary<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    m: &Manifest,
    e: &Entry,
    now: Timestamp,
) -> Result<Summary> {
    let (drill, warnings) = evidence(repo, e, now)?;
    let mut s = Summary::judge(m, e, &drill);
    s.warnings = snapshot_warnings(m, e, now);
    s.warnings.extend(warnings);
    Ok(s)
}

/// A snapshot started (by its manifest or its id) ahead of this machine's clock.
fn snapshot_warnings(m: &Manifest, e: &Entry, now: Timestamp) -> Vec<String> {
    let started = m.started.max(e.id.time());
    if !future_dated(started, now) {
        return Vec::new();
    }
    vec![format!(
        "snapshot {}/{} is future-dated: {} (a host whose clock runs ahead, or a forged manifest); retention keeps it and does not count it as the newest",
        e.source,
        e.id,
        ahead("started", started, now)
    )]
}

/// The latest drill record of `e` that is not future-dated, and what was skipped or unreadable.
/// A record that cannot be read because it is damaged, garbage, gone or of a newer version is
/// [`DrillEvidence::Unreadable`]; a store that cannot be reached is an error.
fn evidence<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    e: &Entry,
    now: Timestamp,
) -> Result<(DrillEvidence, Vec<String>)> {
    let mut warnings = Vec::new();
    let untrusted = |id: &crate::catalog::SnapshotId, t: Timestamp| {
        format!(
            "drill record {id} of {}/{} is future-dated: {}; not trusted",
            e.source,
            e.id,
            ahead("dated", t, now)
        )
    };
    for id in e.drills.iter().rev() {
        if future_dated(id.time(), now) {
            warnings.push(untrusted(id, id.time()));
            continue;
        }
        match repo.drill(&e.source, &e.id, id) {
            Ok(r) => {
                let latest = r.started.max(r.finished);
                if future_dated(latest, now) {
                    warnings.push(untrusted(id, latest));
                    continue;
                }
                return Ok((DrillEvidence::Record(Box::new(r)), warnings));
            }
            Err(err)
                if matches!(
                    err.kind(),
                    ErrorKind::Integrity | ErrorKind::Config | ErrorKind::Key | ErrorKind::NotFound
                ) =>
            {
                warnings.push(format!(
                    "the latest drill record of {}/{} ({id}) is unreadable: {}; counted as a failed drill until a new drill writes a readable one",
                    e.source,
                    e.id,
                    err.message()
                ));
                let why = err.message().to_string();
                return Ok((
                    DrillEvidence::Unreadable {
                        id: id.clone(),
                        why,
                    },
                    warnings,
                ));
            }
            Err(err) => return Err(err),
        }
    }
    Ok((DrillEvidence::None, warnings))
}
