/*!
`offsitedb backup`: one streaming pass from pg_dump into the repository, in constant memory and
without a temporary file:

```text
pg_dump -Fc -Z0 ─► count ─► compress (all cores) ─► sha256 ─► seal ─► sha256 ─► upload
```

The data object is uploaded first; the manifest, written last, is what makes the snapshot exist.
Any failure before that aborts the upload, so a failed backup leaves nothing anyone can see.
*/

use std::path::PathBuf;
use std::process::Command;

use jiff::Timestamp;

use crate::catalog::manifest::{
    DataObject, DumpRecord, Encryption, MANIFEST_VERSION, ServerRecord, Sizes, SourceInfo,
};
use crate::catalog::repo::data_key;
use crate::catalog::{Manifest, Repository, SnapshotId};
use crate::config::SourceSpec;
use crate::crypto::SealWriter;
use crate::crypto::seal::DEFAULT_CHUNK_SIZE;
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::{Compressor, Counters, MeasureWriter, Progress, copy_large};
use crate::postgres::{self, PgProgram, binaries};
use crate::process::{ChildProcess, Exit};
use crate::storage::WriteStore;

/// Incomplete uploads of a source older than this are leftovers of a crashed backup.
const STALE_UPLOAD_HOURS: i64 = 48;

#[derive(Default)]
pub struct BackupOptions {
    pub pg_bin_dirs: Vec<PathBuf>,
    /// Show a progress line on a terminal.
    pub progress: bool,
    /// Compression threads; 0 = one per core.
    pub threads: usize,
}

/// Backs up one database into the repository and returns the committed manifest.
/// `note` receives remarks worth a line on stderr (cleanups, fallbacks).
pub fn run<S: WriteStore + ?Sized>(
    repo: &Repository<S>,
    source: &SourceSpec,
    opts: &BackupOptions,
    note: &mut dyn FnMut(String),
) -> Result<Manifest> {
    let ci = &source.conninfo;
    let target = ci.redacted();

    // Our own connection first: a wrong password or a missing database is reported plainly,
    // before anything is uploaded.
    let mut client = postgres::connect(ci, "the source database")?;
    let info = postgres::server_info(&mut client)?;
    drop(client);

    let dirs = binaries::search_dirs(&opts.pg_bin_dirs);
    let pg_dump = binaries::pick(
        "pg_dump",
        info.major,
        &dirs,
        &format!("the server at {target} runs PostgreSQL {}", info.version),
    )?;

    sweep_leftovers(repo.store(), &source.name, note);

    let started = Timestamp::now();
    let id = SnapshotId::new(started)?;
    let key = data_key(&source.name, &id);
    // pg_database_size bounds the dump from above in practice; it sizes the upload's parts.
    let upload = repo
        .store()
        .upload(&key, info.database_size.map(|s| s + s / 4 + (64 << 20)))?;

    let counters = Counters::default();
    let stored = MeasureWriter::hashing(upload).with_live_counter(counters.output.clone());
    let sealed = SealWriter::with_chunk_size(stored, repo.key(), DEFAULT_CHUNK_SIZE)?;
    let salt = crate::units::hex(&sealed.salt());
    let compressed = MeasureWriter::hashing(sealed);
    let compressor = Compressor::new(compressed, source.compression, opts.threads)?;
    let mut plain = MeasureWriter::counting(compressor).with_live_counter(counters.input.clone());

    let arguments = vec![
        "--format=custom".to_string(),
        "--compress=0".into(),
        "--no-password".into(),
    ];
    let mut cmd = Command::new(&pg_dump.path);
    cmd.args(&arguments)
        .arg("--dbname")
        .arg(ci.to_conninfo_without_secrets());
    postgres::child_env(&mut cmd, ci);
    let mut child = ChildProcess::spawn(cmd, "pg_dump", false)?;
    let mut stdout = child.take_stdout();

    let progress = Progress::start("backup", &counters, opts.progress);
    let copied = copy_large(&mut stdout, &mut plain);
    drop(stdout);
    drop(progress);

    let interrupted = || {
        Error::new(
            ErrorKind::Interrupted,
            "interrupted: the backup stopped and its upload was aborted; nothing was stored",
        )
    };
    if let Err(e) = copied {
        // The pipeline failed (storage, disk, a signal): stop pg_dump, report the pipeline's error.
        let exit = child.kill();
        let err = Error::from_io(e, "backup failed");
        drop(plain); // aborts the upload
        return Err(match err.kind() {
            ErrorKind::Interrupted => interrupted(),
            ErrorKind::Io if !exit.stderr.is_empty() => pg_dump_error(&exit, &target),
            _ => err,
        });
    }
    let exit = child.wait_exit()?;
    if !exit.status.success() {
        drop(plain);
        // Ctrl-C reaches pg_dump too; say what happened, not how pg_dump died of it.
        return Err(if crate::interrupt::check().is_err() {
            interrupted()
        } else {
            pg_dump_error(&exit, &target)
        });
    }

    let (compressor, plain_m) = plain.finish();
    let compressed = compressor.finish()?;
    let (sealed, compressed_m) = compressed.finish();
    let stored = sealed.finish()?;
    let (upload, stored_m) = stored.finish();
    let uploaded = upload.finish()?;
    if uploaded != stored_m.bytes {
        return Err(Error::internal(format!(
            "uploaded {uploaded} bytes but sealed {}",
            stored_m.bytes
        )));
    }
    if plain_m.bytes == 0 {
        return Err(Error::process(
            "pg_dump exited successfully but wrote nothing",
        ));
    }

    let manifest = Manifest {
        manifest_version: MANIFEST_VERSION,
        snapshot_id: id,
        source: SourceInfo {
            name: source.name.clone(),
            kind: "postgres".into(),
            host: ci.host(),
            port: ci.port(),
            database: info.database.clone(),
            user: info.user.clone(),
        },
        server: ServerRecord {
            version: info.version.clone(),
            version_num: info.version_num,
            major: info.major,
            system_identifier: info.system_identifier.clone(),
            in_recovery: info.in_recovery,
        },
        dump: dump_record(&pg_dump, arguments),
        started,
        finished: Timestamp::now(),
        sizes: Sizes {
            plain_bytes: plain_m.bytes,
            compressed_bytes: compressed_m.bytes,
            stored_bytes: stored_m.bytes,
        },
        compression: source.compression,
        encryption: Encryption {
            format: crate::crypto::seal::FORMAT_VERSION,
            algorithm: "AES-256-GCM".into(),
            key_id: repo.key().id().to_string(),
            chunk_size: DEFAULT_CHUNK_SIZE,
        },
        data: DataObject {
            key,
            salt,
            sha256_stored: stored_m.sha256,
            sha256_compressed: compressed_m.sha256,
        },
        created_by: format!("offsitedb {}", crate::VERSION),
    };
    repo.commit_manifest(&manifest)?;
    Ok(manifest)
}

