/*!
Operations, one file each. Each takes a repository (read-only where it can) and plain options,
does the work, and returns a result for the CLI to print; none of them prints by itself except
through the `note` callback they are given.
*/

use std::io::{BufReader, Read};

use crate::catalog::{Manifest, Repository};
use crate::crypto::UnsealReader;
use crate::error::{Error, Result};
use crate::pipeline::{Decoder, MeasureHandle, MeasureReader, Measured, decompressor};
use crate::storage::ReadStore;

pub mod backup;
pub mod backup_list;
pub mod base_fetch;
pub mod check;
pub mod check_lock;
pub mod decrypt;
pub mod demo;
pub mod directory;
pub mod drill;
pub mod fleet;
pub mod init;
pub mod job;
pub mod key;
pub mod list;
pub mod pitr;
pub mod prune;
pub mod prune_lock;
pub mod report;
pub mod restore;
pub mod role_sql;
pub mod spool;
pub mod verify;
pub mod wal_fetch;
pub mod wal_push;
pub mod wal_show;
pub mod wal_stream;
pub mod wal_verify;

/// Where temporary work goes (a drill's cluster and spool, a restore's spool): see
/// [`crate::cluster::work_parent`].
pub(crate) fn work_parent(explicit: Option<std::path::PathBuf>) -> Result<std::path::PathBuf> {
    crate::cluster::work_parent(explicit)
}

/// The pg_restore for a snapshot: at least as new as the pg_dump that wrote it.
pub(crate) fn pick_pg_restore(
    m: &Manifest,
    dirs: &[std::path::PathBuf],
) -> Result<crate::postgres::PgProgram> {
    crate::postgres::binaries::pick(
        "pg_restore",
        m.dump.major,
        dirs,
        &format!("the snapshot was written by pg_dump {}", m.dump.version),
    )
}

/// The snapshot's compressed artifact, unsealed as it streams, with its bytes measured.
pub(crate) type Artifact = MeasureReader<UnsealReader<Box<dyn Read + Send>>>;

pub(crate) fn open_artifact<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    m: &Manifest,
    live: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
) -> Result<(Artifact, MeasureHandle)> {
    let mut r = MeasureReader::new(repo.open_data(m)?);
    if let Some(c) = live {
        r = r.with_live_counter(c);
    }
    let h = r.handle();
    Ok((r, h))
}

/// The artifact, decompressed: the pg_dump archive as it was dumped.
pub(crate) fn open_dump<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    m: &Manifest,
    live: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
) -> Result<(Decoder<BufReader<Artifact>>, MeasureHandle)> {
    let (r, h) = open_artifact(repo, m, live)?;
    Ok((decompressor(r, m.compression.algorithm)?, h))
}

/// After the decoder reached its end: reads whatever follows (there should be nothing) so the
/// whole object was authenticated, then compares size and hash with the manifest.
pub(crate) fn finish_dump(
    d: Decoder<BufReader<Artifact>>,
    h: &MeasureHandle,
    m: &Manifest,
) -> Result<()> {
    let mut rest = d.into_inner();
    let mut tail = Vec::new();
    rest.read_to_end(&mut tail)
        .map_err(|e| Error::from_io(e, "cannot read the end of the snapshot"))?;
    if !tail.is_empty() {
        return Err(Error::integrity(format!(
            "snapshot {}: {} unexpected bytes after the end of the compressed data",
            m.snapshot_id,
            tail.len()
        )));
    }
    check_artifact(m, &h.result())
}

/// The artifact's size and SHA-256 must be the manifest's.
pub(crate) fn check_artifact(m: &Manifest, got: &Measured) -> Result<()> {
    if got.bytes != m.sizes.compressed_bytes || got.sha256 != m.data.sha256_compressed {
        return Err(Error::integrity(format!(
            "snapshot {}: the data does not match its manifest ({} bytes, sha256 {}; expected {} bytes, sha256 {})",
            m.snapshot_id,
            got.bytes,
            got.sha256,
            m.sizes.compressed_bytes,
            m.data.sha256_compressed
        )));
    }
    Ok(())
}
