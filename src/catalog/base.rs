/*!
Base backups: a physical copy of a whole cluster (`pg_basebackup`, tar format), the starting point
of a point-in-time restore. They live beside the snapshots, under their own folder:

```text
base/<source>/<backup-id>/data       sealed, compressed tar (pg_basebackup -Ft -X fetch)
base/<source>/<backup-id>/backup_manifest  sealed, compressed: the server's backup_manifest, a copy
                                            of the one inside the tar (what an incremental is based on)
base/<source>/<backup-id>/manifest   sealed JSON, written LAST: no manifest, no base backup
```

The manifest says where in the WAL the copy starts and ends: a restore needs the WAL archive from
`start_lsn` on (the `start_wal` segment and after) and may stop at any point after `end_lsn`, where
the copy is consistent. Ids have the snapshots' form (`20261204T031500Z-k3f9qa`).

An incremental base backup (PostgreSQL 17+, `pg_basebackup --incremental`) holds only what
changed since its parent; its manifest names the parent and the chain down to the full backup
([`Incremental`]), and is of version 2, so that an offsitedb that cannot restore one says
"upgrade" instead of extracting half a database. Full backups stay version 1.
*/

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::ids::{SnapshotId, check_source_name};
use super::manifest::{DataObject, DumpRecord, Encryption, ServerRecord, Sizes, SourceInfo};
use super::repo::{Repository, read_sealed, within_limit, wrong_key_error};
use crate::crypto::{UnsealReader, seal_bytes};
use crate::error::{Error, Result};
use crate::pipeline::Compression;
use crate::storage::{ReadStore, WriteStore};
use crate::wal::name::{Lsn, WalName};

pub const BASE_MANIFEST_VERSION: u32 = 1;
/// The version of an incremental base backup's manifest (it has [`BaseManifest::incremental`]).
pub const BASE_MANIFEST_VERSION_INCREMENTAL: u32 = 2;
/// A base backup manifest lists tablespaces, not files: small.
pub const BASE_MANIFEST_MAX: u64 = 16 << 20;

pub fn base_prefix(source: &str) -> String {
    format!("base/{source}/")
}

pub fn base_data_key(source: &str, id: &SnapshotId) -> String {
    format!("base/{source}/{id}/data")
}

pub fn base_manifest_key(source: &str, id: &SnapshotId) -> String {
    format!("base/{source}/{id}/manifest")
}

/// The separate copy of the server's `backup_manifest` (written since incremental backups).
pub fn server_manifest_key(source: &str, id: &SnapshotId) -> String {
    format!("base/{source}/{id}/backup_manifest")
}

/// What an incremental base backup is based on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Incremental {
    /// The base backup whose `backup_manifest` pg_basebackup was given.
    pub parent: SnapshotId,
    /// Every base backup a restore combines before this one, oldest (the full backup) first;
    /// it ends with `parent`.
    pub chain: Vec<SnapshotId>,
}

/// Everything known about one base backup. docs/FORMAT.md describes every field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseManifest {
    pub base_manifest_version: u32,
    pub backup_id: SnapshotId,
    pub source: SourceInfo,
    /// The server copied; `system_identifier` comes from the copy's own `global/pg_control`.
    pub server: ServerRecord,
    /// The timeline the copy was taken on.
    pub timeline: u32,
    /// Where recovery starts (the backup's checkpoint redo point).
    pub start_lsn: Lsn,
    /// Where the copy becomes consistent: the earliest point it can be restored to.
    pub end_lsn: Lsn,
    /// The server's `wal_segment_size`.
    pub segment_size: u64,
    /// The first WAL segment a restore needs.
    pub start_wal: String,
    /// When the copy started and ended, by the server's clock (`clock_timestamp()` read just
    /// before pg_basebackup started and just after it ended, so the copy lies within; our clock
    /// when the server could not be asked).
    pub started: Timestamp,
    pub finished: Timestamp,
    pub sizes: Sizes,
    pub compression: Compression,
    pub encryption: Encryption,
    pub data: DataObject,
    /// How the copy was made: pg_basebackup's version and arguments (no connection string);
    /// `format` is "tar".
    pub tool: DumpRecord,
    /// Whether the server's own `backup_manifest` is in the tar (PostgreSQL 13 and later), for
    /// `pg_verifybackup`.
    pub server_manifest: bool,
    /// Tablespaces besides the default ones (always empty today: a backup with any is refused).
    #[serde(default)]
    pub tablespaces: Vec<String>,
    /// Set for an incremental backup (manifest version 2): what it is based on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<Incremental>,
    pub created_by: String,
}

