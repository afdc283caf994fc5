/*!
A database as a backup source: one streaming pass of `pg_dump -Fc -Z0` through the backup
skeleton ([`super`]), with the dump inspector reading the archive as it goes by:

```text
pg_dump -Fc -Z0 ─┬─► count ─► compress (all cores) ─► sha256 ─► seal ─► sha256 ─► upload
                 └─► dump inspector: rows and a content digest per table, for the drills
```

Our own connection comes first, so a wrong password, a missing database or a pooler in
transaction mode is reported plainly before anything is uploaded. pg_dump runs in a snapshot we
export from that connection and keep open for the dump's duration. If the inspector cannot read
the archive, the rows are counted in that same snapshot instead (exactly what was dumped, at the
cost of one scan per table), and the manifest says so.
*/

use std::sync::Arc;
use std::sync::mpsc::SyncSender;
use std::thread::JoinHandle;

use crate::catalog::SourceKind;
use crate::catalog::manifest::{
    Described, DumpRecord, ServerRecord, SessionSettings, SourceInfo, TableRecord, Verification,
    VerifyMethod,
};
use crate::config::SourceSpec;
use crate::dump::{self, DumpSummary};
use crate::error::{Error, Result};
use crate::pipeline::TapReader;
use crate::postgres::{self, PgProgram, ServerInfo, binaries, client};
use crate::process::{ChildProcess, Exit};

use super::{BackupOptions, Stream};

type Inspected = std::result::Result<DumpSummary, dump::DumpError>;

/// Where the archive's buffers go, and the thread that inspects them.
type Inspector = (SyncSender<Arc<Vec<u8>>>, JoinHandle<Inspected>);

/// A database, by its connection string.
pub struct Logical {
    spec: SourceSpec,
    pg_bin_dirs: Vec<std::path::PathBuf>,
    counts_only: bool,
    /// Set by `prepare`.
    ready: Option<Ready>,
    /// Set by `open`.
    snapshot: Option<String>,
    inspector: Option<JoinHandle<Inspected>>,
}

/// What `prepare` learned.
struct Ready {
    client: client::Client,
    info: ServerInfo,
    session: SessionSettings,
    pg_dump: PgProgram,
}

/// pg_dump's arguments, as the manifest records them (the connection string is left out).
fn arguments() -> Vec<String> {
    vec![
        "--format=custom".to_string(),
        "--compress=0".into(),
        "--no-password".into(),
    ]
}

impl Logical {
    pub fn new(spec: &SourceSpec, opts: &BackupOptions) -> Logical {
        Logical {
            spec: spec.clone(),
            pg_bin_dirs: opts.pg_bin_dirs.clone(),
            counts_only: opts.counts_only
                || std::env::var("OFFSITEDB_VERIFY").is_ok_and(|v| v == "counts"),
            ready: None,
            snapshot: None,
            inspector: None,
        }
    }

    fn ready(&mut self) -> Result<&mut Ready> {
        self.ready
            .as_mut()
            .ok_or_else(|| Error::internal("a logical source was opened before it was prepared"))
    }
}

impl super::Source for Logical {
    type Described = Described;

    fn kind(&self) -> SourceKind {
        SourceKind::Postgres
    }

    fn prepare(&mut self, note: &mut dyn FnMut(String)) -> Result<Option<u64>> {
        let ci = &self.spec.conninfo;
        let target = ci.redacted();
        for n in &self.spec.notes {
            note(n.clone());
        }
        let mut client = postgres::connect(ci, "the source database")?;
        let info = postgres::server_info(&mut client)?;
        let session = session_settings(&mut client)?;
        // A pooler in transaction mode would scatter pg_dump's session over server sessions:
        // said before anything is dumped, with the fix.
        match postgres::pooler::detect_pooler_within(ci, std::time::Duration::from_secs(15))? {
            postgres::pooler::Pooling::Session => {}
            postgres::pooler::Pooling::Pooled(evidence) => {
                return Err(postgres::pooler::pooler_error(&target, &evidence));
            }
            postgres::pooler::Pooling::Unknown(why) => note(format!(
                "cannot tell whether {target} is behind a pooler ({why}); if pg_dump fails, use the database's direct address"
            )),
        }
        let dirs = binaries::search_dirs(&self.pg_bin_dirs);
        let pg_dump = binaries::pick(
            "pg_dump",
            info.major,
            &dirs,
            &format!("the server at {target} runs PostgreSQL {}", info.version),
        )?;
        // pg_database_size bounds the dump from above in practice; it sizes the upload's parts.
        let hint = info.database_size.map(|s| s + s / 4 + (64 << 20));
        self.ready = Some(Ready {
            client,
            info,
            session,
            pg_dump,
        });
        Ok(hint)
    }

