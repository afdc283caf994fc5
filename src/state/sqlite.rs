/*!
The state in one SQLite file, the default: one machine's `serve` and the commands typed on it.
Several processes may share the file (WAL mode, a busy timeout); a lease is taken inside one
`BEGIN IMMEDIATE` transaction, so two `serve` processes on one file never take the same job.
Times are RFC 3339 text, compared in Rust (their text does not sort by time).
*/

use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};

use super::{
    AlertState, Job, JobRow, Lease, Outcome, Planned, Run, RunResult, RunTag, Store, WorkerRow,
    seconds_between,
};
use crate::catalog::log::Head;
use crate::error::{Error, Result};

/// One entry per schema version; `PRAGMA user_version` says how many ran.
const SCHEMA: &[&str] = &[
    // Version 1.
    "CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        job TEXT NOT NULL,
        source TEXT NOT NULL,
        started TEXT NOT NULL,
        finished TEXT,
        result TEXT NOT NULL,
        error TEXT,
        snapshot TEXT,
        plain_bytes INTEGER,
        stored_bytes INTEGER,
        seconds REAL,
        restore_seconds REAL
     );
     CREATE INDEX runs_by_source ON runs (source, job, id);
     CREATE TABLE alerts (
        source TEXT NOT NULL,
        event TEXT NOT NULL,
        firing INTEGER NOT NULL,
        since TEXT NOT NULL,
        message TEXT,
        PRIMARY KEY (source, event)
     );",
    // Version 2: the newest log head seen per repository and source (the rollback check).
    "CREATE TABLE log_heads (
        repo TEXT NOT NULL,
        source TEXT NOT NULL,
        seq INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        seen TEXT NOT NULL,
        PRIMARY KEY (repo, source)
     );",
    // Version 3: fleets. Who ran each run and for which due time; scheduled jobs and their
    // leases; workers and their heartbeats.
    "ALTER TABLE runs ADD COLUMN worker TEXT;
     ALTER TABLE runs ADD COLUMN due TEXT;
     CREATE TABLE jobs (
        name TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        kind TEXT NOT NULL,
        schedule TEXT NOT NULL,
        due TEXT NOT NULL,
        requires TEXT NOT NULL,
        worker TEXT,
        token INTEGER NOT NULL DEFAULT 0,
        expires TEXT,
        action TEXT
     );
     CREATE TABLE workers (
        name TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        version TEXT NOT NULL,
        labels TEXT NOT NULL,
        started TEXT NOT NULL,
        seen TEXT NOT NULL,
        running TEXT NOT NULL
     );",
];

const RUN_COLUMNS: &str =
    "id, job, source, started, finished, result, error, snapshot, plain_bytes,
     stored_bytes, seconds, restore_seconds, worker, due";

pub(super) struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

/// Runs `f` again while SQLite says the file is busy, for up to 10 seconds. Connections racing
/// to switch a new file to WAL get "database is locked" at once, without the busy timeout (SQLite
/// cannot wait there without risking a deadlock); the race is over within moments.
fn retry_busy<T>(mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut pause = 1;
    loop {
        match f() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(pause));
                pause = (pause * 2).min(50);
            }
            r => return r,
        }
    }
}

impl SqliteStore {
    /// Opens (creating it and its directory if needed) the state file at `path`, bringing its
    /// schema up to date.
    pub(super) fn open(path: &Path) -> Result<SqliteStore> {
        Self::open_at_version(path, SCHEMA.len())
    }

