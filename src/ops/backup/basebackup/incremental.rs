/*!
Incremental base backups (PostgreSQL 17 and later): `pg_basebackup --incremental=FILE` copies
only the blocks changed since the base backup whose server `backup_manifest` FILE is. The server
knows what changed from its WAL summaries, which it writes only with `summarize_wal = on`, and
only from the moment it was turned on.

Before anything is written: the server must be 17 or later with `summarize_wal` on, and the
parent (the source's newest base backup) must be of the same database system and timeline, and
its own chain down to the full backup must still be there. Its `backup_manifest` is read from the
separate copy stored next to it, or, for a base backup taken before those copies existed, from
the end of its tar, streamed (constant memory), into a private temporary file given to
pg_basebackup.
*/

use std::io::{Read, Write};
use std::path::PathBuf;

use super::facts::manifest_wal_end;
use crate::catalog::Repository;
use crate::catalog::base::{BaseManifest, Incremental};
use crate::config::SourceSpec;
use crate::error::{Error, Result};
use crate::pipeline::{MeasureReader, decompressor};
use crate::postgres::{self, client};
use crate::storage::ReadStore;

/// The first major version that takes incremental base backups.
pub const FIRST_MAJOR: u32 = 17;

/// The fix for `summarize_wal = off`.
pub const SUMMARIZE_FIX: &str = "as a superuser: ALTER SYSTEM SET summarize_wal = on; SELECT pg_reload_conf(); WAL is summarized only from then on, so take a full base backup after it (offsitedb backup-push), then incrementals on it";

/// What an incremental is based on, with the parent's `backup_manifest` in a temporary file
/// (removed when this is dropped).
pub struct Parent {
    pub manifest: BaseManifest,
    pub incremental: Incremental,
    pub file: PathBuf,
    _dir: tempfile::TempDir,
}

/// The server as an incremental needs it.
struct Server {
    major: u32,
    version: String,
    summarize_wal: Option<String>,
    system_identifier: Option<String>,
    timeline: Option<u32>,
}

fn read_server(spec: &SourceSpec) -> Result<Server> {
    let mut c = postgres::connect(&spec.conninfo, "the source database")?;
    let info = postgres::server_info(&mut c)?;
    let summarize_wal = if info.major >= FIRST_MAJOR {
        Some(
            c.query_one("SELECT current_setting('summarize_wal')", &[])
                .map_err(|e| client::query_error("cannot read summarize_wal", &e))?
                .get::<_, String>(0),
        )
    } else {
        None
    };
    // Callable by superusers and roles granted it; unknown otherwise (pg_basebackup then says).
    let timeline = c
        .query_one(
            "SELECT timeline_id::int8 FROM pg_catalog.pg_control_checkpoint()",
            &[],
        )
        .ok()
        .and_then(|r| r.get::<_, Option<i64>>(0))
        .map(|t| t as u32);
    Ok(Server {
        major: info.major,
        version: info.version,
        summarize_wal,
        system_identifier: info.system_identifier,
        timeline,
    })
}

/// Checks the server and the parent, and fetches the parent's `backup_manifest`.
pub fn prepare<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    spec: &SourceSpec,
    note: &mut dyn FnMut(String),
) -> Result<Parent> {
    let target = spec.conninfo.redacted();
    let server = read_server(spec)?;
    if server.major < FIRST_MAJOR {
        return Err(Error::config(format!(
            "the server at {target} runs PostgreSQL {}, which cannot take incremental base backups (PostgreSQL {FIRST_MAJOR} and later can)",
            server.version
        ))
        .with_hint("take full base backups: offsitedb backup-push without --incremental"));
    }
    if server.summarize_wal.as_deref() != Some("on") {
        return Err(Error::source_db(format!(
            "summarize_wal is off on the server at {target}: an incremental base backup needs the server's WAL summaries"
        ))
        .with_hint(SUMMARIZE_FIX));
    }
    let name = &spec.name;
    let parent = match repo.config() {
        // Ids of the same second order at random: the newest ends furthest in the WAL.
        Some(_) => repo
            .base_manifests(name)?
            .into_iter()
            .max_by_key(|m| (m.end_lsn, m.finished)),
        None => None,
    };
    let Some(parent) = parent else {
        return Err(Error::not_found(format!(
            "no base backup of {name} to base an incremental backup on"
        ))
        .with_hint(format!(
            "take a full one first: offsitedb backup-push --source {name} (with summarize_wal on)"
        )));
    };
    let full_fix = || {
        format!(
            "take a full base backup first: offsitedb backup-push --source {name} (without --incremental)"
        )
    };
    if let (Some(now), Some(then)) = (&server.system_identifier, &parent.server.system_identifier)
        && now != then
    {
        return Err(Error::config(format!(
            "the newest base backup of {name}, {}, is of database system {then}, and the server at {target} is {now}: an incremental cannot be based on it",
            parent.backup_id
        ))
        .with_hint(full_fix()));
    }
    if let Some(tl) = server.timeline
        && tl != parent.timeline
    {
        return Err(Error::config(format!(
            "the newest base backup of {name}, {}, was taken on timeline {}, and the server is on timeline {tl} now: an incremental cannot be based on it",
            parent.backup_id, parent.timeline
        ))
        .with_hint(full_fix()));
    }
    if parent.server.major != server.major {
        return Err(Error::config(format!(
            "the newest base backup of {name}, {}, is of PostgreSQL {}, and the server runs {}: an incremental cannot be based on it",
            parent.backup_id, parent.server.major, server.version
        ))
        .with_hint(full_fix()));
    }
    // The parent's own chain must be whole, or the new backup could never be restored.
    if let Some(inc) = &parent.incremental {
        for id in &inc.chain {
            repo.base_manifest(name, id).map_err(|e| {
                Error::integrity(format!(
                    "base backup {name}/{id}, which the newest base backup {} is based on, cannot be read: {}",
                    parent.backup_id,
                    e.message()
                ))
                .with_hint(full_fix())
            })?;
        }
    }
    let dir = tempfile::Builder::new()
        .prefix("offsitedb-incremental-")
        .tempdir_in(crate::cluster::work_parent(None)?)
        .map_err(|e| Error::io(format!("cannot create a temporary folder: {e}")))?;
    let file = dir.path().join("backup_manifest");
    write_server_manifest(repo, &parent, &file, note)?;
    let mut chain = parent
        .incremental
        .as_ref()
        .map(|i| i.chain.clone())
        .unwrap_or_default();
    chain.push(parent.backup_id.clone());
    note(format!(
        "incremental on base backup {} ({} backup{} down to the full {})",
        parent.backup_id,
        chain.len(),
        if chain.len() == 1 { "" } else { "s" },
        chain[0]
    ));
    Ok(Parent {
        incremental: Incremental {
            parent: parent.backup_id.clone(),
            chain,
        },
        manifest: parent,
        file,
        _dir: dir,
    })
}