    fn open(&mut self, note: &mut dyn FnMut(String)) -> Result<Stream> {
        let ci = self.spec.conninfo.clone();
        let counts_only = self.counts_only;
        let ready = self.ready()?;
        // The snapshot pg_dump will read, held open by our connection until the dump is counted.
        let snapshot = match export_snapshot(&mut ready.client) {
            Ok(s) => Some(s),
            Err(e) => {
                note(format!(
                    "cannot export a snapshot ({}); pg_dump takes its own",
                    e.message()
                ));
                None
            }
        };
        let mut cmd = crate::process::command(&ready.pg_dump.path);
        cmd.args(arguments());
        if let Some(s) = &snapshot {
            cmd.arg(format!("--snapshot={s}"));
        }
        cmd.arg("--dbname").arg(ci.to_conninfo_without_secrets());
        // pg_dump's session sees the settings we record for the drills: `process::command`
        // leaves out the variables (PGOPTIONS, PGTZ, ...) that our own connection would not see.
        postgres::child_env(&mut cmd, &ci);
        let mut child = ChildProcess::spawn(cmd, "pg_dump", false)?;
        let stdout = child.take_stdout();
        let (tap, inspector) = if counts_only {
            (None, None)
        } else {
            let (tx, handle) = spawn_inspector()?;
            (Some(tx), Some(handle))
        };
        self.snapshot = snapshot;
        self.inspector = inspector;
        let (target, role) = (ci.redacted(), ci.user());
        Ok(Stream {
            reader: Box::new(stdout),
            tap,
            // Commit only if pg_dump says it succeeded. If the sink fails first, this closure
            // is dropped with `child`, which kills pg_dump.
            on_eof: Box::new(move || {
                let exit = child.wait_exit()?;
                if exit.status.success() {
                    Ok(())
                } else {
                    Err(pg_dump_error(&exit, &target, &role))
                }
            }),
        })
    }

