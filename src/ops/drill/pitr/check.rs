/*!
What a PITR drill checks on the recovered server, before it is stopped: `pg_amcheck` over every
database (heap pages and B-tree indexes; the `amcheck` extension installed where it is missing,
in the throwaway copy only), then every table read once with `COPY (SELECT * FROM ONLY t) TO
STDOUT` (every column, TOAST included, which a `count(*)` answered from an index would skip),
its rows counted.

PostgreSQL 13's `amcheck` has no heap check (`verify_heapam` came with 14, and `pg_amcheck` needs
it): there, each B-tree index is checked with `bt_index_check` in SQL, and the record says so.
*/

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::catalog::base_drill::{Check, TableRead, Verdict};
use crate::error::{Error, Result};
use crate::postgres::{ConnInfo, PgProgram, binaries, client};
use crate::process::ChildProcess;

/// How to reach the recovered server.
pub(super) struct Conn {
    pub socket_dir: PathBuf,
    pub port: u16,
    pub user: String,
}

impl Conn {
    pub fn info(&self, db: &str) -> ConnInfo {
        let mut ci = ConnInfo::default();
        ci.set("host", &self.socket_dir.to_string_lossy());
        ci.set("port", &self.port.to_string());
        ci.set("user", &self.user);
        ci.set("dbname", db);
        ci
    }

    pub fn connect(&self, db: &str) -> Result<client::Client> {
        client::connect(&self.info(db), "the recovered server")
    }

