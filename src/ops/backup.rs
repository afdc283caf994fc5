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

use jiff::Timestamp;

use crate::catalog::manifest::{
    DataObject, DumpRecord, Encryption, MANIFEST_VERSION, ServerRecord, Sizes, SourceInfo,
};
use crate::catalog::repo::data_key;
use crate::catalog::{Manifest, Repository, SnapshotId};
use crate::config::SourceSpec;
use crate::crypto::seal::DEFAULT_CHUNK_SIZE;
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::sink::{self, SinkSpec};
use crate::pipeline::{Counters, Progress};
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

    // The database answered and pg_dump is there: now the repository may be created.
    repo.ensure_created()?;
    sweep_leftovers(repo.store(), &source.name, note);

    let started = Timestamp::now();
    let id = SnapshotId::new(started)?;
    let key = data_key(&source.name, &id);
    // pg_database_size bounds the dump from above in practice; it sizes the upload's parts.
    let upload = repo
        .store()
        .upload(&key, info.database_size.map(|s| s + s / 4 + (64 << 20)))?;

    let arguments = vec![
        "--format=custom".to_string(),
        "--compress=0".into(),
        "--no-password".into(),
    ];
    let mut cmd = crate::process::command(&pg_dump.path);
    cmd.args(&arguments)
        .arg("--dbname")
        .arg(ci.to_conninfo_without_secrets());
    postgres::child_env(&mut cmd, ci);
    let mut child = ChildProcess::spawn(cmd, "pg_dump", false)?;
    let mut stdout = child.take_stdout();

    let counters = Counters::default();
    let progress = Progress::start("backup", &counters, opts.progress);
    let spec = SinkSpec {
        upload,
        key: repo.key(),
        compression: source.compression,
        threads: opts.threads,
        counters,
    };
    // After pg_dump's output ended: commit only if pg_dump says it succeeded. If the sink fails
    // first, this closure is dropped with `child`, which kills pg_dump.
    let check_pg_dump = move || {
        let exit = child.wait_exit()?;
        if exit.status.success() {
            Ok(())
        } else {
            Err(pg_dump_error(&exit, &target))
        }
    };
    let result = sink::run(spec, &mut stdout, check_pg_dump);
    drop(progress);
    let r = result.map_err(|e| {
        // Ctrl-C reaches pg_dump too; say what happened, not how pg_dump died of it.
        if e.kind() == ErrorKind::Interrupted || crate::interrupt::check().is_err() {
            Error::new(
                ErrorKind::Interrupted,
                "interrupted: the backup stopped and its upload was aborted; nothing was stored",
            )
        } else {
            e
        }
    })?;

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
            plain_bytes: r.plain.bytes,
            compressed_bytes: r.compressed.bytes,
            stored_bytes: r.stored.bytes,
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
            salt: crate::units::hex(&r.salt),
            sha256_stored: r.stored.sha256,
            sha256_compressed: r.compressed.sha256,
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
