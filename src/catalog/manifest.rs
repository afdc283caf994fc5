/*!
The snapshot manifest: everything known about one snapshot, sealed and written last (no
manifest, no snapshot). Its sizes and hashes come straight from the pipeline stages that saw the
bytes. docs/FORMAT.md describes every field; `manifest_version` changes when a field changes
meaning.
*/

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::ids::SnapshotId;
use crate::pipeline::Compression;

pub const MANIFEST_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub manifest_version: u32,
    pub snapshot_id: SnapshotId,
    pub source: SourceInfo,
    /// The database server (empty, and left out, for a directory snapshot).
    #[serde(default, skip_serializing_if = "ServerRecord::is_empty")]
    pub server: ServerRecord,
    /// How the database was dumped (empty, and left out, for a directory snapshot).
    #[serde(default, skip_serializing_if = "DumpRecord::is_empty")]
    pub dump: DumpRecord,
    /// A directory snapshot's files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<FilesRecord>,
    /// When the dump started: the snapshot's point in time, to within pg_dump's start-up.
    pub started: Timestamp,
    pub finished: Timestamp,
    pub sizes: Sizes,
    pub compression: Compression,
    pub encryption: Encryption,
    pub data: DataObject,
    /// What a drill compares the restored database with.
    #[serde(default)]
    pub verification: Verification,
    /// `offsitedb <version>` that wrote it.
    pub created_by: String,
}

/// What a source is: a database (dumped with pg_dump) or a folder (a tar stream). Written in
/// manifests and read from `[[source]] kind` as its lowercase name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    #[default]
    Postgres,
    Directory,
}