    /// Opens the file migrated up to `version` only (tests make older states this way).
    pub(super) fn open_at_version(path: &Path, version: usize) -> Result<SqliteStore> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io_at("cannot create the state directory", dir, &e))?;
        }
        let bad = |e: rusqlite::Error| {
            Error::io(format!("state file {}: {e}", path.display())).with_hint(
                "the state file only holds run history and alert state: move it away and a new one is created (no backup is lost)",
            )
        };
        let conn = Connection::open(path).map_err(bad)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(bad)?;
        // Several processes may open a new file at once (the daemon, `history`): the switch to
        // WAL is retried while they race, and the schema is created under a write lock, after
        // reading the version again inside it.
        retry_busy(|| conn.pragma_update(None, "journal_mode", "WAL")).map_err(bad)?;
        retry_busy(|| conn.execute_batch("BEGIN IMMEDIATE")).map_err(bad)?;
        let migrated = (|| -> Result<()> {
            let found: i64 = conn
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .map_err(bad)?;
            if found as usize > SCHEMA.len() {
                return Err(Error::config(format!(
                    "state file {} was written by a newer offsitedb (schema {found}, this one knows {})",
                    path.display(),
                    SCHEMA.len()
                ))
                .with_hint("upgrade offsitedb, or point [state] path at another file"));
            }
            for (i, sql) in SCHEMA.iter().enumerate().take(version).skip(found as usize) {
                conn.execute_batch(&format!("{sql}; PRAGMA user_version = {};", i + 1))
                    .map_err(bad)?;
            }
            Ok(())
        })();
        match migrated {
            Ok(()) => conn.execute_batch("COMMIT").map_err(bad)?,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
        Ok(SqliteStore {
            conn,
            path: path.to_path_buf(),
        })
    }

    fn err(&self, e: rusqlite::Error) -> Error {
        Error::io(format!("state file {}: {e}", self.path.display()))
    }

    /// `f` inside one write transaction.
    fn write<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        retry_busy(|| self.conn.execute_batch("BEGIN IMMEDIATE")).map_err(|e| self.err(e))?;
        match f(&self.conn) {
            Ok(v) => {
                self.conn.execute_batch("COMMIT").map_err(|e| self.err(e))?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(self.err(e))
            }
        }
    }

    fn one_run(&self, sql: &str, p: impl rusqlite::Params) -> Result<Option<Run>> {
        self.conn
            .query_row(sql, p, row_to_run)
            .optional()
            .map_err(|e| self.err(e))
    }
}

impl Store for SqliteStore {
    fn describe(&self) -> String {
        format!("state file {}", self.path.display())
    }

