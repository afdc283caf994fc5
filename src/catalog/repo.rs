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
*/

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::OnceLock;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::drill::{DRILL_VERSION, DrillRecord};
use super::ids::{SnapshotId, check_source_name};
use super::manifest::{MANIFEST_VERSION, Manifest};
use crate::crypto::seal::{HEADER_LEN, Header};
use crate::crypto::{MasterKey, UnsealReader, seal_bytes, unseal_bytes};
use crate::error::{Error, ErrorKind, Result};
use crate::storage::{ReadStore, WriteStore};

pub const REPO_OBJECT: &str = "offsitedb.repo";
pub const REPO_FORMAT: u32 = 1;

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
}

impl<S: ?Sized + ReadStore> Repository<S> {
    /// Opens an existing repository and checks that `key` is its key.
    pub fn open(store: Box<S>, key: MasterKey) -> Result<Self> {
        match Self::read_config(&*store, &key)? {
            Some(config) => Ok(Repository {
                store,
                key,
                config: OnceLock::from(config),
            }),
            None => Err(Error::not_found(format!(
                "no OffsiteDB repository at {}",
                store.location()
            ))
            .with_hint("check the repository URL; a repository is created by the first backup into an empty location")),
        }
    }

    fn read_config(store: &S, key: &MasterKey) -> Result<Option<RepoConfig>> {
        let sealed = match store.get_bytes(REPO_OBJECT) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if sealed.len() >= HEADER_LEN {
            let h = Header::decode(sealed[..HEADER_LEN].try_into().unwrap())
                .map_err(|e| e.context(format!("{REPO_OBJECT} in {}", store.location())))?;
            if h.key_id != key.id() {
                return Err(Error::key(format!(
                    "the repository at {} was created with key id {}, but the key given has key id {}",
                    store.location(),
                    h.key_id,
                    key.id()
                ))
                .with_hint("use the key file this repository was created with (its first line names its key id)"));
            }
        }
        let plain = unseal_bytes(key, &sealed)
            .map_err(|e| e.context(format!("{REPO_OBJECT} in {}", store.location())))?;
        let config: RepoConfig = serde_json::from_slice(&plain).map_err(|e| {
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
        Ok(Some(config))
    }

    /// The repository's description; `None` before the first backup created it.
    pub fn config(&self) -> Option<&RepoConfig> {
        self.config.get()
    }

    pub fn key(&self) -> &MasterKey {
        &self.key
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
                d.sort();
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
        let sealed = self.store.get_bytes(&key)?;
        let plain = unseal_bytes(&self.key, &sealed)
            .map_err(|e| e.context(format!("manifest of {source}/{id}")))?;
        let invalid = |e: serde_json::Error| {
            Error::integrity(format!("manifest of {source}/{id} is not valid: {e}"))
        };
        let value: serde_json::Value = serde_json::from_slice(&plain).map_err(invalid)?;
        // The version first: a newer manifest may use fields this version cannot read.
        let version = value.get("manifest_version").and_then(|v| v.as_u64());
        if version != Some(MANIFEST_VERSION as u64) {
            return Err(Error::config(format!(
                "snapshot {source}/{id} has manifest version {}, and this offsitedb reads version {MANIFEST_VERSION}",
                version.map_or("(none)".to_string(), |v| v.to_string())
            ))
            .with_hint("upgrade offsitedb"));
        }
        let m: Manifest = serde_json::from_value(value).map_err(invalid)?;
        // A manifest copied under another name is not that snapshot.
        if &m.snapshot_id != id || m.source.name != source {
            return Err(Error::integrity(format!(
                "manifest at {key} describes {}/{}, not {source}/{id}",
                m.source.name, m.snapshot_id
            )));
        }
        Ok(m)
    }

    /// Reads one drill record.
    pub fn drill(&self, source: &str, id: &SnapshotId, drill: &SnapshotId) -> Result<DrillRecord> {
        let key = drill_key(source, id, drill);
        let plain = unseal_bytes(&self.key, &self.store.get_bytes(&key)?)
            .map_err(|e| e.context(format!("drill record {key}")))?;
        let invalid = |e: serde_json::Error| {
            Error::integrity(format!("drill record {key} is not valid: {e}"))
        };
        let value: serde_json::Value = serde_json::from_slice(&plain).map_err(invalid)?;
        let version = value.get("drill_version").and_then(|v| v.as_u64());
        if version != Some(DRILL_VERSION as u64) {
            return Err(Error::config(format!(
                "drill record {key} has version {}, and this offsitedb reads version {DRILL_VERSION}",
                version.map_or("(none)".to_string(), |v| v.to_string())
            ))
            .with_hint("upgrade offsitedb"));
        }
        let r: DrillRecord = serde_json::from_value(value).map_err(invalid)?;
        if &r.snapshot_id != id || r.source != source || &r.drill_id != drill {
            return Err(Error::integrity(format!(
                "drill record at {key} describes another drill ({}/{}/{})",
                r.source, r.snapshot_id, r.drill_id
            )));
        }
        Ok(r)
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
            return Ok(entries.last().expect("non-empty").clone());
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
        if let Some(config) = Self::read_config(&*store, &key)? {
            return Ok(Repository {
                store,
                key,
                config: OnceLock::from(config),
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
        let config = if self
            .store
            .put_new(REPO_OBJECT, &seal_bytes(&self.key, &json)?)?
        {
            config
        } else {
            // Another backup created it a moment ago: use theirs, if it has our key.
            Self::read_config(&*self.store, &self.key)?.ok_or_else(|| {
                Error::storage(format!("{REPO_OBJECT} vanished while being created"))
            })?
        };
        let _ = self.config.set(config);
        Ok(())
    }

    /// Writes a drill record as a new object.
    pub fn commit_drill(&self, r: &DrillRecord) -> Result<()> {
        let json = serde_json::to_vec(r).expect("serializable");
        let key = drill_key(&r.source, &r.snapshot_id, &r.drill_id);
        if self.store.put_new(&key, &seal_bytes(&self.key, &json)?)? {
            Ok(())
        } else {
            Err(Error::storage(format!("{key} already exists")))
        }
    }

    /// Writes a snapshot's manifest: the step that makes the snapshot exist.
    pub fn commit_manifest(&self, m: &Manifest) -> Result<()> {
        let json = serde_json::to_vec(m).expect("serializable");
        self.store.put(
            &manifest_key(&m.source.name, &m.snapshot_id),
            &seal_bytes(&self.key, &json)?,
        )
    }
}
