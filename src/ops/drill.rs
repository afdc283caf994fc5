/*!
`offsitedb drill`: prove a snapshot restores, and that what comes back is what was dumped.

```text
download ─► unseal ─► decompress ─┬─► spool file (TOC offsets filled in) ─► pg_restore -j N ─► verify
                                  └─► dump inspector (the archive still matches its manifest?)
```

The drill restores into a throwaway cluster of the source's major version (initdb'd while the
download runs, tuned for restore speed, unix socket only), or into a temporary database on a
scratch server. Then every table is read back with `COPY … TO STDOUT` under pg_dump's own session
settings, and its rows and content digest are compared with the manifest. The result is written
to the repository as a new drill record; a snapshot is *sealed* when its latest drill passed.

Problems of the drill's own environment (no server programs of that major, not enough disk, an
extension the drill cluster lacks) are errors and write no record: they say nothing about the
snapshot. Problems of the snapshot (it does not decrypt, does not restore, or restores different
data) fail the drill and are recorded.
*/

use std::collections::VecDeque;
use std::io::{BufWriter, Read, Seek, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use jiff::Timestamp;

use crate::catalog::drill::{DRILL_VERSION, DrillResult, TableCheck, Timings};
use crate::catalog::manifest::{TableRecord, VerifyMethod};
use crate::catalog::{DrillRecord, Entry, Manifest, Repository, SnapshotId};
use crate::cluster::{Cluster, ClusterOptions};
use crate::dump::{self, DumpSummary, LoHasher, RowHasher};
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::{Counters, Progress};
use crate::postgres::{self, ConnInfo, binaries, client};
use crate::process::{ChildProcess, Exit};
use crate::storage::WriteStore;

#[derive(Clone, Debug, Default)]
pub struct DrillOptions {
    pub pg_bin_dirs: Vec<PathBuf>,
    /// Restore into a temporary database on this server instead of a throwaway cluster.
    pub drill_server: Option<ConnInfo>,
    /// Where the spool file and the throwaway cluster go; default `$OFFSITEDB_TMPDIR` or the
    /// system temp dir.
    pub work_dir: Option<PathBuf>,
    /// pg_restore jobs and verify connections; 0 = one per core.
    pub jobs: usize,
    pub progress: bool,
}

/// What `run` found: the record (also stored in the repository, when `stored`).
pub struct DrillOutcome {
    pub record: DrillRecord,
    /// The error that failed the drill, for the exit code and the headline.
    pub failure: Option<Error>,
}

/// Drills one snapshot and records the result in the repository.
pub fn run<S: WriteStore + ?Sized>(
    repo: &Repository<S>,
    entry: &Entry,
    opts: &DrillOptions,
    note: &mut dyn FnMut(String),
) -> Result<DrillOutcome> {
    let started = Timestamp::now();
    let t0 = Instant::now();
    let m = repo.manifest(&entry.source, &entry.id)?;
    let jobs = if opts.jobs == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        opts.jobs
    };
    let dirs = binaries::search_dirs(&opts.pg_bin_dirs);
    let pg_restore = super::pick_pg_restore(&m, &dirs)?;

    // Everything about the environment is checked before the download starts.
    let server_program = match &opts.drill_server {
        Some(_) => None,
        None => Some(binaries::server_dir(Some(m.server.major), &dirs).map_err(|e| {
            e.context(format!(
                "a drill restores into a throwaway PostgreSQL {} (the source's version)",
                m.server.major
            ))
            .with_hint(format!(
                "install the PostgreSQL {} server (apt-get install postgresql-{}), list its bin directory in \
                 OFFSITEDB_PG_BIN_DIRS, or drill on a scratch server with --drill-server URL",
                m.server.major, m.server.major
            ))
        })?),
    };
    let parent = opts
        .work_dir
        .clone()
        .or_else(|| std::env::var_os("OFFSITEDB_TMPDIR").map(PathBuf::from))
        .unwrap_or_else(std::env::temp_dir);
    check_space(&parent, &m, opts.drill_server.is_none())?;
    let work = tempfile::Builder::new()
        .prefix("offsitedb-drill-")
        .tempdir_in(&parent)
        .map_err(|e| Error::io_at("cannot create a temporary folder in", &parent, &e))?;
    // As root, the throwaway cluster runs as `postgres`, which must reach its folder inside.
    let _ = std::fs::set_permissions(
        work.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    );

    let mut notes = Vec::new();
    let mut problems = Vec::new();
    let spool_path = work.path().join("snapshot.dump");

    // The download and the cluster's start-up overlap. The cluster starts on this thread: its
    // server dies with the thread that started it (PR_SET_PDEATHSIG).
    let counters = Counters::default();
    let progress = Progress::start("drill download", &counters, opts.progress);
    let (download, cluster) = std::thread::scope(|s| {
        let dl = s.spawn(|| download(repo, &m, &spool_path, &counters));
        let cluster = server_program.as_ref().map(|_| {
            Cluster::start(&ClusterOptions {
                major: Some(m.server.major),
                bin_dirs: opts.pg_bin_dirs.clone(),
                tuned_for_restore: true,
                parent_dir: Some(work.path().to_path_buf()),
                tcp: false,
            })
        });
        let dl = dl
            .join()
            .unwrap_or_else(|_| Err(Error::internal("the drill download thread panicked")));
        (dl, cluster)
    });
    drop(progress);
    let download_secs = t0.elapsed().as_secs_f64();
    let cluster = cluster.transpose()?;

    let finish = |result: DrillResult,
                  restore: f64,
                  verify: f64,
                  target: String,
                  server_version: String,
                  tables: Vec<TableCheck>,
                  problems: Vec<String>,
                  notes: Vec<String>| DrillRecord {
        drill_version: DRILL_VERSION,
        drill_id: SnapshotId::new(started).unwrap_or_else(|_| m.snapshot_id.clone()),
        snapshot_id: m.snapshot_id.clone(),
        source: m.source.name.clone(),
        result,
        started,
        finished: Timestamp::now(),
        timings: Timings {
            download: round(download_secs),
            restore: round(restore),
            verify: round(verify),
            total: round(t0.elapsed().as_secs_f64()),
        },
        target,
        server_version,
        pg_restore_version: pg_restore.version.clone(),
        jobs,
        method: m.verification.method,
        tables,
        problems,
        notes,
        created_by: format!("offsitedb {}", crate::VERSION),
    };

    let target_label = match &opts.drill_server {
        Some(ci) => ci.redacted(),
        None => "throwaway cluster".to_string(),
    };
    let server_version_label = cluster
        .as_ref()
        .map(|c| c.version().version.clone())
        .unwrap_or_default();

    // A snapshot that cannot be read back is a failed drill, and recorded as one.
    let inspected = match download {
        Ok(d) => d,
        Err(e) if matches!(e.kind(), ErrorKind::Integrity | ErrorKind::Key) => {
            let record = finish(
                DrillResult::Failed,
                0.0,
                0.0,
                target_label,
                server_version_label,
                Vec::new(),
                vec![e.message().to_string()],
                notes,
            );
            repo.commit_drill(&record)?;
            return Ok(DrillOutcome {
                record,
                failure: Some(e),
            });
        }
        Err(e) => return Err(e),
    };
    match &inspected {
        Ok(summary) => compare_archive(&m, summary, &mut problems),
        Err(why) => notes.push(format!(
            "the archive could not be inspected ({why}); pg_restore reads it sequentially"
        )),
    }

    // The database to restore into.
    let (scratch, target_ci, server_version) = match (&opts.drill_server, &cluster) {
        (Some(admin), _) => {
            let db = format!(
                "offsitedb_drill_{}",
                SnapshotId::new(started)?
                    .as_str()
                    .to_lowercase()
                    .replace('-', "_")
            );
            let mut c = postgres::connect(admin, "the drill server")?;
            let info = postgres::server_info(&mut c)?;
            if info.major != m.server.major {
                notes.push(format!(
                    "the drill server runs PostgreSQL {}, the source ran {}",
                    info.version, m.server.version
                ));
            }
            c.batch_execute(&create_database_sql(&db, &m))
                .map_err(|e| client::query_error("cannot create the drill database", &e))?;
            (
                Some(ScratchDb {
                    admin: admin.clone(),
                    name: db.clone(),
                }),
                admin.with_dbname(&db),
                info.version,
            )
        }
        (None, Some(cl)) => {
            let db = m.source.database.clone();
            let sql = create_database_sql(&db, &m);
            cl.execute("postgres", &sql)?;
            (None, cl.conninfo(&db), cl.version().version.clone())
        }
        (None, None) => unreachable!("a cluster is started when there is no drill server"),
    };
    // From here on the scratch database is dropped whatever happens.
    let _scratch_guard = scratch;

    // Extensions the drill target lacks: the drill cannot prove anything until they are there.
    check_extensions(&target_ci, &m, &inspected, &server_version)?;
    if let Some(cl) = &cluster {
        create_owner_roles(cl, &m, &inspected, &mut notes);
    }
    notes.push(
        "restored with --no-owner --no-privileges: a drill proves data, not grants".to_string(),
    );

    let t_restore = Instant::now();
    let exit = restore(&pg_restore.path, &target_ci, &spool_path, jobs)?;
    let restore_secs = t_restore.elapsed().as_secs_f64();
    if !exit.status.success() {
        problems.extend(restore_problems(&exit, &server_version, &mut notes));
    }
    // The spool file is not needed any more: give the disk back before verifying.
    let _ = std::fs::remove_file(&spool_path);

    let t_verify = Instant::now();
    let settings = SessionSql::new(&m);
    let tables = verify(&target_ci, &m, &settings, jobs, &mut problems)?;
    let verify_secs = t_verify.elapsed().as_secs_f64();
    if m.verification.method == VerifyMethod::None {
        notes.push(format!(
            "the manifest holds no row data ({}): only the restore itself was tested",
            m.verification
                .note
                .as_deref()
                .unwrap_or("no reason recorded")
        ));
    }

    drop(cluster);
    let result = if problems.is_empty() {
        DrillResult::Passed
    } else {
        DrillResult::Failed
    };
    let record = finish(
        result,
        restore_secs,
        verify_secs,
        target_label,
        server_version,
        tables,
        problems,
        notes,
    );
    for n in &record.notes {
        note(n.clone());
    }
    repo.commit_drill(&record)?;
    let failure = (!record.passed()).then(|| {
        Error::new(
            ErrorKind::DrillFailed,
            format!(
                "drill of {}/{} failed: {}",
                record.source,
                record.snapshot_id,
                record.problems.first().map(String::as_str).unwrap_or("")
            ),
        )
    });
    Ok(DrillOutcome { record, failure })
}