    fn start(&self, job: Job, source: &str, at: Timestamp, tag: &RunTag) -> Result<i64> {
        self.conn
            .execute(
                "INSERT INTO runs (job, source, started, result, worker, due)
                 VALUES (?1, ?2, ?3, 'running', ?4, ?5)",
                params![
                    job.as_str(),
                    source,
                    at.to_string(),
                    tag.worker,
                    tag.due.map(|d| d.to_string())
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    fn finish(&self, id: i64, at: Timestamp, o: &Outcome) -> Result<()> {
        let started: String = self
            .conn
            .query_row("SELECT started FROM runs WHERE id = ?1", [id], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        self.conn
            .execute(
                "UPDATE runs SET finished = ?2, result = ?3, error = ?4, snapshot = ?5,
                        plain_bytes = ?6, stored_bytes = ?7, restore_seconds = ?8, seconds = ?9
                 WHERE id = ?1",
                params![
                    id,
                    at.to_string(),
                    o.result().as_str(),
                    o.error,
                    o.snapshot,
                    o.plain_bytes.map(|b| b as i64),
                    o.stored_bytes.map(|b| b as i64),
                    o.restore_seconds,
                    seconds_between(parse_ts(started), at),
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn close_interrupted(&self, worker: Option<&str>, why: &str) -> Result<usize> {
        self.conn
            .execute(
                "UPDATE runs SET result = 'interrupted', error = ?2
                 WHERE result = 'running' AND (?1 IS NULL OR worker = ?1)",
                params![worker, why],
            )
            .map_err(|e| self.err(e))
    }

    fn history(&self, source: Option<&str>, limit: usize) -> Result<Vec<Run>> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE ?1 IS NULL OR source = ?1
                 ORDER BY id DESC LIMIT ?2"
            ))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![source, limit as i64], row_to_run)
            .map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))
    }

    fn last(&self, source: &str, job: Job, result: Option<RunResult>) -> Result<Option<Run>> {
        self.one_run(
            &format!(
                "SELECT {RUN_COLUMNS} FROM runs
                 WHERE source = ?1 AND job = ?2 AND result != 'running'
                   AND (?3 IS NULL OR result = ?3)
                 ORDER BY id DESC LIMIT 1"
            ),
            params![source, job.as_str(), result.map(RunResult::as_str)],
        )
    }

    fn last_attempt(&self, source: &str, job: Job) -> Result<Option<Run>> {
        self.one_run(
            &format!(
                "SELECT {RUN_COLUMNS} FROM runs
                 WHERE source = ?1 AND job = ?2 AND result IN ('ok', 'failed')
                 ORDER BY id DESC LIMIT 1"
            ),
            params![source, job.as_str()],
        )
    }

    fn alert(&self, source: &str, event: &str) -> Result<Option<AlertState>> {
        self.conn
            .query_row(
                "SELECT firing, since, message FROM alerts WHERE source = ?1 AND event = ?2",
                params![source, event],
                |r| {
                    Ok(AlertState {
                        firing: r.get::<_, i64>(0)? != 0,
                        since: parse_ts(r.get::<_, String>(1)?),
                        message: r.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    fn switch_alert(
        &self,
        source: &str,
        event: &str,
        firing: bool,
        message: &str,
        at: Timestamp,
    ) -> Result<Option<Option<AlertState>>> {
        // Read and write under one write lock: two processes seeing the same change, one sends.
        let was = self.write(|c| {
            let was = c
                .query_row(
                    "SELECT firing, since, message FROM alerts WHERE source = ?1 AND event = ?2",
                    params![source, event],
                    |r| {
                        Ok(AlertState {
                            firing: r.get::<_, i64>(0)? != 0,
                            since: parse_ts(r.get::<_, String>(1)?),
                            message: r.get(2)?,
                        })
                    },
                )
                .optional()?;
            if was.as_ref().is_some_and(|a| a.firing) == firing {
                return Ok(None);
            }
            c.execute(
                "INSERT INTO alerts (source, event, firing, since, message) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (source, event) DO UPDATE
                 SET firing = excluded.firing, since = excluded.since, message = excluded.message",
                params![source, event, firing as i64, at.to_string(), message],
            )?;
            Ok(Some(was))
        })?;
        Ok(was)
    }

    fn log_head(&self, repo: &str, source: &str) -> Result<Option<(Head, Timestamp)>> {
        self.conn
            .query_row(
                "SELECT seq, sha256, seen FROM log_heads WHERE repo = ?1 AND source = ?2",
                params![repo, source],
                |r| {
                    Ok((
                        Head {
                            seq: r.get::<_, i64>(0)? as u64,
                            sha256: r.get(1)?,
                        },
                        parse_ts(r.get(2)?),
                    ))
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    fn set_log_head(&self, repo: &str, source: &str, head: &Head, force: bool) -> Result<()> {
        let sql = if force {
            "INSERT INTO log_heads (repo, source, seq, sha256, seen) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (repo, source) DO UPDATE
             SET seq = excluded.seq, sha256 = excluded.sha256, seen = excluded.seen"
        } else {
            "INSERT INTO log_heads (repo, source, seq, sha256, seen) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (repo, source) DO UPDATE
             SET seq = excluded.seq, sha256 = excluded.sha256, seen = excluded.seen
             WHERE excluded.seq > log_heads.seq"
        };
        self.conn
            .execute(
                sql,
                params![
                    repo,
                    source,
                    head.seq as i64,
                    head.sha256,
                    Timestamp::now().to_string()
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn log_sources(&self, repo: &str) -> Result<Vec<String>> {
        let mut q = self
            .conn
            .prepare("SELECT source FROM log_heads WHERE repo = ?1 ORDER BY source")
            .map_err(|e| self.err(e))?;
        let rows = q
            .query_map(params![repo], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<String>>>()
            .map_err(|e| self.err(e))
    }

    fn heartbeat(&self, w: &WorkerRow) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO workers (name, host, pid, version, labels, started, seen, running)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (name) DO UPDATE SET host = excluded.host, pid = excluded.pid,
                    version = excluded.version, labels = excluded.labels,
                    started = excluded.started, seen = excluded.seen, running = excluded.running",
                params![
                    w.name,
                    w.host,
                    w.pid,
                    w.version,
                    json(&w.labels),
                    w.started.to_string(),
                    w.seen.to_string(),
                    json(&w.running)
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn workers(&self) -> Result<Vec<WorkerRow>> {
        let mut q = self
            .conn
            .prepare(
                "SELECT name, host, pid, version, labels, started, seen, running FROM workers
                 ORDER BY name",
            )
            .map_err(|e| self.err(e))?;
        let rows = q
            .query_map([], |r| {
                Ok(WorkerRow {
                    name: r.get(0)?,
                    host: r.get(1)?,
                    pid: r.get(2)?,
                    version: r.get(3)?,
                    labels: unjson(r.get(4)?),
                    started: parse_ts(r.get(5)?),
                    seen: parse_ts(r.get(6)?),
                    running: unjson(r.get(7)?),
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    fn leave(&self, name: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM workers WHERE name = ?1", params![name])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn reap(&self, silent: Duration) -> Result<usize> {
        let now = Timestamp::now();
        let before = now.checked_sub(silent).unwrap_or(Timestamp::UNIX_EPOCH);
        let gone: Vec<WorkerRow> = self
            .workers()?
            .into_iter()
            .filter(|w| w.seen < before)
            .collect();
        for w in &gone {
            self.write(|c| {
                c.execute(
                    "UPDATE runs SET result = 'interrupted', error = ?2
                     WHERE result = 'running' AND worker = ?1",
                    params![w.name, gone_message(&w.name, w.seen)],
                )?;
                c.execute("DELETE FROM workers WHERE name = ?1", params![w.name])
            })?;
        }
        Ok(gone.len())
    }

    fn plan(&self, p: &Planned) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO jobs (name, source, kind, schedule, due, requires)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (name) DO UPDATE SET requires = excluded.requires,
                    due = CASE WHEN jobs.schedule = excluded.schedule THEN jobs.due
                               ELSE excluded.due END,
                    schedule = excluded.schedule",
                params![
                    p.name,
                    p.source,
                    p.kind,
                    p.schedule,
                    p.due.to_string(),
                    json(&p.requires)
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn take(
        &self,
        worker: &str,
        names: &[String],
        now: Timestamp,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Lease>> {
        if names.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let expires = now.checked_add(lease).unwrap_or(now).to_string();
        self.write(|c| {
            let mut q = c.prepare(
                "SELECT name, source, kind, due, worker, token, expires, action FROM jobs",
            )?;
            let mut free: Vec<(Lease, Option<Timestamp>)> = q
                .query_map([], |r| {
                    Ok((
                        Lease {
                            name: r.get(0)?,
                            source: r.get(1)?,
                            kind: r.get(2)?,
                            due: parse_ts(r.get(3)?),
                            taken_from: r.get(4)?,
                            token: r.get(5)?,
                            action: r.get(7)?,
                        },
                        r.get::<_, Option<String>>(6)?.map(parse_ts),
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?
                .into_iter()
                .filter(|(l, expires)| {
                    names.contains(&l.name)
                        && (l.due <= now || l.action.is_some())
                        && (l.taken_from.is_none() || expires.is_none_or(|e| e < now))
                })
                .collect();
            free.sort_by_key(|(l, _)| l.due);
            free.truncate(limit);
            let mut taken = Vec::new();
            for (mut l, _) in free {
                l.token += 1;
                c.execute(
                    "UPDATE jobs SET worker = ?2, token = ?3, expires = ?4 WHERE name = ?1",
                    params![l.name, worker, l.token, expires],
                )?;
                if let Some(old) = &l.taken_from {
                    for job in super::steps_of(&l.kind) {
                        c.execute(
                            "UPDATE runs SET result = 'interrupted', error = ?3
                             WHERE result = 'running' AND worker = ?1 AND source = ?2
                               AND job = ?4",
                            params![old, l.source, taken_over_message(old, worker), job],
                        )?;
                    }
                }
                taken.push(l);
            }
            Ok(taken)
        })
    }

    fn renew(&self, worker: &str, l: &Lease, lease: Duration) -> Result<bool> {
        let now = Timestamp::now();
        let n = self
            .conn
            .execute(
                "UPDATE jobs SET expires = ?4 WHERE name = ?1 AND worker = ?2 AND token = ?3",
                params![
                    l.name,
                    worker,
                    l.token,
                    now.checked_add(lease).unwrap_or(now).to_string()
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(n == 1)
    }

    fn free_leases(&self) -> Result<usize> {
        self.conn
            .execute(
                "UPDATE jobs SET worker = NULL, expires = NULL WHERE worker IS NOT NULL",
                [],
            )
            .map_err(|e| self.err(e))
    }

    fn release(&self, worker: &str, l: &Lease, next_due: Timestamp) -> Result<()> {
        self.conn
            .execute(
                "UPDATE jobs SET worker = NULL, expires = NULL, action = NULL, due = ?4
                 WHERE name = ?1 AND worker = ?2 AND token = ?3",
                params![l.name, worker, l.token, next_due.to_string()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn request(&self, name: &str, action: &str, now: Timestamp) -> Result<bool> {
        self.write(|c| {
            let row: Option<(Option<String>, Option<String>)> = c
                .query_row(
                    "SELECT worker, expires FROM jobs WHERE name = ?1",
                    params![name],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let held = match row {
                None => return Ok(false),
                Some((w, e)) => w.is_some() && e.map(parse_ts).is_none_or(|e| e >= now),
            };
            if held {
                return Ok(false);
            }
            c.execute(
                "UPDATE jobs SET action = ?2 WHERE name = ?1",
                params![name, action],
            )?;
            Ok(true)
        })
    }

    fn jobs(&self) -> Result<Vec<JobRow>> {
        let mut q = self
            .conn
            .prepare(
                "SELECT name, source, kind, schedule, due, requires, worker, expires, action
                 FROM jobs ORDER BY source, name",
            )
            .map_err(|e| self.err(e))?;
        let rows = q
            .query_map([], |r| {
                Ok(JobRow {
                    name: r.get(0)?,
                    source: r.get(1)?,
                    kind: r.get(2)?,
                    schedule: r.get(3)?,
                    due: parse_ts(r.get(4)?),
                    requires: unjson(r.get(5)?),
                    worker: r.get(6)?,
                    expires: r.get::<_, Option<String>>(7)?.map(parse_ts),
                    action: r.get(8)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }
}

/// The error of a run whose worker's lease was taken over.
pub(super) fn taken_over_message(old: &str, new: &str) -> String {
    format!(
        "worker {old} stopped renewing its lease (it died or lost the state database); {new} runs the job again from the start"
    )
}

/// The error of a run whose worker stopped sending heartbeats.
pub(super) fn gone_message(worker: &str, seen: Timestamp) -> String {
    format!("worker {worker} stopped answering (last heartbeat {seen})")
}

fn json(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

fn unjson(s: String) -> Vec<String> {
    serde_json::from_str(&s).unwrap_or_default()
}

fn parse_ts(s: String) -> Timestamp {
    s.parse().unwrap_or(Timestamp::UNIX_EPOCH)
}

fn row_to_run(r: &rusqlite::Row<'_>) -> rusqlite::Result<Run> {
    let text = |i: usize| -> rusqlite::Result<String> { r.get(i) };
    let bad = |i: usize, s: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("unknown value {s:?}").into(),
        )
    };
    let job = text(1)?;
    let result = text(5)?;
    Ok(Run {
        id: r.get(0)?,
        job: Job::parse(&job).ok_or_else(|| bad(1, &job))?,
        source: r.get(2)?,
        started: parse_ts(r.get(3)?),
        finished: r.get::<_, Option<String>>(4)?.map(parse_ts),
        result: RunResult::parse(&result).ok_or_else(|| bad(5, &result))?,
        error: r.get(6)?,
        snapshot: r.get(7)?,
        plain_bytes: r.get::<_, Option<i64>>(8)?.map(|b| b as u64),
        stored_bytes: r.get::<_, Option<i64>>(9)?.map(|b| b as u64),
        seconds: r.get(10)?,
        restore_seconds: r.get(11)?,
        worker: r.get(12)?,
        due: r.get::<_, Option<String>>(13)?.map(parse_ts),
    })
}
