/*!
The dump inspector: reads a pg_dump custom-format archive (`pg_dump -Fc -Z0`) as it streams by
and reports what it holds: per table, the rows and an order-independent content digest that a
drill recomputes from the restored database ([`RowHasher`]); the large objects likewise
([`LoHasher`]); owners and extensions, which a restore needs; and where each data block starts,
so that a dump spooled from a pipe can be given the offsets pg_dump writes into a seekable file
([`rewrite_offsets`]), which `pg_restore -j` needs to be fast.

It costs the source database nothing and is exactly consistent with the dump. It holds one row
at most (usually not even that) and the names of the tables, never a table. The format is
defined, version by version, by pg_dump's source (src/bin/pg_dump/pg_backup_archiver.c and
pg_backup_custom.c); archives of pg_dump 13 to 18 (1.14 to 1.16) are understood.
Anything else is [`DumpError::Unsupported`] (the backup then counts rows in the database
instead) or [`DumpError::Malformed`]; either way [`inspect`] reads its input to the end, so the
stream it observes still reaches the repository whole.
*/

mod input;
mod offsets;
mod parse;
mod rows;

use std::collections::BTreeSet;
use std::io::Read;

pub use offsets::rewrite_offsets;
pub use rows::{LoHasher, RowHasher, lo_digest_update};

use crate::error::{Error, ErrorKind};

/// The read buffer: large enough that a pipe read rarely stops a row short, small enough to stay
/// in the L2 cache.
const BUFFER: usize = 256 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DumpSummary {
    /// e.g. "1.14.0"
    pub archive_version: String,
    pub dbname: String,
    pub server_version: String,
    pub pg_dump_version: String,
    /// Always "none" in a summary: a compressed archive is [`DumpError::Unsupported`].
    pub compression: String,
    /// The client encoding of every string and every COPY byte, e.g. "UTF8".
    pub encoding: Option<String>,
    /// One per TABLE DATA block, in archive order.
    pub tables: Vec<TableDigest>,
    /// Every BLOBS block together, as the pseudo-table `pg_catalog.pg_largeobject` (dump id of
    /// the first block); `None` when the archive has no BLOBS block.
    pub large_objects: Option<TableDigest>,
    /// Every non-empty owner named in the table of contents.
    pub owners: BTreeSet<String>,
    /// Tags of EXTENSION entries, in archive order.
    pub extensions: Vec<String>,
    /// Where each data block is and where its TOC entry records that, for [`rewrite_offsets`].
    pub data_offsets: Vec<DataOffset>,
    /// The header's `offSize`: the width of each offset field.
    pub off_size: u8,
    /// The length of the archive.
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableDigest {
    pub dump_id: i32,
    pub schema: String,
    pub name: String,
    /// `COPY "s"."t" (cols) FROM stdin;\n`; replacing `FROM stdin` with `TO STDOUT` gives the
    /// statement that reproduces the rows.
    pub copy_stmt: Option<String>,
    pub rows: u64,
    /// Sum mod 2¹²⁸ of the rows' hashes (see [`RowHasher`]).
    pub digest: u128,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataOffset {
    pub dump_id: i32,
    /// Absolute position of the entry's Offset flag byte in the table of contents.
    pub field_pos: u64,
    /// Absolute position of the block-type byte of its data block.
    pub block_pos: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// Not an archive this inspector understands (another format or version, compressed data,
    /// INSERT statements): the caller falls back to counting rows in the database.
    #[error("cannot inspect the pg_dump archive: {what}")]
    Unsupported { what: String },
    /// Breaks the format: cut short, or bytes that cannot be what the format says.
    #[error("the pg_dump archive is malformed at byte {at}: {what}")]
    Malformed { what: String, at: u64 },
    #[error("cannot read the pg_dump archive: {0}")]
    Io(#[from] std::io::Error),
}

impl From<DumpError> for Error {
    fn from(e: DumpError) -> Self {
        match e {
            DumpError::Io(io) => Error::from_io(io, "cannot read the pg_dump archive"),
            e @ DumpError::Unsupported { .. } => Error::new(ErrorKind::Tool, e.to_string())
                .with_hint("OffsiteDB inspects archives of pg_dump 13 to 18 written with -Fc -Z0"),
            e @ DumpError::Malformed { .. } => Error::new(ErrorKind::Integrity, e.to_string()),
        }
    }
}

/// Follows an archive as the inspector reads it, in stream order: the table of contents, then
/// each data block. The drill restores from these while the snapshot is still downloading.
pub trait Observer {
    /// Whether [`Observer::toc`] and [`Observer::other_data`] get raw archive bytes (when false,
    /// they are not called and nothing is copied).
    fn wants_raw(&self) -> bool {
        false
    }
    /// The header and table of contents exactly as in the archive, what they say (so far only
    /// the header and TOC fields of `summary` are filled in), and the dump ids of the
    /// data-section entries that are not TABLE DATA (sequence values, large objects).
    fn toc(
        &mut self,
        _raw: Vec<u8>,
        _summary: &DumpSummary,
        _other_data: &[i32],
    ) -> std::io::Result<()> {
        Ok(())
    }
    /// A TABLE DATA block begins; its COPY text follows through [`Observer::rows`].
    fn table_start(&mut self, _schema: &str, _name: &str, _copy_stmt: &str) -> std::io::Result<()> {
        Ok(())
    }
    /// COPY text of the current table, in pieces of any size (rows may span pieces), ending
    /// with pg_dump's `\.` line.
    fn rows(&mut self, _data: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
    fn table_end(&mut self) -> std::io::Result<()> {
        Ok(())
    }
    /// A data block that is not table data (large objects), exactly as in the archive from its
    /// block header on, in pieces; blocks arrive whole and in archive order.
    fn other_data(&mut self, _raw: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
}

struct NoObserver;
impl Observer for NoObserver {}

/// What [`inspect_with`] does with the rest of the input after an error it found in the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    /// Read to the end anyway, so a tee in front copies the whole stream (what [`inspect`] does).
    Drain,
    /// Stop reading at once.
    Stop,
}

/// Reads a whole archive and summarises it. The input is always read to its end, also when the
/// archive turns out to be unsupported or malformed (only a read error stops it early).
pub fn inspect(r: impl Read) -> Result<DumpSummary, DumpError> {
    inspect_with(r, OnError::Drain)
}

pub fn inspect_with(r: impl Read, on_error: OnError) -> Result<DumpSummary, DumpError> {
    inspect_observed(r, on_error, &mut NoObserver)
}

/// Inspects an archive and tells `obs` what streams by, for a restore that runs while the
/// archive downloads. An error from the observer stops the reading (as [`DumpError::Io`]).
pub fn inspect_observed(
    r: impl Read,
    on_error: OnError,
    obs: &mut dyn Observer,
) -> Result<DumpSummary, DumpError> {
    let mut input = input::Input::new(r, BUFFER);
    match parse::parse(&mut input, obs) {
        Ok(s) => Ok(s),
        Err(e @ DumpError::Io(_)) => Err(e),
        Err(e) => {
            if on_error == OnError::Drain {
                input.drain()?;
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests;

/// A digest as the manifest writes it: 32 lowercase hex digits, most significant first.
pub fn digest_hex(d: u128) -> String {
    format!("{d:032x}")
}
