/*!
A repository: a store plus the master key, marked by a sealed `offsitedb.repo` object. Reading
(listing, resolving `latest`, opening a snapshot's data) needs only a [`ReadStore`]; creating the
repository and writing snapshots need a [`WriteStore`].

Layout (DESIGN.md section 3):

```text
offsitedb.repo
snapshots/<source>/<snapshot-id>/data       sealed, compressed pg_dump -Fc archive
snapshots/<source>/<snapshot-id>/manifest   sealed JSON, written last
snapshots/<source>/<snapshot-id>/drills/<drill-id>   sealed JSON, one per drill, never rewritten
```

The store is untrusted, so the small objects, which are read whole, are read under a fixed limit
per kind (refused from the size the store reports, before a byte is read, and cut off at the
limit if it lied) and header first: the 62-byte sealed header (magic, version, key id) is checked
before the rest is read, so an object that is not ours or is sealed with another key fails at
once. Writers check the same limits, so no backup commits an object its readers would refuse.
*/

use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::sync::OnceLock;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::drill::{DRILL_VERSION, DrillRecord};
use super::ids::{SnapshotId, check_source_name};
use super::manifest::{MANIFEST_VERSION, Manifest};
use crate::crypto::key::KeyId;
use crate::crypto::seal::{HEADER_LEN, Header};
use crate::crypto::{MasterKey, UnsealReader, seal_bytes};
use crate::error::{Error, ErrorKind, Result};
use crate::storage::{ReadStore, WriteStore};

pub const REPO_OBJECT: &str = "offsitedb.repo";
pub const REPO_FORMAT: u32 = 1;

/// `offsitedb.repo` is about 300 bytes sealed.
pub const REPO_OBJECT_MAX: u64 = 1 << 20;
/// A manifest grows with the source: a directory source lists every file, about 200 bytes each
/// with 100-byte paths (`{"path":…,"size":…,"sha256":…}`, measured in the tests below), so
/// 256 MiB holds over a million files; a database adds one table record (schema, name, rows,
/// digest, its COPY column list) per table, a few hundred bytes. Reading one at the limit costs
/// about twice the limit in memory (the plaintext, then the parsed manifest).
pub const MANIFEST_MAX: u64 = 256 << 20;
/// A drill record holds one check (about 100 bytes) per table and a line per problem: 64 MiB
/// holds the 10^5 tables of a schema-per-tenant database several times over.
pub const DRILL_MAX: u64 = 64 << 20;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    pub format: u32,
    pub id: String,
    pub created: Timestamp,
    pub key_id: String,
    pub created_by: String,
}

pub fn data_key(source: &str, id: &SnapshotId) -> String {
    format!("snapshots/{source}/{id}/data")
}

pub fn manifest_key(source: &str, id: &SnapshotId) -> String {
    format!("snapshots/{source}/{id}/manifest")
}

pub fn drill_key(source: &str, id: &SnapshotId, drill: &SnapshotId) -> String {
    format!("snapshots/{source}/{id}/drills/{drill}")
}

/// One snapshot as the key listing shows it, before its manifest is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub source: String,
    pub id: SnapshotId,
    /// Size of the data object, if it exists.
    pub data_size: Option<u64>,
    /// Its drills, oldest first.
    pub drills: Vec<SnapshotId>,
}

pub struct Repository<S: ?Sized + ReadStore> {
    store: Box<S>,
    key: MasterKey,
    /// Unset only for a repository that does not exist yet: `ensure_created` writes it.
    config: OnceLock<RepoConfig>,
    /// Where this machine remembers the log heads it saw (the rollback check), when it does.
    memory: Option<super::log::Memory>,
}

impl<S: ?Sized + ReadStore> Repository<S> {
    /// Opens an existing repository and checks that `key` is its key.
    pub fn open(store: Box<S>, key: MasterKey) -> Result<Self> {
        match Self::read_config(&*store, &key)? {
            Some((config, _)) => Ok(Repository {
                store,
                key,
                config: OnceLock::from(config),
                memory: None,
            }),
            None => Err(Error::not_found(format!(
                "no OffsiteDB repository at {}",
                store.location()
            ))
            .with_hint("check the repository URL; a repository is created by the first backup into an empty location")),
        }
    }