fn dump_record(p: &PgProgram, arguments: Vec<String>) -> DumpRecord {
    DumpRecord {
        tool: "pg_dump".into(),
        version: p.version.clone(),
        major: p.major,
        format: "custom".into(),
        arguments,
    }
}

/// Cleans what earlier failed backups of this source left: uploads whose abort failed while
/// the store was unreachable, and incomplete uploads older than two days.
fn sweep_leftovers<S: WriteStore + ?Sized>(store: &S, source: &str, note: &mut dyn FnMut(String)) {
    if let Ok(n) = store.clean_abandoned()
        && n > 0
    {
        note(format!(
            "aborted {n} unfinished upload(s) left by an earlier failed backup"
        ));
    }
    let Ok(leftovers) = store.incomplete_uploads(&format!("snapshots/{source}/")) else {
        return;
    };
    let cutoff = Timestamp::now() - jiff::SignedDuration::from_hours(STALE_UPLOAD_HOURS);
    for u in leftovers {
        let old = u
            .started
            .as_deref()
            .and_then(|s| s.parse::<Timestamp>().ok())
            .is_some_and(|t| t < cutoff);
        if old && store.abort_incomplete(&u).is_ok() {
            note(format!("removed an interrupted upload of {}", u.key));
        }
    }
}

/// Turns pg_dump's failure into one line, classified.
fn pg_dump_error(exit: &Exit, target: &str) -> Error {
    let reason = exit.reason();
    let text = exit.stderr_text();
    let reason = reason
        .strip_prefix("pg_dump: error: ")
        .unwrap_or(&reason)
        .to_string();
    if text.contains("permission denied") {
        return Error::source_db(format!("pg_dump cannot read everything in {target}: {reason}"))
            .with_hint("the backup role needs SELECT on every table and sequence (PostgreSQL 14+: GRANT pg_read_all_data TO the role)");
    }
    if text.contains("server version mismatch") {
        return Error::tool(format!("pg_dump is older than the server at {target}: {reason}"))
            .with_hint("install a pg_dump at least as new as the server, or list its directory in OFFSITEDB_PG_BIN_DIRS");
    }
    if text.contains("connection to server")
        || text.contains("server closed the connection")
        || text.contains("terminating connection")
    {
        return Error::source_db(format!("pg_dump lost the connection to {target}: {reason}"))
            .with_hint(
                "the server went away during the dump; nothing was stored, run the backup again",
            )
            .transient();
    }
    Error::process(format!("pg_dump failed on {target}: {reason}"))
}
