/*!
The state in a PostgreSQL database that several `serve` workers share (`[state] url`).

- Tables live in their own schema, `offsitedb`, so the database may hold other things.
- Migrations run once, under a session advisory lock: the first worker of a new version upgrades
  the schema while the others wait; a schema newer than this build is refused (an old worker
  must not write a newer layout).
- Leases use the database's clock (`now()`), so workers' clocks never decide who holds a job, and
  `FOR UPDATE SKIP LOCKED`, so workers polling at once never wait on each other.
- A connection that breaks (the database restarted, a network cut) is opened again, with backoff,
  for up to [`RECONNECT_FOR`]: workers ride out a restart of the state database.
- Connections are kept for the next open of the same URL (a job opens the state several times).
*/

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use postgres::Client;

use super::sqlite::{gone_message, taken_over_message};
use super::{
    AlertState, Job, JobRow, Lease, Outcome, Planned, Run, RunResult, RunTag, SCHEMA_VERSION,
    Store, WorkerRow, seconds_between,
};
use crate::catalog::log::Head;
use crate::config::Secret;
use crate::error::{Error, Result};
use crate::postgres::conninfo::ConnInfo;

/// How long a broken connection is retried before the operation fails.
pub const RECONNECT_FOR: Duration = Duration::from_secs(60);

/// The key of the advisory lock that migrations hold ("offsit" in ASCII).
const MIGRATION_LOCK: i64 = 0x6f66_6673_6974;

/// One entry per schema version, the same versions as the SQLite file's.
const SCHEMA: &[&str] = &[
    // Version 1.
    "CREATE TABLE runs (
        id bigserial PRIMARY KEY,
        job text NOT NULL,
        source text NOT NULL,
        started timestamptz NOT NULL,
        finished timestamptz,
        result text NOT NULL,
        error text,
        snapshot text,
        plain_bytes bigint,
        stored_bytes bigint,
        seconds double precision,
        restore_seconds double precision
     );
     CREATE INDEX runs_by_source ON runs (source, job, id);
     CREATE TABLE alerts (
        source text NOT NULL,
        event text NOT NULL,
        firing boolean NOT NULL,
        since timestamptz NOT NULL,
        message text,
        PRIMARY KEY (source, event)
     );",
    // Version 2: the newest log head seen per repository and source (the rollback check).
    "CREATE TABLE log_heads (
        repo text NOT NULL,
        source text NOT NULL,
        seq bigint NOT NULL,
        sha256 text NOT NULL,
        seen timestamptz NOT NULL,
        PRIMARY KEY (repo, source)
     );",
    // Version 3: fleets.
    "ALTER TABLE runs ADD COLUMN worker text, ADD COLUMN due timestamptz;
     CREATE INDEX runs_running ON runs (worker, source) WHERE result = 'running';
     CREATE TABLE jobs (
        name text PRIMARY KEY,
        source text NOT NULL,
        kind text NOT NULL,
        schedule text NOT NULL,
        due timestamptz NOT NULL,
        requires text[] NOT NULL,
        worker text,
        token bigint NOT NULL DEFAULT 0,
        expires timestamptz,
        action text
     );
     CREATE TABLE workers (
        name text PRIMARY KEY,
        host text NOT NULL,
        pid integer NOT NULL,
        version text NOT NULL,
        labels text[] NOT NULL,
        started timestamptz NOT NULL,
        seen timestamptz NOT NULL,
        running text[] NOT NULL
     );",
];

const RUN_COLUMNS: &str =
    "id, job, source, started, finished, result, error, snapshot, plain_bytes,
     stored_bytes, seconds, restore_seconds, worker, due";

/// Idle connections by URL, and the URLs whose schema this process brought up to date.
static POOL: Mutex<Vec<(String, Client)>> = Mutex::new(Vec::new());
static MIGRATED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

pub(super) struct PgStore {
    url: Secret,
    ci: ConnInfo,
    client: Mutex<Option<Client>>,
}

/// `postgres://user@host:port/db`, without the password.
pub(super) fn redact(url: &Secret) -> String {
    ConnInfo::parse(url.expose())
        .map(|c| c.redacted())
        .unwrap_or_else(|_| "(an unreadable URL)".into())
}