/// What a base backup source learned, for its manifest; the rest comes from the pipeline.
#[derive(Clone, Debug)]
pub struct BaseDescribed {
    pub source: SourceInfo,
    pub server: ServerRecord,
    pub timeline: u32,
    pub start_lsn: Lsn,
    pub end_lsn: Lsn,
    pub segment_size: u64,
    pub start_wal: String,
    pub started: Timestamp,
    pub finished: Timestamp,
    pub tool: DumpRecord,
    pub server_manifest: bool,
    pub tablespaces: Vec<String>,
    pub incremental: Option<Incremental>,
}

impl BaseManifest {
    /// The manifest of a base backup whose data object `data_key` the sink stored (`stored`:
    /// what each stage saw), sealed with `key`. Every size and hash comes from the stages.
    pub fn assemble(
        id: SnapshotId,
        d: BaseDescribed,
        stored: &crate::pipeline::sink::SinkResult,
        data_key: String,
        compression: Compression,
        key: &crate::crypto::MasterKey,
    ) -> BaseManifest {
        BaseManifest {
            base_manifest_version: if d.incremental.is_some() {
                BASE_MANIFEST_VERSION_INCREMENTAL
            } else {
                BASE_MANIFEST_VERSION
            },
            backup_id: id,
            source: d.source,
            server: d.server,
            timeline: d.timeline,
            start_lsn: d.start_lsn,
            end_lsn: d.end_lsn,
            segment_size: d.segment_size,
            start_wal: d.start_wal,
            started: d.started,
            finished: d.finished,
            sizes: Sizes::stored(stored),
            compression,
            encryption: Encryption::sealed_with(key),
            data: DataObject::stored(data_key, stored),
            tool: d.tool,
            server_manifest: d.server_manifest,
            tablespaces: d.tablespaces,
            incremental: d.incremental,
            created_by: format!("offsitedb {}", crate::VERSION),
        }
    }

    /// The first segment a restore of this copy needs, parsed.
    pub fn start_segment(&self) -> Result<WalName> {
        WalName::parse(&self.start_wal)
    }

    /// Every base backup a restore of this one combines, oldest (the full) first, this one
    /// last; just this one for a full backup.
    pub fn chain_ids(&self) -> Vec<SnapshotId> {
        let mut v = self
            .incremental
            .as_ref()
            .map(|i| i.chain.clone())
            .unwrap_or_default();
        v.push(self.backup_id.clone());
        v
    }

    pub fn duration_secs(&self) -> f64 {
        (self.finished - self.started)
            .total(jiff::Unit::Second)
            .unwrap_or(0.0)
    }
}

/// One base backup as the listing shows it, before its manifest is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseEntry {
    pub source: String,
    pub id: SnapshotId,
    pub data_size: Option<u64>,
}

fn invalid_chain(source: &str, id: &SnapshotId) -> Error {
    Error::integrity(format!(
        "base backup manifest of {source}/{id} is not valid: its version and its chain of base backups disagree"
    ))
}

/// Checks an opened base backup manifest: its version, its JSON, its chain, and that it is the
/// one asked for.
pub(crate) fn parse_base_manifest(
    plain: &[u8],
    source: &str,
    id: &SnapshotId,
) -> Result<BaseManifest> {
    let key = base_manifest_key(source, id);
    let invalid = |e: serde_json::Error| {
        Error::integrity(format!(
            "base backup manifest of {source}/{id} is not valid: {e}"
        ))
    };
    let version = serde_json::from_slice::<Version>(plain)
        .map_err(invalid)?
        .base_manifest_version;
    let known = [BASE_MANIFEST_VERSION, BASE_MANIFEST_VERSION_INCREMENTAL];
    if !version.is_some_and(|v| known.iter().any(|k| *k as u64 == v)) {
        return Err(Error::config(format!(
            "base backup {source}/{id} has manifest version {}, and this offsitedb reads versions {BASE_MANIFEST_VERSION} and {BASE_MANIFEST_VERSION_INCREMENTAL}",
            version.map_or("(none)".to_string(), |v| v.to_string())
        ))
        .with_hint("upgrade offsitedb"));
    }
    let m: BaseManifest = serde_json::from_slice(plain).map_err(invalid)?;
    let incremental = version == Some(BASE_MANIFEST_VERSION_INCREMENTAL as u64);
    if incremental != m.incremental.is_some()
        || m.incremental
            .as_ref()
            .is_some_and(|i| i.chain.last() != Some(&i.parent) || i.chain.contains(id))
    {
        return Err(invalid_chain(source, id));
    }
    if &m.backup_id != id || m.source.name != source {
        return Err(Error::integrity(format!(
            "manifest at {key} describes base backup {}/{}, not {source}/{id}",
            m.source.name, m.backup_id
        )));
    }
    Ok(m)
}

