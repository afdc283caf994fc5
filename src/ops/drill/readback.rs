/*!
Reading the restored database back: every table with `COPY … TO STDOUT` under pg_dump's
session settings ([`SessionSql`]), hashed exactly as the inspector hashed the archive, on a raw
connection where it can ([`Conn`]). Also what is read once pre-data is in ([`after_pre_data`]:
rows extensions created themselves) and the large objects. Which tables are read when, and how
they are judged, is [`super::verify`].
*/

use std::collections::HashMap;
use std::io::Read;

use crate::catalog::Manifest;
use crate::catalog::drill::TableCheck;
use crate::catalog::manifest::TableRecord;
use crate::dump::{self, LoHasher, RowHasher};
use crate::error::{Error, Result};
use crate::postgres::rawcopy::RawConn;
use crate::postgres::{self, ConnInfo, client};

use super::target::{quote_ident, quote_literal};

/// The session settings that make `COPY … TO STDOUT` print what pg_dump printed.
pub(super) struct SessionSql {
    sql: String,
    lc_monetary: Option<String>,
}

impl SessionSql {
    pub(super) fn new(m: &Manifest) -> Self {
        let s = &m.verification.session;
        // pg_dump's own settings (setup_connection), then what it inherits from the server.
        // row_security = off as in pg_dump: rows a policy would hide make the read fail
        // instead of silently leaving them out.
        let mut sql = String::from(
            "SET DateStyle = ISO; SET IntervalStyle = postgres; SET extra_float_digits = 3; \
             SET search_path = ''; SET statement_timeout = 0; SET synchronize_seqscans = off; \
             SET row_security = off;",
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

    /// The same settings on a raw connection (a locale it lacks is reported by [`Self::apply`]).
    fn apply_raw(&self, c: &mut RawConn) -> std::result::Result<(), String> {
        c.execute(&self.sql).map_err(|e| e.to_string())?;
        if let Some(lc) = &self.lc_monetary {
            let _ = c.execute(&format!("SET lc_monetary = {}", quote_literal(lc)));
        }
        Ok(())
    }

    pub(super) fn apply(&self, c: &mut client::Client) -> Result<Option<String>> {
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

/// A verify connection: the `postgres` client for queries, and for reading rows a raw
/// connection when the target is a local socket that trusts us (a throwaway cluster).
pub(super) struct Conn {
    pub(super) c: client::Client,
    raw: Option<RawConn>,
}

impl Conn {
    pub(super) fn open(target: &ConnInfo, settings: &SessionSql) -> Result<(Conn, Option<String>)> {
        let mut c = postgres::connect(target, "the drill database")?;
        let warning = settings.apply(&mut c)?;
        let host = target.host();
        let raw = if host.starts_with('/') && target.password().is_none() {
            RawConn::connect(
                std::path::Path::new(&host),
                target.port(),
                &target.user(),
                &target.dbname(),
            )
            .ok()
            .flatten()
            .and_then(|mut r| settings.apply_raw(&mut r).ok().map(|_| r))
        } else {
            None
        };
        Ok((Conn { c, raw }, warning))
    }

    /// Runs a `COPY … TO STDOUT` and hashes its rows like the inspector hashed the archive.
    fn hash_copy(&mut self, sql: &str) -> std::result::Result<(u64, u128), String> {
        let mut h = RowHasher::new();
        if let Some(raw) = &mut self.raw {
            raw.copy_out(sql, |s| h.update(s))
                .map_err(|e| format!("COPY failed: {e}"))?;
            return Ok((h.rows(), h.digest()));
        }
        let mut reader = self
            .c
            .copy_out(sql)
            .map_err(|e| client::query_error("COPY failed", &e).message().to_string())?;
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
}

/// The table's heap size in blocks and bytes, or None when it cannot be had.
pub(super) fn heap_blocks(c: &mut client::Client, t: &TableRecord) -> Option<(u64, u64)> {
    let row = c
        .query_one(
            "SELECT pg_catalog.pg_relation_size(pg_catalog.format('%I.%I', $1::text, $2::text)::regclass)::bigint, \
                    pg_catalog.current_setting('block_size')::bigint",
            &[&t.schema, &t.name],
        )
        .ok()?;
    let (bytes, block): (i64, i64) = (row.get(0), row.get(1));
    (block > 0 && bytes >= 0).then(|| ((bytes / block) as u64, bytes as u64))
}

/// `COPY "s"."t" (a, b) FROM stdin;` → (`"s"."t"`, `a, b`); None without a column list.
pub(super) fn copy_parts(copy: &str) -> Option<(&str, &str)> {
    let rest = copy
        .trim_end()
        .strip_prefix("COPY ")?
        .strip_suffix("FROM stdin;")?;
    let rest = rest.trim_end();
    let mut quoted = false;
    let open = rest.char_indices().find_map(|(i, ch)| {
        match ch {
            '"' => quoted = !quoted,
            '(' if !quoted => return Some(i),
            _ => {}
        }
        None
    })?;
    let cols = rest[open + 1..].strip_suffix(')')?;
    Some((rest[..open].trim_end(), cols))
}

/// `"s"."t"` or `public.t` (pg_dump quotes only where needed) → (`s`, `t`).
pub(super) fn parse_qualified(text: &str) -> Option<(String, String)> {
    let mut parts = Vec::new();
    let mut rest = text;
    loop {
        let (part, after) = if let Some(quoted) = rest.strip_prefix('"') {
            let mut part = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                match chars.next()? {
                    (i, '"') if quoted[i + 1..].starts_with('"') => {
                        part.push('"');
                        chars.next();
                    }
                    (i, '"') => break i + 1,
                    (_, ch) => part.push(ch),
                }
            };
            (part, &quoted[end..])
        } else {
            let end = rest.find('.').unwrap_or(rest.len());
            (rest[..end].to_string(), &rest[end..])
        };
        parts.push(part);
        match after.strip_prefix('.') {
            Some(r) => rest = r,
            None if after.is_empty() => break,
            None => return None,
        }
    }
    match <[String; 2]>::try_from(parts) {
        Ok([schema, name]) => Some((schema, name)),
        Err(_) => None,
    }
}

/// Run once pre-data is restored, before any row is loaded. Lets the drill's role read every
/// row of the copy (a `--drill-server` role owns the tables it restores, and FORCE ROW LEVEL
/// SECURITY would hold even it to the policies), and reads what extensions put into their own
/// tables: pg_dump dumps only the rows added since (`pg_extension_config_dump`), so those are
/// taken off what is read back.
pub(super) fn after_pre_data(
    target: &ConnInfo,
    settings: &SessionSql,
    m: &Manifest,
    notes: &mut Vec<String>,
) -> Result<HashMap<usize, (u64, u128)>> {
    let (mut c, _) = Conn::open(target, settings)?;
    let q = |c: &mut client::Client, sql: &str| {
        c.query(sql, &[])
            .map_err(|e| client::query_error("cannot prepare the drill database", &e))
    };
    let bypass: bool = q(
        &mut c.c,
        "SELECT rolsuper OR rolbypassrls FROM pg_catalog.pg_roles WHERE rolname = current_user",
    )?
    .first()
    .is_some_and(|r| r.get(0));
    if !bypass {
        let forced = q(
            &mut c.c,
            "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relforcerowsecurity",
        )?;
        for r in &forced {
            let table: String = r.get(0);
            c.c.batch_execute(&format!("ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY"))
                .map_err(|e| client::query_error("cannot prepare the drill database", &e))?;
        }
        if !forced.is_empty() {
            notes.push(format!(
                "FORCE ROW LEVEL SECURITY turned off on {} table(s) of the drill copy, so that the drill's role reads every row",
                forced.len()
            ));
        }
    }
    let extension_tables: std::collections::HashSet<(String, String)> = q(
        &mut c.c,
        "SELECT n.nspname, c.relname FROM pg_catalog.pg_depend d \
         JOIN pg_catalog.pg_class c ON c.oid = d.objid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.deptype = 'e'",
    )?
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect();
    let mut baseline = HashMap::new();
    for (i, t) in m.verification.tables.iter().enumerate() {
        if !extension_tables.contains(&(t.schema.clone(), t.name.clone())) {
            continue;
        }
        let read = match (&t.copy, &t.digest) {
            (Some(_), Some(_)) => range_digest(&mut c, t, 0, None),
            _ => count_rows(&mut c.c, t).map(|n| (n, 0)),
        };
        let (rows, digest) = read.map_err(|e| {
            Error::source_db(format!(
                "cannot read the extension table {} before the restore: {e}",
                t.qualified()
            ))
        })?;
        if rows > 0 {
            notes.push(format!(
                "table {} belongs to an extension, which created {rows} of its rows: those are not counted (pg_dump dumps only the rows added since)",
                t.qualified()
            ));
            baseline.insert(i, (rows, digest));
        }
    }
    Ok(baseline)
}

/// The rows of heap blocks `[from, to)` of a table, read and hashed like [`copy_digest`].
pub(super) fn range_digest(
    c: &mut Conn,
    t: &TableRecord,
    from: u64,
    to: Option<u64>,
) -> std::result::Result<(u64, u128), String> {
    let copy = t.copy.as_deref().unwrap_or_default();
    let (_, cols) =
        copy_parts(copy).ok_or_else(|| format!("unexpected COPY statement {copy:?}"))?;
    // The table itself: a COPY may name the partition root it was written through.
    let table = format!("{}.{}", quote_ident(&t.schema), quote_ident(&t.name));
    let mut sql = format!("COPY (SELECT {cols} FROM ONLY {table}");
    if from > 0 || to.is_some() {
        sql.push_str(&format!(
            " WHERE ctid >= {}::tid",
            quote_literal(&format!("({from},0)"))
        ));
    }
    if let Some(to) = to {
        sql.push_str(&format!(
            " AND ctid < {}::tid",
            quote_literal(&format!("({to},0)"))
        ));
    }
    sql.push_str(") TO STDOUT");
    c.hash_copy(&sql)
}

/// pg_dump's `COPY t (cols) FROM stdin;` turned around, read and hashed like the inspector did.
pub(super) fn copy_digest(c: &mut Conn, copy: &str) -> std::result::Result<(u64, u128), String> {
    let stmt = copy
        .trim_end()
        .strip_suffix("FROM stdin;")
        .ok_or_else(|| format!("unexpected COPY statement {copy:?}"))?;
    c.hash_copy(&format!("{stmt}TO STDOUT"))
}

pub(super) fn count_rows(
    c: &mut client::Client,
    t: &TableRecord,
) -> std::result::Result<u64, String> {
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

/// The large objects, when the manifest has them, checked and added to `tables`.
pub(super) fn large_objects(
    target: &ConnInfo,
    m: &Manifest,
    tables: &mut Vec<TableCheck>,
    problems: &mut Vec<String>,
) -> Result<()> {
    if let Some(lo) = &m.verification.large_objects {
        let mut c = postgres::connect(target, "the drill database")?;
        let (check, problem) = verify_large_objects(&mut c, lo);
        problems.extend(problem);
        tables.push(check);
    }
    Ok(())
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
    use super::{copy_parts, parse_qualified};

    #[test]
    fn splits_copy_statements() {
        assert_eq!(
            copy_parts("COPY public.events (id, created_at) FROM stdin;\n"),
            Some(("public.events", "id, created_at"))
        );
        assert_eq!(
            copy_parts("COPY \"we(ird\".\"t\"\"x\" (\"a)b\", c) FROM stdin;\n"),
            Some(("\"we(ird\".\"t\"\"x\"", "\"a)b\", c"))
        );
        assert_eq!(copy_parts("COPY public.empty  FROM stdin;\n"), None);
        assert_eq!(copy_parts("INSERT INTO t VALUES (1);"), None);
    }

    #[test]
    fn reads_qualified_names_as_pg_dump_quotes_them() {
        let pair = |s: &str, n: &str| Some((s.to_string(), n.to_string()));
        assert_eq!(parse_qualified("public.p"), pair("public", "p"));
        assert_eq!(
            parse_qualified("\"we.ird\".\"t\"\"x\""),
            pair("we.ird", "t\"x")
        );
        assert_eq!(parse_qualified("s.\"Café\""), pair("s", "Café"));
        assert_eq!(parse_qualified("nodot"), None);
        assert_eq!(parse_qualified("a.b.c"), None);
        assert_eq!(parse_qualified("\"open.t"), None);
        assert_eq!(parse_qualified("\"a\"x.t"), None);
    }
}