/// Writes base backup `m`'s server `backup_manifest` to `file`: from its separate copy, else
/// from the end of its tar. Either way it must end where `m` ends in the WAL.
pub fn write_server_manifest<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    m: &BaseManifest,
    file: &std::path::Path,
    note: &mut dyn FnMut(String),
) -> Result<()> {
    let what = format!("base backup {}/{}", m.source.name, m.backup_id);
    if !m.server_manifest {
        return Err(Error::config(format!(
            "{what} has no backup_manifest (PostgreSQL {} writes none): an incremental cannot be based on it",
            m.server.major
        )));
    }
    let mut out =
        std::fs::File::create(file).map_err(|e| Error::io_at("cannot create", file, &e))?;
    let written = match repo.open_server_manifest(m)? {
        Some(mut r) => pipe(&mut r, &mut out).map_err(|e| {
            Error::from_io(e, &format!("cannot read the backup_manifest of {what}"))
        })?,
        None => {
            note(format!(
                "{what} has no separate copy of its backup_manifest: reading it from the end of its tar"
            ));
            from_tar(repo, m, &mut out)?
        }
    };
    out.flush()
        .map_err(|e| Error::io_at("cannot write", file, &e))?;
    drop(out);
    // The copy names no backup: its WAL range must be the backup's.
    let mut f = std::fs::File::open(file).map_err(|e| Error::io_at("cannot read", file, &e))?;
    let from = written.saturating_sub(64 << 10);
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(from))
        .map_err(|e| Error::io_at("cannot read", file, &e))?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail)
        .map_err(|e| Error::io_at("cannot read", file, &e))?;
    let end = manifest_wal_end(&String::from_utf8_lossy(&tail));
    if end != Some(m.end_lsn) {
        return Err(Error::integrity(format!(
            "the backup_manifest stored for {what} ends {}, and the base backup at {}",
            end.map_or("nowhere in the WAL".to_string(), |l| format!("at {l}")),
            m.end_lsn
        ))
        .with_hint("the object was replaced; take a full base backup"));
    }
    Ok(())
}

fn pipe(r: &mut dyn Read, w: &mut dyn Write) -> std::io::Result<u64> {
    crate::pipeline::copy_large(r, w)
}

/// Streams `m`'s tar and copies its `backup_manifest` entry into `out`; the whole object is read
/// and checked against the manifest.
fn from_tar<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    m: &BaseManifest,
    out: &mut dyn Write,
) -> Result<u64> {
    let what = format!("base backup {}/{}", m.source.name, m.backup_id);
    let measured = MeasureReader::new(repo.open_base_data(m).map_err(|e| e.context(&what))?);
    let stored = measured.handle();
    let mut plain = decompressor(measured, m.compression.algorithm)?;
    let mut written = None;
    {
        let mut archive = tar::Archive::new(&mut plain);
        let entries = archive
            .entries()
            .map_err(|e| Error::from_io(e, &format!("cannot read {what}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| Error::from_io(e, &format!("cannot read {what}")))?;
            let path = entry.path_bytes().into_owned();
            if path.strip_prefix(b"./").unwrap_or(&path) == b"backup_manifest" {
                written = Some(
                    pipe(&mut entry, out)
                        .map_err(|e| Error::from_io(e, &format!("cannot read {what}")))?,
                );
            }
        }
    }
    // The tar's end blocks and anything after the compressed data: the whole object is hashed.
    std::io::copy(&mut plain, &mut std::io::sink())
        .and_then(|_| std::io::copy(&mut plain.into_inner(), &mut std::io::sink()))
        .map_err(|e| Error::from_io(e, &format!("cannot read {what}")))?;
    let s = stored.result();
    if s.sha256 != m.data.sha256_compressed {
        return Err(Error::integrity(format!(
            "{what}: the data does not match its manifest (sha256 {}, expected {})",
            s.sha256, m.data.sha256_compressed
        )));
    }
    written.ok_or_else(|| Error::integrity(format!("{what} has no backup_manifest in its tar")))
}
