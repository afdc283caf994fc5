/*!
`wal-stream`: the WAL archive fed from outside the database host, for platforms where no
`archive_command` can run (managed databases), over a replication connection.

`pg_receivewal` runs as a child (`--slot`, `--synchronous`, `--no-loop`) into a spool folder in
the state folder, and [`spool`] uploads from it every `wal_partial_interval` (2 s): complete
segments and history files as `wal-push` stores them, and the segment being written as a
streamed partial, so the archive is seconds behind the server, not a segment behind.

The physical replication slot (`wal_slot`, created when missing with its WAL reserved at once)
makes the server keep every segment `pg_receivewal` has not confirmed: no WAL is lost while
OffsiteDB is down, and it resumes where it stopped. The price is the server's disk: [`server`]
reads how much WAL the slot holds back every second, and past `wal_slot_max` this says so (and
`serve` alerts), with how to drop the slot.

`pg_receivewal` exits when the connection ends (a server restart, a network cut, a failover);
this restarts it with backoff (1 s doubling to 60 s, back to 1 s after a minute of streaming).
On a promoted replica it follows the new timeline itself: the history file lands in the spool
and is archived first. A segment is never uploaded twice with different bytes (the store refuses
to replace an archived name, see `wal_push`).

The lag: the server's position is sampled every second; the lag in seconds is how long ago the
server first had WAL that the archive still lacks (0 when it has everything).
*/

pub mod server;
pub mod spool;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde::Serialize;

use crate::catalog::Repository;
use crate::config::StreamPolicy;
use crate::crypto::MasterKey;
use crate::error::{Error, ErrorKind, Result};
use crate::postgres::{self, ConnInfo, binaries, client};
use crate::process::ChildProcess;
use crate::storage::WriteStore;
use crate::wal::name::{Lsn, WalName};
use spool::Spool;

/// The server's WAL this many bytes ahead of the archive counts as caught up: the end of a
/// streamed partial is found from its bytes (the last non-zero one, aligned), which can fall a
/// few bytes short of the server's position.
const SLACK: u64 = 64;
/// Longest wait between reconnects.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct StreamOptions {
    pub source: String,
    pub conninfo: ConnInfo,
    pub policy: StreamPolicy,
    /// The folder `pg_receivewal` writes into.
    pub spool: PathBuf,
    pub pg_bin_dirs: Vec<PathBuf>,
}

impl StreamOptions {
    /// The spool of `source` in the state folder.
    pub fn spool_in(state_dir: &std::path::Path, source: &str) -> PathBuf {
        state_dir.join("wal-stream").join(source)
    }
}

/// What the stream is doing, for `serve`'s metrics and dashboard.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Status {
    /// `pg_receivewal` is connected and streaming.
    pub streaming: bool,
    pub timeline: Option<u32>,
    /// The end of the newest WAL uploaded, and when.
    pub archived_lsn: Option<Lsn>,
    pub archived_at: Option<Timestamp>,
    pub server_lsn: Option<Lsn>,
    pub lag_bytes: Option<u64>,
    pub lag_seconds: Option<f64>,
    pub slot: String,
    pub slot_retained: Option<u64>,
    /// The most the slot held back since a reader took it ([`Status::take_peak`]): a stream
    /// can catch up between two looks.
    pub slot_retained_peak: Option<u64>,
    pub slot_wal_status: Option<String>,
    pub segments: u64,
    pub partials: u64,
    /// Failures in a row (0 while streaming).
    pub failures: u32,
    pub last_error: Option<String>,
}

impl Status {
    /// The peak of the slot's hold since the last call, and starts a new one.
    pub fn take_peak(&mut self) -> Option<u64> {
        self.slot_retained_peak.take()
    }
}

pub type Shared = Arc<Mutex<Status>>;