    /// Reads `offsitedb.repo` with the keyring's key of its key id; without that key (a key
    /// file that holds only keys rotated to since), from the copy in a rotation record sealed
    /// with a key the ring holds ([`super::keys`]). Rotation records the ring can open are
    /// checked on the way. Returns the description and the key ids the repository records
    /// as rotations (endorsed by the key before them).
    fn read_config(store: &S, key: &MasterKey) -> Result<Option<(RepoConfig, Vec<KeyId>)>> {
        let theirs = std::cell::Cell::new(None);
        let wrong_key = |id: &KeyId| {
            theirs.set(Some(*id));
            Error::key("another key")
        };
        let plain = match read_sealed(store, key, REPO_OBJECT, REPO_OBJECT_MAX, wrong_key) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == ErrorKind::Key && theirs.get().is_some() => None,
            Err(e) if e.kind() == ErrorKind::Key => return Err(e),
            // Errors of the store name the object already.
            Err(e) if e.message().contains(REPO_OBJECT) => return Err(e),
            Err(e) => return Err(e.context(format!("{REPO_OBJECT} in {}", store.location()))),
        };
        let config = match plain {
            Some(plain) => parse_config(&plain)?,
            None => {
                let theirs = theirs.get().expect("set with the error");
                match super::keys::config_from_rotation(store, key, &theirs)? {
                    Some(c) => c,
                    None => {
                        let given = if key.ids().len() == 1 {
                            format!("the key given has {}", key.describe_ids())
                        } else {
                            format!("the key file holds {}", key.describe_ids())
                        };
                        return Err(Error::key(format!(
                            "the repository at {} was created with key id {theirs}, but {given}",
                            store.location(),
                        ))
                        .with_hint("use the key file this repository was created with (its first line names its key id), or one holding a key it was rotated to"));
                    }
                }
            }
        };
        let config: RepoConfig = config;
        if config.format != REPO_FORMAT {
            return Err(Error::config(format!(
                "repository format {} is not supported by this version of offsitedb (it reads format {REPO_FORMAT})",
                config.format
            ))
            .with_hint("upgrade offsitedb"));
        }
        // A ring of the creation key alone has no rotation to check (and costs no listing).
        let rotated = if key.ids() == [key.id()] && config.key_id == key.id().to_string() {
            Vec::new()
        } else {
            super::keys::check_rotations(store, key, &config)?
        };
        Ok(Some((config, rotated)))
    }

    /// The repository's description; `None` before the first backup created it.
    pub fn config(&self) -> Option<&RepoConfig> {
        self.config.get()
    }

    pub fn key(&self) -> &MasterKey {
        &self.key
    }

    /// Remembers the log heads this repository shows in `memory` (and checks them against it).
    pub fn remembering(mut self, memory: super::log::Memory) -> Self {
        self.memory = Some(memory);
        self
    }

    pub fn memory(&self) -> Option<&super::log::Memory> {
        self.memory.as_ref()
    }

    /// The repository's id (from `offsitedb.repo`); empty before it is created.
    pub fn id(&self) -> String {
        self.config.get().map(|c| c.id.clone()).unwrap_or_default()
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn location(&self) -> String {
        self.store.location()
    }

    /// Every complete snapshot (one with a manifest), optionally of one source, oldest first.
    /// Reads only the object listing.
    pub fn entries(&self, source: Option<&str>) -> Result<Vec<Entry>> {
        let prefix = match source {
            Some(s) => {
                check_source_name(s)?;
                format!("snapshots/{s}/")
            }
            None => "snapshots/".to_string(),
        };
        let mut manifests: BTreeMap<(String, SnapshotId), Option<u64>> = BTreeMap::new();
        let mut data: BTreeMap<(String, SnapshotId), u64> = BTreeMap::new();
        let mut drills: BTreeMap<(String, SnapshotId), Vec<SnapshotId>> = BTreeMap::new();
        for obj in self.store.list(&prefix)? {
            let parts: Vec<&str> = obj.key.split('/').collect();
            // A folder that is no source name (`snapshots/./…`, planted or from a buggy
            // store) is not a snapshot of ours: left out, so it cannot fail the listing.
            if parts
                .get(1)
                .is_none_or(|src| check_source_name(src).is_err())
            {
                continue;
            }
            if let ["snapshots", src, id, "drills", drill] = parts.as_slice() {
                if let (Ok(id), Ok(drill)) = (SnapshotId::parse(id), SnapshotId::parse(drill)) {
                    drills.entry((src.to_string(), id)).or_default().push(drill);
                }
                continue;
            }
            let ["snapshots", src, id, leaf] = parts.as_slice() else {
                continue;
            };
            let Ok(id) = SnapshotId::parse(id) else {
                continue;
            };
            let k = (src.to_string(), id);
            match *leaf {
                "manifest" => {
                    manifests.insert(k, None);
                }
                "data" => {
                    data.insert(k, obj.size);
                }
                _ => {}
            }
        }
        let mut out: Vec<Entry> = manifests
            .into_keys()
            .map(|(source, id)| {
                let k = (source, id);
                let mut d = drills.remove(&k).unwrap_or_default();
                // A listing that repeats a key must not count a drill twice.
                d.sort();
                d.dedup();
                Entry {
                    data_size: data.get(&k).copied(),
                    drills: d,
                    source: k.0,
                    id: k.1,
                }
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id).then(a.source.cmp(&b.source)));
        Ok(out)
    }

    /// Reads and checks one manifest.
    pub fn manifest(&self, source: &str, id: &SnapshotId) -> Result<Manifest> {
        let key = manifest_key(source, id);
        let plain = read_sealed(&*self.store, &self.key, &key, MANIFEST_MAX, |k| {
            wrong_key_error(k, &self.key)
        })
        .map_err(|e| e.context(format!("manifest of {source}/{id}")))?;
        parse_manifest(&plain, source, id)
    }

    /// Reads one drill record.
    pub fn drill(&self, source: &str, id: &SnapshotId, drill: &SnapshotId) -> Result<DrillRecord> {
        let key = drill_key(source, id, drill);
        let plain = read_sealed(&*self.store, &self.key, &key, DRILL_MAX, |k| {
            wrong_key_error(k, &self.key)
        })
        .map_err(|e| e.context(format!("drill record {key}")))?;
        parse_drill(&plain, source, id, drill)
    }

    /// The latest drill of a snapshot, if it has one.
    pub fn last_drill(&self, e: &Entry) -> Result<Option<DrillRecord>> {
        match e.drills.last() {
            Some(d) => self.drill(&e.source, &e.id, d).map(Some),
            None => Ok(None),
        }
    }

    /// Resolves `latest`, a full id, or a unique id prefix to a snapshot.
    pub fn resolve(&self, reference: &str, source: Option<&str>) -> Result<Entry> {
        let entries = self.entries(source)?;
        let scope = match source {
            Some(s) => format!("source {s:?}"),
            None => "the repository".to_string(),
        };
        if entries.is_empty() {
            return Err(Error::not_found(format!(
                "no snapshots in {scope} at {}",
                self.location()
            )));
        }
        if reference == "latest" {
            let sources: std::collections::BTreeSet<&str> =
                entries.iter().map(|e| e.source.as_str()).collect();
            if source.is_none() && sources.len() > 1 {
                return Err(Error::config(format!(
                    "\"latest\" is ambiguous: the repository holds snapshots of {} sources ({})",
                    sources.len(),
                    sources.into_iter().collect::<Vec<_>>().join(", ")
                ))
                .with_hint("add --source NAME"));
            }
            // A newest snapshot dated ahead of this machine's clock (a host whose clock ran
            // ahead, a forged one, or this machine's clock behind): which one is meant is not
            // for us to guess on the bad day.
            let newest = entries.last().expect("non-empty");
            let now = Timestamp::now();
            if super::future_dated(newest.id.time(), now) {
                let before = entries
                    .iter()
                    .rev()
                    .find(|e| !super::future_dated(e.id.time(), now));
                return Err(Error::config(format!(
                    "\"latest\" is unclear: the newest snapshot of {}, {}, is dated {}",
                    newest.source,
                    newest.id,
                    super::ahead("", newest.id.time(), now).trim_start()
                ))
                .with_hint(match before {
                    Some(b) => format!(
                        "check this machine's clock, then name the snapshot: {} (the newest), or {} (the newest before now)",
                        newest.id, b.id
                    ),
                    None => format!(
                        "check this machine's clock, then name the snapshot: {}",
                        newest.id
                    ),
                }));
            }
            return Ok(newest.clone());
        }
        let matches: Vec<&Entry> = entries
            .iter()
            .filter(|e| e.id.as_str().starts_with(reference))
            .collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(
                Error::not_found(format!("no snapshot {reference:?} in {scope}"))
                    .with_hint("`offsitedb list` shows the snapshots"),
            ),
            many => Err(Error::config(format!(
                "{reference:?} matches {} snapshots; give more of the id{}",
                many.len(),
                if source.is_none() {
                    " or add --source NAME"
                } else {
                    ""
                }
            ))),
        }
    }

    /// Opens a snapshot's data for reading: the compressed artifact, unsealed as it streams.
    pub fn open_data(&self, m: &Manifest) -> Result<UnsealReader<Box<dyn Read + Send>>> {
        let r = self.store.get(&m.data.key)?;
        let what = format!("snapshot {}/{}", m.source.name, m.snapshot_id);
        let reader = UnsealReader::new(r, &self.key).map_err(|e| e.context(&what))?;
        if crate::units::hex(&reader.header().salt) != m.data.salt {
            return Err(Error::integrity(format!(
                "{what}: the data object is not the one its manifest describes (different salt)"
            ))
            .with_hint("the object was replaced; restore another snapshot"));
        }
        Ok(reader)
    }
}