    /// The first of `users` that can connect, as the bootstrap superuser's name (the one that
    /// owns the catalog, oid 10: it may read every table and install amcheck).
    pub fn find(socket_dir: &Path, port: u16, users: &[String]) -> Result<Conn> {
        let mut last = None;
        for u in users {
            let c = Conn {
                socket_dir: socket_dir.to_path_buf(),
                port,
                user: u.clone(),
            };
            match c.connect("postgres").and_then(|mut cl| {
                cl.query_one("SELECT rolname::text FROM pg_roles WHERE oid = 10", &[])
                    .map_err(|e| client::query_error("cannot ask the recovered server", &e))
            }) {
                Ok(row) => {
                    return Ok(Conn {
                        user: row.get(0),
                        ..c
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::internal("no user to connect as")))
    }
}

/// The `pg_amcheck` a server of `major` is checked with: `None` before 14 (checked in SQL).
pub(super) fn amcheck_program(major: u32, dirs: &[PathBuf]) -> Result<Option<PgProgram>> {
    if major < 14 {
        return Ok(None);
    }
    binaries::pick(
        "pg_amcheck",
        major,
        dirs,
        &format!("a PITR drill checks the recovered PostgreSQL {major} with it"),
    )
    .map(Some)
}

/// Lines of `pg_amcheck`'s report kept as problems.
const REPORT_LINES: usize = 20;

/// Runs the checks; corruption found is a failed check, its first lines in `problems`.
pub(super) fn amcheck(
    conn: &Conn,
    program: Option<&PgProgram>,
    problems: &mut Vec<String>,
) -> Check {
    let r = match program {
        Some(p) => pg_amcheck(conn, p),
        None => sql_btree_check(conn),
    };
    match r {
        Ok((check, found)) => {
            problems.extend(found);
            check
        }
        Err(e) => {
            let detail = format!("amcheck could not run: {}", e.message());
            problems.push(detail.clone());
            Check {
                verdict: Verdict::Failed,
                detail,
            }
        }
    }
}

fn pg_amcheck(conn: &Conn, p: &PgProgram) -> Result<(Check, Vec<String>)> {
    let mut cmd = crate::process::command(&p.path);
    cmd.arg("--host")
        .arg(&conn.socket_dir)
        .arg("--port")
        .arg(conn.port.to_string())
        .arg("--username")
        .arg(&conn.user)
        .args([
            "--no-password",
            "--maintenance-db=postgres",
            "--all",
            "--install-missing",
        ]);
    let mut child = ChildProcess::spawn(cmd, "pg_amcheck", false)?;
    let mut out = String::new();
    let mut stdout = child.take_stdout();
    let _ = stdout.read_to_string(&mut out);
    let exit = child.wait_exit()?;
    let name = format!("pg_amcheck {}", p.version);
    let found: Vec<String> = out
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
        .collect();
    if exit.status.success() && found.is_empty() {
        return Ok((
            Check {
                verdict: Verdict::Passed,
                detail: format!(
                    "{name}: heap and B-tree indexes of every database, no corruption found"
                ),
            },
            Vec::new(),
        ));
    }
    let mut problems: Vec<String> = found
        .iter()
        .take(REPORT_LINES)
        .map(|l| format!("{name}: {l}"))
        .collect();
    if found.len() > REPORT_LINES {
        problems.push(format!(
            "{name}: and {} more lines",
            found.len() - REPORT_LINES
        ));
    }
    if problems.is_empty() {
        problems.push(format!("{name} failed: {}", exit.reason()));
    }
    Ok((
        Check {
            verdict: Verdict::Failed,
            detail: problems[0].clone(),
        },
        problems,
    ))
}

/// PostgreSQL 13: `bt_index_check` on every valid B-tree index of every database.
fn sql_btree_check(conn: &Conn) -> Result<(Check, Vec<String>)> {
    let mut problems = Vec::new();
    let mut indexes = 0usize;
    for db in databases(conn)? {
        let mut c = conn.connect(&db)?;
        c.batch_execute("CREATE EXTENSION IF NOT EXISTS amcheck")
            .map_err(|e| client::query_error(&format!("cannot install amcheck in {db}"), &e))?;
        let rows = c
            .query(
                "SELECT c.oid, n.nspname::text, c.relname::text FROM pg_index i \
                 JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
                 JOIN pg_am a ON a.oid = c.relam \
                 WHERE a.amname = 'btree' AND i.indisvalid AND i.indisready AND c.relpersistence <> 't' \
                 ORDER BY 2, 3",
                &[],
            )
            .map_err(|e| client::query_error(&format!("cannot list the indexes of {db}"), &e))?;
        for r in rows {
            let oid: u32 = r.get(0);
            indexes += 1;
            if let Err(e) = c.execute("SELECT bt_index_check($1::oid::regclass)", &[&oid]) {
                problems.push(format!(
                    "amcheck: index {db}.{}.{}: {}",
                    r.get::<_, String>(1),
                    r.get::<_, String>(2),
                    client::query_error("bt_index_check", &e).message()
                ));
            }
        }
    }
    let check = if problems.is_empty() {
        Check {
            verdict: Verdict::Passed,
            detail: format!(
                "amcheck bt_index_check: {indexes} B-tree indexes, no corruption found (PostgreSQL 13 has no heap check)"
            ),
        }
    } else {
        Check {
            verdict: Verdict::Failed,
            detail: problems[0].clone(),
        }
    };
    Ok((check, problems))
}

/// The databases that take connections, templates left out.
fn databases(conn: &Conn) -> Result<Vec<String>> {
    let mut c = conn.connect("postgres")?;
    let rows = c
        .query(
            "SELECT datname::text FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1",
            &[],
        )
        .map_err(|e| client::query_error("cannot list the databases", &e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Reads every table (and populated materialized view) of every database once; a table that
/// cannot be read is a problem.
pub(super) fn read_tables(conn: &Conn, problems: &mut Vec<String>) -> Result<Vec<TableRead>> {
    let mut out = Vec::new();
    for db in databases(conn)? {
        let mut c = conn.connect(&db)?;
        let rows = c
            .query(
                "SELECT n.nspname::text, c.relname::text FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE (c.relkind = 'r' OR (c.relkind = 'm' AND c.relispopulated)) \
                   AND c.relpersistence <> 't' \
                   AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                   AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
                 ORDER BY 1, 2",
                &[],
            )
            .map_err(|e| client::query_error(&format!("cannot list the tables of {db}"), &e))?;
        for r in rows {
            let (schema, name): (String, String) = (r.get(0), r.get(1));
            let sql = format!(
                "COPY (SELECT * FROM ONLY {}.{}) TO STDOUT",
                quote(&schema),
                quote(&name)
            );
            match count_lines(&mut c, &sql) {
                Ok(rows) => out.push(TableRead {
                    database: db.clone(),
                    schema,
                    name,
                    rows,
                }),
                Err(e) => {
                    problems.push(format!("table {db}.{schema}.{name} could not be read: {e}"))
                }
            }
        }
    }
    Ok(out)
}

/// Rows of a text-format COPY: one line each (newlines inside values are escaped).
fn count_lines(c: &mut client::Client, sql: &str) -> std::result::Result<u64, String> {
    let mut r = c
        .copy_out(sql)
        .map_err(|e| client::query_error("COPY", &e).message().to_string())?;
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(n),
            Ok(k) => n += memchr::memchr_iter(b'\n', &buf[..k]).count() as u64,
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}
