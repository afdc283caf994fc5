//! The archive walk: header, table of contents, then data blocks until the end of the stream
//! (pg_backup_archiver.c's `ReadHead` and `ReadToc`, pg_backup_custom.c's blocks). Every check
//! names what it found and where.

use std::collections::{BTreeSet, HashMap};
use std::io::Read;

use super::input::Input;
use super::rows::{LoHasher, RowHasher};
use super::{DataOffset, DumpError, DumpSummary, Observer, TableDigest};

/// Archive minor versions of pg_dump 13 to 18 (1.14: 13–15; 1.15: 16; 1.16: 17–18).
const MINORS: std::ops::RangeInclusive<u8> = 14..=16;
const ARCH_CUSTOM: u8 = 1;
const BLK_DATA: u8 = 1;
const BLK_BLOBS: u8 = 3;
const OFFSET_NO_DATA: u8 = 3;
/// `teSection` in pg_backup.h: none 1, pre-data 2, data 3, post-data 4.
const SECTION_DATA: i64 = 3;

struct Header {
    minor: u8,
}

/// What a TOC entry that may own a data block is.
enum Kind {
    TableData {
        schema: String,
        name: String,
        copy_stmt: Option<String>,
    },
    Blobs,
    Other(String),
}

struct Entry {
    kind: Kind,
    field_pos: u64,
    seen: bool,
}

pub(super) fn parse<R: Read>(
    input: &mut Input<R>,
    obs: &mut dyn Observer,
) -> Result<DumpSummary, DumpError> {
    let raw = obs.wants_raw();
    if raw {
        input.record();
    }
    let (header, mut summary) = header(input)?;
    if summary.compression != "none" {
        return Err(DumpError::Unsupported {
            what: format!(
                "its data is compressed ({}); OffsiteDB runs pg_dump with -Z0",
                summary.compression
            ),
        });
    }
    let mut other_data = Vec::new();
    let mut entries = toc(input, &header, &mut summary, &mut other_data)?;
    if raw {
        let bytes = input.recorded();
        input.stop_recording();
        obs.toc(bytes, &summary, &other_data)?;
    }
    data(input, &mut entries, &mut summary, obs)?;
    summary.bytes = input.position();
    Ok(summary)
}

fn header<R: Read>(input: &mut Input<R>) -> Result<(Header, DumpSummary), DumpError> {
    input.ctx = "the header";
    if input.bytes::<5>()? != *b"PGDMP" {
        return Err(DumpError::Unsupported {
            what: "it is not a custom-format archive (no PGDMP at the start)".into(),
        });
    }
    let [major, minor, rev] = input.bytes::<3>()?;
    let archive_version = format!("{major}.{minor}.{rev}");
    if major != 1 || !MINORS.contains(&minor) {
        return Err(DumpError::Unsupported {
            what: format!(
                "archive version {archive_version} (pg_dump 13 to 18 write 1.14 to 1.16)"
            ),
        });
    }
    let widths_at = input.position();
    let [int_size, off_size] = input.bytes::<2>()?;
    // pg_restore refuses widths above 32 too; zero would make every field empty.
    if !(1..=32).contains(&int_size) || !(1..=32).contains(&off_size) {
        return Err(input.malformed_at(
            format!("integer width {int_size} and offset width {off_size}"),
            widths_at,
        ));
    }
    input.set_widths(int_size, off_size);
    let format = input.byte()?;
    if format != ARCH_CUSTOM {
        return Err(DumpError::Unsupported {
            what: format!("archive format {format} is not custom (1)"),
        });
    }
    let compression = if minor < 15 {
        // A zlib level: 0 none, −1 the default, 1–9.
        match input.int()? {
            0 => "none".to_string(),
            level => format!("gzip level {level}"),
        }
    } else {
        match input.byte()? {
            0 => "none".to_string(),
            1 => "gzip".to_string(),
            2 => "lz4".to_string(),
            3 => "zstd".to_string(),
            n => format!("unknown algorithm {n}"),
        }
    };
    // The creation time (struct tm): not needed.
    for _ in 0..7 {
        input.int()?;
    }
    let dbname = input.text()?.unwrap_or_default();
    let server_version = input.text()?.unwrap_or_default();
    let pg_dump_version = input.text()?.unwrap_or_default();
    let summary = DumpSummary {
        archive_version,
        dbname,
        server_version,
        pg_dump_version,
        compression,
        encoding: None,
        tables: Vec::new(),
        large_objects: None,
        owners: BTreeSet::new(),
        extensions: Vec::new(),
        data_offsets: Vec::new(),
        off_size,
        bytes: 0,
    };
    Ok((Header { minor }, summary))
}