/// What the caller hears.
#[derive(Debug)]
pub enum Event {
    SlotCreated(String),
    Started {
        program: String,
        server: String,
    },
    Stored(WalName),
    Partial {
        name: WalName,
        archived: Lsn,
    },
    /// The stream ended and is started again after `retry_in`.
    Stopped {
        error: Error,
        retry_in: Duration,
        failures: u32,
    },
    /// The slot's retained WAL crossed `wal_slot_max` (up, or back down).
    SlotRetention {
        retained: u64,
        max: u64,
        over: bool,
    },
    /// The server dropped WAL the slot needed (`wal_status = lost`).
    SlotLost(String),
    Note(String),
}

/// Streams until `stop` says so (or a signal arrives). Only errors that retrying cannot fix
/// (the repository, the key, the spool folder) end it early.
pub fn run(
    store: Box<dyn WriteStore>,
    key: MasterKey,
    opts: &StreamOptions,
    status: &Shared,
    stop: &dyn Fn() -> bool,
    events: &mut dyn FnMut(Event),
) -> Result<()> {
    crate::catalog::check_source_name(&opts.source)?;
    let repo = Repository::open_for_writing(store, key)?;
    repo.ensure_created()?;
    let mut spool = Spool::open(&opts.spool, &opts.source)?;
    set(status, |s| s.slot = opts.policy.slot.clone());
    let mut lag = LagClock::default();
    let mut failures = 0u32;
    let mut wait = Duration::from_secs(1);
    while !stopping(stop) {
        let began = Instant::now();
        let outcome = session(&repo, &mut spool, opts, status, stop, events, &mut lag);
        set(status, |s| s.streaming = false);
        let error = match outcome {
            Ok(()) => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => break,
            Err(e) if fatal(&e) => return Err(e),
            Err(e) => e,
        };
        if began.elapsed() > Duration::from_secs(60) {
            wait = Duration::from_secs(1);
            failures = 0;
        }
        failures += 1;
        set(status, |s| {
            s.failures = failures;
            s.last_error = Some(error.to_string());
        });
        events(Event::Stopped {
            error,
            retry_in: wait,
            failures,
        });
        let until = Instant::now() + wait;
        while Instant::now() < until && !stopping(stop) {
            std::thread::sleep(Duration::from_millis(100));
        }
        wait = (wait * 2).min(MAX_BACKOFF);
    }
    Ok(())
}

fn stopping(stop: &dyn Fn() -> bool) -> bool {
    stop() || crate::interrupt::check().is_err()
}

/// Errors of our own side: retrying does not help.
fn fatal(e: &Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Key | ErrorKind::Config | ErrorKind::Integrity | ErrorKind::Tool
    )
}

fn set(status: &Shared, f: impl FnOnce(&mut Status)) {
    f(&mut status.lock().unwrap_or_else(|p| p.into_inner()));
}

