/*!
A whole database server as a backup source: a base backup, the starting point of a
point-in-time restore. `pg_basebackup` runs as a child over a replication connection and writes
one tar stream (the data folder, the WAL the copy needs to be consistent, and on PostgreSQL 13+
the server's `backup_manifest`) to its standard output, which the backup skeleton ([`super`])
streams through compress, seal and upload like any other source:

```text
pg_basebackup -D - -Ft -X fetch ─┬─► compress (zstd) ─► seal ─► upload   base/<source>/<id>/data
                                 └─► tar reader: backup_label, global/pg_control, backup_manifest
```

The tar reader (`facts.rs`) learns where the copy starts in the WAL (`backup_label`), which
cluster it is (the system identifier in `pg_control`) and whether the server's manifest is in it;
pg_basebackup's `-v` lines say where the copy ends. These must agree with each other, or the
upload is aborted: a base backup whose manifest could place it wrongly in the WAL is worse than
none. Only after pg_basebackup exited successfully and everything agrees is the object
completed; the manifest (`base/<source>/<id>/manifest`) is written last.

Before anything runs, our own connection checks what pg_basebackup would fail on later, with the
fix: the role's REPLICATION attribute, `wal_level`, `max_wal_senders`, and tablespaces (not
restorable from a stream to standard output yet). `offsitedb check` reports the same facts
([`Replication`]).

With [`BackupOptions::incremental`] (PostgreSQL 17+), the copy is incremental on the source's
newest base backup ([`incremental`]). Either way, the server's `backup_manifest` is kept as it
passes in the tar and stored as its own object beside the data, for the next incremental.

Compression: zstd unless the source (or `--compression`) says otherwise: physical copies are
large, and zstd compresses them several times faster than gzip, which matters more here than
`gunzip` compatibility (`offsitedb decrypt ... | zstd -d | tar x` restores without OffsiteDB).
*/

use std::sync::mpsc::Receiver;

use jiff::Timestamp;

use super::{BackupOptions, Layout, Stream};
use crate::catalog::base::{BaseDescribed, BaseManifest, Incremental};
use crate::catalog::manifest::{DumpRecord, ServerRecord, SourceInfo};
use crate::catalog::{Repository, SourceKind};
use crate::config::{SourceSpec, WalMode};
use crate::error::{Error, ErrorKind, Result};
use crate::ops::role_sql::ident;
use crate::pipeline::{Algorithm, Compression};
use crate::postgres::{self, PgProgram, ServerInfo, binaries, client};
use crate::process::{ChildProcess, Exit};
use crate::state::{Job, Outcome, State};
use crate::storage::WriteStore;
use facts::{Expect, Facts, spawn_tar_reader};

mod facts;
pub(crate) use facts::fuzz_tar;
pub mod incremental;

/// Base backups are compressed with zstd unless the source says otherwise.
pub const DEFAULT_COMPRESSION: Compression = Compression {
    algorithm: Algorithm::Zstd,
    level: 1,
};

/// The compression of a base backup of `spec`: `--compression` (`flag`), else the source's own
/// `compression` setting, else [`DEFAULT_COMPRESSION`] (not the snapshots' gzip default).
pub fn compression_for(
    settings: &crate::config::Settings,
    spec: &SourceSpec,
    flag: bool,
) -> Compression {
    let configured = spec.configured
        && settings
            .file
            .sources
            .iter()
            .any(|s| s.name == spec.name && s.compression.is_some());
    if flag || configured {
        spec.compression
    } else {
        DEFAULT_COMPRESSION
    }
}