impl<S: ?Sized + WriteStore> Repository<S> {
    /// Opens the repository for backups. In an empty location nothing is written yet: the
    /// repository is created by [`Repository::ensure_created`], which a backup calls only once
    /// its database answered, so a failed first backup leaves the location as it was.
    pub fn open_for_writing(store: Box<S>, key: MasterKey) -> Result<Self> {
        if let Some((config, rotated)) = Self::read_config(&*store, &key)? {
            // New objects are sealed with the current key: it must be the repository's.
            if config.key_id != key.id().to_string() && !rotated.contains(&key.id()) {
                return Err(Error::key(format!(
                    "the current key of the key file (key id {}, its first key line) is not a key of the repository at {}: it was created with key id {} and records no rotation to key id {}",
                    key.id(),
                    store.location(),
                    config.key_id,
                    key.id()
                ))
                .with_hint("put the repository's current key first in the key file, or make a new key with `offsitedb key rotate -o FILE`"));
            }
            return Ok(Repository {
                store,
                key,
                config: OnceLock::from(config),
                memory: None,
            });
        }
        if let Some(other) = store.any("")? {
            return Err(Error::storage(format!(
                "{} is not empty (it holds {}) and is not an OffsiteDB repository",
                store.location(),
                other.key
            ))
            .with_hint("give an empty folder or bucket prefix for a new repository"));
        }
        Ok(Repository {
            store,
            key,
            config: OnceLock::new(),
            memory: None,
        })
    }