/// One connection's life: slot, `pg_receivewal`, uploads, until it ends.
fn session(
    repo: &Repository<dyn WriteStore>,
    spool: &mut Spool,
    opts: &StreamOptions,
    status: &Shared,
    stop: &dyn Fn() -> bool,
    events: &mut dyn FnMut(Event),
    lag: &mut LagClock,
) -> Result<()> {
    let ci = &opts.conninfo;
    let slot = &opts.policy.slot;
    let (mut client, srv) = server::connect(ci)?;
    if server::ensure_slot(&mut client, slot)? {
        events(Event::SlotCreated(slot.clone()));
    }
    let program = binaries::pick(
        "pg_receivewal",
        srv.major,
        &binaries::search_dirs(&opts.pg_bin_dirs),
        &format!(
            "the server at {} runs PostgreSQL {}",
            ci.redacted(),
            srv.version
        ),
    )?;
    let mut over = false;
    // The slot's hold before streaming starts: what a stopped OffsiteDB left on the server
    // (a local stream catches up in moments, before the first poll would see it).
    if let Ok(p) = server::positions(&mut client, slot) {
        observe(&p, spool, opts, status, events, lag, &mut over);
    }
    // What a previous run left in the spool goes first.
    upload(repo, spool, srv.segment_size, status, events)?;
    let mut cmd = crate::process::command(&program.path);
    cmd.arg("--directory")
        .arg(spool.dir())
        .args(["--slot", slot])
        .args([
            "--no-loop",
            "--synchronous",
            "--status-interval=1",
            "--verbose",
        ])
        // A connection string (its dbname is ignored); the password goes in the environment.
        .arg("--dbname")
        .arg(ci.to_conninfo_without_secrets());
    postgres::child_env(&mut cmd, ci);
    let mut child = ChildProcess::spawn(cmd, "pg_receivewal", false)?;
    child.drain_stdout();
    events(Event::Started {
        program: format!("{} {}", program.path.display(), program.version),
        server: ci.redacted(),
    });
    let mut last_upload = Instant::now();
    let mut last_poll: Option<Instant> = None;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        if stopping(stop) {
            // pg_receivewal flushes what it has and exits on SIGINT.
            child.signal(libc::SIGINT);
            let _ = child.wait_exit();
            upload(repo, spool, srv.segment_size, status, events)?;
            return Ok(());
        }
        if child.has_exited() {
            let exit = child.wait_exit()?;
            // What it wrote before it stopped is archived before anything else.
            upload(repo, spool, srv.segment_size, status, events)?;
            return Err(Error::source_db(format!(
                "pg_receivewal stopped streaming from {}: {}",
                ci.redacted(),
                exit.reason()
            )));
        }
        if last_upload.elapsed() >= opts.policy.partial_interval {
            last_upload = Instant::now();
            upload(repo, spool, srv.segment_size, status, events)?;
            set(status, |s| {
                s.streaming = true;
                s.failures = 0;
            });
        }
        if last_poll.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            last_poll = Some(Instant::now());
            // A failed poll (the server restarting) is not an error of the stream: the next
            // one reconnects, and pg_receivewal says whether streaming stopped.
            match server::positions(&mut client, slot) {
                Ok(p) => observe(&p, spool, opts, status, events, lag, &mut over),
                Err(_) => {
                    if let Ok((c, _)) = server::connect(ci) {
                        client = c;
                    }
                }
            }
        }
    }
}

fn upload(
    repo: &Repository<dyn WriteStore>,
    spool: &mut Spool,
    segment_size: u64,
    status: &Shared,
    events: &mut dyn FnMut(Event),
) -> Result<()> {
    let synced = spool.sync(repo, segment_size)?;
    let archived = spool.archived();
    set(status, |s| {
        s.segments += synced.stored.iter().filter(|n| n.is_segment()).count() as u64;
        if synced.partial.is_some() {
            s.partials += 1;
        }
        if let Some((tl, lsn)) = archived
            && s.archived_lsn != Some(lsn)
        {
            s.timeline = Some(tl);
            s.archived_lsn = Some(lsn);
            s.archived_at = Some(Timestamp::now());
        }
    });
    for n in synced.stored {
        events(Event::Stored(n));
    }
    if let (Some(name), Some((_, lsn))) = (synced.partial, archived) {
        events(Event::Partial {
            name,
            archived: lsn,
        });
    }
    Ok(())
}

/// Records a poll of the server: the lag, and the slot's hold (said once per crossing).
fn observe(
    p: &server::Positions,
    spool: &Spool,
    opts: &StreamOptions,
    status: &Shared,
    events: &mut dyn FnMut(Event),
    lag: &mut LagClock,
    over: &mut bool,
) {
    lag.sample(Instant::now(), p.current);
    let archived = spool.archived().map(|(_, l)| l);
    let retained = p.retained();
    set(status, |s| {
        s.server_lsn = Some(p.current);
        s.lag_bytes = archived.map(|a| p.current.0.saturating_sub(a.0));
        s.lag_seconds = archived.map(|a| lag.seconds_behind(a, Instant::now()));
        s.slot_retained = retained;
        s.slot_retained_peak = s.slot_retained_peak.max(retained);
        s.slot_wal_status = p.wal_status.clone();
    });
    if let Some(r) = retained {
        let now_over = r > opts.policy.slot_max;
        if now_over != *over {
            *over = now_over;
            events(Event::SlotRetention {
                retained: r,
                max: opts.policy.slot_max,
                over: now_over,
            });
        }
    }
    if p.wal_status.as_deref() == Some("lost") {
        events(Event::SlotLost(opts.policy.slot.clone()));
    }
}