/// Takes a base backup of `spec` (a database source), records the run when `state` is given,
/// and returns the committed manifest.
pub fn run_source<S: WriteStore + ?Sized>(
    repo: &Repository<S>,
    spec: &SourceSpec,
    compression: Compression,
    opts: &BackupOptions,
    state: Option<&State>,
    note: &mut dyn FnMut(String),
) -> Result<BaseManifest> {
    if let Some(dir) = &spec.dir {
        return Err(Error::config(format!(
            "{} is a folder source ({}): base backups are of database servers",
            spec.name,
            dir.display()
        ))
        .with_hint("back a folder up with: offsitedb backup"));
    }
    super::recorded(
        state,
        Job::BaseBackup,
        &spec.name,
        || {
            let parent = if opts.incremental {
                Some(incremental::prepare(repo, spec, note)?)
            } else {
                None
            };
            let source = Box::new(BaseBackup::new(
                spec,
                opts,
                compression,
                parent
                    .as_ref()
                    .map(|p| (p.file.clone(), p.incremental.clone())),
            ));
            let s = super::run(
                repo,
                &spec.name,
                compression,
                opts,
                Layout::Base,
                source,
                note,
            )?;
            let Described {
                base,
                manifest_copy,
            } = s.described;
            match manifest_copy {
                Some(Ok(copy)) => {
                    if let Err(e) = repo.put_server_manifest(&spec.name, &s.id, &copy) {
                        note(format!(
                            "cannot store the server's backup_manifest beside the base backup ({}): an incremental on it reads it from the tar",
                            e.message()
                        ));
                    }
                }
                Some(Err(why)) => note(format!(
                    "the server's backup_manifest is not stored beside the base backup ({why}): an incremental on it reads it from the tar"
                )),
                None => {}
            }
            let m = BaseManifest::assemble(s.id, base, &s.sink, s.key, s.compression, repo.key());
            repo.commit_base_manifest(&m)?;
            Ok(m)
        },
        |m| Outcome {
            snapshot: Some(m.backup_id.to_string()),
            plain_bytes: Some(m.sizes.plain_bytes),
            stored_bytes: Some(m.sizes.stored_bytes),
            ..Default::default()
        },
    )
}

/// pg_basebackup's arguments, as the manifest records them (the connection string is left out).
/// `-X fetch`: the WAL the copy needs is fetched at its end, into the same tar (`-X stream`
/// cannot write to standard output). The server's default manifest checksums (CRC32C) are
/// enough: the object is authenticated as a whole, and `pg_verifybackup` checks each file.
/// `incremental`: the parent's `backup_manifest` is given (recorded without its temporary path).
fn arguments(incremental: bool) -> Vec<String> {
    let mut v: Vec<String> = [
        "--pgdata=-",
        "--format=tar",
        "--wal-method=fetch",
        "--checkpoint=fast",
        "--label=offsitedb",
        "--no-password",
        "--verbose",
    ]
    .map(String::from)
    .to_vec();
    if incremental {
        v.push("--incremental=PARENT/backup_manifest".into());
    }
    v
}

/// A database server, by its connection string.
pub struct BaseBackup {
    spec: SourceSpec,
    pg_bin_dirs: Vec<std::path::PathBuf>,
    /// Set by `prepare`.
    ready: Option<Ready>,
    /// Set by `open`: the server's clock before pg_basebackup started.
    started: Option<Timestamp>,
    /// How the server's `backup_manifest` is kept as it passes.
    compression: Compression,
    /// The parent's `backup_manifest` file and what the new backup is based on.
    incremental: Option<(std::path::PathBuf, Incremental)>,
    /// What the stream said, once it ended well.
    done: Option<Receiver<(Facts, ManifestCopy)>>,
}

/// The server's `backup_manifest`, compressed, or why it was not kept.
type ManifestCopy = Option<std::result::Result<Vec<u8>, String>>;

/// What a base backup learned: its manifest's part, and the copy of the server's manifest.
pub struct Described {
    pub base: BaseDescribed,
    manifest_copy: ManifestCopy,
}

struct Ready {
    client: client::Client,
    info: ServerInfo,
    repl: Replication,
    program: PgProgram,
}

impl BaseBackup {
    pub fn new(
        spec: &SourceSpec,
        opts: &BackupOptions,
        compression: Compression,
        incremental: Option<(std::path::PathBuf, Incremental)>,
    ) -> BaseBackup {
        BaseBackup {
            spec: spec.clone(),
            pg_bin_dirs: opts.pg_bin_dirs.clone(),
            compression,
            incremental,
            ready: None,
            started: None,
            done: None,
        }
    }
}

impl super::Source for BaseBackup {
    type Described = Described;