#[derive(Deserialize)]
struct Version {
    base_manifest_version: Option<u64>,
}

impl<S: ?Sized + ReadStore> Repository<S> {
    /// The committed base backups (those with a manifest), oldest first. Reads only the listing.
    pub fn base_entries(&self, source: Option<&str>) -> Result<Vec<BaseEntry>> {
        let prefix = match source {
            Some(s) => {
                check_source_name(s)?;
                base_prefix(s)
            }
            None => "base/".to_string(),
        };
        let mut with_manifest = std::collections::BTreeSet::new();
        let mut sizes = std::collections::BTreeMap::new();
        for obj in self.store().list(&prefix)? {
            let parts: Vec<&str> = obj.key.split('/').collect();
            let ["base", src, id, leaf] = parts.as_slice() else {
                continue;
            };
            if check_source_name(src).is_err() {
                continue;
            }
            let Ok(id) = SnapshotId::parse(id) else {
                continue;
            };
            match *leaf {
                "manifest" => {
                    with_manifest.insert((src.to_string(), id));
                }
                "data" => {
                    sizes.insert((src.to_string(), id), obj.size);
                }
                _ => {}
            }
        }
        let mut out: Vec<BaseEntry> = with_manifest
            .into_iter()
            .map(|(source, id)| BaseEntry {
                data_size: sizes.get(&(source.clone(), id.clone())).copied(),
                source,
                id,
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id).then(a.source.cmp(&b.source)));
        Ok(out)
    }

    /// Reads and checks one base backup manifest.
    pub fn base_manifest(&self, source: &str, id: &SnapshotId) -> Result<BaseManifest> {
        let key = base_manifest_key(source, id);
        let plain = read_sealed(self.store(), self.key(), &key, BASE_MANIFEST_MAX, |k| {
            wrong_key_error(k, self.key())
        })
        .map_err(|e| e.context(format!("base backup manifest of {source}/{id}")))?;
        parse_base_manifest(&plain, source, id)
    }

    /// Every base backup manifest of a source, oldest first. Ids order by the second a backup
    /// started, then at random: backups of one second are ordered by where they end in the WAL.
    pub fn base_manifests(&self, source: &str) -> Result<Vec<BaseManifest>> {
        let mut all: Vec<BaseManifest> = self
            .base_entries(Some(source))?
            .iter()
            .map(|e| self.base_manifest(&e.source, &e.id))
            .collect::<Result<_>>()?;
        all.sort_by_key(|m| (m.backup_id.time(), m.end_lsn, m.finished));
        Ok(all)
    }