    /// Creates `offsitedb.repo` if this repository does not exist yet.
    pub fn ensure_created(&self) -> Result<()> {
        if self.config.get().is_some() {
            return Ok(());
        }
        let config = RepoConfig {
            format: REPO_FORMAT,
            id: {
                let mut r = [0u8; 16];
                getrandom::fill(&mut r).map_err(|e| Error::internal(format!("random: {e}")))?;
                crate::units::hex(&r)
            },
            created: Timestamp::now(),
            key_id: self.key.id().to_string(),
            created_by: format!("offsitedb {}", crate::VERSION),
        };
        let json = serde_json::to_vec(&config).expect("serializable");
        let sealed = seal_bytes(&self.key, &json)?;
        within_limit(REPO_OBJECT, &sealed, REPO_OBJECT_MAX)?;
        let config = if self.store.put_new(REPO_OBJECT, &sealed)? {
            config
        } else {
            // Another backup created it a moment ago: use theirs, if it has our key.
            Self::read_config(&*self.store, &self.key)?
                .ok_or_else(|| {
                    Error::storage(format!("{REPO_OBJECT} vanished while being created"))
                })?
                .0
        };
        let _ = self.config.set(config);
        Ok(())
    }

    /// Writes a drill record as a new object.
    pub fn commit_drill(&self, r: &DrillRecord) -> Result<()> {
        let json = serde_json::to_vec(r).expect("serializable");
        let key = drill_key(&r.source, &r.snapshot_id, &r.drill_id);
        let sealed = seal_bytes(&self.key, &json)?;
        within_limit(&format!("drill record {key}"), &sealed, DRILL_MAX)?;
        if !self.store.put_new(&key, &sealed)? {
            return Err(Error::storage(format!("{key} already exists")));
        }
        self.append_log(
            &r.source,
            super::log::Event::Drill {
                object: super::log::Logged::of(&key, &sealed),
                passed: r.passed(),
            },
        )
        .map(drop)
    }

