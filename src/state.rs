/*!
Local state: the history of runs and where each alert stands, in one SQLite file
(`state.db` in the state directory, or `[state] path`).

The repository stays the source of truth for snapshots: this file only remembers what happened
on this machine (runs, their errors and durations, which alerts fired). Deleting it loses no
backup; `list`, `restore` and `drill` never read it.
*/

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::catalog::log::{Head, HeadMemory};
use crate::error::{Error, Result};

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
];

/// What a step of a job does (its name in the history and in `history --json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Job {
    Backup,
    Drill,
    Prune,
    /// `backup-push`: a base backup (its id in `snapshot`).
    BaseBackup,
    /// `drill --pitr`: a point-in-time recovery drill of a base backup (its id in `snapshot`,
    /// the tested restore time in `restore_seconds`).
    PitrDrill,
    /// `serve`'s scheduled `verify` of the whole repository (source `*`).
    Verify,
}

/// How a step stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunResult {
    Running,
    Ok,
    Failed,
    /// The process ended while it ran, or a signal stopped it.
    Interrupted,
}

macro_rules! text_enum {
    ($t:ty { $($v:ident = $s:literal),* $(,)? }) => {
        impl $t {
            pub fn as_str(self) -> &'static str {
                match self { $(<$t>::$v => $s),* }
            }
            fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some(<$t>::$v),)* _ => None }
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl rusqlite::types::ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(self.as_str().into())
            }
        }
        impl rusqlite::types::FromSql for $t {
            fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
                let s = v.as_str()?;
                <$t>::parse(s).ok_or_else(|| rusqlite::types::FromSqlError::Other(
                    format!("unknown {} {s:?}", stringify!($t)).into(),
                ))
            }
        }
    };
}

text_enum!(Job {
    Backup = "backup",
    Drill = "drill",
    Prune = "prune",
    BaseBackup = "base_backup",
    PitrDrill = "pitr_drill",
    Verify = "verify"
});
text_enum!(RunResult {
    Running = "running",
    Ok = "ok",
    Failed = "failed",
    Interrupted = "interrupted"
});

/// One step of a job: a backup, a drill or a prune.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Run {
    pub id: i64,
    pub job: Job,
    pub source: String,
    pub started: Timestamp,
    pub finished: Option<Timestamp>,
    pub result: RunResult,
    pub error: Option<String>,
    pub snapshot: Option<String>,
    pub plain_bytes: Option<u64>,
    pub stored_bytes: Option<u64>,
    pub seconds: Option<f64>,
    /// For a drill: the tested restore time.
    pub restore_seconds: Option<f64>,
}

/// How a step ended.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub error: Option<String>,
    /// Stopped by a signal (a shutdown), not failed: recorded as "interrupted".
    pub interrupted: bool,
    pub snapshot: Option<String>,
    pub plain_bytes: Option<u64>,
    pub stored_bytes: Option<u64>,
    pub restore_seconds: Option<f64>,
}

impl Outcome {
    /// A step that ended with `e` (a signal's interruption is not a failure).
    pub fn failed(e: &Error) -> Outcome {
        Outcome {
            interrupted: e.kind() == crate::error::ErrorKind::Interrupted,
            error: Some(match e.hint() {
                Some(h) => format!("{} (hint: {h})", e.message()),
                None => e.message().to_string(),
            }),
            ..Default::default()
        }
    }
}

/// Where an alert stands for one source and event.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertState {
    pub firing: bool,
    pub since: Timestamp,
    pub message: Option<String>,
}

pub struct State {
    conn: Connection,
    path: PathBuf,
}

/// Runs `f` again while SQLite says the file is busy, for up to 10 seconds. Connections racing
/// to switch a new file to WAL get "database is locked" at once, without the busy timeout (SQLite
/// cannot wait there without risking a deadlock); the race is over within moments.
fn retry_busy<T>(mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut pause = 1;
    loop {
        match f() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(pause));
                pause = (pause * 2).min(50);
            }
            r => return r,
        }
    }
}