fn round(s: f64) -> f64 {
    (s * 100.0).round() / 100.0
}

/// Disk the drill needs in `dir`: the spool file, and (for a throwaway cluster) the restored
/// database (its tables and indexes, estimated at 1.5 times the dump) plus WAL and the
/// cluster's own files.
fn check_space(dir: &std::path::Path, m: &Manifest, cluster: bool) -> Result<()> {
    let plain = m.sizes.plain_bytes;
    let need = if cluster {
        plain + plain / 2 * 3 + (1 << 30)
    } else {
        plain + (64 << 20)
    };
    if let Some(free) = super::restore::free_space(dir)
        && free < need
    {
        return Err(Error::io(format!(
            "not enough disk in {} for a drill of {}/{}: it needs about {} ({} archive{}), and {} is free",
            dir.display(),
            m.source.name,
            m.snapshot_id,
            crate::units::bytes(need),
            crate::units::bytes(plain),
            if cluster { ", the restored database, WAL and the cluster" } else { "" },
            crate::units::bytes(free)
        ))
        .with_hint("free some space, or set OFFSITEDB_TMPDIR (or --work-dir) to a larger disk"));
    }
    Ok(())
}

/// Downloads, authenticates and decompresses the snapshot into `path`, inspecting the archive
/// on the way. The outer result fails on damage (nothing is restored from a snapshot that does
/// not authenticate); the inner one says whether the archive could be inspected.
fn download<S: WriteStore + ?Sized>(
    repo: &Repository<S>,
    m: &Manifest,
    path: &std::path::Path,
    counters: &Counters,
) -> Result<std::result::Result<DumpSummary, String>> {
    // Read and write: the offsets rewrite checks what it overwrites.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Error::io_at("cannot create", path, &e))?;
    let (mut dump_reader, handle) = super::open_dump(repo, m, Some(counters.input.clone()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let write_err = std::cell::Cell::new(None::<std::io::Error>);
    let inspected = {
        let mut tee = Tee {
            inner: &mut dump_reader,
            out: &mut out,
            write_err: &write_err,
        };
        let r = dump::inspect(&mut tee).map_err(|e| e.to_string());
        // Whatever the inspector left (all of it, if it gave up early) still goes to the file.
        std::io::copy(&mut tee, &mut std::io::sink()).map_err(|e| read_error(e, &write_err))?;
        r
    };
    if let Some(e) = write_err.take() {
        return Err(Error::from_io(
            e,
            &format!("cannot write {}", path.display()),
        ));
    }
    super::finish_dump(dump_reader, &handle, m)?;
    let mut file = out
        .into_inner()
        .map_err(|e| Error::from_io(e.into_error(), &format!("cannot write {}", path.display())))?;
    // pg_dump wrote to a pipe, so the archive has no data offsets; a file with them lets
    // pg_restore's parallel workers seek straight to their tables.
    if let Ok(summary) = &inspected {
        dump::rewrite_offsets(&mut file, summary)
            .map_err(|e| Error::from_io(e, &format!("cannot write {}", path.display())))?;
    }
    file.seek(std::io::SeekFrom::Start(0))
        .and_then(|_| file.sync_all())
        .map_err(|e| Error::from_io(e, &format!("cannot write {}", path.display())))?;
    Ok(inspected)
}

fn read_error(e: std::io::Error, write_err: &std::cell::Cell<Option<std::io::Error>>) -> Error {
    match write_err.take() {
        Some(w) => Error::from_io(w, "cannot write the drill's spool file"),
        None => Error::from_io(e, "cannot read the snapshot"),
    }
}

/// Copies what is read through it into `out`. A write failure ends the reading (as an error)
/// and is kept in `write_err`, so a full disk is reported as such.
struct Tee<'a, R: Read, W: Write> {
    inner: &'a mut R,
    out: &'a mut W,
    write_err: &'a std::cell::Cell<Option<std::io::Error>>,
}

impl<R: Read, W: Write> Read for Tee<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Err(e) = self.out.write_all(&buf[..n]) {
            let msg = e.to_string();
            self.write_err.set(Some(e));
            return Err(std::io::Error::other(msg));
        }
        Ok(n)
    }
}