/// The server's position over the last hour, one sample a second.
#[derive(Debug, Default)]
pub struct LagClock {
    samples: VecDeque<(Instant, Lsn)>,
}

impl LagClock {
    pub fn sample(&mut self, at: Instant, lsn: Lsn) {
        if self.samples.len() >= 3600 {
            self.samples.pop_front();
        }
        self.samples.push_back((at, lsn));
    }

    /// How long ago the server first had WAL past `archived` (0 when it has none), as far as
    /// the samples tell: the oldest sample past it.
    pub fn seconds_behind(&self, archived: Lsn, now: Instant) -> f64 {
        self.samples
            .iter()
            .find(|(_, l)| l.0 > archived.0 + SLACK)
            .map_or(0.0, |(t, _)| now.duration_since(*t).as_secs_f64())
    }
}

/// A replication connection works: `check` runs `pg_receivewal` to the server's current
/// position without a slot, into a temporary folder, and says what it answered.
pub fn probe(
    ci: &ConnInfo,
    major: u32,
    pg_bin_dirs: &[PathBuf],
    c: &mut client::Client,
) -> Result<()> {
    let program = binaries::pick(
        "pg_receivewal",
        major,
        &binaries::search_dirs(pg_bin_dirs),
        &format!("the server at {} runs PostgreSQL {major}", ci.redacted()),
    )?;
    let end: String = c
        .query_one(
            "SELECT (CASE WHEN pg_catalog.pg_is_in_recovery()
                          THEN pg_catalog.pg_last_wal_receive_lsn()
                          ELSE pg_catalog.pg_current_wal_lsn() END)::text",
            &[],
        )
        .map_err(|e| client::query_error("cannot read the server's WAL position", &e))?
        .get(0);
    let dir = tempfile::Builder::new()
        .prefix("offsitedb-probe-")
        .tempdir()
        .map_err(|e| Error::io(format!("cannot create a temporary folder: {e}")))?;
    let mut cmd = crate::process::command(&program.path);
    cmd.arg("--directory")
        .arg(dir.path())
        .args(["--no-loop", "--no-sync"])
        .arg(format!("--endpos={end}"))
        .arg("--dbname")
        .arg(ci.to_conninfo_without_secrets());
    postgres::child_env(&mut cmd, ci);
    let mut child = ChildProcess::spawn(cmd, "pg_receivewal", false)?;
    child.drain_stdout();
    let exit = child.wait_exit()?;
    if exit.status.success() {
        return Ok(());
    }
    let reason = exit.reason();
    let e = Error::source_db(format!(
        "a replication connection to {} fails: {reason}",
        ci.redacted()
    ));
    Err(if reason.contains("pg_hba.conf") {
        e.with_hint(
            "the server's pg_hba.conf needs a line for replication connections, e.g. \
             \"host replication backup 10.0.0.0/8 scram-sha-256\" (on managed platforms: \
             the platform must allow replication connections; several do not)",
        )
    } else {
        e
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lag_is_the_age_of_the_oldest_wal_not_archived() {
        let t0 = Instant::now();
        let mut c = LagClock::default();
        for (i, lsn) in [100u64, 200, 5000, 9000].into_iter().enumerate() {
            c.sample(t0 + Duration::from_secs(i as u64), Lsn(lsn));
        }
        let now = t0 + Duration::from_secs(10);
        assert_eq!(c.seconds_behind(Lsn(9000), now), 0.0);
        // A few bytes short is caught up.
        assert_eq!(c.seconds_behind(Lsn(8990), now), 0.0);
        assert_eq!(c.seconds_behind(Lsn(4000), now), 8.0);
        assert_eq!(c.seconds_behind(Lsn(0), now), 10.0);
    }
}