impl State {
    /// Opens (creating it and its directory if needed) the state file at `path`.
    pub fn open(path: &Path) -> Result<State> {
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
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(bad)?;
        // Several processes may open a new file at once (the daemon, `history`): the switch to
        // WAL is retried while they race, and the schema is created under a write lock, after
        // reading the version again inside it.
        retry_busy(|| conn.pragma_update(None, "journal_mode", "WAL")).map_err(bad)?;
        retry_busy(|| conn.execute_batch("BEGIN IMMEDIATE")).map_err(bad)?;
        let migrated = (|| -> Result<()> {
            let version: i64 = conn
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .map_err(bad)?;
            if version as usize > SCHEMA.len() {
                return Err(Error::config(format!(
                    "state file {} was written by a newer offsitedb (schema {version})",
                    path.display()
                ))
                .with_hint("upgrade offsitedb, or point [state] path at another file"));
            }
            for (i, sql) in SCHEMA.iter().enumerate().skip(version as usize) {
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
        Ok(State {
            conn,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: rusqlite::Error) -> Error {
        Error::io(format!("state file {}: {e}", self.path.display()))
    }

    /// Records that a step started; returns its id for [`State::finish`].
    pub fn start(&self, job: Job, source: &str, at: Timestamp) -> Result<i64> {
        self.conn
            .execute(
                "INSERT INTO runs (job, source, started, result) VALUES (?1, ?2, ?3, 'running')",
                params![job, source, at.to_string()],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn finish(&self, id: i64, at: Timestamp, o: &Outcome) -> Result<()> {
        let started: String = self
            .conn
            .query_row("SELECT started FROM runs WHERE id = ?1", [id], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        // Wall-clock times: a clock stepped back mid-run must not make a negative duration.
        let seconds = at.duration_since(parse_ts(started)).as_secs_f64().max(0.0);
        self.conn
            .execute(
                "UPDATE runs SET finished = ?2, result = ?3, error = ?4, snapshot = ?5,
                        plain_bytes = ?6, stored_bytes = ?7, restore_seconds = ?8, seconds = ?9
                 WHERE id = ?1",
                params![
                    id,
                    at.to_string(),
                    match (o.interrupted, o.error.is_some()) {
                        (true, _) => RunResult::Interrupted,
                        (false, true) => RunResult::Failed,
                        (false, false) => RunResult::Ok,
                    },
                    o.error,
                    o.snapshot,
                    o.plain_bytes.map(|b| b as i64),
                    o.stored_bytes.map(|b| b as i64),
                    o.restore_seconds,
                    seconds,
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Steps left "running" by a process that is gone are marked interrupted.
    pub fn close_interrupted(&self) -> Result<usize> {
        self.conn
            .execute(
                "UPDATE runs SET result = 'interrupted',
                        error = 'offsitedb stopped while this ran' WHERE result = 'running'",
                [],
            )
            .map_err(|e| self.err(e))
    }

    /// The newest `limit` steps, newest first.
    pub fn history(&self, source: Option<&str>, limit: usize) -> Result<Vec<Run>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, job, source, started, finished, result, error, snapshot, plain_bytes,
                        stored_bytes, seconds, restore_seconds
                 FROM runs WHERE ?1 IS NULL OR source = ?1 ORDER BY id DESC LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![source, limit as i64], row_to_run)
            .map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))
    }

    /// The newest finished step of `job` for `source`, with `result` if given ("ok").
    pub fn last(&self, source: &str, job: Job, result: Option<RunResult>) -> Result<Option<Run>> {
        self.conn
            .query_row(
                "SELECT id, job, source, started, finished, result, error, snapshot, plain_bytes,
                        stored_bytes, seconds, restore_seconds
                 FROM runs WHERE source = ?1 AND job = ?2 AND result != 'running'
                   AND (?3 IS NULL OR result = ?3)
                 ORDER BY id DESC LIMIT 1",
                params![source, job, result],
                row_to_run,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The newest step of `job` for `source` that ran to an end of its own (ok or failed, not
    /// interrupted): what the scheduler counts as the last run.
    pub fn last_attempt(&self, source: &str, job: Job) -> Result<Option<Run>> {
        self.conn
            .query_row(
                "SELECT id, job, source, started, finished, result, error, snapshot, plain_bytes,
                        stored_bytes, seconds, restore_seconds
                 FROM runs WHERE source = ?1 AND job = ?2 AND result IN ('ok', 'failed')
                 ORDER BY id DESC LIMIT 1",
                params![source, job],
                row_to_run,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    pub fn alert(&self, source: &str, event: &str) -> Result<Option<AlertState>> {
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

    pub fn set_alert(&self, source: &str, event: &str, s: &AlertState) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO alerts (source, event, firing, since, message) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (source, event) DO UPDATE
                 SET firing = excluded.firing, since = excluded.since, message = excluded.message",
                params![source, event, s.firing as i64, s.since.to_string(), s.message],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

impl State {
    /// The newest log head of `source` this machine has seen in repository `repo`, and when.
    pub fn log_head(&self, repo: &str, source: &str) -> Result<Option<(Head, Timestamp)>> {
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

    /// Remembers `head` when it is newer than the one remembered (`force`: whatever it is, for
    /// a user who accepted a rolled-back repository).
    pub fn set_log_head(&self, repo: &str, source: &str, head: &Head, force: bool) -> Result<()> {
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
}

/// The state file as the repository's [`HeadMemory`]: opened for each call, so that it can be
/// shared between threads and processes.
pub struct StateMemory(pub PathBuf);

impl HeadMemory for StateMemory {
    fn recall(&self, repo: &str, source: &str) -> Result<Option<Head>> {
        Ok(State::open(&self.0)?
            .log_head(repo, source)?
            .map(|(h, _)| h))
    }

    fn remember(&self, repo: &str, source: &str, head: &Head) -> Result<()> {
        State::open(&self.0)?.set_log_head(repo, source, head, false)
    }

    fn accept(&self, repo: &str, source: &str, head: &Head) -> Result<()> {
        State::open(&self.0)?.set_log_head(repo, source, head, true)
    }

    fn sources(&self, repo: &str) -> Result<Vec<String>> {
        let st = State::open(&self.0)?;
        let mut q = st
            .conn
            .prepare("SELECT source FROM log_heads WHERE repo = ?1 ORDER BY source")
            .map_err(|e| st.err(e))?;
        let rows = q
            .query_map(params![repo], |r| r.get::<_, String>(0))
            .map_err(|e| st.err(e))?;
        rows.collect::<rusqlite::Result<Vec<String>>>()
            .map_err(|e| st.err(e))
    }
}

fn parse_ts(s: String) -> Timestamp {
    s.parse().unwrap_or(Timestamp::UNIX_EPOCH)
}

fn row_to_run(r: &rusqlite::Row<'_>) -> rusqlite::Result<Run> {
    Ok(Run {
        id: r.get(0)?,
        job: r.get(1)?,
        source: r.get(2)?,
        started: parse_ts(r.get(3)?),
        finished: r.get::<_, Option<String>>(4)?.map(parse_ts),
        result: r.get(5)?,
        error: r.get(6)?,
        snapshot: r.get(7)?,
        plain_bytes: r.get::<_, Option<i64>>(8)?.map(|b| b as u64),
        stored_bytes: r.get::<_, Option<i64>>(9)?.map(|b| b as u64),
        seconds: r.get(10)?,
        restore_seconds: r.get(11)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_and_alerts_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.db");
        let s = State::open(&path).unwrap();
        let t0: Timestamp = "2026-11-21T03:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-11-21T03:00:12.5Z".parse().unwrap();
        let a = s.start(Job::Backup, "app", t0).unwrap();
        s.finish(
            a,
            t1,
            &Outcome {
                snapshot: Some("20261121T030000Z-abcdef".into()),
                plain_bytes: Some(1000),
                stored_bytes: Some(300),
                ..Default::default()
            },
        )
        .unwrap();
        let b = s.start(Job::Backup, "app", t1).unwrap();
        s.finish(
            b,
            t1,
            &Outcome {
                error: Some("cannot connect".into()),
                ..Default::default()
            },
        )
        .unwrap();
        let _running = s.start(Job::Drill, "other", t1).unwrap();

        let h = s.history(Some("app"), 10).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].result, RunResult::Failed);
        assert_eq!(h[1].result, RunResult::Ok);
        assert_eq!(h[1].seconds, Some(12.5));
        assert_eq!(h[1].stored_bytes, Some(300));
        let ok = s
            .last("app", Job::Backup, Some(RunResult::Ok))
            .unwrap()
            .unwrap();
        assert_eq!(ok.finished, Some(t1));
        assert_eq!(
            s.last("app", Job::Backup, None)
                .unwrap()
                .unwrap()
                .error
                .as_deref(),
            Some("cannot connect")
        );
        assert!(s.last("app", Job::Drill, None).unwrap().is_none());

        // A new process finds the step that was running when the last one died.
        drop(s);
        let s = State::open(&path).unwrap();
        assert_eq!(s.close_interrupted().unwrap(), 1);
        assert_eq!(
            s.history(Some("other"), 1).unwrap()[0].result,
            RunResult::Interrupted
        );

        assert!(s.alert("app", "backup_failed").unwrap().is_none());
        let st = AlertState {
            firing: true,
            since: t1,
            message: Some("cannot connect".into()),
        };
        s.set_alert("app", "backup_failed", &st).unwrap();
        assert_eq!(s.alert("app", "backup_failed").unwrap(), Some(st));
    }

    #[test]
    fn processes_opening_a_new_file_at_once_agree() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let p = path.clone();
                std::thread::spawn(move || State::open(&p).map(|_| ()))
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        assert!(
            State::open(&path)
                .unwrap()
                .history(None, 1)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_file_from_a_newer_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        State::open(&path).unwrap();
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let e = State::open(&path).err().unwrap();
        assert!(e.message().contains("newer offsitedb"), "{e:?}");
    }
}