    /// Writes a snapshot's manifest: the step that makes the snapshot exist.
    pub fn commit_manifest(&self, m: &Manifest) -> Result<()> {
        let json = serde_json::to_vec(m).expect("serializable");
        let sealed = seal_bytes(&self.key, &json)?;
        within_limit(
            &format!("the manifest of {}/{}", m.source.name, m.snapshot_id),
            &sealed,
            MANIFEST_MAX,
        )
        .map_err(|e| {
            e.with_hint(
                "a folder with this many files is too large for one source: back up its \
                 subfolders as separate sources",
            )
        })?;
        let key = manifest_key(&m.source.name, &m.snapshot_id);
        self.store.put(&key, &sealed)?;
        self.append_log(
            &m.source.name,
            super::log::Event::Snapshot {
                object: super::log::Logged::of(&key, &sealed),
            },
        )
        .map(drop)
    }
}

/// Checks the opened `offsitedb.repo`: its JSON, then its format.
pub(crate) fn parse_config(plain: &[u8]) -> Result<RepoConfig> {
    let config: RepoConfig = serde_json::from_slice(plain).map_err(|e| {
        Error::integrity(format!(
            "{REPO_OBJECT} is not a valid repository description: {e}"
        ))
    })?;
    if config.format != REPO_FORMAT {
        return Err(Error::config(format!(
            "repository format {} is not supported by this version of offsitedb (it reads format {REPO_FORMAT})",
            config.format
        ))
        .with_hint("upgrade offsitedb"));
    }
    Ok(config)
}