    fn kind(&self) -> SourceKind {
        SourceKind::Postgres
    }

    fn what(&self) -> &'static str {
        "the base backup"
    }

    fn prepare(&mut self, note: &mut dyn FnMut(String)) -> Result<Option<u64>> {
        let ci = &self.spec.conninfo;
        let target = ci.redacted();
        for n in &self.spec.notes {
            note(n.clone());
        }
        let mut client = postgres::connect(ci, "the source database")?;
        let info = postgres::server_info(&mut client)?;
        let repl = Replication::read(&mut client)?;
        if let Some(e) = repl.refusal(&target) {
            return Err(e);
        }
        if let Some(why) = repl.archive_gap(self.spec.policy.wal) {
            note(format!(
                "{why}: without a WAL archive this base backup restores only to the moment it ended (offsitedb check shows the fix)"
            ));
        }
        let program = binaries::pick(
            "pg_basebackup",
            info.major,
            &binaries::search_dirs(&self.pg_bin_dirs),
            &format!("the server at {target} runs PostgreSQL {}", info.version),
        )?;
        // Every database the role can see, and two segments of WAL: an upper estimate for the
        // upload's part size.
        let hint = client
            .query_one(
                "SELECT sum(pg_catalog.pg_database_size(oid))::int8 FROM pg_catalog.pg_database
                  WHERE has_database_privilege(oid, 'CONNECT')",
                &[],
            )
            .ok()
            .and_then(|r| r.get::<_, Option<i64>>(0))
            .map(|s| s as u64 + s as u64 / 4 + 2 * repl.segment_size + (64 << 20));
        self.ready = Some(Ready {
            client,
            info,
            repl,
            program,
        });
        Ok(hint)
    }

    fn open(&mut self, _note: &mut dyn FnMut(String)) -> Result<Stream> {
        let ci = self.spec.conninfo.clone();
        let ready = self
            .ready
            .as_mut()
            .ok_or_else(|| Error::internal("a base backup was opened before it was prepared"))?;
        self.started = Some(server_clock(&mut ready.client).unwrap_or_else(|_| Timestamp::now()));
        let mut cmd = crate::process::command(&ready.program.path);
        cmd.args(arguments(false));
        if let Some((file, _)) = &self.incremental {
            cmd.arg("--incremental").arg(file);
        }
        // pg_basebackup takes a connection string as --dbname (and ignores its dbname); the
        // password goes in the environment, never on the command line.
        cmd.arg("--dbname").arg(ci.to_conninfo_without_secrets());
        postgres::child_env(&mut cmd, &ci);
        let mut child = ChildProcess::spawn(cmd, "pg_basebackup", false)?;
        let stdout = child.take_stdout();
        let (tap, reader) = spawn_tar_reader(Some(self.compression))?;
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        self.done = Some(done_rx);
        let expect = Expect {
            segment_size: ready.repl.segment_size,
            system_identifier: ready.info.system_identifier.clone(),
        };
        let (target, role) = (ci.redacted(), ci.user());
        Ok(Stream {
            reader: Box::new(stdout),
            tap: Some(tap),
            // Commit only if pg_basebackup succeeded and what it wrote is a consistent copy. If
            // the sink fails first, this closure is dropped with `child`, which kills it.
            on_eof: Box::new(move || {
                let exit = child.wait_exit()?;
                if !exit.status.success() {
                    return Err(pg_basebackup_error(&exit, &target, &role));
                }
                let mut tar = reader
                    .join()
                    .map_err(|_| Error::internal("the base backup's tar reader panicked"))?;
                let facts = Facts::gather(&tar, &exit.stderr, &expect)
                    .map_err(|e| e.context(format!("pg_basebackup's copy of {target}")))?;
                let _ = done_tx.send((facts, tar.manifest_copy.take()));
                Ok(())
            }),
        })
    }

    fn describe(mut self: Box<Self>, note: &mut dyn FnMut(String)) -> Result<Described> {
        let (facts, manifest_copy) = self
            .done
            .as_ref()
            .and_then(|r| r.recv().ok())
            .ok_or_else(|| Error::internal("the base backup ended without its facts"))?;
        let Ready {
            mut client,
            info,
            repl,
            program,
        } = self
            .ready
            .take()
            .ok_or_else(|| Error::internal("a base backup was described before it was prepared"))?;
        let finished = server_clock(&mut client).unwrap_or_else(|e| {
            note(format!(
                "cannot read the server's clock after the copy ({}); the manifest has this machine's",
                e.message()
            ));
            Timestamp::now()
        });
        let ci = &self.spec.conninfo;
        let incremental = self.incremental.take().map(|(_, i)| i);
        let base = BaseDescribed {
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
                system_identifier: Some(facts.system_identifier),
                in_recovery: info.in_recovery,
            },
            timeline: facts.timeline,
            start_lsn: facts.start_lsn,
            end_lsn: facts.end_lsn,
            segment_size: repl.segment_size,
            start_wal: facts.start_wal,
            started: self.started.unwrap_or(finished),
            finished,
            tool: DumpRecord {
                tool: "pg_basebackup".into(),
                version: program.version.clone(),
                major: program.major,
                format: "tar".into(),
                arguments: arguments(incremental.is_some()),
            },
            server_manifest: facts.server_manifest,
            tablespaces: Vec::new(),
            incremental,
        };
        Ok(Described {
            base,
            manifest_copy,
        })
    }
}