/// Reads the TOC, keeping only entries that may own a data block (an archive of a million
/// large objects in 1.14 has a million BLOB entries without data).
fn toc<R: Read>(
    input: &mut Input<R>,
    header: &Header,
    summary: &mut DumpSummary,
    other_data: &mut Vec<i32>,
) -> Result<HashMap<i32, Entry>, DumpError> {
    input.ctx = "the table of contents";
    let count_at = input.position();
    let count = input.int()?;
    if count < 0 {
        return Err(input.malformed_at(format!("{count} table of contents entries"), count_at));
    }
    let mut entries = HashMap::new();
    for _ in 0..count {
        let id_at = input.position();
        let dump_id = input.int()?;
        let dump_id = i32::try_from(dump_id)
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| input.malformed_at(format!("dump id {dump_id}"), id_at))?;
        let had_dumper = input.int()? != 0;
        input.skip_string()?; // catalogId.tableoid
        input.skip_string()?; // catalogId.oid
        let tag = input.text()?.unwrap_or_default();
        let desc = input.text()?.unwrap_or_default();
        let section = input.int()?;
        let table_data = desc == "TABLE DATA";
        if section == SECTION_DATA && !table_data {
            other_data.push(dump_id);
        }
        if desc == "ENCODING" {
            summary.encoding = input.text()?.as_deref().and_then(quoted_value);
        } else {
            input.skip_string()?; // defn
        }
        input.skip_string()?; // dropStmt
        let (copy_stmt, schema) = if table_data {
            (input.text()?, input.text()?)
        } else {
            input.skip_string()?;
            input.skip_string()?;
            (None, None)
        };
        input.skip_string()?; // tablespace
        input.skip_string()?; // tableam (1.14+)
        if header.minor >= 16 {
            input.int()?; // relkind
        }
        if let Some(owner) = input.text()?.filter(|o| !o.is_empty()) {
            summary.owners.insert(owner);
        }
        input.skip_string()?; // withOids
        while input.skip_string()? {} // dependencies, ended by NULL
        let field_pos = input.position();
        let (flag, _) = input.offset()?;
        if !(1..=3).contains(&flag) {
            return Err(input.malformed_at(format!("data offset flag {flag}"), field_pos));
        }
        if desc == "EXTENSION" {
            summary.extensions.push(tag.clone());
        }
        if !(had_dumper || flag != OFFSET_NO_DATA || table_data || desc == "BLOBS") {
            continue;
        }
        let kind = if table_data {
            Kind::TableData {
                schema: schema.unwrap_or_default(),
                name: tag,
                copy_stmt,
            }
        } else if desc == "BLOBS" {
            Kind::Blobs
        } else {
            Kind::Other(desc)
        };
        let entry = Entry {
            kind,
            field_pos,
            seen: false,
        };
        if entries.insert(dump_id, entry).is_some() {
            return Err(input.malformed_at(format!("a second entry for dump id {dump_id}"), id_at));
        }
    }
    Ok(entries)
}

/// `SET client_encoding = 'UTF8';` → `UTF8`
fn quoted_value(defn: &str) -> Option<String> {
    let start = defn.find('\'')? + 1;
    let len = defn[start..].find('\'')?;
    Some(defn[start..start + len].to_string())
}

