/*!
The WAL archive: what point-in-time recovery replays on top of a base backup (DESIGN.md section 7).

- [`name`]: WAL file names, segment arithmetic, LSNs, timeline history files
- [`object`]: one WAL file as a sealed object (`wal/<source>/<timeline>/<name>`)

The operations that use them are in `ops` (`wal_push`, `wal_fetch`, `wal_show`, `wal_verify`,
`pitr`); base backups are in the catalog (`catalog::base`).
*/

pub mod name;
pub mod object;
pub mod timeline;

use crate::catalog::check_source_name;
use crate::error::Result;
use crate::storage::ReadStore;
use name::WalName;

/// One archived WAL file, as the listing shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Archived {
    pub name: WalName,
    pub key: String,
    pub size: u64,
}

/// Every WAL file archived for `source`, sorted by timeline and then name. Objects whose key is
/// not one OffsiteDB writes (a name that does not parse, or a file under another timeline's
/// folder) are left out: they are not ours to replay.
pub fn list<S: ReadStore + ?Sized>(store: &S, source: &str) -> Result<Vec<Archived>> {
    check_source_name(source)?;
    let mut out: Vec<Archived> = store
        .list(&object::source_prefix(source))?
        .into_iter()
        .filter_map(|o| {
            let leaf = o.key.rsplit('/').next()?;
            let name = WalName::parse(leaf).ok()?;
            (object::key(source, &name) == o.key).then_some(Archived {
                name,
                key: o.key,
                size: o.size,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