/// The server's `clock_timestamp()`.
fn server_clock(c: &mut client::Client) -> Result<Timestamp> {
    let us: i64 = c
        .query_one(
            "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::int8",
            &[],
        )
        .map_err(|e| client::query_error("cannot read the server's clock", &e))?
        .get(0);
    Timestamp::from_microsecond(us)
        .map_err(|e| Error::source_db(format!("the server's clock is out of range: {e}")))
}

/// What a base backup needs of the server and the role, read over an ordinary connection.
#[derive(Clone, Debug)]
pub struct Replication {
    /// The role that logged in (a replication connection authenticates as it).
    pub role: String,
    pub superuser: bool,
    /// The REPLICATION attribute (not inherited through membership).
    pub replication: bool,
    pub wal_level: String,
    pub archive_mode: String,
    /// `None` when the role may not read it (superusers and pg_read_all_settings may).
    pub archive_command: Option<String>,
    pub max_wal_senders: i64,
    /// `wal_segment_size` in bytes.
    pub segment_size: u64,
    /// Tablespaces besides pg_default and pg_global.
    pub tablespaces: Vec<String>,
}

impl Replication {
    pub fn read(c: &mut client::Client) -> Result<Replication> {
        let r = c
            .query_one(
                "SELECT session_user::text, r.rolsuper, r.rolreplication,
                        current_setting('wal_level'), current_setting('archive_mode'),
                        current_setting('max_wal_senders')::int8,
                        (SELECT setting::int8 * CASE unit WHEN 'B' THEN 1 WHEN 'kB' THEN 1024
                                 WHEN 'MB' THEN 1048576 WHEN '8kB' THEN 8192 ELSE 1 END
                           FROM pg_catalog.pg_settings WHERE name = 'wal_segment_size'),
                        ARRAY(SELECT spcname::text FROM pg_catalog.pg_tablespace
                               WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY 1)
                   FROM pg_catalog.pg_roles r WHERE r.rolname = session_user",
                &[],
            )
            .map_err(|e| client::query_error("cannot read the replication settings", &e))?;
        // Hidden from roles without pg_read_all_settings on some versions: then unknown.
        let archive_command = c
            .query_opt(
                "SELECT setting FROM pg_catalog.pg_settings WHERE name = 'archive_command'",
                &[],
            )
            .ok()
            .flatten()
            .and_then(|r| r.get::<_, Option<String>>(0))
            .filter(|s| !s.contains("insufficient privilege"));
        let segment_size: Option<i64> = r.get(6);
        Ok(Replication {
            role: r.get(0),
            superuser: r.get(1),
            replication: r.get(2),
            wal_level: r.get(3),
            archive_mode: r.get(4),
            archive_command,
            max_wal_senders: r.get(5),
            segment_size: segment_size
                .map(|s| s as u64)
                .unwrap_or(crate::wal::name::DEFAULT_SEGMENT_SIZE),
            tablespaces: r.get(7),
        })
    }

