/*!
`offsitedb list` and `offsitedb show`: what the repository holds, read from the repository alone
(a new machine with the key and the bucket sees everything). Read-only by construction: these
take a repository over a [`ReadStore`].
*/

use crate::catalog::{DrillRecord, Entry, Manifest, Repository, Summary};
use crate::error::Result;
use crate::storage::ReadStore;

/// Every snapshot (optionally of one source), oldest first. A snapshot whose manifest cannot be
/// read (damaged, or written by a newer version) is left out and reported through `note`, so one
/// bad object never hides the others.
pub fn list<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    source: Option<&str>,
    note: &mut dyn FnMut(String),
) -> Result<Vec<Summary>> {
    let mut out = Vec::new();
    for e in repo.entries(source)? {
        match repo.manifest(&e.source, &e.id) {
            Ok(m) => {
                let drill = last_drill(repo, &e, note);
                out.push(Summary::new(&m, &e, drill.as_ref()))
            }
            Err(err)
                if matches!(
                    err.kind(),
                    crate::ErrorKind::Integrity | crate::ErrorKind::Config
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

/// One snapshot by reference (`latest`, an id, or a unique prefix of one).
pub fn show<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    reference: &str,
    source: Option<&str>,
) -> Result<(Manifest, Summary, Option<Box<DrillRecord>>)> {
    let e = repo.resolve(reference, source)?;
    let m = repo.manifest(&e.source, &e.id)?;
    let drill = last_drill(repo, &e, &mut |_| {}).map(Box::new);
    let s = Summary::new(&m, &e, drill.as_deref());
    Ok((m, s, drill))
}

/// The latest drill record; an unreadable one is reported and counts as no drill.
fn last_drill<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    e: &Entry,
    note: &mut dyn FnMut(String),
) -> Option<DrillRecord> {
    match repo.last_drill(e) {
        Ok(d) => d,
        Err(err) => {
            note(format!(
                "the latest drill record of {}/{} is unreadable: {}",
                e.source,
                e.id,
                err.message()
            ));
            None
        }
    }
}