/// Checks an opened manifest: its version first, then its JSON, then that it is the one asked for.
pub(crate) fn parse_manifest(plain: &[u8], source: &str, id: &SnapshotId) -> Result<Manifest> {
    let key = manifest_key(source, id);
    let invalid = |e: serde_json::Error| {
        Error::integrity(format!("manifest of {source}/{id} is not valid: {e}"))
    };
    // The version first: a newer manifest may use fields this version cannot read. (Read
    // alone, not through a `serde_json::Value` of the whole manifest, which would cost
    // several times its size in memory.)
    let version = serde_json::from_slice::<Versions>(plain)
        .map_err(invalid)?
        .manifest_version;
    if version != Some(MANIFEST_VERSION as u64) {
        return Err(Error::config(format!(
            "snapshot {source}/{id} has manifest version {}, and this offsitedb reads version {MANIFEST_VERSION}",
            version.map_or("(none)".to_string(), |v| v.to_string())
        ))
        .with_hint("upgrade offsitedb"));
    }
    let m: Manifest = serde_json::from_slice(plain).map_err(invalid)?;
    // A manifest copied under another name is not that snapshot.
    if &m.snapshot_id != id || m.source.name != source {
        return Err(Error::integrity(format!(
            "manifest at {key} describes {}/{}, not {source}/{id}",
            m.source.name, m.snapshot_id
        )));
    }
    Ok(m)
}

/// Checks an opened drill record: its version, its JSON, and that it is the one asked for.
pub(crate) fn parse_drill(
    plain: &[u8],
    source: &str,
    id: &SnapshotId,
    drill: &SnapshotId,
) -> Result<DrillRecord> {
    let key = drill_key(source, id, drill);
    let invalid =
        |e: serde_json::Error| Error::integrity(format!("drill record {key} is not valid: {e}"));
    let version = serde_json::from_slice::<Versions>(plain)
        .map_err(invalid)?
        .drill_version;
    if version != Some(DRILL_VERSION as u64) {
        return Err(Error::config(format!(
            "drill record {key} has version {}, and this offsitedb reads version {DRILL_VERSION}",
            version.map_or("(none)".to_string(), |v| v.to_string())
        ))
        .with_hint("upgrade offsitedb"));
    }
    let r: DrillRecord = serde_json::from_slice(plain).map_err(invalid)?;
    if &r.snapshot_id != id || r.source != source || &r.drill_id != drill {
        return Err(Error::integrity(format!(
            "drill record at {key} describes another drill ({}/{}/{})",
            r.source, r.snapshot_id, r.drill_id
        )));
    }
    Ok(r)
}

/// The version fields of manifests and drill records, read before the rest.
#[derive(Deserialize)]
struct Versions {
    manifest_version: Option<u64>,
    drill_version: Option<u64>,
}

pub(super) fn wrong_key_error(theirs: &KeyId, ours: &MasterKey) -> Error {
    ours.missing_error("object", theirs)
}

/// Reads a small sealed object and opens it: at most `limit` bytes (see
/// [`ReadStore::get_limited`]), the header checked before anything after it is read.
pub(crate) fn read_sealed<S: ?Sized + ReadStore>(
    store: &S,
    key: &MasterKey,
    object: &str,
    limit: u64,
    wrong_key: impl FnOnce(&KeyId) -> Error,
) -> Result<Vec<u8>> {
    let mut r = store.get_limited(object, limit)?;
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match r.read(&mut header[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::from_io(e, &format!("cannot read {object}"))),
        }
    }
    // Short, not ours, or another key's: refused before the rest is read.
    if got == HEADER_LEN {
        let h = Header::decode(&header)?;
        if !key.has(&h.key_id) {
            return Err(wrong_key(&h.key_id));
        }
    }
    let mut plain = Vec::new();
    UnsealReader::new(Cursor::new(&header[..got]).chain(r), key)?
        .read_to_end(&mut plain)
        .map_err(|e| Error::from_io(e, &format!("cannot read {object}")))?;
    Ok(plain)
}