    /// The role may open a replication connection.
    pub fn role_error(&self) -> Option<Error> {
        (!self.superuser && !self.replication).then(|| {
            Error::source_db(format!(
                "the role {} lacks the REPLICATION attribute: a base backup needs a replication connection",
                self.role
            ))
            .with_hint(replication_fix(&self.role))
        })
    }

    pub fn wal_level_error(&self) -> Option<Error> {
        (self.wal_level == "minimal").then(|| {
            Error::source_db(
                "wal_level is minimal: the server writes too little WAL for a base backup or a point-in-time restore",
            )
            .with_hint("as a superuser: ALTER SYSTEM SET wal_level = replica; then restart the server")
        })
    }

    pub fn senders_error(&self) -> Option<Error> {
        (self.max_wal_senders < 1).then(|| {
            Error::source_db(
                "max_wal_senders is 0: the server accepts no replication connection, and pg_basebackup needs one",
            )
            .with_hint("as a superuser: ALTER SYSTEM SET max_wal_senders = 10; then restart the server")
        })
    }

    pub fn tablespace_error(&self) -> Option<Error> {
        (!self.tablespaces.is_empty()).then(|| {
            Error::config(format!(
                "tablespaces cannot be backed up with base backups yet: the server has {}",
                self.tablespaces.join(", ")
            ))
            .with_hint(
                "move their tables and indexes to pg_default (ALTER TABLE ... SET TABLESPACE pg_default), or back this server up with logical dumps (offsitedb backup)",
            )
        })
    }

    /// Why pg_basebackup would fail, the first reason: said before it runs.
    pub fn refusal(&self, target: &str) -> Option<Error> {
        self.role_error()
            .or_else(|| self.wal_level_error())
            .or_else(|| self.senders_error())
            .map(|e| e.context(format!("cannot take a base backup of {target}")))
            .or_else(|| self.tablespace_error())
    }

    /// Why this server's WAL may not reach the archive (archiving off on the server, or the
    /// source not configured to push it), for a note; `None` when both are on.
    pub fn archive_gap(&self, wal: WalMode) -> Option<String> {
        match wal {
            // Streamed over a replication connection: archive_mode plays no part.
            WalMode::Stream => None,
            WalMode::Push if self.archive_mode == "off" => {
                Some("archive_mode is off on the server".to_string())
            }
            WalMode::Push => None,
            WalMode::Off => {
                Some("the source has no wal = \"push\" or wal = \"stream\"".to_string())
            }
        }
    }
}

/// The fix for a role without REPLICATION.
pub fn replication_fix(role: &str) -> String {
    format!(
        "as a superuser: ALTER ROLE {} REPLICATION; pg_hba.conf must also let it in for replication (host replication {role} ADDRESS/32 scram-sha-256)",
        ident(role)
    )
}