fn data<R: Read>(
    input: &mut Input<R>,
    entries: &mut HashMap<i32, Entry>,
    summary: &mut DumpSummary,
    obs: &mut dyn Observer,
) -> Result<(), DumpError> {
    let raw = obs.wants_raw();
    let mut los: Option<(i32, LoHasher)> = None;
    loop {
        input.ctx = "a data block header";
        // pg_restore too takes the end of the stream at a block boundary as the end.
        if input.at_eof()? {
            break;
        }
        let block_pos = input.position();
        if raw {
            input.record();
        }
        let block_type = input.byte()?;
        let dump_id = input.int()?;
        let entry = i32::try_from(dump_id)
            .ok()
            .and_then(|id| entries.get_mut(&id))
            .ok_or_else(|| {
                input.malformed_at(
                    format!("a data block for dump id {dump_id}, which the table of contents does not give data"),
                    block_pos,
                )
            })?;
        let dump_id = dump_id as i32;
        if entry.seen {
            return Err(input.malformed_at(
                format!("a second data block for dump id {dump_id}"),
                block_pos,
            ));
        }
        entry.seen = true;
        summary.data_offsets.push(DataOffset {
            dump_id,
            field_pos: entry.field_pos,
            block_pos,
        });
        match (block_type, &mut entry.kind) {
            (
                BLK_DATA,
                Kind::TableData {
                    schema,
                    name,
                    copy_stmt,
                },
            ) => {
                let (schema, name, copy_stmt) = (
                    std::mem::take(schema),
                    std::mem::take(name),
                    copy_stmt.take(),
                );
                if copy_stmt.is_none() {
                    return Err(DumpError::Unsupported {
                        what: format!(
                            "the data of table {schema}.{name} is not COPY text (pg_dump --inserts?)"
                        ),
                    });
                }
                input.ctx = "table data";
                input.stop_recording();
                obs.table_start(&schema, &name, copy_stmt.as_deref().unwrap_or(""))?;
                let mut h = RowHasher::new();
                let mut failed = None;
                chunks(
                    input,
                    |s| {
                        h.update(s);
                        if failed.is_none()
                            && let Err(e) = obs.rows(s)
                        {
                            failed = Some(e);
                        }
                    },
                    |_| Ok(()),
                )?;
                if let Some(e) = failed {
                    return Err(e.into());
                }
                if !h.terminated() || h.junk_after_terminator() {
                    return Err(input.malformed_at(
                        format!("the data of table {schema}.{name} does not end with the COPY end marker"),
                        block_pos,
                    ));
                }
                obs.table_end()?;
                summary.tables.push(TableDigest {
                    dump_id,
                    schema,
                    name,
                    copy_stmt,
                    rows: h.rows(),
                    digest: h.digest(),
                });
            }
            (BLK_DATA, Kind::Other(_)) => {
                input.ctx = "a data block";
                chunks(input, |_| {}, |i| flush_raw(i, obs))?;
            }
            (BLK_BLOBS, Kind::Blobs) => {
                input.ctx = "large object data";
                let lo = &mut los.get_or_insert_with(|| (dump_id, LoHasher::new())).1;
                large_objects(input, lo, obs)?;
            }
            (BLK_DATA | BLK_BLOBS, kind) => {
                let desc = match kind {
                    Kind::TableData { .. } => "TABLE DATA",
                    Kind::Blobs => "BLOBS",
                    Kind::Other(d) => d.as_str(),
                };
                return Err(input.malformed_at(
                    format!(
                        "a data block of type {block_type} for a {desc:?} entry (dump id {dump_id})"
                    ),
                    block_pos,
                ));
            }
            (t, _) => {
                return Err(input.malformed_at(format!("data block type {t}"), block_pos));
            }
        }
    }
    summary.large_objects = los.map(|(dump_id, lo)| TableDigest {
        dump_id,
        schema: "pg_catalog".into(),
        name: "pg_largeobject".into(),
        copy_stmt: None,
        rows: lo.rows(),
        digest: lo.digest(),
    });
    Ok(())
}

/// A chunk sequence: `Int len` then `len` bytes, until `Int 0`. `after` runs after each chunk,
/// the final empty one included.
fn chunks<R: Read>(
    input: &mut Input<R>,
    mut f: impl FnMut(&[u8]),
    mut after: impl FnMut(&mut Input<R>) -> Result<(), DumpError>,
) -> Result<(), DumpError> {
    loop {
        let at = input.position();
        let n = input.int()?;
        if n < 0 {
            return Err(input.malformed_at(format!("a data chunk of length {n}"), at));
        }
        input.consume(n as u64, &mut f)?;
        after(input)?;
        if n == 0 {
            return Ok(());
        }
    }
}

/// Hands the observer what was recorded (raw bytes of a block that is not table data), so a
/// recording never holds more than one chunk.
fn flush_raw<R: Read>(input: &mut Input<R>, obs: &mut dyn Observer) -> Result<(), DumpError> {
    if obs.wants_raw() {
        obs.other_data(&input.recorded())?;
    }
    Ok(())
}

/// A BLOBS body: `{ Int oid; chunks }` per object, until an OID of 0.
fn large_objects<R: Read>(
    input: &mut Input<R>,
    lo: &mut LoHasher,
    obs: &mut dyn Observer,
) -> Result<(), DumpError> {
    loop {
        // OIDs ≥ 2³¹ arrive as negative ints; the low 32 bits are the OID.
        let oid = input.int()? as u32;
        if oid == 0 {
            return flush_raw(input, obs);
        }
        lo.begin(oid);
        chunks(input, |s| lo.update(s), |i| flush_raw(i, obs))?;
        lo.end();
    }
}