impl PgStore {
    pub(super) fn open(url: &Secret) -> Result<PgStore> {
        let version = SCHEMA.len();
        let fresh = !MIGRATED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(HashSet::new)
            .contains(url.expose());
        let store = Self::open_at_version(url, if fresh { version } else { 0 })?;
        if fresh {
            MIGRATED
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert_with(HashSet::new)
                .insert(url.expose().to_string());
        }
        Ok(store)
    }

    /// Opens the database, migrated up to `version` (0: as it is; tests make older states).
    pub(super) fn open_at_version(url: &Secret, version: usize) -> Result<PgStore> {
        let ci = ConnInfo::parse(url.expose()).map_err(|e| e.context("[state] url"))?;
        let pooled = {
            let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
            pool.iter()
                .position(|(u, c)| u == url.expose() && !c.is_closed())
                .map(|i| pool.swap_remove(i).1)
        };
        let store = PgStore {
            url: url.clone(),
            client: Mutex::new(pooled),
            ci,
        };
        if version > 0 {
            store.migrate(version)?;
        }
        Ok(store)
    }

    fn connect(&self) -> Result<Client> {
        let mut c =
            crate::postgres::client::connect(&self.ci, "the state database").map_err(|e| {
                Error::io(e.message())
                    .with_hint(e.hint().unwrap_or(
                        "check [state] url (or OFFSITEDB_STATE_URL) and that the database is up",
                    ))
                    .transient()
            })?;
        c.batch_execute("SET search_path = offsitedb")
            .map_err(|e| self.err(e))?;
        Ok(c)
    }

    fn err(&self, e: postgres::Error) -> Error {
        let detail = match e.as_db_error() {
            Some(d) => d.message().to_string(),
            None => e.to_string(),
        };
        Error::io(format!("state database {}: {detail}", self.ci.redacted()))
    }