/// The stored archive against its manifest: a dump that changed after the manifest was made is
/// caught here, before anything is restored.
fn compare_archive(m: &Manifest, s: &DumpSummary, problems: &mut Vec<String>) {
    if m.verification.method != VerifyMethod::ArchiveDigest {
        return;
    }
    let mut expected: std::collections::BTreeMap<(String, String), &TableRecord> = m
        .verification
        .tables
        .iter()
        .map(|t| ((t.schema.clone(), t.name.clone()), t))
        .collect();
    for t in &s.tables {
        match expected.remove(&(t.schema.clone(), t.name.clone())) {
            Some(e) => {
                let digest = dump::digest_hex(t.digest);
                if e.rows != t.rows || e.digest.as_deref() != Some(digest.as_str()) {
                    problems.push(format!(
                        "the stored archive differs from its manifest in table {}.{}: {} rows (digest {}), the manifest says {} rows (digest {})",
                        t.schema,
                        t.name,
                        t.rows,
                        digest,
                        e.rows,
                        e.digest.as_deref().unwrap_or("none")
                    ));
                }
            }
            None => problems.push(format!(
                "the stored archive has table {}.{}, which its manifest does not list",
                t.schema, t.name
            )),
        }
    }
    for (k, _) in expected {
        problems.push(format!(
            "table {}.{} is in the manifest but not in the stored archive",
            k.0, k.1
        ));
    }
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn create_database_sql(db: &str, m: &Manifest) -> String {
    let enc = &m.verification.session.client_encoding;
    let mut sql = format!("CREATE DATABASE {} TEMPLATE template0", quote_ident(db));
    if !enc.is_empty() {
        // With the C locale any server encoding is allowed: the drill database stores text in
        // the source's encoding, so nothing is converted on the way in or out.
        sql.push_str(&format!(
            " ENCODING {} LC_COLLATE 'C' LC_CTYPE 'C'",
            quote_literal(enc)
        ));
    }
    sql
}

struct ScratchDb {
    admin: ConnInfo,
    name: String,
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::connect(&self.admin, "the drill server") {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(&self.name)
            ));
        }
    }
}