    fn describe(mut self: Box<Self>, note: &mut dyn FnMut(String)) -> Result<Described> {
        let inspected = self.inspector.take().map(|h| {
            h.join().unwrap_or_else(|_| {
                Err(dump::DumpError::Unsupported {
                    what: "the inspector panicked".into(),
                })
            })
        });
        let have_snapshot = self.snapshot.is_some();
        let Ready {
            mut client,
            info,
            session,
            pg_dump,
        } = self.ready.take().ok_or_else(|| {
            Error::internal("a logical source was described before it was prepared")
        })?;
        let verification = verification(&mut client, have_snapshot, inspected, session, note);
        drop(client);
        let ci = &self.spec.conninfo;
        Ok(Described {
            source: SourceInfo {
                name: self.spec.name.clone(),
                kind: SourceKind::Postgres,
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
            dump: DumpRecord {
                tool: "pg_dump".into(),
                version: pg_dump.version.clone(),
                major: pg_dump.major,
                format: "custom".into(),
                arguments: arguments(),
            },
            files: None,
            verification,
        })
    }
}

/// The dump inspector on its own thread, fed by the sink's tap.
fn spawn_inspector() -> Result<Inspector> {
    let (tx, rx) = std::sync::mpsc::sync_channel(8);
    let handle = std::thread::Builder::new()
        .name("dump-inspector".into())
        .spawn(move || {
            // Like the sink's stages, the inspector yields to the database and pg_dump.
            // SAFETY: nice(2) changes only this thread's priority.
            unsafe {
                libc::nice(crate::pipeline::sink::NICE);
            }
            let mut r = TapReader::new(rx);
            let result = dump::inspect(&mut r);
            // Keep reading, so the backup never waits on an inspector that gave up.
            let _ = std::io::copy(&mut r, &mut std::io::sink());
            result
        })
        .map_err(|e| Error::internal(format!("cannot start a thread: {e}")))?;
    Ok((tx, handle))
}

/// The settings that shape COPY text and that pg_dump leaves as the server has them.
fn session_settings(c: &mut client::Client) -> Result<SessionSettings> {
    let row = c
        .query_one(
            "SELECT current_setting('TimeZone'), current_setting('bytea_output'),
                    current_setting('lc_monetary'), current_setting('server_encoding')",
            &[],
        )
        .map_err(|e| client::query_error("cannot read the session settings", &e))?;
    Ok(SessionSettings {
        client_encoding: row.get(3),
        timezone: row.get(0),
        bytea_output: row.get(1),
        lc_monetary: row.get(2),
    })
}

/// Opens a repeatable-read transaction and exports its snapshot for pg_dump.
fn export_snapshot(c: &mut client::Client) -> Result<String> {
    c.batch_execute(
        "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;
         SET LOCAL idle_in_transaction_session_timeout = 0;
         SET LOCAL statement_timeout = 0;",
    )
    .map_err(|e| client::query_error("cannot start a transaction", &e))?;
    match c.query_one("SELECT pg_catalog.pg_export_snapshot()", &[]) {
        Ok(row) => Ok(row.get(0)),
        Err(e) => {
            let _ = c.batch_execute("ROLLBACK");
            Err(client::query_error("pg_export_snapshot() failed", &e))
        }
    }
}

/// What the drills will compare with: the inspector's digests, else counts in the dump's
/// snapshot, else nothing (said plainly).
fn verification(
    c: &mut client::Client,
    have_snapshot: bool,
    inspected: Option<std::result::Result<DumpSummary, dump::DumpError>>,
    mut session: SessionSettings,
    note: &mut dyn FnMut(String),
) -> Verification {
    let why = match inspected {
        Some(Ok(s)) => {
            if let Some(enc) = &s.encoding {
                session.client_encoding = enc.clone();
            }
            let record = |t: &dump::TableDigest| TableRecord {
                schema: t.schema.clone(),
                name: t.name.clone(),
                rows: t.rows,
                digest: Some(dump::digest_hex(t.digest)),
                copy: t.copy_stmt.clone(),
            };
            return Verification {
                method: VerifyMethod::ArchiveDigest,
                note: None,
                archive_version: Some(s.archive_version.clone()),
                session,
                tables: s.tables.iter().map(record).collect(),
                large_objects: s.large_objects.as_ref().map(record),
                owners: s.owners.iter().cloned().collect(),
                extensions: s.extensions.clone(),
            };
        }
        Some(Err(e)) => format!("the dump inspector could not read the archive: {e}"),
        None => "counts were asked for".to_string(),
    };
    if !have_snapshot {
        note(format!(
            "{why}; and without an exported snapshot the rows cannot be counted as dumped: drills will test the restore only"
        ));
        return Verification {
            method: VerifyMethod::None,
            note: Some(why),
            session,
            ..Verification::default()
        };
    }
    match snapshot_counts(c) {
        Ok(tables) => {
            note(format!(
                "{why}; rows were counted in the dump's snapshot instead"
            ));
            Verification {
                method: VerifyMethod::SnapshotCounts,
                note: Some(why),
                session,
                tables,
                ..Verification::default()
            }
        }
        Err(e) => {
            let why = format!(
                "{why}; counting in the snapshot failed too: {}",
                e.message()
            );
            note(format!("{why}: drills will test the restore only"));
            Verification {
                method: VerifyMethod::None,
                note: Some(why),
                session,
                ..Verification::default()
            }
        }
    }
}

/// Exact row counts of every table pg_dump dumps, in the snapshot it dumped.
fn snapshot_counts(c: &mut client::Client) -> Result<Vec<TableRecord>> {
    let rows = c
        .query(
            "SELECT n.nspname::text, c.relname::text
               FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind = 'r' AND c.relpersistence <> 't'
                AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
                AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                                 WHERE d.classid = 'pg_catalog.pg_class'::regclass
                                   AND d.objid = c.oid AND d.deptype = 'e')
              ORDER BY 1, 2",
            &[],
        )
        .map_err(|e| client::query_error("cannot list the tables", &e))?;
    let mut out = Vec::new();
    for r in rows {
        let (schema, name): (String, String) = (r.get(0), r.get(1));
        let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        let n: i64 = c
            .query_one(
                &format!("SELECT count(*) FROM ONLY {}.{}", q(&schema), q(&name)),
                &[],
            )
            .map_err(|e| client::query_error("cannot count rows", &e))?
            .get(0);
        out.push(TableRecord {
            schema,
            name,
            rows: n as u64,
            digest: None,
            copy: None,
        });
    }
    let _ = c.batch_execute("COMMIT");
    Ok(out)
}