    /// Runs `f` on the connection; a broken connection is opened again (with backoff, for up
    /// to [`RECONNECT_FOR`]) and `f` run again on it.
    fn with<T>(
        &self,
        mut f: impl FnMut(&mut Client) -> std::result::Result<T, postgres::Error>,
    ) -> Result<T> {
        let mut guard = self.client.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = Instant::now() + RECONNECT_FOR;
        let mut pause = Duration::from_millis(100);
        loop {
            if guard.as_ref().is_none_or(|c| c.is_closed()) {
                match self.connect() {
                    Ok(c) => *guard = Some(c),
                    // Retried only by a process that reached it before (a worker riding out a
                    // restart); a command, or a worker's first start, says so at once.
                    Err(e) if Instant::now() < deadline && self.reached_before() => {
                        tracing::warn!(error = %e.message(), "the state database does not answer: trying again");
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(Duration::from_secs(1));
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            let c = guard.as_mut().expect("connected");
            match f(c) {
                Ok(v) => return Ok(v),
                // A broken connection, not an error of the statement: open another.
                Err(e) if broken(c, &e) && Instant::now() < deadline => {
                    tracing::warn!(error = %e, "lost the connection to the state database: connecting again");
                    *guard = None;
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(e) => {
                    forget_migration(&self.url, &e);
                    return Err(self.err(e));
                }
            }
        }
    }

    fn reached_before(&self) -> bool {
        MIGRATED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|m| m.contains(self.url.expose()))
    }

    /// Brings the schema up to `version` under the advisory lock; refuses a newer one.
    fn migrate(&self, version: usize) -> Result<()> {
        let described = self.ci.redacted();
        let found = self.with(|c| {
            c.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
            let r = (|| {
                let exists = c
                    .query_opt(
                        "SELECT 1 FROM pg_namespace WHERE nspname = 'offsitedb'",
                        &[],
                    )?
                    .is_some();
                if !exists {
                    c.batch_execute("CREATE SCHEMA offsitedb")?;
                }
                c.batch_execute(
                    "CREATE TABLE IF NOT EXISTS offsitedb.schema_version (version integer NOT NULL)",
                )?;
                let found: Option<i32> = c
                    .query_opt("SELECT max(version) FROM offsitedb.schema_version", &[])?
                    .and_then(|r| r.get(0));
                let found = found.unwrap_or(0) as usize;
                if found > SCHEMA.len() {
                    return Ok(found);
                }
                for (i, sql) in SCHEMA.iter().enumerate().take(version).skip(found) {
                    let mut tx = c.transaction()?;
                    tx.batch_execute(sql)?;
                    tx.execute("DELETE FROM offsitedb.schema_version", &[])?;
                    tx.execute(
                        "INSERT INTO offsitedb.schema_version (version) VALUES ($1)",
                        &[&((i + 1) as i32)],
                    )?;
                    tx.commit()?;
                }
                Ok(found)
            })();
            // Unlocked whatever happened (a broken connection unlocks by itself).
            let _ = c.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
            r
        })?;
        if found > SCHEMA.len() {
            return Err(Error::config(format!(
                "state database {described} was written by a newer offsitedb (schema {found}, this one knows {SCHEMA_VERSION})"
            ))
            .with_hint("upgrade offsitedb on every worker: a worker never writes a state newer than it knows"));
        }
        Ok(())
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        let client = self
            .client
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(c) = client.filter(|c| !c.is_closed()) {
            let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < 16 {
                pool.push((self.url.expose().to_string(), c));
            }
        }
    }
}

/// Whether `e` says the connection is gone (not that the statement failed): closed, an I/O
/// error, or the server shutting down (SQLSTATE class 57P) or refusing connections (class 08).
/// A statement's own errors (a row missing, a value that does not convert) are not retried.
fn broken(c: &Client, e: &postgres::Error) -> bool {
    let io = std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>());
    c.is_closed()
        || e.is_closed()
        || io
        || e.code()
            .is_some_and(|k| k.code().starts_with("57P") || k.code().starts_with("08"))
}

/// The schema or a table is gone (the database was recreated): the next open migrates again.
fn forget_migration(url: &Secret, e: &postgres::Error) {
    if e.code()
        .is_some_and(|k| matches!(k.code(), "42P01" | "3F000"))
    {
        if let Some(set) = MIGRATED.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            set.remove(url.expose());
        }
    }
}

/// A run from its row; a value that does not convert is an error, never a panic.
fn row_to_run(r: &postgres::Row) -> std::result::Result<Run, postgres::Error> {
    let job: String = r.try_get(1)?;
    let result: String = r.try_get(5)?;
    Ok(Run {
        id: r.try_get(0)?,
        job: Job::parse(&job).unwrap_or(Job::Backup),
        source: r.try_get(2)?,
        started: r.try_get(3)?,
        finished: r.try_get(4)?,
        result: RunResult::parse(&result).unwrap_or(RunResult::Failed),
        error: r.try_get(6)?,
        snapshot: r.try_get(7)?,
        plain_bytes: r.try_get::<_, Option<i64>>(8)?.map(|b| b as u64),
        stored_bytes: r.try_get::<_, Option<i64>>(9)?.map(|b| b as u64),
        seconds: r.try_get(10)?,
        restore_seconds: r.try_get(11)?,
        worker: r.try_get(12)?,
        due: r.try_get(13)?,
    })
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Store for PgStore {
    fn describe(&self) -> String {
        format!("state database {}", self.ci.redacted())
    }

    fn start(&self, job: Job, source: &str, at: Timestamp, tag: &RunTag) -> Result<i64> {
        self.with(|c| {
            c.query_one(
                "INSERT INTO runs (job, source, started, result, worker, due)
                 VALUES ($1, $2, $3, 'running', $4, $5) RETURNING id",
                &[&job.as_str(), &source, &at, &tag.worker, &tag.due],
            )
            .map(|r| r.get(0))
        })
    }

    fn finish(&self, id: i64, at: Timestamp, o: &Outcome) -> Result<()> {
        self.with(|c| {
            let started: Timestamp = c
                .query_one("SELECT started FROM runs WHERE id = $1", &[&id])?
                .get(0);
            c.execute(
                "UPDATE runs SET finished = $2, result = $3, error = $4, snapshot = $5,
                        plain_bytes = $6, stored_bytes = $7, restore_seconds = $8, seconds = $9
                 WHERE id = $1",
                &[
                    &id,
                    &at,
                    &o.result().as_str(),
                    &o.error,
                    &o.snapshot,
                    &o.plain_bytes.map(|b| b as i64),
                    &o.stored_bytes.map(|b| b as i64),
                    &o.restore_seconds,
                    &seconds_between(started, at),
                ],
            )
        })?;
        Ok(())
    }

    fn close_interrupted(&self, worker: Option<&str>, why: &str) -> Result<usize> {
        self.with(|c| {
            c.execute(
                "UPDATE runs SET result = 'interrupted', error = $2
                 WHERE result = 'running' AND ($1::text IS NULL OR worker = $1)",
                &[&worker, &why],
            )
        })
        .map(|n| n as usize)
    }

    fn history(&self, source: Option<&str>, limit: usize) -> Result<Vec<Run>> {
        self.with(|c| {
            c.query(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE $1::text IS NULL OR source = $1
                     ORDER BY id DESC LIMIT $2"
                ),
                &[&source, &(limit as i64)],
            )
        })
        .and_then(|rows| {
            rows.iter()
                .map(row_to_run)
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| self.err(e))
        })
    }