/// Refuses to write a small object its readers would refuse.
pub(crate) fn within_limit(what: &str, sealed: &[u8], limit: u64) -> Result<()> {
    if sealed.len() as u64 > limit {
        return Err(Error::config(format!(
            "{what} would be {}, over the {} limit that readers of it enforce; nothing was written",
            crate::units::bytes(sealed.len() as u64),
            crate::units::bytes(limit)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::catalog::manifest::FileRecord;
    use crate::storage::local::LocalStore;
    use crate::storage::{Object, ObjectInfo};

    /// The measurement behind `MANIFEST_MAX`: a directory manifest's entry for a file with a
    /// 100-byte path (longer than the average of /usr's 110,000 files, 67 bytes).
    #[test]
    fn a_manifest_at_its_limit_holds_a_million_files() {
        let entries: Vec<FileRecord> = (0..1000)
            .map(|i| FileRecord {
                path: format!("{:0>100}", i),
                size: 1_234_567,
                sha256: "ab".repeat(32),
            })
            .collect();
        let per_entry = serde_json::to_vec(&entries).unwrap().len() as u64 / 1000;
        assert!(
            (180..=220).contains(&per_entry),
            "{per_entry} bytes per file"
        );
        assert!(per_entry * 1_000_000 < MANIFEST_MAX, "{per_entry}");
    }

    /// A folder store that counts the bytes handed out by its readers.
    struct Counting {
        store: LocalStore,
        read: Arc<AtomicU64>,
    }

    struct CountingReader(Box<dyn Read + Send>, Arc<AtomicU64>);

    impl Read for CountingReader {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.read(buf)?;
            self.1.fetch_add(n as u64, Ordering::Relaxed);
            Ok(n)
        }
    }

    impl ReadStore for Counting {
        fn location(&self) -> String {
            self.store.location()
        }
        fn open(&self, key: &str) -> Result<Object> {
            let o = self.store.open(key)?;
            Ok(Object {
                reader: Box::new(CountingReader(o.reader, self.read.clone())),
                size: o.size,
            })
        }
        fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
            self.store.head(key)
        }
        fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
            self.store.list(prefix)
        }
    }

    #[test]
    fn small_objects_are_read_header_first_and_within_their_limit() {
        let dir = tempfile::tempdir().unwrap();
        let ours = MasterKey::from_bytes([1; 32]);
        let theirs = MasterKey::from_bytes([2; 32]);
        let w = Repository::open_for_writing(
            Box::new(LocalStore::new(dir.path().into())),
            ours.clone(),
        )
        .unwrap();
        w.ensure_created().unwrap();
        let read = Arc::new(AtomicU64::new(0));
        let store = Counting {
            store: LocalStore::new(dir.path().into()),
            read: read.clone(),
        };
        let repo = Repository::open(Box::new(store), ours.clone()).unwrap();

        // Another key's manifest of 100 MiB (a sparse file, under the limit): the key error
        // comes after its 62-byte header, nothing more is read.
        let id = SnapshotId::parse("20261121T031500Z-k3f7qa").unwrap();
        let path = dir.path().join(manifest_key("app", &id));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut sealed = seal_bytes(&theirs, b"{}").unwrap();
        sealed.truncate(HEADER_LEN);
        std::fs::write(&path, &sealed).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(100 << 20)
            .unwrap();
        read.store(0, Ordering::Relaxed);
        let e = repo.manifest("app", &id).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Key, "{e:?}");
        assert!(read.load(Ordering::Relaxed) < 1 << 20, "read {read:?}");

        // Not an OffsiteDB object at all: the same.
        std::fs::write(&path, vec![b'x'; 1000]).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(100 << 20)
            .unwrap();
        read.store(0, Ordering::Relaxed);
        let e = repo.manifest("app", &id).unwrap_err();
        assert!(e.message().contains("bad magic"), "{e:?}");
        assert!(read.load(Ordering::Relaxed) < 1 << 20, "read {read:?}");

        // Over the limit: refused from its size, without reading a byte.
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(MANIFEST_MAX + 1)
            .unwrap();
        read.store(0, Ordering::Relaxed);
        let e = repo.manifest("app", &id).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Integrity, "{e:?}");
        assert!(
            e.message().contains("256.0 MiB limit") && e.message().contains("manifest"),
            "{e:?}"
        );
        assert_eq!(read.load(Ordering::Relaxed), 0);

        // Writers refuse what readers would.
        let e = within_limit("x", &[0; 11], 10).unwrap_err();
        assert!(e.message().contains("over the 10 B limit"), "{e:?}");
    }
}