/// Fails when the drill target lacks an extension the dump creates, naming it and its package.
fn check_extensions(
    target: &ConnInfo,
    m: &Manifest,
    inspected: &std::result::Result<DumpSummary, String>,
    server_version: &str,
) -> Result<()> {
    let mut wanted: Vec<String> = m.verification.extensions.clone();
    if let Ok(s) = inspected {
        wanted.extend(s.extensions.iter().cloned());
    }
    wanted.sort();
    wanted.dedup();
    if wanted.is_empty() {
        return Ok(());
    }
    let mut c = postgres::connect(target, "the drill database")?;
    let available: std::collections::HashSet<String> = c
        .query("SELECT name::text FROM pg_available_extensions", &[])
        .map_err(|e| client::query_error("cannot list the available extensions", &e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let missing: Vec<&String> = wanted.iter().filter(|e| !available.contains(*e)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let major = major_of(server_version);
    let names: Vec<String> = missing.iter().map(|e| format!("{e:?}")).collect();
    let packages: Vec<String> = missing
        .iter()
        .map(|e| extension_package(e, major))
        .collect();
    Err(Error::tool(format!(
        "the drill server (PostgreSQL {server_version}) lacks the extension{} {} that snapshot {}/{} needs",
        if missing.len() == 1 { "" } else { "s" },
        names.join(", "),
        m.source.name,
        m.snapshot_id
    ))
    .with_hint(format!(
        "install {} for PostgreSQL {major} where the drill runs, or drill on a server that has it (--drill-server URL)",
        packages.join(", ")
    )))
}

fn major_of(version: &str) -> u32 {
    version
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The Debian/Ubuntu package (apt.postgresql.org) that provides an extension.
pub fn extension_package(ext: &str, major: u32) -> String {
    const CONTRIB: &[&str] = &[
        "adminpack",
        "amcheck",
        "autoinc",
        "bloom",
        "btree_gin",
        "btree_gist",
        "citext",
        "cube",
        "dblink",
        "dict_int",
        "dict_xsyn",
        "earthdistance",
        "file_fdw",
        "fuzzystrmatch",
        "hstore",
        "insert_username",
        "intagg",
        "intarray",
        "isn",
        "lo",
        "ltree",
        "moddatetime",
        "pageinspect",
        "pg_buffercache",
        "pg_freespacemap",
        "pg_prewarm",
        "pg_stat_statements",
        "pg_surgery",
        "pg_trgm",
        "pg_visibility",
        "pg_walinspect",
        "pgcrypto",
        "pgrowlocks",
        "pgstattuple",
        "postgres_fdw",
        "refint",
        "seg",
        "sslinfo",
        "tablefunc",
        "tcn",
        "tsm_system_rows",
        "tsm_system_time",
        "unaccent",
        "uuid-ossp",
        "xml2",
    ];
    if CONTRIB.contains(&ext) {
        return format!(
            "the contrib modules (postgresql-contrib; on Debian part of postgresql-{major})"
        );
    }
    let pkg = match ext {
        "postgis"
        | "postgis_raster"
        | "postgis_topology"
        | "postgis_sfcgal"
        | "postgis_tiger_geocoder"
        | "address_standardizer" => format!("postgresql-{major}-postgis-3"),
        "vector" => format!("postgresql-{major}-pgvector"),
        "timescaledb" => format!("timescaledb-2-postgresql-{major} (packagecloud.io/timescale)"),
        "pg_cron" => format!("postgresql-{major}-cron"),
        "pgaudit" => format!("postgresql-{major}-pgaudit"),
        "pg_partman" => format!("postgresql-{major}-partman"),
        "pg_repack" => format!("postgresql-{major}-repack"),
        "hypopg" => format!("postgresql-{major}-hypopg"),
        "pgrouting" => format!("postgresql-{major}-pgrouting"),
        "h3" | "h3_postgis" => format!("postgresql-{major}-h3"),
        "orafce" => format!("postgresql-{major}-orafce"),
        "pg_hint_plan" => format!("postgresql-{major}-pg-hint-plan"),
        "hll" => format!("postgresql-{major}-hll"),
        "plv8" => format!("postgresql-{major}-plv8"),
        "plpython3u" => format!("postgresql-plpython3-{major}"),
        "plperl" | "plperlu" => format!("postgresql-plperl-{major}"),
        "pltcl" | "pltclu" => format!("postgresql-pltcl-{major}"),
        other => format!(
            "postgresql-{major}-{} (or whatever package provides the {other} extension)",
            other.replace('_', "-")
        ),
    };
    format!("{pkg} (extension {ext})")
}

/// In a throwaway cluster, the roles that own objects exist as NOLOGIN roles, so statements
/// that name them (policies, for instance) restore. Owners themselves are not restored.
fn create_owner_roles(
    cl: &Cluster,
    m: &Manifest,
    inspected: &std::result::Result<DumpSummary, String>,
    notes: &mut Vec<String>,
) {
    let mut owners: Vec<String> = m.verification.owners.clone();
    if let Ok(s) = inspected {
        owners.extend(s.owners.iter().cloned());
    }
    owners.sort();
    owners.dedup();
    owners.retain(|o| o != crate::cluster::SUPERUSER && !o.is_empty());
    if owners.is_empty() {
        return;
    }
    let sql: String = owners
        .iter()
        .map(|o| {
            format!(
                "DO $$BEGIN CREATE ROLE {} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END$$;",
                quote_ident(o)
            )
        })
        .collect();
    if cl.execute("postgres", &sql).is_ok() {
        notes.push(format!(
            "roles of the dump created in the drill cluster (without login): {}",
            owners.join(", ")
        ));
    }
}

fn restore(
    pg_restore: &std::path::Path,
    target: &ConnInfo,
    file: &std::path::Path,
    jobs: usize,
) -> Result<Exit> {
    let mut cmd = crate::process::command(pg_restore);
    cmd.args(["--no-password", "--no-owner", "--no-privileges"])
        .arg("--jobs")
        .arg(jobs.to_string())
        .arg("--dbname")
        .arg(target.to_conninfo_without_secrets())
        .arg(file);
    postgres::child_env(&mut cmd, target);
    let mut child = ChildProcess::spawn(cmd, "pg_restore", false)?;
    child.drain_stdout();
    child.wait_exit()
}

/// pg_restore's errors, one problem each, named with the fix where it is known.
fn restore_problems(exit: &Exit, server_version: &str, notes: &mut Vec<String>) -> Vec<String> {
    let major = major_of(server_version);
    let mut out = Vec::new();
    let mut lines = exit.errors.iter().peekable();
    while let Some(line) = lines.next() {
        if !line.contains("error:") {
            continue;
        }
        let text = line
            .split_once("error: ")
            .map_or(line.as_str(), |(_, t)| t)
            .trim();
        if text.starts_with("errors ignored on restore") {
            continue;
        }
        // pg_restore 17+ sets transaction_timeout, which servers before 17 do not know; the
        // setting only guards pg_restore's own session, and everything else restores.
        if text.contains("unrecognized configuration parameter \"transaction_timeout\"") {
            notes.push(format!(
                "pg_restore set transaction_timeout, which PostgreSQL {server_version} does not have (harmless; a pg_restore of the server's own major avoids it)"
            ));
            continue;
        }
        let detail = lines
            .peek()
            .filter(|l| !l.contains("error:"))
            .map(|l| l.trim().to_string());
        if let Some(ext) = quoted_after(text, "extension \"")
            .filter(|_| text.contains("is not available") || text.contains("control file"))
            .or_else(|| control_file_name(text))
        {
            out.push(format!(
                "the drill server lacks the extension {ext:?}: install {} where the drill runs",
                extension_package(&ext, major)
            ));
        } else if let Some(role) =
            quoted_after(text, "role \"").filter(|_| text.contains("does not exist"))
        {
            out.push(format!(
                "the dump refers to role {role:?}, which the drill server does not have{}: create it there \
                 (CREATE ROLE {role} NOLOGIN), or drill on a server that has it (--drill-server URL)",
                detail.map(|d| format!(" ({d})")).unwrap_or_default()
            ));
        } else {
            out.push(format!(
                "pg_restore: {text}{}",
                detail.map(|d| format!(" [{d}]")).unwrap_or_default()
            ));
        }
    }
    let benign_only = exit
        .errors
        .iter()
        .filter(|l| l.contains("error:") && !l.contains("errors ignored on restore"))
        .all(|l| l.contains("\"transaction_timeout\""));
    if out.is_empty() && !benign_only {
        out.push(format!("pg_restore failed: {}", exit.reason()));
    }
    out.dedup();
    out
}

fn quoted_after(text: &str, prefix: &str) -> Option<String> {
    let start = text.find(prefix)? + prefix.len();
    let end = text[start..].find('"')?;
    Some(text[start..start + end].to_string())
}

/// `could not open extension control file "/usr/share/.../vector.control"` → `vector`.
fn control_file_name(text: &str) -> Option<String> {
    let path = quoted_after(text, "control file \"")?;
    let file = path.rsplit('/').next()?;
    file.strip_suffix(".control").map(str::to_string)
}

/// The session settings that make `COPY … TO STDOUT` print what pg_dump printed.
struct SessionSql {
    sql: String,
    lc_monetary: Option<String>,
}

impl SessionSql {
    fn new(m: &Manifest) -> Self {
        let s = &m.verification.session;
        // pg_dump's own settings (setup_connection), then what it inherits from the server.
        let mut sql = String::from(
            "SET DateStyle = ISO; SET IntervalStyle = postgres; SET extra_float_digits = 3; \
             SET search_path = ''; SET statement_timeout = 0; SET synchronize_seqscans = off;",
        );
        if !s.client_encoding.is_empty() {
            sql.push_str(&format!(
                " SET client_encoding = {};",
                quote_literal(&s.client_encoding)
            ));
        }
        if !s.timezone.is_empty() {
            sql.push_str(&format!(" SET TimeZone = {};", quote_literal(&s.timezone)));
        }
        if !s.bytea_output.is_empty() {
            sql.push_str(&format!(
                " SET bytea_output = {};",
                quote_literal(&s.bytea_output)
            ));
        }
        SessionSql {
            sql,
            lc_monetary: (!s.lc_monetary.is_empty()).then(|| s.lc_monetary.clone()),
        }
    }

    fn apply(&self, c: &mut client::Client) -> Result<Option<String>> {
        c.batch_execute(&self.sql)
            .map_err(|e| client::query_error("cannot set up the verify session", &e))?;
        if let Some(lc) = &self.lc_monetary
            && c.batch_execute(&format!("SET lc_monetary = {}", quote_literal(lc)))
                .is_err()
        {
            return Ok(Some(format!(
                "the drill server has no locale {lc:?} (the source's lc_monetary): money values may print differently"
            )));
        }
        Ok(None)
    }
}

/// Reads every table back and compares it with the manifest, `jobs` tables at a time.
fn verify(
    target: &ConnInfo,
    m: &Manifest,
    settings: &SessionSql,
    jobs: usize,
    problems: &mut Vec<String>,
) -> Result<Vec<TableCheck>> {
    let mut work: Vec<(usize, &TableRecord)> = m.verification.tables.iter().enumerate().collect();
    // Biggest first, so the last table to finish is a small one.
    work.sort_by_key(|(_, t)| std::cmp::Reverse(t.rows));
    let queue = Mutex::new(work.into_iter().collect::<VecDeque<_>>());
    let results: Mutex<Vec<(usize, TableCheck, Option<String>)>> = Mutex::new(Vec::new());
    let warnings: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let threads = jobs.clamp(1, m.verification.tables.len().max(1));
    let errors: Vec<Error> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    let mut c = postgres::connect(target, "the drill database")?;
                    if let Some(w) = settings.apply(&mut c)? {
                        warnings.lock().unwrap().push(w);
                    }
                    loop {
                        let Some((i, t)) = queue.lock().unwrap().pop_front() else {
                            return Ok(());
                        };
                        let (check, problem) = verify_table(&mut c, t);
                        results.lock().unwrap().push((i, check, problem));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::internal("a verify thread panicked")))
                    .err()
            })
            .collect()
    });
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(i, _, _)| *i);
    let mut checks = Vec::new();
    for (_, check, problem) in results {
        problems.extend(problem);
        checks.push(check);
    }
    if let Some(lo) = &m.verification.large_objects {
        let mut c = postgres::connect(target, "the drill database")?;
        let (check, problem) = verify_large_objects(&mut c, lo);
        problems.extend(problem);
        checks.push(check);
    }
    let mut w = warnings.into_inner().unwrap();
    w.dedup();
    if checks.iter().any(|c| !c.ok()) {
        problems.extend(w);
    }
    Ok(checks)
}