    fn last(&self, source: &str, job: Job, result: Option<RunResult>) -> Result<Option<Run>> {
        self.with(|c| {
            c.query_opt(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM runs
                     WHERE source = $1 AND job = $2 AND result != 'running'
                       AND ($3::text IS NULL OR result = $3)
                     ORDER BY id DESC LIMIT 1"
                ),
                &[&source, &job.as_str(), &result.map(RunResult::as_str)],
            )
        })
        .and_then(|r| {
            r.as_ref()
                .map(row_to_run)
                .transpose()
                .map_err(|e| self.err(e))
        })
    }

    fn last_attempt(&self, source: &str, job: Job) -> Result<Option<Run>> {
        self.with(|c| {
            c.query_opt(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM runs
                     WHERE source = $1 AND job = $2 AND result IN ('ok', 'failed')
                     ORDER BY id DESC LIMIT 1"
                ),
                &[&source, &job.as_str()],
            )
        })
        .and_then(|r| {
            r.as_ref()
                .map(row_to_run)
                .transpose()
                .map_err(|e| self.err(e))
        })
    }

    fn alert(&self, source: &str, event: &str) -> Result<Option<AlertState>> {
        self.with(|c| {
            c.query_opt(
                "SELECT firing, since, message FROM alerts WHERE source = $1 AND event = $2",
                &[&source, &event],
            )
        })
        .map(|r| {
            r.map(|r| AlertState {
                firing: r.get(0),
                since: r.get(1),
                message: r.get(2),
            })
        })
    }

    fn switch_alert(
        &self,
        source: &str,
        event: &str,
        firing: bool,
        message: &str,
        at: Timestamp,
    ) -> Result<Option<Option<AlertState>>> {
        // One statement each way, so that of several workers seeing the same change exactly
        // one gets a row back: the others find the row already switched (a waiting UPDATE
        // reads the row again after the first commits).
        if firing {
            let changed = self.with(|c| {
                c.query_opt(
                    "INSERT INTO alerts (source, event, firing, since, message)
                     VALUES ($1, $2, true, $3, $4)
                     ON CONFLICT (source, event) DO UPDATE
                     SET firing = true, since = excluded.since, message = excluded.message
                     WHERE NOT alerts.firing
                     RETURNING 1",
                    &[&source, &event, &at, &message],
                )
            })?;
            return Ok(changed.map(|_| None));
        }
        let was = self.with(|c| {
            c.query_opt(
                "UPDATE alerts a SET firing = false, since = $3, message = $4
                 FROM (SELECT source, event, since, message FROM alerts
                       WHERE source = $1 AND event = $2 AND firing FOR UPDATE) old
                 WHERE a.source = old.source AND a.event = old.event AND a.firing
                 RETURNING old.since, old.message",
                &[&source, &event, &at, &message],
            )
        })?;
        Ok(was.map(|r| {
            Some(AlertState {
                firing: true,
                since: r.get(0),
                message: r.get(1),
            })
        }))
    }

    fn log_head(&self, repo: &str, source: &str) -> Result<Option<(Head, Timestamp)>> {
        self.with(|c| {
            c.query_opt(
                "SELECT seq, sha256, seen FROM log_heads WHERE repo = $1 AND source = $2",
                &[&repo, &source],
            )
        })
        .map(|r| {
            r.map(|r| {
                (
                    Head {
                        seq: r.get::<_, i64>(0) as u64,
                        sha256: r.get(1),
                    },
                    r.get(2),
                )
            })
        })
    }

    fn set_log_head(&self, repo: &str, source: &str, head: &Head, force: bool) -> Result<()> {
        let sql = if force {
            "INSERT INTO log_heads (repo, source, seq, sha256, seen) VALUES ($1, $2, $3, $4, now())
             ON CONFLICT (repo, source) DO UPDATE
             SET seq = excluded.seq, sha256 = excluded.sha256, seen = excluded.seen"
        } else {
            "INSERT INTO log_heads (repo, source, seq, sha256, seen) VALUES ($1, $2, $3, $4, now())
             ON CONFLICT (repo, source) DO UPDATE
             SET seq = excluded.seq, sha256 = excluded.sha256, seen = excluded.seen
             WHERE excluded.seq > log_heads.seq"
        };
        self.with(|c| c.execute(sql, &[&repo, &source, &(head.seq as i64), &head.sha256]))?;
        Ok(())
    }

    fn log_sources(&self, repo: &str) -> Result<Vec<String>> {
        self.with(|c| {
            c.query(
                "SELECT source FROM log_heads WHERE repo = $1 ORDER BY source",
                &[&repo],
            )
        })
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
    }

    fn heartbeat(&self, w: &WorkerRow) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO workers (name, host, pid, version, labels, started, seen, running)
                 VALUES ($1, $2, $3, $4, $5, $6, now(), $7)
                 ON CONFLICT (name) DO UPDATE SET host = excluded.host, pid = excluded.pid,
                    version = excluded.version, labels = excluded.labels,
                    started = excluded.started, seen = excluded.seen, running = excluded.running",
                &[
                    &w.name,
                    &w.host,
                    &(w.pid as i32),
                    &w.version,
                    &w.labels,
                    &w.started,
                    &w.running,
                ],
            )
        })?;
        Ok(())
    }

    fn workers(&self) -> Result<Vec<WorkerRow>> {
        self.with(|c| {
            c.query(
                "SELECT name, host, pid, version, labels, started, seen, running FROM workers
                 ORDER BY name",
                &[],
            )
        })
        .and_then(|rows| {
            rows.iter()
                .map(|r| {
                    Ok(WorkerRow {
                        name: r.try_get(0)?,
                        host: r.try_get(1)?,
                        pid: r.try_get::<_, i32>(2)? as u32,
                        version: r.try_get(3)?,
                        labels: r.try_get(4)?,
                        started: r.try_get(5)?,
                        seen: r.try_get(6)?,
                        running: r.try_get(7)?,
                    })
                })
                .collect::<std::result::Result<Vec<_>, postgres::Error>>()
                .map_err(|e| self.err(e))
        })
    }

    fn leave(&self, name: &str) -> Result<()> {
        self.with(|c| c.execute("DELETE FROM workers WHERE name = $1", &[&name]))?;
        Ok(())
    }

    fn reap(&self, silent: Duration) -> Result<usize> {
        let gone = self.with(|c| {
            let mut tx = c.transaction()?;
            let gone = tx.query(
                "DELETE FROM workers WHERE seen < now() - make_interval(secs => $1)
                 RETURNING name, seen",
                &[&secs(silent)],
            )?;
            for r in &gone {
                let (name, seen): (String, Timestamp) = (r.try_get(0)?, r.try_get(1)?);
                tx.execute(
                    "UPDATE runs SET result = 'interrupted', error = $2
                     WHERE result = 'running' AND worker = $1",
                    &[&name, &gone_message(&name, seen)],
                )?;
            }
            tx.commit()?;
            Ok(gone.len())
        })?;
        Ok(gone)
    }

    fn plan(&self, p: &Planned) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO jobs (name, source, kind, schedule, due, requires)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (name) DO UPDATE SET requires = excluded.requires,
                    due = CASE WHEN jobs.schedule = excluded.schedule THEN jobs.due
                               ELSE excluded.due END,
                    schedule = excluded.schedule",
                &[
                    &p.name,
                    &p.source,
                    &p.kind,
                    &p.schedule,
                    &p.due,
                    &p.requires,
                ],
            )
        })?;
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
        self.with(|c| {
            let mut tx = c.transaction()?;
            let rows = tx.query(
                "WITH free AS (
                    SELECT name, worker AS old FROM jobs
                    WHERE name = ANY($2) AND (due <= $3 OR action IS NOT NULL)
                      AND (worker IS NULL OR expires < now())
                    ORDER BY due LIMIT $4
                    FOR UPDATE SKIP LOCKED)
                 UPDATE jobs j SET worker = $1, token = j.token + 1,
                    expires = now() + make_interval(secs => $5)
                 FROM free WHERE j.name = free.name
                 RETURNING j.name, j.source, j.kind, j.due, j.token, j.action, free.old",
                &[&worker, &names, &now, &(limit as i64), &secs(lease)],
            )?;
            let taken = rows
                .iter()
                .map(|r| {
                    Ok(Lease {
                        name: r.try_get(0)?,
                        source: r.try_get(1)?,
                        kind: r.try_get(2)?,
                        due: r.try_get(3)?,
                        token: r.try_get(4)?,
                        action: r.try_get(5)?,
                        taken_from: r.try_get(6)?,
                    })
                })
                .collect::<std::result::Result<Vec<Lease>, postgres::Error>>()?;
            for l in &taken {
                if let Some(old) = &l.taken_from {
                    tx.execute(
                        "UPDATE runs SET result = 'interrupted', error = $3
                         WHERE result = 'running' AND worker = $1 AND source = $2
                           AND job = ANY($4)",
                        &[
                            old,
                            &l.source,
                            &taken_over_message(old, worker),
                            &super::steps_of(&l.kind),
                        ],
                    )?;
                }
            }
            tx.commit()?;
            Ok(taken)
        })
    }

    fn renew(&self, worker: &str, l: &Lease, lease: Duration) -> Result<bool> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET expires = now() + make_interval(secs => $4)
                 WHERE name = $1 AND worker = $2 AND token = $3",
                &[&l.name, &worker, &l.token, &secs(lease)],
            )
        })
        .map(|n| n == 1)
    }

    fn free_leases(&self) -> Result<usize> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET worker = NULL, expires = NULL WHERE worker IS NOT NULL",
                &[],
            )
        })
        .map(|n| n as usize)
    }

    fn release(&self, worker: &str, l: &Lease, next_due: Timestamp) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET worker = NULL, expires = NULL, action = NULL, due = $4
                 WHERE name = $1 AND worker = $2 AND token = $3",
                &[&l.name, &worker, &l.token, &next_due],
            )
        })?;
        Ok(())
    }

    fn request(&self, name: &str, action: &str, _now: Timestamp) -> Result<bool> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET action = $2
                 WHERE name = $1 AND (worker IS NULL OR expires < now())",
                &[&name, &action],
            )
        })
        .map(|n| n == 1)
    }

    fn jobs(&self) -> Result<Vec<JobRow>> {
        self.with(|c| {
            c.query(
                "SELECT name, source, kind, schedule, due, requires, worker, expires, action
                 FROM jobs ORDER BY source, name",
                &[],
            )
        })
        .and_then(|rows| {
            rows.iter()
                .map(|r| {
                    Ok(JobRow {
                        name: r.try_get(0)?,
                        source: r.try_get(1)?,
                        kind: r.try_get(2)?,
                        schedule: r.try_get(3)?,
                        due: r.try_get(4)?,
                        requires: r.try_get(5)?,
                        worker: r.try_get(6)?,
                        expires: r.try_get(7)?,
                        action: r.try_get(8)?,
                    })
                })
                .collect::<std::result::Result<Vec<_>, postgres::Error>>()
                .map_err(|e| self.err(e))
        })
    }
}
