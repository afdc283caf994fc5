/*!
`offsitedb list` and `offsitedb show`: what the repository holds, read from the repository alone
(a new machine with the key and the bucket sees everything). Read-only by construction: these
take a repository over a [`ReadStore`].
*/

use crate::catalog::{Manifest, Repository, Summary};
use crate::error::Result;
use crate::storage::ReadStore;

/// Every snapshot (optionally of one source), oldest first.
pub fn list<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    source: Option<&str>,
) -> Result<Vec<Summary>> {
    repo.entries(source)?
        .iter()
        .map(|e| Ok(Summary::new(&repo.manifest(&e.source, &e.id)?, e)))
        .collect()
}

/// One snapshot by reference (`latest`, an id, or a unique prefix of one).
pub fn show<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    reference: &str,
    source: Option<&str>,
) -> Result<(Manifest, Summary)> {
    let e = repo.resolve(reference, source)?;
    let m = repo.manifest(&e.source, &e.id)?;
    let s = Summary::new(&m, &e);
    Ok((m, s))
}