fn verify_table(c: &mut client::Client, t: &TableRecord) -> (TableCheck, Option<String>) {
    let mut check = TableCheck {
        schema: t.schema.clone(),
        name: t.name.clone(),
        expected_rows: t.rows,
        restored_rows: None,
        digest_ok: None,
    };
    let read = match (&t.copy, &t.digest) {
        (Some(copy), Some(_)) => copy_digest(c, copy),
        _ => count_rows(c, t).map(|n| (n, 0)),
    };
    let (rows, digest) = match read {
        Ok(v) => v,
        Err(e) => {
            return (
                check,
                Some(format!(
                    "table {} could not be read back after the restore: {e}",
                    t.qualified()
                )),
            );
        }
    };
    check.restored_rows = Some(rows);
    if let Some(want) = &t.digest {
        check.digest_ok = Some(dump::digest_hex(digest) == *want);
    }
    let problem = if check.ok() {
        None
    } else if rows != t.rows {
        Some(format!(
            "table {}: expected {} rows, found {}",
            t.qualified(),
            t.rows,
            rows
        ))
    } else {
        Some(format!(
            "table {}: {} rows as expected, but their content differs from the dump (digest {}, expected {})",
            t.qualified(),
            rows,
            dump::digest_hex(digest),
            t.digest.as_deref().unwrap_or("")
        ))
    };
    (check, problem)
}

