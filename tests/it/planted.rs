//! Snapshots and drill records written through the library as an attacker holding the key, or a
//! host whose clock is wrong, could write them: a crafted tar stream sealed by the product's own
//! sink, crafted snapshot ids and times, crafted drill records. The commands under test then read
//! them from a folder repository like any other.

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use offsitedb::catalog::drill::{DRILL_VERSION, DrillRecord, DrillResult, Timings};
use offsitedb::catalog::manifest::{
    DataObject, Encryption, FileRecord, FilesRecord, MANIFEST_VERSION, Manifest, Sizes, SourceInfo,
    VerifyMethod,
};
use offsitedb::catalog::{Repository, SnapshotId, repo::data_key};
use offsitedb::crypto::MasterKey;
use offsitedb::pipeline::{Compression, Counters, sink};
use offsitedb::storage::WriteStore;
use offsitedb::storage::local::LocalStore;

use crate::common::{Cli, keygen, sha256_hex};

/// A folder repository, its key file, and the library's handle on it.
pub struct Planted {
    pub path: PathBuf,
    pub key_file: PathBuf,
    pub repo: Repository<LocalStore>,
}

impl Planted {
    /// A new repository in `dir/repo`, with its key in `dir/master.key`.
    pub fn new(dir: &Path) -> Planted {
        let key_file = keygen(dir, "master.key");
        let path = dir.join("repo");
        let key = MasterKey::load_file(&key_file, &mut |_| {}).unwrap();
        let repo =
            Repository::open_for_writing(Box::new(LocalStore::new(path.clone())), key).unwrap();
        repo.ensure_created().unwrap();
        Planted {
            path,
            key_file,
            repo,
        }
    }

    /// `offsitedb ARGS --repo PATH --key-file KEY`.
    pub fn run(&self, cli: &Cli, args: &[&str]) -> crate::common::Run {
        cli.run(&self.args(args))
    }

    pub fn args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut v = args.to_vec();
        v.extend([
            "--repo",
            self.path.to_str().unwrap(),
            "--key-file",
            self.key_file.to_str().unwrap(),
        ]);
        v
    }

    /// A directory snapshot of `source` started at `started`, whose data is the tar stream
    /// `tar` (compressed and sealed by the product's sink) and whose manifest lists `files`
    /// (path, content) as its regular files.
    pub fn folder(
        &self,
        source: &str,
        started: Timestamp,
        tar: &[u8],
        files: &[(&str, &[u8])],
    ) -> SnapshotId {
        let id = SnapshotId::new(started).unwrap();
        let key = data_key(source, &id);
        let upload = self.repo.store().upload(&key, None).unwrap();
        let compression = Compression::default();
        let spec = sink::SinkSpec {
            upload,
            key: self.repo.key(),
            compression,
            threads: 1,
            counters: Counters::default(),
        };
        let r = sink::run(spec, &mut &tar[..], None, || Ok(())).unwrap();
        let list: Vec<FileRecord> = files
            .iter()
            .map(|(p, c)| FileRecord {
                path: p.to_string(),
                size: c.len() as u64,
                sha256: sha256_hex(c),
            })
            .collect();
        let m = Manifest {
            manifest_version: MANIFEST_VERSION,
            snapshot_id: id.clone(),
            source: SourceInfo {
                name: source.into(),
                kind: offsitedb::catalog::SourceKind::Directory,
                host: "elsewhere".into(),
                port: 0,
                database: "/srv/data".into(),
                user: "0".into(),
            },
            server: Default::default(),
            dump: Default::default(),
            files: Some(FilesRecord {
                root: "/srv/data".into(),
                files: list.len() as u64,
                bytes: list.iter().map(|f| f.size).sum(),
                directories: 0,
                symlinks: 0,
                hard_links: 0,
                skipped: Vec::new(),
                list,
            }),
            started,
            finished: started,
            sizes: Sizes {
                plain_bytes: r.plain.bytes,
                compressed_bytes: r.compressed.bytes,
                stored_bytes: r.stored.bytes,
            },
            compression,
            encryption: Encryption {
                format: offsitedb::crypto::seal::FORMAT_VERSION,
                algorithm: "AES-256-GCM".into(),
                key_id: self.repo.key().id().to_string(),
                chunk_size: offsitedb::crypto::seal::DEFAULT_CHUNK_SIZE,
            },
            data: DataObject {
                key,
                salt: offsitedb::units::hex(&r.salt),
                sha256_stored: r.stored.sha256,
                sha256_compressed: r.compressed.sha256,
            },
            verification: Default::default(),
            created_by: "planted by a test".into(),
        };
        self.repo.commit_manifest(&m).unwrap();
        id
    }

    /// A directory snapshot of an empty folder.
    pub fn empty_folder(&self, source: &str, started: Timestamp) -> SnapshotId {
        let tar = tar::Builder::new(Vec::new()).into_inner().unwrap();
        self.folder(source, started, &tar, &[])
    }

    /// A drill record of `source/id`, dated `at`, that passed or failed.
    pub fn drill(&self, source: &str, id: &SnapshotId, at: Timestamp, passed: bool) -> SnapshotId {
        let drill_id = SnapshotId::new(at).unwrap();
        self.repo
            .commit_drill(&DrillRecord {
                drill_version: DRILL_VERSION,
                drill_id: drill_id.clone(),
                snapshot_id: id.clone(),
                source: source.into(),
                result: if passed {
                    DrillResult::Passed
                } else {
                    DrillResult::Failed
                },
                started: at,
                finished: at,
                timings: Timings::default(),
                target: "a temporary folder".into(),
                server_version: String::new(),
                pg_restore_version: String::new(),
                jobs: 1,
                method: VerifyMethod::FileDigests,
                tables: Vec::new(),
                problems: if passed {
                    Vec::new()
                } else {
                    vec!["planted: a file differs from the manifest".into()]
                },
                notes: Vec::new(),
                created_by: "planted by a test".into(),
            })
            .unwrap();
        drill_id
    }

    /// The drill record object of `source/id/drill` on disk.
    pub fn drill_file(&self, source: &str, id: &SnapshotId, drill: &SnapshotId) -> PathBuf {
        self.path
            .join(offsitedb::catalog::repo::drill_key(source, id, drill))
    }
}