/// Turns pg_dump's failure into one line, classified.
fn pg_dump_error(exit: &Exit, target: &str, role: &str) -> Error {
    let reason = exit.reason();
    let text = exit.stderr_text();
    let reason = reason
        .strip_prefix("pg_dump: error: ")
        .unwrap_or(&reason)
        .to_string();
    // The table pg_dump was reading, schema-qualified, from its "Query was: COPY s.t (...)"
    // or "LOCK TABLE s.t, ... IN ..." line, when that names `name`.
    let qualified = |name: &str| -> String {
        let dotted = format!(".{name}");
        text.lines()
            .filter_map(|l| l.split_once("Query was: ").map(|(_, q)| q))
            .flat_map(|q| q.split([' ', ',', '(', ')', ';']))
            .find(|t| t.ends_with(&dotted))
            .unwrap_or(name)
            .to_string()
    };
    if let Some(table) = text
        .split("query would be affected by row-level security policy for table \"")
        .nth(1)
        .and_then(|t| t.split('"').next())
    {
        let table = qualified(table);
        let mut fix = crate::ops::role_sql::bypassrls_fix(role);
        if text.contains("NO FORCE ROW LEVEL SECURITY") {
            fix.push_str(&format!(
                "; or, since the role owns it, ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY"
            ));
        }
        return Error::source_db(format!(
            "pg_dump cannot read table {table} in {target}: row-level security policies apply to the role, and pg_dump refuses to dump part of a table"
        ))
        .with_hint(fix);
    }
    if let Some(what) = text
        .split("permission denied for ")
        .nth(1)
        .and_then(|t| t.lines().next())
    {
        let what = what.trim();
        if let Some(oid) = what.strip_prefix("large object ") {
            return Error::source_db(format!(
                "pg_dump cannot read large object {oid} in {target}: permission denied (offsitedb check counts the large objects the role cannot read)"
            ))
            .with_hint(crate::ops::role_sql::large_object_fix(role));
        }
        if let Some((kind @ ("table" | "sequence" | "schema"), name)) = what.split_once(' ') {
            let name = if kind == "schema" {
                name.to_string()
            } else {
                qualified(name)
            };
            return Error::source_db(format!(
                "pg_dump cannot read {kind} {name} in {target}: permission denied"
            ))
            .with_hint(crate::ops::role_sql::grant_fix(role, kind, &name));
        }
        return Error::source_db(format!("pg_dump cannot read everything in {target}: {reason}"))
            .with_hint("the backup role needs SELECT on every table, sequence and large object; offsitedb role-sql prints a read-only role that has it, and offsitedb check names what it lacks");
    }
    if text.contains("prepared statement")
        || text.contains("invalid snapshot identifier")
        || text.contains("unsupported startup parameter")
        || text.contains("transaction blocks not allowed")
    {
        return postgres::pooler::pooler_error(target, &format!("pg_dump: {reason}"));
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