impl SourceKind {
    /// For people: "database", "folder".
    pub fn label(self) -> &'static str {
        match self {
            SourceKind::Postgres => "database",
            SourceKind::Directory => "folder",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Postgres => "postgres",
            SourceKind::Directory => "directory",
        }
    }
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceInfo {
    pub name: String,
    /// Then for a folder, host is the machine's name and database the folder.
    pub kind: SourceKind,
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerRecord {
    pub version: String,
    pub version_num: u32,
    pub major: u32,
    pub system_identifier: Option<String>,
    pub in_recovery: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DumpRecord {
    pub tool: String,
    pub version: String,
    pub major: u32,
    /// "custom" (pg_dump -Fc).
    pub format: String,
    /// The arguments given, connection string excluded.
    pub arguments: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sizes {
    /// pg_dump's output.
    pub plain_bytes: u64,
    /// After compression: the artifact `offsitedb decrypt` writes.
    pub compressed_bytes: u64,
    /// After sealing: the object in the repository.
    pub stored_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Encryption {
    /// Sealed format version (docs/FORMAT.md).
    pub format: u8,
    pub algorithm: String,
    pub key_id: String,
    pub chunk_size: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataObject {
    /// Key relative to the repository root.
    pub key: String,
    /// The sealed header's salt (hex): it identifies this exact object, so a data object
    /// swapped in from another snapshot is refused before a single byte is used.
    pub salt: String,
    pub sha256_stored: String,
    pub sha256_compressed: String,
}

/// How the expected content was taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyMethod {
    /// Rows and a content digest per table, read from the archive as it streamed by.
    ArchiveDigest,
    /// The archive could not be read: exact row counts taken in the dump's own snapshot.
    SnapshotCounts,
    /// Neither was possible: a drill can only prove the archive restores.
    #[default]
    None,
    /// A directory snapshot: every file's size and SHA-256 (in `files`).
    FileDigests,
}

impl VerifyMethod {
    pub fn label(self) -> &'static str {
        match self {
            VerifyMethod::ArchiveDigest => "rows and content digests from the archive",
            VerifyMethod::SnapshotCounts => "row counts in the dump's snapshot",
            VerifyMethod::None => "none",
            VerifyMethod::FileDigests => "every file's size and SHA-256",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verification {
    pub method: VerifyMethod,
    /// Why a weaker method was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The custom archive's format version, e.g. "1.14.0".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_version: Option<String>,
    /// The settings that shape COPY text and that pg_dump does not set itself.
    pub session: SessionSettings,
    pub tables: Vec<TableRecord>,
    /// Large objects as one pseudo-table: rows = objects, digest over (oid, content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub large_objects: Option<TableRecord>,
    /// Roles that own objects in the dump (drills restore without owners).
    #[serde(default)]
    pub owners: Vec<String>,
    /// Extensions the dump creates.
    #[serde(default)]
    pub extensions: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSettings {
    /// The archive's client encoding (every COPY byte is in it).
    pub client_encoding: String,
    pub timezone: String,
    pub bytea_output: String,
    pub lc_monetary: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableRecord {
    pub schema: String,
    pub name: String,
    pub rows: u64,
    /// Sum of the rows' XXH3-128 hashes mod 2^128, 32 hex digits; `None` with counts only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// pg_dump's `COPY … FROM stdin;` for the table (its exact column list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<String>,
}

impl ServerRecord {
    pub fn is_empty(&self) -> bool {
        self.version.is_empty()
    }
}

impl DumpRecord {
    pub fn is_empty(&self) -> bool {
        self.tool.is_empty()
    }
}

/// A directory snapshot: a tar stream of the folder, and what it held.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesRecord {
    /// The folder backed up.
    pub root: String,
    /// Regular files (hard links to an earlier file not counted again) and their bytes.
    pub files: u64,
    pub bytes: u64,
    pub directories: u64,
    pub symlinks: u64,
    pub hard_links: u64,
    /// What was left out (sockets, devices, fifos, unreadable entries), one line each.
    #[serde(default)]
    pub skipped: Vec<String>,
    /// Every regular file, in archive order.
    pub list: Vec<FileRecord>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRecord {
    /// Relative to the root; bytes that are not UTF-8 (and `%`) written as `%XX`.
    pub path: String,
    pub size: u64,
    /// SHA-256 of the content, hex.
    pub sha256: String,
}

impl TableRecord {
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

/// What a source learned while it was backed up, for its manifest: who it is, and what a drill
/// will compare the restore with. The rest of the manifest comes from the pipeline.
#[derive(Clone, Debug)]
pub struct Described {
    pub source: SourceInfo,
    pub server: ServerRecord,
    pub dump: DumpRecord,
    pub files: Option<FilesRecord>,
    pub verification: Verification,
}

impl Sizes {
    /// What the sink's stages counted.
    pub fn stored(s: &crate::pipeline::sink::SinkResult) -> Sizes {
        Sizes {
            plain_bytes: s.plain.bytes,
            compressed_bytes: s.compressed.bytes,
            stored_bytes: s.stored.bytes,
        }
    }
}

impl Encryption {
    /// The sealed format this version writes, with `key`.
    pub fn sealed_with(key: &crate::crypto::MasterKey) -> Encryption {
        Encryption {
            format: crate::crypto::seal::FORMAT_VERSION,
            algorithm: "AES-256-GCM".into(),
            key_id: key.id().to_string(),
            chunk_size: crate::crypto::seal::DEFAULT_CHUNK_SIZE,
        }
    }
}

impl DataObject {
    /// The object the sink stored under `key`.
    pub fn stored(key: String, s: &crate::pipeline::sink::SinkResult) -> DataObject {
        DataObject {
            key,
            salt: crate::units::hex(&s.salt),
            sha256_stored: s.stored.sha256.clone(),
            sha256_compressed: s.compressed.sha256.clone(),
        }
    }
}

impl Manifest {
    /// The manifest of a snapshot whose data object `data_key` the sink stored (`stored`: what
    /// each stage saw), sealed with `key`. Every size and hash comes from the stages; nothing is
    /// recomputed.
    #[allow(clippy::too_many_arguments)]
    pub fn assemble(
        id: SnapshotId,
        started: Timestamp,
        finished: Timestamp,
        described: Described,
        stored: &crate::pipeline::sink::SinkResult,
        data_key: String,
        compression: Compression,
        key: &crate::crypto::MasterKey,
    ) -> Manifest {
        Manifest {
            manifest_version: MANIFEST_VERSION,
            snapshot_id: id,
            source: described.source,
            server: described.server,
            dump: described.dump,
            files: described.files,
            started,
            finished,
            sizes: Sizes::stored(stored),
            compression,
            encryption: Encryption::sealed_with(key),
            data: DataObject::stored(data_key, stored),
            verification: described.verification,
            created_by: format!("offsitedb {}", crate::VERSION),
        }
    }

    pub fn duration_secs(&self) -> f64 {
        (self.finished - self.started)
            .total(jiff::Unit::Second)
            .unwrap_or(0.0)
    }

    /// The file name a decrypted artifact should have, e.g. `app-20261121T031500Z-k3f9qa.dump.gz`
    /// (`.tar.gz` for a directory).
    pub fn artifact_name(&self) -> String {
        format!(
            "{}-{}.{}.{}",
            self.source.name,
            self.snapshot_id,
            if self.is_directory() { "tar" } else { "dump" },
            self.compression.extension()
        )
    }

    /// A snapshot of a folder, not of a database.
    pub fn is_directory(&self) -> bool {
        self.source.kind == SourceKind::Directory
    }
}