/// pg_dump's `COPY t (cols) FROM stdin;` turned around, read and hashed like the inspector did.
fn copy_digest(c: &mut client::Client, copy: &str) -> std::result::Result<(u64, u128), String> {
    let stmt = copy
        .trim_end()
        .strip_suffix("FROM stdin;")
        .ok_or_else(|| format!("unexpected COPY statement {copy:?}"))?;
    let mut reader = c
        .copy_out(&format!("{stmt}TO STDOUT"))
        .map_err(|e| client::query_error("COPY failed", &e).message().to_string())?;
    let mut h = RowHasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = reader.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok((h.rows(), h.digest()))
}

fn count_rows(c: &mut client::Client, t: &TableRecord) -> std::result::Result<u64, String> {
    let sql = format!(
        "SELECT count(*) FROM ONLY {}.{}",
        quote_ident(&t.schema),
        quote_ident(&t.name)
    );
    c.query_one(&sql, &[])
        .map(|r| r.get::<_, i64>(0) as u64)
        .map_err(|e| {
            client::query_error("count failed", &e)
                .message()
                .to_string()
        })
}

fn verify_large_objects(c: &mut client::Client, lo: &TableRecord) -> (TableCheck, Option<String>) {
    let mut check = TableCheck {
        schema: lo.schema.clone(),
        name: lo.name.clone(),
        expected_rows: lo.rows,
        restored_rows: None,
        digest_ok: None,
    };
    let read = (|| -> std::result::Result<(u64, u128), String> {
        let oids: Vec<u32> = c
            .query(
                "SELECT oid FROM pg_catalog.pg_largeobject_metadata ORDER BY oid",
                &[],
            )
            .map_err(|e| e.to_string())?
            .iter()
            .map(|r| r.get::<_, u32>(0))
            .collect();
        let mut h = LoHasher::new();
        const PIECE: i32 = 1 << 20;
        for oid in oids {
            h.begin(oid);
            let mut offset: i64 = 0;
            loop {
                let row = c
                    .query_one(
                        "SELECT pg_catalog.lo_get($1, $2, $3)",
                        &[
                            &oid as &(dyn ::postgres::types::ToSql + Sync),
                            &offset,
                            &PIECE,
                        ],
                    )
                    .map_err(|e| e.to_string())?;
                let piece: Vec<u8> = row.get(0);
                h.update(&piece);
                offset += piece.len() as i64;
                if piece.len() < PIECE as usize {
                    break;
                }
            }
            h.end();
        }
        Ok((h.rows(), h.digest()))
    })();
    let (rows, digest) = match read {
        Ok(v) => v,
        Err(e) => {
            return (
                check,
                Some(format!("large objects could not be read back: {e}")),
            );
        }
    };
    check.restored_rows = Some(rows);
    if let Some(want) = &lo.digest {
        check.digest_ok = Some(dump::digest_hex(digest) == *want);
    }
    let problem = (!check.ok()).then(|| {
        format!(
            "large objects: expected {} (digest {}), found {} (digest {})",
            lo.rows,
            lo.digest.as_deref().unwrap_or("none"),
            rows,
            dump::digest_hex(digest)
        )
    });
    (check, problem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_extension_packages() {
        assert!(extension_package("postgis", 16).contains("postgresql-16-postgis-3"));
        assert!(extension_package("vector", 18).contains("postgresql-18-pgvector"));
        assert!(extension_package("pg_trgm", 15).contains("contrib"));
        assert!(extension_package("my_ext", 17).contains("postgresql-17-my-ext"));
    }

    #[test]
    fn reads_extension_names_from_errors() {
        assert_eq!(
            control_file_name(
                "could not open extension control file \"/usr/share/postgresql/18/extension/vector.control\": No such file or directory"
            )
            .as_deref(),
            Some("vector")
        );
        assert_eq!(
            quoted_after("extension \"vector\" is not available", "extension \"").as_deref(),
            Some("vector")
        );
    }
}