/// Turns pg_basebackup's failure into one line, classified.
fn pg_basebackup_error(exit: &Exit, target: &str, role: &str) -> Error {
    use std::os::unix::process::ExitStatusExt;
    if let Some(sig) = exit.status.signal() {
        return Error::process(format!(
            "pg_basebackup was killed (signal {sig}) while it copied {target}; nothing was stored"
        ));
    }
    let text = exit.stderr_text();
    let reason = exit.reason();
    let reason = reason
        .strip_prefix("pg_basebackup: error: ")
        .unwrap_or(&reason)
        .to_string();
    if text.contains("no pg_hba.conf entry for replication connection") {
        return Error::source_db(format!(
            "the server at {target} does not accept replication connections from this host: {reason}"
        ))
        .with_hint(format!(
            "add a line to the server's pg_hba.conf: host replication {role} ADDRESS/32 scram-sha-256 (ADDRESS: this machine's), then SELECT pg_reload_conf()"
        ));
    }
    if text.contains("must be superuser or replication role")
        || text.contains("permission denied to start WAL sender")
    {
        return Error::source_db(format!(
            "the role {role} may not open a replication connection to {target}: {reason}"
        ))
        .with_hint(replication_fix(role));
    }
    if text.contains("password authentication failed") {
        return Error::source_db(format!("{target} refused the password: {reason}"))
            .with_hint("check the password in the URL (or PGPASSWORD / ~/.pgpass)");
    }
    if text.contains("exceeds max_wal_senders")
        || text.contains("too many clients")
        || text.contains("remaining connection slots")
    {
        return Error::source_db(format!(
            "the server at {target} has no free replication connection: {reason}"
        ))
        .with_hint("wait for the other base backup or standby, or raise max_wal_senders (then restart the server)")
        .transient();
    }
    if text.contains("has already been removed") {
        return Error::source_db(format!(
            "the server removed WAL the copy needs before pg_basebackup fetched it: {reason}"
        ))
        .with_hint("raise wal_keep_size on the server (or run the backup at a quieter time), then run it again")
        .transient();
    }
    if text.contains("WAL summaries are required") || text.contains("WAL summarization") {
        return Error::source_db(format!(
            "the server at {target} has no WAL summaries back to the base backup this incremental is based on: {reason}"
        ))
        .with_hint(incremental::SUMMARIZE_FIX);
    }
    if text.contains("incompatible server version") {
        return Error::tool(format!("pg_basebackup cannot copy {target}: {reason}"))
            .with_hint("install a pg_basebackup at least as new as the server, or list its directory in OFFSITEDB_PG_BIN_DIRS");
    }
    if text.contains("could not connect to server")
        || text.contains("connection to server")
        || text.contains("server closed the connection")
        || text.contains("terminating connection")
        || text.contains("could not receive data")
        || text.contains("unexpected termination")
    {
        return Error::source_db(format!(
            "pg_basebackup lost the connection to {target}: {reason}"
        ))
        .with_hint("the server went away during the copy; nothing was stored, run the backup again")
        .transient();
    }
    Error::new(
        ErrorKind::Process,
        format!("pg_basebackup failed on {target}: {reason}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_are_refused_with_their_fix() {
        let ok = Replication {
            role: "backup".into(),
            superuser: false,
            replication: true,
            wal_level: "replica".into(),
            archive_mode: "on".into(),
            archive_command: None,
            max_wal_senders: 10,
            segment_size: 16 << 20,
            tablespaces: Vec::new(),
        };
        assert!(ok.refusal("t").is_none());
        assert_eq!(ok.archive_gap(WalMode::Push), None);
        assert_eq!(
            Replication {
                archive_mode: "off".into(),
                ..ok.clone()
            }
            .archive_gap(WalMode::Stream),
            None
        );
        assert!(
            ok.archive_gap(WalMode::Off)
                .unwrap()
                .contains("wal = \"push\"")
        );
        let cases: [(Replication, &str, &str); 4] = [
            (
                Replication {
                    replication: false,
                    ..ok.clone()
                },
                "lacks the REPLICATION attribute",
                "ALTER ROLE \"backup\" REPLICATION",
            ),
            (
                Replication {
                    wal_level: "minimal".into(),
                    ..ok.clone()
                },
                "wal_level is minimal",
                "wal_level = replica",
            ),
            (
                Replication {
                    max_wal_senders: 0,
                    ..ok.clone()
                },
                "max_wal_senders is 0",
                "max_wal_senders = 10",
            ),
            (
                Replication {
                    tablespaces: vec!["fast".into()],
                    ..ok.clone()
                },
                "tablespaces cannot be backed up with base backups yet: the server has fast",
                "SET TABLESPACE pg_default",
            ),
        ];
        for (r, message, hint) in cases {
            let e = r.refusal("postgres://backup@db:5432/app").unwrap();
            assert!(e.message().contains(message), "{e}");
            assert!(e.hint().unwrap().contains(hint), "{e:?}");
        }
        let superuser = Replication {
            replication: false,
            superuser: true,
            archive_mode: "off".into(),
            ..ok.clone()
        };
        assert!(superuser.refusal("t").is_none());
        assert!(
            superuser
                .archive_gap(WalMode::Push)
                .unwrap()
                .contains("archive_mode is off")
        );
    }
}