    /// Resolves `LATEST` (any case), a full id, or a unique id prefix to a base backup.
    pub fn resolve_base(&self, reference: &str, source: &str) -> Result<BaseManifest> {
        let entries = self.base_entries(Some(source))?;
        if entries.is_empty() {
            return Err(Error::not_found(format!(
                "no base backups of source {source:?} at {}",
                self.location()
            ))
            .with_hint(format!(
                "take one with: offsitedb backup-push --source {source}"
            )));
        }
        let found: Vec<&BaseEntry> = if reference.eq_ignore_ascii_case("latest") {
            // Ids order by the second they started, then at random: of backups started in the
            // same second, the newest is the one that ends furthest in the WAL.
            // As for snapshots ([`Repository::resolve`]): a newest base backup dated ahead of
            // this machine's clock is not taken for "latest" on the bad day, nor silently
            // skipped; the person names the one meant.
            let now = Timestamp::now();
            let last = entries.last().expect("not empty");
            if super::future_dated(last.id.time(), now) {
                let before = entries
                    .iter()
                    .rev()
                    .find(|e| !super::future_dated(e.id.time(), now));
                return Err(Error::config(format!(
                    "\"latest\" is unclear: the newest base backup of {source}, {}, is dated {}",
                    last.id,
                    super::ahead("", last.id.time(), now).trim_start()
                ))
                .with_hint(match before {
                    Some(b) => format!(
                        "check this machine's clock, then name the base backup: {} (the newest), or {} (the newest before now)",
                        last.id, b.id
                    ),
                    None => format!(
                        "check this machine's clock, then name the base backup: {}",
                        last.id
                    ),
                }));
            }
            let newest = last.id.time();
            let mut same: Vec<BaseManifest> = entries
                .iter()
                .filter(|e| e.id.time() == newest)
                .map(|e| self.base_manifest(&e.source, &e.id))
                .collect::<Result<_>>()?;
            same.sort_by_key(|m| (m.end_lsn, m.finished));
            return Ok(same.pop().expect("the newest entry is in it"));
        } else {
            entries
                .iter()
                .filter(|e| e.id.as_str().starts_with(reference))
                .collect()
        };
        match found.as_slice() {
            [one] => self.base_manifest(&one.source, &one.id),
            [] => Err(Error::not_found(format!(
                "no base backup {reference:?} of source {source:?}"
            ))
            .with_hint(format!(
                "list them with: offsitedb backup-list --source {source}"
            ))),
            _ => Err(Error::config(format!(
                "{reference:?} matches {} base backups of {source:?}; give more of the id",
                found.len()
            ))),
        }
    }

    /// Opens a base backup's data: the compressed tar, unsealed as it streams, refused if it is
    /// not the object the manifest describes.
    pub fn open_base_data(
        &self,
        m: &BaseManifest,
    ) -> Result<UnsealReader<Box<dyn std::io::Read + Send>>> {
        let r = self.store().get(&m.data.key)?;
        let what = format!("base backup {}/{}", m.source.name, m.backup_id);
        let reader = UnsealReader::new(r, self.key()).map_err(|e| e.context(&what))?;
        if crate::units::hex(&reader.header().salt) != m.data.salt {
            return Err(Error::integrity(format!(
                "{what}: the data object is not the one its manifest describes (different salt)"
            ))
            .with_hint("the object was replaced; restore from another base backup"));
        }
        Ok(reader)
    }
}

impl<S: ?Sized + ReadStore> Repository<S> {
    /// The stored copy of base backup `m`'s server `backup_manifest` ([`server_manifest_key`]),
    /// unsealed and decompressed as it streams; `None` when there is none (a backup taken
    /// before the copy was stored, or one whose manifest was too large to keep).
    pub fn open_server_manifest(
        &self,
        m: &BaseManifest,
    ) -> Result<Option<Box<dyn std::io::Read + Send>>> {
        let key = server_manifest_key(&m.source.name, &m.backup_id);
        let r = match self.store().get(&key) {
            Ok(r) => r,
            Err(e) if e.kind() == crate::error::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let reader = UnsealReader::new(r, self.key()).map_err(|e| e.context(&key))?;
        Ok(Some(Box::new(crate::pipeline::decompressor(
            reader,
            m.compression.algorithm,
        )?)))
    }
}

impl<S: ?Sized + WriteStore> Repository<S> {
    /// Stores the copy of a base backup's server `backup_manifest` (`compressed` with the
    /// backup's own compression), sealed; before the backup's manifest is committed.
    pub fn put_server_manifest(
        &self,
        source: &str,
        id: &SnapshotId,
        compressed: &[u8],
    ) -> Result<()> {
        let key = server_manifest_key(source, id);
        let sealed = seal_bytes(self.key(), compressed)?;
        if self.store().put_new(&key, &sealed)? {
            Ok(())
        } else {
            Err(Error::storage(format!("{key} already exists")))
        }
    }

    /// Writes a base backup's manifest: the step that makes it exist.
    pub fn commit_base_manifest(&self, m: &BaseManifest) -> Result<()> {
        let json = serde_json::to_vec(m).expect("serializable");
        let sealed = seal_bytes(self.key(), &json)?;
        let key = base_manifest_key(&m.source.name, &m.backup_id);
        within_limit(
            &format!("base backup manifest {key}"),
            &sealed,
            BASE_MANIFEST_MAX,
        )?;
        if !self.store().put_new(&key, &sealed)? {
            return Err(Error::storage(format!("{key} already exists")));
        }
        self.append_log(
            &m.source.name,
            super::log::Event::Base {
                object: super::log::Logged::of(&key, &sealed),
            },
        )
        .map(drop)
    }
}
